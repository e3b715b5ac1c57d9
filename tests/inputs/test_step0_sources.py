"""Step 0 from the files users have: Sentinel-2 product folders and zips, a reference on another grid and CRS,
GeoPackages of training polygons, an area of interest; each run end to end, then its work grid, band values and
labels checked against what was made directly on the grid."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from osgeo import gdal, osr

import Step0_Data_Preparation as step0
from builders import (ABERYSTWYTH_BANDS, CLASS_VALUES, CROP_PARAMETERS, CROP_SIZE, NODATA_BLOCK, band_dn, codes_of,
                      interior, polygonize, write_product, write_scene, zip_folder)


def run_step0(folder, image, reference, classes=CLASS_VALUES, bands=None, **keys) -> dict:
    """Write a scene TOML (``bands`` None: none named, the product's own), run Step 0 into ``folder/work`` and
    return the work folder and its rasters."""
    # these tests check the stack, the grid and the labels themselves; masking has its own (test_clouds.py)
    config = write_scene(folder / "scene.toml", image, reference, {**CROP_PARAMETERS, "masking": False}, name="s2",
                         bands=bands or {}, classes=classes, **keys)
    work = folder / "work"
    assert step0.main(["--config", str(config), "--workdir", str(work)]) == 0
    layers = gdal.Open(str(work / "layers.tif"))
    return {"work": work, "layers": layers, "codes": gdal.Open(str(work / "reference.tif")).ReadAsArray(),
            "run": json.loads((work / "run.json").read_text())["steps"]["Step0_Data_Preparation"]}


def same_grid(dataset, crop_scene) -> bool:
    crs = osr.SpatialReference(dataset.GetProjection())
    return (np.allclose(dataset.GetGeoTransform(), crop_scene["geotransform"])
            and crs.IsSame(osr.SpatialReference(crop_scene["wkt"])) and dataset.RasterXSize == CROP_SIZE)


@pytest.mark.parametrize("level, zipped", [("L1C", False), ("L2A", True), (None, False)],
                         ids=["L1C folder", "L2A zip", "plain folder of band files"])
def test_product_through_step0(tmp_path, crop_scene, crop_files, level, zipped):
    product = write_product(tmp_path / "S2A_MSIL_T30UVD.SAFE", crop_scene, level)
    image = zip_folder(product) if zipped else product
    result = run_step0(tmp_path, image, crop_files[1])
    assert same_grid(result["layers"], crop_scene)
    stack = gdal.Open(str(result["work"] / "sources" / "image.vrt"))
    valid = np.ones((CROP_SIZE, CROP_SIZE), bool)
    valid[NODATA_BLOCK] = False
    blue = stack.GetRasterBand(1).ReadAsArray()
    offset = 1000 if level else 0  # the test's product stores reflectance * 10000 + 1000 with offset -1000
    expected = (band_dn(crop_scene, "B02", offset) - offset) / 10000
    np.testing.assert_allclose(blue[valid], expected[valid], atol=1e-6)
    assert np.isnan(blue[~valid]).all()
    swir = stack.GetRasterBand(5).ReadAsArray()
    assert np.median(np.abs(swir[valid] - crop_scene["values"]["B11"][valid] / 1000)) < 0.006  # 20 m, bilinear
    assert np.array_equal(result["codes"], np.where(valid, codes_of(crop_scene["labels"]), 255))  # nodata: unlabelled
    assert result["run"]["sources"]["resampling"] == "bilinear" and result["run"]["sources"]["unit"] == "reflectance"
    assert result["run"]["invalid_pixels"] == valid.size - valid.sum()
    assert not list((result["work"] / "sources").glob("reference*"))  # the codes are written once: reference.tif
    prepared = pathlib.Path(result["run"]["sources"]["prepared_image"])
    assert prepared.parent == result["work"] / "sources" and prepared.is_file()  # the final path, not the staged one
    bands = result["run"]["sources"]["prepared_bands"]
    assert bands["blue"] == 1 and stack.RasterCount == 6  # Step 3's forest reads them
    assert bands["swir2"] == 6  # the product's B12 file: a further layer by default
    assert ".staging-" not in (result["work"] / "run.json").read_text()


def test_reference_in_another_crs_and_resolution(tmp_path, crop_scene, crop_files):
    other = tmp_path / "utm30.tif"
    gdal.Warp(str(other), str(crop_files[1]), dstSRS="EPSG:32630", xRes=20, yRes=20, resampleAlg="near")
    result = run_step0(tmp_path, crop_files[0], other, bands=ABERYSTWYTH_BANDS)
    assert same_grid(result["layers"], crop_scene)
    expected = codes_of(crop_scene["labels"])
    inner = np.zeros_like(expected, bool)
    inner[2:-2, 2:-2] = True
    assert np.mean(result["codes"][inner] == expected[inner]) > 0.89  # measured 0.912 (20 m, nearest)
    away = inner & interior(expected, 1)
    assert np.mean(result["codes"][away] == expected[away]) > 0.999
    assert result["run"]["sources"]["reference"]["resampling"] == "nearest"


@pytest.mark.parametrize("per_class_layers", [False, True], ids=["string attribute", "one layer per class"])
def test_training_polygons_through_step0(tmp_path, crop_scene, crop_files, per_class_layers):
    polygons = polygonize(tmp_path / "training.gpkg", crop_files[1], per_class_layers=per_class_layers)
    names = {"forest": ["forest"], "grass": ["grass"], "urban": ["urban"], "water": ["water"]}
    field = {} if per_class_layers else {"reference_field": "landcover"}
    result = run_step0(tmp_path, crop_files[0], polygons, names, bands=ABERYSTWYTH_BANDS, **field)
    assert np.array_equal(result["codes"], codes_of(crop_scene["labels"]))
    assert result["run"]["classes"]["urban"]["superpixels"] > 0


def test_area_of_interest_cuts_the_work_grid(tmp_path, crop_scene, crop_files):
    x0, y0 = crop_scene["geotransform"][0], crop_scene["geotransform"][3]
    bbox = [x0 + 500, y0 - 1500, x0 + 1500, y0 - 500]  # 100 x 100 px in the image's CRS
    result = run_step0(tmp_path, crop_files[0], crop_files[1], bands=ABERYSTWYTH_BANDS, aoi={"bbox": bbox})
    layers = result["layers"]
    assert (layers.RasterXSize, layers.RasterYSize) == (100, 100)
    assert np.allclose(layers.GetGeoTransform()[::3], (x0 + 500, y0 - 500))
    assert np.array_equal(result["codes"], codes_of(crop_scene["labels"])[50:150, 50:150])
