"""Step 3's pages: ``report.html``, one self-contained file (every image inside it as a data URI, no link to a
file or a path), of the accuracy assessment or, for a scene without a reference, of the map alone; and the
same figures as lines of text for the log.

The page is written to be cited from: the scene's title, one headline accuracy marked as the one to cite (its
sampling design named in a sentence, its error matrix in area proportions with user's and producer's accuracy
and 95 % intervals), the map with coordinates and a scale bar, a Methods paragraph to adapt (parameters and
software versions from ``run.json``), then the other assessments under plain headings as diagnostics. Every
image sits in a numbered ``<figure>`` with a caption saying what it shows; class descriptions from the TOML's
``[descriptions]`` appear in legends and tables.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.core.atomic_files import atomic_output
from pipeline.core.colours import class_palette
from pipeline.core.grids import Grid
from pipeline.assessment.accuracy import AXES_NOTE
from pipeline.assessment.accuracy_figures import (AGREEMENT_CATEGORIES, AGREEMENT_COLOURS, ASSESSMENT_TITLES,
                                                  SPLIT_MAP_CATEGORIES, SPLIT_MAP_COLOURS, assessment_title)
from pipeline.assessment.area_estimates import SMALL_STRATUM
from pipeline.handoffs import contract
from pipeline.run.config import Scene
from pipeline.run.figures import crs_label
from pipeline.run.outputs import OutputSet

#: What each assessment measures, in a sentence for its figure's caption.
ASSESSMENT_NOTES = {
    "superpixel_test": "Each held-out test superpixel's predicted class against its majority reference label. It "
                       "counts superpixels, not area: a small superpixel weighs as much as a large one.",
    "superpixel_all_labelled": "The same over every labelled superpixel, the training ones included, as the "
                               "tutorial reports it; optimistic, since the model has seen most of them.",
    "pixel_test": "The map against the reference raster on every labelled pixel of the test superpixels: pixel "
                  "level, but not weighted by the map's class areas as the headline is.",
    "segmentation_ceiling": "Every superpixel given its majority reference label, against the reference raster on "
                            "the same pixels: the best any classifier of whole superpixels could reach with this "
                            "segmentation (an upper bound, not the map's accuracy).",
    "random_forest_superpixel_test": "A random forest on each superpixel's mean of the 8 layers, trained on the "
                                     "CNN's balanced set and scored on the test superpixels: whether the CNN earns "
                                     "its cost.",
}
#: The per-class scores of an assessment: metrics.json key -> the standard term (the tutorial's name).
SCORE_TERMS = {"precision": "user's accuracy (precision)", "recall": "producer's accuracy (recall)",
               "f1": "F1 score", "support": "reference count (support)"}
STYLE = """body{font-family:Georgia,'DejaVu Serif',serif;max-width:1100px;margin:auto;padding:0 1em 2em;
line-height:1.45;color:#222} h1{margin-bottom:.1em} .subtitle{margin-top:0;color:#555}
h2{border-bottom:1px solid #ccc;padding-bottom:.15em;margin-top:1.6em} h3{margin-bottom:.3em}
img{max-width:100%;height:auto} figure{margin:1em 0;max-width:100%} figcaption{font-size:.92em;color:#333;
margin-top:.3em} .map img{max-width:760px;width:100%} .row{display:flex;flex-wrap:wrap;gap:.5em}
.row img{flex:1 1 30%;min-width:0;max-width:calc(33% - .4em)} .table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.3em 0;font-family:sans-serif;font-size:.85em}
td,th{border:1px solid #bbb;padding:2px 6px;text-align:right;vertical-align:top} th{background:#f4f4f4}
th .desc{display:block;font-weight:normal;font-style:italic;color:#555;font-size:.9em}
.cite{border:2px solid #2b6cb0;border-radius:4px;padding:.5em .8em;background:#f5f9ff}
.cite-mark{display:inline-block;background:#2b6cb0;color:#fff;border-radius:3px;padding:0 .4em;font-size:.85em;
font-family:sans-serif} .diagnostics{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));
gap:0 1.5em} .diagnostics>section{min-width:0} .note{color:#8a3b00} .swatch{display:inline-block;width:.9em;
height:.9em;border:1px solid #777;vertical-align:-.1em;margin:0 .25em 0 .6em}
.formulas{list-style:none;padding-left:1em} .formulas li{margin:.25em 0} var{font-style:italic}
.methods{border-left:4px solid #999;margin:0;padding:.2em 1em;background:#fafafa}
details{font-size:.92em} @media (max-width:700px){.row img{max-width:100%;flex-basis:100%}}"""


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI, so the report carries it inside."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image_tag(path: Path, alt: str) -> str:
    """An <img> holding the PNG at ``path`` (titled by its file name), or a note where the file is missing."""
    if not Path(path).is_file():
        return f"<p>({html.escape(Path(path).name)} not found)</p>"
    return f"<img src='{data_uri(path)}' alt='{html.escape(alt)}' title='{html.escape(Path(path).name)}'>"


class Numbering:
    """Numbers the report's figures (images and tables alike) in the order they are written."""

    def __init__(self):
        self.count = 0

    def figure(self, content: str, caption: str, *, cite: bool = False, ident: str = "", kind: str = "") -> str:
        """``content`` in a ``<figure>`` whose ``<figcaption>`` starts "Figure N." (marked "cite this" when
        ``cite``), then ``caption`` (HTML)."""
        self.count += 1
        mark = " <span class='cite-mark'>cite this</span>" if cite else ""
        attributes = (f" id='{ident}'" if ident else "") + (f" class='{kind}'" if kind else "")
        return (f"<figure{attributes}>{content}<figcaption><b>Figure {self.count}.</b>{mark} {caption}"
                f"</figcaption></figure>")


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


def area_section(area: dict, title: str, numbering: Numbering, class_names, descriptions: dict | None = None, *,
                 cite: bool = False, heading: str = "h3") -> str:
    """A report section of area estimates ``area``: the error matrix in area proportions and the table of
    areas and accuracies (each a numbered figure, marked "cite this" when ``cite``), the sample in words, how
    its intervals are made (and which strata are small), the formulas, the references."""
    sample = area["sample"]
    small = small_strata_note(sample)
    matrix = error_matrix_table(area, class_names, descriptions)
    which = "validation sample" if is_designed(sample) else "held-out test blocks"
    parts = [f"<{heading}>{html.escape(title)}</{heading}>"]
    if matrix:
        parts.append(numbering.figure(matrix, (
            f"Error matrix of the map from the {which}, in estimated proportions of the mapped area (rows: reference "
            f"class; columns: map class; all cells sum to 1), with the producer's accuracy of each reference class, "
            f"the user's accuracy of each map class and the overall accuracy, each ± its 95 % confidence interval."),
            cite=cite, ident="headline-figure" if cite else "", kind="cite" if cite else ""))
    parts.append(numbering.figure(area_table(area, descriptions, class_names), (
        f"{html.escape(title)}: the area of each class in the map and as estimated from the {which}, with user's and "
        f"producer's accuracy (± 95 % confidence interval); the last row gives the mapped area and the overall "
        f"accuracy.")))
    parts.append(f"<p><b>Sample</b>: {html.escape(sample_text(sample))}.</p>")
    if sample.get("note"):
        parts.append(f"<p class='note'><b>{html.escape(sample['note'][:1].upper() + sample['note'][1:])}.</b></p>")
    if small:
        parts.append(f"<p class='small-strata note'><b>{html.escape(small)}</b>.</p>")
    parts.append(f"<p><b>Intervals</b>: {html.escape(prose(area['interval_method'] or 'none'))}.</p>")
    parts.append(f"<p><b>Variance</b>: {html.escape(prose(sample['variance']))}.</p>")
    parts.append(f"<details><summary>Formulas</summary>{formulas_html(is_designed(sample))}</details>")
    parts.append("<p class='references'>" + "<br>".join(html.escape(r) for r in sample["references"]) + "</p>")
    return "".join(parts)


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


def names_text(names) -> str:
    """Names joined in prose.

    >>> names_text(["red", "green", "blue"]), names_text(["nir"])
    ('red, green and blue', 'nir')
    """
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
        f", following the object-based workflow of the KTH tutorial (SLIC superpixels and a patch CNN).",
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
    else:
        keras = f", Keras {e(versions['keras'])}" if "keras" in versions else ""
        tensorflow = versions.get("tensorflow-cpu") or versions.get("tensorflow", "?")
        sentences.append(
            f"From the training superpixels, {p1['per_class']:,} patches per class were drawn (with replacement "
            f"where a class had fewer), {p2['validation_fraction']:.0%} of their superpixels kept for validation; a "
            f"CNN (TensorFlow {e(tensorflow)}{keras}) was trained on {p2['patch_width']} × {p2['patch_width']} "
            f"pixel patches of the layers {e(names_text(p2['train_layers']))} for {p2['epochs']} epochs with batch "
            f"size {p2['batch_size']}" + (", the patches turned and mirrored at random" if p2.get("augment") else "")
            + (", and its class probabilities were reweighted by the classes' shares among the training "
               "superpixels" if p2.get("prior_correction") else "") + ".")
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
    sentences.append(f"The random seed was {p0['seed']}. Software: Python {e(versions.get('python', '?'))}, GDAL "
                     f"{e(versions.get('GDAL', '?'))}, NumPy {e(versions.get('numpy', '?'))}, scikit-learn "
                     f"{e(versions.get('scikit-learn', '?'))}.")
    return "<blockquote class='methods' id='methods'><p>" + " ".join(sentences) + "</p></blockquote>"


def map_figures(scene: Scene, numbering: Numbering, grid: Grid | None) -> str:
    """The map and its uncertainty (Step 2's previews, in map coordinates), each a numbered figure."""
    k = len(scene.class_names)
    where = f" ({html.escape(grid_text(grid))})" if grid else ""
    legend = class_legend(scene.class_names, scene.descriptions)
    return (numbering.figure(image_tag(scene.output("predMap.png"), "predicted land cover"), (
        f"Land-cover map of {html.escape(scene.display_title)}, one class per superpixel as the CNN predicted "
        f"it{where}; easting and northing in km, with a scale bar. Classes: {legend}."), kind="map")
        + numbering.figure(image_tag(scene.output("uncertainty.png"), "uncertainty"), (
            f"Uncertainty of the predicted class per superpixel: 1 − the largest class probability, from 0 "
            f"(certain) to 1 − 1/{k} = {1 - 1 / k:.2f} (all {k} classes equally likely). It is the model's doubt "
            f"among its classes, not whether they fit the scene."), kind="map"))


def headline_estimates(metrics: dict) -> dict | None:
    """The area estimates to cite: the validation sample's where there is one, else the held-out test blocks'
    where they are a probability sample of the map; None where neither is."""
    area = metrics["area_estimates"]
    return metrics.get("validation_sample") or (area if area["overall_accuracy"] is not None else None)


def cite_section(scene: Scene, out: OutputSet, metrics: dict, numbering: Numbering) -> str:
    """The report's "Accuracy to cite": the headline in words, its design in a sentence, and the figure marked
    "cite this" (the headline estimates' error matrix in area proportions; without a probability sample, the
    test superpixels' confusion matrix)."""
    area, headline_area, absent = metrics["area_estimates"], headline_estimates(metrics), absent_text(metrics)
    cite = (f"<section id='cite-this'><h2>Accuracy to cite</h2>"
            f"<p>Headline: <b id=\"headline\">{html.escape(headline_text(metrics))}</b>.</p>"
            + (f"<p><b id=\"absent\" class=\"note\">{html.escape(absent)}</b></p>" if absent else ""))
    if headline_area is not None:
        title = ("Class areas and accuracy from the validation sample" if "validation_sample" in metrics else
                 "Class areas and area-weighted accuracy (held-out test blocks)")
        return cite + (f"<p>{design_sentence(headline_area)} Cite the figures marked <span class='cite-mark'>cite "
                       f"this</span>; the other assessments below are diagnostics.</p>"
                       + area_section(headline_area, title, numbering, scene.class_names, scene.descriptions,
                                      cite=True) + "</section>")
    result = metrics["assessments"]["superpixel_test"]
    note = area["sample"].get("note", "")
    return cite + (f"<p class='note'>{html.escape(note[:1].upper() + note[1:])}.</p><p>Until then, the accuracy to "
                   f"report is that of the test superpixels, superpixels of the held-out blocks of the spatial split "
                   f"compared with their majority reference label; it is not weighted by area and holds only for "
                   f"the labelled areas.</p>"
                   + numbering.figure(image_tag(out.path("confusion_superpixel_test.png"), "confusion matrix")
                                      + confusion_tables(result, scene.descriptions),
                                      assessment_caption("superpixel_test", result), cite=True,
                                      ident="headline-figure", kind="cite") + "</section>")


def map_section(scene: Scene, out: OutputSet, numbering: Numbering, grid: Grid | None) -> str:
    """The report's "The map": the map and its uncertainty, the image and its superpixels, the reference
    beside the map."""
    composites = "".join(image_tag(scene.output(name), alt) for name, alt in (
        ("rgb.png", "true-colour composite"), ("nir_green_blue.png", "false-colour composite"),
        ("segments_boundaries.png", "superpixel boundaries")))
    superpixels = run_record(scene).get("steps", {}).get("Step0_Data_Preparation", {}).get("superpixels")
    return (
        "<h2>The map</h2>" + map_figures(scene, numbering, grid)
        + numbering.figure(f"<div class='row'>{composites}</div>", (
            "The image and its superpixels: left, true-colour composite (red, green, blue); middle, false-colour "
            "composite (near infrared, green, blue: vegetation in red); right, the SLIC superpixel boundaries in "
            "yellow over the true-colour composite" + (f" ({superpixels:,} superpixels)" if superpixels else "")
            + "."))
        + numbering.figure(image_tag(out.path("reference_maps.png"), "reference and predicted maps"), (
            f"The reference beside the map: left, the reference per pixel (blank: no reference label); middle, the "
            f"reference as each superpixel's majority class, the labels the CNN was trained and tested on; right, the "
            f"CNN's map. Classes: {class_legend(scene.class_names, scene.descriptions)}.")))


def diagnostics_section(scene: Scene, out: OutputSet, metrics: dict, numbering: Numbering) -> str:
    """The report's diagnostics, each under a plain heading: the held-out test blocks' estimates (when a
    validation sample is the headline), the disagreement and split maps, the learning curve, and every
    assessment's confusion matrix and scores."""
    descriptions = scene.descriptions
    wide = ("<section class='wide'>" + area_section(
        metrics["area_estimates"], "Class areas and area-weighted accuracy (held-out test blocks)", numbering,
        scene.class_names, descriptions) + "</section>") if "validation_sample" in metrics else ""
    split_legend = class_legend(list(SPLIT_MAP_CATEGORIES.values()), None, SPLIT_MAP_COLOURS)
    side = scene.params.block_size
    diagnostics = [
        diagnostic("Where the map disagrees with the reference", numbering.figure(
            image_tag(out.path("disagreement_map.png"), "disagreement map"), (
                f"Every labelled pixel of the reference, training areas included: "
                f"{class_legend(AGREEMENT_CATEGORIES, None, AGREEMENT_COLOURS)}. Not an accuracy estimate (most "
                f"labelled pixels trained the model); it shows where errors cluster."))),
        diagnostic("Training and test areas (spatial split)", numbering.figure(
            image_tag(out.path("split_map.png"), "spatial split"), (
                f"Superpixels by their part in the split: {split_legend}. Test superpixels lie in held-out blocks "
                f"of {side} × {side} pixels, away from the training ones, so the test figures are not inflated by "
                f"neighbours seen in training."))),
    ]
    if scene.output("learning_curve.png").is_file():
        diagnostics.append(diagnostic("Training curve", numbering.figure(
            image_tag(scene.output("learning_curve.png"), "learning curve"), (
                "The CNN's accuracy and loss per epoch on the training patches and on the validation patches (held "
                "out of the balanced set); validation falling behind training means overfitting."))))
    order = [*(name for name in ASSESSMENT_TITLES if name in metrics["assessments"]),
             *(name for name in metrics["assessments"] if name not in ASSESSMENT_TITLES)]
    if headline_estimates(metrics) is None:  # the test superpixels' matrix is the headline
        order.remove("superpixel_test")
    for name, result in ((name, metrics["assessments"][name]) for name in order):
        diagnostics.append(diagnostic(assessment_title(name), numbering.figure(
            image_tag(out.path(f"confusion_{name}.png"), "confusion matrix") + confusion_tables(result, descriptions),
            assessment_caption(name, result))))
    return (f"<h2>Diagnostics</h2><p>These help judge the map and the model. They are not the map's accuracy: cite "
            f"the figures marked <span class='cite-mark'>cite this</span> above. In the tables, user's accuracy is "
            f"the tutorial's precision and producer's accuracy its recall.</p>"
            f"{wide}<div class='diagnostics'>{''.join(diagnostics)}</div>")


def write_report(scene: Scene, out: OutputSet, metrics: dict) -> None:
    """``report.html``: one self-contained page (every image inside it, no links to files or paths): the
    scene's title; the accuracy to cite (the validation sample's estimates where there is one, else the
    held-out test blocks'; with neither, the test superpixels'); the map and its uncertainty; the reference
    beside the map; a Methods paragraph; then, as diagnostics, the other assessments, the disagreement and split
    maps and the learning curve. Figures are numbered in this order."""
    numbering, grid = Numbering(), scene_grid(scene)
    write_page(scene, out, "land-cover report", f"""{scene_comparison(metrics.get("applied_model"))}
{cite_section(scene, out, metrics, numbering)}
{map_section(scene, out, numbering, grid)}
<p>{html.escape(metrics.get("applied_model_note", ""))} {html.escape(masked_text(metrics["masked_area_ha"]))}
Image: {html.escape(Path(str(scene.image)).name)}; reference: {html.escape(Path(str(scene.reference)).name)}.</p>
<h2>Methods</h2><p>A paragraph to adapt for a thesis or paper (parameters and versions as recorded in run.json):</p>
{methods_text(scene, metrics, grid)}
{diagnostics_section(scene, out, metrics, numbering)}
<p>Full figures: metrics.json. Parameters and input checksums: run.json.</p>""")


def diagnostic(title: str, body: str) -> str:
    """A diagnostic of the report under a plain-language heading."""
    return f"<section><h3>{html.escape(title)}</h3>{body}</section>"


def assessment_caption(name: str, result: dict) -> str:
    """The caption of an assessment's confusion matrix: what it compares, its overall accuracy and kappa, how
    to read the matrix."""
    return (f"{html.escape(assessment_title(name))}. {html.escape(ASSESSMENT_NOTES.get(name, ''))} "
            f"{html.escape(result['unit'][:1].upper() + result['unit'][1:])}: {result['n_samples']:,}; overall "
            f"accuracy {result['overall_accuracy']}, kappa {result['kappa']}, weighted F1 {result['weighted_f1']}. "
            f"Rows: reference class; columns: map class; each cell its count and share of the row (on the "
            f"diagonal: the producer's accuracy).")


def write_page(scene: Scene, out: OutputSet, title: str, body: str) -> None:
    """``report.html``: ``body`` under the scene's title, in the one style of Step 3's pages."""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(scene.display_title)}: {title}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(scene.display_title)}</h1><p class="subtitle">{title[:1].upper() + title[1:]} from Sentinel-2:
SLIC superpixels classified by a convolutional neural network.</p>
{body}</body></html>"""
    with atomic_output(out.path("report.html")) as temporary:
        temporary.write_text(page, encoding="utf-8")


def masked_text(masked_ha: float) -> str:
    """What the masked part of the scene (``masked_ha`` hectares) is in the map and its areas."""
    return (f"Masked (clouds, shadows, nodata): {masked_ha:.2f} ha, mapped as no class and in no class's area."
            if masked_ha else "No pixel is masked.")


def write_map_page(scene: Scene, out: OutputSet, areas: np.ndarray, model_scene, validation: dict | None,
                   comparison: dict | None, masked_ha: float) -> None:
    """``report.html`` of a scene without a reference: the map, its uncertainty and the class ``areas`` (K,)
    in hectares, for a model trained on scene ``model_scene``, with Step 2's ``comparison`` of the scene with
    the training scene (see :func:`scene_comparison`) and the ``masked_ha`` hectares left unmapped; and the
    estimates from a labelled ``validation`` sample, if given (then marked as the accuracy to cite)."""
    numbering, grid = Numbering(), scene_grid(scene)
    rows = "".join(f"<tr>{class_cell(name, scene.descriptions)}<td>{area:,.2f}</td>"
                   f"<td>{area / max(areas.sum(), 1e-9):.1%}</td></tr>" for name, area in zip(scene.class_names, areas))
    table = (f"<div class='table-wrap'><table><tr><th>class</th><th>hectares</th><th>share</th></tr>{rows}"
             f"<tr><th>total</th><td>{areas.sum():,.2f}</td><td></td></tr></table></div>")
    accuracy = (f"<h2>Accuracy to cite</h2><p>{design_sentence(validation)}</p>"
                + area_section(validation, "Class areas and accuracy from the validation sample", numbering,
                               scene.class_names, scene.descriptions, cite=True) if validation else "")
    write_page(scene, out, "land-cover map", f"""{scene_comparison(comparison)}
<p>No reference: accuracy cannot be assessed from the map alone{"" if validation else
" (design and label a validation sample with Step 3 --design-sample, then assess with --validation)"}. Model trained on
scene {html.escape(str(model_scene))}. Image: {html.escape(Path(str(scene.image)).name)}.</p>
{accuracy}<h2>The map</h2>{map_figures(scene, numbering, grid)}
<h2>Class areas (map)</h2>{numbering.figure(table, "Area of each class in the map, in hectares and as a share of the "
                                                   "mapped area (pixel counts, without sampling or error adjustment).")}
<p>{html.escape(masked_text(masked_ha))}</p>""")


def summary_lines(metrics: dict) -> list[str]:
    """A readable summary of ``metrics`` (as in ``metrics.json``) like the tutorial's Fig 5.4: per assessment
    and class precision, recall and F1, then OA, kappa and the confusion matrix; then the area estimates."""
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
    for key in ("area_estimates", "validation_sample"):
        if key in metrics:
            area = metrics[key]
            lines.append(f"\n{key} (ha, +- 95 % CI; {area['sample']['design']}): overall accuracy "
                         f"{with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}")
            lines.extend(text for text in (area["sample"].get("note"), small_strata_note(area["sample"])) if text)
            for name, c in area["classes"].items():
                lines.append(f"{name:>12}  map {c['map_area_ha']:,.1f}  estimated "
                             f"{with_interval(c['estimated_area_ha'], c['area_ci95_ha'], 1)}")
    return [line.replace("&ndash;", "-") for line in lines]
