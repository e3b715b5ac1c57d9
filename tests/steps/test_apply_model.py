"""Train once, map again: a model trained on the north of the demo scene maps its south (cut as a scene of its own,
its reference withheld from training), with the training scene's stretch, and finds it like its training scene;
the same without a reference; scenes unlike it (the Brandenburg winter scene, the south with bands swapped) warned
of; and the one-line refusal of a model the scene cannot feed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from builders import DATA, HALF_DEMO_PARAMETERS, REFERENCE_930, fails_with_one_line, write_scene, write_tif
from pipeline.handoffs import contract, model_card
from pipeline.core import vocabulary

IMAGE_930 = DATA / "sen2_20210527_aber_rebuilt.tif"
SPLIT_ROW = 470  # the demo scene is 947 rows: north = training scene, south = the scene to map
BRANDENBURG = DATA.parent / "brandenburg_s2l1c_west"
SHIFT_WARNING = "warning: this scene looks unlike the model's training scene north"


def cut_scene(folder, rows: tuple, with_reference: bool = True, parameters: dict = HALF_DEMO_PARAMETERS):
    """A scene TOML of rows ``rows`` of the demo image (and reference) as files of their own."""
    folder.mkdir(parents=True, exist_ok=True)
    window = [0, rows[0], 930, rows[1] - rows[0]]
    gdal.Translate(str(folder / "image.tif"), str(IMAGE_930), srcWin=window)
    if with_reference:
        gdal.Translate(str(folder / "reference.tif"), str(REFERENCE_930), srcWin=window)
    return write_scene(folder / "scene.toml", "image.tif", "reference.tif" if with_reference else None, parameters,
                       name=folder.name)


def arguments(config, workdir, *extra):
    return ["--config", str(config), "--workdir", str(workdir), *map(str, extra)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Steps 0-2 on the northern part; returns its work folder."""
    folder = tmp_path_factory.mktemp("north")
    config = cut_scene(folder / "north", (0, SPLIT_ROW))
    work = folder / "work"
    assert step0.main(arguments(config, work)) == 0
    assert step1.main(arguments(config, work)) == 0
    assert step2.main(arguments(config, work, "--runs-dir", folder / "runs")) == 0
    return work


def map_south(folder, model, with_reference=True, step0_extra=()):
    config = cut_scene(folder / "south", (SPLIT_ROW, 947), with_reference)
    work = folder / "work"
    assert step0.main(arguments(config, work, "--stretch-from", model, *step0_extra)) == 0
    assert step2.main(arguments(config, work, "--model", model)) == 0
    assert step3.main(arguments(config, work)) == 0
    return config, work


def test_model_travels_with_its_card_in_the_work_folder_and_the_run(trained):
    card = json.loads((trained / "model.json").read_text())
    assert set(model_card.KEYS) <= set(card)
    assert card["patch_width"] == 25 and card["train_layers"][-1] == "mask" and len(card["prior_shares"]) == 4
    run_dir = json.loads((trained / "run.json").read_text())["steps"]["Step2_Model_Training"]["run_dir"]
    assert (trained.parent / "runs").exists() and {p.name for p in
                                                    (trained.parent / "runs").iterdir()} == {run_dir.split("/")[-1]}
    for name in ("model.keras", "model.json"):
        assert (trained.parent / "runs" / run_dir.split("/")[-1] / name).read_bytes() == (trained / name).read_bytes()


