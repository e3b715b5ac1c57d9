"""The sentences and tables of Step 3's report (``report.html``, :mod:`pipeline.assessment.report`): class cells
and legends with the scene's descriptions, confusion and error matrices, area tables with intervals, the sampling
design in words, formulas as HTML, the headline, absent classes, the comparison with an applied model's training
scene, and the Methods paragraph with its parameters and software versions."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.assessment.accuracy import FOREST_FEATURES
from pipeline.assessment.area_estimates import SMALL_STRATUM
from pipeline.core.colours import class_palette
from pipeline.core.grids import Grid
from pipeline.handoffs import contract
from pipeline.run.config import Scene
from pipeline.run.figures import crs_label


#: What made the map (``metrics.json``'s ``classifier``; older metrics: the CNN), as the report names it: short,
#: and in full with its article.
CLASSIFIER_NAMES = {"cnn": ("CNN", "a convolutional neural network"),
                    "forest": ("random forest", "a random forest on superpixel band statistics")}


def classifier_name(metrics: dict | None, full: bool = False) -> str:
    """The map's classifier in words (:data:`CLASSIFIER_NAMES`), short or (``full``) with its article.

    >>> classifier_name({"classifier": "forest"}), classifier_name({}, full=True)
    ('random forest', 'a convolutional neural network')
    """
    return CLASSIFIER_NAMES[(metrics or {}).get("classifier", "cnn")][int(full)]


#: The per-class scores of an assessment: metrics.json key -> the standard term (the tutorial's name).
SCORE_TERMS = {"precision": "user's accuracy (precision)", "recall": "producer's accuracy (recall)",
               "f1": "F1 score", "support": "reference count (support)"}


def class_cell(name: str, descriptions: dict | None = None, tag: str = "th") -> str:
    """A table cell naming a class, with its description (``descriptions``, from the TOML) below the name.

    >>> class_cell("crop", {"crop": "improved pasture"})
    "<th>crop<span class='desc'>improved pasture</span></th>"
    >>> class_cell("water")
    '<th>water</th>'
    """
    text = (descriptions or {}).get(name)
    return f"<{tag}>{html.escape(name)}" + (f"<span class='desc'>{html.escape(text)}</span>" if text else "") + f"</{tag}>"


def class_legend(class_names, descriptions: dict | None = None, colours=None) -> str:
    """An HTML legend: a swatch of each class's colour (the map's palette, or ``colours``) and its name, with
    its description in parentheses where the TOML gives one."""
    colours = class_palette(class_names) if colours is None else colours
    items = []
    for name, colour in zip(class_names, colours):
        text = (descriptions or {}).get(name)
        label = html.escape(name) + (f" ({html.escape(text)})" if text else "")
        items.append(f"<span class='swatch' style='background:rgb{tuple(int(c) for c in colour)}'></span>{label}")
    return "<span class='legend'>" + "".join(items) + "</span>"


def confusion_tables(result: dict, descriptions: dict | None = None) -> str:
    """HTML tables of an assessment's per-class scores in the standard terms (user's and producer's accuracy,
    the tutorial's precision and recall in parentheses) and, folded, its confusion matrix in counts."""
    names = result["class_names"]
    head = "".join(class_cell(n, descriptions) for n in names)
    scores = "".join(f"<tr><th>{SCORE_TERMS[k]}</th>" + "".join(f"<td>{'&ndash;' if v is None else v}</td>"
                                                                for v in result[k]) + "</tr>"
                     for k in SCORE_TERMS)
    rows = "".join(f"<tr>{class_cell(n, descriptions)}" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for n, row in zip(names, result["confusion_matrix"]))
    return (f"<div class='table-wrap'><table><tr><th>class</th>{head}</tr>{scores}</table></div>"
            f"<details><summary>counts (rows: reference class, columns: map class)</summary><div class='table-wrap'>"
            f"<table><tr><th>reference \\ map</th>{head}</tr>{rows}</table></div></details>")


