"""Figures checked by what they show: their size and the colours of known pixels, as a user would look at them."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from PIL import Image

from pipeline.core.grids import Grid
from pipeline.core.colours import class_palette
from pipeline.core.vocabulary import LAYER_NAMES
from pipeline.run import files
from pipeline.run.figures import plot_class_map

WATER, CROP, YELLOW = (31, 59, 255), (255, 119, 88), (255, 255, 0)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def colour_count(image: np.ndarray, colour) -> int:
    return int((image == np.array(colour, np.uint8)).all(axis=-1).sum())


def test_rgb_quicklook_is_the_stretched_red_green_blue_of_layers_tif(step0_workdir):
    layers = gdal.Open(str(step0_workdir / "layers.tif")).ReadAsArray()
    rgb = png(step0_workdir / "rgb.png")
    assert rgb.shape == (339, 324, 3)
    expected = np.moveaxis(layers[[LAYER_NAMES.index(n) for n in ("red", "green", "blue")]], 0, -1)  # stored steps
    assert np.array_equal(rgb, expected)


def test_boundaries_are_yellow_exactly_where_superpixels_meet(step0_workdir):
    segments = gdal.Open(str(step0_workdir / "segments.tif")).ReadAsArray()
    shown, rgb = png(step0_workdir / "segments_boundaries.png"), png(step0_workdir / "rgb.png")
    edges = np.zeros(segments.shape, bool)
    edges[:, 1:] |= segments[:, 1:] != segments[:, :-1]
    edges[1:, :] |= segments[1:, :] != segments[:-1, :]
    assert shown.shape == rgb.shape and (shown[edges] == YELLOW).all()
    assert np.array_equal(shown[~edges], rgb[~edges])
    assert 0.2 < edges.mean() < 0.8  # superpixels of about 70 px


def test_class_map_shows_each_class_in_its_colour_in_proportion():
    codes = np.zeros((200, 300), np.uint8)
    codes[:, :100] = 3  # one third water, two thirds urban ... recoded below
    codes[:, 100:] = 1
    figure = plot_class_map(codes, ["urban", "crop", "vegetation", "water"], "test")
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    water, crop = colour_count(image, WATER), colour_count(image, CROP)
    assert water > 1000 and 1.6 < crop / water < 2.4  # the legend adds a few of each
    left_of_map = image[image.shape[0] // 2, :image.shape[1] // 2]
    assert colour_count(left_of_map[None], WATER) > 0


def test_predicted_map_png_has_the_class_shares_of_predmap_tif(step2_workdir):
    workdir, _, _ = step2_workdir
    codes = gdal.Open(str(workdir / "predMap.tif")).ReadAsArray()
    image = png(workdir / "predMap.png")
    palette = class_palette(["urban", "crop", "vegetation", "water"])
    shown = np.array([colour_count(image, colour) for colour in palette], float)
    actual = np.bincount(codes.ravel(), minlength=256)[:4].astype(float)
    np.testing.assert_allclose(shown / shown.sum(), actual / actual.sum(), atol=0.03)


def test_example_patches_show_one_row_per_class(step0_workdir):
    image = png(step0_workdir / "example_patches.png")
    assert image.shape[1] > image.shape[0] > 300  # 6 patches across, 4 classes down
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000  # photographs, not an empty grid


def test_explore_grid_is_five_compactness_values_across(explored_workdir):
    image = png(explored_workdir / "explore_slic.png")
    assert image.shape[1] > 1.3 * image.shape[0]  # 5 columns, 3 rows
    assert colour_count(image, YELLOW) > 3000  # the boundaries (the rest blended by resampling)


@pytest.mark.parametrize("chunk_bytes", [2**30, 500])  # one IDAT chunk, or many (images deflating past 1 GiB)
def test_png_writer_gives_files_that_libpng_and_pillow_read_back_exactly(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr("pipeline.core.png.PNG_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.arange(90), np.arange(70)).astype(np.uint8)  # smooth: rows filtered "Up"
    for shape in [(9, 13), (9, 13, 2), (9, 13, 3), (9, 13, 4), (1, 1, 3), (90, 70, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8) if shape[0] < 90 else np.stack([ramp] * 3, axis=-1)
        path = tmp_path / f"{len(shape)}_{shape[-1]}.png"
        files.save_png(path, image[::-1])  # a view with a negative stride
        read = gdal.Open(str(path))  # GDAL's PNG driver: libpng, which checks every chunk's CRC
        assert read.GetDriver().ShortName == "PNG"
        bands = read.ReadAsArray()
        assert np.array_equal(bands if bands.ndim == 2 else np.moveaxis(bands, 0, -1), image[::-1])
        assert np.array_equal(np.asarray(Image.open(path)).reshape(shape), image[::-1])
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError, match="a PNG holds uint8"):
            files.save_png(tmp_path / "bad.png", bad)
    assert not (tmp_path / "bad.png").exists() and not list(tmp_path.glob("*partial*"))


BNG = ('PROJCS["OSGB 1936 / British National Grid",GEOGCS["OSGB 1936",DATUM["OSGB_1936",SPHEROID["Airy 1830",'
       '6377563.396,299.3249646]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION['
       '"Transverse_Mercator"],UNIT["metre",1],AUTHORITY["EPSG","27700"]]')


def test_class_map_on_a_grid_has_easting_northing_in_km_and_a_scale_bar():
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    grid = Grid(339, 324, (257594.7, 10.0, 0.0, 282834.3, 0.0, -10.0), BNG)
    codes = np.zeros((339, 324), np.uint8)
    figure = plot_class_map(codes, ["urban", "crop"], "map", grid=grid)
    figure.canvas.draw()
    axis = figure.axes[0]
    assert axis.get_xlabel() == "easting (km), OSGB 1936 / British National Grid (EPSG:27700)"
    assert axis.get_ylabel() == "northing (km)"
    assert axis.get_xlim() == pytest.approx((257594.7, 257594.7 + 3240)) and axis.get_ylim()[1] == pytest.approx(282834.3)
    shown = [tick for tick in axis.get_xticks() if 257594.7 <= tick <= 260834.7]
    assert [axis.xaxis.get_major_formatter()(tick, 0) for tick in shown] == ["258", "259", "260"]  # km of the CRS
    bars = [a for a in axis.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1 and bars[0].txt_label.get_text() == "500 m"


def test_class_map_without_a_grid_has_no_axes():
    figure = plot_class_map(np.zeros((20, 30), np.uint8), ["urban", "crop"], "map")
    assert not figure.axes[0].axison


@pytest.mark.parametrize("n_classes, top", [(4, 0.75), (2, 0.5), (None, 1.0)])
def test_uncertainty_colour_bar_runs_to_one_minus_one_over_k(n_classes, top):
    from pipeline.model.prediction_maps import plot_uncertainty

    uncertainty = np.linspace(0, top, 600, dtype=np.float32).reshape(20, 30)
    figure = plot_uncertainty(uncertainty, n_classes)
    image = figure.axes[0].images[0]
    assert image.get_clim() == pytest.approx((0.0, top))
    bar = figure.axes[1]
    assert bar.get_ylim() == pytest.approx((0.0, top))
    if n_classes:
        assert f"at most 1 - 1/{n_classes}" in bar.get_ylabel()


def test_step2_previews_are_drawn_in_the_scene_coordinates(step2_workdir):
    workdir, _, _ = step2_workdir
    image = png(workdir / "uncertainty.png")
    text_rows = image[-40:]  # the easting label and the tick labels below the map
    assert (text_rows < 100).all(axis=-1).sum() > 200  # dark text, not a blank margin
