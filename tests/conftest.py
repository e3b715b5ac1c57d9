"""Shared fixtures: the real 324x339 Aberystwyth subset with a reference cut to its grid, and tiny rasters."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
DATA = PROJECT.parent / "shared" / "data" / "aberystwyth_s2"
SUBSET = DATA / "sen2_20210527_aber_subset.tif"
REFERENCE_930 = DATA / "sen2_20210527_aber_cls_930.tif"
SUBSET_WINDOW = (289, 52)  # PROVENANCE.md: the subset equals mosaic rows 289-627, cols 52-375

gdal.UseExceptions()


def write_tif(path: Path, array: np.ndarray, geotransform=(500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0),
              epsg: int = 32630, nodata=None) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF in a UTM CRS."""
    from osgeo import gdal_array

    array = array[np.newaxis] if array.ndim == 2 else array
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1], array.shape[0],
                                                   gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype))
    dataset.SetGeoTransform(geotransform)
    crs = osr.SpatialReference()
    crs.ImportFromEPSG(epsg)
    dataset.SetProjection(crs.ExportToWkt())
    for i, band in enumerate(array):
        dataset.GetRasterBand(i + 1).WriteArray(band)
        if nodata is not None:
            dataset.GetRasterBand(i + 1).SetNoDataValue(nodata)
    dataset = None
    return path


def write_config(path: Path, image: Path, reference: Path, extra: str = "", **sections) -> Path:
    """Write a scene TOML for the 10-band Aberystwyth layout."""
    text = f'''name = "test"
image = "{image}"
reference = "{reference}"
[bands]
blue = 1
green = 2
red = 3
nir = 7
swir = 9
[classes]
urban = [3]
crop = [2]
vegetation = [1]
water = [4]
{extra}
'''
    path.write_text(text)
    return path


SMALL_SETTINGS = """
[superpixels]
n_segments = 1500
[sampling]
block_size = 64
[balance]
per_class = 150
[training]
epochs = 2
batch_size = 32
"""


@pytest.fixture(scope="session")
def subset_reference(tmp_path_factory) -> Path:
    """The real reference cut to the real subset's window and given the subset's grid."""
    folder = tmp_path_factory.mktemp("subset")
    image = gdal.Open(str(SUBSET))
    row, col = SUBSET_WINDOW
    full_reference = gdal.Open(str(REFERENCE_930))  # keep the dataset alive while its band is read
    labels = full_reference.GetRasterBand(1).ReadAsArray(col, row, image.RasterXSize, image.RasterYSize)
    path = folder / "reference_subset.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), image.RasterXSize, image.RasterYSize, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(image.GetGeoTransform())
    dataset.SetProjection(image.GetProjection())
    dataset.GetRasterBand(1).WriteArray(labels)
    dataset.GetRasterBand(1).SetNoDataValue(0)
    dataset = None
    return path


@pytest.fixture(scope="session")
def subset_config(tmp_path_factory, subset_reference) -> Path:
    """Scene TOML of the real subset with small settings for fast runs."""
    folder = tmp_path_factory.mktemp("config")
    return write_config(folder / "subset.toml", SUBSET, subset_reference, SMALL_SETTINGS)


@pytest.fixture(scope="session")
def step0_workdir(tmp_path_factory, subset_config) -> Path:
    """Work folder after Step 0 ran once on the subset."""
    import Step0_Data_Preparation as step0

    workdir = tmp_path_factory.mktemp("work")
    assert step0.main(["--config", str(subset_config), "--workdir", str(workdir)]) == 0
    return workdir


@pytest.fixture(scope="session")
def step2_workdir(step0_workdir, subset_config, tmp_path_factory) -> tuple:
    """Work folder after Steps 1 and 2 ran on the subset (2 epochs), and the TensorBoard runs folder."""
    import Step1_Class_Balance as step1
    import Step2_Model_Training as step2

    runs = tmp_path_factory.mktemp("runs")
    arguments = ["--config", str(subset_config), "--workdir", str(step0_workdir)]
    assert step1.main(arguments) == 0
    assert step2.main([*arguments, "--runs-dir", str(runs)]) == 0
    return step0_workdir, runs, arguments
