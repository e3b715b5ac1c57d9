"""Class areas (hectares) and map accuracy estimated from a probability sample, with standard errors.

One estimator serves both samples Step 3 knows:

- the **held-out test blocks** of Step 0's spatial split: a cluster sample, the blocks a simple random sample
  drawn without replacement from the blocks holding labelled superpixels, every pixel of a test block's
  superpixels observed with its own reference value; the map's class areas are known, so the proportions are
  ratio estimators within each map class (post-stratified);
- a **designed validation sample** (``pipeline.assessment.validation_sample``): points drawn by stratified random sampling,
  the strata the classes of the map that defined them (Olofsson et al. 2014; Stehman 2014 where the map assessed
  is another).

Every figure is a smooth function of estimated totals; its standard error is that of its Taylor linearization
(Cochran 1977; Stehman 1997 for cluster samples), with the design's finite population correction. With one point
per unit and the map classes as strata this is exactly Olofsson et al.'s eqs. 5 to 7 (``interval="wald"``). By
default a sample of points gets adjusted variances (:data:`INTERVAL_METHODS`): in each of the m strata a figure
depends on, the proportion p = x / n in ``p (1 - p) / (n - 1)`` becomes ``(x + c) / (n + 2 c)`` with
``c = z^2 / (2 m)``, never 0 or 1, so a stratum whose points all agree still contributes variance and no interval
from a sample has width zero. For one stratum (a user's accuracy) that is Agresti and Coull's (1998) adjustment,
for two Agresti and Caffo's (2000). Tables and confusion matrices here have rows = reference, columns = map; areas
in hectares, pixel areas in square metres.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.core.vocabulary import STEP0, TEST, UNLABELLED
from pipeline.core.errors import InputDataError

OLOFSSON_2014 = ("Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014). "
                 "Good practices for estimating area and assessing accuracy of land change. "
                 "Remote Sensing of Environment 148, 42-57. doi:10.1016/j.rse.2014.02.015")
STEHMAN_2014 = ("Stehman, S. V. (2014). Estimating area and map accuracy for stratified random sampling when the "
                "strata are different from the map classes. International Journal of Remote Sensing 35(13), "
                "4923-4939. doi:10.1080/01431161.2014.930207")
STEHMAN_1997 = ("Stehman, S. V. (1997). Estimating standard errors of accuracy assessment statistics under "
                "cluster sampling. Remote Sensing of Environment 60(3), 258-269. doi:10.1016/S0034-4257(96)00128-1")
COCHRAN_1977 = "Cochran, W. G. (1977). Sampling Techniques, 3rd ed. Wiley: ch. 6 (ratio estimators), ch. 9 (clusters)."
AGRESTI_COULL_1998 = ("Agresti, A., Coull, B. A. (1998). Approximate is better than 'exact' for interval estimation "
                      "of binomial proportions. The American Statistician 52(2), 119-126. "
                      "doi:10.1080/00031305.1998.10480550")
AGRESTI_CAFFO_2000 = ("Agresti, A., Caffo, B. (2000). Simple and effective confidence intervals for proportions and "
                      "differences of proportions result from adding two successes and two failures. The American "
                      "Statistician 54(4), 280-288. doi:10.1080/00031305.2000.10474560")
#: The estimators in one line of text, as ``metrics.json`` and the report state them.
FORMULA = ("y_u,ij: pixels (or points) of unit u of reference class i and map class j; strata h of N_h units, "
           "n_h sampled, weight w_u = N_h / n_h; T_ij = sum_u w_u y_u,ij. Proportions p_ij = T_ij / T (designed "
           "sample; Stehman 2014) or p_ij = W_j T_ij / T_.j with W_j the map share of class j (test blocks: "
           "post-stratified on the map). Area of class i = A sum_j p_ij; user's accuracy of j = p_jj / p_.j; "
           "producer's accuracy of i = p_ii / p_i.; overall accuracy = sum_i p_ii. V = sum_h (1 - n_h / N_h) "
           "n_h / (n_h - 1) sum_{u in h} (w_u z_u - mean_h w z)^2 with z_u the linearized value of unit u (for a "
           "sample of points, adjusted: the mean square of z over the stratum's n_h points and z^2 / (2 m) "
           "pseudo-points at each of the least and greatest value z can take in it, m the strata where z can vary, "
           "times N_h^2 / (n_h - 1)); 95 % confidence interval = +-1.96 SE")
SQUARE_METRES_PER_HECTARE = 10_000.0
Z95 = 1.96
#: How the 95 % intervals are made, by name (``interval`` of :func:`estimates`): the pseudo-points a figure gets at
#: each end of its linearized values, shared among the strata it depends on, and the sentence ``metrics.json``
#: (``interval_method``) and the report give.
INTERVAL_METHODS = {
    "agresti-coull": (Z95 ** 2 / 2, (
        "adjusted Wald intervals (Agresti and Coull 1998; Agresti and Caffo 2000): estimate +- 1.96 SE, the SE "
        "from the stratified variance in which each stratum's proportion p = x/n becomes (x + c)/(n + 2c), "
        "c = 1.92/m for a figure depending on m strata (z^2/2 = 1.92 pseudo-points at each end of the values a "
        "point can take, shared among them: a user's accuracy, one stratum, gets (x + 1.92)/(n + 3.84)), so a "
        "stratum whose points all agree still contributes variance and no interval has width zero; symmetric "
        "about the estimate, read an end beyond 0 or 1 (or 0 ha) as that limit")),
    "wald": (0.0, (
        "Wald intervals: estimate +- 1.96 SE, the SE from the spread of the sampled units within each stratum "
        "(zero where every unit agrees)")),
}
#: Labelled points a stratum needs before the normal approximation of its proportions is trusted; the report flags
#: smaller strata.
SMALL_STRATUM = 30


def class_areas_ha(pred_map_counts: np.ndarray, pixel_area_m2: float) -> np.ndarray:
    """Area in hectares of each map class from its pixel count ``pred_map_counts`` (K,) and the area of one
    pixel in square metres (100 for Sentinel-2's 10 m bands).

    >>> class_areas_ha(np.array([100, 2500, 0]), 100.0).tolist()
    [1.0, 25.0, 0.0]
    """
    return np.asarray(pred_map_counts, dtype=np.float64) * (float(pixel_area_m2) / SQUARE_METRES_PER_HECTARE)


def proportions(tables: np.ndarray, strata: np.ndarray, population_units: np.ndarray, map_shares=None):
    """Estimated area proportions ``p`` (K, K; reference rows, map columns), the linearized value of every
    unit's contribution to them (u, K, K), and the value a unit of one point in each cell would have (K * K, K, K;
    cell ``i * K + j`` the point of reference class i mapped j).

    Parameters
    ----------
    tables : float array, shape (u, K, K)
        Per sampled unit: its pixels (or its one point) by reference class (rows) and map class (columns).
    strata : int array, shape (u,)
        Stratum of each unit, 0..H-1.
    population_units : float array, shape (H,)
        Units (pixels, blocks) in each stratum of the population, or numbers proportional to them.
    map_shares : float array, shape (K,), optional
        The map's known class shares of the area; given, the proportions are ratios within each map class.
    """
    weights = expansion_weights(strata, population_units)
    totals = np.einsum("u,uij->ij", weights, tables)
    k = tables.shape[1]
    units = np.concatenate([tables, np.eye(k * k).reshape(k * k, k, k)])  # the sample's units, then one per cell
    with np.errstate(divide="ignore", invalid="ignore"):
        if map_shares is None:
            unsampled = (population_units > 0) & (np.bincount(strata, minlength=len(population_units)) == 0)
            size = np.nan if unsampled.any() else totals.sum()  # a stratum without sample: nothing is estimable
            p = totals / size
            linear = (units - p * units.sum(axis=(1, 2))[:, None, None]) / size
        else:
            shares = np.asarray(map_shares, dtype=np.float64)
            mapped = totals.sum(axis=0)
            within = np.where(shares > 0, totals / mapped, 0.0)  # NaN where a mapped class has no sample
            p = shares * within
            linear = np.where(shares > 0, shares * (units - within * units.sum(axis=1)[:, None, :]) / mapped, 0.0)
    return p, linear[:len(tables)], linear[len(tables):]


def expansion_weights(strata: np.ndarray, population_units: np.ndarray) -> np.ndarray:
    """``N_h / n_h`` of each unit's stratum h (u,)."""
    sampled = np.bincount(strata, minlength=len(population_units))
    return (population_units / np.maximum(sampled, 1))[strata]


