"""Step 3, accuracy assessment (tutorial section 5), made honest.

The tutorial scores every superpixel, including the ones the CNN was trained on. Here every figure comes from the
**held-out test blocks** of Step 0's spatial split (superpixels with ``split == 1``, label not 255); the
tutorial's all-superpixel figures are kept for comparison. Assessments (superpixel-level and pixel-level; rows
of every confusion matrix = reference, columns = prediction; see ``pipeline/assessment/accuracy.py``):

- ``superpixel_test``: predicted vs majority reference label of the test superpixels (superpixel-level);
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (tutorial);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``: a random forest on each superpixel's mean of the 8 layers, trained on
  the CNN's balanced set and scored like ``superpixel_test``, to show whether the CNN earns its cost.

Besides, ``area_estimates`` (the headline): the area of every class in hectares and the pixel-level, area-weighted
user's, producer's and overall accuracy, each with a 95 % confidence interval, from each test pixel's own
reference value, with the test blocks as the sampling units of a cluster sample (``pipeline/assessment/area_estimates.py``);
``area_estimates.sample`` says what the sample is. A reference that labels only part of the map (training
polygons) is no probability sample of it: then no areas or accuracies are estimated from it.

The map assessed is Step 2's ``predMap.tif``, as written. Step 3 reads it, ``segments.tif``, ``reference.tif``
and ``layers.tif`` window by window (:data:`WINDOW`) and sums pixel counts over the windows
(``pipeline/assessment/pixel_counts.py``), so its memory is bounded by a window, not by the scene; the figures are drawn
from previews (every ``display_stride``-th row and column) gathered on the way. Two modes depart from the above:

- a model applied from another scene (Step 2 ``--model``) was trained on none of this scene's superpixels:
  every labelled superpixel is held out, and there is no random forest baseline (it would need this scene's
  balanced set); ``metrics.json``'s ``applied_model`` carries Step 2's comparison of the scene with the model's
  training scene (``pipeline/model/scene_shift.py``; ``shift_warning``: whether it looks unlike it; null for a map
  made before the comparison was), and the report shows it, as a warning if it looks unlike;
- a scene without a reference: no accuracy can be assessed; ``metrics.json`` holds the map's class areas in
  hectares and ``report.html`` shows the map, its uncertainty and those areas.

Writes ``metrics.json`` (sorted keys; per assessment: ``confusion_matrix``, ``class_names``,
``overall_accuracy``, ``kappa``, ``precision``, ``recall``, ``f1``, ``support``, ``weighted_f1``,
``n_samples``, ``unit``; then ``area_estimates``; ``absent_classes``: the classes the reference holds that the
map never gives (``map``) or that no test superpixel carries (``test_set``), which the report points out;
undefined values are null), ``reference_maps.png`` (pixel
and superpixel reference beside the prediction), ``disagreement_map.png``, ``split_map.png``,
``confusion_<assessment>.png`` and ``report.html``, one self-contained file with every image inside it.

A validation sample, as README "Reporting areas and accuracy" tells (``pipeline/assessment/validation_sample.py``):

- ``--design-sample`` writes ``validation_sample.gpkg`` and ``.csv``, a stratified random sample of the map to
  label (``--target-se``, ``--min-per-class``, ``--sample-size``, ``--seed``), and stops;
- ``--validation POINTS`` (or ``validation`` under ``[assessment]``) adds ``validation_sample`` to
  ``metrics.json`` and the report: the areas and accuracies estimated from the labelled points;
- ``--suggest N`` writes ``suggested_samples.gpkg`` and ``.csv``, the N most uncertain superpixels spread over
  the scene, to label for training, and stops.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.run import files
from pipeline.assessment import accuracy, label_suggestions, pixel_counts, report
from pipeline.run import cli
from pipeline.handoffs import contract
from pipeline.core import grids
from pipeline.inputs import point_files
from pipeline.assessment import validation_sample
from pipeline.assessment.accuracy import ASSESSMENTS, AXES_NOTE
from pipeline.assessment.accuracy_figures import plot_confusion, plot_disagreement, plot_maps, plot_split
from pipeline.assessment.area_estimates import (AGRESTI_CAFFO_2000, AGRESTI_COULL_1998, OLOFSSON_2014, STEHMAN_2014,
                                     class_areas_ha, estimates, held_out_estimates, pixel_area)
from pipeline.run.config import Scene
from pipeline.core.vocabulary import STEP2, TEST, UNLABELLED
from pipeline.core.errors import InputDataError
from pipeline.core.grids import paint_map
from pipeline.run.outputs import OutputSet, open_outputs
from pipeline.segmentation.split import block_of

log = logging.getLogger(__name__)
#: Every file Step 3 writes (committed together).
OUTPUTS = ("metrics.json", "report.html", "reference_maps.png", "disagreement_map.png", "split_map.png",
           *(f"confusion_{name}.png" for name in ASSESSMENTS), "run.json")
DESIGN_OUTPUTS = ("validation_sample.gpkg", "validation_sample.csv")
SUGGEST_OUTPUTS = ("suggested_samples.gpkg", "suggested_samples.csv")
#: Side in pixels of the square windows in which Step 3 reads the rasters: a window of the 8 float32 layers takes
#: 32 MiB, one of the segments (int32), the map and the reference codes (uint8) 6 MiB, whatever the scene's size.
WINDOW = 1024


def read_hand_offs(scene: Scene) -> dict:
    """Everything Step 3 holds whole: Step 0's per-superpixel labels, split, centroids and split ``block``, Step
    2's labels and, for a model trained here, Step 1's balanced set; checked to come from one chain of runs on
    the scene as it is now, with ``segments.tif``, ``predMap.tif`` and (if the scene has a ``reference``)
    ``reference.tif`` on the grid of ``layers.tif``. The rasters are read window by window (:func:`reader`). For
    an applied model, every labelled superpixel's split is ``TEST``."""
    step0, _ = contract.load_step0(scene, ["labels", "split", "centroids"], with_segments=False)
    record = step0[contract.PROVENANCE]
    grid = contract.raster_grid(contract.LAYERS, scene.workdir, record)
    pred_labels, prediction = contract.load_pred_labels(scene, record["run"], len(step0["labels"]))
    has_reference = record["inputs"]["reference"] is not None
    for handoff, provenance in ((contract.SEGMENTS_RASTER, record), (contract.PRED_MAP_RASTER, prediction),
                                *([(contract.REFERENCE, record)] if has_reference else [])):
        other = contract.raster_grid(handoff, scene.workdir, provenance)
        if (other.rows, other.cols) != (grid.rows, grid.cols):
            raise InputDataError(f"{handoff.path(scene.workdir)}: {other.cols} x {other.rows} px, but layers.tif "
                                 f"{grid.cols} x {grid.rows}; rerun {handoff.made_by}")
    shape = (grid.rows, grid.cols)
    data = {"labels": step0["labels"], "split": step0["split"], "centroids": step0["centroids"],
            "block": block_of(step0["centroids"], shape, scene.params.block_size), "pred_labels": pred_labels,
            "step0": record, "reference": has_reference, "balanced": None, "grid": grid, "shape": shape,
            "prediction": prediction, "map_run": prediction["run"],
            "pixel_area_m2": pixel_area(grid, contract.LAYERS.path(scene.workdir)),
            "applied_from": prediction.get("model_scene"), "applied_model": prediction.get("applied_model")}
    if prediction.get("step1_run") is not None:  # trained here: the forest baseline uses the same balanced set
        data["balanced"] = contract.load_balanced(scene, ["labels"], record["run"])
        if data["balanced"][contract.PROVENANCE]["run"] != prediction["step1_run"]:
            raise InputDataError(f"{contract.PRED_LABELS.path(scene.workdir)}: predicted by a model trained on "
                                 f"another balanced set than the one in {scene.workdir}; rerun {STEP2}")
    else:  # an applied model was trained on none of this scene's superpixels: every labelled one is held out
        data["split"] = np.where(data["labels"] != UNLABELLED, TEST, data["split"]).astype(np.uint8)
    return data


