"""Step 2's work (tutorial sections 3 and 4): train the CNN (or, with ``classifier = "forest"``, the superpixel
random forest) on Step 1's balanced set and map with it (:func:`train_and_map`), or map with a model trained on
another scene (:func:`map_with_model`).

Either way every superpixel is classified, the CNN's patches in memory or (with the scene's ``tile_size``) chunk by
chunk on a Dask cluster, the forest's features (computed window by window) in memory, and the map is painted with
one lookup, ``predLabels[segments]`` (tiled: window by window); the outputs of :data:`OUTPUTS` and the CNN's
TensorBoard run are committed together.
"""
from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import grids
from pipeline.core.errors import InputDataError
from pipeline.core.vocabulary import MASK_CHANNEL, STEP0, STEP2, UNLABELLED
from pipeline.handoffs import contract, memory, model_card, provenance, settings
from pipeline.handoffs.model_card import ModelCard
from pipeline.model import cnn, forest, prediction_maps, scene_shift, training_logs
from pipeline.segmentation import sampling
from pipeline.run import cli
from pipeline.core.atomic_files import atomic_output
from pipeline.run import files
from pipeline.run.config import Scene
from pipeline.run.outputs import OutputSet, open_outputs
from pipeline.tiling import cluster, tiled_prediction
from pipeline.workflow import forest_features

log = logging.getLogger(__name__)
#: Every file Step 2 writes in the work folder (committed together with the TensorBoard run): the trained
#: model's and the map's. Every mode commits this set, so mapping with ``--model`` removes an earlier model, and a
#: CNN an earlier forest's file (and the other way round).
OUTPUTS = (contract.MODEL_FILE, contract.FOREST_MODEL_FILE, contract.MODEL_CARD, "learning_curve.png",
           contract.PRED_LABELS.filename, contract.PRED_PROB.filename, contract.PRED_MAP.filename, "predMap.png",
           "predMap.tif", "predMap.qml", "uncertainty.tif", "uncertainty.png", "run.json")