def design_variance(values: np.ndarray, strata: np.ndarray, population_units: np.ndarray,
                    finite_population: bool = True, pseudo_points=None) -> np.ndarray:
    """Variance of ``sum_u w_u values_u`` under stratified simple random sampling without replacement, with
    the finite population correction ``1 - n_h / N_h`` unless ``finite_population`` is False.

    ``values`` (u, ...) are linearized values; the result has shape ``values.shape[1:]``. A stratum sampled by a
    single unit (of several) makes every variance undefined (NaN). With ``pseudo_points`` (c, low, high), each
    (H, ...): per stratum, the pseudo-units c put at each of the least and greatest value a unit of it can take,
    a stratum's mean square is taken over its n units and those pseudo-units (for values of two levels, the
    proportion p = x / n in ``p (1 - p)`` becomes ``(x + c) / (n + 2 c)``: Agresti-Coull for c = z^2 / 2); still
    divided by n - 1.

    >>> float(design_variance(np.array([1.0, 3.0]), np.array([0, 0]), np.array([2.0]), False))  # N 2, s^2 2, n 2
    4.0

    Two points that agree (p = 1), one pseudo-unit at 0 and one at 1: p~ = (2 + 1) / (2 + 2), and
    N^2 p~ (1 - p~) / (n - 1) = 4 * 3/16 / 1:

    >>> float(design_variance(np.array([1.0, 1.0]), np.array([0, 0]), np.array([2.0]), False, ([1.0], [0.0], [1.0])))
    0.75
    """
    variance = np.zeros(values.shape[1:])
    for stratum, size in enumerate(population_units):
        members = values[strata == stratum]
        n = len(members)
        if n == 1 and not (finite_population and size <= 1):  # one unit of several: no spread to measure
            variance = variance + np.nan
        elif n > 1:
            c, low, high = (0.0, members[0], members[0]) if pseudo_points is None else (
                np.asarray(part)[stratum] for part in pseudo_points)
            mean = (members.sum(axis=0) + c * (low + high)) / (n + 2 * c)
            squares = ((members - mean) ** 2).sum(axis=0) + c * ((low - mean) ** 2 + (high - mean) ** 2)
            mean_square = squares / (n + 2 * c)
            variance = variance + (1 - n / size if finite_population else 1.0) * size ** 2 * mean_square / (n - 1)
    return variance


