"""pipeline.sources on product-like folders, zips, reprojected rasters and vector references built from the demo scene."""
from __future__ import annotations

import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from scipy import ndimage

from gdal_tif2rgb import InputFileError
from pipeline.errors import ConfigError, InputDataError
from pipeline.sources import prepare_sources

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aberystwyth_s2"
STACK = DATA / "sen2_20210527_aber_rebuilt.tif"
CLASSES_930 = DATA / "sen2_20210527_aber_cls_930.tif"
COL, ROW, SIZE = 80, 300, 200          # crop of the mosaic: town, sea, grass and forest
STACK_BANDS = {"B02": 1, "B03": 2, "B04": 3, "B08": 7, "B11": 9, "B12": 10}
CLASS_VALUES = {"forest": [1], "grass": [2], "urban": [3], "water": [4]}
CLASS_NAMES = {1: "forest", 2: "grass", 3: "urban", 4: "water"}
STAMP = "T30UVD_20210527T113321"
NODATA_BLOCK = (slice(0, 20), slice(0, 40))   # whole 20 m pixels set to DN 0 in every band

gdal.UseExceptions()


@pytest.fixture(scope="module")
def scene():
    """Reflectance (x1000 in the demo stack) of the crop, its grid, and the reference labels cut to it."""
    stack = gdal.Open(str(STACK))
    values = {name: stack.GetRasterBand(n).ReadAsArray(COL, ROW, SIZE, SIZE).astype(np.int64)
              for name, n in STACK_BANDS.items()}
    gt = stack.GetGeoTransform()
    geotransform = (gt[0] + COL * gt[1], gt[1], 0.0, gt[3] + ROW * gt[5], 0.0, gt[5])
    labels = gdal.Open(str(CLASSES_930)).ReadAsArray(COL, ROW, SIZE, SIZE)
    return {"values": values, "geotransform": geotransform, "wkt": stack.GetProjection(), "labels": labels}


def _mem(array, geotransform, wkt, nodata=None):
    types = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16,
             np.dtype(np.uint32): gdal.GDT_UInt32}
    dataset = gdal.GetDriverByName("MEM").Create("", array.shape[1], array.shape[0], 1, types[array.dtype])
    dataset.SetGeoTransform(geotransform)
    dataset.SetProjection(wkt)
    dataset.GetRasterBand(1).WriteArray(array)
    if nodata is not None:
        dataset.GetRasterBand(1).SetNoDataValue(nodata)
    return dataset


def _write_jp2(path: Path, dn: np.ndarray, geotransform, wkt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(path), _mem(dn.astype(np.uint16), geotransform, wkt),
                                                   options=["QUALITY=100", "REVERSIBLE=YES"])


def _band_dn(scene, name, add):
    """DN of a band: reflectance * 10000 + add; 20 m bands as 2x2 block means; DN 0 in the nodata block."""
    values = scene["values"][name] * 10           # x1000 -> x10000
    if name in ("B11", "B12"):
        values = np.rint(values.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))).astype(np.int64)
        dn = values + add
        dn[NODATA_BLOCK[0].start // 2:NODATA_BLOCK[0].stop // 2, NODATA_BLOCK[1].start // 2:NODATA_BLOCK[1].stop // 2] = 0
        return dn
    dn = values + add
    dn[NODATA_BLOCK] = 0
    return dn


def _metadata(level: str, offset: int) -> str:
    l2 = level == "L2A"
    quant = "BOA_QUANTIFICATION_VALUE" if l2 else "QUANTIFICATION_VALUE"
    tag = "BOA_ADD_OFFSET" if l2 else "RADIO_ADD_OFFSET"
    offsets = "".join(f'<{tag} band_id="{i}">{offset}</{tag}>' for i in range(13))
    return (f'<?xml version="1.0" encoding="UTF-8"?><n1:Level-{level[1:]}_User_Product xmlns:n1="https://psd-14">'
            f"<n1:General_Info><Product_Info><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>"
            f"<PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE></Product_Info><Product_Image_Characteristics>"
            f'<{quant} unit="none">10000</{quant}><Offsets>{offsets}</Offsets>'
            f"</Product_Image_Characteristics></n1:General_Info></n1:Level-{level[1:]}_User_Product>")


def _product(root: Path, scene, level: str | None, names=tuple(STACK_BANDS)) -> Path:
    """Write a product-like folder: L1C or L2A layout with metadata (offset -1000), or None: plain folder."""
    gt10 = scene["geotransform"]
    gt20 = (gt10[0], 20.0, 0.0, gt10[3], 0.0, -20.0)
    add = 1000 if level else 0
    granule = root / "GRANULE" / f"{level}_T30UVD_A031000_20210527T113321" / "IMG_DATA" if level else root
    for name in names:
        coarse = name in ("B11", "B12")
        if level == "L2A":
            path = granule / ("R20m" if coarse else "R10m") / f"{STAMP}_{name}_{20 if coarse else 10}m.jp2"
        else:
            path = granule / f"{STAMP}_{name}.jp2"
        _write_jp2(path, _band_dn(scene, name, add), gt20 if coarse else gt10, scene["wkt"])
    if level == "L2A":   # a coarser copy of B02 the reader must not prefer over the 10 m file
        b02 = _band_dn(scene, "B02", add).reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))
        _write_jp2(granule / "R20m" / f"{STAMP}_B02_20m.jp2", np.rint(b02), gt20, scene["wkt"])
    if level:
        (root / f"MTD_MSI{level}.xml").write_text(_metadata(level, -1000))
    return root


