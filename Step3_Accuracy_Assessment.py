"""Step 3, accuracy assessment (tutorial section 5), made honest.

The tutorial scores every superpixel, including the ones the CNN was trained on. Here the headline is the
**held-out test superpixels** of Step 0's spatial split (``split == 1``, label not 255); the tutorial's
all-superpixel figures are kept for comparison. Assessments (rows of every confusion matrix = reference,
columns = prediction):

- ``superpixel_test`` (headline): predicted vs majority reference label of the test superpixels;
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (tutorial);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``: a random forest on each superpixel's mean of the 8 layers, trained on
  the CNN's balanced set and scored like the headline, to show whether the CNN earns its cost.

Besides, ``area_estimates``: the area of every class in hectares and the user's, producer's and overall
accuracy, each with a 95 % confidence interval, by the stratified estimators of Olofsson et al. (2014), with
the map classes as strata and the test superpixels, weighted by their pixel counts, as the sample.

Writes ``metrics.json`` (sorted keys; per assessment: ``confusion_matrix``, ``class_names``,
``overall_accuracy``, ``kappa``, ``precision``, ``recall``, ``f1``, ``support``, ``weighted_f1``,
``n_samples``, ``unit``; then ``area_estimates``; undefined values are null), ``reference_maps.png`` (pixel
and superpixel reference beside the prediction), ``disagreement_map.png``, ``split_map.png``,
``confusion_<assessment>.png`` and ``report.html``, one self-contained file with every image inside it.
"""
from __future__ import annotations

import base64
import html
import logging
import sys
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline import cli, contract
from pipeline.config import Scene
from pipeline.contract import LAYER_NAMES, STEP0, TEST, TRAIN, UNLABELLED, UNUSED
from pipeline.errors import InputDataError
from pipeline.figures import plot_class_map, pyplot
from pipeline.grids import paint_map
from pipeline.outputs import OutputSet, open_outputs

log = logging.getLogger(__name__)
AXES_NOTE = "confusion matrix rows = reference, columns = prediction"
ASSESSMENTS = ("superpixel_test", "superpixel_all_labelled", "pixel_test", "segmentation_ceiling",
               "random_forest_superpixel_test")
#: Every file Step 3 writes (committed together).
OUTPUTS = ("metrics.json", "report.html", "reference_maps.png", "disagreement_map.png", "split_map.png",
           *(f"confusion_{name}.png" for name in ASSESSMENTS), "run.json")
#: Categories of the disagreement map (codes 0, 1, 2) and their colours.
AGREEMENT = ("map agrees with the reference", "map disagrees", "no reference label")
AGREEMENT_COLOURS = ((26, 152, 80), (215, 48, 39), (225, 225, 225))
#: Categories of the split map: Step 0's split codes, then unlabelled superpixels.
SPLIT_CATEGORIES = {TRAIN: "train", TEST: "test (held out)", UNUSED: "unused (its patch sees test pixels)",
                    UNUSED + 1: "unlabelled"}
SPLIT_COLOURS = ((69, 117, 180), (253, 174, 97), (140, 140, 140), (235, 235, 235))
OLOFSSON_2014 = ("Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014). "
                 "Good practices for estimating area and assessing accuracy of land change. "
                 "Remote Sensing of Environment 148, 42-57. doi:10.1016/j.rse.2014.02.015")
AREA_FORMULA = ("A_i: map area of class i, A = sum_i A_i, W_i = A_i / A; n_ij: pixels of the test superpixels of "
                "map class i and reference class j, q_ij = n_ij / sum_j n_ij; u_i: test superpixels of map class i. "
                "Estimated area of class j = A * sum_i W_i q_ij, SE = A * sqrt(sum_i W_i^2 q_ij (1 - q_ij) / (u_i - 1)); "
                "user's accuracy of i = q_ii; producer's accuracy of j = W_j q_jj / sum_i W_i q_ij; overall "
                "accuracy = sum_i W_i q_ii; 95 % confidence interval = +-1.96 SE")
SQUARE_METRES_PER_HECTARE = 10_000.0


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


