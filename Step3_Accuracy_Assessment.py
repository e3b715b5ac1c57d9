"""Step 3, accuracy assessment (tutorial section 5), made honest.

The tutorial scores every superpixel, including the ones the CNN was trained on. Here the headline is the
**held-out test superpixels** of Step 0's spatial split (``split == 1``, label not 255); the tutorial's
all-superpixel figures are kept for comparison. Assessments (rows of every confusion matrix = reference,
columns = prediction; see ``pipeline/accuracy.py``):

- ``superpixel_test`` (headline): predicted vs majority reference label of the test superpixels;
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (tutorial);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``: a random forest on each superpixel's mean of the 8 layers, trained on
  the CNN's balanced set and scored like the headline, to show whether the CNN earns its cost.

Besides, ``area_estimates``: the area of every class in hectares and the user's, producer's and overall
accuracy, each with a 95 % confidence interval, by the stratified estimators of Olofsson et al. (2014), with
the map classes as strata and the test superpixels, weighted by their pixel counts, as the sample
(``pipeline/area_estimates.py``).

The map assessed is Step 2's ``predMap.tif``, as written. Two modes depart from the above:

- a model applied from another scene (Step 2 ``--model``) was trained on none of this scene's superpixels:
  every labelled superpixel is held out, and there is no random forest baseline (it would need this scene's
  balanced set);
- a scene without a reference: no accuracy can be assessed; ``metrics.json`` holds the map's class areas in
  hectares and ``report.html`` shows the map, its uncertainty and those areas.

Writes ``metrics.json`` (sorted keys; per assessment: ``confusion_matrix``, ``class_names``,
``overall_accuracy``, ``kappa``, ``precision``, ``recall``, ``f1``, ``support``, ``weighted_f1``,
``n_samples``, ``unit``; then ``area_estimates``; undefined values are null), ``reference_maps.png`` (pixel
and superpixel reference beside the prediction), ``disagreement_map.png``, ``split_map.png``,
``confusion_<assessment>.png`` and ``report.html``, one self-contained file with every image inside it.
"""
from __future__ import annotations

import logging
import sys

import numpy as np

import gdal_tif2rgb
from pipeline import accuracy, cli, contract, report
from pipeline.accuracy import ASSESSMENTS, AXES_NOTE
from pipeline.accuracy_figures import plot_confusion, plot_disagreement, plot_maps, plot_split
from pipeline.area_estimates import area_estimates, class_areas_ha, pixel_area
from pipeline.config import Scene
from pipeline.contract import STEP0, STEP2, TEST, UNLABELLED
from pipeline.errors import InputDataError
from pipeline.grids import paint_map
from pipeline.outputs import OutputSet, open_outputs

log = logging.getLogger(__name__)
#: Every file Step 3 writes (committed together).
OUTPUTS = ("metrics.json", "report.html", "reference_maps.png", "disagreement_map.png", "split_map.png",
           *(f"confusion_{name}.png" for name in ASSESSMENTS), "run.json")


def read_hand_offs(scene: Scene) -> dict:
    """Everything Step 3 reads but the layers (see :func:`forest_labels`): Step 0's labels, split, segments and
    reference codes (if the scene has a reference), Step 2's labels and map (``pred_map``, rows x cols uint8)
    and, for a model trained here, Step 1's balanced set; checked to come from one chain of runs on the scene
    as it is now. For an applied model, every labelled superpixel's split is ``TEST``."""
    step0, segments = contract.load_step0(scene, ["labels", "split"])
    step0_run = step0[contract.PROVENANCE]["run"]
    grid = contract.raster_grid(contract.LAYERS, scene.workdir, step0_run)
    if segments.shape != (grid.rows, grid.cols):
        raise InputDataError(f"{scene.workdir}: segments.mat and layers.tif disagree in size; rerun {STEP0}")
    pred_labels, prediction = contract.load_pred_labels(scene, step0_run)
    pred_map = contract.read_raster(contract.PRED_MAP_RASTER, scene.workdir, prediction["run"])
    data = {"segments": segments, "labels": step0["labels"], "split": step0["split"], "pred_labels": pred_labels,
            "pred_map": pred_map, "step0_run": step0_run, "codes": None, "balanced": None,
            "pixel_area_m2": pixel_area(grid, contract.LAYERS.path(scene.workdir)),
            "applied_from": prediction.get("model_scene")}
    if step0[contract.PROVENANCE]["inputs"]["reference"] is not None:
        data["codes"] = contract.read_raster(contract.REFERENCE, scene.workdir, step0_run)
    if prediction.get("step1_run") is not None:  # trained here: the forest baseline uses the same balanced set
        data["balanced"] = contract.load_balanced(scene, ["labels"], step0_run)
        if data["balanced"][contract.PROVENANCE]["run"] != prediction["step1_run"]:
            raise InputDataError(f"{contract.PRED_LABELS.path(scene.workdir)}: predicted by a model trained on "
                                 f"another balanced set than the one in {scene.workdir}; rerun {STEP2}")
    else:  # an applied model was trained on none of this scene's superpixels: every labelled one is held out
        data["split"] = np.where(data["labels"] != UNLABELLED, TEST, data["split"]).astype(np.uint8)
    return data