def reader(scene: Scene, data: dict, handoff: contract.RasterHandOff):
    """``read(window=None)``: the raster hand-off ``handoff`` of the runs of ``data``, whole or a window (row,
    col, rows, cols)."""
    record = data["prediction"] if handoff.made_by == STEP2 else data["step0"]
    return lambda window=None: contract.read_raster(handoff, scene.workdir, record, window)


def count_scene(scene: Scene, data: dict) -> pixel_counts.PixelCounts:
    """The map's pixel counts against the reference and the previews, window by window of :data:`WINDOW` px
    (for a scene without a reference, the map's class counts only)."""
    read_map, read_codes, read_segments = (reader(scene, data, handoff) for handoff in (
        contract.PRED_MAP_RASTER, contract.REFERENCE, contract.SEGMENTS_RASTER))

    def read(window):
        if not data["reference"]:
            return read_map(window), None, None
        return read_map(window), read_codes(window), read_segments(window)

    return pixel_counts.count_pixels(read, data["shape"], WINDOW, len(scene.class_names), data["labels"],
                                     data["split"], data["block"])


def forest_labels(scene: Scene, data: dict) -> np.ndarray:
    """Class of every superpixel by the random forest baseline on the superpixels' mean layers, trained on the
    superpixels of the balanced set; the means are summed window by window of ``layers.tif`` and ``segments.tif``."""
    windows = grids.read_windows(data["shape"], WINDOW, reader(scene, data, contract.LAYERS),
                                 reader(scene, data, contract.SEGMENTS_RASTER))
    means = accuracy.superpixel_means(windows, len(data["labels"]))
    trained = np.unique(data["balanced"]["index"])
    return accuracy.random_forest_predictions(means, trained, data["labels"][trained], scene.params.seed)