def with_interval(value, half_width, digits: int) -> str:
    """``value ± half_width`` with ``digits`` decimals and thousands separators; a dash where undefined.

    >>> with_interval(21158.4, 6158.04, 1), with_interval(0.88, None, 3), with_interval(None, 1.0, 1)
    ('21,158.4 ± 6,158.0', '0.880', '&ndash;')
    """
    if value is None:
        return "&ndash;"
    return f"{value:,.{digits}f}" + ("" if half_width is None else f" ± {half_width:,.{digits}f}")


def area_table(area: dict, descriptions: dict | None = None, class_names=None) -> str:
    """HTML table of area estimates: per class (in the order of ``class_names``, default that of
    ``area["classes"]``) map area, estimated area, user's and producer's accuracy (each ± its 95 % confidence
    interval), then the overall accuracy."""
    names = [n for n in (class_names or area["classes"]) if n in area["classes"]]
    rows = "".join(
        f"<tr>{class_cell(name, descriptions)}<td>{with_interval(c['map_area_ha'], None, 1)}</td>"
        f"<td>{with_interval(c['estimated_area_ha'], c['area_ci95_ha'], 1)}</td>"
        f"<td>{with_interval(c['users_accuracy'], c['users_accuracy_ci95'], 3)}</td>"
        f"<td>{with_interval(c['producers_accuracy'], c['producers_accuracy_ci95'], 3)}</td></tr>"
        for name, c in ((name, area["classes"][name]) for name in names))
    return (f"<div class='table-wrap'><table class='area'><tr><th>class</th><th>map area (ha)</th>"
            f"<th>estimated area (ha) ± 95 % CI</th><th>user's accuracy ± 95 % CI</th>"
            f"<th>producer's accuracy ± 95 % CI</th></tr>"
            f"{rows}<tr><th>all</th><td>{with_interval(area['total_area_ha'], None, 1)}</td><td></td>"
            f"<td colspan='2'>overall accuracy {with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}"
            f"</td></tr></table></div>")


def error_matrix_table(area: dict, class_names, descriptions: dict | None = None) -> str:
    """HTML error matrix of estimated area proportions (``confusion_matrix_proportions``: rows reference class
    i, columns map class j, in the order of ``class_names`` (the class codes; ``area["classes"]`` is keyed by
    name, in any order), summing to 1), with the row and column totals, each reference class's producer's
    accuracy and each map class's user's accuracy (± 95 % CI) in the margins and the overall accuracy in the
    corner; cells shaded by their proportion. "" where no proportions were estimated."""
    matrix = area.get("confusion_matrix_proportions")
    if matrix is None:
        return ""
    names, p = list(class_names), np.array(matrix, dtype=float)
    classes = area["classes"]
    head = "".join(class_cell(n, descriptions) for n in names)

    def cell(value: float) -> str:
        return f"<td style='background:rgba(43,108,176,{min(value, 1) * 0.9:.2f})'>{value:.4f}</td>"

    rows = "".join(f"<tr>{class_cell(n, descriptions)}" + "".join(cell(v) for v in p[i]) + f"<td>{p[i].sum():.4f}</td>"
                   f"<td>{with_interval(classes[n]['producers_accuracy'], classes[n]['producers_accuracy_ci95'], 3)}"
                   f"</td></tr>" for i, n in enumerate(names))
    totals = "".join(f"<td>{v:.4f}</td>" for v in p.sum(axis=0))
    users = "".join(f"<td>{with_interval(classes[n]['users_accuracy'], classes[n]['users_accuracy_ci95'], 3)}</td>"
                    for n in names)
    return (f"<div class='table-wrap'><table class='error-matrix'><tr><th>reference \\ map</th>{head}<th>total</th>"
            f"<th>producer's accuracy ± 95 % CI</th></tr>{rows}<tr><th>total</th>{totals}<td>{p.sum():.4f}</td>"
            f"<td></td></tr><tr><th>user's accuracy ± 95 % CI</th>{users}<td></td><td>overall accuracy "
            f"{with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}</td></tr></table></div>")


