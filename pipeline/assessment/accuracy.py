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

from pipeline.core.vocabulary import TEST, UNLABELLED
from pipeline.core.errors import InputDataError

#: How to read every confusion matrix here (also in ``metrics.json`` and the log).
AXES_NOTE = "confusion matrix rows = reference, columns = prediction"
#: Names of the assessments, in the order of the module docstring.
ASSESSMENTS = ("superpixel_test", "superpixel_all_labelled", "pixel_test", "segmentation_ceiling",
               "random_forest_superpixel_test")


def assess(reference: np.ndarray, predicted: np.ndarray, class_names, unit: str, weights=None) -> dict:
    """Confusion matrix, overall accuracy, Cohen's kappa, per-class precision (user's accuracy), recall
    (producer's accuracy), F1 and weighted F1 of class codes, computed with scikit-learn; ``weights`` (int,
    optional) is how many samples each (reference, predicted) pair stands for (scikit-learn's sample weights).

    Predictions outside the classes (255) count as errors. Undefined values (a class never predicted or
    never present) are ``None``.

    >>> result = assess(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b"], "superpixels")
    >>> result["confusion_matrix"], result["overall_accuracy"], result["precision"]
    ([[1, 1], [0, 2]], 0.75, [1.0, 0.667])
    >>> assess(np.array([0, 0, 1]), np.array([0, 1, 1]), ["a", "b"], "superpixels", np.array([1, 1, 2])) == result
    True
    """
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    codes = list(range(len(class_names)))
    if reference.size == 0:
        raise InputDataError(f"no {unit} to assess: the test split holds no labelled superpixel")
    matrix = confusion_matrix(reference, predicted, labels=codes, sample_weight=weights)
    precision, recall, f1, support = precision_recall_fscore_support(reference, predicted, labels=codes,
                                                                     sample_weight=weights, zero_division=np.nan)
    weighted_f1 = precision_recall_fscore_support(reference, predicted, labels=codes, average="weighted",
                                                  sample_weight=weights, zero_division=np.nan)[2]
    return {"class_names": list(class_names), "unit": unit,
            "n_samples": int(reference.size if weights is None else np.sum(weights)),
            "confusion_matrix": matrix.tolist(),
            "overall_accuracy": _rounded(accuracy_score(reference, predicted, sample_weight=weights)),
            "kappa": _rounded(cohen_kappa_score(reference, predicted, labels=codes, sample_weight=weights)),
            "precision": [_rounded(v) for v in precision], "recall": [_rounded(v) for v in recall],
            "f1": [_rounded(v) for v in f1], "support": support.astype(np.int64).tolist(),
            "weighted_f1": _rounded(weighted_f1)}


