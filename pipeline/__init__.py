"""What the four step scripts share, and nothing else.

The steps (``Step0_Data_Preparation.py`` ... ``Step3_Accuracy_Assessment.py``) are siblings: none imports
another. They meet only through the hand-off files, described once in :mod:`pipeline.contract`, and the
modules of this package:

- :mod:`pipeline.contract`: hand-off file names, keys and dtypes, split and label codes, layer names, and the
  loaders and savers that check a hand-off is complete and belongs to the scene;
- :mod:`pipeline.config`: the scene TOML and the typed, frozen :class:`~pipeline.config.Parameters`;
- :mod:`pipeline.cli`: the command line, one-line errors, timing and the run record ``run.json``;
- :mod:`pipeline.grids`: tile windows, halos, previews and painting superpixel labels onto pixels;
- :mod:`pipeline.cluster`: the Dask client of tiled runs;
- :mod:`pipeline.figures`: class maps with legends, shared by Steps 2 and 3;
- :mod:`pipeline.errors`: the errors reported as one line.

Raster, ``.mat``, PNG and colour-table I/O live in ``gdal_tif2rgb.py``.
"""
