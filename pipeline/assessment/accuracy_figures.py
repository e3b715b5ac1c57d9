"""Step 3's figures of a map against its reference: the maps side by side, where they disagree, the spatial
split, and confusion matrices. Figures are returned, never shown; ``pipeline.run.files.save_png`` writes them."""
from __future__ import annotations

import numpy as np

from pipeline.core.vocabulary import TEST, TRAIN, UNLABELLED, UNUSED
from pipeline.run.figures import plot_class_map, pyplot
from pipeline.core.grids import paint_map

#: Categories of the disagreement map (category 0, 1, 2) and their colours.
AGREEMENT_CATEGORIES = ("map agrees with the reference", "map disagrees", "no reference label")
AGREEMENT_COLOURS = ((26, 152, 80), (215, 48, 39), (225, 225, 225))
#: Categories of the split map: Step 0's split codes, then one for unlabelled superpixels; and their colours.
SPLIT_MAP_CATEGORIES = {TRAIN: "train", TEST: "test (held out)", UNUSED: "unused (its patch sees test pixels)",
                        UNUSED + 1: "unlabelled"}
SPLIT_MAP_COLOURS = ((69, 117, 180), (253, 174, 97), (140, 140, 140), (235, 235, 235))
#: Plain-language titles of the assessments (``metrics.json``'s keys under ``assessments``), for figures and the
#: report's headings; a name not listed is shown as it is.
ASSESSMENT_TITLES = {
    "superpixel_test": "Test superpixels (superpixel level)",
    "superpixel_all_labelled": "All labelled superpixels, training ones included (the tutorial's figure)",
    "pixel_test": "Pixels of the test superpixels (pixel level, not area-weighted)",
    "segmentation_ceiling": "Best any superpixel classifier could do with this segmentation",
    "random_forest_superpixel_test": "Random forest baseline (test superpixels)",
    "random_forest_pixel_test": "Random forest baseline (pixels of the test superpixels)",
}


def assessment_title(name: str) -> str:
    """The plain-language title of the assessment ``name`` (see :data:`ASSESSMENT_TITLES`).

    >>> assessment_title("segmentation_ceiling"), assessment_title("my own")
    ('Best any superpixel classifier could do with this segmentation', 'my own')
    """
    return ASSESSMENT_TITLES.get(name, name)


def plot_confusion(result: dict, title: str):
    """Heat map of an assessment's confusion matrix (``result`` of ``accuracy.assess``) with counts and row
    shares (on the diagonal: the producer's accuracy), titled ``title`` (an assessment's name is shown by its
    plain title, :func:`assessment_title`); returns the Figure."""
    matrix = np.array(result["confusion_matrix"])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = pyplot().subplots(figsize=(5.5, 5), layout="constrained")
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = result["class_names"]
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("map class (prediction)")
    axis.set_ylabel("reference class")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, f"{count}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                  color="white" if shares[i, j] > 0.6 else "black")
    figure.colorbar(image, ax=axis, label="share of the reference row", shrink=0.8)
    figure.suptitle(f"{assessment_title(title)}\noverall accuracy {result['overall_accuracy']}, kappa "
                    f"{result['kappa']} ({result['n_samples']} {result['unit'].split(',')[0]})", fontsize=9, wrap=True)
    return figure


def plot_maps(codes: np.ndarray, superpixel_reference: np.ndarray, pred_map: np.ndarray, class_names, *,
              grid=None):
    """Pixel reference, superpixel reference and prediction, class codes (rows, cols) each (the scene or its
    preview), side by side (tutorial Figs 5.1, 5.2); with the scene's ``grid``, in map coordinates with a scale
    bar (see :func:`pipeline.run.figures.plot_class_map`); returns the Figure."""
    figure, axes = pyplot().subplots(1, 3, figsize=(18, 6.5), layout="constrained")
    for axis, (image, title) in zip(axes, ((codes, "Reference, pixel-based (blank = unlabelled)"),
                                           (superpixel_reference, "Reference, superpixel-based (majority)"),
                                           (pred_map, "Prediction (CNN)"))):
        plot_class_map(image, class_names, title, axis, grid=grid)
    return figure


def agreement_category(codes: np.ndarray, pred_map: np.ndarray) -> np.ndarray:
    """Category of the disagreement map (see :data:`AGREEMENT_CATEGORIES`) of every pixel: 0 where the map
    agrees with the reference, 1 where it disagrees, 2 where the reference has no label. ``codes`` (reference
    class codes) and ``pred_map`` are uint8 (rows, cols); so is the result.

    >>> agreement_category(np.array([[0, 1, 255]], np.uint8), np.array([[0, 2, 1]], np.uint8)).tolist()
    [[0, 1, 2]]
    """
    return np.where(codes == UNLABELLED, 2, np.where(pred_map == codes, 0, 1)).astype(np.uint8)


def split_map_category(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Category of the split map (see :data:`SPLIT_MAP_CATEGORIES`) of every superpixel: its split code (train,
    test, unused), or the one after them where it is unlabelled; uint8 (n,) from ``labels`` and ``split`` (n,).

    >>> split_map_category(np.array([0, 3, 255], np.uint8), np.array([0, 1, 0], np.uint8)).tolist()
    [0, 1, 3]
    """
    return np.where(labels == UNLABELLED, UNUSED + 1, split).astype(np.uint8)


def plot_disagreement(codes: np.ndarray, pred_map: np.ndarray, share: float, *, grid=None):
    """Where the map (rows, cols) agrees and disagrees with the reference ``codes`` (rows, cols; the scene or its
    preview), on every labelled pixel, titled with the ``share`` (0 to 1) of the scene's labelled pixels that
    disagree; ``grid``: as for :func:`plot_maps`; returns the Figure."""
    return plot_class_map(agreement_category(codes, pred_map), AGREEMENT_CATEGORIES,
                          f"Map vs reference, every labelled pixel: {share:.1%} disagree", colours=AGREEMENT_COLOURS,
                          grid=grid)


def plot_split(labels: np.ndarray, split: np.ndarray, segments: np.ndarray, title: str, *, grid=None):
    """Step 0's spatial split (or, for a model trained elsewhere, every labelled superpixel held out): per
    superpixel ``labels`` and ``split`` (n,), painted on ``segments`` (rows, cols; the scene's or their
    preview); ``grid``: as for :func:`plot_maps`; returns the Figure."""
    return plot_class_map(paint_map(split_map_category(labels, split), segments, UNLABELLED),
                          list(SPLIT_MAP_CATEGORIES.values()), title, colours=SPLIT_MAP_COLOURS, grid=grid)
