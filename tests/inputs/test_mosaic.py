"""One date given as tiles (``image = "tiles/*.tif"``): the real subset cut into overlapping tiles is mosaicked back
into the subset itself, through Step 0 to the same hand-offs; overlaps come from the first tile that has data; tiles
that cannot be one mosaic, patterns that match nothing and lists of tiles are one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from osgeo import gdal

import Step0_Data_Preparation as step0
from builders import SUBSET, SUBSET_PARAMETERS, fails_with_one_line, write_scene, write_tif
from pipeline.inputs import mosaic
from pipeline.run.config import load_scene, tiles_of
from pipeline.core.errors import InputDataError
from pipeline.inputs.sources import prepare_image

SUBSET_EPSG = 27700
#: Rows and columns where the 2 x 2 tiles of the subset (339 x 324 px) start and end: 20 px of overlap.
ROW_CUTS, COL_CUTS = ((0, 180), (160, 339)), ((0, 172), (152, 324))


def subset() -> tuple:
    """The subset's pixels (10, 339, 324) and geotransform."""
    dataset = gdal.Open(str(SUBSET))
    return dataset.ReadAsArray(), dataset.GetGeoTransform()


def write_window(path, pixels, geotransform, row: int, col: int, rows: int, cols: int, nodata=None):
    """Write the window (row, col, rows, cols) of ``pixels`` with its own georeferencing."""
    x0, dx, _, y0, _, dy = geotransform
    return write_tif(path, pixels[:, row:row + rows, col:col + cols], (x0 + col * dx, dx, 0.0, y0 + row * dy, 0.0, dy),
                     SUBSET_EPSG, nodata)


def cut_into_tiles(folder, pixels=None, geotransform=None) -> list:
    """The subset (or ``pixels``) as 2 x 2 overlapping tiles ``folder/tile_<row>_<col>.tif``."""
    if pixels is None:
        pixels, geotransform = subset()
    folder.mkdir(parents=True, exist_ok=True)
    return [write_window(folder / f"tile_{i}_{j}.tif", pixels, geotransform, r0, c0, r1 - r0, c1 - c0)
            for i, (r0, r1) in enumerate(ROW_CUTS) for j, (c0, c1) in enumerate(COL_CUTS)]


def run_step0(config, work) -> dict:
    """Run Step 0 and return its run record."""
    assert step0.main(["--config", str(config), "--workdir", str(work)]) == 0
    return json.loads((work / "run.json").read_text())["steps"]["Step0_Data_Preparation"]


def test_tiles_of_the_subset_through_step0_give_the_whole_image_and_its_hand_offs(tmp_path, subset_reference,
                                                                                   step0_workdir):
    tiles = cut_into_tiles(tmp_path / "tiles")
    config = write_scene(tmp_path / "tiles.toml", "tiles/*.tif", subset_reference, SUBSET_PARAMETERS)
    run = run_step0(config, tmp_path / "work")
    prepared = gdal.Open(str(tmp_path / "work" / "sources" / "mosaic.vrt"))
    whole = gdal.Open(str(SUBSET))
    assert np.array_equal(prepared.ReadAsArray(), whole.ReadAsArray())
    assert prepared.GetGeoTransform() == whole.GetGeoTransform()
    assert prepared.GetSpatialRef().IsSame(whole.GetSpatialRef())
    assert run["sources"]["tiles"] == [str(tile) for tile in tiles]
    assert run["sources"]["image"] == str(tmp_path / "tiles" / "*.tif")
    for name in ("layers.tif", "reference.tif", "segments.tif"):
        assert np.array_equal(gdal.Open(str(tmp_path / "work" / name)).ReadAsArray(),
                              gdal.Open(str(step0_workdir / name)).ReadAsArray()), name
    segments = [scipy.io.loadmat(folder / "segments.mat")["segments"] for folder in (tmp_path / "work", step0_workdir)]
    assert np.array_equal(*segments)
    samples = [scipy.io.loadmat(folder / "samples_labels.mat") for folder in (tmp_path / "work", step0_workdir)]
    for key in ("labels", "split", "samples"):
        assert np.array_equal(samples[0][key], samples[1][key]), key
    import Step1_Class_Balance as step1

    # Step 1 checks that the hand-offs were made from the scene's image: the same tiles, by their fingerprint
    assert step1.main(["--config", str(config), "--workdir", str(tmp_path / "work")]) == 0


def test_several_dates_of_tiles_are_recorded_date_by_date(tmp_path, subset_reference):
    first, second = cut_into_tiles(tmp_path / "date1"), cut_into_tiles(tmp_path / "date2")
    config = write_scene(tmp_path / "dates.toml", ["date1/*.tif", "date2/*.tif"], subset_reference)
    scene = load_scene(config)
    prepared = prepare_image(scene.images, scene.bands, tmp_path / "sources")
    assert [date["tiles"] for date in prepared.sources["dates"]] == [[str(t) for t in first], [str(t) for t in second]]
    data, valid = prepared.read_image()
    pixels, _ = subset()
    assert valid.all() and np.array_equal(data["nir"], pixels[6])  # the median of a date and its copy is the date


