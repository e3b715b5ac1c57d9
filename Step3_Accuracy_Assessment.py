"""Step 3, accuracy assessment (tutorial section 5), made honest.

The tutorial scores every superpixel, including the ones the CNN was trained on. Here the headline is the
**held-out test superpixels** of Step 0's spatial split (``split == 1``, label not 255); the tutorial's
all-superpixel figures are kept for comparison. Assessments (rows of every confusion matrix = reference,
columns = prediction):

- ``superpixel_test`` (headline): predicted vs majority reference label of the test superpixels;
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (tutorial);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``: a random forest on each superpixel's mean of the 8 layers, trained on
  the CNN's balanced set and scored like the headline, to show whether the CNN earns its cost.

Writes ``metrics.json`` (sorted keys; per assessment: ``confusion_matrix``, ``class_names``,
``overall_accuracy``, ``kappa``, ``precision``, ``recall``, ``f1``, ``support``, ``weighted_f1``,
``n_samples``, ``unit``; undefined values are null), ``reference_maps.png`` (pixel and superpixel reference
beside the prediction), ``confusion_<assessment>.png`` and ``report.html``.
"""
from __future__ import annotations

import html
import logging
import sys

import numpy as np

import gdal_tif2rgb
from pipeline import cli, contract
from pipeline.config import Scene
from pipeline.contract import LAYER_NAMES, STEP0, TEST, UNLABELLED
from pipeline.errors import InputDataError
from pipeline.figures import plot_class_map, pyplot
from pipeline.grids import paint_map
from pipeline.outputs import OutputSet, open_outputs

log = logging.getLogger(__name__)
AXES_NOTE = "confusion matrix rows = reference, columns = prediction"
ASSESSMENTS = ("superpixel_test", "superpixel_all_labelled", "pixel_test", "segmentation_ceiling",
               "random_forest_superpixel_test")
#: Every file Step 3 writes (committed together).
OUTPUTS = ("metrics.json", "report.html", "reference_maps.png", *(f"confusion_{name}.png" for name in ASSESSMENTS),
           "run.json")


def assess(reference: np.ndarray, predicted: np.ndarray, class_names, unit: str) -> dict:
    """Confusion matrix, overall accuracy, Cohen's kappa, per-class precision (user's accuracy), recall
    (producer's accuracy), F1 and weighted F1 of class codes, computed with scikit-learn.

    Predictions outside the classes (255) count as errors. Undefined values (a class never predicted or
    never present) are ``None``.

    >>> result = assess(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b"], "superpixels")
    >>> result["confusion_matrix"], result["overall_accuracy"], result["precision"]
    ([[1, 1], [0, 2]], 0.75, [1.0, 0.667])
    """
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    codes = list(range(len(class_names)))
    if reference.size == 0:
        raise InputDataError(f"no {unit} to assess: the test split holds no labelled superpixel")
    matrix = confusion_matrix(reference, predicted, labels=codes)
    precision, recall, f1, support = precision_recall_fscore_support(reference, predicted, labels=codes,
                                                                     zero_division=np.nan)
    weighted_f1 = precision_recall_fscore_support(reference, predicted, labels=codes, average="weighted",
                                                  zero_division=np.nan)[2]
    return {"class_names": list(class_names), "unit": unit, "n_samples": int(reference.size),
            "confusion_matrix": matrix.tolist(), "overall_accuracy": _rounded(accuracy_score(reference, predicted)),
            "kappa": _rounded(cohen_kappa_score(reference, predicted, labels=codes)),
            "precision": [_rounded(v) for v in precision], "recall": [_rounded(v) for v in recall],
            "f1": [_rounded(v) for v in f1], "support": support.tolist(), "weighted_f1": _rounded(weighted_f1)}


def _rounded(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 3)


