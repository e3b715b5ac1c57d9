"""The scene comparison of Step 2 --model on made-up quantiles with a known answer: a scene like its training scene
is not warned of; one shifted by half the training stretch range, of other units or other class shares is."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.model import scene_shift
from pipeline.core.vocabulary import LAYER_NAMES
from builders import CARD

LEVELS = list(scene_shift.QUANTILE_LEVELS)
#: The training scene: each layer's quantiles spread evenly over 0..100, its stretch limits their 1 and 99 %.
TRAINING = {"levels": LEVELS, "quantiles": {name: [100 * level for level in LEVELS] for name in LAYER_NAMES}}
TRAINED = dataclasses.replace(CARD, layer_quantiles=TRAINING, prior_shares=(0.5, 0.5),
                              stretch_limits={name: (1.0, 99.0) for name in LAYER_NAMES})
PREDICTED_HALVES = np.array([0, 1] * 50 + [255] * 10, np.uint8)  # 255: no data, not counted


def step0_record(offset: float = 0.0, unit: str = "reflectance") -> dict:
    return {"stretch": {"unit": unit, "layer_quantiles": {"levels": LEVELS, "quantiles": {
        name: [100 * level + offset for level in LEVELS] for name in LAYER_NAMES}}}}


def test_scene_like_the_training_scene_is_not_warned_of():
    comparison = scene_shift.compare(TRAINED, step0_record(), PREDICTED_HALVES)
    assert comparison["layers"]["red"] == {"shift": 0, "outside_share": pytest.approx(0.02)}
    assert comparison["class_share_distance"] == 0 and comparison["shift_warning"] is False


def test_scene_shifted_by_half_the_stretch_range_is_warned_of():
    comparison = scene_shift.compare(TRAINED, step0_record(offset=49.0), PREDICTED_HALVES)
    assert comparison["layers"]["nir"]["shift"] == pytest.approx(0.5)
    # half the pixels above the high limit 99, and the floor's 0.01 below the low one
    assert comparison["layers"]["nir"]["outside_share"] == pytest.approx(0.51)
    assert comparison["shift_warning"] is True and len(comparison["reasons"]) == 2


def test_other_units_and_other_class_shares_are_warned_of():
    comparison = scene_shift.compare(TRAINED, step0_record(unit="raster values (uint16)"), np.zeros(10, np.uint8))
    assert comparison["class_share_distance"] == 0.5
    assert [reason.split()[:3] for reason in comparison["reasons"]] == [["the", "scene's", "values"],
                                                                       ["predicted", "class", "shares"]]


def test_card_without_quantiles_compares_the_class_shares_only():
    comparison = scene_shift.compare(CARD, step0_record(), PREDICTED_HALVES)
    assert comparison["layers"] is None and "model's card" in comparison["layers_unavailable"]
    assert comparison["class_share_distance"] == 0.25 and comparison["shift_warning"] is False