def small_strata_note(sample: dict) -> str:
    """A warning naming every stratum of a stratified sample (``labelled_per_stratum``) with fewer than
    :data:`~pipeline.assessment.area_estimates.SMALL_STRATUM` labelled points, or "" where there is none.

    >>> small_strata_note({"labelled_per_stratum": {"crop": 40, "water": 15}})[:44]
    'Fewer than 30 labelled points in map class w'
    """
    small = {name: n for name, n in sample.get("labelled_per_stratum", {}).items() if n < SMALL_STRATUM}
    if not small:
        return ""
    return (f"Fewer than {SMALL_STRATUM} labelled points in map class "
            + ", ".join(f"{name} ({n})" for name, n in small.items())
            + ": the normal approximation is poor there, the intervals of every figure depending on these strata "
              "rest on the adjustment below and are wide; label more points of these classes for narrower ones")


def prose(text: str) -> str:
    """``metrics.json``'s plain-text formulas as a reader would write them: ± and −, no key names.

    >>> prose("estimate +- 1.96 SE; correction 1 - blocks / population_blocks")
    'estimate ± 1.96 SE; correction 1 − n / N (n test blocks of the N blocks holding labelled superpixels)'
    """
    return (text.replace("+-", "±").replace("z^2/2", "z²/2").replace("as interval_method says", "as under Intervals")
            .replace("1 - blocks / population_blocks",
                     "1 − n / N (n test blocks of the N blocks holding labelled superpixels)"))


def is_designed(sample: dict) -> bool:
    """Whether ``sample`` (an estimate's ``sample``) is a designed validation sample of points, rather than
    the spatial split's test blocks."""
    return "points" in sample


def sample_text(sample: dict) -> str:
    """The sample of an area estimate in plain words (no raw keys or values such as "probability sample True").

    >>> sample_text({"blocks": 10, "population_blocks": 33, "pixels": 34541, "test_superpixels": 421,
    ...              "reference_coverage": 1.0, "probability_sample": True}).split("; ")[0]
    '10 test blocks out of the 33 blocks holding labelled superpixels, with 34,541 labelled reference pixels in 421 test superpixels'
    >>> sample_text({"points": 80, "labelled": 78, "unlabelled_left_out": 2,
    ...              "labelled_per_stratum": {"urban": 40, "water": 38}})
    '80 points, 78 of them labelled (2 without a reference label left out); labelled points per map class: urban 40, water 38'
    """
    if is_designed(sample):
        text = f"{sample['points']:,} points, {sample['labelled']:,} of them labelled"
        if sample.get("unlabelled_left_out"):
            text += f" ({sample['unlabelled_left_out']:,} without a reference label left out)"
        per_stratum = sample.get("labelled_per_stratum", {})
        if per_stratum:
            text += "; labelled points per map class: " + ", ".join(f"{k} {v}" for k, v in per_stratum.items())
        return text
    text = (f"{sample['blocks']:,} test blocks out of the {sample['population_blocks']:,} blocks holding labelled "
            f"superpixels, with {sample['pixels']:,} labelled reference pixels in {sample['test_superpixels']:,} "
            f"test superpixels; the reference labels {sample['reference_coverage']:.0%} of the mapped pixels")
    return text + ("" if sample.get("probability_sample") else ", too little for a probability sample of the map")