def superpixel_means(layers: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean of every layer over each superpixel's pixels: float32 (n, layers), from ``layers`` (rows, cols, c)."""
    flat = segments.ravel()
    sizes = np.bincount(flat)
    return np.stack([np.bincount(flat, weights=layers[..., i].ravel()) / sizes
                     for i in range(layers.shape[-1])], axis=1).astype(np.float32)


def random_forest_predictions(features: np.ndarray, train_index: np.ndarray, train_labels: np.ndarray,
                              seed: int) -> np.ndarray:
    """Class of every superpixel by a random forest (300 trees) trained on ``features[train_index]``."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1)
    forest.fit(features[train_index], train_labels)
    return forest.predict(features).astype(np.uint8)


# --- Area estimates: Olofsson et al. (2014), stratified by map class ----------------------------------------

def class_areas_ha(pred_map_counts: np.ndarray, pixel_area_m2: float) -> np.ndarray:
    """Area in hectares of each map class from its pixel count.

    Parameters
    ----------
    pred_map_counts : array of int, shape (K,)
        Number of map pixels of each class (e.g. ``np.bincount(pred_map.ravel(), minlength=K)[:K]``).
    pixel_area_m2 : float
        Area of one pixel in square metres (100 for Sentinel-2's 10 m bands).

    >>> class_areas_ha(np.array([100, 2500, 0]), 100.0).tolist()
    [1.0, 25.0, 0.0]
    """
    return np.asarray(pred_map_counts, dtype=np.float64) * (float(pixel_area_m2) / SQUARE_METRES_PER_HECTARE)


def _stratum_terms(by_map: np.ndarray, weights: np.ndarray, units: np.ndarray):
    """Within-stratum proportions ``q`` (map rows) and variance terms ``W_i^2 q (1 - q) / (n_i - 1)``.

    Rows of strata without weight are 0; rows of weighted strata without samples are NaN.
    """
    totals = by_map.sum(axis=1, keepdims=True)
    weighted = weights[:, None] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(totals > 0, by_map / totals, np.nan)
        q = np.where(weighted, q, 0.0)
        terms = weights[:, None] ** 2 * q * (1 - q) / (units[:, None] - 1)
    terms = np.where(weighted, np.where(units[:, None] > 1, terms, np.nan), 0.0)
    return q, terms


def _estimates(by_map: np.ndarray, weights: np.ndarray, units: np.ndarray) -> dict:
    """Point estimates and standard errors as arrays (NaN where undefined)."""
    q, terms = _stratum_terms(by_map, weights, units)
    p = weights[:, None] * q
    area_share = p.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        users = np.where(weights > 0, np.diag(q), np.nan)
        users_var = users * (1 - users) / np.where(units > 1, units - 1, np.nan)
        producers = np.where(area_share > 0, np.diag(p) / area_share, np.nan)
        others = terms.sum(axis=0) - np.diag(terms)
        own = weights ** 2 * (1 - producers) ** 2 * users_var
        own = np.where(weights > 0, own, 0.0)
        producers_var = (own + producers ** 2 * others) / area_share ** 2
    return {"area_share": area_share, "area_share_se": np.sqrt(terms.sum(axis=0)),
            "users": users, "users_se": np.sqrt(users_var),
            "producers": producers, "producers_se": np.sqrt(producers_var),
            "overall": np.trace(p), "overall_se": np.sqrt(np.trace(terms))}


def _value(x) -> float | None:
    """A JSON-able float, or None for NaN and infinities."""
    x = float(x)
    return x if np.isfinite(x) else None


def _with_ci(name: str, value, se, z: float) -> dict:
    """``{name: value, name_se: se, name_ci95: z * se}`` with undefined values as None."""
    return {name: _value(value), f"{name}_se": _value(se), f"{name}_ci95": _value(z * se)}


def area_weighted_accuracy(confusion: np.ndarray, map_area: np.ndarray, class_names, z: float = 1.96, *,
                           sample_units: np.ndarray | None = None) -> dict:
    """Stratified area estimates, user's, producer's and overall accuracy with standard errors (Olofsson et al.
    2014, with the map classes as strata; see :data:`AREA_FORMULA`). Confusion matrices here have reference
    rows and map columns (the paper's tables are transposed). Values that cannot be estimated (a map class
    without samples, a class without map area, a variance from a single sample) are None.

    Parameters
    ----------
    confusion : array, shape (K, K)
        Sample counts, or area-weighted counts, with rows = reference class, columns = map class.
    map_area : array, shape (K,)
        Area of each map class in hectares (see :func:`class_areas_ha`).
    class_names : sequence of K str
    z : float
        Normal quantile of the intervals (1.96 for 95 %); ``*_ci95`` values are half-widths ``z * SE``.
    sample_units : array of int, shape (K,), optional
        Number of sampling units (superpixels) in each map class, used in the variances when
        ``confusion`` holds area-weighted counts. Default: the column sums of ``confusion``.

    Returns
    -------
    dict
        JSON-able: ``overall_accuracy`` (+ ``_se``, ``_ci95``), ``total_area_ha``, ``n_samples``,
        ``reference``, and ``classes``: per class name ``map_area_ha``, ``estimated_area_ha``,
        ``area_se_ha``, ``area_ci95_ha``, ``users_accuracy``, ``producers_accuracy`` (each + ``_se``,
        ``_ci95``). Undefined values are None.
    """
    by_map = np.asarray(confusion, dtype=np.float64).T
    areas = np.asarray(map_area, dtype=np.float64)
    k = len(class_names)
    if by_map.shape != (k, k) or areas.shape != (k,):
        raise ValueError(f"confusion must be {k}x{k} and map_area of length {k} for {k} class names; "
                         f"got {by_map.shape} and {areas.shape}")
    if (by_map < 0).any() or (areas < 0).any():
        raise ValueError("confusion counts and map areas must not be negative")
    units = by_map.sum(axis=1) if sample_units is None else np.asarray(sample_units, dtype=np.float64)
    total = float(areas.sum())
    weights = areas / total if total > 0 else np.zeros_like(areas)
    est = _estimates(by_map, weights, units)
    classes = {}
    for i, name in enumerate(class_names):
        classes[str(name)] = {
            "map_area_ha": float(areas[i]),
            "estimated_area_ha": _value(est["area_share"][i] * total) if total > 0 else None,
            "area_se_ha": _value(est["area_share_se"][i] * total) if total > 0 else None,
            "area_ci95_ha": _value(z * est["area_share_se"][i] * total) if total > 0 else None,
            **_with_ci("users_accuracy", est["users"][i], est["users_se"][i], z),
            **_with_ci("producers_accuracy", est["producers"][i], est["producers_se"][i], z),
        }
    overall = _with_ci("overall_accuracy", est["overall"], est["overall_se"], z) if total > 0 else \
        {"overall_accuracy": None, "overall_accuracy_se": None, "overall_accuracy_ci95": None}
    return {**overall, "total_area_ha": total, "n_samples": int(round(float(units.sum()))), "z": float(z),
            "reference": OLOFSSON_2014, "classes": classes}


def area_estimates(segments, labels, split, pred_labels, pred_map, class_names, pixel_area_m2: float) -> dict:
    """:func:`area_weighted_accuracy` of the map from the labelled test superpixels.

    Strata are the map classes, with areas from the pixel counts of ``pred_map`` (rows, cols) times
    ``pixel_area_m2``. Superpixels differ in size and the strata are areas, so each test superpixel counts
    with its pixel count in the confusion matrix; the variances use the number of test superpixels per map
    class, since superpixels, not pixels, were sampled (and they are clustered samples: the SE is approximate).

    >>> segments = np.array([[0, 0, 0, 1], [2, 2, 3, 3]])
    >>> result = area_estimates(segments, np.array([0, 1, 1, 0], np.uint8), np.array([1, 1, 1, 1], np.uint8),
    ...                         np.array([0, 1, 1, 1], np.uint8), np.array([[0, 0, 0, 1], [1, 1, 1, 1]]),
    ...                         ["a", "b"], 100.0)
    >>> result["confusion_matrix_pixels"], result["classes"]["b"]["test_superpixels"]
    ([[3, 2], [0, 3]], 3)
    """
    k = len(class_names)
    test = (labels != UNLABELLED) & (split == TEST) & (pred_labels < k)
    pixels = np.bincount(segments.ravel(), minlength=len(labels))
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels[test], pred_labels[test]), pixels[test])
    units = np.bincount(pred_labels[test], minlength=k)[:k]
    map_area = class_areas_ha(np.bincount(pred_map.ravel(), minlength=k)[:k], pixel_area_m2)
    result = area_weighted_accuracy(confusion, map_area, class_names, sample_units=units)
    for name, count in zip(class_names, units):
        result["classes"][str(name)]["test_superpixels"] = int(count)
    return {**result, "pixel_area_m2": float(pixel_area_m2), "confusion_matrix_pixels": confusion.tolist(),
            "formula": AREA_FORMULA, "unit": "hectares; test superpixels weighted by their pixel counts"}


def pixel_area(grid: gdal_tif2rgb.Grid, path: Path) -> float:
    """Area of one pixel of ``grid`` in square metres; a missing or geographic CRS is an error."""
    area = grid.pixel_area_m2()
    if area is None:
        raise InputDataError(f"{path}: its CRS is {'geographic (degrees)' if grid.crs_wkt else 'missing'}, but "
                             f"area estimates need a projected CRS in metres; reproject the image and the "
                             f"reference (e.g. gdalwarp -t_srs EPSG:32630) and rerun {STEP0}")
    return area


# --- Assessments, figures and the report ---------------------------------------------------------------

def assessments(segments, codes, labels, split, pred_labels, pred_map, forest_labels, class_names) -> dict:
    """All assessments of Step 3, keyed by name (see the module docstring); the forest's only where
    ``forest_labels`` is given (a model trained here)."""
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


def plot_confusion(result: dict, title: str):
    """Heat map of a confusion matrix with counts and row shares; returns the Figure."""
    matrix = np.array(result["confusion_matrix"])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = pyplot().subplots(figsize=(5.5, 4.8))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = result["class_names"]
    axis.set_xticks(range(len(names)), names, rotation=30)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("prediction")
    axis.set_ylabel("reference")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, f"{count}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                  color="white" if shares[i, j] > 0.6 else "black")
    figure.colorbar(image, ax=axis, label="share of the reference row")
    axis.set_title(f"{title}\nOA {result['overall_accuracy']}, kappa {result['kappa']} ({result['n_samples']} "
                   f"{result['unit'].split(',')[0]})", fontsize=9)
    return figure


def plot_maps(codes: np.ndarray, superpixel_reference: np.ndarray, pred_map: np.ndarray, class_names):
    """Pixel reference, superpixel reference and prediction side by side (tutorial Figs 5.1, 5.2)."""
    figure, axes = pyplot().subplots(1, 3, figsize=(18, 6.5))
    for axis, (image, title) in zip(axes, ((codes, "Reference, pixel-based (black = unlabelled)"),
                                           (superpixel_reference, "Reference, superpixel-based (majority)"),
                                           (pred_map, "Prediction (CNN)"))):
        plot_class_map(image, class_names, title, axis)
    return figure


def summary_lines(metrics: dict) -> list[str]:
    """A readable summary like the tutorial's Fig 5.4: per class precision/recall/F1, then OA and kappa."""
    lines = []
    for name, result in metrics["assessments"].items():
        lines.append(f"\n{name}: {result['unit']} ({result['n_samples']}); {AXES_NOTE}")
        lines.append(f"{'':>12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
        for i, class_name in enumerate(result["class_names"]):
            cells = [result[k][i] for k in ("precision", "recall", "f1")]
            lines.append(f"{class_name:>12}" + "".join(f"{'-' if c is None else c:>10}" for c in cells)
                         + f"{result['support'][i]:>10}")
        lines.append(f"{'OA':>12}{result['overall_accuracy']:>10}   kappa {result['kappa']}   "
                     f"weighted F1 {result['weighted_f1']}")
        for i, row in enumerate(result["confusion_matrix"]):
            lines.append(f"{result['class_names'][i]:>12} " + " ".join(f"{v:>8}" for v in row))
    area = metrics["area_estimates"]
    lines.append(f"\narea estimates (Olofsson et al. 2014; ha, +- 95 % CI): overall accuracy "
                 f"{with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}")
    for name, c in area["classes"].items():
        lines.append(f"{name:>12}  map {c['map_area_ha']:,.1f}  estimated "
                     f"{with_interval(c['estimated_area_ha'], c['area_ci95_ha'], 1)}")
    return [line.replace("&ndash;", "-") for line in lines]


def disagreement_codes(codes: np.ndarray, pred_map: np.ndarray) -> np.ndarray:
    """Per pixel: 0 where the map agrees with the reference, 1 where it disagrees, 2 where there is no label.

    >>> disagreement_codes(np.array([[0, 1, 255]], np.uint8), np.array([[0, 2, 1]], np.uint8)).tolist()
    [[0, 1, 2]]
    """
    return np.where(codes == UNLABELLED, 2, np.where(pred_map == codes, 0, 1)).astype(np.uint8)


def split_codes(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Per superpixel: its split code (train, test, unused), or the code after them where it is unlabelled."""
    return np.where(labels == UNLABELLED, UNUSED + 1, split).astype(np.uint8)


def plot_disagreement(codes: np.ndarray, pred_map: np.ndarray):
    """Where the map agrees and disagrees with the reference (every labelled pixel); returns the Figure."""
    share = np.mean(codes[codes != UNLABELLED] != pred_map[codes != UNLABELLED]) if (codes != UNLABELLED).any() else 0
    return plot_class_map(disagreement_codes(codes, pred_map), AGREEMENT,
                          f"Map vs reference, every labelled pixel: {share:.1%} disagree", colours=AGREEMENT_COLOURS)


def plot_split(labels: np.ndarray, split: np.ndarray, segments: np.ndarray, title: str):
    """Step 0's spatial split (or, for a model trained elsewhere, every labelled superpixel held out), painted
    on the superpixels; returns the Figure."""
    return plot_class_map(paint_map(split_codes(labels, split), segments), list(SPLIT_CATEGORIES.values()), title,
                          colours=SPLIT_COLOURS)


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI, so the report carries it inside."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image_tag(path: Path, alt: str) -> str:
    """An <img> holding the PNG at ``path`` (titled by its file name), or a note where the file is missing."""
    if not Path(path).is_file():
        return f"<p>({html.escape(Path(path).name)} not found)</p>"
    return f"<img src='{data_uri(path)}' alt='{html.escape(alt)}' title='{html.escape(Path(path).name)}'>"


def confusion_tables(result: dict) -> str:
    """HTML tables of an assessment's confusion matrix and per-class scores."""
    head = "".join(f"<th>{html.escape(n)}</th>" for n in result["class_names"])
    rows = "".join(f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for n, row in zip(result["class_names"], result["confusion_matrix"]))
    scores = "".join(f"<tr><th>{k}</th>" + "".join(f"<td>{'&ndash;' if v is None else v}</td>"
                                                   for v in result[k]) + "</tr>"
                     for k in ("precision", "recall", "f1", "support"))
    return (f"<table><tr><th>reference \\ prediction</th>{head}</tr>{rows}</table>"
            f"<table><tr><th></th>{head}</tr>{scores}</table>")


def with_interval(value, half_width, digits: int) -> str:
    """``value ± half_width`` with ``digits`` decimals and thousands separators; a dash where undefined.

    >>> with_interval(21158.4, 6158.04, 1), with_interval(0.88, None, 3), with_interval(None, 1.0, 1)
    ('21,158.4 ± 6,158.0', '0.880', '&ndash;')
    """
    if value is None:
        return "&ndash;"
    return f"{value:,.{digits}f}" + ("" if half_width is None else f" ± {half_width:,.{digits}f}")


def area_table(area: dict) -> str:
    """HTML table of the area estimates: per class map area, estimated area, user's and producer's accuracy
    (each ± its 95 % confidence interval), then the overall accuracy."""
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{with_interval(c['map_area_ha'], None, 1)}</td>"
        f"<td>{with_interval(c['estimated_area_ha'], c['area_ci95_ha'], 1)}</td>"
        f"<td>{with_interval(c['users_accuracy'], c['users_accuracy_ci95'], 3)}</td>"
        f"<td>{with_interval(c['producers_accuracy'], c['producers_accuracy_ci95'], 3)}</td>"
        f"<td>{c['test_superpixels']}</td></tr>" for name, c in area["classes"].items())
    return (f"<table class='area'><tr><th>class</th><th>map area (ha)</th><th>estimated area (ha) ± 95 % CI</th>"
            f"<th>user's accuracy ± 95 % CI</th><th>producer's accuracy ± 95 % CI</th><th>test superpixels</th></tr>"
            f"{rows}<tr><th>all</th><td>{with_interval(area['total_area_ha'], None, 1)}</td><td></td>"
            f"<td colspan='2'>overall accuracy {with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}"
            f"</td><td>{area['n_samples']}</td></tr></table>")


def area_section(area: dict) -> str:
    """The report's section on area estimates: the table, how it was computed and the reference."""
    return (f"<h2>Class areas and area-adjusted accuracy</h2>{area_table(area)}<p>Stratified estimators of "
            f"Olofsson et al. (2014), with the map classes as strata (map areas from the pixel counts of the map x "
            f"{area['pixel_area_m2']:g} m² per pixel) and the labelled test superpixels as the sample, each weighted "
            f"by its pixel count; the variances count superpixels, which are clustered samples, so the intervals "
            f"are approximate.</p><p><code>{html.escape(area['formula'])}</code></p>"
            f"<p>{html.escape(area['reference'])}</p>")


def write_report(scene: Scene, out: OutputSet, metrics: dict) -> None:
    """``report.html``: one self-contained page (every image inside it, no links to files or paths) with the
    composites, the maps, the area estimates, the confusion matrices and the figures."""
    def earlier(name: str) -> Path:
        return scene.output(name)

    headline = metrics["assessments"]["superpixel_test"]
    forest = metrics["assessments"].get("random_forest_superpixel_test")
    baseline = f"random forest baseline {forest['overall_accuracy']}; " if forest else ""
    sections = "".join(
        f"<section><h3>{name}</h3><p>{html.escape(result['unit'])}: {result['n_samples']}. "
        f"OA <b>{result['overall_accuracy']}</b>, kappa {result['kappa']}, weighted F1 {result['weighted_f1']}</p>"
        f"{image_tag(out.path(f'confusion_{name}.png'), 'confusion matrix')}{confusion_tables(result)}</section>"
        for name, result in metrics["assessments"].items())
    composites = "".join(image_tag(earlier(name), alt) for name, alt in (
        ("rgb.png", "RGB"), ("nir_green_blue.png", "NIR-G-B"), ("segments_boundaries.png", "superpixels")))
    write_page(scene, out, "land-cover report", f"""<p>Held-out test superpixels: overall accuracy <b id="headline">{headline['overall_accuracy']}</b>, kappa {headline['kappa']}
({baseline}segmentation ceiling {metrics['assessments']['segmentation_ceiling']['overall_accuracy']}).
{html.escape(metrics.get("applied_model_note", ""))}
Confusion matrices: rows = reference, columns = prediction. Image: {html.escape(Path(str(scene.image)).name)};
reference: {html.escape(Path(str(scene.reference)).name)}.</p>
<div class="row">{composites}</div>
{image_tag(out.path("reference_maps.png"), "reference and predicted maps")}
{image_tag(earlier("uncertainty.png"), "uncertainty")}
<div class="pair">{image_tag(out.path("disagreement_map.png"), "disagreement map")}{image_tag(out.path("split_map.png"), "spatial split")}</div>
{area_section(metrics["area_estimates"])}
{image_tag(earlier("learning_curve.png"), "learning curve") if earlier("learning_curve.png").is_file() else ""}
{sections}
<p>Full figures: metrics.json. Parameters and input checksums: run.json.</p>""")


def write_page(scene: Scene, out: OutputSet, title: str, body: str) -> None:
    """``report.html``: ``body`` under the scene's heading, in the one style of Step 3's pages."""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(scene.name)}: {title}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}} img{{max-width:100%}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #bbb;padding:2px 8px;text-align:right}}
section{{display:inline-block;vertical-align:top;width:45%;margin:1em}} .row img{{width:32%}} .pair img{{width:49%}}
</style></head><body>
<h1>Land-cover map of {html.escape(scene.name)}</h1>
{body}</body></html>"""
    with gdal_tif2rgb.atomic_output(out.path("report.html")) as temporary:
        temporary.write_text(page, encoding="utf-8")


def read_hand_offs(scene: Scene) -> dict:
    """Everything Step 3 reads: Step 0's labels, split, segments, layers and reference codes (if the scene has a
    reference), Step 2's labels and, for a model trained here, Step 1's balanced set; checked to come from one
    chain of runs on the scene as it is now."""
    step0, segments = contract.load_step0(scene, ["labels", "split"])
    step0_run = step0[contract.PROVENANCE]["run"]
    contract.check_raster_run(scene.output(contract.LAYERS_TIF), step0_run)
    grid, _ = gdal_tif2rgb.read_grid(scene.output(contract.LAYERS_TIF))
    if segments.shape != (grid.rows, grid.cols):
        raise InputDataError(f"{scene.workdir}: segments.mat and layers.tif disagree in size; rerun {STEP0}")
    pred_labels, prediction = contract.load_pred_labels(scene, step0_run)
    data = {"segments": segments, "labels": step0["labels"], "split": step0["split"], "pred_labels": pred_labels,
            "pixel_area_m2": pixel_area(grid, scene.output(contract.LAYERS_TIF)), "codes": None, "balanced": None,
            "applied_from": prediction.get("model_scene")}
    if step0[contract.PROVENANCE]["inputs"]["reference"] is not None:
        contract.check_raster_run(scene.output(contract.REFERENCE_TIF), step0_run)
        data["codes"] = gdal_tif2rgb.read_labels(scene.output(contract.REFERENCE_TIF))[0].astype(np.uint8)
    if prediction.get("step1_run") is not None:  # trained here: the forest baseline uses the same balanced set
        data["balanced"] = contract.load_balanced(scene, ["labels"], step0_run)
        if data["balanced"][contract.PROVENANCE]["run"] != prediction["step1_run"]:
            raise InputDataError(f"{contract.PRED_LABELS.path(scene.workdir)}: predicted by a model trained on "
                                 f"another balanced set than the one in {scene.workdir}; rerun {STEP2}")
        layers = gdal_tif2rgb.read_bands(scene.output(contract.LAYERS_TIF), list(range(1, len(LAYER_NAMES) + 1)))[0]
        data["layers"] = np.moveaxis(layers, 0, -1)
    else:  # an applied model was trained on none of this scene's superpixels: every labelled one is held out
        data["split"] = np.where(data["labels"] != UNLABELLED, TEST, data["split"]).astype(np.uint8)
    return data


def write_figures(out: OutputSet, data: dict, pred_map: np.ndarray, metrics: dict, block_size: int) -> None:
    """Step 3's PNGs: the maps, the disagreement map, the split map and every confusion matrix."""
    class_names = metrics["class_names"]
    superpixel_reference = paint_map(data["labels"], data["segments"])
    gdal_tif2rgb.save_png(out.path("reference_maps.png"),
                          plot_maps(data["codes"], superpixel_reference, pred_map, class_names))
    gdal_tif2rgb.save_png(out.path("disagreement_map.png"), plot_disagreement(data["codes"], pred_map))
    gdal_tif2rgb.save_png(out.path("split_map.png"),
                          plot_split(data["labels"], data["split"], data["segments"],
                                     f"Spatial split: held-out test superpixels in {block_size} px blocks"
                                     if data["applied_from"] is None else
                                     f"Every labelled superpixel held out (model trained on {data['applied_from']})"))
    for name, result in metrics["assessments"].items():
        gdal_tif2rgb.save_png(out.path(f"confusion_{name}.png"), plot_confusion(result, name))


