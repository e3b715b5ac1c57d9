"""Step 2, model training and prediction (tutorial sections 3 and 4): the patch CNN and the land-cover map.

Trains the tutorial's CNN on the balanced set of Step 1, logs it to TensorBoard (scalars, graph, weight
histograms, and projector embeddings of the raw patches and of the learned features), then classifies every
superpixel's patch and paints the map with one lookup, ``predLabels[segments]``.

Reads ``Samples_classBalanced_<per_class>.mat`` (Step 1), ``samples_labels.mat`` and ``segments.mat``
(Step 0) and the grid of ``layers.tif``. Writes, in the work folder: ``model.keras``,
``learning_curve.png``, ``predLabels.mat`` (``predLabels``: n uint8, 255 for superpixels without valid
pixels), ``predProb.mat`` (``predProb``: n x classes float32), ``predMap.mat`` (``predMap``: rows x cols
uint8; not in tiled mode), ``predMap.png`` and ``predMap.tif`` (georeferenced class codes with a colour table and
class names, nodata 255). With ``--tile-size`` (as in Step 0), prediction runs chunk by chunk on a Dask cluster
and the map is painted window by window. The TensorBoard run goes to ``runs/<name>-<timestamp>/``: ``tensorboard --logdir runs``.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

import gdal_tif2rgb as io
import pipeline
from pipeline import LAYER_NAMES, MASK_CHANNEL, timed
from Step0_Data_Preparation import STEP0, TRAIN, load_outputs, tile_windows
from Step1_Class_Balance import balanced_set_path

log = logging.getLogger(__name__)
STEP1 = "Step1_Class_Balance.py"
#: Points shown in each TensorBoard projector embedding (spread evenly over the classes).
PROJECTOR_POINTS = 1000
PREDICT_CHUNK = 8192


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


def train_model(images, labels, n_classes, params: dict, run_dir: Path):
    """Train the CNN with a seed; log to TensorBoard in ``run_dir``. Returns the model and its history.

    The learning rate halves after two epochs without a lower validation loss, and the model keeps the
    weights of the epoch with the lowest validation loss.
    """
    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(params["seed"])
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(params["seed"])
    held_out = validation_mask(params["index"], params["validation_fraction"], rng)
    model = build_cnn(images.shape[1:], n_classes)
    model.summary(print_fn=log.info)
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(run_dir), histogram_freq=1, write_graph=True)]
    validation = (images[held_out], labels[held_out]) if held_out.any() else None
    if validation is not None:  # halve the step when validation stalls; keep the best epoch, not merely the last
        callbacks += [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, verbose=1),
                      keras.callbacks.EarlyStopping(monitor="val_loss", patience=params["epochs"],
                                                    restore_best_weights=True)]
    log.info("training on %d patches, validating on %d (distinct superpixels)", (~held_out).sum(), held_out.sum())
    history = model.fit(training_batches(images[~held_out], labels[~held_out], params["batch_size"],
                                         params["augment"], rng),
                        validation_data=validation, epochs=params["epochs"], callbacks=callbacks, verbose=2)
    return model, history.history


def plot_learning_curve(history: dict):
    """Accuracy and loss per epoch, training and validation; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
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