def held_out(scene: Scene, data: dict, counts: pixel_counts.PixelCounts) -> dict:
    """``metrics.json``'s ``area_estimates``: the estimates from the held-out test blocks."""
    return held_out_estimates(counts, data["labels"], data["split"], data["block"], scene.class_names,
                              data["pixel_area_m2"], scene.params.block_size)


def absent_classes(counts: pixel_counts.PixelCounts, labels: np.ndarray, split: np.ndarray, class_names) -> dict:
    """The classes the reference holds (any pixel of ``counts.reference_pixels``) that the map never gives
    (``map``) or that no test superpixel carries (``test_set``), by name, from the superpixels' ``labels`` and
    ``split`` (n,): ``metrics.json``'s ``absent_classes``."""
    held = counts.reference_pixels > 0
    tested = np.bincount(labels[(split == TEST) & (labels != UNLABELLED)], minlength=len(class_names)) > 0
    return {"map": [name for name, h, m in zip(class_names, held, counts.map_pixels) if h and not m],
            "test_set": [name for name, h, t in zip(class_names, held, tested) if h and not t]}


def write_figures(out: OutputSet, data: dict, counts: pixel_counts.PixelCounts, metrics: dict,
                  block_size: int) -> None:
    """Step 3's PNGs, the maps from the previews: the maps, the disagreement map, the split map and every
    confusion matrix."""
    class_names, previews = metrics["class_names"], counts.previews
    superpixel_reference = paint_map(data["labels"], previews["segments"], UNLABELLED)
    files.save_png(out.path("reference_maps.png"),
                   plot_maps(previews["codes"], superpixel_reference, previews["map"], class_names))
    files.save_png(out.path("disagreement_map.png"),
                   plot_disagreement(previews["codes"], previews["map"], counts.disagreement_share))
    files.save_png(out.path("split_map.png"),
                   plot_split(data["labels"], data["split"], previews["segments"],
                              f"Spatial split: held-out test superpixels in {block_size} px blocks"
                              if data["applied_from"] is None else
                              f"Every labelled superpixel held out (model trained on {data['applied_from']})"))
    for name, result in metrics["assessments"].items():
        files.save_png(out.path(f"confusion_{name}.png"), plot_confusion(result, name))


