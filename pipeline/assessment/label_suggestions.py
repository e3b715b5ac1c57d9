"""Where to label next: the superpixels the CNN is least sure of, spread over the scene, as points to label in QGIS
and add to the training polygons (uncertainty = 1 - the highest class probability, 0 to 1)."""
from __future__ import annotations

import math

import numpy as np


def superpixel_uncertainty(blocks, n_superpixels: int) -> tuple[np.ndarray, int]:
    """Mean uncertainty of each superpixel (float64, n; NaN for a superpixel without a mapped pixel) and the
    number of mapped pixels, summed window by window: ``blocks`` yields (uncertainty, segments) of windows
    covering the scene once (``grids.read_windows``), the per-pixel uncertainty (rows, cols; NaN where unmapped)
    and the superpixel ids of the same pixels.

    >>> uncertainty, segments = np.array([[0.25, 0.75, np.nan]]), np.array([[0, 0, 1]])
    >>> superpixel_uncertainty([(uncertainty[:, :1], segments[:, :1]), (uncertainty[:, 1:], segments[:, 1:])], 2)
    (array([0.5, nan]), 2)
    """
    sums, counts = np.zeros(n_superpixels), np.zeros(n_superpixels, np.int64)
    for uncertainty, segments in blocks:
        valid = np.isfinite(uncertainty)
        sums += np.bincount(segments[valid], weights=uncertainty[valid], minlength=n_superpixels)
        counts += np.bincount(segments[valid], minlength=n_superpixels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan), int(counts.sum())


def spacing(mapped_pixels: int, count: int, patch_width: int) -> float:
    """The minimum distance in pixels between suggestions: half the spacing of ``count`` points on a square grid
    over the mapped area, and never less than a patch width (so no two suggested patches overlap much).

    >>> spacing(1_000_000, 100, 25)  # 100 px apart on a grid: 50 px
    50.0
    """
    return max(float(patch_width), 0.5 * math.sqrt(mapped_pixels / max(count, 1)))


def most_uncertain(centroids: np.ndarray, uncertainty: np.ndarray, count: int, min_distance: float) -> np.ndarray:
    """Indices of up to ``count`` superpixels, most uncertain first, no two centroids (n, 2 px) closer than
    ``min_distance`` px: each pick removes the candidates around it (greedy non-maximum suppression); superpixels
    with NaN ``uncertainty`` (n,) are never picked.

    >>> most_uncertain(np.array([[0, 0], [0, 3], [0, 20]]), np.array([0.9, 0.8, 0.1]), 2, 5.0).tolist()
    [0, 2]
    """
    from scipy.spatial import cKDTree

    candidates = np.flatnonzero(np.isfinite(uncertainty))
    order = candidates[np.argsort(-uncertainty[candidates], kind="stable")]
    if len(order) == 0 or count <= 0:
        return np.zeros(0, np.int64)
    tree = cKDTree(centroids[order])
    removed = np.zeros(len(order), bool)
    picked = []
    for rank in range(len(order)):
        if removed[rank]:
            continue
        picked.append(order[rank])
        if len(picked) == count:
            break
        removed[tree.query_ball_point(centroids[order[rank]], np.nextafter(min_distance, 0))] = True
    return np.array(picked, np.int64)