def estimates(tables, strata, population_units, map_area_ha, class_names, map_shares=None,
              finite_population: bool = True, interval: str = "agresti-coull") -> dict:
    """Class areas, user's, producer's and overall accuracy, each with its standard error and 95 % interval.

    ``tables``, ``strata``, ``population_units`` and ``map_shares`` as in :func:`proportions`,
    ``finite_population`` as in :func:`design_variance`; ``map_area_ha`` (K,) the assessed map's class areas,
    whose sum is the area the proportions are of; ``interval`` a key of :data:`INTERVAL_METHODS` ("agresti-coull"
    only for units of one point each; "wald" reproduces Olofsson et al.'s figures). Values that cannot be estimated
    (a mapped class without sample, a variance from a single unit) are None.

    Returns a JSON-able dict: ``overall_accuracy`` (+ ``_se``, ``_ci95`` half-width), ``total_area_ha``,
    ``n_units``, ``classes``: per name ``map_area_ha``, ``estimated_area_ha``, ``area_se_ha``, ``area_ci95_ha``,
    ``users_accuracy``, ``producers_accuracy`` (each + ``_se``, ``_ci95``), ``confusion_matrix_proportions`` and
    ``interval_method`` (the sentence of :data:`INTERVAL_METHODS`).
    """
    tables = np.asarray(tables, dtype=np.float64)
    strata = np.asarray(strata, dtype=np.intp)
    population_units = np.asarray(population_units, dtype=np.float64)
    areas = np.asarray(map_area_ha, dtype=np.float64)
    k = len(class_names)
    if tables.shape[1:] != (k, k) or areas.shape != (k,) or len(strata) != len(tables):
        raise ValueError(f"tables must be (units, {k}, {k}), strata (units,) and map areas ({k},) for {k} class "
                         f"names; got {tables.shape}, {strata.shape} and {areas.shape}")
    pseudo_total, method = INTERVAL_METHODS[interval]
    if pseudo_total and not np.allclose(tables.sum(axis=(1, 2)), 1.0):
        raise ValueError(f"interval {interval!r} needs units of one point each (one-hot tables); use "
                         f"interval='wald' for a cluster sample")
    total = float(areas.sum())
    p, linear, cell_linear = proportions(tables, strata, population_units, map_shares)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference_share, map_share, hits = p.sum(axis=1), p.sum(axis=0), np.diagonal(p)
        users, producers = hits / map_share, hits / reference_share
        figures = {"area": reference_share * total, "users": users, "producers": producers, "overall": hits.sum()}
        values, cell_values = (_linearized_figures(lin, users, producers, reference_share, map_share, total)
                               for lin in (linear, cell_linear))
    pseudo = (_pseudo_points(tables, strata, len(population_units), cell_values, pseudo_total) if pseudo_total
              else dict.fromkeys(figures))
    se = {name: np.sqrt(design_variance(values[name], strata, population_units, finite_population, pseudo[name]))
          for name in figures}
    classes = {str(name): {"map_area_ha": float(areas[i]),
                           **_with_ci(AREA_KEYS, figures["area"][i], se["area"][i]),
                           **_with_ci(_keys("users_accuracy"), users[i], se["users"][i]),
                           **_with_ci(_keys("producers_accuracy"), producers[i], se["producers"][i])}
               for i, name in enumerate(class_names)}
    return {**_with_ci(_keys("overall_accuracy"), figures["overall"], se["overall"]), "total_area_ha": total,
            "n_units": int(len(tables)), "z": Z95, "classes": classes, "formula": FORMULA,
            "interval_method": method, "confusion_matrix_proportions": [[_value(v) for v in row] for row in p]}