def test_applied_model_maps_another_scene_with_its_training_stretch(trained, tmp_path, capsys):
    model = trained / "model.keras"
    _, work = map_south(tmp_path, model)
    assert SHIFT_WARNING not in capsys.readouterr().out
    card = json.loads((trained / "model.json").read_text())
    samples = contract.load(contract.SAMPLES, work, ["provenance"])
    stretch = json.loads("".join(samples["provenance"]))["stretch"]
    assert stretch["from_model_run"] == card["model_run"]
    assert {k: list(v) for k, v in stretch["limits"].items()} == card["stretch_limits"]
    predicted = gdal.Open(str(work / "predMap.tif")).ReadAsArray()
    assert predicted.shape == (947 - SPLIT_ROW, 930) and set(np.unique(predicted)) <= {0, 1, 2, 3, 255}
    uncertainty = gdal.Open(str(work / "uncertainty.tif")).ReadAsArray()
    assert np.nanmin(uncertainty) >= 0 and np.nanmax(uncertainty) <= 0.75  # 1 - max of 4 probabilities
    metrics = json.loads((work / "metrics.json").read_text())
    headline = metrics["assessments"]["superpixel_test"]
    labels = contract.load(contract.SAMPLES, work, ["labels"])["labels"]
    assert headline["n_samples"] == int((labels != 255).sum())  # every labelled superpixel is held out
    assert headline["overall_accuracy"] > 0.75
    assert "random_forest_superpixel_test" not in metrics["assessments"]
    assert "trained on scene north" in (work / "report.html").read_text()
    assert not (work / "model.keras").exists()  # the applied model stays where it was
    comparison = metrics["applied_model"]  # the other half of the same scene: like the training scene
    assert comparison["shift_warning"] is False and comparison["reasons"] == []
    assert set(comparison["layers"]) == set(vocabulary.LAYER_NAMES)
    assert 0 < max(layer["shift"] for layer in comparison["layers"].values()) < comparison["thresholds"]["layer_shift"]
    report = (work / "report.html").read_text()
    assert "id='scene-comparison'" in report and "shift-warning" not in report


def test_scene_without_a_reference_gets_a_map_and_its_areas(trained, tmp_path):
    _, work = map_south(tmp_path, trained / "model.keras", with_reference=False)
    assert not (work / "reference.tif").exists()
    labels = contract.load(contract.SAMPLES, work, ["labels", "split"])
    assert (labels["labels"] == 255).all() and (labels["split"] == 2).all()
    metrics = json.loads((work / "metrics.json").read_text())
    predicted = gdal.Open(str(work / "predMap.tif")).ReadAsArray()
    assert metrics["total_area_ha"] == pytest.approx((predicted < 4).sum() * 0.01, abs=0.1)  # 10 m pixels
    report = (work / "report.html").read_text()
    assert "urban" in report and report.count("data:image/png;base64,") == 2


def test_model_the_scene_cannot_feed_is_refused_in_one_line(trained, tmp_path, capsys):
    model_folder = tmp_path / "odd_model"
    model_folder.mkdir()
    shutil.copy(trained / "model.keras", model_folder / "model.keras")
    card = json.loads((trained / "model.json").read_text())
    card["train_layers"] = [*card["train_layers"][:-1], "rededge", "mask"]
    (model_folder / "model.json").write_text(json.dumps(card))
    config = cut_scene(tmp_path / "south", (SPLIT_ROW, 947))
    work = tmp_path / "work"
    assert step0.main(arguments(config, work)) == 0
    fails_with_one_line(step2.main, arguments(config, work, "--model", model_folder / "model.keras"), capsys,
                        "rededge")
    assert not (work / "predMap.tif").exists()
    narrow = cut_scene(tmp_path / "south", (SPLIT_ROW, 947), parameters={**HALF_DEMO_PARAMETERS, "patch_width": 21})
    assert step0.main(arguments(narrow, work)) == 0
    fails_with_one_line(step2.main, arguments(narrow, work, "--model", trained / "model.keras"), capsys,
                        "25 px patches", "--patch-width 25")