def confusion_counts(reference: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Samples of each reference class code (< ``k``; rows) and predicted class code (columns), int64 (k, k + 1):
    the last column counts the predictions outside the classes (255). Counts of parts of a sample add up to
    those of the whole; :func:`assess_counts` assesses them.

    >>> confusion_counts(np.array([0, 0, 1], np.uint8), np.array([0, 255, 1], np.uint8), 2).tolist()
    [[1, 0, 1], [0, 1, 0]]
    """
    cells = reference.astype(np.intp) * (k + 1) + np.minimum(predicted, k)
    return np.bincount(cells.ravel(), minlength=k * (k + 1)).reshape(k, k + 1)


def assess_counts(counts: np.ndarray, class_names, unit: str) -> dict:
    """:func:`assess` of the samples counted by :func:`confusion_counts` (K, K + 1), with the same results.

    >>> reference, predicted = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 255])
    >>> counts = confusion_counts(reference, predicted, 2)
    >>> assess_counts(counts, ["a", "b"], "pixels") == assess(reference, predicted, ["a", "b"], "pixels")
    True
    """
    reference, predicted = np.nonzero(counts)
    return assess(reference, np.where(predicted < len(class_names), predicted, UNLABELLED), class_names, unit,
                  counts[reference, predicted])


def _rounded(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 3)


def assessments(counts, labels, split, pred_labels, forest_labels, class_names) -> dict:
    """Every assessment of the module docstring, keyed by name; the forest's only where ``forest_labels`` is
    given (a model trained on this scene).

    Parameters
    ----------
    counts : pixel_counts.PixelCounts
        The scene's pixel counts: ``pixel_test`` (the map) and ``segmentation_ceiling`` (the superpixels' majority
        labels) against the reference on the labelled pixels of the test superpixels (:func:`confusion_counts`).
    labels, split, pred_labels : uint8 arrays, shape (n,)
        Per superpixel: majority reference label, split code and predicted class.
    forest_labels : uint8 array, shape (n,), or None
        The random forest's class of every superpixel.
    class_names : sequence of K str
    """
    scored = labels != UNLABELLED
    test = scored & (split == TEST)
    return {
        "superpixel_test": assess(labels[test], pred_labels[test], class_names, "test superpixels"),
        "superpixel_all_labelled": assess(labels[scored], pred_labels[scored], class_names,
                                          "labelled superpixels, training ones included"),
        "pixel_test": assess_counts(counts.pixel_test, class_names, "labelled pixels of test superpixels"),
        "segmentation_ceiling": assess_counts(counts.segmentation_ceiling, class_names, "labelled pixels of test "
                                              "superpixels, each superpixel given its reference label"),
        **({} if forest_labels is None else {"random_forest_superpixel_test": assess(
            labels[test], forest_labels[test], class_names, "test superpixels, random forest on superpixel means")}),
    }


def superpixel_means(blocks, n_superpixels: int) -> np.ndarray:
    """Mean of every layer over each superpixel's pixels, summed window by window.

    Parameters
    ----------
    blocks : iterable of (layers, segments)
        Windows covering every pixel of the scene once (``grids.read_windows``): ``layers`` float (rows, cols, c)
        and ``segments`` int (rows, cols), the superpixel ids 0..n_superpixels-1 of the same pixels (-1: none,
        left out).
    n_superpixels : int

    Returns
    -------
    float32 array, shape (n_superpixels, c)
        The same means whatever the windows (the sums are float64).

    >>> layers = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], np.float32)  # 1 x 3 px, 2 layers
    >>> segments = np.array([[0, 0, 1]])
    >>> superpixel_means([(layers, np.array([[0, -1, 1]]))], 2).tolist()
    [[1.0, 2.0], [5.0, 6.0]]
    >>> superpixel_means([(layers, segments)], 2).tolist()
    [[2.0, 3.0], [5.0, 6.0]]
    >>> superpixel_means([(layers[:, :1], segments[:, :1]), (layers[:, 1:], segments[:, 1:])], 2).tolist()
    [[2.0, 3.0], [5.0, 6.0]]
    """
    sizes, sums = np.zeros(n_superpixels + 1, np.int64), None  # first for pixels of no superpixel, dropped
    for layers, segments in blocks:
        flat = segments.ravel() + 1
        sizes += np.bincount(flat, minlength=n_superpixels + 1)
        window_sums = np.stack([np.bincount(flat, weights=layers[..., i].ravel(), minlength=n_superpixels + 1)
                                for i in range(layers.shape[-1])], axis=1)
        sums = window_sums if sums is None else sums + window_sums
    return (sums[1:] / sizes[1:, None]).astype(np.float32)


def random_forest_predictions(features: np.ndarray, train_index: np.ndarray, train_labels: np.ndarray,
                              seed: int) -> np.ndarray:
    """Class of every superpixel by a random forest (300 trees) trained on ``features[train_index]``.

    scikit-learn's joblib threads now and then warn that its ``delayed`` lacked its ``Parallel`` (a race in
    passing its configuration to the threads, scikit-learn issue 32631; the forest is the same): that warning is
    silenced here, so that a successful step writes nothing on stderr."""
    import warnings

    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed", category=UserWarning)
        forest.fit(features[train_index], train_labels)
        return forest.predict(features).astype(np.uint8)