def _zip(folder: Path) -> Path:
    target = folder.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, Path(folder.name) / path.relative_to(folder))
    return target


def _read(path: Path) -> tuple:
    dataset = gdal.Open(str(path))
    return dataset.ReadAsArray(), dataset.GetGeoTransform(), dataset.GetProjection(), dataset


def _check_product(prepared, scene, expect_offset_metadata=True):
    """Grid, exact 10 m reflectance, 20 m within the bilinear bound, DN 0 -> NaN nodata."""
    data, gt, wkt, dataset = _read(prepared.image)
    assert data.shape == (6, SIZE, SIZE) and data.dtype == np.float32
    assert np.allclose(gt, scene["geotransform"]) and osr.SpatialReference(wkt).IsSame(osr.SpatialReference(scene["wkt"]))
    assert np.isnan(dataset.GetRasterBand(1).GetNoDataValue())
    bands = prepared.bands
    assert bands == {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir": 5, "swir2": 6}
    valid = np.ones((SIZE, SIZE), bool)
    valid[NODATA_BLOCK] = False
    for role, name in (("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08")):
        layer = data[bands[role] - 1]
        assert np.all(np.isnan(layer[~valid]))
        assert np.abs(layer[valid] - scene["values"][name][valid] / 1000).max() < 1e-6
    for role, name in (("swir", "B11"), ("swir2", "B12")):
        layer = data[bands[role] - 1]
        assert np.all(np.isnan(layer[~valid])) and np.all(np.isfinite(layer[valid]))
        error = np.abs(layer[valid] - scene["values"][name][valid] / 1000)
        # bilinear upsampling of 2x2 means, measured: median 0.0036, 99th percentile 0.031 reflectance
        # (nearest would give 0.0038 and 0.040)
        assert np.median(error) < 0.006 and np.percentile(error, 99) < 0.04, (np.median(error), np.percentile(error, 99))
    assert prepared.sources["quantification"] == 10000.0
    if expect_offset_metadata:
        assert prepared.sources["offsets"]["B02"] == -1000.0 and prepared.sources["processing_baseline"] == "04.00"


PRODUCT_BANDS = {"swir2": "B12"}


def test_l1c_folder_and_zip(tmp_path, scene):
    folder = _product(tmp_path / f"S2A_MSIL1C_20210527T113321_N0400_R080_{STAMP[:6]}_20210527T120000.SAFE", scene, "L1C")
    prepared = prepare_sources(folder, PRODUCT_BANDS, None, CLASS_VALUES, tmp_path / "out")
    _check_product(prepared, scene)
    assert prepared.sources["product_type"] == "S2MSI1C" and prepared.reference is None
    zipped = prepare_sources(_zip(folder), PRODUCT_BANDS, None, CLASS_VALUES, tmp_path / "out_zip")
    _check_product(zipped, scene)
    assert zipped.sources["kind"] == "zip" and zipped.sources["band_files"]["B02"].startswith("/vsizip/")
    assert json.loads(json.dumps(zipped.sources))["work_grid"]["width"] == SIZE


def test_l2a_folder_prefers_10m_and_reads_boa_offsets(tmp_path, scene):
    folder = _product(tmp_path / "S2B_MSIL2A_x.SAFE", scene, "L2A")
    prepared = prepare_sources(folder, PRODUCT_BANDS, None, CLASS_VALUES, tmp_path / "out")
    _check_product(prepared, scene)
    assert prepared.sources["band_files"]["B02"].endswith("_B02_10m.jp2")
    assert prepared.sources["product_type"] == "S2MSI2A"


def test_plain_folder_without_metadata_uses_fallback(tmp_path, scene):
    prepared = prepare_sources(_product(tmp_path / "bands", scene, None), {"swir2": "b12"}, None,
                               CLASS_VALUES, tmp_path / "out")
    _check_product(prepared, scene, expect_offset_metadata=False)
    assert prepared.sources["metadata"] is None and "fallback" in prepared.sources["scaling_source"]


def test_missing_role_in_product(tmp_path, scene):
    folder = _product(tmp_path / "bands", scene, None, names=("B02", "B03", "B04", "B08"))
    with pytest.raises(InputDataError, match=r"no band file for swir=B11 \(bands found: B02, B03, B04, B08\)"):
        prepare_sources(folder, {}, None, CLASS_VALUES, tmp_path / "out")
    with pytest.raises(ConfigError, match="needs band names such as 'B02'"):
        prepare_sources(folder, {"blue": 1}, None, CLASS_VALUES, tmp_path / "out")


def test_bands_with_different_footprints(tmp_path, scene):
    folder = _product(tmp_path / "bands", scene, None, names=("B02", "B03", "B04", "B08"))
    gt = list(scene["geotransform"])
    gt[1], gt[5], gt[0] = 20.0, -20.0, gt[0] + 40.0
    _write_jp2(folder / f"{STAMP}_B11_20m.jp2", _band_dn(scene, "B11", 0), tuple(gt), scene["wkt"])
    with pytest.raises(InputDataError, match="band B11 .* not the footprint"):
        prepare_sources(folder, {}, None, CLASS_VALUES, tmp_path / "out")


# ------------------------------------------------------------------------------------------ raster image

@pytest.fixture(scope="module")
def crop(tmp_path_factory, scene):
    """The 10-band crop as a GeoTIFF with band descriptions, and its reference labels (values 1..4)."""
    folder = tmp_path_factory.mktemp("crop")
    image = folder / "crop.tif"
    gdal.Translate(str(image), str(STACK), srcWin=[COL, ROW, SIZE, SIZE])
    dataset = gdal.Open(str(image), gdal.GA_Update)
    for name, number in STACK_BANDS.items():
        dataset.GetRasterBand(number).SetDescription(name)
    dataset = None
    reference = folder / "labels.tif"
    gdal.Translate(str(reference), str(CLASSES_930), srcWin=[COL, ROW, SIZE, SIZE])
    return image, reference


def _codes(labels):
    return np.where(labels > 0, labels.astype(np.int64) - 1, 255)


def test_raster_bands_by_number_and_description(tmp_path, crop):
    image, _ = crop
    prepared = prepare_sources(image, {"blue": "B02", "nir": 7, "swir": "b11"}, None, CLASS_VALUES, tmp_path)
    assert prepared.image == image and prepared.bands == {"blue": 1, "nir": 7, "swir": 9}
    with pytest.raises(ConfigError, match=r"blue = 'Purple': no band with that description \(descriptions: 'B02', 'B03'"):
        prepare_sources(image, {"blue": "Purple"}, None, CLASS_VALUES, tmp_path)


def test_reference_on_the_image_grid(tmp_path, crop, scene):
    image, reference = crop
    prepared = prepare_sources(image, {"blue": 1}, reference, CLASS_VALUES, tmp_path)
    codes, gt, _, dataset = _read(prepared.reference)
    assert np.array_equal(codes, _codes(scene["labels"])) and dataset.GetRasterBand(1).GetNoDataValue() == 255
    assert np.allclose(gt, scene["geotransform"]) and prepared.sources["reference"]["resampling"] == "nearest"


def _interior(labels, radius):
    """Pixels whose (2 radius + 1)^2 neighbourhood has one class: away from class edges."""
    size = 2 * radius + 1
    return ndimage.maximum_filter(labels, size) == ndimage.minimum_filter(labels, size)


@pytest.mark.parametrize("resolution, resampling, bound",
                         [(20.0, "nearest", 0.89), (10.0, "nearest", 0.99), (5.0, "mode", 0.95)])
def test_reprojected_reference(tmp_path, crop, scene, resolution, resampling, bound):
    image, reference = crop
    other = tmp_path / "utm.tif"
    gdal.Warp(str(other), str(reference), dstSRS="EPSG:32630", xRes=resolution, yRes=resolution, resampleAlg="near")
    prepared = prepare_sources(image, {"blue": 1}, other, CLASS_VALUES, tmp_path / "out")
    assert prepared.sources["reference"]["resampling"] == resampling
    codes, gt, _, _ = _read(prepared.reference)
    expected = _codes(scene["labels"])
    inner = np.zeros_like(expected, bool)
    inner[2:-2, 2:-2] = True           # the warped reference's own edge is ragged
    agreement = np.mean(codes[inner] == expected[inner])
    away = inner & _interior(expected, 1)
    # measured agreement: 20 m nearest 0.912, 10 m nearest 0.999, 5 m mode 0.974; 1.0 on the pixels whose
    # 3x3 neighbourhood has one class (away from class edges)
    assert agreement > bound, agreement
    assert np.mean(codes[away] == expected[away]) > 0.999


# ------------------------------------------------------------------------------------- vector references

def _polygons(path: Path, reference: Path, *, per_class_layers=False, srs=None) -> Path:
    """Polygonize the labels: one layer with a string field 'landcover', or one layer per class name."""
    dataset = gdal.Open(str(reference))
    band = dataset.GetRasterBand(1)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = memory.CreateLayer("all", dataset.GetSpatialRef(), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    target_srs = srs or dataset.GetSpatialRef()
    transform = osr.CoordinateTransformation(dataset.GetSpatialRef(), target_srs)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layers = {}
    for feature in layer:
        name = CLASS_NAMES[feature.GetField("value")]
        key = name if per_class_layers else "landcover"
        if key not in layers:
            layers[key] = out.CreateLayer(key, target_srs, ogr.wkbPolygon)
            layers[key].CreateField(ogr.FieldDefn("landcover", ogr.OFTString))
        geometry = feature.GetGeometryRef().Clone()
        geometry.Transform(transform)
        new = ogr.Feature(layers[key].GetLayerDefn())
        new.SetField("landcover", name)
        new.SetGeometry(geometry)
        layers[key].CreateFeature(new)
    out = None
    return path


NAMED_CLASSES = {name: [name] for name in CLASS_NAMES.values()}


def test_vector_reference_with_field_and_with_layers(tmp_path, crop, scene):
    image, reference = crop
    expected = _codes(scene["labels"])
    single = _polygons(tmp_path / "ref.gpkg", reference)
    prepared = prepare_sources(image, {"blue": 1}, single, NAMED_CLASSES, tmp_path / "a", reference_field="landcover")
    codes, gt, _, _ = _read(prepared.reference)
    assert np.array_equal(codes, expected) and np.allclose(gt, scene["geotransform"])
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layered = _polygons(tmp_path / "layers.gpkg", reference, per_class_layers=True, srs=wgs84)
    prepared = prepare_sources(image, {"blue": 1}, layered, NAMED_CLASSES, tmp_path / "b")
    codes = _read(prepared.reference)[0]
    # polygon edges lie on pixel edges, 5 m from the centres: reprojection to lon/lat and back moves them < 1 mm
    assert np.array_equal(codes, expected) and prepared.sources["reference"]["kind"] == "vector layers"
    assert json.loads(json.dumps(prepared.sources))["reference"]["field"] is None


def test_vector_reference_errors(tmp_path, crop):
    image, reference = crop
    single = _polygons(tmp_path / "ref.gpkg", reference)
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


def test_overlapping_polygons_of_different_classes_are_unlabelled(tmp_path, crop, scene):
    image, _ = crop
    x0, y0 = scene["geotransform"][0], scene["geotransform"][3] - SIZE * 10
    squares = _squares(tmp_path / "sq.gpkg", scene["wkt"], [(x0, y0, 100, "urban"), (x0 + 50, y0, 100, "water"),
                                                           (x0 + 50, y0 + 50, 30, "urban")])
    prepared = prepare_sources(image, {}, squares, {"urban": ["urban"], "water": ["water"]}, tmp_path,
                               reference_field="landcover")
    codes = _read(prepared.reference)[0][-10:, :15]     # bottom-left 100 m x 150 m: rows from the top
    assert np.all(codes[:, :5] == 0) and np.all(codes[:, 5:10] == 255) and np.all(codes[:, 10:15] == 1)
    assert (_read(prepared.reference)[0] != 255).sum() == 100
    assert prepared.sources["reference"]["overlap_pixels"] == 50


def test_reference_that_does_not_overlap(tmp_path, crop, scene):
    image, reference = crop
    far = tmp_path / "far.tif"
    gdal.Translate(str(far), str(reference), outputBounds=[0, 1000, 2000, 0])
    with pytest.raises(InputDataError, match="far.tif: the reference does not overlap the image/aoi work grid"):
        prepare_sources(image, {}, far, CLASS_VALUES, tmp_path / "out")


# ------------------------------------------------------------------------------------------------- aoi

def _window_of(prepared, scene):
    _, gt, _, dataset = _read(prepared.image)
    col = (gt[0] - scene["geotransform"][0]) / 10
    row = (scene["geotransform"][3] - gt[3]) / 10
    assert col == round(col) and row == round(row)
    return round(col), round(row), dataset.RasterXSize, dataset.RasterYSize


def test_aoi_in_image_crs_lonlat_and_file(tmp_path, crop, scene):
    image, reference = crop
    x0, y0 = scene["geotransform"][0], scene["geotransform"][3]
    bbox = [x0 + 503, y0 - 1196, x0 + 1497, y0 - 204]          # cols 50.3..149.7, rows 20.4..119.6
    prepared = prepare_sources(image, {"red": 3}, reference, CLASS_VALUES, tmp_path / "a", aoi={"bbox": bbox})
    assert _window_of(prepared, scene) == (50, 20, 100, 100)
    codes = _read(prepared.reference)[0]
    assert np.array_equal(codes, _codes(scene["labels"])[20:120, 50:150])
    assert np.array_equal(_read(prepared.image)[0][2], _read(image)[0][2][20:120, 50:150])
    to_wgs84 = osr.CoordinateTransformation(osr.SpatialReference(scene["wkt"]), _wgs84())
    lonlat = to_wgs84.TransformBounds(*bbox, 21)
    prepared = prepare_sources(image, {}, None, CLASS_VALUES, tmp_path / "b",
                               aoi={"bbox": list(lonlat), "crs": "EPSG:4326"})
    col, row, width, height = _window_of(prepared, scene)
    # the lon/lat box encloses the BNG box, which is ~2 degrees off north here, so the window grows a little
    assert col <= 50 and row <= 20 and col + width >= 150 and row + height >= 120 and width <= 110
    aoi_file = _squares(tmp_path / "aoi.gpkg", scene["wkt"], [(x0 + 503, y0 - 1196, 994, "aoi")])
    prepared = prepare_sources(image, {}, None, CLASS_VALUES, tmp_path / "c", aoi=aoi_file)
    assert _window_of(prepared, scene) == (50, 20, 100, 100)


def _wgs84():
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def test_aoi_outside_the_image(tmp_path, crop):
    image, _ = crop
    with pytest.raises(InputDataError, match="crop.tif: the aoi .* does not overlap the image"):
        prepare_sources(image, {}, None, CLASS_VALUES, tmp_path, aoi={"bbox": [10, 40, 11, 41], "crs": "EPSG:4326"})
    with pytest.raises(InputFileError, match="nothere.gpkg: file not found"):
        prepare_sources(image, {}, None, CLASS_VALUES, tmp_path, aoi=tmp_path / "nothere.gpkg")


# ------------------------------------------------------------------------------------- uint32 reference

def test_uint32_reference_with_top_nodata_costs_no_lookup_table(tmp_path, crop, scene):
    image, _ = crop
    labels = scene["labels"].astype(np.uint32)
    big = np.where(labels == 3, 4_000_000_001, labels).astype(np.uint32)
    big[:10] = 4_294_967_295
    path = tmp_path / "u32.tif"
    gdal.GetDriverByName("GTiff").CreateCopy(str(path), _mem(big, scene["geotransform"], scene["wkt"], 4_294_967_295))
    classes = {"forest": [1], "urban": [4_000_000_001], "nodata_listed": [2, 4_294_967_295]}
    tracemalloc.start()
    prepared = prepare_sources(image, {}, path, classes, tmp_path / "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * SIZE * SIZE, peak          # a few bytes per pixel, not a table of 4e9 entries
    codes = _read(prepared.reference)[0]
    expected = np.select([labels == 1, labels == 3, labels == 2], [0, 1, 2], 255)
    expected[:10] = 255                            # nodata wins over a class that lists the nodata value
    assert np.array_equal(codes, expected)
