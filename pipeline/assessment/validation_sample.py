"""A validation sample designed from the map, and its labelled points as input to the area estimators.

The design is stratified random sampling of the map's pixels, the strata the map classes (Olofsson et al. 2014):
the sample size from their eq. 13 for a target standard error of the overall accuracy, at least
``min_per_class`` points per stratum and the rest allocated in proportion to the strata's areas; a point sits
at the centre of its pixel. Every point carries its design (``map_class`` = stratum, ``stratum_area_ha``,
``inclusion_probability``, ``map_run``), so the estimates never depend on a later map. Maps are uint8 class
codes (rows, cols), 255 where unmapped; areas in hectares.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from gdal_tif2rgb import Grid
from pipeline.assessment.area_estimates import SQUARE_METRES_PER_HECTARE
from pipeline.core.errors import InputDataError

#: User's accuracy expected of a class without a held-out estimate (Olofsson et al. 2014 use such guesses).
DEFAULT_USERS_ACCURACY = 0.8
#: The field a labeller fills in, and the design's fields of every point.
REFERENCE_FIELD = "reference"
DESIGN_FIELDS = ("id", "map_class", "stratum_area_ha", "inclusion_probability", "map_run")


def sample_size(map_shares, users_accuracy, target_se: float, population: float) -> int:
    """Olofsson et al. (2014) eq. 13: points needed for a standard error ``target_se`` of the overall accuracy,
    ``n = (sum_i W_i S_i)^2 / (S(O)^2 + sum_i W_i S_i^2 / N)`` with ``S_i = sqrt(U_i (1 - U_i))``.

    >>> sample_size([0.2, 0.8], [0.8, 0.9], 0.01, 1e12)  # (0.2 * 0.4 + 0.8 * 0.3)^2 / 0.0001
    1024
    """
    shares, users = np.asarray(map_shares, float), np.asarray(users_accuracy, float)
    spread = np.sqrt(users * (1 - users))
    return int(math.ceil((shares @ spread) ** 2 / (target_se ** 2 + (shares @ spread ** 2) / population) - 1e-9))


def allocate(total: int, stratum_pixels, min_per_class: int) -> np.ndarray:
    """Points per stratum: ``min_per_class`` each (all pixels of a smaller stratum), the rest of ``total`` in
    proportion to the strata's pixels (largest remainders); no stratum gets more points than pixels.

    >>> allocate(200, [1000, 9000, 30, 0], 50).tolist()
    [57, 113, 30, 0]
    """
    pixels = np.asarray(stratum_pixels, np.int64)
    points = np.minimum(pixels, min_per_class)
    room = pixels - points
    rest = max(int(total) - int(points.sum()), 0)
    while rest > 0 and room.sum() > 0:
        share = rest * room / room.sum()
        extra = np.minimum(np.floor(share).astype(np.int64), room)
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        for i in order[:rest - int(extra.sum())]:
            if extra[i] < room[i]:
                extra[i] += 1
        points, room, rest = points + extra, room - extra, rest - int(extra.sum())
    return points


def draw_pixels(pred_map: np.ndarray, points_per_class, rng: np.random.Generator):
    """Rows, columns and classes of ``points_per_class`` (K,) pixels drawn at random without replacement from
    each class of ``pred_map``; the map is scanned once per class, then one row per point."""
    rows, cols, classes = [], [], []
    for code, n in enumerate(points_per_class):
        if n == 0:
            continue
        per_row = np.cumsum(np.count_nonzero(pred_map == code, axis=1))
        ranks = np.sort(rng.choice(int(per_row[-1]), size=int(n), replace=False))
        at_rows = np.searchsorted(per_row, ranks, side="right")
        for rank, row in zip(ranks, at_rows):
            before = per_row[row - 1] if row > 0 else 0
            cols.append(np.flatnonzero(pred_map[row] == code)[rank - before])
        rows.extend(at_rows)
        classes.extend([code] * int(n))
    return np.array(rows, np.int64), np.array(cols, np.int64), np.array(classes, np.int64)


def design(pred_map: np.ndarray, grid: Grid, class_names, pixel_area_m2: float, users_accuracy, target_se: float,
           min_per_class: int, size: int, map_run: str, rng: np.random.Generator) -> dict:
    """The stratified random sample of the map: ``x``, ``y`` (pixel centres, map CRS), ``fields`` (the design's
    and an empty ``reference``) and ``summary`` (sizes, strata, how they were chosen). ``users_accuracy`` (K,)
    holds the expected user's accuracies (None: :data:`DEFAULT_USERS_ACCURACY`); ``size`` > 0 overrides eq. 13."""
    k = len(class_names)
    pixels = np.bincount(pred_map[pred_map < k], minlength=k)[:k]
    if pixels.sum() == 0:
        raise InputDataError("the map has no mapped pixel to sample")
    expected = np.array([DEFAULT_USERS_ACCURACY if u is None else u for u in users_accuracy], float)
    needed = sample_size(pixels / pixels.sum(), expected, target_se, float(pixels.sum()))
    points = allocate(size or needed, pixels, min_per_class)
    rows, cols, strata = draw_pixels(pred_map, points, rng)
    hectares = pixels * (pixel_area_m2 / SQUARE_METRES_PER_HECTARE)
    x, y = grid.xy(rows, cols)
    fields = {"id": np.arange(1, len(rows) + 1), "map_class": [class_names[c] for c in strata],
              "stratum_area_ha": hectares[strata], "inclusion_probability": (points / np.maximum(pixels, 1))[strata],
              "map_run": [map_run] * len(rows), REFERENCE_FIELD: [""] * len(rows)}
    summary = {"design": "stratified random sample of the map's pixels (points at pixel centres), the strata the "
                         "map classes (Olofsson et al. 2014)",
               "size_rule": f"eq. 13 of Olofsson et al. (2014) for a standard error of {target_se} of the overall "
                            f"accuracy gives {needed}" + (f"; overridden: {size}" if size else ""),
               "allocation": f"at least {min_per_class} per stratum (all pixels of a smaller one), the rest in "
                             f"proportion to the strata's areas",
               "expected_users_accuracy": dict(zip(class_names, expected.round(3).tolist())),
               "points": int(points.sum()), "map_run": map_run,
               "strata": {name: {"area_ha": float(hectares[i]), "points": int(points[i])}
                          for i, name in enumerate(class_names)}}
    return {"x": x, "y": y, "fields": fields, "summary": summary}


