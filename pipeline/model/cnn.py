"""The tutorial's patch CNN (section 3): its input, the network, training with a held-out validation set, and
whole-scene prediction, and the correction of its class probabilities for the priors of the training scene.

Arrays in, arrays out: *patches* are (n, w, w, l) float32 stacks of a scene's layers (the tutorial's 8 in
:data:`LAYER_NAMES` order, then its further bands) cut around superpixels; the *network input* is the (n, w, w, c)
float32 stack of the channels the CNN is trained on.
TensorFlow is imported only inside the functions that need it.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from pipeline.run.config import Parameters
from pipeline.core.vocabulary import ALL_LAYERS, MASK_CHANNEL
from pipeline.core.errors import ConfigError, InputDataError, InputFileError

log = logging.getLogger(__name__)
#: Superpixels predicted in one call of the model (bounds the network input held in memory).
PREDICT_CHUNK = 8192


def network_channels(train_layers, layer_names, source) -> tuple:
    """The channels the CNN sees, in order: ``train_layers`` (the parameter) with ``"all"`` standing for every one
    of the scene's ``layer_names`` and the mask. A layer the scene lacks is a one-line error naming ``source``.

    >>> network_channels(["all"], ("blue", "red"), "scene.toml")
    ('blue', 'red', 'mask')
    """
    channels = [name for given in train_layers
                for name in ((*layer_names, MASK_CHANNEL) if given == ALL_LAYERS else (given,))]
    missing = [name for name in channels if name not in (*layer_names, MASK_CHANNEL)]
    if missing:
        raise ConfigError(f"{source}: train_layers names {', '.join(missing)}, which this scene's layers lack "
                          f"({', '.join(layer_names)}); name the band in [bands] or leave it out of train_layers")
    return tuple(dict.fromkeys(channels))


def model_inputs(patches: np.ndarray, masks: np.ndarray, channels, layer_names) -> np.ndarray:
    """The network input: the named ``channels`` (the tutorial's ``band4train``) of the patches.

    Parameters
    ----------
    patches : (n, w, w, l) array, the layers ``layer_names`` in that order.
    masks : (n, w, w) array, 1 on the pixels of the superpixel each patch is centred on; the channel ``"mask"``.
    channels : sequence of str, names from ``layer_names`` and ``"mask"``.

    Returns
    -------
    (n, w, w, len(channels)) float32 array.

    >>> model_inputs(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2)), ["red", "mask"], ("blue", "red")).shape
    (1, 2, 2, 2)
    """
    names = list(layer_names)
    return np.stack([masks if name == MASK_CHANNEL else patches[..., names.index(name)] for name in channels],
                    axis=-1).astype(np.float32, copy=False)


def build_cnn(input_shape: tuple, n_classes: int, name: str = "tutorial_cnn"):
    """The tutorial's CNN: Conv 64 4x4, MaxPool, Conv 128 3x3, MaxPool, Conv 64 3x3, Dense 256, softmax.

    ``input_shape`` is (w, w, channels) of the network input. Compiled with Adam and sparse categorical
    cross-entropy. The Dense 256 layer is named ``features``: its output is the learned embedding shown in
    TensorBoard's projector. ``name`` names the model (members of an ensemble need their own).
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
    ], name=name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def validation_mask(index: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out ``fraction`` of the distinct superpixels, so no patch is both trained on and validated on.

    ``index`` (m,) holds the superpixel id of each patch of the balanced set; returns an (m,) bool array, True
    for the held-out patches.
    """
    distinct = np.unique(index)
    held = rng.choice(distinct, size=int(round(fraction * distinct.size)), replace=False)
    return np.isin(index, held)


def check_validation_split(index: np.ndarray, fraction: float) -> None:
    """Refuse a ``validation_fraction`` that leaves no distinct superpixel of the balanced set to train on."""
    distinct = np.unique(index).size
    if distinct - int(round(fraction * distinct)) < 1:
        raise ConfigError(f"validation_fraction = {fraction} leaves none of the {distinct} distinct superpixels of "
                          f"the balanced set to train on; lower it or raise per_class")


def random_dihedral(network_input: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each (w, w, c) stack of ``network_input`` (n, w, w, c) turned by a random multiple of 90 degrees and
    mirrored half of the time; a new array of the same shape."""
    out = np.empty_like(network_input)
    transform = rng.integers(0, 8, size=len(network_input))
    for t in range(8):
        members = transform == t
        turned = np.rot90(network_input[members], k=t % 4, axes=(1, 2))
        out[members] = turned[:, :, ::-1] if t >= 4 else turned
    return out


def training_batches(inputs_of, labels: np.ndarray, batch_size: int, augment: bool, rng: np.random.Generator):
    """A Keras dataset of batches of network inputs and ``labels`` (m,), reshuffled each epoch (and, if ``augment``,
    randomly turned and mirrored), seeded by ``rng``; ``inputs_of(rows)`` gives the network input (k, w, w, c) of
    the chosen rows of ``labels``."""
    from tensorflow import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.order = rng.permutation(len(labels))

        def __len__(self):
            return -(-len(labels) // batch_size)

        def __getitem__(self, i):
            chosen = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            batch = inputs_of(chosen)
            return (random_dihedral(batch, rng) if augment else batch), labels[chosen]

        def on_epoch_end(self):
            self.order = rng.permutation(len(labels))

    return Batches()


def train_model(network_input: np.ndarray, labels: np.ndarray, index: np.ndarray, n_classes: int,
                params: Parameters, run_dir: Path, name: str = "tutorial_cnn", patches_of=None):
    """Train the CNN with the ``training_seed`` of ``params`` on ``network_input`` (m, w, w, c) of the superpixels ``index``
    (m,) labelled ``labels`` (m,); log to TensorBoard in ``run_dir``. Returns the model and its history (metric
    name -> list of one value per epoch). ``patches_of(superpixel ids, rng)``, if given, gives the network input of
    each training batch instead (patches cut anew; validation keeps ``network_input``).

    The learning rate halves after two epochs without a lower validation loss, and the model keeps the
    weights of the epoch with the lowest validation loss.
    """
    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(params.training_seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(params.training_seed)
    held_out = validation_mask(index, params.validation_fraction, rng)
    model = build_cnn(network_input.shape[1:], n_classes, name)
    model.summary(print_fn=log.info)
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(run_dir), histogram_freq=1, write_graph=True)]
    validation = (network_input[held_out], labels[held_out]) if held_out.any() else None
    if validation is not None:  # halve the step when validation stalls; keep the best epoch, not merely the last
        callbacks += [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, verbose=1),
                      keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.epochs,
                                                    restore_best_weights=True)]
    log.info("training on %d patches, validating on %d (distinct superpixels)", (~held_out).sum(), held_out.sum())
    trained = np.flatnonzero(~held_out)
    inputs_of = ((lambda rows: network_input[trained[rows]]) if patches_of is None
                 else (lambda rows: patches_of(index[trained[rows]], rng)))
    history = model.fit(training_batches(inputs_of, labels[trained], params.batch_size, params.augment, rng),
                        validation_data=validation, epochs=params.epochs, callbacks=callbacks, verbose=2)
    return model, history.history


