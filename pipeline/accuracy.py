"""Accuracy of a land-cover map against a reference, with scikit-learn, and a random forest baseline.

Assessments (rows of every confusion matrix = reference, columns = prediction), keyed by name:

- ``superpixel_test`` (headline): predicted vs majority reference label of the held-out test superpixels
  (split ``TEST``, label not ``UNLABELLED``);
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (the tutorial's);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``: a random forest on each superpixel's mean of the layers, scored like the
  headline, to show whether the CNN earns its cost.
"""
from __future__ import annotations

import numpy as np

from pipeline.contract import TEST, UNLABELLED
from pipeline.errors import InputDataError
from pipeline.grids import paint_map, tile_windows

#: How to read every confusion matrix here (also in ``metrics.json`` and the log).
AXES_NOTE = "confusion matrix rows = reference, columns = prediction"
#: Names of the assessments, in the order of the module docstring.
ASSESSMENTS = ("superpixel_test", "superpixel_all_labelled", "pixel_test", "segmentation_ceiling",
               "random_forest_superpixel_test")
#: Side in pixels of the square windows over which superpixel means are summed: a window of the 8 float32
#: layers then takes 32 MiB, whatever the size of the scene.
MEANS_WINDOW = 1024


def assess(reference: np.ndarray, predicted: np.ndarray, class_names, unit: str) -> dict:
    """Confusion matrix, overall accuracy, Cohen's kappa, per-class precision (user's accuracy), recall
    (producer's accuracy), F1 and weighted F1 of class codes, computed with scikit-learn.

    Predictions outside the classes (255) count as errors. Undefined values (a class never predicted or
    never present) are ``None``.

    >>> result = assess(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b"], "superpixels")
    >>> result["confusion_matrix"], result["overall_accuracy"], result["precision"]
    ([[1, 1], [0, 2]], 0.75, [1.0, 0.667])
    """
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    codes = list(range(len(class_names)))
    if reference.size == 0:
        raise InputDataError(f"no {unit} to assess: the test split holds no labelled superpixel")
    matrix = confusion_matrix(reference, predicted, labels=codes)
    precision, recall, f1, support = precision_recall_fscore_support(reference, predicted, labels=codes,
                                                                     zero_division=np.nan)
    weighted_f1 = precision_recall_fscore_support(reference, predicted, labels=codes, average="weighted",
                                                  zero_division=np.nan)[2]
    return {"class_names": list(class_names), "unit": unit, "n_samples": int(reference.size),
            "confusion_matrix": matrix.tolist(), "overall_accuracy": _rounded(accuracy_score(reference, predicted)),
            "kappa": _rounded(cohen_kappa_score(reference, predicted, labels=codes)),
            "precision": [_rounded(v) for v in precision], "recall": [_rounded(v) for v in recall],
            "f1": [_rounded(v) for v in f1], "support": support.tolist(), "weighted_f1": _rounded(weighted_f1)}


def _rounded(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 3)


def assessments(segments, codes, labels, split, pred_labels, pred_map, forest_labels, class_names) -> dict:
    """Every assessment of the module docstring, keyed by name; the forest's only where ``forest_labels`` is
    given (a model trained on this scene).

    Parameters
    ----------
    segments : int array, shape (rows, cols)
        Superpixel id of every pixel, 0..n-1.
    codes : uint8 array, shape (rows, cols)
        Reference class code of every pixel, ``UNLABELLED`` where there is none.
    labels, split, pred_labels : uint8 arrays, shape (n,)
        Per superpixel: majority reference label, split code and predicted class.
    pred_map : uint8 array, shape (rows, cols)
        The predicted map (``pred_labels`` painted on ``segments``).
    forest_labels : uint8 array, shape (n,), or None
        The random forest's class of every superpixel.
    class_names : sequence of K str
    """
    scored = labels != UNLABELLED
    test = scored & (split == TEST)
    test_pixels = test[segments] & (codes != UNLABELLED)
    ceiling_map = paint_map(labels, segments)
    return {
        "superpixel_test": assess(labels[test], pred_labels[test], class_names, "test superpixels"),
        "superpixel_all_labelled": assess(labels[scored], pred_labels[scored], class_names,
                                          "labelled superpixels, training ones included"),
        "pixel_test": assess(codes[test_pixels], pred_map[test_pixels], class_names,
                             "labelled pixels of test superpixels"),
        "segmentation_ceiling": assess(codes[test_pixels], ceiling_map[test_pixels], class_names,
                                       "labelled pixels of test superpixels, each superpixel given its reference label"),
        **({} if forest_labels is None else {"random_forest_superpixel_test": assess(
            labels[test], forest_labels[test], class_names, "test superpixels, random forest on superpixel means")}),
    }



def superpixel_means(blocks, n_superpixels: int) -> np.ndarray:
    """Mean of every layer over each superpixel's pixels, summed window by window.

    Parameters
    ----------
    blocks : iterable of (layers, segments)
        Windows covering every pixel of the scene once: ``layers`` float (rows, cols, c) and ``segments`` int
        (rows, cols), the superpixel ids 0..n_superpixels-1 of the same pixels.
    n_superpixels : int

    Returns
    -------
    float32 array, shape (n_superpixels, c)
        The same means whatever the windows (the sums are float64).

    >>> layers = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], np.float32)  # 1 x 3 px, 2 layers
    >>> segments = np.array([[0, 0, 1]])
    >>> superpixel_means([(layers, segments)], 2).tolist()
    [[2.0, 3.0], [5.0, 6.0]]
    >>> superpixel_means([(layers[:, :1], segments[:, :1]), (layers[:, 1:], segments[:, 1:])], 2).tolist()
    [[2.0, 3.0], [5.0, 6.0]]
    """
    sizes, sums = np.zeros(n_superpixels, np.int64), None
    for layers, segments in blocks:
        flat = segments.ravel()
        sizes += np.bincount(flat, minlength=n_superpixels)
        window_sums = np.stack([np.bincount(flat, weights=layers[..., i].ravel(), minlength=n_superpixels)
                                for i in range(layers.shape[-1])], axis=1)
        sums = window_sums if sums is None else sums + window_sums
    return (sums / sizes[:, None]).astype(np.float32)


def layer_windows(read_layers, segments: np.ndarray, size: int = MEANS_WINDOW):
    """(layers, segments) of each ``size`` x ``size`` px window of the scene, row by row, for
    :func:`superpixel_means`; ``read_layers(window)`` returns the layers (rows, cols, c) of a
    ``window`` = (row, col, rows, cols), so only one window of them is in memory at a time.

    >>> segments = np.arange(6).reshape(2, 3)
    >>> [s.tolist() for _, s in layer_windows(lambda window: None, segments, 2)]
    [[[0, 1], [3, 4]], [[2], [5]]]
    """
    for row, col, rows, cols in tile_windows(segments.shape, size):
        yield read_layers((row, col, rows, cols)), segments[row:row + rows, col:col + cols]


def random_forest_predictions(features: np.ndarray, train_index: np.ndarray, train_labels: np.ndarray,
                              seed: int) -> np.ndarray:
    """Class of every superpixel by a random forest (300 trees) trained on ``features[train_index]``."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1)
    forest.fit(features[train_index], train_labels)
    return forest.predict(features).astype(np.uint8)
