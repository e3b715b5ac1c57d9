"""The step parameters: each declared once in :class:`Parameters` with its TOML section, built-in default, range
and help, from which the steps' flags, ``--help`` and the configuration docs are made; and the checks of a value.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from pipeline.core.errors import ConfigError
from pipeline.core.vocabulary import ALL_LAYERS, CLASSIFIERS, EXTRA_BANDS, LAYER_NAMES, MASK_CHANNEL

#: The random seed of each concern (the split, the balanced set and training, the designed validation sample);
#: ``seed`` under ``[run]`` in a TOML sets each that its own section does not.
SEEDS = ("split_seed", "training_seed", "sample_seed")


@dataclass(frozen=True)
class Rule:
    """What a parameter accepts: its TOML section, help text, numeric range, oddness, layer choices."""

    section: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    odd: bool = False
    choices: tuple = ()
    count: int | None = None


def parameter(default, section: str, help: str, **rule):
    """A :class:`Parameters` field with its :class:`Rule`."""
    return field(default=default, metadata={"rule": Rule(section, help, **rule)})


@dataclass(frozen=True)
class Parameters:
    """Every step parameter, typed and checked; built-in defaults here, overridden by the TOML and flags."""

    n_segments: int = parameter(30000, "superpixels", "approximate number of SLIC superpixels", minimum=1)
    compactness: float = parameter(30.0, "superpixels", "SLIC compactness (CIELAB units; higher = squarer)",
                                   minimum=1e-6)
    slic_layers: tuple = parameter(("red", "green", "blue"), "superpixels",
                                   "the 3 layers SLIC segments, as an RGB triplet", choices=LAYER_NAMES, count=3)
    patch_width: int = parameter(25, "sampling", "patch width w in pixels (odd; the tutorial CNN needs >= 19)",
                                 minimum=19, odd=True)
    test_fraction: float = parameter(0.3, "sampling", "share of labelled superpixels held out for testing",
                                     minimum=0.01, maximum=0.9)
    block_size: int = parameter(128, "sampling", "side of the spatial split's blocks in pixels", minimum=8)
    split_seed: int = parameter(42, "sampling", "random seed of Step 0's spatial split (and its example patches)",
                                minimum=0, maximum=2**32 - 1)
    tile_size: int = parameter(0, "tiling", "process the scene in tiles of this many pixels a side on a Dask "
                                            "cluster (0 = whole scene in memory)", minimum=0)
    per_class: int = parameter(2000, "balance", "training samples drawn per class", minimum=1)
    min_training_superpixels: int = parameter(5, "balance", "Step 1 refuses a class with fewer distinct training "
                                                            "superpixels than this", minimum=1)
    training_seed: int = parameter(42, "training", "random seed of Step 1's balanced set and of Step 2's training",
                                   minimum=0, maximum=2**32 - 1)
    epochs: int = parameter(20, "training", "training epochs", minimum=1)
    batch_size: int = parameter(64, "training", "training batch size", minimum=1)
    ensemble: int = parameter(1, "training", "CNNs trained, with training seeds training_seed, +1, ...; the map "
                                             "averages their class probabilities (each costs a training)",
                               minimum=1, maximum=20)
    validation_fraction: float = parameter(0.3, "training", "share of the balanced set kept for validation",
                                           minimum=0.0, maximum=0.9)
    train_layers: tuple = parameter((ALL_LAYERS,), "training",
                                    "channels the CNN sees (band4train): layers, 'mask' = the superpixel's own "
                                    "pixels, or 'all' = every layer of the scene and the mask (the tutorial's: its "
                                    "8 layers and the mask)", choices=(*LAYER_NAMES, MASK_CHANNEL, *EXTRA_BANDS,
                                                                      ALL_LAYERS))
    projector_layers: tuple = parameter(("red", "green", "blue"), "training",
                                        "3 layers of the projector's sprite images (band4projector)",
                                        choices=LAYER_NAMES, count=3)
    augment: bool = parameter(True, "training", "turn and mirror the training patches at random, anew each epoch")
    random_patch_centres: bool = parameter(True, "training", "centre each training patch on a pixel of its "
                                                             "superpixel drawn at random, anew each epoch (false: "
                                                             "on its centroid, as the tutorial and the map do)")
    target_se: float = parameter(0.01, "assessment", "standard error of the overall accuracy a designed "
                                                       "validation sample aims at (Olofsson et al. 2014 eq. 13)",
                                 minimum=0.001, maximum=0.2)
    min_per_class: int = parameter(50, "assessment", "at least this many points per map class in a designed "
                                                     "validation sample", minimum=2)
    sample_size: int = parameter(0, "assessment", "points of a designed validation sample (0 = from --target-se)",
                                 minimum=0)
    sample_seed: int = parameter(42, "assessment", "random seed of Step 3's designed validation sample",
                                 minimum=0, maximum=2**32 - 1)
    masking: bool = parameter(True, "masking", "mask clouds, shadows and bad pixels: from a product's own mask "
                                               "(SCL, MSK_CLASSI), else a cloud detector, or the scene's mask raster")
    mask_classes: tuple = parameter((0, 1, 3, 8, 9, 10), "masking",
                                    "SCL classes masked in L2A products (0 no data, 1 saturated or defective, 3 cloud "
                                    "shadows, 8/9 cloud medium/high probability, 10 thin cirrus, 11 snow)",
                                    choices=tuple(range(12)))
    mask_buffer_m: float = parameter(40.0, "masking", "buffer in metres around masked clouds and shadows",
                                     minimum=0.0, maximum=5000.0)
    prior_correction: bool = parameter(True, "training", "weight predicted class probabilities by the classes' "
                                                         "shares among training superpixels (undoes the balancing's "
                                                         "equal priors; the CNN's only)")
    classifier: str = parameter("cnn", "training", "what Step 2 trains and maps with: 'cnn' = the tutorial's patch "
                                                   "CNN, 'forest' = a random forest on each superpixel's mean and "
                                                   "standard deviation of every band and of NDVI, NDWI, NDBI",
                                choices=CLASSIFIERS)

    @classmethod
    def rules(cls) -> dict:
        """Parameter name -> (:class:`Rule`, default)."""
        return {f.name: (f.metadata["rule"], f.default) for f in dataclasses.fields(cls)}

    def replaced(self, values: dict, source: str) -> "Parameters":
        """A copy with ``values`` (name -> raw value, None = not given) checked and applied."""
        rules = self.rules()
        checked = {name: check_value(name, value, *rules[name], source)
                   for name, value in values.items() if value is not None}
        return dataclasses.replace(self, **checked)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_value(name: str, value, rule: Rule, default, source: str):
    """``value`` converted to the type of ``default`` if it obeys ``rule``, else :class:`ConfigError`."""
    where = f"{source}: {name} = {value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(default, tuple) and isinstance(default[0], int):
        return _check_codes(value, rule, where)
    if isinstance(default, tuple):
        return _check_layers(value, rule, where)
    if isinstance(default, str):
        if value not in rule.choices:
            raise ConfigError(f"{where} must be one of {', '.join(rule.choices)}")
        return value
    kind = type(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}")
    if not math.isfinite(value) or (kind is int and value != int(value)):
        raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a finite number'}")
    value = kind(value)
    if rule.minimum is not None and value < rule.minimum:
        raise ConfigError(f"{where} must be at least {rule.minimum}")
    if rule.maximum is not None and value > rule.maximum:
        raise ConfigError(f"{where} must be at most {rule.maximum}")
    if rule.odd and value % 2 == 0:
        raise ConfigError(f"{where} must be odd, so the patch has a centre pixel")
    return value


def _check_layers(value, rule: Rule, where: str) -> tuple:
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where} must be a list of layer names from {', '.join(rule.choices)}")
    names = [_layer_name(v, rule.choices) for v in value]
    unknown = [v for v in names if v not in rule.choices]
    if unknown:
        raise ConfigError(f"{where} names unknown layer(s) {unknown}; choose from {', '.join(rule.choices)}")
    if rule.count is not None and len(names) != rule.count:
        raise ConfigError(f"{where} must name exactly {rule.count} layers")
    return tuple(names)


def _check_codes(value, rule: Rule, where: str) -> tuple:
    """A list of integer codes from ``rule.choices`` (e.g. SCL classes), sorted, each once."""
    value = [value] if isinstance(value, int) else value
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value) \
            or not set(value) <= set(rule.choices):
        raise ConfigError(f"{where} must be a list of integers from {min(rule.choices)} to {max(rule.choices)}")
    return tuple(sorted(set(value)))


def _layer_name(value, choices: tuple):
    """A layer given by name, or by its 0-based index in ``choices`` (an int or a string of digits)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    return value
