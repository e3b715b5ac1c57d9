"""The model card, ``model.json`` beside a trained ``model.keras`` (or ``model.forest.joblib``): what applying the
model to another scene needs (its classifier, layers, channels, patch width or a forest's features, classes, the
training scene's stretch and class shares) and the runs it came from.

Step 2 writes it when it trains (:func:`from_training`, :meth:`ModelCard.write`); Step 2 with ``--model`` and
Step 0 with ``--stretch-from`` read it with :func:`read`, which refuses in one line a card that is missing, not
JSON, lacks a key or holds a value of the wrong type or shape.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.atomic_files import atomic_output
from pipeline.core.colours import class_palette
from pipeline.handoffs import contract
from pipeline.core.vocabulary import CLASSIFIERS, STEP0, STEP2
from pipeline.handoffs.contract import MODEL_CARD
from pipeline.core.errors import InputDataError, InputFileError


@dataclass(frozen=True)
class ModelCard:
    """A trained model's card; in ``model.json`` each tuple is a JSON list and each dict a JSON object.

    A random forest's card (``classifier`` ``"forest"``) has no channels (``train_layers`` empty: the forest sees
    no patches, ``patch_width`` is only the training scene's) and no prior correction: trained on each distinct
    training superpixel once, its probabilities carry their class shares, ``prior_shares``, already.

    Attributes
    ----------
    model_run : the run id of the Step 2 run that trained the model.
    scene : the name of the training scene.
    layer_names : the layers of the patches, in the order of their last axis (the tutorial's 8, then the further
        bands of the training scene).
    train_layers : the channels the CNN sees, in order (names from ``layer_names`` and ``"mask"``); none for a forest.
    patch_width : the side of the patches in pixels.
    class_names : the classes, in the order of their codes 0, 1, ...
    class_colours : an (r, g, b) colour (0-255) per class.
    stretch_limits : layer -> (low, high), the training scene's stretch limits, in ``stretch_unit``.
    stretch_unit : the unit of the stretch limits: ``"reflectance"`` or ``"raster values"``.
    prior_shares : each class's share of the training superpixels (sums to 1), the priors of
        :func:`pipeline.model.cnn.correct_priors` (a forest's: of the superpixels it was trained on).
    prior_correction : whether the model's probabilities are corrected with ``prior_shares``.
    parameters : the step parameters of the training run (name -> value).
    preparation : how the training scene's image was made: ``dates``, ``composite``, ``masking``,
        ``mask_classes``, ``mask_buffer_m`` and ``mask_raster`` (whether the scene had its own mask raster).
    step0_run, step1_run : the run ids of the Step 0 and Step 1 hand-offs the model was trained on.
    layer_quantiles : the training scene's layer quantiles before the stretch, in ``stretch_unit``
        (``{"levels": [...], "quantiles": {layer: [...]}}``, :func:`pipeline.model.scene_shift.layer_quantiles`),
        to compare another scene with; None in cards written before they were recorded.
    classifier : ``"cnn"`` (the patch CNN, ``model.keras``; cards written before the forest read as it) or
        ``"forest"`` (the superpixel random forest, ``model.forest.joblib``).
    forest_features : a forest's features (``forest_features.card_features``): the image bands' ``roles`` (role ->
        band number), ``band_count``, ``unit``, ``indices`` and feature ``count``; None for a CNN.
    """

    model_run: str
    scene: str
    layer_names: tuple[str, ...]
    train_layers: tuple[str, ...]
    patch_width: int
    class_names: tuple[str, ...]
    class_colours: tuple[tuple[int, int, int], ...]
    stretch_limits: dict[str, tuple[float, float]]
    stretch_unit: str
    prior_shares: tuple[float, ...]
    prior_correction: bool
    parameters: dict
    preparation: dict
    step0_run: str
    step1_run: str
    layer_quantiles: dict | None = None
    classifier: str = "cnn"
    forest_features: dict | None = None

    def to_json(self) -> str:
        """The card as ``model.json`` holds it: indented JSON with sorted keys, ending in a newline."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        with atomic_output(path) as temporary:
            temporary.write_text(self.to_json())


#: The keys of ``model.json``, one per field of :class:`ModelCard`.
KEYS = tuple(field.name for field in dataclasses.fields(ModelCard))
#: The keys a card may lack (cards written before they were recorded): their field's default stands in.
OPTIONAL_KEYS = ("layer_quantiles", "classifier", "forest_features")


def from_training(scene, step0_record: dict, layer_names: tuple, channels: tuple, train_labels: np.ndarray,
                  record: dict, forest_features: dict | None = None) -> ModelCard:
    """The card of a model trained on ``scene``.

    Parameters
    ----------
    scene : the training :class:`~pipeline.run.config.Scene`.
    step0_record : the provenance of the scene's Step 0 run (its stretch limits and their unit).
    layer_names : the layers of the scene's patches, in order.
    channels : the channels the CNN sees, in order (``cnn.network_channels``); () for a forest.
    train_labels : (m,) uint8 class codes of the training superpixels (their shares are the priors).
    record : the provenance of the training Step 2 run (its ``run``, ``step0_run`` and ``step1_run``).
    forest_features : a forest's features (given: the card of a forest, without prior correction).
    """
    p, n_classes = scene.params, len(scene.classes)
    stretch = step0_record["stretch"]
    if "unit" not in stretch:
        raise InputDataError(f"{contract.SAMPLES.path(scene.workdir)}: written by an older version of {STEP0} "
                             f"(no unit of its stretch limits); rerun {STEP0}")
    shares = np.bincount(train_labels, minlength=n_classes)[:n_classes] / max(1, len(train_labels))
    return ModelCard(
        model_run=record["run"], scene=scene.name, layer_names=tuple(layer_names), train_layers=tuple(channels),
        patch_width=p.patch_width, class_names=tuple(scene.class_names),
        class_colours=tuple(tuple(int(v) for v in c) for c in class_palette(scene.class_names)),
        stretch_limits={name: tuple(float(v) for v in stretch["limits"][name]) for name in layer_names},
        stretch_unit=stretch["unit"], prior_shares=tuple(shares.tolist()),
        prior_correction=p.prior_correction and forest_features is None, parameters={**p.as_dict(), "train_layers": tuple(channels)},
        preparation=preparation(step0_record["parameters"]), step0_run=record["step0_run"],
        step1_run=record["step1_run"], layer_quantiles=stretch.get("layer_quantiles") or None,
        classifier="cnn" if forest_features is None else "forest", forest_features=forest_features)


def preparation(step0_parameters: dict) -> dict:
    """How a scene's image was made, from its Step 0 run's parameters (``contract.step0_parameters``)."""
    return {"dates": 1 + len(step0_parameters["later_dates"]), "composite": step0_parameters["composite"],
            "masking": step0_parameters["masking"], "mask_classes": step0_parameters["mask_classes"],
            "mask_buffer_m": step0_parameters["mask_buffer_m"], "mask_raster": step0_parameters["mask"] is not None}


def read(model_path: Path) -> ModelCard:
    """The card (``model.json``) beside the trained model ``model_path`` (a ``model.keras`` or
    ``model.forest.joblib``), checked key by key.

    Raises ``InputFileError`` if the model or its card is missing or the card is not JSON, and
    ``InputDataError`` if the card lacks a key or holds a value of the wrong type or shape; each names the file
    and what to do, in one line.
    """
    model_path = contract.existing(model_path, STEP2)
    card_path = Path(model_path).with_name(MODEL_CARD)
    try:
        content = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{card_path}: not found beside {Path(model_path).name}; Step 2 writes it "
                                          f"with the model (copy both files together)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(f"{card_path}: unreadable ({type(error).__name__}); rerun {STEP2}") from None
    if not isinstance(content, dict):
        raise InputDataError(f"{card_path}: holds a JSON {type(content).__name__}, not a model card; rerun {STEP2}")
    missing = [key for key in KEYS if key not in content and key not in OPTIONAL_KEYS]
    if missing:
        raise InputDataError(f"{card_path}: lacks {', '.join(missing)}; rerun {STEP2}")
    for key in KEYS:  # in field order: class_names and layer_names are checked before the keys sized by them
        expected, fits = _RULES[key]
        if key in content and not fits(content[key], content):
            shown = json.dumps(content[key])
            raise InputDataError(f"{card_path}: {key} must be {expected}, not {shown[:80]}"
                                 f"{'...' if len(shown) > 80 else ''}; rerun {STEP2}")
    return _card_of(content)


def _card_of(content: dict) -> ModelCard:
    """The :class:`ModelCard` of a checked ``model.json`` content, its lists made tuples (keys that are not
    fields of the card are left out)."""
    values = {key: content[key] for key in KEYS if key in content}
    for key in ("layer_names", "train_layers", "class_names", "prior_shares"):
        values[key] = tuple(values[key])
    values["class_colours"] = tuple(tuple(colour) for colour in values["class_colours"])
    values["stretch_limits"] = {name: tuple(values["stretch_limits"][name]) for name in values["layer_names"]}
    return ModelCard(**values)


def _is_number(value) -> bool:
    """A finite JSON number (json reads NaN and Infinity too, which no limit or share may be)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_numbers(value, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(_is_number(v) for v in value)


def _is_texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_quantiles(value, card) -> bool:
    levels = value.get("levels") if isinstance(value, dict) else None
    return (isinstance(levels, list) and len(levels) > 1 and _is_numbers(levels, len(levels))
            and isinstance(value.get("quantiles"), dict)
            and all(_is_numbers(value["quantiles"].get(name), len(levels)) for name in card["layer_names"]))


def _is_forest_features(value, classifier: str) -> bool:
    if classifier != "forest":
        return value is None
    counts = [value.get(key) for key in ("band_count", "count")] if isinstance(value, dict) else [None]
    return (all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in counts)
            and isinstance(value.get("roles"), dict) and all(isinstance(v, int) for v in value["roles"].values())
            and isinstance(value.get("unit"), str) and _is_texts(value.get("indices")))


def _is_colour(value) -> bool:
    return _is_numbers(value, 3) and all(isinstance(v, int) and 0 <= v <= 255 for v in value)


#: Per key of ``model.json``: what its value must be, and a test of the value (given the whole card).
_RULES = {
    "model_run": ("a text (a run id)", lambda value, card: isinstance(value, str)),
    "scene": ("a text (the training scene's name)", lambda value, card: isinstance(value, str)),
    "layer_names": ("a list of layer names", lambda value, card: _is_texts(value)),
    "train_layers": ("a list of channel names (none for a forest)",
                     lambda value, card: _is_texts(value) and (len(value) > 0 or card.get("classifier") == "forest")),
    "patch_width": ("a whole number of pixels above 0",
                    lambda value, card: isinstance(value, int) and not isinstance(value, bool) and value > 0),
    "class_names": ("a list of class names", lambda value, card: _is_texts(value) and len(value) > 0),
    "class_colours": ("a list of one [red, green, blue] (0-255) per class",
                      lambda value, card: isinstance(value, list) and len(value) == len(card["class_names"])
                      and all(_is_colour(c) for c in value)),
    "stretch_limits": ("{layer: [low, high]} (finite numbers) for every layer of layer_names",
                       lambda value, card: isinstance(value, dict)
                       and all(_is_numbers(value.get(name), 2) for name in card["layer_names"])),
    "stretch_unit": ("a text (the unit of the stretch limits)", lambda value, card: isinstance(value, str)),
    "prior_shares": ("a list of one finite number per class",
                     lambda value, card: _is_numbers(value, len(card["class_names"]))),
    "prior_correction": ("true or false", lambda value, card: isinstance(value, bool)),
    "parameters": ("an object {parameter: value}", lambda value, card: isinstance(value, dict)),
    "preparation": ("an object {dates, composite, masking, ...}", lambda value, card: isinstance(value, dict)),
    "step0_run": ("a text (a run id)", lambda value, card: isinstance(value, str)),
    "step1_run": ("a text (a run id)", lambda value, card: isinstance(value, str)),
    "layer_quantiles": ("null or {levels: [...], quantiles: {layer: [one finite number per level]}} for every "
                        "layer of layer_names", lambda value, card: value is None or _is_quantiles(value, card)),
    "classifier": (f"one of {', '.join(CLASSIFIERS)} (forest: with forest_features)",
                   lambda value, card: value in CLASSIFIERS
                   and (value == "cnn" or card.get("forest_features") is not None)),
    "forest_features": ("null for a CNN, for a forest {roles: {role: band}, band_count, unit, indices, count}",
                        lambda value, card: _is_forest_features(value, card.get("classifier", "cnn"))),
}