def _linearized_figures(linear, users, producers, reference_share, map_share, total: float) -> dict:
    """Linearized values (u, K) of every class's area (ha), user's and producer's accuracy, and (u,) of the overall
    accuracy, from the units' linearized proportions ``linear`` (u, K, K)."""
    hit_values = np.diagonal(linear, axis1=1, axis2=2)
    return {"area": linear.sum(axis=2) * total, "users": (hit_values - users * linear.sum(axis=1)) / map_share,
            "producers": (hit_values - producers * linear.sum(axis=2)) / reference_share,
            "overall": hit_values.sum(axis=1)}


def _pseudo_points(tables, strata, n_strata: int, cell_values: dict, total: float) -> dict:
    """Per figure, the ``pseudo_points`` (c, low, high) of :func:`design_variance`, each (H, ...): low and high the
    least and greatest linearized value a point of each stratum can take (a point of any reference class in any
    map class met among the stratum's sampled points), c = ``total`` / m where the two differ, m the strata where
    they do (so a figure gets ``total`` pseudo-points at each end in all). ``cell_values`` holds each figure's value
    of a point in every cell (K * K, ...), cell ``i * K + j`` reference i, map j."""
    k = tables.shape[1]
    met = np.zeros((n_strata, k), bool)
    met[strata, tables.sum(axis=1).argmax(axis=1)] = True  # map classes of the stratum's points
    possible = np.tile(met, k)  # (H, K * K): cell i * K + j is possible where map class j was met
    pseudo = {}
    for name, values in cell_values.items():
        mask = possible.reshape(*possible.shape, *[1] * (values.ndim - 1))
        low, high = np.where(mask, values, np.inf).min(axis=1), np.where(mask, values, -np.inf).max(axis=1)
        varies = high > low
        pseudo[name] = (np.where(varies, total / np.maximum(varies.sum(axis=0), 1), 0.0), low, high)
    return pseudo