def assess_map(scene: Scene, out: OutputSet, data: dict, timings: dict) -> dict:
    """Every assessment of the map against the reference, the figures, ``metrics.json`` and ``report.html``;
    returns the overall accuracies for ``run.json``."""
    class_names = scene.class_names
    forest = None
    if data["balanced"] is not None:
        with cli.timed("random forest baseline on superpixel means", timings):
            forest = forest_labels(scene, data)
    with cli.timed("assessments", timings):
        counts = count_scene(scene, data)
        metrics = {"note": AXES_NOTE, "class_names": class_names,
                   "assessments": accuracy.assessments(counts, data["labels"], data["split"], data["pred_labels"],
                                                       forest, class_names),
                   "area_estimates": held_out(scene, data, counts),
                   "masked_area_ha": masked_area_ha(counts, data["pixel_area_m2"]),
                   "absent_classes": absent_classes(counts, data["labels"], data["split"], class_names)}
        if scene.validation is not None:
            metrics["validation_sample"] = validation_estimates(scene, data, counts)
        if data["applied_from"]:
            metrics["applied_model_note"] = (f"The model was trained on scene {data['applied_from']}: every "
                                             f"labelled superpixel of this scene is held out.")
            metrics["applied_model"] = data["applied_model"]
    with cli.timed("figures, metrics.json and report.html", timings):
        write_figures(out, data, counts, metrics, scene.params.block_size)
        cli.write_json(out.path("metrics.json"), metrics)
        report.write_report(scene, out, metrics)
    for line in report.summary_lines(metrics):
        log.info(line)
    if report.absent_text(metrics):
        log.warning(report.absent_text(metrics))
    log.info("\nheadline: %s; report: %s", report.headline_text(metrics), scene.output("report.html"))
    return {"overall_accuracy": {k: v["overall_accuracy"] for k, v in metrics["assessments"].items()}}


def validation_estimates(scene: Scene, data: dict, counts: pixel_counts.PixelCounts) -> dict:
    """Areas and accuracies from the labelled validation sample ``scene.validation`` (designed by
    ``--design-sample``), by the stratified estimators, for ``metrics.json``'s ``validation_sample``; the map's
    classes at the points are read window by window, its class areas are those of ``counts``."""
    read_map = reader(scene, data, contract.PRED_MAP_RASTER)

    def map_at(rows, cols):
        return grids.pixel_values(read_map, data["shape"], WINDOW, rows, cols)

    x, y, columns = point_files.read_points(scene.validation, data["grid"].crs_wkt)
    units = validation_sample.labelled_units(scene.validation, x, y, columns, scene.validation_field, scene.classes,
                                             map_at, counts.map_pixels, data["grid"], data["pixel_area_m2"],
                                             data["map_run"])
    result = estimates(units["tables"], units["strata"], units["population_units"],
                       class_areas_ha(counts.map_pixels, data["pixel_area_m2"]), scene.class_names)
    log.info("validation sample %s: %d labelled points, %d without a reference left out", scene.validation.name,
             units["sample"]["labelled"], units["sample"]["unlabelled_left_out"])
    return {**result, "sample": {**units["sample"], "references": [OLOFSSON_2014, STEHMAN_2014, AGRESTI_COULL_1998,
                                                                   AGRESTI_CAFFO_2000]},
            "pixel_area_m2": data["pixel_area_m2"]}


def masked_area_ha(counts: pixel_counts.PixelCounts, pixel_area_m2: float) -> float:
    """Hectares of the scene that are masked (clouds, shadows, nodata): mapped as no class, in no class's area."""
    return round(counts.masked * pixel_area_m2 / 1e4, 2)


