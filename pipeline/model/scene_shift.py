"""How unlike the scene a model is applied to (Step 2 ``--model``) is to the scene the model learnt on.

Step 0 records, in its run's ``stretch``, the quantiles of each layer of its scene before the stretch
(:func:`layer_quantiles`, at :data:`QUANTILE_LEVELS`, in the unit of the stretch limits); a trained model's card
keeps its training scene's. Step 2 with ``--model`` compares them (:func:`compare`), and the map's class shares
with the training superpixels', and warns when the scene looks unlike the training scene. All comparisons are of
the values before the stretch, in the unit of the model's stretch limits, so they hold whichever limits (the
scene's own percentiles or the model's) stretched the scene; a layer's differences are measured in its training
stretch range (``high - low``), the span the CNN's input [0, 1] covers.
"""
from __future__ import annotations

import numpy as np

from pipeline.core.vocabulary import UNLABELLED

#: Levels of the recorded quantiles: the stretch's 1 and 99 % percentiles and every 5 % between.
QUANTILE_LEVELS = (0.01, *np.round(np.arange(0.05, 0.951, 0.05), 2).tolist(), 0.99)
#: Warn above these, chosen by measuring (README "Map another scene with a trained model"): the demo's northern
#: half (rows 0-469) applied to its southern half, a like scene, reaches a layer shift of 0.11 (ndvi), an
#: outside share of 0.02 (the floor) and a class share distance of 0.22 (0.24 stretched with its own limits:
#: the south has little sea). Scenes unlike it: the Brandenburg winter L1C scene rescaled to the demo's x 1000,
#: 1.01, 0.91 and 0.61; the south with blue and red, nir and swir swapped, 1.07, 0.98 and 0.75; the south x 1.5,
#: 0.44, 0.65 and 0.45; the south with red-edge bands as nir and swir (a milder swap), 0.24, 0.15 and 0.54.
#: Each threshold keeps the like scene well under it (x 1.5 to x 5) and every unlike scene crosses all three
#: (the milder swap's layer shift most narrowly).
MAX_LAYER_SHIFT = 0.2  # mean |quantile difference| of a layer, in training stretch ranges
MAX_OUTSIDE_SHARE = 0.10  # share of a layer's pixels outside the training stretch limits (the training scene: 0.02)
MAX_CLASS_SHARE_DISTANCE = 0.35  # total variation distance between predicted and training class shares


def layer_quantiles(preview: np.ndarray, valid: np.ndarray, names) -> dict:
    """The quantiles of every layer of ``preview`` (rows, cols, c, before the stretch; its layers ``names``) over its ``valid``
    pixels: ``{"levels": QUANTILE_LEVELS, "quantiles": {layer: [one per level]}}`` in the layers' unit; ``{}``
    if no pixel is valid.

    >>> layer_quantiles(np.arange(101.0)[:, None, None], np.ones((101, 1), bool), ["red"])["quantiles"]["red"][:3]
    [1.0, 5.0, 10.0]
    """
    values = preview[valid]
    if not len(values):
        return {}
    quantiles = np.quantile(values, QUANTILE_LEVELS, axis=0)  # (levels, c)
    return {"levels": list(QUANTILE_LEVELS),
            "quantiles": {name: quantiles[:, i].tolist() for i, name in enumerate(names)}}


def layer_shifts(model_quantiles: dict, scene_quantiles: dict, limits: dict) -> dict:
    """Per layer, ``shift``: the mean absolute difference of the scene's and the training scene's quantiles
    in training stretch ranges (0: alike; 1: apart by the whole span the CNN sees), and ``outside_share``:
    the share of the scene's pixels outside the training stretch ``limits`` (layer -> (low, high)), read off
    its quantiles (at least 0.02, as in the training scene itself); for the layers of ``limits``."""
    names = list(limits)
    levels = np.asarray(model_quantiles["levels"])
    model = np.array([model_quantiles["quantiles"][name] for name in names])  # (layers, levels)
    scene = np.array([scene_quantiles["quantiles"][name] for name in names])
    lows, highs = np.array([limits[name] for name in names]).T
    span = np.where(highs > lows, highs - lows, 1.0)
    shift = np.abs(scene - model).mean(axis=1) / span
    below = np.array([np.interp(low, row, levels) for low, row in zip(lows, scene)])  # layers, not pixels
    above = 1 - np.array([np.interp(high, row, levels) for high, row in zip(highs, scene)])
    return {name: {"shift": round(float(shift[i]), 4), "outside_share": round(float(below[i] + above[i]), 4)}
            for i, name in enumerate(names)}