def labelled_units(path: Path, x, y, columns: dict, field: str, classes: dict, map_at, map_pixels, grid: Grid,
                   pixel_area_m2: float, map_run: str) -> dict:
    """The labelled points of a designed sample as inputs of ``area_estimates.estimates``: ``tables`` (u, K, K
    one-hot, reference rows, map columns), ``strata``, ``population_units`` (pixels per stratum) and the
    ``sample`` description. The map assessed gives its class codes at pixels by ``map_at(rows, cols)`` (int
    arrays) and its pixels of each class in ``map_pixels`` (K,). Points without a reference are left out and
    counted; a point given twice (the same id, or the same location) is an error."""
    names = list(classes)
    missing = [name for name in ("map_class", "stratum_area_ha", "inclusion_probability", "map_run", field)
               if name not in columns]
    if missing:
        raise InputDataError(f"{path}: no field {', '.join(missing)}: not a sample designed by Step 3 "
                             f"--design-sample (or name the labels' field with --validation-field)")
    _refuse_copies(path, x, y, columns.get("id"))
    strata = _codes(path, columns["map_class"], {name: i for i, name in enumerate(names)}, "map_class")
    references = [None if value is None or str(value).strip() == "" else value for value in columns[field]]
    labelled = np.array([value is not None for value in references])
    lookup = {name.casefold(): i for i, name in enumerate(names)}
    lookup.update({str(value).casefold(): i for i, values in enumerate(classes.values()) for value in values})
    reference = _codes(path, [value for value in references if value is not None], lookup, field)
    population = _stratum_pixels(path, strata, columns["stratum_area_ha"], len(names), pixel_area_m2)
    mapped_pixels = int(np.sum(map_pixels))
    if abs(population.sum() - mapped_pixels) > 0.5:
        raise InputDataError(f"{path}: its strata cover {population.sum() * pixel_area_m2 / 1e4:,.2f} ha, this map "
                             f"{mapped_pixels * pixel_area_m2 / 1e4:,.2f} ha: designed on another map, or the points "
                             f"of a whole stratum were removed")
    mapped = _map_classes(path, x, y, grid, map_at, len(names))
    design_runs = sorted({str(run) for run in columns["map_run"]})
    if len(design_runs) != 1:
        raise InputDataError(f"{path}: points of designs on {len(design_runs)} maps ({', '.join(design_runs)}); "
                             f"assess one design at a time")
    same_map = design_runs[0] == map_run
    if same_map and (mapped != strata).any():
        raise InputDataError(f"{path}: map_class disagrees with this map at {int((mapped != strata).sum())} "
                             f"points, though the file names this map's run {map_run}: the file was edited")
    unlabelled_strata = [names[h] for h in range(len(names)) if population[h] > 0 and not (labelled & (strata == h)).any()]
    if unlabelled_strata:
        raise InputDataError(f"{path}: no labelled point in stratum {', '.join(unlabelled_strata)}; label at least "
                             f"2 points of every stratum")
    k = len(names)
    tables = np.zeros((int(labelled.sum()), k, k))
    tables[np.arange(len(tables)), reference, mapped[labelled]] = 1.0
    sample = {"design": f"stratified random sample of pixels, the strata the map classes of map run {design_runs[0]}"
                        + ("" if same_map else f"; the map assessed is run {map_run}, so the strata are not its "
                                               f"classes (Stehman 2014)"),
              "unit": "pixel (a point at its centre)", "points": int(len(strata)), "labelled": int(labelled.sum()),
              "unlabelled_left_out": int((~labelled).sum()), "probability_sample": True,
              "labelled_per_stratum": dict(zip(names, np.bincount(strata[labelled], minlength=k).tolist())),
              "variance": "stratified estimators linearized, with the finite population correction "
                          "(Olofsson et al. 2014 eqs. 4 to 7" + ("" if same_map else "; Stehman 2014") + "), each "
                          "stratum's spread adjusted as interval_method says"}
    return {"tables": tables, "strata": strata[labelled], "population_units": population, "sample": sample}


