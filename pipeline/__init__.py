"""The work of the four step scripts, in packages named for their concern (the tree is the architecture):

- :mod:`pipeline.core`: vocabulary, errors, grid and stretch arithmetic, class colours, PNG encoding, atomic
  files; no GDAL, imports nothing of ours;
- :mod:`pipeline.run`: configuration, command line, output sets, shared figures, PNG files and QGIS styles;
- :mod:`pipeline.handoffs`: the contract between the steps, .mat files, fingerprints, the model card;
- :mod:`pipeline.inputs`: images, products, tiles, clouds, references and point files through GDAL;
- :mod:`pipeline.segmentation`, :mod:`pipeline.model`, :mod:`pipeline.assessment`: the science of tutorial
  sections 1-2, 3-4 and 5, which never import each other;
- :mod:`pipeline.tiling`: whole tiles on a Dask cluster;
- :mod:`pipeline.workflow`: each Step script's work in the tutorial's order; it may import every package.

``tests/test_architecture.py`` holds this layering. Raster I/O, COG writing with class colour tables and names,
and the RGB command live in ``gdal_tif2rgb.py``, which imports only :mod:`pipeline.core`.
"""
