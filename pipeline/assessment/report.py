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
from pathlib import Path

import numpy as np

from pipeline.assessment.accuracy import AXES_NOTE, FOREST_FEATURES
from pipeline.assessment.accuracy_figures import (AGREEMENT_CATEGORIES, AGREEMENT_COLOURS, ASSESSMENT_TITLES,
                                                  SPLIT_MAP_CATEGORIES, SPLIT_MAP_COLOURS, assessment_title)
from pipeline.assessment.report_text import (absent_text, area_table, class_cell, class_legend, classifier_name,
                                             confusion_tables,
                                             design_sentence, error_matrix_table, forest_text, formulas_html,
                                             grid_text,
                                             headline_text, is_designed, methods_text, prose, run_record,
                                             sample_text, scene_comparison, scene_grid, small_strata_note,
                                             with_interval)
from pipeline.core.atomic_files import atomic_output
from pipeline.core.grids import Grid
from pipeline.run.config import Scene
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
    "random_forest_superpixel_test": f"A random forest (300 trees) on {FOREST_FEATURES}, trained on the "
                                     f"superpixels of the CNN's balanced set and scored on the test superpixels: "
                                     f"whether the CNN earns its cost.",
    "random_forest_pixel_test": "The same random forest's map (each superpixel given its class) against the "
                                "reference raster on the labelled pixels of the test superpixels, as for the CNN's "
                                "map.",
}
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


def map_figures(scene: Scene, numbering: Numbering, grid: Grid | None, classifier: str) -> str:
    """The map and its uncertainty (Step 2's previews, in map coordinates), each a numbered figure."""
    k = len(scene.class_names)
    where = f" ({html.escape(grid_text(grid))})" if grid else ""
    legend = class_legend(scene.class_names, scene.descriptions)
    return (numbering.figure(image_tag(scene.output("predMap.png"), "predicted land cover"), (
        f"Land-cover map of {html.escape(scene.display_title)}, one class per superpixel as the {classifier} "
        f"predicted it{where}; easting and northing in km, with a scale bar. Classes: {legend}."), kind="map")
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


def map_section(scene: Scene, out: OutputSet, numbering: Numbering, grid: Grid | None, classifier: str) -> str:
    """The report's "The map": the map and its uncertainty, the image and its superpixels, the reference
    beside the map; ``classifier`` names what made the map (:func:`~report_text.classifier_name`)."""
    composites = "".join(image_tag(scene.output(name), alt) for name, alt in (
        ("rgb.png", "true-colour composite"), ("nir_green_blue.png", "false-colour composite"),
        ("segments_boundaries.png", "superpixel boundaries")))
    superpixels = run_record(scene).get("steps", {}).get("Step0_Data_Preparation", {}).get("superpixels")
    return (
        "<h2>The map</h2>" + map_figures(scene, numbering, grid, classifier)
        + numbering.figure(f"<div class='row'>{composites}</div>", (
            "The image and its superpixels: left, true-colour composite (red, green, blue); middle, false-colour "
            "composite (near infrared, green, blue: vegetation in red); right, the SLIC superpixel boundaries in "
            "yellow over the true-colour composite" + (f" ({superpixels:,} superpixels)" if superpixels else "")
            + "."))
        + numbering.figure(image_tag(out.path("reference_maps.png"), "reference and predicted maps"), (
            f"The reference beside the map: left, the reference per pixel (blank: no reference label); middle, the "
            f"reference as each superpixel's majority class, the labels the {classifier} was trained and tested on; "
            f"right, the {classifier}'s map. Classes: {class_legend(scene.class_names, scene.descriptions)}.")))


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
    peer = forest_text(metrics)
    return (f"<h2>Diagnostics</h2><p>These help judge the map and the model. They are not the map's accuracy: cite "
            f"the figures marked <span class='cite-mark'>cite this</span> above. In the tables, user's accuracy is "
            f"the tutorial's precision and producer's accuracy its recall.</p>"
            + (f"<p id='cnn-vs-forest'><b>{html.escape(peer)}</b></p>" if peer else "") + f"{wide}<div class='diagnostics'>{''.join(diagnostics)}</div>")


def write_report(scene: Scene, out: OutputSet, metrics: dict) -> None:
    """``report.html``: one self-contained page (every image inside it, no links to files or paths): the
    scene's title; the accuracy to cite (the validation sample's estimates where there is one, else the
    held-out test blocks'; with neither, the test superpixels'); the map and its uncertainty; the reference
    beside the map; a Methods paragraph; then, as diagnostics, the other assessments, the disagreement and split
    maps and the learning curve. Figures are numbered in this order."""
    numbering, grid = Numbering(), scene_grid(scene)
    write_page(scene, out, "land-cover report", f"""{scene_comparison(metrics.get("applied_model"))}
{cite_section(scene, out, metrics, numbering)}
{map_section(scene, out, numbering, grid, classifier_name(metrics))}
<p>{html.escape(metrics.get("applied_model_note", ""))} {html.escape(metrics.get("classifier_note", ""))}
{html.escape(masked_text(metrics["masked_area_ha"]))}
Image: {html.escape(Path(str(scene.image)).name)}; reference: {html.escape(Path(str(scene.reference)).name)}.</p>
<h2>Methods</h2><p>A paragraph to adapt for a thesis or paper (parameters and versions as recorded in run.json):</p>
{methods_text(scene, metrics, grid)}
{diagnostics_section(scene, out, metrics, numbering)}
<p>Full figures: metrics.json. Parameters and input checksums: run.json.</p>""", classifier_name(metrics, full=True))


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


def write_page(scene: Scene, out: OutputSet, title: str, body: str, classifier: str) -> None:
    """``report.html``: ``body`` under the scene's title, in the one style of Step 3's pages; ``classifier`` names
    what classified the superpixels, with its article (:func:`~report_text.classifier_name`)."""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(scene.display_title)}: {title}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(scene.display_title)}</h1><p class="subtitle">{title[:1].upper() + title[1:]} from Sentinel-2:
