"""Step 3: metrics against hand-worked figures, the held-out headline, the segmentation ceiling, the report."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import gdal_tif2rgb
import Step3_Accuracy_Assessment as step3
from pipeline import accuracy
from pipeline.area_estimates import held_out_estimates, pixel_area

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


class TestAssessments:
    def test_headline_uses_test_superpixels_only(self):
        segments, codes, labels, split = toy_scene()
        predicted = np.where(split == 0, labels, (labels + 1) % 4).astype(np.uint8)  # right on train, wrong on test
        result = accuracy.assessments(segments, codes, labels, split, predicted, predicted[segments], predicted, NAMES)
        assert result["superpixel_test"]["n_samples"] == 2
        assert result["superpixel_test"]["overall_accuracy"] == 0.0
        assert result["superpixel_all_labelled"]["overall_accuracy"] == 0.5
        assert result["pixel_test"]["n_samples"] == 2 * 6  # labelled pixels of superpixels 2 and 3

    def test_ceiling_comes_from_the_reference_not_the_predictions(self):
        segments, codes, labels, split = toy_scene()
        results = []
        for seed in range(3):
            predicted = np.random.default_rng(seed).integers(0, 4, size=4).astype(np.uint8)
            results.append(accuracy.assessments(segments, codes, labels, split, predicted, predicted[segments],
                                             predicted, NAMES)["segmentation_ceiling"])
        assert results[0] == results[1] == results[2]
        # superpixel 2 (label 2) holds codes 2,2,2,0 and superpixel 3 (label 3) holds 3,3 labelled: 5 of 6 right
        assert results[0]["overall_accuracy"] == round(2 * 5 / 12, 3)

    def test_superpixel_means(self):
        segments = np.array([[0, 0, 1]])
        layers = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], np.float32)
        assert accuracy.superpixel_means([(layers, segments)], 2).tolist() == [[2.0, 3.0], [5.0, 6.0]]

    def test_superpixel_means_window_by_window_equal_the_whole_scene_means(self):
        # 5 x 7 px: superpixel 0 is the left 3 columns, 1 the rest; layer 0 is the column, layer 1 the row
        segments = np.where(np.arange(7) < 3, 0, 1)[None, :].repeat(5, axis=0)
        rows, cols = np.indices((5, 7))
        layers = np.stack([cols, rows], axis=-1).astype(np.float32)
        expected = [[1.0, 2.0], [4.5, 2.0]]  # columns 0..2 and 3..6, rows 0..4 in both
        whole = accuracy.superpixel_means([(layers, segments)], 2)
        assert whole.tolist() == expected
        for size in (1, 2, 3, 4, 1024):
            windows = accuracy.layer_windows(
                lambda w: layers[w[0]:w[0] + w[2], w[1]:w[1] + w[3]], segments, size)
            assert accuracy.superpixel_means(windows, 2).tolist() == expected, size


class TestAreaEstimates:
    def test_each_test_pixel_counts_with_its_own_reference_value_and_blocks_are_the_units(self):
        segments, codes, labels, split = toy_scene()  # superpixels 2 and 3 are test, 8 pixels each
        centroids = np.array([[0, 1], [0, 5], [0, 9], [0, 13]], np.int32)
        predicted = np.array([2, 2, 2, 2], np.uint8)  # all vegetation
        result = held_out_estimates(segments, codes, labels, split, predicted[segments], NAMES, 100.0, 8, centroids)
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
        centroids = np.array([[0, 1], [0, 5], [0, 9], [0, 13]], np.int32)
        predicted = np.array([2, 2, 2, 2], np.uint8)
        # blocks of 4 px: every superpixel its own block; 2 of the 4 blocks are test blocks
        result = held_out_estimates(segments, codes, labels, split, predicted[segments], NAMES, 100.0, 4, centroids)
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
                                               "segmentation_ceiling", "random_forest_superpixel_test"}
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

    def test_the_map_read_is_the_map_step2_painted(self, step2_workdir):
        from pipeline import contract
        from pipeline.grids import paint_map

        workdir, _, _ = step2_workdir
        segments = contract.load(contract.SEGMENTS, workdir, ["segments"])["segments"]
        pred_labels = contract.load(contract.PRED_LABELS, workdir, ["predLabels"])["predLabels"]
        record = contract.provenance_of(contract.load(contract.PRED_LABELS, workdir, [contract.PROVENANCE]),
                                        contract.PRED_LABELS.path(workdir), contract.STEP2)
        pred_map = contract.read_raster(contract.PRED_MAP_RASTER, workdir, record)
        assert pred_map.dtype == np.uint8
        np.testing.assert_array_equal(pred_map, paint_map(pred_labels, segments))

    def test_forest_means_window_by_window_equal_the_whole_scene_means(self, step2_workdir):
        from pipeline import contract

        workdir, _, _ = step2_workdir
        step0 = contract.load(contract.SEGMENTS, workdir, ["segments", contract.PROVENANCE])
        segments, record = step0["segments"], contract.provenance_of(step0, workdir, contract.STEP0)

        def read_layers(window=None):
            return contract.read_raster(contract.LAYERS, workdir, record, window)

        n = int(segments.max()) + 1
        whole = accuracy.superpixel_means([(read_layers(), segments)], n)
        windowed = accuracy.superpixel_means(accuracy.layer_windows(read_layers, segments, 100), n)
        np.testing.assert_array_equal(windowed, whole)

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
