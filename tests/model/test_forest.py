"""The superpixel random forest as a classifier: its probabilities per class code, and its file saved and loaded
back (a foreign or mismatched file refused in one line)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.core import grids, vocabulary
from pipeline.core.errors import InputDataError, InputFileError
from pipeline.model import forest


def test_features_of_two_superpixels_by_hand():
    bands = np.array([[[10.0, 0.0], [20.0, 4.0], [7.0, 1.0]],
                      [[30.0, 8.0], [99.0, 9.0], [7.0, 3.0]]], np.float32)  # 2 x 3 px, 2 bands
    segments = np.array([[0, 0, 1], [0, -1, 1]])  # superpixel 0: 3 px, 1: 2 px, one pixel in none
    features, sizes = forest.superpixel_features([(bands, segments)], 2)
    # superpixel 0: band 0 (10, 20, 30) mean 20, std sqrt(200 / 3); band 1 (0, 4, 8) mean 4, std sqrt(32 / 3)
    # superpixel 1: band 0 (7, 7) mean 7, std 0; band 1 (1, 3) mean 2, std 1
    np.testing.assert_allclose(features, [[20, 4, np.sqrt(200 / 3), np.sqrt(32 / 3)], [7, 2, 0, 1]], rtol=1e-6)
    assert sizes.tolist() == [3, 2]


def test_forest_features_window_by_window_equal_a_direct_computation_without_masked_pixels():
    rng = np.random.default_rng(3)
    shape, n = (23, 31), 40
    segments = rng.integers(0, n, shape)
    segments[rng.random(shape) < 0.2] = vocabulary.NO_SUPERPIXEL  # masked: in no superpixel
    bands = rng.integers(0, 10000, (*shape, 3)).astype(np.float32)  # reflectance x 10000, as uint16 L1C
    bands[segments == vocabulary.NO_SUPERPIXEL] = np.nan  # masked pixels must not reach any superpixel
    expected = np.array([[*bands[segments == i].mean(axis=0), *bands[segments == i].std(axis=0)]
                         for i in range(n)])
    for size in (1, 5, 8, 1024):
        windows = grids.read_windows(shape, size, lambda w: bands[w[0]:w[0] + w[2], w[1]:w[1] + w[3]],
                                     lambda w: segments[w[0]:w[0] + w[2], w[1]:w[1] + w[3]])
        features, sizes = forest.superpixel_features(windows, n)
        assert features.shape == (n, 6) and sizes.tolist() == [np.sum(segments == i) for i in range(n)]
        np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-2)


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