def correct_priors(probabilities: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """Undo the balanced set's equal class priors: weight each class probability by its share among the
    training superpixels and renormalise (Saerens et al. 2002). Raises overall accuracy on scenes whose
    classes are unequal, at some cost in the recall of rare classes.

    >>> correct_priors(np.array([[0.5, 0.5]]), np.array([0, 0, 0, 1])).round(2).tolist()
    [[0.75, 0.25]]
    """
    shares = np.bincount(train_labels, minlength=probabilities.shape[1]) / len(train_labels)
    weighted = probabilities * shares
    return (weighted / weighted.sum(axis=1, keepdims=True)).astype(np.float32)


def paint_map(pred_labels: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """The land-cover map: each pixel gets its superpixel's label (a lookup, no loop over superpixels).

    The lookup runs over the pixels in memory order, in one chunk per core (``np.take`` releases the GIL):
    memory-bound, it gains about 1.6x on 2 cores.

    >>> paint_map(np.array([7, 9], np.uint8), np.array([[0, 1], [1, 1]])).tolist()
    [[7, 9], [9, 9]]
    """
    from concurrent.futures import ThreadPoolExecutor

    segments = segments if segments.flags.forc else np.ascontiguousarray(segments)
    pred_map = np.empty_like(segments, dtype=pred_labels.dtype)  # same memory order as segments
    flat_segments, flat_map = segments.ravel(order="K"), pred_map.ravel(order="K")  # views, not copies
    bounds = np.linspace(0, flat_segments.size, (os.cpu_count() or 1) + 1).astype(int)
    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        list(pool.map(lambda b: np.take(pred_labels, flat_segments[b[0]:b[1]], out=flat_map[b[0]:b[1]]),
                      zip(bounds[:-1], bounds[1:])))
    return pred_map


def train_and_map(args) -> None:
    """Run Step 2 with parsed arguments."""
    scene = pipeline.scene_from_args(args)
    p = scene.params
    timings = {}
    class_names = scene.class_names
    with timed("read balanced set and Step 0 outputs", timings):
        balanced = io.load_mat(balanced_set_path(scene), ["images", "masks", "labels", "index"], made_by=STEP1)
        step0 = io.load_mat(scene.output("samples_labels.mat"), ["labels", "split", "valid_fraction"], made_by=STEP0)
        grid, _ = io.read_grid(pipeline.check_exists(scene.output("layers.tif"), STEP0))
    n = len(step0["labels"])
    if balanced["index"].max() >= n or balanced["images"].shape[1] != p["window"]:
        raise io.InputDataError(f"{balanced_set_path(scene)}: does not match samples_labels.mat (another scene or "
                                f"window?); rerun {STEP1}")
    inputs = model_inputs(balanced["images"], balanced["masks"], p["train_layers"])
    run_dir = args.runs_dir / f"{scene.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with timed(f"training ({p['epochs']} epochs)", timings):
        model, history = train_model(inputs, balanced["labels"], len(class_names),
                                     {**p, "index": balanced["index"]}, run_dir)
    timings["per_epoch"] = round(timings[f"training ({p['epochs']} epochs)"] / p["epochs"], 3)
    with io.atomic_output(scene.output("model.keras")) as temporary:
        model.save(temporary)
    io.save_png(scene.output("learning_curve.png"), plot_learning_curve(history))
    with timed("projector embeddings", timings):
        write_embeddings(run_dir, model, inputs, balanced["images"], balanced["labels"], class_names,
                         p["projector_layers"], np.random.default_rng(p["seed"]))
    with timed(f"predict {n} superpixels", timings):
        if p["tile_size"]:
            probabilities = predict_on_cluster(scene, args, n, p["train_layers"])
        else:
            step0_samples, segments = load_outputs(scene, ["samples", "masks"])
            if segments.shape != (grid.rows, grid.cols):
                raise io.InputDataError(f"{scene.output('segments.mat')}: {segments.shape} does not match "
                                        f"layers.tif; rerun {STEP0}")
            probabilities = predict_superpixels(model, step0_samples["samples"], step0_samples["masks"],
                                                p["train_layers"])
            del step0_samples
    if p["prior_correction"]:
        probabilities = correct_priors(probabilities, step0["labels"][(step0["split"] == TRAIN) & (
            step0["labels"] != io.UNLABELLED)])
    pred_labels = probabilities.argmax(axis=1).astype(np.uint8)
    pred_labels[step0["valid_fraction"] == 0] = io.UNLABELLED
    with timed("paint and write the map", timings):
        io.save_mat(scene.output("predLabels.mat"), {"predLabels": pred_labels})
        io.save_mat(scene.output("predProb.mat"), {"predProb": probabilities})
        if p["tile_size"]:
            write_map(scene, grid, painted_windows(scene, grid, pred_labels))
        else:
            pred_map = paint_map(pred_labels, segments)
            io.save_mat(scene.output("predMap.mat"), {"predMap": pred_map})
            write_map(scene, grid, [(pred_map, 0, 0)])
    counts = {name: int((pred_labels == code).sum()) for code, name in enumerate(class_names)}
    log.info("predicted superpixels per class: %s", counts)
    final = {key: round(float(values[-1]), 4) for key, values in history.items() if key != "learning_rate"}
    log.info("final epoch: %s; TensorBoard: tensorboard --logdir %s", final, args.runs_dir)
    pipeline.record_run(scene, "Step2_Model_Training", {"timings_s": timings, "run_dir": str(run_dir),
                                                        "final_epoch": final, "predicted_superpixels": counts})


def write_map(scene, grid, blocks) -> None:
    """``predMap.tif`` (class codes, colour table, class names, nodata 255) from ``blocks``, an iterable of
    (map block, row, col), and ``predMap.png`` with a legend from a preview built up block by block."""
    class_names = scene.class_names
    step = io.display_stride(grid.rows, grid.cols)
    preview = np.full((-(-grid.rows // step), -(-grid.cols // step)), io.UNLABELLED, dtype=np.uint8)
    with io.geotiff_writer(scene.output("predMap.tif"), grid, 1, np.uint8, nodata=io.UNLABELLED,
                           class_names=class_names, class_colours=io.class_palette(class_names)) as write:
        for block, row, col in blocks:
            write(block, row, col)
            io.place_in_preview(preview, block, row, col, step)
    io.save_png(scene.output("predMap.png"), io.plot_class_map(preview, class_names, "Predicted land cover"))


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
    rows = io.load_mat_rows(samples_path, ["samples", "masks"], slice(start, stop), made_by=STEP0)
    return model.predict(model_inputs(rows["samples"], rows["masks"], channels), batch_size=512, verbose=0)


def predict_on_cluster(scene, args, n: int, channels) -> np.ndarray:
    """Probabilities (n, classes) of every superpixel, chunk by chunk on the Dask cluster."""
    chunks = [(scene.output("model.keras"), scene.output("samples_labels.mat"), start, min(start + PREDICT_CHUNK, n),
               channels) for start in range(0, n, PREDICT_CHUNK)]
    parts = []
    with pipeline.dask_client(args.scheduler, args.workers) as client:
        workers = len(client.scheduler_info()["workers"])
        for part in pipeline.map_in_order(client, predict_rows, chunks, 2 * workers):
            parts.append(part)
            log.info("  predicted %d / %d superpixels", sum(len(x) for x in parts), n)
    return np.concatenate(parts).astype(np.float32)


def painted_windows(scene, grid, pred_labels: np.ndarray):
    """The map, (block, row, col) tile by tile, painted from the windows of ``segments.tif``."""
    for row, col, rows, cols in tile_windows((grid.rows, grid.cols), scene.params["tile_size"]):
        segments = io.read_labels(scene.output("segments.tif"), window=(row, col, rows, cols))[0]
        yield paint_map(pred_labels, segments), row, col


def build_parser():
    parser = pipeline.build_parser(__doc__, ["per_class", "epochs", "batch_size", "validation_fraction",
                                             "train_layers", "projector_layers", "augment", "prior_correction", "tile_size"])
    pipeline.add_cluster_flags(parser)
    parser.add_argument("--runs-dir", type=Path, default=pipeline.RUNS_DIR,
                        help="folder of TensorBoard runs (default: runs/ in the project)")
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the log
    return pipeline.run_step(train_and_map, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
