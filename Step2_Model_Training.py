"""Step 2, model training and prediction (tutorial sections 3 and 4): the patch CNN and the land-cover map.

Trains the tutorial's CNN on the balanced set of Step 1, logs it to TensorBoard (scalars, graph, weight
histograms, and projector embeddings of the raw patches and of the learned features), then classifies every
superpixel's patch and paints the map with one lookup, ``predLabels[segments]``.

Reads ``Samples_classBalanced_<per_class>.mat`` (Step 1), ``samples_labels.mat`` and ``segments.mat``
(Step 0) and the grid of ``layers.tif``. Writes, in the work folder: ``model.keras``,
``learning_curve.png``, ``predLabels.mat`` (``predLabels``: n uint8, 255 for superpixels without valid
pixels), ``predProb.mat`` (``predProb``: n x classes float32), ``predMap.mat`` (``predMap``: rows x cols
uint8; not in tiled mode), ``predMap.png``, ``predMap.tif`` (a Cloud-Optimized GeoTIFF of class codes with a colour
table and class names, nodata 255) and ``predMap.qml`` (its QGIS style). With ``--tile-size`` (as in Step 0), prediction runs chunk by chunk on a Dask cluster
and the map is painted window by window. The TensorBoard run goes to ``runs/<name>-<timestamp>/``: ``tensorboard --logdir runs``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline import cli, cluster, contract, grids
from pipeline.config import RUNS_DIR, Parameters, Scene
from pipeline.contract import LAYER_NAMES, MASK_CHANNEL, STEP0, STEP2, UNLABELLED
from pipeline.errors import ConfigError, InputDataError
from pipeline.figures import plot_class_map, pyplot
from pipeline.outputs import OutputSet, open_outputs

log = logging.getLogger(__name__)
#: Points shown in each TensorBoard projector embedding (spread evenly over the classes).
PROJECTOR_POINTS = 1000
PREDICT_CHUNK = 8192
#: Every file Step 2 writes in the work folder (committed together with the TensorBoard run).
APPLY_OUTPUTS = (contract.PRED_LABELS.filename, contract.PRED_PROB.filename, contract.PRED_MAP.filename,
                 "predMap.png", "predMap.tif", "predMap.qml", "uncertainty.tif", "uncertainty.png", "run.json")
OUTPUTS = (contract.MODEL_FILE, contract.MODEL_CARD, "learning_curve.png", *APPLY_OUTPUTS)


def model_inputs(patches: np.ndarray, masks: np.ndarray, channels) -> np.ndarray:
    """The CNN's input: the named ``channels`` (the tutorial's ``band4train``) of the patches, float32 (n, w, w, c).

    ``patches`` (n, w, w, 8) hold the layers in ``LAYER_NAMES`` order; the channel ``"mask"`` is taken from
    ``masks`` (n, w, w), 1 on the pixels of the superpixel the patch is centred on.

    >>> model_inputs(np.ones((1, 2, 2, 8)), np.zeros((1, 2, 2)), ["red", "mask"]).shape
    (1, 2, 2, 2)
    """
    return np.stack([masks if name == MASK_CHANNEL else patches[..., LAYER_NAMES.index(name)] for name in channels],
                    axis=-1).astype(np.float32, copy=False)


def build_cnn(input_shape: tuple, n_classes: int):
    """The tutorial's CNN: Conv 64 4x4, MaxPool, Conv 128 3x3, MaxPool, Conv 64 3x3, Dense 256, softmax.

    Compiled with Adam and sparse categorical cross-entropy. The Dense 256 layer is named ``features``:
    its output is the learned embedding shown in TensorBoard's projector.
    """
    from tensorflow import keras
    from tensorflow.keras import layers

    model = keras.Sequential([
        keras.Input(shape=input_shape, name="patch"),
        layers.Conv2D(64, 4, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.Flatten(),
        layers.Dense(256, activation="relu", name="features"),
        layers.Dense(n_classes, activation="softmax", name="class_probabilities"),
    ], name="tutorial_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def validation_mask(index: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out ``fraction`` of the distinct superpixels, so no patch is both trained on and validated on."""
    distinct = np.unique(index)
    held = rng.choice(distinct, size=int(round(fraction * distinct.size)), replace=False)
    return np.isin(index, held)