def compare(card, step0_record: dict, pred_labels: np.ndarray) -> dict:
    """The comparison of a scene with the training scene of the model of ``card`` (a ``ModelCard``), for
    ``metrics.json``'s ``applied_model``: the stretch units, each layer's shift and outside share (see
    :func:`layer_shifts`; ``layers`` is None with a note ``layers_unavailable`` when the card or the scene's
    Step 0 run, ``step0_record``, predates the recorded quantiles), the class shares of the training
    superpixels and of the predicted ones (``pred_labels``, (n,) uint8, 255 without data), the thresholds, the
    ``reasons`` to warn and ``shift_warning``: whether there is any."""
    class_names = list(card.class_names)
    mapped = pred_labels[pred_labels != UNLABELLED]
    predicted = np.bincount(mapped, minlength=len(class_names))[:len(class_names)] / max(1, len(mapped))
    training = np.asarray(card.prior_shares)
    distance = round(float(np.abs(predicted - training).sum() / 2), 4)
    stretch = step0_record["stretch"]
    result = {"model_scene": card.scene, "stretch_unit": {"model": card.stretch_unit, "scene": stretch["unit"]},
              "stretched_with_model_limits": stretch.get("from_model_run") == card.model_run,
              "class_shares": {"training": dict(zip(class_names, np.round(training, 4).tolist())),
                               "predicted": dict(zip(class_names, np.round(predicted, 4).tolist()))},
              "class_share_distance": distance, "layers": None,
              "thresholds": {"layer_shift": MAX_LAYER_SHIFT, "outside_share": MAX_OUTSIDE_SHARE,
                             "class_share_distance": MAX_CLASS_SHARE_DISTANCE}}
    reasons = []
    if card.stretch_unit != stretch["unit"]:
        reasons.append(f"the scene's values are {stretch['unit']}, the model's {card.stretch_unit}")
    if card.layer_quantiles and stretch.get("layer_quantiles"):
        result["layers"] = layers = layer_shifts(card.layer_quantiles, stretch["layer_quantiles"], card.stretch_limits)
        shifted = [f"{name} {v['shift']:.2f}" for name, v in layers.items() if v["shift"] > MAX_LAYER_SHIFT]
        outside = [f"{name} {v['outside_share']:.0%}" for name, v in layers.items()
                   if v["outside_share"] > MAX_OUTSIDE_SHARE]
        if shifted:
            reasons.append(f"layers shifted by more than {MAX_LAYER_SHIFT} of the training stretch range: "
                           f"{', '.join(shifted)}")
        if outside:
            reasons.append(f"more than {MAX_OUTSIDE_SHARE:.0%} of pixels outside the training stretch limits: "
                           f"{', '.join(outside)}")
    else:
        result["layers_unavailable"] = ("no layer quantiles recorded by " + ("the model's card" if not
                                        card.layer_quantiles else "this scene's Step 0 run") +
                                        " (made before they were); retrain the model or rerun Step 0 to compare")
    if distance > MAX_CLASS_SHARE_DISTANCE:
        top = int(predicted.argmax())
        reasons.append(f"predicted class shares differ from the training shares by {distance:.2f} (total "
                       f"variation; {class_names[top]} {predicted[top]:.0%} of the map, {training[top]:.0%} in "
                       f"training)")
    return {**result, "reasons": reasons, "shift_warning": bool(reasons)}