def _refuse_copies(path: Path, x, y, ids) -> None:
    """A point pasted twice would count twice in the estimates: points sharing an id (``ids``, None where a
    point has none; None: no id field) or a location (``x``, ``y``) are an error naming them (ids, else
    1-based point numbers), the first five of each."""
    names = [f"point {i + 1}" if ids is None or ids[i] is None else f"id {str(ids[i]).strip()}" for i in range(len(x))]
    times = Counter(name for name in names if name.startswith("id "))
    repeated = [name for name, count in times.items() if count > 1][:5]
    _, place, counts = np.unique(np.column_stack([x, y]), axis=0, return_inverse=True, return_counts=True)
    place = place.ravel()
    groups = ({names[i] for i in np.flatnonzero(place == shared)} for shared in np.flatnonzero(counts > 1))
    stacked = [" and ".join(sorted(group)) for group in groups if len(group) > 1][:5]  # not one id given twice
    found = ([f"{', '.join(repeated)} given more than once"] if repeated else []) + \
        ([f"{'; '.join(stacked)} at one location"] if stacked else [])
    if found:
        raise InputDataError(f"{path}: {'; '.join(found)}: each point counts once in the estimates; delete the "
                             f"copies")


def _codes(path: Path, values, lookup: dict, field: str) -> np.ndarray:
    """Class codes of ``values`` by ``lookup`` (case-insensitive text -> code); unknown values are an error."""
    unknown = sorted({str(v) for v in values if str(v).strip().casefold() not in lookup})
    if unknown:
        raise InputDataError(f"{path}: unknown class {', '.join(map(repr, unknown[:5]))} in field {field}; use "
                             f"the class names or the [classes] values of the scene")
    return np.array([lookup[str(v).strip().casefold()] for v in values], np.int64)


def _stratum_pixels(path: Path, strata, areas, k: int, pixel_area_m2: float) -> np.ndarray:
    """Pixels of every stratum from the points' ``stratum_area_ha``, which must agree within each stratum."""
    try:
        areas = np.array([float(a) for a in areas])
    except (TypeError, ValueError):
        raise InputDataError(f"{path}: stratum_area_ha must be a number on every point") from None
    population = np.zeros(k)
    for h in np.unique(strata):
        values = areas[strata == h]
        if not np.allclose(values, values[0], rtol=1e-9) or not values[0] > 0:
            raise InputDataError(f"{path}: the points of one stratum give different or no stratum areas: "
                                 f"points of several designs")
        population[h] = values[0] * SQUARE_METRES_PER_HECTARE / pixel_area_m2
    return population


def _map_classes(path: Path, x, y, grid: Grid, map_at, k: int) -> np.ndarray:
    """The map's class codes (int64) at points ``x``, ``y`` from ``map_at(rows, cols)``; points off the map, or on
    its unmapped pixels, are an error."""
    rows, cols = grid.rowcol(x, y)
    inside = (rows >= 0) & (rows < grid.rows) & (cols >= 0) & (cols < grid.cols)
    classes = np.full(len(x), k, np.int64)
    classes[inside] = map_at(rows[inside], cols[inside])
    outside = classes >= k
    if outside.any():
        raise InputDataError(f"{path}: {int(outside.sum())} of {len(x)} points lie outside the map (first at x "
                             f"{x[outside][0]:.1f}, y {y[outside][0]:.1f}): a sample of another scene?")
    return classes