def random_dihedral(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each patch (n, w, w, c) turned by a random multiple of 90 degrees and mirrored half of the time."""
    out = np.empty_like(patches)
    transform = rng.integers(0, 8, size=len(patches))
    for t in range(8):
        members = transform == t
        turned = np.rot90(patches[members], k=t % 4, axes=(1, 2))
        out[members] = turned[:, :, ::-1] if t >= 4 else turned
    return out


def training_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, augment: bool,
                     rng: np.random.Generator):
    """A Keras dataset of shuffled (and, if ``augment``, randomly flipped/rotated) batches, seeded by ``rng``."""
    from tensorflow import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.order = rng.permutation(len(labels))

        def __len__(self):
            return -(-len(labels) // batch_size)

        def __getitem__(self, i):
            chosen = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            batch = images[chosen]
            return (random_dihedral(batch, rng) if augment else batch), labels[chosen]

        def on_epoch_end(self):
            self.order = rng.permutation(len(labels))

    return Batches()


def train_model(images: np.ndarray, labels: np.ndarray, index: np.ndarray, n_classes: int, params: Parameters,
                run_dir: Path):
    """Train the CNN with a seed on ``images`` (m, w, w, c) of superpixels ``index``; log to TensorBoard in
    ``run_dir``. Returns the model and its history.

    The learning rate halves after two epochs without a lower validation loss, and the model keeps the
    weights of the epoch with the lowest validation loss.
    """
    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(params.seed)
    held_out = validation_mask(index, params.validation_fraction, rng)
    model = build_cnn(images.shape[1:], n_classes)
    model.summary(print_fn=log.info)
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(run_dir), histogram_freq=1, write_graph=True)]
    validation = (images[held_out], labels[held_out]) if held_out.any() else None
    if validation is not None:  # halve the step when validation stalls; keep the best epoch, not merely the last
        callbacks += [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, verbose=1),
                      keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.epochs,
                                                    restore_best_weights=True)]
    log.info("training on %d patches, validating on %d (distinct superpixels)", (~held_out).sum(), held_out.sum())
    history = model.fit(training_batches(images[~held_out], labels[~held_out], params.batch_size, params.augment,
                                         rng),
                        validation_data=validation, epochs=params.epochs, callbacks=callbacks, verbose=2)
    return model, history.history


def plot_learning_curve(history: dict):
    """Accuracy and loss per epoch, training and validation; returns the Figure."""
    figure, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["accuracy"]) + 1)
    for axis, metric in ((left, "accuracy"), (right, "loss")):
        axis.plot(epochs, history[metric], "o-", label=f"training {metric}")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], "s-", label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Learning curve")
    return figure


def projector_subset(labels: np.ndarray, n_classes: int, points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``points`` samples, the same number from each class, without repeats."""
    per_class = max(1, points // n_classes)
    picks = [rng.permutation(np.flatnonzero(labels == code))[:per_class] for code in range(n_classes)]
    return np.sort(np.concatenate(picks))


def write_embeddings(run_dir: Path, model, inputs, images, labels, class_names, sprite_layers, rng) -> None:
    """TensorBoard projector embeddings (tensorboardX) of the raw patches (``inputs``, as the CNN sees them)
    and of the learned features, with class names and RGB sprites of ``sprite_layers`` of ``images``."""
    from tensorboardX import SummaryWriter
    from tensorflow import keras

    chosen = projector_subset(labels, len(class_names), PROJECTOR_POINTS, rng)
    patches = inputs[chosen]
    features = keras.Model(model.inputs, model.get_layer("features").output).predict(patches, verbose=0)
    metadata = [class_names[code] for code in labels[chosen]]
    sprites = np.moveaxis(images[chosen][..., [LAYER_NAMES.index(n) for n in sprite_layers]], -1, 1)
    with SummaryWriter(logdir=str(run_dir)) as writer:
        writer.add_embedding(patches.reshape(len(chosen), -1), metadata=metadata, label_img=sprites,
                             tag="raw_patches")
        writer.add_embedding(features, metadata=metadata, label_img=sprites, tag="learned_features")


def predict_superpixels(model, samples: np.ndarray, masks: np.ndarray, channels, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (n, classes) float32 of every superpixel's patch, in chunks of ``PREDICT_CHUNK``."""
    chunks = []
    for start in range(0, len(samples), PREDICT_CHUNK):
        end = start + PREDICT_CHUNK
        chunks.append(model.predict(model_inputs(samples[start:end], masks[start:end], channels),
                                    batch_size=batch_size, verbose=0))
        log.info("  predicted %d / %d superpixels", min(end, len(samples)), len(samples))
    return np.concatenate(chunks).astype(np.float32)


def correct_priors(probabilities: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Undo the balanced set's equal class priors: weight each class probability by the class's ``shares``
    among the training superpixels and renormalise (Saerens et al. 2002). Raises overall accuracy on scenes whose
    classes are unequal, at some cost in the recall of rare classes.

    >>> correct_priors(np.array([[0.5, 0.5]]), np.array([0.75, 0.25])).round(2).tolist()
    [[0.75, 0.25]]
    """
    weighted = probabilities * shares
    return (weighted / weighted.sum(axis=1, keepdims=True)).astype(np.float32)


def check_validation_split(index: np.ndarray, fraction: float) -> None:
    """Refuse a ``validation_fraction`` that leaves no distinct superpixel of the balanced set to train on."""
    distinct = np.unique(index).size
    if distinct - int(round(fraction * distinct)) < 1:
        raise ConfigError(f"validation_fraction = {fraction} leaves none of the {distinct} distinct superpixels of "
                          f"the balanced set to train on; lower it or raise per_class")


def train(scene: Scene, out: OutputSet, balanced: dict, run_dir: Path, timings: dict):
    """Train the CNN on Step 1's ``balanced`` set, save ``model.keras`` and the learning curve into ``out``, and
    write the TensorBoard run (scalars, graph, histograms, projector) into ``run_dir``. Returns the model and its
    history."""
    p = scene.params
    inputs = model_inputs(balanced["images"], balanced["masks"], p.train_layers)
    with cli.timed(f"training ({p.epochs} epochs)", timings):
        model, history = train_model(inputs, balanced["labels"], balanced["index"], len(scene.classes), p, run_dir)
    timings["per_epoch"] = round(timings[f"training ({p.epochs} epochs)"] / p.epochs, 3)
    with gdal_tif2rgb.atomic_output(out.path(contract.MODEL_FILE)) as temporary:
        model.save(temporary)
    gdal_tif2rgb.save_png(out.path("learning_curve.png"), plot_learning_curve(history))
    with cli.timed("projector embeddings", timings):
        write_embeddings(run_dir, model, inputs, balanced["images"], balanced["labels"], scene.class_names,
                         p.projector_layers, np.random.default_rng(p.seed))
    return model, history


def model_card(scene: Scene, step0: dict, balanced: dict, record: dict) -> dict:
    """What applying the model elsewhere needs (``model.json`` beside ``model.keras``): layers and channels,
    patch width, classes and colours, the training scene's stretch limits, the class shares among its training
    superpixels (the priors of :func:`correct_priors`) and the runs it came from."""
    p = scene.params
    train_labels = contract.train_labels(step0["labels"], step0["split"])
    shares = np.bincount(train_labels, minlength=len(scene.classes))[:len(scene.classes)] / max(1, len(train_labels))
    return {"model_run": record["run"], "scene": scene.name, "layer_names": list(LAYER_NAMES),
            "train_layers": list(p.train_layers), "patch_width": p.patch_width, "class_names": scene.class_names,
            "class_colours": [list(c) for c in gdal_tif2rgb.class_palette(scene.class_names)],
            "stretch_limits": step0[contract.PROVENANCE]["stretch"]["limits"], "prior_shares": shares.tolist(),
            "prior_correction": p.prior_correction, "step0_run": record["step0_run"],
            "step1_run": record["step1_run"], "parameters": p.as_dict()}


def check_model_fits(card: dict, model_path: Path, scene: Scene, step0: dict) -> None:
    """Refuse, in one line, a model whose classes, layers, channels or patch width this scene cannot provide."""
    step0_width = step0[contract.PROVENANCE]["parameters"]["patch_width"]
    unknown = [name for name in card["train_layers"] if name not in (*LAYER_NAMES, MASK_CHANNEL)]
    if unknown or list(card["layer_names"]) != list(LAYER_NAMES):
        raise InputDataError(f"{model_path}: the model needs layer(s) {unknown or card['layer_names']} that this "
                             f"scene's patches do not have (layers: {', '.join(LAYER_NAMES)}, {MASK_CHANNEL})")
    if card["patch_width"] != step0_width:
        raise InputDataError(f"{model_path}: the model takes {card['patch_width']} px patches, this scene's are "
                             f"{step0_width} px; rerun {STEP0} with --patch-width {card['patch_width']}")
    if list(card["class_names"]) != scene.class_names:
        raise InputDataError(f"{model_path}: the model's classes {card['class_names']} differ from "
                             f"{scene.class_names} of {scene.config_path.name}; list the model's classes in [classes]")


def predict_and_map(scene: Scene, out: OutputSet, classifier: dict, client, step0: dict, record: dict,
                    timings: dict) -> np.ndarray:
    """Classify every superpixel, in memory or (with a Dask ``client``) chunk by chunk on the cluster, and write
    ``predLabels.mat``, ``predProb.mat``, the map (``predMap.tif``, ``.png``, ``.qml`` and, in memory, ``.mat``)
    and the uncertainty map into ``out``. ``classifier`` holds the model (and its file), its channels and the
    class shares of its priors; ``step0`` holds Step 0's labels, split, valid fraction, segments and grid."""
    n = len(step0["labels"])
    with cli.timed(f"predict {n} superpixels", timings):
        if client is not None:
            probabilities = predict_on_cluster(scene, classifier["path"], client, n, classifier["channels"])
        else:
            samples = contract.load(contract.SAMPLES, scene.workdir, ["samples", "masks"])
            probabilities = predict_superpixels(classifier["model"], samples["samples"], samples["masks"],
                                                classifier["channels"])
            del samples
    if classifier["prior_shares"] is not None:
        probabilities = correct_priors(probabilities, classifier["prior_shares"])
    pred_labels = probabilities.argmax(axis=1).astype(np.uint8)
    invalid = step0["valid_fraction"] == 0
    pred_labels[invalid] = UNLABELLED
    uncertainty = np.where(invalid, np.nan, 1 - probabilities.max(axis=1)).astype(np.float32)
    with cli.timed("paint and write the maps", timings):
        contract.save(contract.PRED_LABELS, out.staging, {"predLabels": pred_labels, contract.PROVENANCE: record})
        contract.save(contract.PRED_PROB, out.staging, {"predProb": probabilities, contract.PROVENANCE: record})
        if client is not None:
            write_maps(scene, out, step0["grid"], painted_windows(scene, step0["grid"], pred_labels, uncertainty))
        else:
            pred_map = grids.paint_map(pred_labels, step0["segments"])
            contract.save(contract.PRED_MAP, out.staging, {"predMap": pred_map, contract.PROVENANCE: record})
            write_maps(scene, out, step0["grid"],
                       [(pred_map, grids.paint_map(uncertainty, step0["segments"]), 0, 0)])
    return pred_labels


def step0_inputs(scene: Scene) -> tuple:
    """The files Step 2 reads whatever it does: the configuration and Step 0's hand-offs."""
    return (scene.config_path, scene.output(contract.LAYERS_TIF), scene.output(contract.SEGMENTS_TIF),
            contract.SAMPLES.path(scene.workdir), contract.SEGMENTS.path(scene.workdir))


def read_step0(scene: Scene) -> dict:
    """Step 0's labels, split, valid fraction, provenance, segments and grid, checked to belong together and to
    the scene. A tiled run paints from ``segments.tif`` window by window, so it reads no whole segments."""
    tiled = bool(scene.params.tile_size)
    step0, segments = contract.load_step0(scene, ["labels", "split", "valid_fraction"], with_segments=not tiled)
    layers_path = scene.output(contract.LAYERS_TIF)
    for raster in (layers_path, scene.output(contract.SEGMENTS_TIF)) if tiled else (layers_path,):
        contract.check_raster_run(raster, step0[contract.PROVENANCE]["run"])
    grid, _ = gdal_tif2rgb.read_grid(layers_path)
    if segments is not None and segments.shape != (grid.rows, grid.cols):
        raise InputDataError(f"{contract.SEGMENTS.path(scene.workdir)}: {segments.shape} does not match "
                             f"layers.tif; rerun {STEP0}")
    return {**step0, "segments": segments, "grid": grid}


def train_and_map(scene: Scene, runs_dir: Path = RUNS_DIR, scheduler: str | None = None,
                  workers: int | None = None, model: Path | None = None) -> None:
    """Step 2: train, then map every superpixel (on a Dask cluster when the scene's ``tile_size`` asks); the
    outputs and the TensorBoard run are committed together. With ``model`` (a trained ``model.keras``), apply
    that model instead of training (see :func:`apply_model`)."""
    if model is not None:
        return apply_model(scene, model, scheduler, workers)
    timings, p = {}, scene.params
    if p.tile_size:
        cluster.check_settings(scheduler, workers)
    contract.check_balanced_set_fits(p.per_class, len(scene.classes), p.patch_width)
    inputs = (*step0_inputs(scene), contract.BALANCED.path(scene.workdir, per_class=p.per_class))
    with open_outputs(scene.workdir, OUTPUTS, inputs) as out:
        with cli.timed("read Step 0 and Step 1 outputs", timings):
            step0 = read_step0(scene)
            balanced = contract.load_balanced(scene, ["images", "masks", "labels"], step0[contract.PROVENANCE]["run"])
        check_validation_split(balanced["index"], p.validation_fraction)
        run_dir = out.new_folder(Path(runs_dir) / f"{scene.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        trained, history = train(scene, out, balanced, run_dir, timings)
        record = contract.new_run(STEP2, step0_run=step0[contract.PROVENANCE]["run"],
                                  step1_run=balanced[contract.PROVENANCE]["run"], parameters=p.as_dict())
        card = model_card(scene, step0, balanced, record)
        cli.write_json(out.path(contract.MODEL_CARD), card)
        for name in (contract.MODEL_FILE, contract.MODEL_CARD):  # the model travels with its TensorBoard run too
            shutil.copy2(out.path(name), run_dir / name)
        classifier = {"model": trained, "path": out.path(contract.MODEL_FILE), "channels": p.train_layers,
                      "prior_shares": np.array(card["prior_shares"]) if p.prior_correction else None}
        with cluster.dask_client(scheduler, workers) if p.tile_size else contextlib.nullcontext() as client:
            pred_labels = predict_and_map(scene, out, classifier, client, step0, record, timings)
        final = {key: round(float(values[-1]), 4) for key, values in history.items() if key != "learning_rate"}
        log.info("final epoch: %s; TensorBoard: tensorboard --logdir %s", final, runs_dir)
        record_map(scene, out, pred_labels, record, {"timings_s": timings, "run_dir": str(out.extra_folders[run_dir]),
                                                     "final_epoch": final})


def apply_model(scene: Scene, model_path: Path, scheduler: str | None, workers: int | None) -> None:
    """Step 2 with a model trained elsewhere (``--model``): no balanced set, no training; the model's card
    (``model.json`` beside it) gives its channels, patch width, classes and priors, checked against the scene."""
    timings, p = {}, scene.params
    if p.tile_size:
        cluster.check_settings(scheduler, workers)
    card = contract.read_model_card(model_path)
    inputs = (*step0_inputs(scene), model_path, Path(model_path).with_name(contract.MODEL_CARD))
    with open_outputs(scene.workdir, APPLY_OUTPUTS, inputs) as out:
        with cli.timed("read Step 0 outputs and the model", timings):
            step0 = read_step0(scene)
            check_model_fits(card, model_path, scene, step0)
            if step0[contract.PROVENANCE]["stretch"].get("from_model_run") != card["model_run"]:
                log.warning("warning: this scene was stretched with its own limits, not the model's training scene's; "
                            "rerun %s with --stretch-from %s so the model sees inputs scaled as in training",
                            STEP0, model_path)
            classifier = {"model": None if p.tile_size else load_model(model_path), "path": Path(model_path),
                          "channels": card["train_layers"],
                          "prior_shares": np.array(card["prior_shares"]) if card["prior_correction"] else None}
        record = contract.new_run(STEP2, step0_run=step0[contract.PROVENANCE]["run"], step1_run=None,
                                  model_run=card["model_run"], model_scene=card["scene"], parameters=card["parameters"])
        with cluster.dask_client(scheduler, workers) if p.tile_size else contextlib.nullcontext() as client:
            pred_labels = predict_and_map(scene, out, classifier, client, step0, record, timings)
        record_map(scene, out, pred_labels, record, {"timings_s": timings, "applied_model": str(model_path),
                                                     "model_scene": card["scene"]})


def load_model(path: Path):
    """A saved Keras model."""
    from tensorflow import keras

    return keras.models.load_model(path)


def record_map(scene: Scene, out: OutputSet, pred_labels: np.ndarray, record: dict, details: dict) -> None:
    """Log the predicted classes and add the run to ``run.json``."""
    counts = {name: int((pred_labels == code).sum()) for code, name in enumerate(scene.class_names)}
    log.info("predicted superpixels per class: %s", counts)
    cli.record_run(scene, out.path("run.json"), "Step2_Model_Training", {
        **details, "predicted_superpixels": counts, "run": record["run"]})


def write_maps(scene: Scene, out: OutputSet, grid: gdal_tif2rgb.Grid, blocks) -> None:
    """``predMap.tif`` (a Cloud-Optimized GeoTIFF of class codes with colour table, class names and nodata 255)
    and ``uncertainty.tif`` (float32, NaN where no data) from ``blocks``, an iterable of (map block, uncertainty
    block, row, col); the QGIS style ``predMap.qml``; ``predMap.png`` and ``uncertainty.png`` from previews
    built up block by block."""
    class_names = scene.class_names
    colours = gdal_tif2rgb.class_palette(class_names)
    step = grids.display_stride(grid.rows, grid.cols)
    shape = (-(-grid.rows // step), -(-grid.cols // step))
    preview, uncertainty_preview = np.full(shape, UNLABELLED, dtype=np.uint8), np.full(shape, np.nan, np.float32)
    gdal_tif2rgb.write_qml(out.path("predMap.qml"), class_names, colours, nodata=UNLABELLED)
    with gdal_tif2rgb.geotiff_writer(out.path("predMap.tif"), grid, 1, np.uint8, nodata=UNLABELLED,
                                     class_names=class_names, class_colours=colours) as write_map, \
            gdal_tif2rgb.geotiff_writer(out.path("uncertainty.tif"), grid, 1, np.float32, nodata=np.nan,
                                        band_names=["1 - max class probability"]) as write_uncertainty:
        for block, uncertainty, row, col in blocks:
            write_map(block, row, col)
            write_uncertainty(uncertainty, row, col)
            grids.place_in_preview(preview, block, row, col, step)
            grids.place_in_preview(uncertainty_preview, uncertainty, row, col, step)
    gdal_tif2rgb.save_png(out.path("predMap.png"), plot_class_map(preview, class_names, "Predicted land cover"))
    gdal_tif2rgb.save_png(out.path("uncertainty.png"), plot_uncertainty(uncertainty_preview))


def plot_uncertainty(uncertainty: np.ndarray):
    """Map of 1 - max class probability per superpixel (0 = certain), with a colour bar; returns the Figure."""
    figure, axis = pyplot().subplots(figsize=(8, 7))
    image = axis.imshow(uncertainty, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axis, label="1 - max class probability", shrink=0.8)
    axis.set_title("Uncertainty of the predicted class (per superpixel)")
    axis.set_axis_off()
    return figure


# --- Tiled mode: prediction on the Dask cluster, the map painted window by window -------------------------------

@functools.lru_cache(maxsize=1)
def _worker_model(path: str, modified: float):
    """The trained model, loaded once per Dask worker process (one TensorFlow thread per worker)."""
    import tensorflow as tf
    from tensorflow import keras

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return keras.models.load_model(path)


def predict_rows(model_path: Path, samples_path: Path, start: int, stop: int, channels) -> np.ndarray:
    """Class probabilities of superpixels ``start:stop``, read from a MATLAB 7.3 ``samples_labels.mat``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = _worker_model(str(model_path), os.path.getmtime(model_path))
    rows = contract.load_rows(contract.SAMPLES, samples_path.parent, ["samples", "masks"], slice(start, stop))
    return model.predict(model_inputs(rows["samples"], rows["masks"], channels), batch_size=512, verbose=0)


def predict_on_cluster(scene: Scene, model_path: Path, client, n: int, channels) -> np.ndarray:
    """Probabilities (n, classes) of every superpixel, chunk by chunk on the Dask ``client``'s cluster, by the
    model saved at ``model_path``."""
    chunks = [(model_path, contract.SAMPLES.path(scene.workdir), start,
               min(start + PREDICT_CHUNK, n), channels) for start in range(0, n, PREDICT_CHUNK)]
    parts = []
    for part in cluster.map_in_order(client, predict_rows, chunks):
        parts.append(part)
        log.info("  predicted %d / %d superpixels", sum(len(x) for x in parts), n)
    return np.concatenate(parts).astype(np.float32)


def painted_windows(scene: Scene, grid: gdal_tif2rgb.Grid, pred_labels: np.ndarray, uncertainty: np.ndarray):
    """The map and the uncertainty, (block, block, row, col) tile by tile, painted from ``segments.tif``."""
    for window in grids.tile_windows((grid.rows, grid.cols), scene.params.tile_size):
        segments = gdal_tif2rgb.read_labels(scene.output(contract.SEGMENTS_TIF), window=window)[0]
        yield grids.paint_map(pred_labels, segments), grids.paint_map(uncertainty, segments), window[0], window[1]


def build_parser():
    parser = cli.build_parser(__doc__, ["per_class", "epochs", "batch_size", "validation_fraction", "train_layers",
                                        "projector_layers", "augment", "prior_correction", "tile_size"])
    cli.add_cluster_flags(parser)
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                        help="folder of TensorBoard runs (default: runs/ in the project)")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL",
                        help="apply this trained model.keras (with its model.json beside it) instead of training: "
                             "Steps 1 and training are skipped (default: train on this scene)")
    return parser


def main(argv=None) -> int:
    """Step 2 from the command line (``--help`` lists the flags)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the log
    with cli.native_stderr_silenced():
        return cli.run_step(build_parser(), argv, train_and_map, "runs_dir", "scheduler", "workers", "model")


if __name__ == "__main__":
    sys.exit(main())
