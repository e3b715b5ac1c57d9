"""The session fixtures: the real subset and its Step 0-2 runs, the crop of the demo mosaic and its products;
the builders they use live in ``builders.py``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from builders import (CROP_COL, CROP_ROW, CROP_SIZE, MOSAIC, REFERENCE_930, STACK_BANDS, SUBSET, SUBSET_PARAMETERS,
                      SUBSET_WINDOW, write_scene)


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
    return write_scene(folder / "subset.toml", SUBSET, subset_reference, SUBSET_PARAMETERS)


@pytest.fixture(scope="session")
def step0_workdir(tmp_path_factory, subset_config) -> Path:
    """Work folder after Step 0 ran once on the subset."""
    import Step0_Data_Preparation as step0

    workdir = tmp_path_factory.mktemp("work")
    assert step0.main(["--config", str(subset_config), "--workdir", str(workdir)]) == 0
    return workdir


@pytest.fixture(scope="session")
def explored_workdir(tmp_path_factory, subset_config) -> Path:
    """Work folder after Step 0 ran once on the subset with --explore."""
    import Step0_Data_Preparation as step0

    workdir = tmp_path_factory.mktemp("explore")
    assert step0.main(["--config", str(subset_config), "--workdir", str(workdir), "--explore"]) == 0
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


@pytest.fixture(scope="session")
def crop_scene():
    """Reflectance (x1000 in the demo stack) of the crop, its grid, and the reference labels cut to it."""
    stack = gdal.Open(str(MOSAIC))
    values = {name: stack.GetRasterBand(n).ReadAsArray(CROP_COL, CROP_ROW, CROP_SIZE, CROP_SIZE).astype(np.int64)
              for name, n in STACK_BANDS.items()}
    gt = stack.GetGeoTransform()
    geotransform = (gt[0] + CROP_COL * gt[1], gt[1], 0.0, gt[3] + CROP_ROW * gt[5], 0.0, gt[5])
    labels = gdal.Open(str(REFERENCE_930)).ReadAsArray(CROP_COL, CROP_ROW, CROP_SIZE, CROP_SIZE)
    return {"values": values, "geotransform": geotransform, "wkt": stack.GetProjection(), "labels": labels}


@pytest.fixture(scope="session")
def crop_files(tmp_path_factory, crop_scene):
    """The 10-band crop as a GeoTIFF with band descriptions, and its reference labels (values 1..4)."""
    folder = tmp_path_factory.mktemp("crop")
    image = folder / "crop.tif"
    gdal.Translate(str(image), str(MOSAIC), srcWin=[CROP_COL, CROP_ROW, CROP_SIZE, CROP_SIZE])
    dataset = gdal.Open(str(image), gdal.GA_Update)
    for name, number in STACK_BANDS.items():
        dataset.GetRasterBand(number).SetDescription(name)
    dataset = None
    reference = folder / "labels.tif"
    gdal.Translate(str(reference), str(REFERENCE_930), srcWin=[CROP_COL, CROP_ROW, CROP_SIZE, CROP_SIZE])
    return image, reference
