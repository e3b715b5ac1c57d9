"""Accuracy of a land-cover map against a reference, with scikit-learn, and a random forest baseline.

Assessments (rows of every confusion matrix = reference, columns = prediction), keyed by name:

- ``superpixel_test`` (headline): predicted vs majority reference label of the held-out test superpixels
  (split ``TEST``, label not ``UNLABELLED``);
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (the tutorial's);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``, ``random_forest_pixel_test``: the strongest simple peer, a random forest on
  each superpixel's mean and standard deviation of every band of the image and of NDVI, NDWI and NDBI, trained on
  the CNN's training superpixels, scored like ``superpixel_test`` and ``pixel_test``, to show whether the CNN
  earns its cost; :func:`forest_comparison` gives the CNN's lead over it with its interval over the test blocks.
"""
from __future__ import annotations

import numpy as np

from pipeline.assessment.area_estimates import accuracy_difference
from pipeline.core.vocabulary import TEST, UNLABELLED
from pipeline.core.errors import InputDataError

#: How to read every confusion matrix here (also in ``metrics.json`` and the log).
AXES_NOTE = "confusion matrix rows = reference, columns = prediction"
#: Names of the assessments, in the order of the module docstring.
ASSESSMENTS = ("superpixel_test", "superpixel_all_labelled", "pixel_test", "segmentation_ceiling",
               "random_forest_superpixel_test", "random_forest_pixel_test")
#: What the random forest baseline sees, for the assessments' units and the report.
FOREST_FEATURES = "each superpixel's mean and standard deviation of every band of the image and of NDVI, NDWI, NDBI"


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
        **({} if forest_labels is None else {
            "random_forest_superpixel_test": assess(labels[test], forest_labels[test], class_names,
                                                    "test superpixels, random forest baseline"),
            "random_forest_pixel_test": assess_counts(counts.peer_pixel_test, class_names, "labelled pixels of "
                                                      "test superpixels, random forest baseline")}),
    }


def tables_by_block(units: np.ndarray, reference: np.ndarray, predicted: np.ndarray, m: int, k: int) -> np.ndarray:
    """Samples (pixels or superpixels) of each of ``m`` blocks (``units``: 0..m-1 per sample) by reference class
    (rows) and predicted class (columns), int64 (m, K, K); predictions of no class (>= ``k``) left out.

    >>> tables_by_block(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0, 0, 255]), 2, 2).tolist()
    [[[1, 0], [1, 0]], [[0, 0], [0, 0]]]
    """
    inside = predicted < k
    cells = (units[inside] * k + reference[inside]) * k + predicted[inside]
    return np.bincount(cells, minlength=m * k * k).reshape(m, k, k)


def forest_comparison(counts, labels, split, block, pred_labels, forest_labels) -> dict:
    """``metrics.json``'s ``cnn_minus_forest``: the CNN's overall accuracy minus the random forest baseline's on the
    held-out test blocks, at pixel level (as ``pixel_test``, from ``counts.block_tables`` and
    ``counts.peer_block_tables``) and at superpixel level (as ``superpixel_test``), each with its 95 % interval
    over the test blocks as a cluster sample (:func:`~pipeline.assessment.area_estimates.accuracy_difference`),
    and the ``verdict`` in words (:func:`forest_verdict`). Per superpixel (n,): ``labels``, ``split``, ``block``
    (split block), ``pred_labels`` (CNN) and ``forest_labels``."""
    k, labelled = counts.pixel_test.shape[0], labels != UNLABELLED
    test = labelled & (split == TEST)
    population = int(np.unique(block[labelled]).size)
    blocks, unit = np.unique(block[test], return_inverse=True)
    superpixel = [tables_by_block(unit, labels[test], p[test], len(blocks), k) for p in (pred_labels, forest_labels)]
    with_pixels = (counts.block_tables.sum(axis=(1, 2)) + counts.peer_block_tables.sum(axis=(1, 2))) > 0
    result = {"pixel_test": accuracy_difference(counts.block_tables[with_pixels],
                                                counts.peer_block_tables[with_pixels], population),
              "superpixel_test": accuracy_difference(*superpixel, population)}
    return {**result, "population_blocks": population, "verdict": forest_verdict(result["pixel_test"]),
            "note": "difference = CNN minus random forest in overall accuracy (overall_accuracy: [CNN, random "
                    "forest]); 95 % interval over the test blocks as a cluster sample: ratio estimators, variance "
                    "of their linearized difference between blocks with the finite population correction "
                    "(Stehman 1997; Cochran 1977)"}


def forest_verdict(pixel: dict) -> str:
    """Whether the CNN beats the random forest, in words, from the pixel-level ``difference`` (CNN minus forest)
    and its interval half-width ``difference_ci95`` of :func:`forest_comparison`.

    >>> forest_verdict({"difference": 0.021, "difference_ci95": 0.03})
    'the CNN does not beat the random forest: +2.1 points of pixel-level overall accuracy, 95 % CI -0.9 to +5.1 over the test blocks'
    """
    d, half = pixel["difference"], pixel["difference_ci95"]
    if d is None:
        return "not compared: no test pixel"
    points = f"{100 * d:+.1f} points of pixel-level overall accuracy"
    if half is None:
        return f"not known whether the CNN beats the random forest: {points}, no interval (fewer than 2 test blocks)"
    interval = f"{points}, 95 % CI {100 * (d - half):+.1f} to {100 * (d + half):+.1f} over the test blocks"
    if d - half > 0:
        return f"the CNN beats the random forest: {interval}"
    if d + half < 0:
        return f"the random forest beats the CNN: {interval}"
    return f"the CNN does not beat the random forest: {interval}"
