"""Step 3: metrics against hand-worked figures, the held-out headline, the segmentation ceiling, the report."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import gdal_tif2rgb
import Step3_Accuracy_Assessment as step3
from pipeline.workflow import assess
from pipeline.assessment import accuracy, area_estimates, pixel_counts
from pipeline.core import grids
from pipeline.assessment.area_estimates import held_out_estimates, pixel_area
from pipeline.segmentation.split import block_of
from pipeline.core import vocabulary

NAMES = ["urban", "crop", "vegetation", "water"]


class TestMetrics:
    def test_against_a_hand_worked_confusion_matrix(self):
        #            reference:  0  0  0  0  1  1  1  2  2  3
        reference = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
        predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 3])
        result = accuracy.assess(reference, predicted, NAMES, "superpixels")
        assert result["confusion_matrix"] == [[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
        assert result["overall_accuracy"] == 0.7  # 7 of 10 on the diagonal
        # chance agreement: sum(row_i * col_i) / 100 = (4*4 + 3*3 + 2*2 + 1*1) / 100 = 0.30
        assert result["kappa"] == round((0.7 - 0.3) / (1 - 0.3), 3)
        assert result["precision"] == [0.75, round(2 / 3, 3), 0.5, 1.0]  # column-wise: user's accuracy
        assert result["recall"] == [0.75, round(2 / 3, 3), 0.5, 1.0]  # row-wise: producer's accuracy
        assert result["support"] == [4, 3, 2, 1]
        assert result["weighted_f1"] == round((4 * 0.75 + 3 * 2 / 3 + 2 * 0.5 + 1 * 1) / 10, 3)

    def test_a_class_never_predicted_has_undefined_precision(self):
        result = accuracy.assess(np.array([0, 1, 1]), np.array([0, 0, 0]), ["a", "b"], "superpixels")
        assert result["precision"][1] is None and result["recall"][1] == 0.0

    def test_nothing_to_assess_is_an_error(self):
        with pytest.raises(ValueError, match="no test superpixels to assess"):
            accuracy.assess(np.array([], int), np.array([], int), NAMES, "test superpixels")


def toy_scene():
    """Four superpixels in a row: 0 and 1 train, 2 test, 3 test but half unlabelled pixels."""
    segments = np.repeat(np.arange(4), 4)[None, :].repeat(2, axis=0)
    codes = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 0, 3, 3, 255, 255]] * 2, np.uint8)
    labels = np.array([0, 1, 2, 3], np.uint8)
    split = np.array([0, 0, 1, 1], np.uint8)
    return segments, codes, labels, split


def counts_of(segments, codes, labels, split, pred_map, block, size=1024, k=4):
    """:func:`pixel_counts.count_pixels` of rasters in memory, in windows of ``size`` px."""
    def read(window):
        row, col, rows, cols = window
        return tuple(a[row:row + rows, col:col + cols] for a in (pred_map, codes, segments))

    return pixel_counts.count_pixels(read, segments.shape, size, k, labels, split, block)


class TestAssessments:
    def test_headline_uses_test_superpixels_only(self):
        segments, codes, labels, split = toy_scene()
        predicted = np.where(split == 0, labels, (labels + 1) % 4).astype(np.uint8)  # right on train, wrong on test
        counts = counts_of(segments, codes, labels, split, predicted[segments], np.zeros(4, int))
        result = accuracy.assessments(counts, labels, split, predicted, None, NAMES)
        assert result["superpixel_test"]["n_samples"] == 2
        assert result["superpixel_test"]["overall_accuracy"] == 0.0
        assert result["superpixel_all_labelled"]["overall_accuracy"] == 0.5
        assert result["pixel_test"]["n_samples"] == 2 * 6  # labelled pixels of superpixels 2 and 3

    def test_ceiling_comes_from_the_reference_not_the_predictions(self):
        segments, codes, labels, split = toy_scene()
        results = []
        for seed in range(3):
            predicted = np.random.default_rng(seed).integers(0, 4, size=4).astype(np.uint8)
            counts = counts_of(segments, codes, labels, split, predicted[segments], np.zeros(4, int))
            results.append(accuracy.assessments(counts, labels, split, predicted, None, NAMES)
                           ["segmentation_ceiling"])
        assert results[0] == results[1] == results[2]
        # superpixel 2 (label 2) holds codes 2,2,2,0 and superpixel 3 (label 3) holds 3,3 labelled: 5 of 6 right
        assert results[0]["overall_accuracy"] == round(2 * 5 / 12, 3)

    def test_forest_difference_and_its_interval_over_blocks_by_hand(self):
        # three of 6 blocks sampled; pixels n_u = 4, 6, 10; hits of map a 3, 6, 7, of map b 2, 3, 8
        def tables(hits, pixels):
            return np.array([[[h, 0], [p - h, 0]] for h, p in zip(hits, pixels)])  # all mapped 0; hits on (0, 0)

        pixels = np.array([4, 6, 10])
        a, b = np.array([3, 6, 7]), np.array([2, 3, 8])
        result = area_estimates.accuracy_difference(tables(a, pixels), tables(b, pixels), 6)
        d = (a - b).sum() / pixels.sum()  # 3 / 20
        e = (a - b) - d * pixels  # ratio estimator residuals
        variance = (1 - 3 / 6) * e.var(ddof=1) / (3 * pixels.mean() ** 2)  # Cochran (1977) eq. 6.9 with fpc
        assert result["overall_accuracy"] == pytest.approx([16 / 20, 13 / 20])
        assert result["difference"] == pytest.approx(d) and result["n_units"] == 3
        assert result["difference_se"] == pytest.approx(np.sqrt(variance))
        assert result["difference_ci95"] == pytest.approx(1.96 * np.sqrt(variance))
        assert area_estimates.accuracy_difference(tables(a[:1], pixels[:1]), tables(b[:1], pixels[:1]),
                                                  6)["difference_ci95"] is None  # one block: no spread

    def test_forest_comparison_counts_the_forest_map_on_the_cnn_pixels(self):
        segments, codes, labels, split, pred_map, block = random_scene(seed=2)
        n = len(labels)
        pred_labels = np.random.default_rng(4).integers(0, 4, n).astype(np.uint8)
        forest = np.where(np.random.default_rng(5).random(n) < 0.5, labels, 0).astype(np.uint8)
        forest[labels == 255] = 1
        pred_map = pred_labels[segments]
        counts = pixel_counts.count_pixels(
            lambda w: tuple(x[w[0]:w[0] + w[2], w[1]:w[1] + w[3]] for x in (pred_map, codes, segments)),
            segments.shape, 9, 4, labels, split, block, forest)
        observed = ((labels != 255) & (split == 1))[segments] & (codes < 4)
        assert (accuracy.assess_counts(counts.peer_pixel_test, NAMES, "pixels")
                == accuracy.assess(codes[observed], forest[segments][observed], NAMES, "pixels"))
        result = accuracy.assessments(counts, labels, split, pred_labels, forest, NAMES)
        comparison = accuracy.forest_comparison(counts, labels, split, block, pred_labels, forest)
        pixel, superpixel = comparison["pixel_test"], comparison["superpixel_test"]
        assert pixel["overall_accuracy"] == pytest.approx([result["pixel_test"]["overall_accuracy"],
                                                           result["random_forest_pixel_test"]["overall_accuracy"]],
                                                          abs=5e-4)
        assert superpixel["overall_accuracy"] == pytest.approx(
            [result["superpixel_test"]["overall_accuracy"], result["random_forest_superpixel_test"]["overall_accuracy"]],
            abs=5e-4)
        assert pixel["n_units"] == superpixel["n_units"] == np.unique(block[(labels != 255) & (split == 1)]).size
        assert comparison["verdict"] == accuracy.forest_verdict(pixel) and pixel["difference_ci95"] > 0


def random_scene(seed=0, shape=(37, 53), k=4):
    """Superpixels of 5 x 6 px with random labels and split, reference codes and map with unlabelled (255)
    pixels, and each superpixel's split block of 8 px by its centroid."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    segments = (rows // 5) * -(-shape[1] // 6) + cols // 6
    n = int(segments.max()) + 1
    labels = np.where(rng.random(n) < 0.2, 255, rng.integers(0, k, n)).astype(np.uint8)
    split = rng.integers(0, 3, n).astype(np.uint8)
    codes = np.where(rng.random(shape) < 0.1, 255, rng.integers(0, k, shape)).astype(np.uint8)
    pred_map = np.where(rng.random(shape) < 0.05, 255, rng.integers(0, k, shape)).astype(np.uint8)
    sizes = np.bincount(segments.ravel())
    centroids = np.stack([np.bincount(segments.ravel(), weights=a.ravel()) // sizes for a in (rows, cols)], 1)
    return segments, codes, labels, split, pred_map, block_of(centroids.astype(int), shape, 8)


class TestPixelCounts:
    def test_counts_summed_over_windows_equal_the_whole_scene_counts(self):
        segments, codes, labels, split, pred_map, block = random_scene()
        k = 4
        # the whole-array counts, as Step 3 took them from whole rasters
        test = (labels != 255) & (split == 1)
        observed = test[segments] & (codes < k)
        mapped = pred_map < k
        in_block = observed & mapped
        blocks, unit = np.unique(block[segments[in_block]], return_inverse=True)
        tables = np.bincount((unit * k + codes[in_block]) * k + pred_map[in_block],
                             minlength=len(blocks) * k * k).reshape(-1, k, k)
        for size in (1, 4, 7, 16, 100):
            counts = counts_of(segments, codes, labels, split, pred_map, block, size)
            assert counts.map_pixels.tolist() == np.bincount(pred_map[mapped], minlength=k).tolist(), size
            assert counts.mapped_labelled == np.count_nonzero(mapped & (codes < k))
            assert counts.labelled == np.count_nonzero(codes != 255)
            assert counts.disagreement_share == np.mean(codes[codes != 255] != pred_map[codes != 255])
            assert (accuracy.assess_counts(counts.pixel_test, NAMES, "pixels")
                    == accuracy.assess(codes[observed], pred_map[observed], NAMES, "pixels"))
            ceiling = grids.paint_map(labels, segments, 255)
            assert (accuracy.assess_counts(counts.segmentation_ceiling, NAMES, "pixels")
                    == accuracy.assess(codes[observed], ceiling[observed], NAMES, "pixels"))
            kept = counts.block_tables[counts.block_tables.sum(axis=(1, 2)) > 0]
            np.testing.assert_array_equal(kept, tables)
            for name, raster in (("codes", codes), ("map", pred_map), ("segments", segments)):
                np.testing.assert_array_equal(counts.previews[name], raster)  # a small scene: stride 1

    def test_previews_hold_every_display_stride_th_pixel(self):
        shape = (4100, 30)  # display_stride 3
        segments = np.arange(shape[0] * shape[1]).reshape(shape) % 1000
        codes = (segments % 5).astype(np.uint8)
        labels, split = np.zeros(1000, np.uint8), np.ones(1000, np.uint8)
        counts = counts_of(segments, codes, labels, split, codes, np.zeros(1000, int), 1000, 5)
        for name, raster in (("codes", codes), ("map", codes), ("segments", segments)):
            np.testing.assert_array_equal(counts.previews[name], raster[::3, ::3])

    def test_a_scene_without_a_reference_counts_the_map_only(self):
        pred_map = np.array([[0, 1, 1, 255, 3]], np.uint8)
        counts = pixel_counts.count_pixels(lambda w: (pred_map[:, w[1]:w[1] + w[3]], None, None), (1, 5), 2, 4,
                                           np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros(0, int))
        assert counts.map_pixels.tolist() == [1, 2, 0, 1] and counts.pixel_test.sum() == 0

    def test_assess_counts_equals_assess_with_predictions_outside_the_classes(self):
        rng = np.random.default_rng(1)
        reference = rng.integers(0, 4, 500)
        predicted = np.where(rng.random(500) < 0.1, 255, np.where(rng.random(500) < 0.7, reference,
                                                                  rng.integers(0, 4, 500)))
        counts = accuracy.confusion_counts(reference, predicted, 4)
        assert counts.sum() == 500 and counts[:, 4].sum() == np.count_nonzero(predicted == 255)
        assert accuracy.assess_counts(counts, NAMES, "pixels") == accuracy.assess(reference, predicted, NAMES, "pixels")

    def test_pixel_values_read_window_by_window(self):
        scene = np.arange(37 * 53).reshape(37, 53)
        rows, cols = np.array([0, 36, 5, 20, 20]), np.array([0, 52, 40, 7, 8])
        read = []

        def reader(w):
            read.append(w)
            return scene[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]

        assert grids.pixel_values(reader, scene.shape, 10, rows, cols).tolist() == scene[rows, cols].tolist()
        assert len(read) == 4  # only the windows holding a point


class TestAreaEstimates:
    def test_each_test_pixel_counts_with_its_own_reference_value_and_blocks_are_the_units(self):
        segments, codes, labels, split = toy_scene()  # superpixels 2 and 3 are test, 8 pixels each
        block = block_of(np.array([[0, 1], [0, 5], [0, 9], [0, 13]]), segments.shape, 8)
        predicted = np.array([2, 2, 2, 2], np.uint8)  # all vegetation
        counts = counts_of(segments, codes, labels, split, predicted[segments], block, 3)
        result = held_out_estimates(counts, labels, split, block, NAMES, 100.0, 8)
        # superpixel 2: 6 vegetation and 2 urban pixels; superpixel 3: 4 water pixels, 4 unlabelled (left out)
        assert result["confusion_matrix_pixels"] == [[0, 0, 2, 0], [0] * 4, [0, 0, 6, 0], [0, 0, 4, 0]]
        assert [c["map_area_ha"] for c in result["classes"].values()] == [0.0, 0.0, 0.32, 0.0]  # 32 px of 0.01 ha
        sample = result["sample"]
        assert (sample["blocks"], sample["population_blocks"], sample["pixels"]) == (1, 2, 12)
        # 4 of the 32 mapped pixels lack a reference (87.5 % labelled): no probability sample, nothing estimated
        assert sample["probability_sample"] is False and sample["reference_coverage"] == 0.875
        assert "not a probability sample" in sample["note"] and "--design-sample" in sample["note"]
        assert result["overall_accuracy"] is None and result["overall_accuracy_ci95"] is None
        assert all(c["estimated_area_ha"] is None and c["users_accuracy"] is None for c in result["classes"].values())
        json.dumps(result, allow_nan=False)

    def test_block_standard_error_over_test_blocks(self):
        segments, codes, labels, split = toy_scene()
        codes = np.where(codes == 255, 3, codes).astype(np.uint8)  # a complete reference
        block = block_of(np.array([[0, 1], [0, 5], [0, 9], [0, 13]]), segments.shape, 4)
        predicted = np.array([2, 2, 2, 2], np.uint8)
        # blocks of 4 px: every superpixel its own block; 2 of the 4 blocks are test blocks
        counts = counts_of(segments, codes, labels, split, predicted[segments], block, 3)
        result = held_out_estimates(counts, labels, split, block, NAMES, 100.0, 4)
        assert result["sample"]["probability_sample"] and result["sample"]["blocks"] == 2
        # block values z = (6 - 0.375 * 8) / 16 and (0 - 0.375 * 8) / 16; V = (1 - 2/4) * 2/1 * sum z^2
        assert result["overall_accuracy"] == pytest.approx(6 / 16)
        assert result["overall_accuracy_se"] == pytest.approx(np.sqrt(0.5 * 2 * 2 * (3 / 16) ** 2))

    def test_geographic_crs_is_a_one_line_error(self):
        from osgeo import osr

        crs = osr.SpatialReference()
        crs.ImportFromEPSG(4326)
        grid = gdal_tif2rgb.Grid(10, 10, (-4.1, 0.0001, 0, 52.4, 0, -0.0001), crs.ExportToWkt())
        with pytest.raises(ValueError, match="reference.tif: its CRS is geographic .* projected CRS in metres"):
            pixel_area(grid, "reference.tif")
        crs.ImportFromEPSG(27700)
        projected = gdal_tif2rgb.Grid(10, 10, (257060.0, 10.0, 0, 285730.0, 0, -10.0), crs.ExportToWkt())
        assert pixel_area(projected, "reference.tif") == 100.0


class TestEndToEnd:
    def test_metrics_json_report_and_figures(self, step2_workdir, capsys):
        workdir, _, arguments = step2_workdir
        assert step3.main(arguments) == 0
        metrics = json.loads((workdir / "metrics.json").read_text())
        assert set(metrics["assessments"]) == {"superpixel_test", "superpixel_all_labelled", "pixel_test",
                                               "segmentation_ceiling", "random_forest_superpixel_test",
                                               "random_forest_pixel_test"}
        forest, assessments = metrics["cnn_minus_forest"], metrics["assessments"]
        for level in ("pixel_test", "superpixel_test"):
            cnn, peer = assessments[level]["overall_accuracy"], assessments[f"random_forest_{level}"]["overall_accuracy"]
            assert forest[level]["overall_accuracy"] == pytest.approx([cnn, peer], abs=5e-4)
            assert forest[level]["difference"] == pytest.approx(cnn - peer, abs=1e-3)
            assert forest[level]["difference_ci95"] > 0 and forest[level]["n_units"] == metrics["area_estimates"]["n_units"]
        assert "random forest" in forest["verdict"]
        for result in metrics["assessments"].values():
            assert {"confusion_matrix", "class_names", "overall_accuracy", "kappa", "precision", "recall", "f1",
                    "weighted_f1", "n_samples", "support"} <= set(result)
            assert np.sum(result["confusion_matrix"]) == result["n_samples"] > 0
        assert "rows = reference" in metrics["note"]
        area = metrics["area_estimates"]
        assert any("Stehman" in reference for reference in area["sample"]["references"])
        assert "p_ij = W_j T_ij / T_.j" in area["formula"]
        assert area["pixel_area_m2"] == 100.0  # Sentinel-2's 10 m pixels
        assert area["total_area_ha"] == pytest.approx(324 * 339 / 100)  # every pixel of the 324 x 339 px subset is mapped
        sample = area["sample"]
        assert sample["probability_sample"] and sample["reference_coverage"] == 1.0
        assert area["n_units"] == sample["blocks"] < sample["population_blocks"]
        assert sample["pixels"] == metrics["assessments"]["pixel_test"]["n_samples"]  # each test pixel counts once
        assert sample["test_superpixels"] == metrics["assessments"]["superpixel_test"]["n_samples"]
        assert sum(c["estimated_area_ha"] for c in area["classes"].values()) == pytest.approx(area["total_area_ha"])
        for name in ("disagreement_map.png", "split_map.png", "reference_maps.png"):
            assert (workdir / name).is_file(), name
        report = (workdir / "report.html").read_text(encoding="utf-8")
        assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src=['\"]([^'\"]+)['\"]", report))
        output = capsys.readouterr().out
        assert "OA" in output and "area_estimates (ha, +- 95 % CI; cluster sample" in output and "headline: overall accuracy" in output
        assert f"CNN against its strongest simple peer: {forest['verdict']}" in output
        assert "CNN against its strongest simple peer" in report

    def test_the_map_read_is_the_map_step2_painted(self, step2_workdir):
        from pipeline.handoffs import contract
        from pipeline.core.grids import paint_map

        workdir, _, _ = step2_workdir
        segments = contract.load(contract.SEGMENTS, workdir, ["segments"])["segments"]
        pred_labels = contract.load(contract.PRED_LABELS, workdir, ["predLabels"])["predLabels"]
        record = contract.provenance_of(contract.load(contract.PRED_LABELS, workdir, [contract.PROVENANCE]),
                                        contract.PRED_LABELS.path(workdir), vocabulary.STEP2)
        pred_map = contract.read_raster(contract.PRED_MAP_RASTER, workdir, record)
        assert pred_map.dtype == np.uint8
        np.testing.assert_array_equal(pred_map, paint_map(pred_labels, segments, 255))

    def test_small_windows_give_the_same_metrics_and_figures(self, step2_workdir, tmp_path, monkeypatch):
        """Step 3 in windows of 100 px (which do not divide the 324 x 339 px scene) writes the metrics.json and
        the figures it writes in its default windows (one window here)."""
        import shutil

        workdir, _, arguments = step2_workdir
        outputs = ("metrics.json", "reference_maps.png", "disagreement_map.png", "split_map.png")
        written, default = {}, assess.WINDOW
        for size in (default, 100):
            copy = tmp_path / str(size)
            shutil.copytree(workdir, copy)
            monkeypatch.setattr(assess, "WINDOW", size)
            assert step3.main([arguments[0], arguments[1], "--workdir", str(copy)]) == 0
            written[size] = {name: (copy / name).read_bytes() for name in outputs}
        assert written[100] == written[default]

    def test_step3_too_early_names_the_first_step_to_run(self, step0_workdir, subset_config, tmp_path, capsys):
        import shutil

        import Step1_Class_Balance as step1

        for name in ("segments.mat", "samples_labels.mat", "layers.tif", "reference.tif"):
            shutil.copy(step0_workdir / name, tmp_path / name)
        arguments = ["--config", str(subset_config), "--workdir", str(tmp_path)]
        assert step3.main(arguments) == 1
        assert "run Step2_Model_Training.py first" in capsys.readouterr().err  # which asks for Step 1 in turn
        assert step1.main(arguments) == 0
        assert step3.main(arguments) == 1
        assert "run Step2_Model_Training.py first" in capsys.readouterr().err
