"""The model card (model.json): written by a training Step 2, read back as it was, and any card that is missing,
not JSON, lacks a key or holds a value of the wrong type or shape refused in one line by Step 2 --model."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import Step2_Model_Training as step2
from builders import CARD, fails_with_one_line
from pipeline.handoffs import model_card
from pipeline.core.vocabulary import LAYER_NAMES
from pipeline.core.errors import InputDataError, InputFileError

#: A key and a value of the wrong type or shape, and what the refusal must say.
WRONG = [("prior_shares", [0.5], "one finite number per class"), ("prior_shares", [0.5, "x"], "one finite number per class"),
         ("prior_shares", [0.5, float("nan")], "one finite number per class"),
         ("stretch_limits", {name: [float("-inf"), 1] for name in LAYER_NAMES}, "finite numbers"),
         ("stretch_limits", {"red": [0, 1]}, "every layer of layer_names"),
         ("stretch_limits", {name: [0] for name in LAYER_NAMES}, "[low, high]"),
         ("train_layers", "red", "list of channel names"), ("train_layers", ["red", 3], "list of channel names"),
         ("patch_width", "25", "whole number"), ("patch_width", True, "whole number"),
         ("class_colours", [[0, 0, 0]], "one [red, green, blue]"), ("prior_correction", "yes", "true or false"),
         ("parameters", [], "an object"), ("model_run", None, "a text"), ("stretch_unit", 1, "a text"),
         ("layer_quantiles", {"levels": [0.01, 0.99], "quantiles": {"red": [0, 1]}}, "for every layer"),
         ("layer_quantiles", {"levels": [0.01, 0.99], "quantiles": {name: [0] for name in LAYER_NAMES}},
          "one finite number per level")]


def model_folder(tmp_path, content) -> Path:
    """A folder with a stand-in model.keras and ``content`` (text, or JSON-ready) as model.json; the model path."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "model.keras").write_bytes(b"stand-in")
    (folder / "model.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder / "model.keras"


def test_card_reads_back_as_written(tmp_path):
    path = model_folder(tmp_path, "")
    CARD.write(path.with_name("model.json"))
    assert model_card.read(path) == CARD
    assert set(json.loads(CARD.to_json())) == set(model_card.KEYS)


def test_card_from_before_the_layer_quantiles_reads_without_them(tmp_path):
    content = json.loads(CARD.to_json())
    del content["layer_quantiles"]
    assert model_card.read(model_folder(tmp_path, content)).layer_quantiles is None


def test_unusable_cards_are_refused_naming_model_json(tmp_path):
    without_card = model_folder(tmp_path, "")
    without_card.with_name("model.json").unlink()
    with pytest.raises(InputFileError, match="model.json: not found beside model.keras"):
        model_card.read(without_card)
    with pytest.raises(InputFileError, match=r"model.json: unreadable \(JSONDecodeError\)"):
        model_card.read(model_folder(tmp_path, "{not json"))
    with pytest.raises(InputDataError, match="model.json: holds a JSON list"):
        model_card.read(model_folder(tmp_path, [1, 2]))


@pytest.mark.parametrize("key, value, expected", WRONG, ids=[f"{k}={v!r}" for k, v, _ in WRONG])
def test_value_of_the_wrong_type_or_shape_is_named(tmp_path, key, value, expected):
    content = json.loads(CARD.to_json())
    content[key] = value
    with pytest.raises(InputDataError, match=f"model.json: {key} must be ") as refusal:
        model_card.read(model_folder(tmp_path, content))
    assert expected in str(refusal.value) and "\n" not in str(refusal.value)


@pytest.fixture()
def trained_copy(step2_workdir, tmp_path):
    """A copy of the folder of a model trained by Step 2 (model.keras and model.json), and Step 2's arguments
    for applying it with --model in a fresh work folder."""
    workdir, _, arguments = step2_workdir
    folder = tmp_path / "copied"
    folder.mkdir()
    for name in ("model.keras", "model.json"):
        shutil.copy2(workdir / name, folder / name)
    return folder, [arguments[0], arguments[1], "--workdir", str(tmp_path / "work"), "--model",
                    str(folder / "model.keras")]


def test_trained_model_card_is_complete_and_reads_back(step2_workdir):
    workdir, _, _ = step2_workdir
    card = model_card.read(workdir / "model.keras")
    assert card.to_json() == (workdir / "model.json").read_text()
    assert card.stretch_unit.startswith("raster values")  # the subset is an ordinary GeoTIFF, not a product
    assert card.class_names == ("urban", "crop", "vegetation", "water") and sum(card.prior_shares) == pytest.approx(1)
    quantiles = card.layer_quantiles["quantiles"]  # the 1 and 99 % quantiles are the stretch limits
    assert all([quantiles[name][0], quantiles[name][-1]] == pytest.approx(card.stretch_limits[name])
               for name in LAYER_NAMES)


def refused_in_one_line(arguments, capsys, *fragments) -> str:
    error = fails_with_one_line(step2.main, arguments, capsys, *fragments)
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize("key", [key for key in model_card.KEYS if key not in model_card.OPTIONAL_KEYS])
def test_step2_refuses_a_card_without_a_key_in_one_line(trained_copy, capsys, key):
    folder, arguments = trained_copy
    content = json.loads((folder / "model.json").read_text())
    del content[key]
    (folder / "model.json").write_text(json.dumps(content))
    refused_in_one_line(arguments, capsys, "model.json: lacks", key, "rerun Step2_Model_Training.py")


@pytest.mark.parametrize("key, value, expected", WRONG[::4], ids=[f"{k}={v!r}" for k, v, _ in WRONG[::4]])
def test_step2_refuses_a_card_with_a_wrong_value_in_one_line(trained_copy, capsys, key, value, expected):
    folder, arguments = trained_copy
    content = json.loads((folder / "model.json").read_text())
    content[key] = value
    (folder / "model.json").write_text(json.dumps(content))
    refused_in_one_line(arguments, capsys, f"model.json: {key} must be", expected, "rerun Step2_Model_Training.py")


def test_card_holds_every_key_step2_reads():  # the card once lacked prior_correction and parameters
    assert {"prior_correction", "parameters", "stretch_unit"} <= set(model_card.KEYS)


#: A random forest's card: no channels, no prior correction, its features.
FOREST_CARD = dataclasses.replace(CARD, train_layers=(), prior_correction=False, classifier="forest", forest_features={
    "roles": {"blue": 1, "green": 2, "red": 3, "nir": 4}, "band_count": 4, "unit": "reflectance",
    "indices": ["ndvi", "ndwi", "ndbi"], "count": 14})


def test_forest_card_reads_back_as_written_and_an_older_card_reads_as_a_cnns(tmp_path):
    path = model_folder(tmp_path, FOREST_CARD.to_json())
    assert model_card.read(path) == FOREST_CARD
    content = json.loads(CARD.to_json())
    del content["classifier"], content["forest_features"]
    old = model_card.read(model_folder(tmp_path, content))
    assert old.classifier == "cnn" and old.forest_features is None and old == CARD


@pytest.mark.parametrize("card, key, value, expected", [
    (FOREST_CARD, "forest_features", None, "one of cnn, forest (forest: with forest_features)"),
    (FOREST_CARD, "forest_features", {"roles": {"red": 1}, "band_count": 1, "unit": "reflectance"},
     "for a forest {roles"),
    (CARD, "forest_features", FOREST_CARD.forest_features, "null for a CNN"),
    (CARD, "classifier", "svm", "one of cnn, forest"),
    (CARD, "train_layers", [], "a list of channel names (none for a forest)"),
], ids=["forest without features", "forest features lacking keys", "cnn with features", "unknown", "cnn without "
                                                                                                   "channels"])
def test_a_card_whose_classifier_and_its_keys_disagree_is_one_line(tmp_path, card, key, value, expected):
    content = json.loads(card.to_json())
    content[key] = value
    with pytest.raises(InputDataError, match="model.json: ") as refusal:
        model_card.read(model_folder(tmp_path, content))
    assert expected in str(refusal.value) and "\n" not in str(refusal.value)
