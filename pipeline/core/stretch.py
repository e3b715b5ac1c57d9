"""Stretch arithmetic: percentile limits, the linear map of values to [0, 1] between them, and [0, 1] as bytes
0..255 (the stored steps of layers, patches and quicklooks)."""
from __future__ import annotations

import numpy as np


def percentile_limits(values: np.ndarray, valid: np.ndarray | None = None, low: float = 1.0,
                      high: float = 99.0) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of ``values`` over ``valid`` pixels (0, 0 if there are none)."""
    sample = values if valid is None or valid.all() else values[valid]
    if sample.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(sample, [low, high])
    return float(lo), float(hi)


def rescale_to_unit(values: np.ndarray, lo, hi) -> np.ndarray:
    """Linear map of ``values`` to float32 [0, 1], ``lo`` to 0 and ``hi`` to 1, clipped outside; ``lo`` and
    ``hi`` are numbers, or one per channel (the last axis) of ``values``.

    >>> rescale_to_unit(np.array([0.0, 10.0, 50.0, 100.0]), *percentile_limits(np.arange(101.0), None, 10, 90))
    array([0. , 0. , 0.5, 1. ], dtype=float32)
    >>> rescale_to_unit(np.array([[5.0, 5.0]]), [0, 0], [10, 5]).tolist()
    [[0.5, 1.0]]
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    scale = np.divide(1.0, hi - lo, out=np.zeros(np.broadcast(lo, hi).shape), where=hi > lo).astype(np.float32)
    stretched = np.subtract(values, lo.astype(np.float32), dtype=np.float32)
    stretched *= scale
    return np.clip(stretched, 0.0, 1.0, out=stretched)


def unit_to_byte(values: np.ndarray, rows: int = 1024) -> np.ndarray:
    """Values in [0, 1] (e.g. an RGB image (rows, cols, 3)) as uint8 0..255, rounded half up and clipped to the
    range, ``rows`` along the first axis at a time (no float copy of the whole array).

    >>> unit_to_byte(np.array([[[0.0, 0.5, 1.0]]])).tolist()
    [[[0, 128, 255]]]
    """
    values = np.asarray(values)
    byte = np.empty(values.shape, dtype=np.uint8)
    for start in range(0, max(len(values), 1), rows):
        block = np.clip(values[start:start + rows], 0, 1) * np.float32(255) + np.float32(0.5)
        byte[start:start + rows] = block.astype(np.uint8)
    return byte