def assess_map(scene: Scene, out: OutputSet, data: dict, pred_map: np.ndarray, timings: dict) -> dict:
    """Every assessment of the map against the reference, the figures, ``metrics.json`` and ``report.html``."""
    class_names = scene.class_names
    forest_labels = None
    if data["balanced"] is not None:
        with cli.timed("random forest baseline on superpixel means", timings):
            trained = np.unique(data["balanced"]["index"])
            forest_labels = random_forest_predictions(superpixel_means(data["layers"], data["segments"]), trained,
                                                      data["labels"][trained], scene.params.seed)
    with cli.timed("assessments", timings):
        metrics = {"note": AXES_NOTE, "class_names": class_names,
                   "assessments": assessments(data["segments"], data["codes"], data["labels"], data["split"],
                                              data["pred_labels"], pred_map, forest_labels, class_names),
                   "area_estimates": area_estimates(data["segments"], data["labels"], data["split"],
                                                    data["pred_labels"], pred_map, class_names, data["pixel_area_m2"])}
        if data["applied_from"]:
            metrics["applied_model_note"] = (f"The model was trained on scene {data['applied_from']}: every "
                                             f"labelled superpixel of this scene is held out.")
    with cli.timed("figures, metrics.json and report.html", timings):
        write_figures(out, data, pred_map, metrics, scene.params.block_size)
        cli.write_json(out.path("metrics.json"), metrics)
        write_report(scene, out, metrics)
    for line in summary_lines(metrics):
        log.info(line)
    headline = metrics["assessments"]["superpixel_test"]
    log.info("\nheadline (held-out test superpixels): OA %s, kappa %s; report: %s", headline["overall_accuracy"],
             headline["kappa"], scene.output("report.html"))
    return {"overall_accuracy": {k: v["overall_accuracy"] for k, v in metrics["assessments"].items()}}


