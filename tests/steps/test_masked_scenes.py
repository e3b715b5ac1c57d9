"""Masked and nodata pixels belong to no superpixel and are no class anywhere: the real 324 x 339 px subset with
large masks that touch the border and cut the scene in two, whole-scene and tiled, through Steps 0-3."""
from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from builders import SUBSET, SUBSET_PARAMETERS, write_scene, write_tif
from pipeline.handoffs import contract
from pipeline.segmentation import superpixels
from pipeline.core import vocabulary

TILE = 160


def painted_masks(shape: tuple) -> np.ndarray:
    """True on a disk cut by the top-left border, a band 30 rows high across the whole scene, a whole tile of
    the tiled run, and a few scattered single pixels: masks that touch the border and split the scene (about 40 %
    of it)."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    masked = (rows - 20) ** 2 + (cols - 30) ** 2 < 90 ** 2
    masked |= (rows >= 200) & (rows < 230)
    masked[:TILE, TILE:2 * TILE] = True
    masked[::37, ::41] = True
    return masked


@pytest.fixture(scope="module")
def masked_runs(tmp_path_factory, subset_reference):
    """Steps 0-3 on the subset with its masked pixels NaN, whole-scene and tiled: mode -> (workdir, masked)."""
    folder = tmp_path_factory.mktemp("masked")
    dataset = gdal.Open(str(SUBSET))
    image = dataset.ReadAsArray().astype(np.float32)
    masked = painted_masks(image.shape[1:])
    image[:, masked] = np.nan
    path = write_tif(folder / "masked.tif", image, dataset.GetGeoTransform())
    gdal.Open(str(path), gdal.GA_Update).SetProjection(dataset.GetProjection())
    config = write_scene(folder / "masked.toml", path, subset_reference, SUBSET_PARAMETERS)
    runs = {}
    for mode, extra in (("whole", []), ("tiled", ["--tile-size", str(TILE), "--workers", "1"])):
        workdir = folder / mode
        arguments = ["--config", str(config), "--workdir", str(workdir)]
        assert step0.main([*arguments, *extra]) == 0
        assert step1.main(arguments) == 0
        assert step2.main([*arguments, *extra, "--runs-dir", str(folder / "runs")]) == 0
        assert step3.main(arguments) == 0
        runs[mode] = workdir, masked
    return runs


def read_band(path) -> np.ndarray:
    """Band 1 of a GeoTIFF as QGIS would read it (GDAL)."""
    dataset = gdal.Open(str(path))  # alive while its band is read
    return dataset.GetRasterBand(1).ReadAsArray()


@pytest.mark.parametrize("mode", ["whole", "tiled"])
class TestMaskedPixels:
    def test_masked_pixels_and_only_they_belong_to_no_superpixel(self, masked_runs, mode):
        workdir, masked = masked_runs[mode]
        segments = contract.load(contract.SEGMENTS, workdir, ["segments"])["segments"]
        np.testing.assert_array_equal(segments == vocabulary.NO_SUPERPIXEL, masked)
        assert np.array_equal(read_band(workdir / "segments.tif"), segments)
        dataset = gdal.Open(str(workdir / "segments.tif"))
        assert dataset.GetRasterBand(1).GetNoDataValue() == -1
        assert np.unique(segments[~masked]).tolist() == list(range(int(segments.max()) + 1))  # no gap, no empty id

    def test_masked_pixels_are_255_in_the_map_and_nodata_in_the_uncertainty(self, masked_runs, mode):
        workdir, masked = masked_runs[mode]
        pred_map, uncertainty = read_band(workdir / "predMap.tif"), read_band(workdir / "uncertainty.tif")
        np.testing.assert_array_equal(pred_map == 255, masked)  # every mapped pixel has a class, no masked one
        np.testing.assert_array_equal(np.isnan(uncertainty), masked)

    def test_areas_count_mapped_pixels_only_and_name_the_masked_hectares(self, masked_runs, mode):
        workdir, masked = masked_runs[mode]
        metrics = json.loads((workdir / "metrics.json").read_text())
        assert metrics["masked_area_ha"] == round(masked.sum() * 100 / 1e4, 2)  # 10 m pixels
        mapped_ha = sum(c["map_area_ha"] for c in metrics["area_estimates"]["classes"].values())
        assert mapped_ha == pytest.approx((~masked).sum() * 100 / 1e4, abs=0.1)
        assert f"{metrics['masked_area_ha']:.2f} ha" in (workdir / "report.html").read_text()


def test_tiled_and_whole_scene_agree_on_what_is_masked(masked_runs):
    whole = read_band(masked_runs["whole"][0] / "predMap.tif")
    tiled = read_band(masked_runs["tiled"][0] / "predMap.tif")
    np.testing.assert_array_equal(whole == 255, tiled == 255)


class TestSlicOfMaskedImages:
    @staticmethod
    def lab(shape):
        """CIELAB of the subset's stretched RGB, its top-left ``shape`` (rows, cols)."""
        rgb = gdal.Open(str(SUBSET)).ReadAsArray()[[2, 1, 0], :shape[0], :shape[1]].astype(np.float32)
        low, high = np.percentile(rgb, [1, 99], axis=(1, 2), keepdims=True)
        return superpixels.to_lab(np.clip((rgb - low) / (high - low), 0, 1).transpose(1, 2, 0))

    def test_superpixels_keep_their_size_and_avoid_the_mask(self):
        lab = self.lab((200, 240))
        valid = np.ones((200, 240), bool)
        valid[:, 120:] = False  # the right half masked
        clear = superpixels.segment(lab, 200, 10, np.ones_like(valid), 1)
        masked = superpixels.segment(lab, 200, 10, valid, 1)
        assert (masked[:, 120:] == -1).all() and (masked[:, :120] >= 0).all()
        assert np.unique(masked).tolist() == list(range(-1, int(masked.max()) + 1))
        # superpixels of the size asked for the whole image: about half as many as on the clear image
        assert 0.4 < (masked.max() + 1) / (clear.max() + 1) < 0.6

    def test_an_all_masked_strip_gives_no_superpixel_and_the_rest_stays_consecutive(self):
        lab = self.lab((320, 80))
        valid = np.ones((320, 80), bool)
        valid[:160] = False
        segments = superpixels.segment(lab, 60, 10, valid, 2)
        assert (segments[:160] == -1).all()
        assert np.unique(segments[160:]).tolist() == list(range(int(segments.max()) + 1))