@dataclass(frozen=True)
class Classifier:
    """A trained CNN or random forest as Step 2 maps with it.

    Attributes
    ----------
    model : the Keras model (mapping in memory; on a cluster each worker loads its own from ``path``), or the
        fitted forest.
    path : its ``model.keras`` or ``model.forest.joblib``.
    card : its card: the classifier, the channels or features it sees, its classes and the class shares of its
        priors.
    trained_here : whether it was trained on this scene; one trained elsewhere is compared with its training scene.
    features : a forest's features of this scene's superpixels, where computed already (None: computed to map).
    """

    model: object
    path: Path
    card: ModelCard
    trained_here: bool
    features: np.ndarray | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the CNN sees, in order (layer names and ``"mask"``)."""
        return self.card.train_layers

    @property
    def prior_shares(self) -> np.ndarray | None:
        """(classes,) shares of the training superpixels that weight the probabilities; None without
        ``prior_correction``."""
        return np.array(self.card.prior_shares) if self.card.prior_correction else None


# --- 3. Training the CNN (or the forest) on the balanced set --------------------------------------------------

def train_cnn(scene: Scene, out: OutputSet, balanced: dict, channels: tuple, run_dir: Path, timings: dict,
              patches_of=None):
    """Train the CNN (or an ensemble of ``ensemble`` CNNs) on the ``channels`` of Step 1's ``balanced`` set (its
    patches are under the hand-off key ``images``; with ``patches_of``, :func:`patches_anywhere`, training patches
    are cut anew around random pixels of their superpixels), save ``model.keras`` and the learning curve into
    ``out``, and write the TensorBoard run (scalars, graph, histograms; the projector of the first CNN) into
    ``run_dir``. Returns the model and its (members' mean) history (metric name -> one value per epoch)."""
    p = scene.params
    patches, masks, layer_names = balanced["images"], balanced["masks"], tuple(balanced["layer_names"])
    network_input = cnn.model_inputs(patches, masks, channels, layer_names)
    what = f"training ({p.epochs} epochs" + (f", {p.ensemble} CNNs)" if p.ensemble > 1 else ")")
    with cli.timed(what, timings), training_logs.run_writes(run_dir):
        model, members, history = cnn.train_ensemble(network_input, balanced["labels"], balanced["index"],
                                                     len(scene.classes), p, run_dir, patches_of)
    timings["per_epoch"] = round(timings[what] / (p.epochs * p.ensemble), 3)
    with atomic_output(out.path(contract.MODEL_FILE)) as temporary:
        model.save(temporary)
    files.save_png(out.path("learning_curve.png"), training_logs.plot_learning_curve(history))
    with cli.timed("projector embeddings", timings), training_logs.run_writes(run_dir):
        training_logs.write_embeddings(run_dir, members[0], network_input, patches, balanced["labels"],
                                       scene.class_names, p.projector_layers, np.random.default_rng(p.training_seed))
    return model, history


def train_network(scene: Scene, out: OutputSet, step0: dict, balanced: dict, record: dict, runs_dir: Path,
                  timings: dict) -> tuple[Classifier, dict]:
    """The CNN trained on Step 1's ``balanced`` set (:func:`train_cnn`), its card and model in ``out`` and in its
    TensorBoard run (a new folder in ``runs_dir``), and what ``run.json`` records of the training."""
    p = scene.params
    cnn.check_validation_split(balanced["index"], p.validation_fraction)
    layer_names = tuple(step0["layer_names"])
    channels = cnn.network_channels(p.train_layers, layer_names, scene.config_path)
    record["parameters"]["train_layers"] = list(channels)  # "all" spelled out
    card = model_card.from_training(scene, step0[contract.PROVENANCE], layer_names, channels,
                                    contract.train_labels(step0["labels"], step0["split"]), record)
    run_dir = out.new_folder(Path(runs_dir) / f"{scene.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    patches_of = None
    if p.random_patch_centres:
        with cli.timed("read layers and segments for patches around random pixels", timings):
            patches_of = patches_anywhere(scene.workdir, step0[contract.PROVENANCE], step0["segments"],
                                          balanced["index"], p.patch_width, card.train_layers)
    trained, history = train_cnn(scene, out, balanced, card.train_layers, run_dir, timings, patches_of)
    card.write(out.path(contract.MODEL_CARD))
    for name in (contract.MODEL_FILE, contract.MODEL_CARD):  # the model travels with its TensorBoard run too
        shutil.copy2(out.path(name), run_dir / name)
    final = {key: round(float(values[-1]), 4) for key, values in history.items() if key != "learning_rate"}
    log.info("final epoch: %s; TensorBoard: %s", final, tensorboard_command(runs_dir))
    return (Classifier(trained, out.path(contract.MODEL_FILE), card, trained_here=True),
            {"run_dir": str(out.extra_folders[run_dir]), "final_epoch": final, "channels": list(card.train_layers)})


def patches_anywhere(workdir: Path, step0_record: dict, segments: np.ndarray | None, index: np.ndarray, width: int,
                     channels: tuple):
    """:func:`patch_cutter` for the superpixels ``index`` of the Step 0 run of ``step0_record`` in ``workdir``: its
    ``layers.tif`` (uint8 steps, as stored) and ``segments`` (read from ``segments.tif`` if None, as a tiled run
    holds none in memory), refused in one line if they would take more than half the memory free."""
    layer_names = contract.layer_names_of_run(step0_record)
    layers_file = contract.layers_raster(layer_names)
    grid = contract.raster_grid(layers_file, workdir, step0_record)
    memory.check_fits(grid.rows * grid.cols * (len(layer_names) + 4 + 1 + 8),
                      "random_patch_centres: Step 2's copy of layers.tif and the segments",
                      "set random_patch_centres = false (the stored patches, on the superpixels' centroids)")
    layers = contract.read_raster(layers_file, workdir, step0_record, as_stored=True)
    if segments is None:
        segments = contract.read_raster(contract.SEGMENTS_RASTER, workdir, step0_record)
    return patch_cutter(layers, segments, index, width, channels, layer_names)


def patch_cutter(layers: np.ndarray, segments: np.ndarray, index: np.ndarray, width: int, channels: tuple,
                 layer_names: tuple):
    """A function (superpixel ids (k,), rng) -> network input (k, w, w, c) of patches centred on a pixel drawn at
    random in each superpixel (of those in ``index``), cut from ``layers`` (rows, cols, layers; uint8 steps) and
    ``segments`` (rows, cols) as Step 0 cuts its centroid patches: each epoch sees new patches of a large
    superpixel, not the same one again and again."""
    pixels = sampling.SuperpixelPixels(segments, index)

    def inputs_of(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        centres = pixels.random_pixels(ids, rng)
        patches = contract.decode_unit_values(sampling.extract_patches(layers, centres, width))
        return cnn.model_inputs(patches, sampling.superpixel_masks(segments, centres, width, ids=ids), channels,
                                layer_names)

    return inputs_of


def train_forest(scene: Scene, out: OutputSet, step0: dict, balanced: dict, record: dict,
                 timings: dict) -> tuple[Classifier, dict]:
    """The random forest trained on the distinct superpixels of Step 1's ``balanced`` set (each once, so no prior
    correction), its card and ``model.forest.joblib`` in ``out``, and what ``run.json`` records of the training."""
    step0_record = step0[contract.PROVENANCE]
    image = forest_features.prepared_image(scene, step0_record)
    with cli.timed("superpixel features", timings):
        features = forest_features.scene_features(scene, step0_record, len(step0["labels"]), image)
    trained = np.unique(balanced["index"])
    labels = step0["labels"][trained]
    with cli.timed(f"training the random forest ({len(trained)} superpixels)", timings):
        fitted = forest.train(features[trained], labels, scene.params.training_seed)
    forest.save(fitted, out.path(contract.FOREST_MODEL_FILE))
    card = model_card.from_training(scene, step0_record, tuple(step0["layer_names"]), (), labels, record,
                                    forest_features.card_features(image))
    card.write(out.path(contract.MODEL_CARD))
    return (Classifier(fitted, out.path(contract.FOREST_MODEL_FILE), card, trained_here=True, features=features),
            {"training_superpixels": len(trained)})


# --- 4. Classifying every superpixel and painting the map --------------------------------------------------

def check_model_fits(card: ModelCard, model_path: Path, scene: Scene, step0: dict) -> None:
    """Refuse, in one line, a model whose classes, layers, channels or patch width (a forest: features) this scene
    cannot provide."""
    if list(card.class_names) != scene.class_names:
        raise InputDataError(f"{model_path}: the model's classes {list(card.class_names)} differ from "
                             f"{scene.class_names} of {scene.config_path.name}; list the model's classes in [classes]")
    if card.classifier == "forest":
        forest_features.check_features_fit(card.forest_features, forest_features.prepared_image(
            scene, step0[contract.PROVENANCE]), model_path)
        return
    step0_width = step0[contract.PROVENANCE]["parameters"]["patch_width"]
    layer_names = tuple(step0["layer_names"])
    unknown = [name for name in card.train_layers if name not in (*layer_names, MASK_CHANNEL)]
    if unknown or tuple(card.layer_names) != layer_names:
        raise InputDataError(f"{model_path}: the model needs layer(s) {unknown or list(card.layer_names)} that this "
                             f"scene's patches do not have (layers: {', '.join(layer_names)}, {MASK_CHANNEL}); "
                             f"name the same bands in [bands] as its training scene")
    if card.patch_width != step0_width:
        raise InputDataError(f"{model_path}: the model takes {card.patch_width} px patches, this scene's are "
                             f"{step0_width} px; rerun {STEP0} with --patch-width {card.patch_width}")


def step0_patches(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Every superpixel's patch (n, w, w, 8) float32 and its mask (n, w, w) uint8: ``samples_labels.mat``'s
    ``samples`` and ``masks``."""
    contents = contract.load(contract.SAMPLES, scene.workdir, ["samples", "masks"])
    return contents["samples"], contents["masks"]


def predict_and_map(scene: Scene, out: OutputSet, classifier: Classifier, client, step0: dict, record: dict,
                    timings: dict) -> np.ndarray:
    """Classify every superpixel, in memory or (with a Dask ``client``) chunk by chunk on the cluster, and write
    ``predLabels.mat``, ``predProb.mat``, the map (``predMap.tif``, ``.png``, ``.qml`` and, in memory, ``.mat``)
    and the uncertainty map into ``out``. A classifier trained elsewhere is compared with its training scene
    (``applied_model`` in the run's ``record``); ``step0`` holds Step 0's labels, split, segments and grid. Masked
    pixels (no superpixel) are 255 in the map and NaN in the uncertainty. Returns the predicted class code per
    superpixel, (n,) uint8."""
    n = len(step0["labels"])
    with cli.timed(f"predict {n} superpixels", timings):
        probabilities = class_probabilities(scene, classifier, client, step0)
    if classifier.prior_shares is not None:
        probabilities = cnn.correct_priors(probabilities, classifier.prior_shares)
    pred_labels = probabilities.argmax(axis=1).astype(np.uint8)
    uncertainty = (1 - probabilities.max(axis=1)).astype(np.float32)
    if not classifier.trained_here:
        record["applied_model"] = compare_with_training_scene(classifier.card, step0[contract.PROVENANCE],
                                                              pred_labels)
    with cli.timed("paint and write the maps", timings):
        if step0["segments"] is None:  # tiled
            blocks = prediction_maps.painted_windows(scene, step0[contract.PROVENANCE], step0["grid"], pred_labels,
                                                     uncertainty)
        else:
            pred_map = grids.paint_map(pred_labels, step0["segments"], UNLABELLED)
            blocks = [(pred_map, grids.paint_map(uncertainty, step0["segments"], np.nan), 0, 0)]
        prediction_maps.write_maps(out, scene.class_names, step0["grid"], blocks, record["run"])
        contract.record_rasters(record, out, contract.STEP2_RASTERS)
        contract.save(contract.PRED_LABELS, out.staging, {"predLabels": pred_labels, contract.PROVENANCE: record})
        contract.save(contract.PRED_PROB, out.staging, {"predProb": probabilities, contract.PROVENANCE: record})
        if step0["segments"] is not None:
            contract.save(contract.PRED_MAP, out.staging, {"predMap": pred_map, contract.PROVENANCE: record})
    return pred_labels


def class_probabilities(scene: Scene, classifier: Classifier, client, step0: dict) -> np.ndarray:
    """Class probabilities (n, classes) float32 of every superpixel of Step 0's run (``step0``): the forest's
    from the superpixels' features, in memory; the CNN's from their patches, in memory or (with a Dask
    ``client``) chunk by chunk on the cluster."""
    n = len(step0["labels"])
    if classifier.card.classifier == "forest":
        features = classifier.features
        if features is None:
            features = forest_features.scene_features(scene, step0[contract.PROVENANCE], n)
        return forest.class_probabilities(classifier.model, features, len(classifier.card.class_names))
    if client is not None:
        return tiled_prediction.predict_on_cluster(scene.workdir, classifier.path, client, n, classifier.channels,
                                                   classifier.card.layer_names)
    patches, masks = step0_patches(scene)
    return cnn.predict_superpixels(classifier.model, patches, masks, classifier.channels,
                                   classifier.card.layer_names)


# --- The drivers: train and map, or map with a model trained elsewhere ----------------------------------------

def step0_input_files(scene: Scene) -> tuple:
    """The files Step 2 reads whatever it does: the configuration and Step 0's hand-offs."""
    return (scene.config_path, contract.LAYERS.path(scene.workdir), contract.SEGMENTS_RASTER.path(scene.workdir),
            contract.SAMPLES.path(scene.workdir), contract.SEGMENTS.path(scene.workdir))


def read_step0(scene: Scene) -> dict:
    """Step 0's labels, split, provenance, segments and grid, checked to belong together and to
    the scene. A tiled run paints from ``segments.tif`` window by window, so it reads no whole segments."""
    tiled = bool(scene.params.tile_size)
    step0, segments = contract.load_step0(scene, ["labels", "split"], with_segments=not tiled)
    grid = contract.raster_grid(contract.layers_raster(contract.layer_names_of_run(step0[contract.PROVENANCE])),
                                scene.workdir, step0[contract.PROVENANCE])
    if tiled:  # checked before the work, though it is read only when the map is painted
        contract.raster_grid(contract.SEGMENTS_RASTER, scene.workdir, step0[contract.PROVENANCE])
    if segments is not None and segments.shape != (grid.rows, grid.cols):
        raise InputDataError(f"{contract.SEGMENTS.path(scene.workdir)}: {segments.shape} does not match "
                             f"layers.tif; rerun {STEP0}")
    return {**step0, "segments": segments, "grid": grid}


def train_and_map(scene: Scene, runs_dir: Path, scheduler: str | None, workers: int | None) -> None:
    """Train the scene's ``classifier`` on its balanced set (section 3): the CNN (its TensorBoard run in
    ``runs_dir``) or the random forest; then map every superpixel with it (section 4; the CNN on a Dask cluster
    when the scene's ``tile_size`` asks). The outputs (and a TensorBoard run) are committed together."""
    if scene.params.tile_size:
        cluster.check_settings(scheduler, workers)
    scene, balanced_path = settings.for_training(scene)  # Step 0's and Step 1's flags carry over
    timings, p = {}, scene.params
    is_forest = p.classifier == "forest"
    memory.check_balanced_set_fits(p.per_class, len(scene.classes), p.patch_width)
    balanced_path = balanced_path or contract.BALANCED.path(scene.workdir, per_class=p.per_class)
    log.info("balanced set: %s (per_class %d, training_seed %d); classifier: %s", balanced_path, p.per_class,
             p.training_seed, p.classifier)
    input_files = (*step0_input_files(scene), balanced_path)
    with open_outputs(scene.workdir, OUTPUTS, input_files) as out:
        with cli.timed("read Step 0 and Step 1 outputs", timings):
            step0 = read_step0(scene)
            balanced = contract.load_balanced(scene, ["labels"] if is_forest else ["images", "masks", "labels"],
                                              step0[contract.PROVENANCE], len(step0["labels"]))
        record = provenance.new_run(STEP2, scene, step0_run=step0[contract.PROVENANCE]["run"],
                                    step1_run=balanced[contract.PROVENANCE]["run"], parameters=p.as_dict(),
                                    classifier=p.classifier)
        if is_forest:
            classifier, details = train_forest(scene, out, step0, balanced, record, timings)
        else:
            classifier, details = train_network(scene, out, step0, balanced, record, runs_dir, timings)
        with cluster.client_if(bool(p.tile_size) and not is_forest, scheduler, workers, out) as client:
            pred_labels = predict_and_map(scene, out, classifier, client, step0, record, timings)
        record_map(scene, out, pred_labels, record, {"classifier": p.classifier, "timings_s": timings, **details,
                                                     "balanced_set": str(balanced_path)})


def map_with_model(scene: Scene, model_path: Path, scheduler: str | None, workers: int | None) -> None:
    """Map every superpixel with a model trained elsewhere (``--model``; section 4 alone): no balanced set, no
    training; the model's card (``model.json`` beside it) gives its classifier, channels and patch width (a
    forest: features), classes and priors, checked against the scene."""
    timings = {}
    if scene.params.tile_size:
        cluster.check_settings(scheduler, workers)
    card = model_card.read(model_path)
    scene = settings.with_step0_settings(scene)  # Step 0's flags carry over
    p = scene.params
    input_files = (*step0_input_files(scene), model_path, Path(model_path).with_name(contract.MODEL_CARD))
    with open_outputs(scene.workdir, OUTPUTS, input_files) as out:
        with cli.timed("read Step 0 outputs and the model", timings):
            step0 = read_step0(scene)
            check_model_fits(card, model_path, scene, step0)
            is_forest = card.classifier == "forest"
            if not is_forest and step0[contract.PROVENANCE]["stretch"].get("from_model_run") != card.model_run:
                log.warning("warning: this scene was stretched with its own limits, not the model's training scene's; "
                            "rerun %s with --stretch-from %s so the model sees inputs scaled as in training",
                            STEP0, model_path)
            model = (forest.load(model_path, card.forest_features["count"], len(card.class_names)) if is_forest
                     else cnn.load_model(model_path, card))  # checked against its card, also when tiles load their own
            classifier = Classifier(model, Path(model_path), card, trained_here=False)
        record = provenance.new_run(STEP2, scene, step0_run=step0[contract.PROVENANCE]["run"], step1_run=None,
                                    model_run=card.model_run, model_scene=card.scene, parameters=card.parameters,
                                    classifier=card.classifier)
        with cluster.client_if(bool(p.tile_size) and not is_forest, scheduler, workers, out) as client:
            pred_labels = predict_and_map(scene, out, classifier, client, step0, record, timings)
        record_map(scene, out, pred_labels, record, {"classifier": card.classifier, "timings_s": timings,
                                                     "applied_model": str(model_path),
                                                     "model_scene": card.scene,
                                                     "comparison_with_training_scene": record["applied_model"]})


def compare_with_training_scene(card: ModelCard, step0_record: dict, pred_labels: np.ndarray) -> dict:
    """The scene compared with the training scene of the model of ``card`` (:func:`scene_shift.compare`), with a
    warning line in the log when it looks unlike it."""
    comparison = scene_shift.compare(card, step0_record, pred_labels)
    if comparison["shift_warning"]:
        log.warning("warning: this scene looks unlike the model's training scene %s, so the map may be wrong "
                    "however sure the model is: %s", card.scene, "; ".join(comparison["reasons"]))
    if comparison["layers"] is None:
        log.info("layers not compared with the training scene: %s", comparison["layers_unavailable"])
    return comparison


def record_map(scene: Scene, out: OutputSet, pred_labels: np.ndarray, record: dict, details: dict) -> None:
    """Log the predicted classes and add the run to ``run.json``."""
    counts = {name: int((pred_labels == code).sum()) for code, name in enumerate(scene.class_names)}
    log.info("predicted superpixels per class: %s", counts)
    cli.record_run(scene, out.path("run.json"), "Step2_Model_Training", {
        **details, "predicted_superpixels": counts, "run": record["run"]})


def tensorboard_command(runs_dir: Path) -> str:
    """The command that shows ``runs_dir`` in TensorBoard, runnable as printed: the ``tensorboard`` beside this
    Python (the .venv's, not on the PATH until activated), else this Python's ``-m tensorboard.main``."""
    beside = Path(sys.executable).with_name("tensorboard")
    command = [str(beside)] if beside.is_file() else [sys.executable, "-m", "tensorboard.main"]
    return shlex.join([*command, "--logdir", str(runs_dir)])
