"""SLIC superpixels of three stretched layers (tutorial section 2.1), and what each superpixel's pixels give.

*Segments* are int32 arrays (rows, cols) of superpixel ids 0..n-1 without gaps.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import slic  # imported with the module: in the strips' threads, it would delay them

from pipeline.grids import row_blocks


def segment(lab: np.ndarray, n_segments: int, compactness: float, valid: np.ndarray,
            n_strips: int | None = None) -> np.ndarray:
    """SLIC superpixels of a CIELAB image ``lab`` (rows, cols, 3): :func:`to_lab` of 3 stretched layers (the
    scene's ``slic_layers``, ``layers.select_layers``) treated as an RGB triplet, as in the tutorial (so
    ``compactness`` is in Lab units: 10-40 gives compact superpixels that still follow edges); about
    ``n_segments`` of them.

    The image is cut into ``n_strips`` horizontal strips (default: one per CPU core, each at least 256 rows)
    segmented in parallel threads; superpixels do not cross strip boundaries. Invalid pixels (False in
    ``valid``, bool (rows, cols)), if any, are left out of SLIC and gathered in one superpixel per strip.
    Returns int32 array (rows, cols) of superpixel ids 0..n-1 without gaps.
    """
    rows = valid.shape[0]
    n_strips = n_strips or max(1, min(os.cpu_count() or 1, rows // 256))
    bounds = np.linspace(0, rows, n_strips + 1).round().astype(int)
    segments = np.empty(valid.shape, dtype=np.int32)

    def segment_strip(k: int) -> int:  # each strip's labels go straight into its rows; returns their count
        strip = slice(bounds[k], bounds[k + 1])
        share = (bounds[k + 1] - bounds[k]) / rows
        segments[strip] = slic_of_lab(lab[strip], max(1, round(n_segments * share)), compactness, valid[strip])
        return int(segments[strip].max()) + 1

    with ThreadPoolExecutor(n_strips) as pool:  # scikit-image's SLIC loop releases the GIL
        counts = list(pool.map(segment_strip, range(n_strips)))
    for k, offset in enumerate(np.cumsum([0] + counts[:-1])):
        segments[bounds[k]:bounds[k + 1]] += offset
    return consecutive_ids(segments)


def slic_of_lab(lab: np.ndarray, n_segments: int, compactness: float, valid: np.ndarray) -> np.ndarray:
    """scikit-image SLIC of a CIELAB image (rows, cols, 3; :func:`to_lab`), as its ``slic`` with its default
    CIELAB conversion would segment the RGB image. Returns int64 labels (rows, cols) from 0; where some pixels
    are not ``valid``, those are 0 and the superpixels start at 1.

    SLIC rescales whatever it gets to [0, 1] by its min and max. On the Lab image that would make
    ``compactness`` depend on the strip's colour range, so it is divided by that range, which leaves
    every SLIC distance comparison exactly as on the unscaled Lab image.
    """
    if not valid.any():
        return np.zeros(valid.shape, dtype=np.int64)
    mask = None if valid.all() else valid
    values = lab if mask is None else lab[mask]
    lab_range = float(values.max() - values.min()) or 1.0
    return slic(lab, n_segments=n_segments, compactness=compactness / lab_range, channel_axis=-1,
                convert2lab=False, start_label=0 if mask is None else 1, mask=mask)


def to_lab(rgb: np.ndarray, block_pixels: int = 2**17) -> np.ndarray:
    """CIELAB (D65) of an RGB float image (rows, cols, 3) in [0, 1]: ``skimage.color.rgb2lab``'s values,
    converted in blocks of rows of about ``block_pixels`` pixels, whose temporaries stay in cache (3 to 5 times
    faster than one call on a 1750 x 3500 px strip)."""
    lab = np.empty(rgb.shape, dtype=np.result_type(rgb.dtype, np.float32))
    for rows in row_blocks(*rgb.shape[:2], block_pixels):
        lab[rows] = rgb2lab(rgb[rows])
    return lab


def consecutive_ids(segments: np.ndarray) -> np.ndarray:
    """Renumber non-negative ids to 0..n-1 in order, removing gaps (int32, same shape).

    >>> consecutive_ids(np.array([[5, 5], [2, 9]])).tolist()
    [[1, 1], [0, 2]]
    """
    present = np.bincount(segments.ravel()) > 0
    if present.all():
        return segments.astype(np.int32, copy=False)
    new_ids = (np.cumsum(present) - 1).astype(np.int32)
    return new_ids[segments]


def centroids(segments: np.ndarray, block_pixels: int = 2**20) -> np.ndarray:
    """Mean row and column of each superpixel's pixels, rounded half up: int32 array (n, 2), in pixels; summed
    over blocks of rows of about ``block_pixels`` pixels (small temporaries, reused).

    >>> centroids(np.array([[0, 0, 1], [0, 0, 1]])).tolist()
    [[1, 1], [1, 2]]
    """
    rows, cols = segments.shape
    n = int(segments.max()) + 1
    sums = np.zeros((3, n))  # pixels, row sum, column sum
    for block_rows in row_blocks(rows, cols, block_pixels):
        block = segments[block_rows].ravel()
        row_numbers = np.arange(rows, dtype=np.float64)[block_rows]
        sums[0] += np.bincount(block, minlength=n)
        sums[1] += np.bincount(block, weights=np.repeat(row_numbers, cols), minlength=n)
        sums[2] += np.bincount(block, weights=np.tile(np.arange(cols, dtype=np.float64), len(row_numbers)),
                               minlength=n)
    return np.floor(sums[1:].T / sums[0][:, None] + 0.5).astype(np.int32)
