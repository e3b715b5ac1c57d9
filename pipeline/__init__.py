"""What the four step scripts share, and the array work each of them drives.

The steps (``Step0_Data_Preparation.py`` ... ``Step3_Accuracy_Assessment.py``) are siblings: none imports
another. They meet only through the hand-off files, described once in :mod:`pipeline.contract` (``.mat`` files
and rasters, with checked loaders and writers), and the modules of this package: shared ones
(:mod:`~pipeline.config`, :mod:`~pipeline.cli`, :mod:`~pipeline.outputs`, :mod:`~pipeline.grids`,
:mod:`~pipeline.cluster`, :mod:`~pipeline.figures`, :mod:`~pipeline.matfile`, :mod:`~pipeline.errors`) and the
modules named for what each step does, arrays in and arrays out: Step 0 :mod:`~pipeline.sources`,
:mod:`~pipeline.sentinel2`, :mod:`~pipeline.clouds`, :mod:`~pipeline.composite`, :mod:`~pipeline.reference`,
:mod:`~pipeline.georef`, :mod:`~pipeline.layers`, :mod:`~pipeline.superpixels`, :mod:`~pipeline.sampling`,
:mod:`~pipeline.split`, :mod:`~pipeline.quicklooks`,
:mod:`~pipeline.tiled_outputs`; Step 2 :mod:`~pipeline.cnn`, :mod:`~pipeline.training_logs`,
:mod:`~pipeline.prediction_maps`, :mod:`~pipeline.tiled_prediction`, :mod:`~pipeline.model_card`; Step 3
:mod:`~pipeline.accuracy`, :mod:`~pipeline.area_estimates`, :mod:`~pipeline.validation_sample`,
:mod:`~pipeline.label_suggestions`, :mod:`~pipeline.accuracy_figures`, :mod:`~pipeline.report`. The README's
Layout section has one line per module.

Raster, colour-table, QGIS style and PNG I/O live in ``gdal_tif2rgb.py``; the point files people label in QGIS
in :mod:`~pipeline.point_files`.
"""