def describe_map(scene: Scene, out: OutputSet, data: dict) -> dict:
    """A scene without a reference: ``metrics.json`` with the class areas (hectares) and a report of the map,
    its uncertainty and the areas; returns the areas for ``run.json``."""
    counts = count_scene(scene, data)
    areas = class_areas_ha(counts.map_pixels, data["pixel_area_m2"])
    metrics = {"note": "no reference: the map's class areas only (no accuracy can be assessed)",
               "class_names": scene.class_names, "class_areas_ha": dict(zip(scene.class_names, np.round(areas, 2))),
               "total_area_ha": round(float(areas.sum()), 2),
               "masked_area_ha": masked_area_ha(counts, data["pixel_area_m2"]), "model_scene": data["applied_from"],
               "applied_model": data["applied_model"]}
    if scene.validation is not None:
        metrics["validation_sample"] = validation_estimates(scene, data, counts)
    cli.write_json(out.path("metrics.json"), metrics)
    report.write_map_page(scene, out, areas, data["applied_from"], metrics.get("validation_sample"),
                          data["applied_model"], metrics["masked_area_ha"])
    log.info("class areas (ha): %s; report: %s", metrics["class_areas_ha"], scene.output("report.html"))
    return {"class_areas_ha": metrics["class_areas_ha"]}


def design_sample(scene: Scene, data: dict) -> None:
    """``validation_sample.gpkg`` and ``.csv``: a stratified random sample of the map to label (see
    ``pipeline/assessment/validation_sample.py``), sized for ``target_se`` with the held-out user's accuracies (if any). The
    draw reads the map whole (uint8, one byte a pixel)."""
    existing = scene.output("validation_sample.gpkg")
    if existing.is_file():
        labels = point_files.read_points(existing, data["grid"].crs_wkt)[2].get(validation_sample.REFERENCE_FIELD, [])
        if any(label not in (None, "") for label in labels):
            raise InputDataError(f"{existing}: holds labelled points; move it away before designing a new sample")
    users = [None] * len(scene.class_names)
    if data["reference"]:
        classes = held_out(scene, data, count_scene(scene, data))["classes"]
        users = [entry["users_accuracy"] for entry in classes.values()]
    params = scene.params
    pred_map = reader(scene, data, contract.PRED_MAP_RASTER)()
    sample = validation_sample.design(pred_map, data["grid"], scene.class_names, data["pixel_area_m2"], users,
                                      params.target_se, params.min_per_class, params.sample_size, data["map_run"],
                                      np.random.default_rng(params.seed))
    with open_outputs(scene.workdir, DESIGN_OUTPUTS, hand_off_paths(scene)) as out:
        point_files.write_points(out.path(DESIGN_OUTPUTS[0]), "validation_sample", sample["x"], sample["y"],
                                 sample["fields"], data["grid"].crs_wkt)
    summary = sample["summary"]
    log.info("%s: %d points; %s; %s", existing, summary["points"], summary["size_rule"], summary["allocation"])
    for name, stratum in summary["strata"].items():
        log.info("%12s  %10.1f ha  %5d points", name, stratum["area_ha"], stratum["points"])
    log.info("label the field '%s' in QGIS, then run Step 3 with --validation %s", validation_sample.REFERENCE_FIELD,
             existing)


