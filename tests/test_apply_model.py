"""Train once, map again: a model trained on the north of the demo scene maps its south (cut as a scene of its own,
its reference withheld from training), with the training scene's stretch; the same without a reference; and the
one-line refusal of a model the scene cannot feed."""
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
from conftest import DATA, HALF_DEMO_PARAMETERS, REFERENCE_930, fails_with_one_line, write_scene
from pipeline import contract, model_card

IMAGE_930 = DATA / "sen2_20210527_aber_rebuilt.tif"
SPLIT_ROW = 470  # the demo scene is 947 rows: north = training scene, south = the scene to map


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


def test_applied_model_maps_another_scene_with_its_training_stretch(trained, tmp_path):
    model = trained / "model.keras"
    _, work = map_south(tmp_path, model)
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