@pytest.mark.parametrize("dtype, nodata", [(np.uint16, 0), (np.float32, np.nan)])
def test_where_tiles_overlap_the_first_tile_with_data_wins(tmp_path, dtype, nodata):
    pixels, geotransform = subset()
    pixels = pixels.astype(dtype)
    second = pixels + 1  # another value in every pixel, the overlap included
    first_window, second_window = (0, 0, 339, 180), (0, 160, 339, 164)  # 20 columns of overlap
    hole = np.zeros_like(pixels[0], bool)
    hole[100:120, 170:180] = True  # nodata in the first tile's part of the overlap
    with_hole = np.where(hole, nodata, pixels).astype(dtype)
    write_window(tmp_path / "a.tif", with_hole, geotransform, *first_window, nodata=nodata)
    write_window(tmp_path / "b.tif", second, geotransform, *second_window, nodata=nodata)
    tiles = tiles_of(tmp_path, "*.tif", "test")
    data = gdal.Open(str(mosaic.build_mosaic(tiles, tmp_path / "out" / "mosaic.vrt"))).ReadAsArray()
    expected = np.where(hole, second, pixels)
    expected[:, :, 180:] = second[:, :, 180:]
    assert np.array_equal(data, expected)


def test_a_pattern_that_matches_nothing_is_a_one_line_error(tmp_path, capsys, subset_reference):
    config = write_scene(tmp_path / "scene.toml", "tiles/*.tif", subset_reference)
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(tmp_path / "work")], capsys,
                        "tiles/*.tif", "matches no file")


def test_a_list_of_tiles_that_do_not_overlap_points_to_a_glob_pattern(tmp_path, capsys, subset_reference):
    pixels, geotransform = subset()
    left = write_window(tmp_path / "left.tif", pixels, geotransform, 0, 0, 339, 162)
    right = write_window(tmp_path / "right.tif", pixels, geotransform, 0, 162, 339, 162)
    config = write_scene(tmp_path / "scene.toml", [str(left), str(right)], subset_reference)
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(tmp_path / "work")], capsys,
                        "right.tif", "another area", "glob pattern", 'image = "tiles/*.tif"')


def rewrite(path, gdal_function, **options) -> None:
    """Replace the tile at ``path`` by what ``gdal_function`` (gdal.Warp or gdal.Translate) makes of it."""
    changed = path.with_suffix(".changed.tif")
    dataset = gdal_function(str(changed), str(path), **options)
    dataset = None  # closed: written
    changed.replace(path)


def shifted_bounds(path) -> list:
    """The bounds of the tile at ``path`` moved by 3.5 m east (a third of a pixel)."""
    dataset = gdal.Open(str(path))
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    return [x0 + 3.5, y0 + dy * dataset.RasterYSize, x0 + 3.5 + dx * dataset.RasterXSize, y0]


@pytest.mark.parametrize("change, fragment", [
    (lambda path: rewrite(path, gdal.Warp, dstSRS="EPSG:32630"), "another CRS"),
    (lambda path: rewrite(path, gdal.Warp, xRes=20, yRes=20), "pixels of 20 x 20, not 10 x 10"),
    (lambda path: rewrite(path, gdal.Translate, bandList=list(range(1, 10))), "9 bands, not 10"),
    (lambda path: rewrite(path, gdal.Translate, outputType=gdal.GDT_Float32), "type Float32, not UInt16"),
    (lambda path: rewrite(path, gdal.Warp, outputBounds=shifted_bounds(path), xRes=10, yRes=10),
     "fraction of a pixel"),
    (lambda path: rewrite(path, gdal.Translate, noData=0), "nodata 0, not none"),
], ids=["crs", "resolution", "bands", "data type", "pixel grid", "nodata"])
def test_tiles_that_cannot_be_one_mosaic_are_one_line_errors_naming_the_tile(tmp_path, capsys, subset_reference,
                                                                              change, fragment):
    tiles = cut_into_tiles(tmp_path / "tiles")
    change(tiles[2])
    config = write_scene(tmp_path / "scene.toml", "tiles/*.tif", subset_reference)
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(tmp_path / "work")], capsys,
                        str(tiles[2]), "does not match the first tile tile_0_0.tif", fragment)


def test_tiles_with_gaps_need_a_nodata_value(tmp_path):
    pixels, geotransform = subset()
    for name, window in (("a", (0, 0, 170, 162)), ("b", (0, 162, 170, 162)), ("c", (170, 0, 169, 162))):
        write_window(tmp_path / f"{name}.tif", pixels, geotransform, *window)
    with pytest.raises(InputDataError, match="leave gaps in their extent and have no nodata value"):
        mosaic.build_mosaic(tiles_of(tmp_path, "*.tif", "test"), tmp_path / "out" / "mosaic.vrt")


def test_a_product_among_the_tiles_is_refused_with_the_way_to_mosaic_it(tmp_path):
    cut_into_tiles(tmp_path / "tiles")
    (tmp_path / "tiles" / "S2A_MSIL2A_T30UVD.zip").write_bytes(b"")
    with pytest.raises(InputDataError, match="S2A_MSIL2A_T30UVD.zip: a Sentinel-2 product .*gdalbuildvrt"):
        mosaic.build_mosaic(tiles_of(tmp_path, "tiles/*", "test"), tmp_path / "out" / "mosaic.vrt")


def test_the_fingerprint_of_tiles_changes_with_any_tile(tmp_path):
    from pipeline.handoffs.fingerprints import fingerprint, matches

    cut_into_tiles(tmp_path / "tiles")
    tiles = tiles_of(tmp_path, "tiles/*.tif", "test")
    recorded = fingerprint(tiles)
    assert recorded["path"] == str(tiles) and matches(recorded, tiles)
    pixels, geotransform = subset()
    pixels[0, -1, -1] += 1
    write_window(tiles.files[-1], pixels, geotransform, ROW_CUTS[1][0], COL_CUTS[1][0],
                 ROW_CUTS[1][1] - ROW_CUTS[1][0], COL_CUTS[1][1] - COL_CUTS[1][0])
    assert not matches(recorded, tiles)
