"""The superpixel random forest: Step 3's baseline and Step 2's ``classifier = "forest"``.

Its features are each superpixel's mean and standard deviation of every band of the image and of NDVI, NDWI and
NDBI (:func:`superpixel_features`); it is trained on the distinct training superpixels of Step 1's balanced set,
once each, so its class probabilities already carry those superpixels' class shares as priors.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pipeline.core.atomic_files import atomic_output
from pipeline.core.errors import InputDataError, InputFileError

#: Trees of the forest.
TREES = 300


def superpixel_features(blocks, n_superpixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every band over each superpixel's pixels, summed window by window: the
    random forest's features.

    Parameters
    ----------
    blocks : iterable of (bands, segments)
        Windows covering every pixel of the scene once (``grids.read_windows``): ``bands`` numeric (rows, cols, c)
        in any unit and ``segments`` int (rows, cols), the superpixel ids 0..n_superpixels-1 of the same pixels
        (-1: none, left out).
    n_superpixels : int

    Returns
    -------
    features : float32 array, shape (n_superpixels, 2 c)
        The c means, then the c standard deviations (population, ddof 0), in the unit of the bands; 0 for a
        superpixel without pixels. The same whatever the windows (sums of values and squares in float64).
    sizes : int64 array, shape (n_superpixels,)
        Pixels of each superpixel.

    >>> bands = np.array([[[1.0, 2.0], [3.0, 6.0], [5.0, 6.0]]], np.float32)  # 1 x 3 px, 2 bands
    >>> features, sizes = superpixel_features([(bands, np.array([[0, 0, 1]]))], 2)
    >>> features.tolist(), sizes.tolist()
    ([[2.0, 4.0, 1.0, 2.0], [5.0, 6.0, 0.0, 0.0]], [2, 1])
    >>> superpixel_features([(bands, np.array([[0, -1, 1]]))], 2)[0].tolist()
    [[1.0, 2.0, 0.0, 0.0], [5.0, 6.0, 0.0, 0.0]]
    """
    sizes, sums, squares = np.zeros(n_superpixels + 1, np.int64), 0.0, 0.0  # entry 0: pixels of no superpixel
    for bands, segments in blocks:
        flat = segments.ravel() + 1
        columns = [bands[..., i].ravel().astype(np.float64) for i in range(bands.shape[-1])]
        sizes += np.bincount(flat, minlength=n_superpixels + 1)
        sums = sums + np.stack([np.bincount(flat, weights=v, minlength=n_superpixels + 1) for v in columns], axis=1)
        squares = squares + np.stack([np.bincount(flat, weights=v * v, minlength=n_superpixels + 1)
                                      for v in columns], axis=1)
    pixels = np.maximum(sizes[1:, None], 1)
    means = sums[1:] / pixels
    spread = np.sqrt(np.maximum(squares[1:] / pixels - means ** 2, 0.0))  # rounding may take it a hair below 0
    return np.concatenate([means, spread], axis=1).astype(np.float32), sizes[1:]


def _quietly(work):
    """``work()``, without the warning scikit-learn's joblib threads now and then give that its ``delayed`` lacked
    its ``Parallel`` (a race in passing its configuration to the threads, scikit-learn issue 32631; the forest is
    the same), so that a successful step writes nothing on stderr."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed", category=UserWarning)
        return work()


def train(features: np.ndarray, train_labels: np.ndarray, seed: int):
    """A random forest of :data:`TREES` trees (scikit-learn's, ``random_state`` ``seed``) fitted to ``features``
    (m, f) of the training superpixels and their class codes ``train_labels`` (m,)."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=TREES, random_state=seed, n_jobs=-1)
    return _quietly(lambda: forest.fit(features, train_labels))


def class_probabilities(forest, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities (n, ``n_classes``) float32 of the superpixels' ``features`` (n, f): the share of the
    trees' votes per class code (0 for a class the forest never saw)."""
    probabilities = np.zeros((len(features), n_classes), np.float32)
    probabilities[:, forest.classes_.astype(np.intp)] = _quietly(lambda: forest.predict_proba(features))
    return probabilities


def predictions(features: np.ndarray, train_index: np.ndarray, train_labels: np.ndarray, seed: int) -> np.ndarray:
    """Class code (n,) uint8 of every superpixel by a forest (:func:`train`) fitted to ``features[train_index]``
    (Step 3's baseline)."""
    forest = train(features[train_index], train_labels, seed)
    return _quietly(lambda: forest.predict(features)).astype(np.uint8)


def save(forest, path: Path) -> None:
    """Write the fitted ``forest`` to ``path`` atomically (joblib's pickle, compressed)."""
    import joblib

    with atomic_output(path) as temporary:
        joblib.dump(forest, temporary, compress=3)


def load(path: Path, n_features: int, n_classes: int):
    """The forest :func:`save` wrote at ``path``, checked to take ``n_features`` features and give class codes below
    ``n_classes``; anything else is a one-line error. Loading unpickles the file: load only forests you trust."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    try:
        forest = joblib.load(path)
    except Exception as error:  # unpickling a damaged or foreign file raises many kinds
        raise InputFileError(f"{path}: not a random forest Step 2 wrote ({type(error).__name__}); retrain or copy "
                             f"the model file and model.json together") from None
    if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "classes_"):
        raise InputFileError(f"{path}: holds a {type(forest).__name__}, not a fitted random forest Step 2 wrote; "
                             f"retrain or copy the model file and model.json together")
    if forest.n_features_in_ != n_features or forest.classes_.max() >= n_classes:
        raise InputDataError(f"{path}: takes {forest.n_features_in_} features and gives classes "
                             f"{forest.classes_.tolist()}, but its model.json describes {n_features} features and "
                             f"{n_classes} classes; the card belongs to another model")
    return forest