def _value(x) -> float | None:
    """A JSON-able float, or None for NaN and infinities."""
    x = float(x)
    return x if np.isfinite(x) else None


#: Keys of a class's area, its standard error and its 95 % interval half-width.
AREA_KEYS = ("estimated_area_ha", "area_se_ha", "area_ci95_ha")


def _keys(name: str) -> tuple:
    """The keys of a figure, its standard error and its 95 % interval half-width."""
    return name, f"{name}_se", f"{name}_ci95"


def _with_ci(keys: tuple, value, se) -> dict:
    """``{value key: value, SE key: se, interval key: 1.96 se}``, undefined values as None."""
    value, se = _value(value), _value(se)
    return dict(zip(keys, (value, None if value is None else se, None if value is None or se is None else Z95 * se)))


def area_weighted_accuracy(confusion: np.ndarray, map_area_ha: np.ndarray, class_names,
                           interval: str = "agresti-coull") -> dict:
    """:func:`estimates` from the counts of a stratified random sample of points with the map classes as strata
    (Olofsson et al. 2014): ``confusion`` (K, K) rows = reference, columns = map; without finite population
    correction, as in the paper; ``interval`` as in :func:`estimates`."""
    confusion = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if confusion.shape != (k, k):
        raise ValueError(f"confusion must be {k}x{k} for {k} class names; got {confusion.shape}")
    reference, mapped = np.nonzero(confusion)
    counts = confusion[reference, mapped]
    tables = np.zeros((counts.sum(), k, k))
    tables[np.arange(counts.sum()), np.repeat(reference, counts), np.repeat(mapped, counts)] = 1.0
    return estimates(tables, np.repeat(mapped, counts), map_area_ha, map_area_ha, class_names,
                     finite_population=False, interval=interval)


def accuracy_difference(tables_a, tables_b, population_units: int) -> dict:
    """Overall accuracy of two maps a and b on the same cluster sample of units (blocks) and the difference a - b,
    with its standard error and 95 % interval: each accuracy the ratio estimator hits / pixels of the sample (not
    weighted by the map's class areas), the difference's variance that of the difference of their linearized
    values over the units, with the finite population correction 1 - n / ``population_units`` (Stehman 1997;
    Cochran 1977 ch. 6 and 9). ``tables_a``, ``tables_b`` (u, K, K): each unit's pixels by reference class (rows)
    and map class (columns). Undefined values (fewer than two units) are None.

    >>> a = np.array([[[3, 1], [0, 0]], [[2, 0], [0, 2]]])  # block 1: 3 of 4 right; block 2: 4 of 4
    >>> b = np.array([[[2, 2], [0, 0]], [[2, 0], [2, 0]]])  # 2 of 4, 2 of 4
    >>> result = accuracy_difference(a, b, 2)  # every block: no sampling error
    >>> result["overall_accuracy"], result["difference"], result["difference_se"]
    ([0.875, 0.5], 0.375, 0.0)
    """
    strata, population = np.zeros(len(tables_a), np.intp), np.array([float(population_units)])
    accuracies, linearized = [], []
    for tables in (tables_a, tables_b):
        p, linear, _ = proportions(np.asarray(tables, dtype=np.float64), strata, population)
        accuracies.append(float(np.trace(p)))
        linearized.append(np.trace(linear, axis1=1, axis2=2))
    se = float(np.sqrt(design_variance(linearized[0] - linearized[1], strata, population)))
    return {"overall_accuracy": [_value(v) for v in accuracies], "n_units": int(len(tables_a)),
            **_with_ci(("difference", "difference_se", "difference_ci95"), accuracies[0] - accuracies[1], se)}


#: The share of the mapped pixels a reference must label for the test blocks to be a probability sample of the
#: map (below it, the labelled pixels are where someone chose to draw polygons, not a sample of the map).
COMPLETE_REFERENCE = 0.95