def superpixel_means(layers: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean of every layer over each superpixel's pixels: float32 (n, layers), from ``layers`` (rows, cols, c)."""
    flat = segments.ravel()
    sizes = np.bincount(flat)
    return np.stack([np.bincount(flat, weights=layers[..., i].ravel()) / sizes
                     for i in range(layers.shape[-1])], axis=1).astype(np.float32)


def random_forest_predictions(features: np.ndarray, train_index: np.ndarray, train_labels: np.ndarray,
                              seed: int) -> np.ndarray:
    """Class of every superpixel by a random forest (300 trees) trained on ``features[train_index]``."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1)
    forest.fit(features[train_index], train_labels)
    return forest.predict(features).astype(np.uint8)


def assessments(segments, codes, labels, split, pred_labels, pred_map, forest_labels, class_names) -> dict:
    """All assessments of Step 3, keyed by name (see the module docstring)."""
    scored = labels != UNLABELLED
    test = scored & (split == TEST)
    test_pixels = test[segments] & (codes != UNLABELLED)
    ceiling_map = paint_map(labels, segments)
    return {
        "superpixel_test": assess(labels[test], pred_labels[test], class_names, "test superpixels"),
        "superpixel_all_labelled": assess(labels[scored], pred_labels[scored], class_names,
                                          "labelled superpixels, training ones included"),
        "pixel_test": assess(codes[test_pixels], pred_map[test_pixels], class_names,
                             "labelled pixels of test superpixels"),
        "segmentation_ceiling": assess(codes[test_pixels], ceiling_map[test_pixels], class_names,
                                       "labelled pixels of test superpixels, each superpixel given its reference label"),
        "random_forest_superpixel_test": assess(labels[test], forest_labels[test], class_names,
                                                "test superpixels, random forest on superpixel means"),
    }


def plot_confusion(result: dict, title: str):
    """Heat map of a confusion matrix with counts and row shares; returns the Figure."""
    matrix = np.array(result["confusion_matrix"])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = pyplot().subplots(figsize=(5.5, 4.8))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = result["class_names"]
    axis.set_xticks(range(len(names)), names, rotation=30)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("prediction")
    axis.set_ylabel("reference")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, f"{count}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                  color="white" if shares[i, j] > 0.6 else "black")
    figure.colorbar(image, ax=axis, label="share of the reference row")
    axis.set_title(f"{title}\nOA {result['overall_accuracy']}, kappa {result['kappa']} ({result['n_samples']} "
                   f"{result['unit'].split(',')[0]})", fontsize=9)
    return figure


def plot_maps(codes: np.ndarray, superpixel_reference: np.ndarray, pred_map: np.ndarray, class_names):
    """Pixel reference, superpixel reference and prediction side by side (tutorial Figs 5.1, 5.2)."""
    figure, axes = pyplot().subplots(1, 3, figsize=(18, 6.5))
    for axis, (image, title) in zip(axes, ((codes, "Reference, pixel-based (black = unlabelled)"),
                                           (superpixel_reference, "Reference, superpixel-based (majority)"),
                                           (pred_map, "Prediction (CNN)"))):
        plot_class_map(image, class_names, title, axis)
    return figure


def summary_lines(metrics: dict) -> list[str]:
    """A readable summary like the tutorial's Fig 5.4: per class precision/recall/F1, then OA and kappa."""
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
    return lines


def write_report(scene: Scene, out: OutputSet, metrics: dict) -> None:
    """One-page ``report.html`` with the composites, the maps, the confusion matrices and the figures."""
    def table(result):
        head = "".join(f"<th>{html.escape(n)}</th>" for n in result["class_names"])
        rows = "".join(f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                       for n, row in zip(result["class_names"], result["confusion_matrix"]))
        scores = "".join(f"<tr><th>{k}</th>" + "".join(f"<td>{'&ndash;' if v is None else v}</td>"
                                                       for v in result[k]) + "</tr>"
                         for k in ("precision", "recall", "f1", "support"))
        return (f"<table><tr><th>reference \\ prediction</th>{head}</tr>{rows}</table>"
                f"<table><tr><th></th>{head}</tr>{scores}</table>")

    headline = metrics["assessments"]["superpixel_test"]
    sections = "".join(
        f"<section><h3>{name}</h3><p>{html.escape(result['unit'])}: {result['n_samples']}. "
        f"OA <b>{result['overall_accuracy']}</b>, kappa {result['kappa']}, weighted F1 {result['weighted_f1']}</p>"
        f"<img src='confusion_{name}.png' alt='confusion matrix'>{table(result)}</section>"
        for name, result in metrics["assessments"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(scene.name)}: land-cover report</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}} img{{max-width:100%}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #bbb;padding:2px 8px;text-align:right}}
section{{display:inline-block;vertical-align:top;width:45%;margin:1em}} .row img{{width:32%}}</style></head><body>
<h1>Land-cover map of {html.escape(scene.name)}</h1>
<p>Held-out test superpixels: overall accuracy <b>{headline['overall_accuracy']}</b>, kappa {headline['kappa']}
(random forest baseline {metrics['assessments']['random_forest_superpixel_test']['overall_accuracy']};
segmentation ceiling {metrics['assessments']['segmentation_ceiling']['overall_accuracy']}).
Confusion matrices: rows = reference, columns = prediction. Image: {html.escape(str(scene.image))}.</p>
<div class="row"><img src="rgb.png" alt="RGB"><img src="nir_green_blue.png" alt="NIR-G-B"><img src="segments_boundaries.png" alt="superpixels"></div>
<img src="reference_maps.png" alt="reference and predicted maps"><img src="learning_curve.png" alt="learning curve">
{sections}
<p>Full figures: metrics.json. Parameters and input checksums: run.json.</p></body></html>"""
    with gdal_tif2rgb.atomic_output(out.path("report.html")) as temporary:
        temporary.write_text(page)


def read_hand_offs(scene: Scene) -> dict:
    """Everything Step 3 reads: reference codes, Step 0's labels, split, segments and layers, Step 1's balanced
    set and Step 2's labels, checked to come from one chain of runs on the scene as it is now."""
    step0, segments = contract.load_step0(scene, ["labels", "split"])
    step0_run = step0[contract.PROVENANCE]["run"]
    for raster in (contract.REFERENCE_TIF, contract.LAYERS_TIF):
        contract.check_raster_run(scene.output(raster), step0_run)
    codes, grid, _ = gdal_tif2rgb.read_labels(scene.output(contract.REFERENCE_TIF))
    if segments.shape != (grid.rows, grid.cols):
        raise InputDataError(f"{scene.workdir}: segments.mat and reference.tif disagree in size; rerun {STEP0}")
    layers, _, _ = gdal_tif2rgb.read_bands(scene.output(contract.LAYERS_TIF), list(range(1, len(LAYER_NAMES) + 1)))
    balanced = contract.load_balanced(scene, ["labels"], step0_run)
    pred_labels = contract.load_pred_labels(scene, step0_run, balanced[contract.PROVENANCE]["run"])
    return {"codes": codes.astype(np.uint8), "segments": segments, "labels": step0["labels"], "split": step0["split"],
            "pred_labels": pred_labels, "layers": np.moveaxis(layers, 0, -1), "balanced": balanced}


def assess_run(scene: Scene) -> None:
    """Step 3: every assessment, the figures, ``metrics.json`` and ``report.html``, committed as one set."""
    timings = {}
    class_names = scene.class_names
    inputs = (scene.config_path, *(scene.output(name) for name in (
        contract.REFERENCE_TIF, contract.LAYERS_TIF, contract.SEGMENTS.filename, contract.SAMPLES.filename,
        contract.PRED_LABELS.filename, contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class).name)))
    with open_outputs(scene.workdir, OUTPUTS, inputs) as out:
        with cli.timed("read reference, Step 0, 1 and 2 outputs", timings):
            data = read_hand_offs(scene)
        pred_map = paint_map(data["pred_labels"], data["segments"])
        with cli.timed("random forest baseline on superpixel means", timings):
            trained = np.unique(data["balanced"]["index"])
            forest_labels = random_forest_predictions(superpixel_means(data["layers"], data["segments"]), trained,
                                                      data["labels"][trained], scene.params.seed)
        with cli.timed("assessments", timings):
            metrics = {"note": AXES_NOTE, "class_names": class_names,
                       "assessments": assessments(data["segments"], data["codes"], data["labels"], data["split"],
                                                  data["pred_labels"], pred_map, forest_labels, class_names)}
        with cli.timed("figures, metrics.json and report.html", timings):
            superpixel_reference = paint_map(data["labels"], data["segments"])
            gdal_tif2rgb.save_png(out.path("reference_maps.png"),
                                  plot_maps(data["codes"], superpixel_reference, pred_map, class_names))
            for name, result in metrics["assessments"].items():
                gdal_tif2rgb.save_png(out.path(f"confusion_{name}.png"), plot_confusion(result, name))
            cli.write_json(out.path("metrics.json"), metrics)
            write_report(scene, out, metrics)
        for line in summary_lines(metrics):
            log.info(line)
        headline = metrics["assessments"]["superpixel_test"]
        log.info("\nheadline (held-out test superpixels): OA %s, kappa %s; report: %s", headline["overall_accuracy"],
                 headline["kappa"], scene.output("report.html"))
        cli.record_run(scene, out.path("run.json"), "Step3_Accuracy_Assessment", {
            "timings_s": timings,
            "overall_accuracy": {k: v["overall_accuracy"] for k, v in metrics["assessments"].items()}})


def main(argv=None) -> int:
    """Step 3 from the command line (``--help`` lists the flags)."""
    return cli.run_step(cli.build_parser(__doc__, ["per_class"]), argv, assess_run)


if __name__ == "__main__":
    sys.exit(main())
