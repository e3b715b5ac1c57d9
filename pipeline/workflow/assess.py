"""Step 3's work (tutorial section 5): the hand-offs it holds whole, the map assessed against the reference (or
described, without one), and the two sample modes: a validation sample to label, superpixels to label for
training.

The rasters (``predMap.tif``, ``segments.tif``, ``reference.tif``, ``layers.tif``, ``uncertainty.tif``) are read
window by window of :data:`WINDOW` px, so Step 3's memory is bounded by a window, not by the scene.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gdal_tif2rgb import Grid
from pipeline.assessment import accuracy, label_suggestions, pixel_counts, report, report_text, validation_sample
from pipeline.assessment.accuracy import ASSESSMENTS, AXES_NOTE
from pipeline.assessment.accuracy_figures import plot_confusion, plot_disagreement, plot_maps, plot_split
from pipeline.assessment.area_estimates import (AGRESTI_CAFFO_2000, AGRESTI_COULL_1998, OLOFSSON_2014, STEHMAN_2014,
                                                class_areas_ha, estimates, held_out_estimates, pixel_area)
from pipeline.core import grids
from pipeline.core.errors import InputDataError
from pipeline.core.grids import paint_map
from pipeline.core.vocabulary import STEP0, STEP2, TEST, UNLABELLED
from pipeline.handoffs import checks, contract
from pipeline.inputs import point_files
from pipeline.model import forest
from pipeline.run import cli, files
from pipeline.run.config import Scene
from pipeline.run.outputs import OutputSet, open_outputs
from pipeline.segmentation.split import block_of
from pipeline.workflow import forest_features

log = logging.getLogger(__name__)
#: Every file Step 3 writes (committed together).
OUTPUTS = ("metrics.json", "report.html", "reference_maps.png", "disagreement_map.png", "split_map.png",
           *(f"confusion_{name}.png" for name in ASSESSMENTS), "run.json")
DESIGN_OUTPUTS = ("validation_sample.gpkg", "validation_sample.csv")
SUGGEST_OUTPUTS = ("suggested_samples.gpkg", "suggested_samples.csv")
#: Side in pixels of the square windows in which Step 3 reads the rasters: a window of the 8 float32 layers takes
#: 32 MiB, one of the segments (int32), the map and the reference codes (uint8) 6 MiB, whatever the scene's size.
WINDOW = 1024


@dataclass(frozen=True)
class HandOffs:
    """What Step 3 holds whole of the hand-offs of Steps 0-2; arrays have one entry per superpixel (n).

    Attributes
    ----------
    labels : (n,) uint8 majority reference class code (255 = unlabelled).
    split : (n,) uint8 split code (TRAIN, TEST, UNUSED); for an applied model every labelled superpixel is TEST.
    centroids : (n, 2) int32 row, column of the patch centres.
    block : (n,) the spatial split's block of each superpixel (:func:`~pipeline.segmentation.split.block_of`).
    pred_labels : (n,) uint8 class codes predicted by Step 2 (255 = no valid pixel).
    step0_record, step2_record : the provenance of the Step 0 run and of the Step 2 run that made the map.
    has_reference : whether the scene has a reference (``reference.tif``).
    balanced_index : the superpixel of each sample of Step 1's balanced set the model was trained on; None for a
        model applied from another scene.
    grid : the grid of ``layers.tif`` (every raster's).
    pixel_area_m2 : the area of one pixel, square metres.
    applied_from : the scene the applied model was trained on; None for a model trained here.
    applied_model : Step 2's comparison of the scene with the applied model's training scene (None if none).
    classifier : what made the map: ``"cnn"`` or ``"forest"`` (Step 2's ``classifier``; older maps: ``"cnn"``).
    """

    labels: np.ndarray
    split: np.ndarray
    centroids: np.ndarray
    block: np.ndarray
    pred_labels: np.ndarray
    step0_record: dict
    step2_record: dict
    has_reference: bool
    balanced_index: np.ndarray | None
    grid: Grid
    pixel_area_m2: float
    applied_from: str | None
    applied_model: dict | None
    classifier: str = "cnn"

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the scene, pixels."""
        return self.grid.rows, self.grid.cols

    @property
    def map_run(self) -> str:
        """The run id of the Step 2 run that made the map."""
        return self.step2_record["run"]


def read_hand_offs(scene: Scene) -> HandOffs:
    """Everything Step 3 holds whole, checked to come from one chain of runs on the scene as it is now, with
    ``segments.tif``, ``predMap.tif`` and (if the scene has a ``reference``) ``reference.tif`` on the grid of
    ``layers.tif``. The rasters are read window by window (:func:`reader`)."""
    step0, _ = contract.load_step0(scene, ["labels", "split", "centroids"], with_segments=False)
    record = step0[contract.PROVENANCE]
    grid = contract.raster_grid(contract.layers_raster(contract.layer_names_of_run(record)), scene.workdir, record)
    for axis, size in enumerate((grid.rows, grid.cols)):  # the blocks of the test split are found by them
        checks.check_below(contract.SAMPLES.path(scene.workdir), "centroids", step0["centroids"][:, axis], size, STEP0)
    pred_labels, prediction = contract.load_pred_labels(scene, record["run"], len(step0["labels"]))
    has_reference = record["inputs"]["reference"] is not None
    for handoff, provenance in ((contract.SEGMENTS_RASTER, record), (contract.PRED_MAP_RASTER, prediction),
                                *([(contract.REFERENCE, record)] if has_reference else [])):
        other = contract.raster_grid(handoff, scene.workdir, provenance)
        if (other.rows, other.cols) != (grid.rows, grid.cols):
            raise InputDataError(f"{handoff.path(scene.workdir)}: {other.cols} x {other.rows} px, but layers.tif "
                                 f"{grid.cols} x {grid.rows}; rerun {handoff.made_by}")
    split, balanced_index = step0["split"], None
    if prediction.get("step1_run") is not None:  # trained here: the forest baseline uses the same balanced set
        balanced = contract.load_balanced(scene, ["labels"], record, len(step0["labels"]))
        if balanced[contract.PROVENANCE]["run"] != prediction["step1_run"]:
            raise InputDataError(f"{contract.PRED_LABELS.path(scene.workdir)}: predicted by a model trained on "
                                 f"another balanced set than the one in {scene.workdir}; rerun {STEP2}")
        balanced_index = balanced["index"]
    else:  # an applied model was trained on none of this scene's superpixels: every labelled one is held out
        split = np.where(step0["labels"] != UNLABELLED, TEST, split).astype(np.uint8)
    return HandOffs(labels=step0["labels"], split=split, centroids=step0["centroids"],
                    block=block_of(step0["centroids"], (grid.rows, grid.cols), scene.params.block_size),
                    pred_labels=pred_labels, step0_record=record, step2_record=prediction,
                    has_reference=has_reference, balanced_index=balanced_index, grid=grid,
                    pixel_area_m2=pixel_area(grid, contract.LAYERS.path(scene.workdir)),
                    applied_from=prediction.get("model_scene"), applied_model=prediction.get("applied_model"),
                    classifier=prediction.get("classifier", "cnn"))


def hand_off_paths(scene: Scene) -> tuple:
    """Every file Step 3 reads, which its outputs must never overwrite."""
    balanced = contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class)
    return (scene.config_path, balanced, *(handoff.path(scene.workdir) for handoff in (
        contract.REFERENCE, contract.LAYERS, contract.SEGMENTS, contract.SEGMENTS_RASTER, contract.SAMPLES,
        contract.PRED_LABELS, contract.PRED_MAP_RASTER, contract.UNCERTAINTY)),
            *([scene.validation] if scene.validation else []))


def reader(scene: Scene, hand_offs: HandOffs, handoff: contract.RasterHandOff):
    """``read(window=None)``: the raster hand-off ``handoff`` of the runs of ``hand_offs``, whole or a window
    (row, col, rows, cols)."""
    record = hand_offs.step2_record if handoff.made_by == STEP2 else hand_offs.step0_record
    return lambda window=None: contract.read_raster(handoff, scene.workdir, record, window)


def count_scene(scene: Scene, hand_offs: HandOffs, forest: np.ndarray | None = None) -> pixel_counts.PixelCounts:
    """The map's pixel counts against the reference and the previews, window by window of :data:`WINDOW` px
    (for a scene without a reference, the map's class counts only), and those of the random forest's map where its
    class of each superpixel, ``forest`` (n,), is given."""
    read_map, read_codes, read_segments = (reader(scene, hand_offs, handoff) for handoff in (
        contract.PRED_MAP_RASTER, contract.REFERENCE, contract.SEGMENTS_RASTER))

    def read(window):
        if not hand_offs.has_reference:
            return read_map(window), None, None
        return read_map(window), read_codes(window), read_segments(window)

    return pixel_counts.count_pixels(read, hand_offs.shape, WINDOW, len(scene.class_names), hand_offs.labels,
                                     hand_offs.split, hand_offs.block, forest)


def forest_labels(scene: Scene, hand_offs: HandOffs) -> np.ndarray:
    """Class of every superpixel by the random forest baseline on the superpixels' mean and standard deviation of
    every band of the image and of NDVI, NDWI and NDBI (:func:`~pipeline.workflow.forest_features.scene_features`),
    trained on the superpixels of the CNN's balanced set."""
    features = forest_features.scene_features(scene, hand_offs.step0_record, len(hand_offs.labels))
    trained = np.unique(hand_offs.balanced_index)
    return forest.predictions(features, trained, hand_offs.labels[trained], scene.params.training_seed)


def held_out(scene: Scene, hand_offs: HandOffs, counts: pixel_counts.PixelCounts) -> dict:
    """``metrics.json``'s ``area_estimates``: the estimates from the held-out test blocks."""
    return held_out_estimates(counts, hand_offs.labels, hand_offs.split, hand_offs.block, scene.class_names,
                              hand_offs.pixel_area_m2, scene.params.block_size)


def absent_classes(counts: pixel_counts.PixelCounts, labels: np.ndarray, split: np.ndarray, class_names) -> dict:
    """The classes the reference holds (any pixel of ``counts.reference_pixels``) that the map never gives
    (``map``) or that no test superpixel carries (``test_set``), by name, from the superpixels' ``labels`` and
    ``split`` (n,): ``metrics.json``'s ``absent_classes``."""
    held = counts.reference_pixels > 0
    tested = np.bincount(labels[(split == TEST) & (labels != UNLABELLED)], minlength=len(class_names)) > 0
    return {"map": [name for name, h, m in zip(class_names, held, counts.map_pixels) if h and not m],
            "test_set": [name for name, h, t in zip(class_names, held, tested) if h and not t]}


def masked_area_ha(counts: pixel_counts.PixelCounts, pixel_area_m2: float) -> float:
    """Hectares of the scene that are masked (clouds, shadows, nodata): mapped as no class, in no class's area."""
    return round(counts.masked * pixel_area_m2 / 1e4, 2)


def write_figures(out: OutputSet, hand_offs: HandOffs, counts: pixel_counts.PixelCounts, metrics: dict,
                  block_size: int) -> None:
    """Step 3's PNGs, the maps from the previews: the maps, the disagreement map, the split map and every
    confusion matrix."""
    class_names, previews = metrics["class_names"], counts.previews
    superpixel_reference = paint_map(hand_offs.labels, previews["segments"], UNLABELLED)
    grid = hand_offs.grid
    files.save_png(out.path("reference_maps.png"), plot_maps(previews["codes"], superpixel_reference, previews["map"],
                                                             class_names, grid=grid))
    files.save_png(out.path("disagreement_map.png"),
                   plot_disagreement(previews["codes"], previews["map"], counts.disagreement_share, grid=grid))
    title = (f"Spatial split: held-out test superpixels in {block_size} px blocks" if hand_offs.applied_from is None
             else f"Every labelled superpixel held out (model trained on {hand_offs.applied_from})")
    files.save_png(out.path("split_map.png"), plot_split(hand_offs.labels, hand_offs.split, previews["segments"], title,
                                                         grid=grid))
    for name, result in metrics["assessments"].items():
        files.save_png(out.path(f"confusion_{name}.png"), plot_confusion(result, name))


def assess_map(scene: Scene, out: OutputSet, hand_offs: HandOffs, timings: dict, validation: dict | None) -> dict:
    """Every assessment of the map against the reference (and the estimates from the ``validation`` points of
    :func:`validation_points`, if any), the figures, ``metrics.json`` and ``report.html``; returns the overall
    accuracies for ``run.json``."""
    class_names = scene.class_names
    forest = None
    if hand_offs.balanced_index is not None and hand_offs.classifier == "cnn":  # a forest's map has no peer here
        with cli.timed("random forest baseline on superpixel means and standard deviations", timings):
            forest = forest_labels(scene, hand_offs)
    with cli.timed("assessments", timings):
        counts = count_scene(scene, hand_offs, forest)
        metrics = {"note": AXES_NOTE, "class_names": class_names, **classifier_entries(hand_offs),
                   "assessments": accuracy.assessments(counts, hand_offs.labels, hand_offs.split,
                                                       hand_offs.pred_labels, forest, class_names),
                   "area_estimates": held_out(scene, hand_offs, counts),
                   "masked_area_ha": masked_area_ha(counts, hand_offs.pixel_area_m2),
                   "absent_classes": absent_classes(counts, hand_offs.labels, hand_offs.split, class_names)}
        if forest is not None:
            metrics["cnn_minus_forest"] = accuracy.forest_comparison(counts, hand_offs.labels, hand_offs.split,
                                                                     hand_offs.block, hand_offs.pred_labels, forest)
        if validation is not None:
            metrics["validation_sample"] = validation_estimates(scene, hand_offs, counts, validation)
        if hand_offs.applied_from:
            metrics["applied_model_note"] = (f"The model was trained on scene {hand_offs.applied_from}: every "
                                             f"labelled superpixel of this scene is held out.")
            metrics["applied_model"] = hand_offs.applied_model
    with cli.timed("figures, metrics.json and report.html", timings):
        write_figures(out, hand_offs, counts, metrics, scene.params.block_size)
        cli.write_json(out.path("metrics.json"), metrics)
        report.write_report(scene, out, metrics)
    for line in report.summary_lines(metrics):
        log.info(line)
    if report_text.absent_text(metrics):
        log.warning(report_text.absent_text(metrics))
    log.info("\nheadline: %s; report: %s", report_text.headline_text(metrics), scene.output("report.html"))
    return {"overall_accuracy": {k: v["overall_accuracy"] for k, v in metrics["assessments"].items()}}


def classifier_entries(hand_offs: HandOffs) -> dict:
    """``metrics.json``'s ``classifier`` (what made the map: ``"cnn"`` or ``"forest"``) and, for a forest's map, the
    ``classifier_note`` saying why it is not compared with the random forest baseline."""
    if hand_offs.classifier != "forest":
        return {"classifier": hand_offs.classifier}
    return {"classifier": "forest", "classifier_note": (
        f"The map is the random forest's (Step 2 with classifier = forest), on {accuracy.FOREST_FEATURES}: it is "
        f"not compared with the random forest baseline, which is the same forest.")}


def describe_map(scene: Scene, out: OutputSet, hand_offs: HandOffs, validation: dict | None) -> dict:
    """A scene without a reference: ``metrics.json`` with the class areas (hectares), the estimates from the
    ``validation`` points of :func:`validation_points` (if any) and a report of the map, its uncertainty and the
    areas; returns the areas for ``run.json``."""
    counts = count_scene(scene, hand_offs)
    areas = class_areas_ha(counts.map_pixels, hand_offs.pixel_area_m2)
    metrics = {"note": "no reference: the map's class areas only (no accuracy can be assessed)",
               "class_names": scene.class_names, "class_areas_ha": {name: round(float(area), 2) for name, area in zip(scene.class_names, areas)},
               "total_area_ha": round(float(areas.sum()), 2),
               "masked_area_ha": masked_area_ha(counts, hand_offs.pixel_area_m2),
               "model_scene": hand_offs.applied_from, "applied_model": hand_offs.applied_model,
               **classifier_entries(hand_offs)}
    if validation is not None:
        metrics["validation_sample"] = validation_estimates(scene, hand_offs, counts, validation)
    cli.write_json(out.path("metrics.json"), metrics)
    report.write_map_page(scene, out, areas, hand_offs.applied_from, metrics.get("validation_sample"),
                          hand_offs.applied_model, metrics["masked_area_ha"], metrics)
    log.info("class areas (ha): %s; report: %s", metrics["class_areas_ha"], scene.output("report.html"))
    return {"class_areas_ha": metrics["class_areas_ha"]}


def validation_points(scene: Scene, hand_offs: HandOffs) -> dict | None:
    """The labelled points of ``scene.validation`` (None without one) as the estimators take them
    (``validation_sample.labelled_units``), every check of the file made against the map: called before any long
    work, so that a bad file fails at once. The map's class pixels are counted window by window for it."""
    if scene.validation is None:
        return None
    x, y, columns = point_files.read_points(scene.validation, hand_offs.grid.crs_wkt)
    read_map = reader(scene, hand_offs, contract.PRED_MAP_RASTER)
    k = len(scene.class_names)
    map_pixels = sum(np.bincount(window.ravel(), minlength=256)[:k]
                     for window, in grids.read_windows(hand_offs.shape, WINDOW, read_map))

    def map_at(rows, cols):
        return grids.pixel_values(read_map, hand_offs.shape, WINDOW, rows, cols)

    return validation_sample.labelled_units(scene.validation, x, y, columns, scene.validation_field, scene.classes,
                                            map_at, map_pixels, hand_offs.grid, hand_offs.pixel_area_m2,
                                            hand_offs.map_run)


def validation_estimates(scene: Scene, hand_offs: HandOffs, counts: pixel_counts.PixelCounts, units: dict) -> dict:
    """Areas and accuracies from the labelled validation sample ``scene.validation`` (designed by
    :func:`design_sample`; ``units`` from :func:`validation_points`), by the stratified estimators, for
    ``metrics.json``'s ``validation_sample``; the map's class areas are those of ``counts``."""
    result = estimates(units["tables"], units["strata"], units["population_units"],
                       class_areas_ha(counts.map_pixels, hand_offs.pixel_area_m2), scene.class_names)
    log.info("validation sample %s: %d labelled points, %d without a reference left out", scene.validation.name,
             units["sample"]["labelled"], units["sample"]["unlabelled_left_out"])
    return {**result, "sample": {**units["sample"], "references": [OLOFSSON_2014, STEHMAN_2014, AGRESTI_COULL_1998,
                                                                   AGRESTI_CAFFO_2000]},
            "pixel_area_m2": hand_offs.pixel_area_m2}


def keep_labels(scene: Scene) -> None:
    """``--design-sample`` replaces ``validation_sample.gpkg`` and ``.csv`` only while they hold no label: every
    field but the design's own (:data:`~pipeline.assessment.validation_sample.DESIGN_FIELDS`, and ``x``, ``y`` of
    the CSV; ``--validation-field`` is never one of those) must be empty on every point of every layer. A file
    with a value in any other field, or that cannot be read to tell, is a one-line error: nothing is written."""
    design_fields = set(validation_sample.DESIGN_FIELDS) - {scene.validation_field}
    for path in map(scene.output, DESIGN_OUTPUTS):
        if not (path.exists() or path.is_symlink()):
            continue
        try:
            columns = point_files.read_fields(path)
        except (InputDataError, OSError) as error:
            reason = str(error).removeprefix(f"{path}: ")
            raise InputDataError(f"{path}: cannot be read to tell whether it holds labels ({reason}); move it "
                                 f"elsewhere before designing a new sample") from None
        filled = [name for name, values in columns.items() if name not in design_fields | {"x", "y"}
                  and any(value is not None and str(value).strip() for value in values)]
        if filled:
            raise InputDataError(f"{path}: holds labelled points (field {', '.join(filled[:5])}); move it elsewhere "
                                 f"before designing a new sample, your labels are kept")


def design_sample(scene: Scene) -> None:
    """``validation_sample.gpkg`` and ``.csv``: a stratified random sample of the map to label (see
    ``pipeline/assessment/validation_sample.py``), sized for ``target_se`` with the held-out user's accuracies (if
    any). The draw reads the map whole (uint8, one byte a pixel)."""
    keep_labels(scene)
    hand_offs = read_hand_offs(scene)
    existing = scene.output(DESIGN_OUTPUTS[0])
    users = [None] * len(scene.class_names)
    if hand_offs.has_reference:
        classes = held_out(scene, hand_offs, count_scene(scene, hand_offs))["classes"]
        users = [entry["users_accuracy"] for entry in classes.values()]
    params = scene.params
    pred_map = reader(scene, hand_offs, contract.PRED_MAP_RASTER)()
    sample = validation_sample.design(pred_map, hand_offs.grid, scene.class_names, hand_offs.pixel_area_m2, users,
                                      params.target_se, params.min_per_class, params.sample_size, hand_offs.map_run,
                                      np.random.default_rng(params.sample_seed))
    with open_outputs(scene.workdir, DESIGN_OUTPUTS, hand_off_paths(scene)) as out:
        point_files.write_points(out.path(DESIGN_OUTPUTS[0]), "validation_sample", sample["x"], sample["y"],
                                 sample["fields"], hand_offs.grid.crs_wkt)
    summary = sample["summary"]
    log.info("%s: %d points (sample_seed %d); %s; %s", existing, summary["points"], params.sample_seed,
             summary["size_rule"], summary["allocation"])
    for name, stratum in summary["strata"].items():
        log.info("%12s  %10.1f ha  %5d points", name, stratum["area_ha"], stratum["points"])
    log.info("label the field '%s' in QGIS, then run Step 3 with --validation %s", validation_sample.REFERENCE_FIELD,
             existing)


def suggest_samples(scene: Scene, count: int) -> None:
    """``suggested_samples.gpkg`` and ``.csv``: ``count`` points at the centroids of the most uncertain
    superpixels, spread over the scene, to label and add to the training polygons; the uncertainty is summed
    window by window of ``uncertainty.tif`` and ``segments.tif``."""
    hand_offs = read_hand_offs(scene)
    windows = grids.read_windows(hand_offs.shape, WINDOW, reader(scene, hand_offs, contract.UNCERTAINTY),
                                 reader(scene, hand_offs, contract.SEGMENTS_RASTER))
    per_superpixel, mapped_pixels = label_suggestions.superpixel_uncertainty(windows, len(hand_offs.labels))
    distance = label_suggestions.spacing(mapped_pixels, count, scene.params.patch_width)
    chosen = label_suggestions.most_uncertain(hand_offs.centroids, per_superpixel, count, distance)
    x, y = hand_offs.grid.xy(hand_offs.centroids[chosen, 0], hand_offs.centroids[chosen, 1])
    chosen_uncertainty = per_superpixel[chosen]
    names = scene.class_names
    fields = {"id": np.arange(1, len(chosen) + 1), "superpixel": chosen,
              "map_class": [names[c] if c < len(names) else "" for c in hand_offs.pred_labels[chosen]],
              "uncertainty": chosen_uncertainty, validation_sample.REFERENCE_FIELD: [""] * len(chosen)}
    with open_outputs(scene.workdir, SUGGEST_OUTPUTS, hand_off_paths(scene)) as out:
        point_files.write_points(out.path(SUGGEST_OUTPUTS[0]), "suggested_samples", x, y, fields,
                                 hand_offs.grid.crs_wkt)
    spread = (f"uncertainty {chosen_uncertainty.min():.3f} to {chosen_uncertainty.max():.3f}"
              if len(chosen) else "")
    log.info("%s: %d superpixels, %s, at least %.0f px apart", scene.output(SUGGEST_OUTPUTS[0]), len(chosen), spread,
             distance)