def held_out_estimates(counts, labels, split, block, class_names, pixel_area_m2: float, block_size: int) -> dict:
    """:func:`estimates` of the map from the held-out test blocks of Step 0's spatial split, each test pixel
    with its own reference value, the blocks as sampling units (see the module docstring), and what the sample
    is (``sample``). Without a probability sample (a reference labelling less than :data:`COMPLETE_REFERENCE` of
    the mapped pixels) every estimate is None: only the map's areas and the pixel counts are given.

    Parameters
    ----------
    counts : pixel_counts.PixelCounts
        The scene's pixel counts: ``map_pixels``, ``mapped_labelled`` and the test blocks' ``block_tables``.
    labels, split : uint8 arrays (n,): majority reference label and split code of each superpixel
    block : int array (n,): the split block of each superpixel (``split.block_of`` of its centroid)
    pixel_area_m2 : area of a pixel in m²; block_size : side of the split's blocks in pixels
    """
    map_area = class_areas_ha(counts.map_pixels, pixel_area_m2)
    coverage = counts.mapped_labelled / max(int(counts.map_pixels.sum()), 1)
    labelled = labels != UNLABELLED
    tables = counts.block_tables[counts.block_tables.sum(axis=(1, 2)) > 0]  # the blocks with a test pixel
    population = np.unique(block[labelled]).size
    result = estimates(tables, np.zeros(len(tables), np.intp), np.array([population]), map_area, class_names,
                       map_shares=map_area / max(map_area.sum(), 1e-300), interval="wald")
    probability = bool(coverage >= COMPLETE_REFERENCE and len(tables) > 0)
    sample = {"design": "cluster sample: the spatial split's test blocks, drawn in random order among the blocks "
                        "holding labelled superpixels until the test share was reached, taken as a simple random "
                        "sample of blocks without replacement",
              "unit": f"block of {block_size} x {block_size} px (the superpixels whose centroids lie in it)",
              "blocks": int(len(tables)), "population_blocks": int(population), "pixels": int(tables.sum()),
              "test_superpixels": int((labelled & (split == TEST)).sum()), "reference_coverage": round(coverage, 4),
              "probability_sample": probability,
              "variance": "Taylor linearization of the ratio estimators over blocks, finite population correction "
                          "1 - blocks / population_blocks (Stehman 1997; Cochran 1977)",
              "references": [OLOFSSON_2014, STEHMAN_1997, COCHRAN_1977]}
    if len(tables) == population:
        sample["note"] = "every block is held out: a census of the reference, without sampling error"
    if not probability:
        sample["note"] = (f"not a probability sample of the map: the reference labels {coverage:.1%} of the mapped "
                          f"pixels (at least {COMPLETE_REFERENCE:.0%} needed), so areas and accuracies are not "
                          f"estimated; design a validation sample (Step 3 --design-sample), label it, and assess "
                          f"with --validation")
        result = without_estimates(result)
    return {**result, "sample": sample, "pixel_area_m2": float(pixel_area_m2),
            "confusion_matrix_pixels": tables.sum(axis=0).tolist()}


def without_estimates(result: dict) -> dict:
    """``result`` of :func:`estimates` with every estimate, standard error and interval set to None."""
    kept = ("map_area_ha", "total_area_ha", "n_units", "z", "formula")
    blank = {key: (value if key in kept else None) for key, value in result.items() if key != "classes"}
    blank["classes"] = {name: {key: (value if key in kept else None) for key, value in entry.items()}
                        for name, entry in result["classes"].items()}
    blank["confusion_matrix_proportions"] = None
    return blank


def pixel_area(grid: gdal_tif2rgb.Grid, path: Path) -> float:
    """Area of one pixel of ``grid`` in square metres; a missing or geographic CRS is an error."""
    area = gdal_tif2rgb.pixel_area_m2(grid)
    if area is None:
        raise InputDataError(f"{path}: its CRS is {'geographic (degrees)' if grid.crs_wkt else 'missing'}, but "
                             f"area estimates need a projected CRS in metres; reproject the image and the "
                             f"reference (e.g. gdalwarp -t_srs EPSG:32630) and rerun {STEP0}")
    return area
