"""GeoTIFF outputs are Cloud-Optimized, carry their class names inside, and come with a QGIS style."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from osgeo import gdal, osr

import gdal_tif2rgb
from builders import assert_cog, gdalinfo, qml_classes
from pipeline.core.colours import class_palette
from pipeline.core.vocabulary import UNLABELLED
from pipeline.run import files

NAMES = ["urban", "crop", "vegetation", "water"]
COLOURS = class_palette(NAMES)


def _grid(rows=600, cols=700):
    crs = osr.SpatialReference()
    crs.ImportFromEPSG(32630)
    return gdal_tif2rgb.Grid(rows, cols, (500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0), crs.ExportToWkt())


@pytest.fixture(scope="module")
def class_map(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classes")
    codes = np.random.default_rng(1).integers(0, 4, (600, 700)).astype(np.uint8)
    codes[:20, :30] = UNLABELLED
    path = folder / "predMap.tif"
    with gdal_tif2rgb.geotiff_writer(path, _grid(), 1, np.uint8, nodata=UNLABELLED, class_names=NAMES,
                           class_colours=COLOURS) as write:
        for row in range(0, 600, 256):  # window by window, as the tiled runs write
            write(codes[row:row + 256], row, 0)
    return path, codes


def test_class_map_is_a_cog_with_overviews(class_map):
    path, codes = class_map
    report = gdalinfo(path)
    assert "LAYOUT=COG" in report
    assert "Overviews: 350x300" in report
    assert "COMPRESSION=DEFLATE" in report
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    np.testing.assert_array_equal(band.ReadAsArray(), codes)
    assert band.GetNoDataValue() == UNLABELLED
    overview = band.GetOverview(0).ReadAsArray()
    assert set(np.unique(overview)) <= {0, 1, 2, 3, UNLABELLED}  # nearest neighbour: no invented classes
    assert sorted(p.name for p in path.parent.iterdir()) == ["predMap.tif", "predMap.tif.aux.xml"]


def test_class_names_and_colours_live_in_the_tif_alone(class_map, tmp_path):
    path, _ = class_map
    alone = tmp_path / "copy.tif"
    shutil.copyfile(path, alone)
    assert not (tmp_path / "copy.tif.aux.xml").exists()
    assert gdal_tif2rgb.read_class_names(alone) == NAMES
    dataset = gdal.Open(str(alone))
    band = dataset.GetRasterBand(1)
    assert band.GetMetadataItem("CLASS_2") == "vegetation"
    table = band.GetColorTable()
    assert [table.GetColorEntry(value)[:3] for value in range(4)] == [tuple(c) for c in COLOURS]
    assert band.GetColorInterpretation() == gdal.GCI_PaletteIndex
    # Beside its .aux.xml, GDAL's category names are there too (GDAL 3.6's GeoTIFF driver reads the side
    # file lazily: GetCategoryNames sees it only after another read of the file's metadata).
    assert "Categories:\n      0: urban\n      1: crop" in gdalinfo(path)
    beside = gdal.Open(str(path))
    beside.GetProjection()
    assert list(beside.GetRasterBand(1).GetCategoryNames()) == NAMES


def test_float_layers_are_cogs_with_average_overviews(tmp_path):
    path = tmp_path / "layers.tif"
    data = np.random.default_rng(2).random((3, 600, 700), dtype=np.float32)
    with gdal_tif2rgb.geotiff_writer(path, _grid(), 3, np.float32, band_names=["a", "b", "c"]) as write:
        write(data[:, :300], 0, 0)
        write(data[:, 300:], 300, 0)
    report = gdalinfo(path)
    assert "LAYOUT=COG" in report and "COMPRESSION=ZSTD" in report and "Overviews: 350x300" in report
    dataset = gdal.Open(str(path))
    np.testing.assert_array_equal(dataset.ReadAsArray(), data)
    assert [dataset.GetRasterBand(i + 1).GetDescription() for i in range(3)] == ["a", "b", "c"]
    overview = dataset.GetRasterBand(1).GetOverview(0).ReadAsArray()
    assert overview[0, 0] == pytest.approx(data[0, :2, :2].mean(), rel=1e-5)
    assert gdal_tif2rgb.read_class_names(path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["layers.tif"]


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "predMap.tif"
    with pytest.raises(ZeroDivisionError):
        with gdal_tif2rgb.geotiff_writer(path, _grid(), 1, np.uint8, class_names=NAMES, class_colours=COLOURS) as write:
            write(np.zeros((10, 10), np.uint8))
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_a_failed_cog_conversion_leaves_no_file(tmp_path, monkeypatch):
    def broken(source, target, is_float, continuous):
        target.write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(gdal_tif2rgb, "_translate_to_cog", broken)
    with pytest.raises(OSError, match=r"GDAL could not write it \(disk full\): '.*predMap.tif'"):
        with gdal_tif2rgb.geotiff_writer(tmp_path / "predMap.tif", _grid(), 1, np.uint8, class_names=NAMES) as write:
            write(np.zeros((600, 700), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_qml_style(tmp_path):
    path = tmp_path / "predMap.qml"
    files.write_qml(path, NAMES, COLOURS, nodata=255)
    root = ET.parse(path).getroot()
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [e.get("label") for e in entries] == NAMES
    assert [e.get("value") for e in entries] == ["0", "1", "2", "3"]
    assert [e.get("color") for e in entries] == ["#fff812", "#ff7758", "#0b8314", "#1f3bff"]
    transparent = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")
    assert (transparent.get("min"), transparent.get("max"), transparent.get("percentTransparent")) == \
        ("255", "255", "100")
    assert [p.name for p in tmp_path.iterdir()] == ["predMap.qml"]


def test_step0_and_step2_rasters_are_cogs_and_the_map_has_its_style(step2_workdir):
    """A real whole-scene run on the 324 x 339 px subset: COGs (one 512 px block each, so no overviews; the demo
    scene's overviews are checked in test_tiled.py), and predMap.qml beside predMap.tif."""
    workdir = step2_workdir[0]
    for name in ("layers.tif", "reference.tif", "segments.tif", "predMap.tif"):
        assert_cog(workdir / name, overviews=False)
    assert qml_classes(workdir / "predMap.qml") == [
        (str(value), name, "#{:02x}{:02x}{:02x}".format(*colour)) for value, (name, colour) in enumerate(zip(NAMES, COLOURS))]
    assert gdal_tif2rgb.read_class_names(workdir / "predMap.tif") == NAMES