def train_ensemble(network_input: np.ndarray, labels: np.ndarray, index: np.ndarray, n_classes: int,
                   params: Parameters, run_dir: Path, patches_of=None):
    """Train ``params.ensemble`` CNNs as :func:`train_model` does, with training seeds ``training_seed``, + 1, ...
    (each its own validation superpixels), logged to ``run_dir`` (members of an ensemble to ``member_<i>/`` in
    it). Returns the model that maps (one CNN, or :func:`average_of` the members), the members, and their mean
    history (metric name -> one value per epoch)."""
    if params.ensemble == 1:
        model, history = train_model(network_input, labels, index, n_classes, params, run_dir, patches_of=patches_of)
        return model, [model], history
    members, histories = [], []
    for i in range(params.ensemble):
        log.info("training member %d of %d of the ensemble", i + 1, params.ensemble)
        member_params = dataclasses.replace(params, training_seed=(params.training_seed + i) % 2**32)
        model, history = train_model(network_input, labels, index, n_classes, member_params,
                                     Path(run_dir) / f"member_{i + 1}", name=f"cnn_{i + 1}", patches_of=patches_of)
        members.append(model)
        histories.append(history)
    mean_history = {key: np.mean([history[key] for history in histories], axis=0).tolist() for key in histories[0]}
    return average_of(members), members, mean_history


def average_of(members: list):
    """One Keras model whose class probabilities are the mean of those of the ``members`` (same input)."""
    from tensorflow import keras

    patch = keras.Input(shape=members[0].input_shape[1:], name="patch")
    mean = keras.layers.Average(name="class_probabilities")([member(patch) for member in members])
    return keras.Model(patch, mean, name="ensemble")


def load_model(path: Path, card=None):
    """The Keras model saved at ``path`` (a ``.keras`` file), checked against its ``card`` (a
    :class:`pipeline.handoffs.model_card.ModelCard`), if given: patches of ``patch_width`` px with one channel per
    ``train_layers`` in, one probability per class out. A file that is no such model is a one-line error."""
    from tensorflow import keras

    try:
        model = keras.models.load_model(path)
    except Exception as error:  # Keras raises many kinds for a damaged or foreign file
        raise InputFileError(f"{path}: not a Keras model Step 2 wrote ({type(error).__name__}); retrain or copy "
                             f"model.keras and model.json together") from None
    if card is not None:
        expected_in = (card.patch_width, card.patch_width, len(card.train_layers))
        shape_in, shape_out = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
        if shape_in != expected_in or shape_out != (len(card.class_names),):
            raise InputDataError(f"{path}: takes {shape_in} and gives {shape_out}, but its model.json describes "
                                 f"{expected_in} patches ({', '.join(card.train_layers)}) and "
                                 f"{len(card.class_names)} classes; the card belongs to another model")
    return model


def predict_superpixels(model, patches: np.ndarray, masks: np.ndarray, channels, layer_names,
                        batch_size: int = 512) -> np.ndarray:
    """Class probabilities (n, classes) float32 of every superpixel's patch (``patches`` (n, w, w, l) of the layers
    ``layer_names``, ``masks`` (n, w, w)), in chunks of ``PREDICT_CHUNK`` superpixels; the model sees the
    ``channels`` it was trained on."""
    chunks = []
    for start in range(0, len(patches), PREDICT_CHUNK):
        end = start + PREDICT_CHUNK
        chunks.append(model.predict(model_inputs(patches[start:end], masks[start:end], channels, layer_names),
                                    batch_size=batch_size, verbose=0))
        log.info("  predicted %d / %d superpixels", min(end, len(patches)), len(patches))
    return np.concatenate(chunks).astype(np.float32)


def correct_priors(probabilities: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Undo the balanced set's equal class priors (Saerens et al. 2002).

    Weights each class probability of ``probabilities`` (n, classes) by the class's share among the training
    superpixels, ``shares`` (classes,), and renormalises; returns (n, classes) float32. Raises overall accuracy
    on scenes whose classes are unequal, at some cost in the recall of rare classes.

    >>> correct_priors(np.array([[0.5, 0.5]]), np.array([0.75, 0.25])).round(2).tolist()
    [[0.75, 0.25]]
    """
    weighted = probabilities * shares
    return (weighted / weighted.sum(axis=1, keepdims=True)).astype(np.float32)