def forest_labels(scene: Scene, data: dict) -> np.ndarray:
    """Class of every superpixel by the random forest baseline on the superpixels' mean layers, trained on the
    superpixels of the balanced set; the means are summed window by window of ``layers.tif``."""
    def read_layers(window):
        return contract.read_raster(contract.LAYERS, scene.workdir, data["step0_run"], window)

    means = accuracy.superpixel_means(accuracy.layer_windows(read_layers, data["segments"]), len(data["labels"]))
    trained = np.unique(data["balanced"]["index"])
    return accuracy.random_forest_predictions(means, trained, data["labels"][trained], scene.params.seed)


def write_figures(out: OutputSet, data: dict, metrics: dict, block_size: int) -> None:
    """Step 3's PNGs: the maps, the disagreement map, the split map and every confusion matrix."""
    class_names, pred_map = metrics["class_names"], data["pred_map"]
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


def assess_map(scene: Scene, out: OutputSet, data: dict, timings: dict) -> dict:
    """Every assessment of the map against the reference, the figures, ``metrics.json`` and ``report.html``;
    returns the overall accuracies for ``run.json``."""
    class_names, pred_map = scene.class_names, data["pred_map"]
    forest = None
    if data["balanced"] is not None:
        with cli.timed("random forest baseline on superpixel means", timings):
            forest = forest_labels(scene, data)
    with cli.timed("assessments", timings):
        metrics = {"note": AXES_NOTE, "class_names": class_names,
                   "assessments": accuracy.assessments(data["segments"], data["codes"], data["labels"], data["split"],
                                                       data["pred_labels"], pred_map, forest, class_names),
                   "area_estimates": area_estimates(data["segments"], data["labels"], data["split"],
                                                    data["pred_labels"], pred_map, class_names, data["pixel_area_m2"])}
        if data["applied_from"]:
            metrics["applied_model_note"] = (f"The model was trained on scene {data['applied_from']}: every "
                                             f"labelled superpixel of this scene is held out.")
    with cli.timed("figures, metrics.json and report.html", timings):
        write_figures(out, data, metrics, scene.params.block_size)
        cli.write_json(out.path("metrics.json"), metrics)
        report.write_report(scene, out, metrics)
    for line in report.summary_lines(metrics):
        log.info(line)
    headline = metrics["assessments"]["superpixel_test"]
    log.info("\nheadline (held-out test superpixels): OA %s, kappa %s; report: %s", headline["overall_accuracy"],
             headline["kappa"], scene.output("report.html"))
    return {"overall_accuracy": {k: v["overall_accuracy"] for k, v in metrics["assessments"].items()}}


def describe_map(scene: Scene, out: OutputSet, data: dict) -> dict:
    """A scene without a reference: ``metrics.json`` with the class areas (hectares) and a report of the map,
    its uncertainty and the areas; returns the areas for ``run.json``."""
    k = len(scene.class_names)
    areas = class_areas_ha(np.bincount(data["pred_map"].ravel(), minlength=k)[:k], data["pixel_area_m2"])
    metrics = {"note": "no reference: the map's class areas only (no accuracy can be assessed)",
               "class_names": scene.class_names, "class_areas_ha": dict(zip(scene.class_names, np.round(areas, 2))),
               "total_area_ha": round(float(areas.sum()), 2), "model_scene": data["applied_from"]}
    cli.write_json(out.path("metrics.json"), metrics)
    report.write_map_page(scene, out, areas, data["applied_from"])
    log.info("class areas (ha): %s; report: %s", metrics["class_areas_ha"], scene.output("report.html"))
    return {"class_areas_ha": metrics["class_areas_ha"]}


def assess_run(scene: Scene) -> None:
    """Step 3: every assessment, the figures, ``metrics.json`` and ``report.html``, committed as one set (for a
    scene without a reference: the map's class areas and a report of the map and its uncertainty)."""
    timings = {}
    balanced = contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class)
    inputs = (scene.config_path, balanced, *(handoff.path(scene.workdir) for handoff in (
        contract.REFERENCE, contract.LAYERS, contract.SEGMENTS, contract.SAMPLES, contract.PRED_LABELS,
        contract.PRED_MAP_RASTER)))
    with open_outputs(scene.workdir, OUTPUTS, inputs) as out:
        with cli.timed("read Step 0, 1 and 2 outputs", timings):
            data = read_hand_offs(scene)
        if data["codes"] is None:
            results = describe_map(scene, out, data)
        else:
            results = assess_map(scene, out, data, timings)
        cli.record_run(scene, out.path("run.json"), "Step3_Accuracy_Assessment", {"timings_s": timings, **results})


def main(argv=None) -> int:
    """Step 3 from the command line (``--help`` lists the flags)."""
    return cli.run_step(cli.build_parser(__doc__, ["per_class"]), argv, assess_run)


if __name__ == "__main__":
    sys.exit(main())
