"""Step 2 --classifier forest on the real subset: the superpixel random forest maps with its file and card, Step 3
does not compare it with itself (its map is Step 3's baseline of a CNN on the same folder, to the pixel), a CNN run
after it removes its file; --model maps a second work folder with it, also tiled, and refuses in one line a forest
the scene cannot feed or a damaged file."""
from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from builders import fails_with_one_line, snapshot
from pipeline.handoffs import contract

FOREST_FILE = contract.FOREST_MODEL_FILE


def outcome(work) -> SimpleNamespace:
    """What a Step 2 and Step 3 run left in ``work``."""
    return SimpleNamespace(files={p.name for p in work.iterdir()},
                           metrics=json.loads((work / "metrics.json").read_text()),
                           card=json.loads((work / "model.json").read_text()),
                           step2=json.loads((work / "run.json").read_text())["steps"]["Step2_Model_Training"],
                           labels=contract.load(contract.PRED_LABELS, work, ["predLabels"])["predLabels"],
                           report=(work / "report.html").read_text())


@pytest.fixture(scope="module")
def forest_then_cnn(tmp_path_factory, subset_config):
    """Steps 0-1 on the subset, Steps 2 (forest) and 3, the forest's file and card kept aside, then Steps 2 (CNN) and
    3 in the same folder."""
    folder = tmp_path_factory.mktemp("forest")
    work, runs = folder / "work", folder / "runs"
    arguments = ["--config", str(subset_config), "--workdir", str(work)]
    assert step0.main(arguments) == 0 and step1.main(arguments) == 0
    started = time.perf_counter()
    assert step2.main([*arguments, "--runs-dir", str(runs), "--classifier", "forest"]) == 0
    seconds = time.perf_counter() - started
    assert step3.main(arguments) == 0
    forest = outcome(work)
    kept = folder / "kept"
    kept.mkdir()
    for name in (FOREST_FILE, "model.json"):
        shutil.copy2(work / name, kept / name)
    assert step2.main([*arguments, "--runs-dir", str(runs)]) == 0
    assert step3.main(arguments) == 0
    return SimpleNamespace(forest=forest, cnn=outcome(work), seconds=seconds, model=kept / FOREST_FILE, runs=runs,
                           config=subset_config)


def test_forest_maps_with_its_file_and_card_and_step3_does_not_compare_it_with_itself(forest_then_cnn):
    forest = forest_then_cnn.forest
    assert {FOREST_FILE, "model.json", "predMap.tif", "predProb.mat", "uncertainty.tif"} <= forest.files
    assert not forest.files & {"model.keras", "learning_curve.png"}
    assert forest_then_cnn.seconds < 60
    card = forest.card
    assert card["classifier"] == "forest" and card["train_layers"] == [] and card["prior_correction"] is False
    assert card["forest_features"]["count"] == 2 * (card["forest_features"]["band_count"] + 3) == 26
    assert sum(card["prior_shares"]) == pytest.approx(1)
    assert forest.step2["classifier"] == "forest" and "run_dir" not in forest.step2
    assert forest.step2["training_superpixels"] > 0
    metrics = forest.metrics
    assert metrics["classifier"] == "forest" and "not compared with the random forest baseline" in \
        metrics["classifier_note"]
    assert "cnn_minus_forest" not in metrics
    assert set(metrics["assessments"]) == {"superpixel_test", "superpixel_all_labelled", "pixel_test",
                                           "segmentation_ceiling"}
    assert "classified by a random forest" in forest.report and "as the random forest predicted it" in forest.report
    assert "classified by a convolutional" in forest_then_cnn.cnn.report


def test_the_forests_map_is_step3s_baseline_and_a_cnn_run_after_it_removes_its_file(forest_then_cnn):
    forest, cnn = forest_then_cnn.forest, forest_then_cnn.cnn
    assert "model.keras" in cnn.files and FOREST_FILE not in cnn.files and cnn.card["classifier"] == "cnn"
    assert cnn.metrics["classifier"] == "cnn" and "cnn_minus_forest" in cnn.metrics
    for mine, baseline in (("superpixel_test", "random_forest_superpixel_test"),
                           ("pixel_test", "random_forest_pixel_test")):
        forests, peers = forest.metrics["assessments"][mine], cnn.metrics["assessments"][baseline]
        assert {**forests, "unit": None} == {**peers, "unit": None}, mine


@pytest.fixture(scope="module")
def second_folder(tmp_path_factory, forest_then_cnn):
    """Step 0 on the subset in a second work folder (the scene to map with --model)."""
    work = tmp_path_factory.mktemp("second") / "work"
    assert step0.main(["--config", str(forest_then_cnn.config), "--workdir", str(work)]) == 0
    return work


def test_model_maps_a_second_work_folder_with_the_forest_also_tiled(forest_then_cnn, second_folder, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(second_folder, work)
    arguments = ["--config", str(forest_then_cnn.config), "--workdir", str(work), "--model",
                 str(forest_then_cnn.model)]
    assert step2.main(arguments) == 0
    mapped = contract.load(contract.PRED_LABELS, work, ["predLabels"])["predLabels"]
    np.testing.assert_array_equal(mapped, forest_then_cnn.forest.labels)  # the same scene: the same features
    assert step3.main(arguments[:4]) == 0
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["classifier"] == "forest" and "applied_model_note" in metrics
    untiled = gdal.Open(str(work / "predMap.tif")).ReadAsArray()
    assert step2.main([*arguments, "--tile-size", "128"]) == 0  # painted window by window
    np.testing.assert_array_equal(gdal.Open(str(work / "predMap.tif")).ReadAsArray(), untiled)
    assert not (work / "predMap.mat").exists()


@pytest.mark.parametrize("damage, fragments", [
    ("roles", ("name the same bands in [bands]",)),
    ("unit", ("unit", "give a scene of the model's kind of image")),
    ("count", ("the card belongs to another model", "26 features")),
    ("not a forest", ("not a random forest Step 2 wrote",)),
])
def test_a_forest_the_scene_cannot_feed_or_a_damaged_file_is_one_line(forest_then_cnn, second_folder, tmp_path,
                                                                      capsys, damage, fragments):
    model = tmp_path / "model" / FOREST_FILE
    shutil.copytree(forest_then_cnn.model.parent, model.parent)
    card = json.loads((model.parent / "model.json").read_text())
    features = card["forest_features"]
    if damage == "roles":
        features["roles"]["red"], features["roles"]["nir"] = features["roles"]["nir"], features["roles"]["red"]
    elif damage == "unit":
        features["unit"] = "reflectance" if features["unit"] != "reflectance" else "raster values"
    elif damage == "count":
        features["count"] = 20
    else:
        model.write_bytes(b"a text file, not a forest")
    (model.parent / "model.json").write_text(json.dumps(card))
    work = tmp_path / "work"
    shutil.copytree(second_folder, work)
    before = snapshot(work)
    fails_with_one_line(step2.main, ["--config", str(forest_then_cnn.config), "--workdir", str(work), "--model",
                                     str(model)], capsys, str(model), *fragments)
    assert snapshot(work) == before
