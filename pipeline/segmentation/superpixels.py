"""SLIC superpixels of three stretched layers (tutorial section 2.1), and what each superpixel's pixels give.

*Segments* are int32 arrays (rows, cols) of superpixel ids 0..n-1 without gaps, and ``NO_SUPERPIXEL`` (-1) on
masked and nodata pixels, which belong to no superpixel.
"""
from __future__ import annotations

import os

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import slic  # imported with the module: in the strips' threads, it would delay them

from pipeline.core.vocabulary import NO_SUPERPIXEL
from pipeline.core.grids import parallel_map, row_blocks


def segment(lab: np.ndarray, n_segments: int, compactness: float, valid: np.ndarray,
            n_strips: int | None = None) -> np.ndarray:
    """SLIC superpixels of a CIELAB image ``lab`` (rows, cols, 3): :func:`to_lab` of 3 stretched layers (the
    scene's ``slic_layers``, ``layers.select_layers``) treated as an RGB triplet, as in the tutorial (so
    ``compactness`` is in Lab units: 10-40 gives compact superpixels that still follow edges); about
    ``n_segments`` of them over the whole image, so a masked scene has superpixels of the same size, fewer.

    The image is cut into ``n_strips`` horizontal strips (default: one per CPU core, each at least 256 rows)
    segmented in parallel threads; superpixels do not cross strip boundaries. Invalid pixels (False in
    ``valid``, bool (rows, cols)) belong to no superpixel: they are ``NO_SUPERPIXEL`` (-1).
    Returns int32 array (rows, cols) of superpixel ids 0..n-1 without gaps, and -1.
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

    counts = parallel_map(segment_strip, range(n_strips), n_strips)
    for k, offset in enumerate(np.cumsum([0] + counts[:-1])):
        strip = segments[bounds[k]:bounds[k + 1]]
        strip[strip != NO_SUPERPIXEL] += offset
    return consecutive_ids(segments)


def slic_of_lab(lab: np.ndarray, n_segments: int, compactness: float, valid: np.ndarray) -> np.ndarray:
    """scikit-image SLIC of a CIELAB image (rows, cols, 3; :func:`to_lab`), as its ``slic`` with its default
    CIELAB conversion would segment the RGB image. Returns int32 labels (rows, cols) from 0, ``NO_SUPERPIXEL``
    (-1) where not ``valid``.

    SLIC rescales whatever it gets to [0, 1] by its min and max. On the Lab image that would make
    ``compactness`` depend on the strip's colour range, so it is divided by that range, which leaves
    every SLIC distance comparison exactly as on the unscaled Lab image.

    Invalid pixels are not given to scikit-image's masked SLIC (it places its seeds by k-means over the valid
    pixels: minutes on a large mask, and deaf to Ctrl-C). They are painted a colour three times the strip's Lab
    range away from every valid colour, which no superpixel of valid pixels takes in, and SLIC runs as on a
    clear image: seeds on the regular grid, the cost of the unmasked strip; the invalid pixels are then taken
    out of whatever superpixel holds them.
    """
    if not valid.any():
        return np.full(valid.shape, NO_SUPERPIXEL, dtype=np.int32)
    clear = bool(valid.all())
    values = lab if clear else lab[valid]
    low, lab_range = float(values.min()), float(values.max() - values.min()) or 1.0
    if not clear:
        lab = np.where(valid[..., None], lab, np.float32(low - 3 * lab_range))
        lab_range *= 4  # the painted colour widens the range SLIC rescales by
    labels = slic(lab, n_segments=n_segments, compactness=compactness / lab_range, channel_axis=-1,
                  convert2lab=False, start_label=0).astype(np.int32)
    if clear:
        return labels
    labels[~valid] = NO_SUPERPIXEL
    return consecutive_ids(labels)


def to_lab(rgb: np.ndarray, block_pixels: int = 2**17) -> np.ndarray:
    """CIELAB (D65) of an RGB float image (rows, cols, 3) in [0, 1]: ``skimage.color.rgb2lab``'s values,
    converted in blocks of rows of about ``block_pixels`` pixels, whose temporaries stay in cache (3 to 5 times
    faster than one call on a 1750 x 3500 px strip)."""
    lab = np.empty(rgb.shape, dtype=np.result_type(rgb.dtype, np.float32))
    for rows in row_blocks(*rgb.shape[:2], block_pixels):
        lab[rows] = rgb2lab(rgb[rows])
    return lab


def consecutive_ids(segments: np.ndarray) -> np.ndarray:
    """Renumber superpixel ids to 0..n-1 in order, removing gaps; ``NO_SUPERPIXEL`` (-1) stays (int32, same shape).

    >>> consecutive_ids(np.array([[5, 5], [2, -1], [9, 9]])).tolist()
    [[1, 1], [0, -1], [2, 2]]
    """
    present = np.bincount(segments.ravel() + 1)[1:] > 0  # a count for -1 first, dropped
    if present.all():
        return segments.astype(np.int32, copy=False)
    new_ids = np.append(np.cumsum(present) - 1, NO_SUPERPIXEL).astype(np.int32)  # new_ids[-1]: -1 stays -1
    return new_ids[segments]


def centroids(segments: np.ndarray, block_pixels: int = 2**20) -> np.ndarray:
    """Mean row and column of each superpixel's pixels, rounded half up: int32 array (n, 2), in pixels; summed
    over blocks of rows of about ``block_pixels`` pixels (small temporaries, reused). Pixels of no superpixel
    (-1) are left out.

    >>> centroids(np.array([[0, 0, 1], [0, 0, 1], [-1, -1, -1]])).tolist()
    [[1, 1], [1, 2]]
    """
    rows, cols = segments.shape
    n = int(segments.max()) + 1
    sums = np.zeros((3, n + 1))  # pixels, row sum, column sum; column 0 for -1, dropped
    for block_rows in row_blocks(rows, cols, block_pixels):
        block = segments[block_rows].ravel() + 1
        row_numbers = np.arange(rows, dtype=np.float64)[block_rows]
        sums[0] += np.bincount(block, minlength=n + 1)
        sums[1] += np.bincount(block, weights=np.repeat(row_numbers, cols), minlength=n + 1)
        sums[2] += np.bincount(block, weights=np.tile(np.arange(cols, dtype=np.float64), len(row_numbers)),
                               minlength=n + 1)
    return np.floor(sums[1:, 1:].T / sums[0, 1:, None] + 0.5).astype(np.int32)
