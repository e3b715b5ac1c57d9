"""Step 3's pages: ``report.html``, one self-contained file (every image inside it as a data URI, no link to a
file or a path), of the accuracy assessment or, for a scene without a reference, of the map alone; and the
same figures as lines of text for the log."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from pipeline.core.atomic_files import atomic_output
from pipeline.assessment.accuracy import AXES_NOTE
from pipeline.assessment.area_estimates import SMALL_STRATUM
from pipeline.run.config import Scene
from pipeline.run.outputs import OutputSet


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
    """HTML table of area estimates: per class map area, estimated area, user's and producer's accuracy (each
    ± its 95 % confidence interval), then the overall accuracy."""
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{with_interval(c['map_area_ha'], None, 1)}</td>"
        f"<td>{with_interval(c['estimated_area_ha'], c['area_ci95_ha'], 1)}</td>"
        f"<td>{with_interval(c['users_accuracy'], c['users_accuracy_ci95'], 3)}</td>"
        f"<td>{with_interval(c['producers_accuracy'], c['producers_accuracy_ci95'], 3)}</td></tr>"
        for name, c in area["classes"].items())
    return (f"<table class='area'><tr><th>class</th><th>map area (ha)</th><th>estimated area (ha) ± 95 % CI</th>"
            f"<th>user's accuracy ± 95 % CI</th><th>producer's accuracy ± 95 % CI</th></tr>"
            f"{rows}<tr><th>all</th><td>{with_interval(area['total_area_ha'], None, 1)}</td><td></td>"
            f"<td colspan='2'>overall accuracy {with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}"
            f"</td></tr></table>")


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


def area_section(area: dict, title: str) -> str:
    """A report section of area estimates: the table, what the sample is, how its intervals are made (and which
    strata are small), how it was computed, the references."""
    sample = area["sample"]
    small = small_strata_note(sample)
    described = ("design", "unit", "variance", "references", "note")
    facts = ", ".join(f"{key.replace('_', ' ')} " + (", ".join(f"{k} {v}" for k, v in value.items())
                                                      if isinstance(value, dict) else f"{value}")
                      for key, value in sample.items() if key not in described)
    return (f"<h2>{html.escape(title)}</h2>{area_table(area)}"
            f"<p><b>Sample</b>: {html.escape(sample['design'])}; unit: {html.escape(sample['unit'])}; "
            f"{html.escape(facts)}.</p>"
            + (f"<p class='note'><b>{html.escape(sample['note'])}</b></p>" if sample.get("note") else "")
            + (f"<p class='small-strata'><b>{html.escape(small)}</b>.</p>" if small else "")
            + f"<p><b>Intervals</b>: {html.escape(area['interval_method'] or 'none')}.</p>"
            + f"<p><b>Variance</b>: {html.escape(sample['variance'])}.</p><p><code>{html.escape(area['formula'])}"
              f"</code></p>" + "".join(f"<p>{html.escape(reference)}</p>" for reference in sample["references"]))


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
        return (f"no area-weighted accuracy (not a probability sample of the map); superpixel-level OA of the test "
                f"superpixels {metrics['assessments']['superpixel_test']['overall_accuracy']}")
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


def write_report(scene: Scene, out: OutputSet, metrics: dict) -> None:
    """``report.html``: one self-contained page (every image inside it, no links to files or paths) with the
    composites, the maps, the area estimates, the confusion matrices and the figures."""
    def earlier(name: str) -> Path:
        return scene.output(name)

    area, superpixels = metrics["area_estimates"], metrics["assessments"]["superpixel_test"]
    forest = metrics["assessments"].get("random_forest_superpixel_test")
    baseline = f"random forest baseline {forest['overall_accuracy']}; " if forest else ""
    headline = html.escape(headline_text(metrics))
    absent = absent_text(metrics)
    validation = metrics.get("validation_sample")
    sections = "".join(
        f"<section><h3>{name}</h3><p>{html.escape(result['unit'])}: {result['n_samples']}. "
        f"OA <b>{result['overall_accuracy']}</b>, kappa {result['kappa']}, weighted F1 {result['weighted_f1']}</p>"
        f"{image_tag(out.path(f'confusion_{name}.png'), 'confusion matrix')}{confusion_tables(result)}</section>"
        for name, result in metrics["assessments"].items())
    composites = "".join(image_tag(earlier(name), alt) for name, alt in (
        ("rgb.png", "RGB"), ("nir_green_blue.png", "NIR-G-B"), ("segments_boundaries.png", "superpixels")))
    write_page(scene, out, "land-cover report", f"""{scene_comparison(metrics.get("applied_model"))}
<p>Headline: <b id="headline">{headline}</b>.
{f'<b id="absent" class="note">{html.escape(absent)}</b>' if absent else ""}
Superpixel-level, on the test superpixels: OA {superpixels['overall_accuracy']}, kappa {superpixels['kappa']}
({baseline}segmentation ceiling {metrics['assessments']['segmentation_ceiling']['overall_accuracy']}).
{html.escape(metrics.get("applied_model_note", ""))}
{html.escape(masked_text(metrics["masked_area_ha"]))}
Confusion matrices: rows = reference, columns = prediction. Image: {html.escape(Path(str(scene.image)).name)};
reference: {html.escape(Path(str(scene.reference)).name)}.</p>
<div class="row">{composites}</div>
{image_tag(out.path("reference_maps.png"), "reference and predicted maps")}
{image_tag(earlier("uncertainty.png"), "uncertainty")}
<div class="pair">{image_tag(out.path("disagreement_map.png"), "disagreement map")}{image_tag(out.path("split_map.png"), "spatial split")}</div>
{area_section(validation, "Class areas and accuracy from the validation sample") if validation else ""}
{area_section(area, "Class areas and area-weighted accuracy (held-out test blocks)")}
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
    estimates from a labelled ``validation`` sample, if given."""
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{area:.2f}</td><td>{area / max(areas.sum(), 1e-9):.1%}</td></tr>"
                   for name, area in zip(scene.class_names, areas))
    write_page(scene, out, "land-cover map", f"""{scene_comparison(comparison)}
<p>No reference: accuracy cannot be assessed here. Model trained on scene {html.escape(str(model_scene))}.
Image: {html.escape(Path(str(scene.image)).name)}.</p>
<div class="pair">{image_tag(scene.output("predMap.png"), "predicted land cover")}{image_tag(scene.output("uncertainty.png"), "uncertainty")}</div>
<h2>Class areas (map)</h2><table><tr><th>class</th><th>hectares</th><th>share</th></tr>{rows}
<tr><th>total</th><td>{areas.sum():.2f}</td><td></td></tr></table>
<p>{html.escape(masked_text(masked_ha))}</p>
{area_section(validation, "Class areas and accuracy from the validation sample") if validation else ""}""")


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