@pytest.mark.parametrize("damage, fragments", [
    ("three classes", ("the card belongs to another model", "3 classes")),
    ("not a model", ("not a Keras model",)),
    ("truncated", ("not a Keras model",)),
])
def test_a_model_and_card_that_disagree_or_a_damaged_model_are_one_line(trained, tmp_path, capsys, damage,
                                                                         fragments):
    model_folder = tmp_path / "model"
    model_folder.mkdir()
    shutil.copy(trained / "model.keras", model_folder / "model.keras")
    card = json.loads((trained / "model.json").read_text())
    if damage == "three classes":
        for key in ("class_names", "class_colours", "prior_shares"):
            card[key] = card[key][:3]
        card["prior_shares"] = [1 / 3] * 3
    elif damage == "not a model":
        (model_folder / "model.keras").write_text("a text file, not a model")
    else:
        data = (model_folder / "model.keras").read_bytes()
        (model_folder / "model.keras").write_bytes(data[:len(data) // 2])
    (model_folder / "model.json").write_text(json.dumps(card))
    config = cut_scene(tmp_path / "south", (SPLIT_ROW, 947))
    if damage == "three classes":  # the scene names the card's classes, so only the network can disagree
        config.write_text(config.read_text().replace("water = [4]\n", ""))
    work = tmp_path / "work"
    assert step0.main(arguments(config, work, "--stretch-from", trained / "model.keras")) == 0
    fails_with_one_line(step2.main, arguments(config, work, "--model", model_folder / "model.keras"), capsys,
                        "model.keras", *fragments)
    assert not (work / "predMap.tif").exists()


def test_mapping_with_a_model_removes_a_model_trained_in_the_folder_before(trained, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    config = trained.parent / "north" / "scene.toml"
    assert step2.main(arguments(config, work, "--model", trained / "model.keras")) == 0
    assert (work / "predMap.tif").is_file()
    assert not any((work / name).exists() for name in ("model.keras", "model.json", "learning_curve.png"))


def brandenburg_scene(folder):
    """The Brandenburg winter L1C scene (x 10000) rescaled to the demo's units (x 1000), with its OSM reference."""
    folder.mkdir(parents=True, exist_ok=True)
    gdal.Translate(str(folder / "image.tif"), str(BRANDENBURG / "s2l1c_20170216_10band_10m_west.tif"),
                   scaleParams=[[0, 10000, 0, 1000]], outputType=gdal.GDT_UInt16)
    return write_scene(folder / "scene.toml", "image.tif", str(BRANDENBURG / "labels4_osm_10m_west.tif"),
                       HALF_DEMO_PARAMETERS, name="brandenburg",
                       classes={"urban": [1], "crop": [2], "vegetation": [3], "water": [4]})


def swapped_bands_scene(folder):
    """The south of the demo without a reference, blue and red swapped and nir and swir (bands 7 and 9)."""
    cut_scene(folder, (SPLIT_ROW, 947), with_reference=False)
    source = gdal.Open(str(folder / "image.tif"))
    bands, geotransform = source.ReadAsArray()[[2, 1, 0, 3, 4, 5, 8, 7, 6, 9]], source.GetGeoTransform()
    source = None  # closed before the file is overwritten
    write_tif(folder / "image.tif", bands, geotransform, 27700)
    return folder / "scene.toml"


@pytest.mark.parametrize("make_scene", [brandenburg_scene, swapped_bands_scene])
def test_scene_unlike_the_training_scene_is_warned_of(trained, tmp_path, capsys, make_scene):
    config = make_scene(tmp_path / "scene")
    work, model = tmp_path / "work", trained / "model.keras"
    assert step0.main(arguments(config, work, "--stretch-from", model)) == 0
    assert step2.main(arguments(config, work, "--model", model)) == 0
    assert step3.main(arguments(config, work)) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith(SHIFT_WARNING)]
    comparison = json.loads((work / "metrics.json").read_text())["applied_model"]
    assert comparison["shift_warning"] is True and len(warnings) == 1
    assert all(reason in warnings[0] for reason in comparison["reasons"])
    assert any(layer["outside_share"] > comparison["thresholds"]["outside_share"]
               for layer in comparison["layers"].values())
    step2_run = json.loads((work / "run.json").read_text())["steps"]["Step2_Model_Training"]
    assert step2_run["comparison_with_training_scene"] == comparison
    report = (work / "report.html").read_text()
    assert "id='shift-warning'" in report and "looks unlike the model's training scene north" in report


def test_card_without_layer_quantiles_still_maps_and_says_they_are_not_compared(trained, tmp_path):
    old_model = tmp_path / "old_model"
    old_model.mkdir()
    shutil.copy(trained / "model.keras", old_model / "model.keras")
    card = json.loads((trained / "model.json").read_text())
    del card["layer_quantiles"]  # as Step 2 wrote cards before they were recorded
    (old_model / "model.json").write_text(json.dumps(card))
    _, work = map_south(tmp_path, old_model / "model.keras", with_reference=False)
    comparison = json.loads((work / "metrics.json").read_text())["applied_model"]
    assert comparison["layers"] is None and "the model's card" in comparison["layers_unavailable"]
    assert comparison["shift_warning"] is False and comparison["class_share_distance"] > 0
    assert "layers not compared (no layer quantiles recorded by the model&#x27;s card" in (
        work / "report.html").read_text()
