"""The superpixel random forest as a classifier: its probabilities per class code, and its file saved and loaded
back (a foreign or mismatched file refused in one line)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.core.errors import InputDataError, InputFileError
from pipeline.model import forest


def fitted(seed: int = 7):
    """A forest on 2 features of 60 samples of classes 0 and 2 (class 1 never seen), and those features."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(60, 2)).astype(np.float32)
    labels = np.where(features[:, 0] > 0, 2, 0).astype(np.uint8)
    return forest.train(features, labels, seed), features


def test_probabilities_are_the_forests_per_class_code_and_zero_for_a_class_it_never_saw():
    model, features = fitted()
    probabilities = forest.class_probabilities(model, features, 3)
    assert probabilities.shape == (60, 3) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities[:, 1], 0)
    np.testing.assert_allclose(probabilities[:, [0, 2]], model.predict_proba(features), rtol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), model.predict(features))


def test_baseline_predictions_are_those_of_the_forest_trained_on_the_chosen_superpixels():
    model, features = fitted()
    labels = model.predict(features)
    chosen = np.arange(0, 60, 2)
    again = forest.train(features[chosen], labels[chosen], 7)
    np.testing.assert_array_equal(forest.predictions(features, chosen, labels[chosen], 7), again.predict(features))


def test_saved_forest_loads_back_with_the_same_probabilities(tmp_path):
    model, features = fitted()
    path = tmp_path / "model.forest.joblib"
    forest.save(model, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically: no temporary file left
    loaded = forest.load(path, 2, 3)
    np.testing.assert_array_equal(forest.class_probabilities(loaded, features, 3),
                                  forest.class_probabilities(model, features, 3))


@pytest.mark.parametrize("content, error, fragment", [
    (b"not a pickle", InputFileError, "not a random forest Step 2 wrote"),
    (pickle.dumps({"a": "dict"}), InputFileError, "holds a dict, not a fitted random forest"),
])
def test_a_file_that_is_no_forest_is_one_line(tmp_path, content, error, fragment):
    path = tmp_path / "model.forest.joblib"
    path.write_bytes(content)
    with pytest.raises(error, match=fragment) as refusal:
        forest.load(path, 2, 3)
    assert str(refusal.value).startswith(str(path)) and "\n" not in str(refusal.value)


@pytest.mark.parametrize("features, classes", [(26, 3), (2, 2)])
def test_a_forest_unlike_its_card_is_one_line(tmp_path, features, classes):
    path = tmp_path / "model.forest.joblib"
    forest.save(fitted()[0], path)
    with pytest.raises(InputDataError, match="the card belongs to another model") as refusal:
        forest.load(path, features, classes)
    assert "takes 2 features and gives classes [0, 2]" in str(refusal.value)