def suggest_samples(scene: Scene, data: dict, count: int) -> None:
    """``suggested_samples.gpkg`` and ``.csv``: ``count`` points at the centroids of the most uncertain
    superpixels, spread over the scene, to label and add to the training polygons; the uncertainty is summed
    window by window of ``uncertainty.tif`` and ``segments.tif``."""
    windows = grids.read_windows(data["shape"], WINDOW, reader(scene, data, contract.UNCERTAINTY),
                                 reader(scene, data, contract.SEGMENTS_RASTER))
    per_superpixel, mapped_pixels = label_suggestions.superpixel_uncertainty(windows, len(data["labels"]))
    distance = label_suggestions.spacing(mapped_pixels, count, scene.params.patch_width)
    chosen = label_suggestions.most_uncertain(data["centroids"], per_superpixel, count, distance)
    rows, cols = data["centroids"][chosen, 0] + 0.5, data["centroids"][chosen, 1] + 0.5
    x0, dx, rx, y0, ry, dy = data["grid"].geotransform
    fields = {"id": np.arange(1, len(chosen) + 1), "superpixel": chosen,
              "map_class": [scene.class_names[c] if c < len(scene.class_names) else "" for c in data["pred_labels"][chosen]],
              "uncertainty": per_superpixel[chosen], validation_sample.REFERENCE_FIELD: [""] * len(chosen)}
    with open_outputs(scene.workdir, SUGGEST_OUTPUTS, hand_off_paths(scene)) as out:
        point_files.write_points(out.path(SUGGEST_OUTPUTS[0]), "suggested_samples", x0 + cols * dx + rows * rx,
                                 y0 + cols * ry + rows * dy, fields, data["grid"].crs_wkt)
    spread = f"uncertainty {per_superpixel[chosen].min():.3f} to {per_superpixel[chosen].max():.3f}" if len(chosen) else ""
    log.info("%s: %d superpixels, %s, at least %.0f px apart", scene.output(SUGGEST_OUTPUTS[0]), len(chosen), spread,
             distance)


def hand_off_paths(scene: Scene) -> tuple:
    """Every file Step 3 reads, which its outputs must never overwrite."""
    balanced = contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class)
    return (scene.config_path, balanced, *(handoff.path(scene.workdir) for handoff in (
        contract.REFERENCE, contract.LAYERS, contract.SEGMENTS, contract.SEGMENTS_RASTER, contract.SAMPLES,
        contract.PRED_LABELS, contract.PRED_MAP_RASTER, contract.UNCERTAINTY)),
            *([scene.validation] if scene.validation else []))


def assess_run(scene: Scene, design: bool = False, suggest: int | None = None) -> None:
    """Step 3: every assessment, the figures, ``metrics.json`` and ``report.html``, committed as one set (for a
    scene without a reference: the map's class areas and a report of the map and its uncertainty)."""
    timings = {}
    if design or suggest is not None:
        data = read_hand_offs(scene)
        return design_sample(scene, data) if design else suggest_samples(scene, data, suggest)
    with open_outputs(scene.workdir, OUTPUTS, hand_off_paths(scene)) as out:
        with cli.timed("read Step 0, 1 and 2 outputs", timings):
            data = read_hand_offs(scene)
        if data["reference"]:
            results = assess_map(scene, out, data, timings)
        else:
            results = describe_map(scene, out, data)
        cli.record_run(scene, out.path("run.json"), "Step3_Accuracy_Assessment", {"timings_s": timings, **results})


def main(argv=None) -> int:
    """Step 3 from the command line (``--help`` lists the flags)."""
    parser = cli.build_parser(__doc__, ["per_class", "target_se", "min_per_class", "sample_size"])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--design-sample", action="store_true",
                       help="write validation_sample.gpkg/.csv, a stratified random sample of the map to label, "
                            "and stop")
    modes.add_argument("--suggest", type=cli.positive_int, metavar="N", default=None,
                       help="write suggested_samples.gpkg/.csv, N points at the most uncertain superpixels to "
                            "label for training, and stop")
    parser.add_argument("--validation", type=Path, default=None, metavar="POINTS",
                        help="a labelled validation sample (GeoPackage or CSV from --design-sample) to estimate "
                             "areas and accuracy from (default: [assessment] validation in the TOML)")
    parser.add_argument("--validation-field", default=None, metavar="FIELD",
                        help="its field holding class names or [classes] values (default: reference)")
    return cli.run_step(parser, argv, assess_run, "design_sample", "suggest")


if __name__ == "__main__":
    cli.exit_process(main())