def formulas_html(designed: bool) -> str:
    """The estimators as readable HTML (sub- and superscripts, Σ), for a designed stratified sample
    (``designed``) or the post-stratified test blocks."""
    p = "<var>p̂</var>"
    proportion = (f"{p}<sub>ij</sub> = <var>T</var><sub>ij</sub> / <var>T</var>, with <var>T</var> = "
                  f"Σ<sub>ij</sub> <var>T</var><sub>ij</sub> (Stehman 2014)" if designed else
                  f"{p}<sub>ij</sub> = <var>W</var><sub>j</sub> <var>T</var><sub>ij</sub> / <var>T</var><sub>·j</sub>, "
                  f"with <var>W</var><sub>j</sub> the share of the map in class <var>j</var> (post-stratified on "
                  f"the map)")
    items = [
        f"<var>y</var><sub>u,ij</sub>: the pixels (or points) of sampling unit <var>u</var> with reference class "
        f"<var>i</var> and map class <var>j</var>; strata <var>h</var> of <var>N</var><sub>h</sub> units, "
        f"<var>n</var><sub>h</sub> of them sampled, each with weight <var>w</var><sub>u</sub> = "
        f"<var>N</var><sub>h</sub> / <var>n</var><sub>h</sub>; <var>T</var><sub>ij</sub> = Σ<sub>u</sub> "
        f"<var>w</var><sub>u</sub> <var>y</var><sub>u,ij</sub>",
        f"area proportions: {proportion}",
        f"area of class <var>i</var>: <var>Â</var><sub>i</sub> = <var>A</var> Σ<sub>j</sub> {p}<sub>ij</sub>, "
        f"<var>A</var> the mapped area",
        f"user's accuracy of map class <var>j</var>: <var>Û</var><sub>j</sub> = {p}<sub>jj</sub> / "
        f"{p}<sub>·j</sub>; producer's accuracy of reference class <var>i</var>: <var>P̂</var><sub>i</sub> = "
        f"{p}<sub>ii</sub> / {p}<sub>i·</sub>; overall accuracy: <var>Ô</var> = Σ<sub>i</sub> {p}<sub>ii</sub>",
        f"variance: <var>V̂</var> = Σ<sub>h</sub> (1 − <var>n</var><sub>h</sub> / <var>N</var><sub>h</sub>) "
        f"<var>n</var><sub>h</sub> / (<var>n</var><sub>h</sub> − 1) Σ<sub>u∈h</sub> (<var>w</var><sub>u</sub> "
        f"<var>z</var><sub>u</sub> − <var>w</var><var>z̄</var><sub>h</sub>)<sup>2</sup>, <var>z</var><sub>u</sub> "
        f"the linearized value of unit <var>u</var>",
        "95 % confidence interval: estimate ± 1.96 √<var>V̂</var>",
    ]
    return "<ul class='formulas'>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def design_sentence(area: dict) -> str:
    """One sentence naming the sampling design behind the estimates ``area`` (HTML-escaped)."""
    sample = area["sample"]
    if is_designed(sample):
        other_map = ("; the sample was drawn on another map run than the one assessed, so its strata are not this "
                     "map's classes (Stehman 2014)" if "strata are not its classes" in sample["design"] else "")
        return (f"These estimates come from a validation sample designed for it: a stratified random sample of "
                f"{sample['points']:,} pixels with the map classes as strata (a point at each pixel's centre), "
                f"{sample['labelled']:,} of them labelled independently of the map, with the stratified estimators "
                f"of Olofsson et al. (2014){other_map}.")
    side = html.escape(sample["unit"].split(" (")[0].removeprefix("block of ").replace(" x ", " × "))
    return (f"These estimates come from the spatial split's held-out test blocks, a cluster sample of "
            f"{sample['blocks']:,} blocks of {side} (each block a sampling unit, every labelled pixel in it compared "
            f"with the map), drawn in random order among the {sample['population_blocks']:,} blocks holding labelled "
            f"superpixels until the test share was reached and so taken as a simple random sample of blocks without "
            f"replacement (Stehman 1997; Olofsson et al. 2014).")


