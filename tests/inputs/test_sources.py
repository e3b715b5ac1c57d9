"""pipeline.inputs.sources on product-like folders, zips, reprojected rasters and vector references built from the demo
mosaic (the builders are in builders.py)."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from builders import (CLASS_NAMES, CLASS_VALUES, CROP_SIZE, NODATA_BLOCK, STAMP, band_dn, codes_of, interior,
                      mem_raster, polygonize, write_jp2, write_product, zip_folder)
from pipeline.core.errors import ConfigError, InputDataError, InputFileError
from pipeline.inputs.sources import prepare_sources


def _read(path: Path) -> tuple:
    dataset = gdal.Open(str(path))
    return dataset.ReadAsArray(), dataset.GetGeoTransform(), dataset.GetProjection(), dataset


def _check_product(prepared, crop_scene, expect_offset_metadata=True):
    """Grid, exact 10 m reflectance, 20 m within the bilinear bound, DN 0 -> NaN nodata."""
    data, gt, wkt, dataset = _read(prepared.image)
    assert data.shape == (6, CROP_SIZE, CROP_SIZE) and data.dtype == np.float32
    assert np.allclose(gt, crop_scene["geotransform"])
    assert osr.SpatialReference(wkt).IsSame(osr.SpatialReference(crop_scene["wkt"]))
    assert np.isnan(dataset.GetRasterBand(1).GetNoDataValue())
    bands = prepared.bands
    assert bands == {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir": 5, "swir2": 6}
    valid = np.ones((CROP_SIZE, CROP_SIZE), bool)
    valid[NODATA_BLOCK] = False
    for role, name in (("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08")):
        layer = data[bands[role] - 1]
        assert np.all(np.isnan(layer[~valid]))
        assert np.abs(layer[valid] - crop_scene["values"][name][valid] / 1000).max() < 1e-6
    for role, name in (("swir", "B11"), ("swir2", "B12")):
        layer = data[bands[role] - 1]
        assert np.all(np.isnan(layer[~valid])) and np.all(np.isfinite(layer[valid]))
        error = np.abs(layer[valid] - crop_scene["values"][name][valid] / 1000)
        # bilinear upsampling of 2x2 means, measured: median 0.0036, 99th percentile 0.031 reflectance
        # (nearest would give 0.0038 and 0.040)
        assert np.median(error) < 0.006 and np.percentile(error, 99) < 0.04, (np.median(error), np.percentile(error, 99))
    assert prepared.sources["quantification"] == 10000.0
    if expect_offset_metadata:
        assert prepared.sources["offsets"]["B02"] == -1000.0 and prepared.sources["processing_baseline"] == "04.00"


PRODUCT_BANDS = {"swir2": "B12"}


def test_l1c_folder_and_zip(tmp_path, crop_scene):
    name = f"S2A_MSIL1C_20210527T113321_N0400_R080_{STAMP[:6]}_20210527T120000.SAFE"
    folder = write_product(tmp_path / name, crop_scene, "L1C")
    prepared = prepare_sources(folder, PRODUCT_BANDS, None, CLASS_VALUES, tmp_path / "out")
    _check_product(prepared, crop_scene)
    assert prepared.sources["product_type"] == "S2MSI1C" and prepared.reference_codes is None
    assert prepared.unit == prepared.sources["unit"] == "reflectance"
    zipped = prepare_sources(zip_folder(folder), PRODUCT_BANDS, None, CLASS_VALUES, tmp_path / "out_zip")
    _check_product(zipped, crop_scene)
    assert zipped.sources["kind"] == "zip" and zipped.sources["band_files"]["B02"].startswith("/vsizip/")
    assert json.loads(json.dumps(zipped.sources))["work_grid"]["width"] == CROP_SIZE


def test_l2a_folder_prefers_10m_and_reads_boa_offsets(tmp_path, crop_scene):
    folder = write_product(tmp_path / "S2B_MSIL2A_x.SAFE", crop_scene, "L2A")
    prepared = prepare_sources(folder, PRODUCT_BANDS, None, CLASS_VALUES, tmp_path / "out")
    _check_product(prepared, crop_scene)
    assert prepared.sources["band_files"]["B02"].endswith("_B02_10m.jp2")
    assert prepared.sources["product_type"] == "S2MSI2A"


def test_plain_folder_without_metadata_uses_fallback(tmp_path, crop_scene):
    prepared = prepare_sources(write_product(tmp_path / "bands", crop_scene, None), {"swir2": "b12"}, None,
                               CLASS_VALUES, tmp_path / "out")
    _check_product(prepared, crop_scene, expect_offset_metadata=False)
    assert prepared.sources["metadata"] is None and "fallback" in prepared.sources["scaling_source"]


def test_missing_role_in_product(tmp_path, crop_scene):
    folder = write_product(tmp_path / "bands", crop_scene, None, names=("B02", "B03", "B04", "B08"))
    with pytest.raises(InputDataError, match=r"no band file for swir=B11 \(bands found: B02, B03, B04, B08\)"):
        prepare_sources(folder, {}, None, CLASS_VALUES, tmp_path / "out")
    with pytest.raises(ConfigError, match="needs band names such as 'B02'"):
        prepare_sources(folder, {"blue": 1}, None, CLASS_VALUES, tmp_path / "out")


def test_bands_with_different_footprints(tmp_path, crop_scene):
    folder = write_product(tmp_path / "bands", crop_scene, None, names=("B02", "B03", "B04", "B08"))
    gt = list(crop_scene["geotransform"])
    gt[1], gt[5], gt[0] = 20.0, -20.0, gt[0] + 40.0
    write_jp2(folder / f"{STAMP}_B11_20m.jp2", band_dn(crop_scene, "B11", 0), tuple(gt), crop_scene["wkt"])
    with pytest.raises(InputDataError, match="band B11 .* not the footprint"):
        prepare_sources(folder, {}, None, CLASS_VALUES, tmp_path / "out")


# ------------------------------------------------------------------------------------------ raster image

def test_raster_bands_by_number_and_description(tmp_path, crop_files):
    image, _ = crop_files
    prepared = prepare_sources(image, {"blue": "B02", "nir": 7, "swir": "b11"}, None, CLASS_VALUES, tmp_path)
    assert prepared.image == image and prepared.bands == {"blue": 1, "nir": 7, "swir": 9}
    assert prepared.unit == "raster values (UInt16)" and prepared.grid.rows == prepared.grid.cols == CROP_SIZE
    with pytest.raises(ConfigError, match=r"blue = 'Purple': no band with that description \(descriptions: 'B02', 'B03'"):
        prepare_sources(image, {"blue": "Purple"}, None, CLASS_VALUES, tmp_path)


def test_reference_on_the_image_grid(tmp_path, crop_files, crop_scene):
    image, reference = crop_files
    prepared = prepare_sources(image, {"blue": 1}, reference, CLASS_VALUES, tmp_path)
    codes = prepared.reference_codes
    assert codes.dtype == np.uint8 and np.array_equal(codes, codes_of(crop_scene["labels"]))
    assert np.allclose(prepared.grid.geotransform, crop_scene["geotransform"])
    assert prepared.sources["reference"]["resampling"] is None and not (tmp_path / "reference.tif").exists()


@pytest.mark.parametrize("resolution, resampling, bound",
                         [(20.0, "nearest", 0.89), (10.0, "nearest", 0.99), (5.0, "mode", 0.95)])
def test_reprojected_reference(tmp_path, crop_files, crop_scene, resolution, resampling, bound):
    image, reference = crop_files
    other = tmp_path / "utm.tif"
    gdal.Warp(str(other), str(reference), dstSRS="EPSG:32630", xRes=resolution, yRes=resolution, resampleAlg="near")
    prepared = prepare_sources(image, {"blue": 1}, other, CLASS_VALUES, tmp_path / "out")
    assert prepared.sources["reference"]["resampling"] == resampling
    codes = prepared.reference_codes
    expected = codes_of(crop_scene["labels"])
    inner = np.zeros_like(expected, bool)
    inner[2:-2, 2:-2] = True           # the warped reference's own edge is ragged
    agreement = np.mean(codes[inner] == expected[inner])
    away = inner & interior(expected, 1)
    # measured agreement: 20 m nearest 0.912, 10 m nearest 0.999, 5 m mode 0.974; 1.0 on the pixels whose
    # 3x3 neighbourhood has one class (away from class edges)
    assert agreement > bound, agreement
    assert np.mean(codes[away] == expected[away]) > 0.999
    assert set(np.unique(codes)) <= {0, 1, 2, 3, 255}  # no 254 of GDAL's nodata collision rule


# ------------------------------------------------------------------------------------- vector references

NAMED_CLASSES = {name: [name] for name in CLASS_NAMES.values()}


def test_vector_reference_with_field_and_with_layers(tmp_path, crop_files, crop_scene):
    image, reference = crop_files
    expected = codes_of(crop_scene["labels"])
    single = polygonize(tmp_path / "ref.gpkg", reference)
    prepared = prepare_sources(image, {"blue": 1}, single, NAMED_CLASSES, tmp_path / "a", reference_field="landcover")
    codes = prepared.reference_codes
    assert np.array_equal(codes, expected) and np.allclose(prepared.grid.geotransform, crop_scene["geotransform"])
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layered = polygonize(tmp_path / "layers.gpkg", reference, per_class_layers=True, srs=wgs84)
    prepared = prepare_sources(image, {"blue": 1}, layered, NAMED_CLASSES, tmp_path / "b")
    codes = prepared.reference_codes
    # polygon edges lie on pixel edges, 5 m from the centres: reprojection to lon/lat and back moves them < 1 mm
    assert np.array_equal(codes, expected) and prepared.sources["reference"]["kind"] == "vector layers"
    assert json.loads(json.dumps(prepared.sources))["reference"]["field"] is None


def test_vector_reference_errors(tmp_path, crop_files):
    image, reference = crop_files
    single = polygonize(tmp_path / "ref.gpkg", reference)
    with pytest.raises(ConfigError, match=r"no field 'klass' \(fields of each layer: landcover: landcover\)"):
        prepare_sources(image, {}, single, NAMED_CLASSES, tmp_path, reference_field="klass")
    message = r"'crop' never occur in field 'landcover' \(values with feature counts: .*'urban' \(\d+\)"
    with pytest.raises(InputDataError, match=message):
        prepare_sources(image, {}, single, {"urban": ["urban"], "crop": ["crop"]}, tmp_path,
                        reference_field="landcover")
    with pytest.raises(ConfigError, match="single-layer vector reference needs reference_field"):
        prepare_sources(image, {}, single, NAMED_CLASSES, tmp_path)


def _squares(path: Path, wkt: str, squares) -> Path:
    """A GeoPackage of squares (xmin, ymin, size, class name) with the field 'landcover'."""
    srs = osr.SpatialReference(wkt)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = out.CreateLayer("squares", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("landcover", ogr.OFTString))
    for x, y, size, name in squares:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("landcover", name)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON(({x} {y},{x + size} {y},{x + size} {y + size},{x} {y + size},{x} {y}))"))
        layer.CreateFeature(feature)
    out = None
    return path


def test_overlapping_polygons_of_different_classes_are_unlabelled(tmp_path, crop_files, crop_scene):
    image, _ = crop_files
    x0, y0 = crop_scene["geotransform"][0], crop_scene["geotransform"][3] - CROP_SIZE * 10
    squares = _squares(tmp_path / "sq.gpkg", crop_scene["wkt"], [(x0, y0, 100, "urban"), (x0 + 50, y0, 100, "water"),
                                                           (x0 + 50, y0 + 50, 30, "urban")])
    prepared = prepare_sources(image, {}, squares, {"urban": ["urban"], "water": ["water"]}, tmp_path,
                               reference_field="landcover")
    codes = prepared.reference_codes[-10:, :15]     # bottom-left 100 m x 150 m: rows from the top
    assert np.all(codes[:, :5] == 0) and np.all(codes[:, 5:10] == 255) and np.all(codes[:, 10:15] == 1)
    assert (prepared.reference_codes != 255).sum() == 100
    assert prepared.sources["reference"]["overlap_pixels"] == 50


def test_reference_that_does_not_overlap(tmp_path, crop_files, crop_scene):
    image, reference = crop_files
    far = tmp_path / "far.tif"
    gdal.Translate(str(far), str(reference), outputBounds=[0, 1000, 2000, 0])
    with pytest.raises(InputDataError, match="far.tif: the reference does not overlap the image/aoi work grid"):
        prepare_sources(image, {}, far, CLASS_VALUES, tmp_path / "out")


# ------------------------------------------------------------------------------------------------- aoi

def _window_of(prepared, crop_scene):
    _, gt, _, dataset = _read(prepared.image)
    col = (gt[0] - crop_scene["geotransform"][0]) / 10
    row = (crop_scene["geotransform"][3] - gt[3]) / 10
    assert col == round(col) and row == round(row)
    return round(col), round(row), dataset.RasterXSize, dataset.RasterYSize


def test_aoi_in_image_crs_lonlat_and_file(tmp_path, crop_files, crop_scene):
    image, reference = crop_files
    x0, y0 = crop_scene["geotransform"][0], crop_scene["geotransform"][3]
    bbox = [x0 + 503, y0 - 1196, x0 + 1497, y0 - 204]          # cols 50.3..149.7, rows 20.4..119.6
    prepared = prepare_sources(image, {"red": 3}, reference, CLASS_VALUES, tmp_path / "a", aoi={"bbox": bbox})
    assert _window_of(prepared, crop_scene) == (50, 20, 100, 100)
    assert prepared.grid.rows == prepared.grid.cols == 100
    assert np.array_equal(prepared.reference_codes, codes_of(crop_scene["labels"])[20:120, 50:150])
    assert np.array_equal(_read(prepared.image)[0][2], _read(image)[0][2][20:120, 50:150])
    to_wgs84 = osr.CoordinateTransformation(osr.SpatialReference(crop_scene["wkt"]), _wgs84())
    lonlat = to_wgs84.TransformBounds(*bbox, 21)
    prepared = prepare_sources(image, {}, None, CLASS_VALUES, tmp_path / "b",
                               aoi={"bbox": list(lonlat), "crs": "EPSG:4326"})
    col, row, width, height = _window_of(prepared, crop_scene)
    # the lon/lat box encloses the BNG box, which is ~2 degrees off north here, so the window grows a little
    assert col <= 50 and row <= 20 and col + width >= 150 and row + height >= 120 and width <= 110
    aoi_file = _squares(tmp_path / "aoi.gpkg", crop_scene["wkt"], [(x0 + 503, y0 - 1196, 994, "aoi")])
    prepared = prepare_sources(image, {}, None, CLASS_VALUES, tmp_path / "c", aoi=aoi_file)
    assert _window_of(prepared, crop_scene) == (50, 20, 100, 100)


def _wgs84():
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def test_aoi_outside_the_image(tmp_path, crop_files):
    image, _ = crop_files
    with pytest.raises(InputDataError, match="crop.tif: the aoi .* does not overlap the image"):
        prepare_sources(image, {}, None, CLASS_VALUES, tmp_path, aoi={"bbox": [10, 40, 11, 41], "crs": "EPSG:4326"})
    with pytest.raises(InputFileError, match="nothere.gpkg: file not found"):
        prepare_sources(image, {}, None, CLASS_VALUES, tmp_path, aoi=tmp_path / "nothere.gpkg")


# ------------------------------------------------------------------------------------- uint32 reference

def test_uint32_reference_with_top_nodata_costs_no_lookup_table(tmp_path, crop_files, crop_scene):
    image, _ = crop_files
    labels = crop_scene["labels"].astype(np.uint32)
    big = np.where(labels == 3, 4_000_000_001, labels).astype(np.uint32)
    big[:10] = 4_294_967_295
    path = tmp_path / "u32.tif"
    gdal.GetDriverByName("GTiff").CreateCopy(str(path), mem_raster(big, crop_scene["geotransform"], crop_scene["wkt"],
                                                                   4_294_967_295))
    classes = {"forest": [1], "urban": [4_000_000_001], "nodata_listed": [2, 4_294_967_295]}
    tracemalloc.start()
    prepared = prepare_sources(image, {}, path, classes, tmp_path / "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * CROP_SIZE * CROP_SIZE, peak          # a few bytes per pixel, not a table of 4e9 entries
    codes = prepared.reference_codes
    expected = np.select([labels == 1, labels == 3, labels == 2], [0, 1, 2], 255)
    expected[:10] = 255                            # nodata wins over a class that lists the nodata value
    assert np.array_equal(codes, expected)
