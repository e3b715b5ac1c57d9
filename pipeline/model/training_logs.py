"""What a training run leaves to look at: the learning curve, and TensorBoard projector embeddings of the
network input and of the features the CNN learned (TensorBoard's scalars, graph and histograms are written by
Keras during training, see :func:`pipeline.model.cnn.train_model`)."""
from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import numpy as np

from pipeline.core.vocabulary import LAYER_NAMES
from pipeline.run.figures import pyplot

#: Points shown in each TensorBoard projector embedding (spread evenly over the classes).
PROJECTOR_POINTS = 1000


@contextlib.contextmanager
def run_writes(run_dir: Path):
    """Errors writing the TensorBoard run in ``run_dir`` (TensorFlow's, or the system's without a file name: a
    full disk...) as an OSError naming it; other errors as they are."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        if str(run_dir) not in str(error):
            raise
        reason = str(error).strip().splitlines()[0].rsplit("; ", 1)[-1]
        raise OSError(errno.EIO, f"TensorBoard could not write its run ({reason})", str(run_dir)) from None
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, str(run_dir)) from None


def plot_learning_curve(history: dict):
    """Accuracy and loss per epoch, training and validation; returns the Figure.

    ``history`` maps Keras metric names (``accuracy``, ``loss`` and, with a validation set, ``val_accuracy``,
    ``val_loss``) to one value per epoch.
    """
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
    """Sorted indices into ``labels`` (m,) of up to ``points`` samples, the same number from each class, without
    repeats.

    >>> projector_subset(np.array([0, 0, 0, 1]), 2, 4, np.random.default_rng(0)).size
    3
    """
    per_class = max(1, points // n_classes)
    picks = [rng.permutation(np.flatnonzero(labels == code))[:per_class] for code in range(n_classes)]
    return np.sort(np.concatenate(picks))


def write_embeddings(run_dir: Path, model, network_input: np.ndarray, patches: np.ndarray, labels: np.ndarray,
                     class_names, sprite_layers, rng: np.random.Generator) -> None:
    """TensorBoard projector embeddings (tensorboardX) in ``run_dir`` of up to ``PROJECTOR_POINTS`` samples.

    Two embeddings: ``raw_patches``, the ``network_input`` (m, w, w, c) as the CNN sees it, and
    ``learned_features``, the output of the model's ``features`` layer; each point is named by its class (from
    ``labels`` (m,) and ``class_names``) and shown as an RGB sprite of the ``sprite_layers`` of ``patches``
    (m, w, w, 8).
    """
    from tensorboardX import SummaryWriter
    from tensorflow import keras

    chosen = projector_subset(labels, len(class_names), PROJECTOR_POINTS, rng)
    shown = network_input[chosen]
    features = keras.Model(model.inputs, model.get_layer("features").output).predict(shown, verbose=0)
    metadata = [class_names[code] for code in labels[chosen]]
    sprites = np.moveaxis(patches[chosen][..., [LAYER_NAMES.index(n) for n in sprite_layers]], -1, 1)
    with SummaryWriter(logdir=str(run_dir)) as writer:
        writer.add_embedding(shown.reshape(len(chosen), -1), metadata=metadata, label_img=sprites,
                             tag="raw_patches")
        writer.add_embedding(features, metadata=metadata, label_img=sprites, tag="learned_features")