def headline_text(metrics: dict) -> str:
    """The assessment's headline in words: the pixel-level, area-weighted overall accuracy with its 95 %
    interval and its sample (a labelled validation sample before the held-out test blocks), or, without a
    probability sample, why there is none."""
    if "validation_sample" in metrics:
        area = metrics["validation_sample"]
        return (f"overall accuracy {with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)} "
                f"(pixel-level, area-weighted, 95 % CI; validation sample of {area['sample']['labelled']} "
                f"labelled points)")
    area = metrics["area_estimates"]
    if area["overall_accuracy"] is None:
        return (f"no area-weighted accuracy (the reference is no probability sample of the map); overall "
                f"accuracy of the test superpixels {metrics['assessments']['superpixel_test']['overall_accuracy']}")
    return (f"overall accuracy {with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)} "
            f"(pixel-level, area-weighted, 95 % CI; {area['sample']['blocks']} test blocks of a cluster sample)")


def forest_text(metrics: dict) -> str:
    """Whether the CNN beats the random forest baseline (``metrics["cnn_minus_forest"]``), in words with both
    overall accuracies and their difference at pixel and superpixel level; empty without the baseline.

    >>> level = {"overall_accuracy": [0.9, 0.8], "difference": 0.1, "difference_ci95": 0.05, "n_units": 3}
    >>> forest_text({"cnn_minus_forest": {"verdict": "the CNN beats the random forest", "pixel_test": level,
    ...                                   "superpixel_test": level}}).split(";")[0]
    'CNN against its strongest simple peer: the CNN beats the random forest. Held-out overall accuracy at pixel level: CNN 0.900, random forest 0.800, CNN minus forest +10.0 ± 5.0 points (95 % CI over 3 test blocks)'
    """
    comparison = metrics.get("cnn_minus_forest")
    if comparison is None:
        return ""

    def level(name: str, c: dict) -> str:
        d, half = c["difference"], c["difference_ci95"]
        points = "undefined" if d is None else f"{100 * d:+.1f}" + ("" if half is None else f" ± {100 * half:.1f}")
        cnn, forest = (f"{value:.3f}" for value in c["overall_accuracy"])
        return (f"{name} level: CNN {cnn}, random forest {forest}, CNN minus "
                f"forest {points} points (95 % CI over {c['n_units']} test blocks)")

    return (f"CNN against its strongest simple peer: {comparison['verdict']}. Held-out overall accuracy at "
            f"{level('pixel', comparison['pixel_test'])}; at {level('superpixel', comparison['superpixel_test'])}. "
            f"The random forest (300 trees) sees {FOREST_FEATURES} and was trained on the CNN's training superpixels.")


def absent_text(metrics: dict) -> str:
    """The classes the reference holds but the map or the test set lacks (``metrics["absent_classes"]``), in
    words; empty when there are none.

    >>> absent_text({"absent_classes": {"map": [], "test_set": ["urban", "water"]}})
    'Not in the test set: urban, water (no accuracy measured).'
    """
    absent, parts = metrics["absent_classes"], []
    if absent["map"]:
        parts.append(f"Not in the map: {', '.join(absent['map'])} (0 ha, although the reference holds it; the "
                     f"overall accuracy does not show this).")
    if absent["test_set"]:
        parts.append(f"Not in the test set: {', '.join(absent['test_set'])} (no accuracy measured).")
    return " ".join(parts)


def scene_comparison(comparison: dict | None) -> str:
    """A paragraph of Step 2's comparison of the scene with an applied model's training scene
    (``metrics.json``'s ``applied_model``): a warning and its reasons when the scene looks unlike it; nothing
    for a model trained here or a map made before the comparison was."""
    if comparison is None:
        return ""
    training = html.escape(str(comparison["model_scene"]))
    if comparison["shift_warning"]:
        reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in comparison["reasons"])
        return (f"<div id='shift-warning' style='border:3px solid #c00;padding:.5em;background:#fee'><b>Warning: "
                f"this scene looks unlike the model's training scene {training}</b>, so the map may be wrong however "
                f"sure the model is (the uncertainty is its doubt among its classes, not whether they fit this "
                f"scene):<ul>{reasons}</ul></div>")
    layers = comparison["layers"]
    compared = ("layers not compared (" + comparison["layers_unavailable"] + ")" if layers is None else
                f"largest layer shift {max(v['shift'] for v in layers.values()):.2f} (warning above "
                f"{comparison['thresholds']['layer_shift']}), largest share outside the training stretch "
                f"{max(v['outside_share'] for v in layers.values()):.0%} (above "
                f"{comparison['thresholds']['outside_share']:.0%})")
    return (f"<p id='scene-comparison'>Compared with the model's training scene {training}: {html.escape(compared)}; "
            f"class shares apart by {comparison['class_share_distance']:.2f} (above "
            f"{comparison['thresholds']['class_share_distance']}): no sign that it is unlike.</p>")


