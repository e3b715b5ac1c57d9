"""Class areas and area-adjusted accuracy by the stratified estimators of Olofsson et al. (2014), with the map
classes as strata (see :data:`AREA_FORMULA`). Confusion matrices here have rows = reference, columns = map;
areas are in hectares, pixel areas in square metres."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.contract import STEP0, TEST, UNLABELLED
from pipeline.errors import InputDataError

#: The paper the estimators follow, cited in ``metrics.json`` and the report.
OLOFSSON_2014 = ("Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014). "
                 "Good practices for estimating area and assessing accuracy of land change. "
                 "Remote Sensing of Environment 148, 42-57. doi:10.1016/j.rse.2014.02.015")
#: The estimators in one line of text, as ``metrics.json`` and the report state them.
AREA_FORMULA = ("A_i: map area of class i, A = sum_i A_i, W_i = A_i / A; n_ij: pixels of the test superpixels of "
                "map class i and reference class j, q_ij = n_ij / sum_j n_ij; u_i: test superpixels of map class i. "
                "Estimated area of class j = A * sum_i W_i q_ij, SE = A * sqrt(sum_i W_i^2 q_ij (1 - q_ij) / (u_i - 1)); "
                "user's accuracy of i = q_ii; producer's accuracy of j = W_j q_jj / sum_i W_i q_ij; overall "
                "accuracy = sum_i W_i q_ii; 95 % confidence interval = +-1.96 SE")
SQUARE_METRES_PER_HECTARE = 10_000.0


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