def describe_map(scene: Scene, out: OutputSet, data: dict, pred_map: np.ndarray) -> dict:
    """A scene without a reference: ``metrics.json`` with the class areas (hectares) and a report of the map,
    its uncertainty and the areas."""
    k = len(scene.class_names)
    areas = class_areas_ha(np.bincount(pred_map.ravel(), minlength=k)[:k], data["pixel_area_m2"])
    metrics = {"note": "no reference: the map's class areas only (no accuracy can be assessed)",
               "class_names": scene.class_names, "class_areas_ha": dict(zip(scene.class_names, np.round(areas, 2))),
               "total_area_ha": round(float(areas.sum()), 2), "model_scene": data["applied_from"]}
    cli.write_json(out.path("metrics.json"), metrics)
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{area:.2f}</td><td>{area / max(areas.sum(), 1e-9):.1%}</td></tr>"
                   for name, area in zip(scene.class_names, areas))
    write_page(scene, out, "land-cover map", f"""<p>No reference: accuracy cannot be assessed here. Model trained on scene {html.escape(str(data["applied_from"]))}.
Image: {html.escape(Path(str(scene.image)).name)}.</p>
<div class="pair">{image_tag(scene.output("predMap.png"), "predicted land cover")}{image_tag(scene.output("uncertainty.png"), "uncertainty")}</div>
<h2>Class areas (map)</h2><table><tr><th>class</th><th>hectares</th><th>share</th></tr>{rows}
<tr><th>total</th><td>{areas.sum():.2f}</td><td></td></tr></table>""")
    log.info("class areas (ha): %s; report: %s", metrics["class_areas_ha"], scene.output("report.html"))
    return {"class_areas_ha": metrics["class_areas_ha"]}