def run_record(scene: Scene) -> dict:
    """The work folder's ``run.json`` (what Steps 0-2 ran with: parameters, package versions), or {} where it
    is missing or unreadable."""
    try:
        return json.loads(scene.output("run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def scene_grid(scene: Scene) -> Grid | None:
    """The work grid (of Step 0's ``layers.tif``), or None where it cannot be read."""
    try:
        return gdal_tif2rgb.read_layout(contract.LAYERS.path(scene.workdir))[0]
    except (OSError, ValueError, RuntimeError):
        return None


def grid_text(grid: Grid | None) -> str:
    """The grid in words: size in pixels and kilometres, pixel size, CRS.

    >>> grid_text(Grid(339, 324, (0.0, 10.0, 0.0, 0.0, 0.0, -10.0), ""))
    '324 × 339 pixels of 10 m, 3.24 × 3.39 km'
    """
    if grid is None:
        return ""
    xmin, ymin, xmax, ymax = grid.bounds
    crs = crs_label(grid.crs_wkt)
    return (f"{grid.cols:,} × {grid.rows:,} pixels of {abs(grid.geotransform[1]):g} m, "
            f"{(xmax - xmin) / 1000:.3g} × {(ymax - ymin) / 1000:.3g} km{', in ' + crs if crs else ''}")


def step_parameters(record: dict, step: str, scene: Scene) -> dict:
    """The parameters ``step`` ran with, from ``run.json``'s ``record``, else the scene's."""
    return record.get("steps", {}).get(step, {}).get("parameters") or scene.params.as_dict()


def step2_channels(record: dict, p2: dict) -> list:
    """The channels Step 2's CNN saw, from ``run.json``'s ``record`` ("all" spelled out), else its parameters ``p2``."""
    return record.get("steps", {}).get("Step2_Model_Training", {}).get("channels") or list(p2["train_layers"])


def names_text(names) -> str:
    """Names joined in prose.

    >>> names_text(["red", "green", "blue"]), names_text(["nir"])
    ('red, green and blue', 'nir')
    """
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def cnn_training_text(record: dict, p1: dict, p2: dict, versions: dict) -> str:
    """The Methods sentence on the CNN's training, from ``run.json`` (``record``), Steps 1 and 2's parameters and
    the software ``versions``."""
    e = html.escape
    keras = f", Keras {e(versions['keras'])}" if "keras" in versions else ""
    tensorflow = versions.get("tensorflow-cpu") or versions.get("tensorflow", "?")
    several = p2.get("ensemble", 1) > 1
    return (
        f"From the training superpixels, {p1['per_class']:,} patches per class were drawn (with replacement "
        f"where a class had fewer), {p2['validation_fraction']:.0%} of their superpixels kept for validation; "
        + (f"{p2['ensemble']} CNNs (with successive training seeds; the map averages their class probabilities)"
           if several else "a CNN")
        + f" (TensorFlow {e(tensorflow)}{keras}) {'were' if several else 'was'} trained on {p2['patch_width']} × "
        f"{p2['patch_width']} pixel patches of the layers {e(names_text(step2_channels(record, p2)))} for "
        f"{p2['epochs']} epochs with batch size {p2['batch_size']}"
        + (", each epoch's patches centred on pixels drawn at random in their superpixels"
           if p2.get("random_patch_centres") else ", the patches centred on the superpixels' centroids")
        + (", turned and mirrored at random" if p2.get("augment") else "")
        + (", and its class probabilities were reweighted by the classes' shares among the training "
           "superpixels" if p2.get("prior_correction") else "") + ".")


def methods_text(scene: Scene, metrics: dict, grid: Grid | None) -> str:
    """A Methods paragraph (HTML) stating what was done, with which parameters and software versions, from
    ``run.json`` and ``metrics``; for the author to adapt."""
    record = run_record(scene)
    steps = record.get("steps", {})
    p0 = step_parameters(record, "Step0_Data_Preparation", scene)
    p1 = step_parameters(record, "Step1_Class_Balance", scene)
    p2 = step_parameters(record, "Step2_Model_Training", scene)
    versions = record.get("packages", {})
    superpixels = steps.get("Step0_Data_Preparation", {}).get("superpixels")
    e = html.escape
    sentences = [
        f"The land-cover map of {e(scene.display_title)} was made from the Sentinel-2 image "
        f"{e(Path(str(scene.image)).name)}" + (f" on a grid of {e(grid_text(grid))}" if grid else "") +
        ", following the object-based workflow of the KTH tutorial (SLIC superpixels and "
        + ("a random forest in place of its patch CNN)." if metrics.get("classifier") == "forest" else "a patch CNN)."),
        f"The image was segmented with SLIC (scikit-image {e(versions.get('scikit-image', '?'))}) on its "
        f"{e(names_text(p0['slic_layers']))} layers converted to CIELAB, with n_segments = {p0['n_segments']:,} "
        f"and compactness = {p0['compactness']:g}" + (f", giving {superpixels:,} superpixels" if superpixels else "")
        + f"; each superpixel took the majority class of the reference {e(Path(str(scene.reference)).name)} "
          f"({e(names_text([scene.class_label(n) for n in scene.class_names]))}).",
        f"Labelled superpixels were split spatially in blocks of {p0['block_size']} × {p0['block_size']} pixels, "
        f"about {p0['test_fraction']:.0%} of them held out for testing; superpixels whose {p0['patch_width']} × "
        f"{p0['patch_width']} pixel patch reached into a test block were left unused.",
    ]
    if metrics.get("applied_model_note"):
        sentences.append(e(metrics["applied_model_note"]))
    elif metrics.get("classifier") == "forest":
        sentences.append(
            f"A random forest (scikit-learn, 300 trees) was trained on each distinct training superpixel of a "
            f"balanced set of {p1['per_class']:,} draws per class, once each, on {e(FOREST_FEATURES)}; its class "
            f"probabilities, the shares of the trees' votes, were not reweighted.")
    else:
        sentences.append(cnn_training_text(record, p1, p2, versions))
    headline = metrics.get("validation_sample") or metrics["area_estimates"]
    if headline["overall_accuracy"] is not None:
        sentences.append(
            ("Accuracy and class areas were estimated from a stratified random validation sample of "
             f"{headline['sample']['labelled']:,} labelled points" if is_designed(headline["sample"]) else
             "Accuracy and class areas were estimated from the held-out test blocks as a cluster sample of "
             f"{headline['sample']['blocks']:,} blocks") +
            f", giving an overall accuracy of {with_interval(headline['overall_accuracy'], headline['overall_accuracy_ci95'], 3)} "
            f"(95 % confidence interval), with user's and producer's accuracies and class areas by the estimators "
            f"of Olofsson et al. (2014).")
    sentences.append(f"The random seeds were {p0['split_seed']} for the split and {p1['training_seed']} for the "
                     f"balanced set and the training. Software: Python {e(versions.get('python', '?'))}, GDAL "
                     f"{e(versions.get('GDAL', '?'))}, NumPy {e(versions.get('numpy', '?'))}, scikit-learn "
                     f"{e(versions.get('scikit-learn', '?'))}.")
    return "<blockquote class='methods' id='methods'><p>" + " ".join(sentences) + "</p></blockquote>"