SLIC superpixels classified by {classifier}.</p>
{body}</body></html>"""
    with atomic_output(out.path("report.html")) as temporary:
        temporary.write_text(page, encoding="utf-8")


def masked_text(masked_ha: float) -> str:
    """What the masked part of the scene (``masked_ha`` hectares) is in the map and its areas."""
    return (f"Masked (clouds, shadows, nodata): {masked_ha:.2f} ha, mapped as no class and in no class's area."
            if masked_ha else "No pixel is masked.")


def write_map_page(scene: Scene, out: OutputSet, areas: np.ndarray, model_scene, validation: dict | None,
                   comparison: dict | None, masked_ha: float, metrics: dict) -> None:
    """``report.html`` of a scene without a reference: the map, its uncertainty and the class ``areas`` (K,)
    in hectares, for a model trained on scene ``model_scene``, with Step 2's ``comparison`` of the scene with
    the training scene (see :func:`scene_comparison`) and the ``masked_ha`` hectares left unmapped; and the
    estimates from a labelled ``validation`` sample, if given (then marked as the accuracy to cite); ``metrics``
    (``metrics.json``'s) names the classifier."""
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
{accuracy}<h2>The map</h2>{map_figures(scene, numbering, grid, classifier_name(metrics))}
<h2>Class areas (map)</h2>{numbering.figure(table, "Area of each class in the map, in hectares and as a share of the "
                                                   "mapped area (pixel counts, without sampling or error adjustment).")}
<p>{html.escape(masked_text(masked_ha))}</p>""", classifier_name(metrics, full=True))


def summary_lines(metrics: dict) -> list[str]:
    """A readable summary of ``metrics`` (as in ``metrics.json``) like the tutorial's Fig 5.4: per assessment
    (by its plain title) and class user's accuracy (precision), producer's accuracy (recall) and F1, then OA,
    kappa and the confusion matrix; then the area estimates."""
    lines = []
    for name, result in metrics["assessments"].items():
        lines.append(f"\n{assessment_title(name)}: {result['unit']} ({result['n_samples']}); {AXES_NOTE}")
        lines.append(f"{'':>12}{'user (precision)':>18}{'producer (recall)':>19}{'f1':>8}{'support':>10}")
        for i, class_name in enumerate(result["class_names"]):
            cells = [result[k][i] for k in ("precision", "recall", "f1")]
            lines.append(f"{class_name:>12}" + "".join(f"{'-' if c is None else c:>{width}}"
                                                       for c, width in zip(cells, (18, 19, 8)))
                         + f"{result['support'][i]:>10}")
        lines.append(f"{'OA':>12}{result['overall_accuracy']:>10}   kappa {result['kappa']}   "
                     f"weighted F1 {result['weighted_f1']}")
        for i, row in enumerate(result["confusion_matrix"]):
            lines.append(f"{result['class_names'][i]:>12} " + " ".join(f"{v:>8}" for v in row))
    if forest_text(metrics):
        lines.append(f"\n{forest_text(metrics)}")
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