def assess_run(scene: Scene) -> None:
    """Step 3: every assessment, the figures, ``metrics.json`` and ``report.html``, committed as one set (for a
    scene without a reference: the map's class areas and a report of the map and its uncertainty)."""
    timings = {}
    inputs = (scene.config_path, *(scene.output(name) for name in (
        contract.REFERENCE_TIF, contract.LAYERS_TIF, contract.SEGMENTS.filename, contract.SAMPLES.filename,
        contract.PRED_LABELS.filename, contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class).name)))
    with open_outputs(scene.workdir, OUTPUTS, inputs) as out:
        with cli.timed("read Step 0, 1 and 2 outputs", timings):
            data = read_hand_offs(scene)
        pred_map = paint_map(data["pred_labels"], data["segments"])
        if data["codes"] is None:
            results = describe_map(scene, out, data, pred_map)
        else:
            results = assess_map(scene, out, data, pred_map, timings)
        cli.record_run(scene, out.path("run.json"), "Step3_Accuracy_Assessment", {"timings_s": timings, **results})


def main(argv=None) -> int:
    """Step 3 from the command line (``--help`` lists the flags)."""
    return cli.run_step(cli.build_parser(__doc__, ["per_class"]), argv, assess_run)


if __name__ == "__main__":
    sys.exit(main())
