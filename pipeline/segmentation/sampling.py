"""Patches and labels of superpixels (tutorial section 2.2): the layers cut around each superpixel's centroid.

A *patch* is the ``patch_width`` x ``patch_width`` stack of layers (w, w, 8) centred on a superpixel's centroid,
mirrored at the scene's borders; the hand-off keeps them under the tutorial's key ``samples``. Arrays may cover
only a part of the scene (a tile with its halo): ``shape`` is then the scene's (rows, cols) and ``origin`` the
scene pixel (row, col) of the array's top-left pixel.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.segmentation import superpixels
from pipeline.core.grids import row_blocks
from pipeline.core.vocabulary import NO_SUPERPIXEL, UNLABELLED
from pipeline.core.errors import InputDataError


def mirrored_indices(centres: np.ndarray, patch_width: int, length: int) -> np.ndarray:
    """Indices (n, w) of a ``patch_width``-wide run centred on each of ``centres`` (n,), mirrored at 0 and
    ``length``-1.

    >>> mirrored_indices(np.array([0, 4]), 3, 5).tolist()
    [[1, 0, 1], [3, 4, 3]]
    """
    half = patch_width // 2
    index = centres[:, None] + np.arange(-half, half + 1)
    index = np.abs(index)
    return np.where(index >= length, 2 * (length - 1) - index, index)


def patch_indices(centroids: np.ndarray, patch_width: int, shape: tuple,
                  origin: tuple = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Row (n, w, 1) and column (n, 1, w) indices of the patch at each centroid (n, 2), mirrored at the borders
    of a scene of ``shape``, relative to ``origin`` (the top-left pixel of the array indexed).

    >>> rows, cols = patch_indices(np.array([[0, 2]]), 3, (4, 5), origin=(0, 1))
    >>> rows[0, :, 0].tolist(), cols[0, 0].tolist()
    ([1, 0, 1], [0, 1, 2])
    """
    rows, cols = shape[:2]
    if patch_width // 2 >= min(rows, cols):
        raise InputDataError(f"patch width {patch_width} px is too large for a {cols}x{rows} px image")
    return (mirrored_indices(centroids[:, 0], patch_width, rows)[:, :, None] - origin[0],
            mirrored_indices(centroids[:, 1], patch_width, cols)[:, None, :] - origin[1])


def extract_patches(layers: np.ndarray, centroids: np.ndarray, patch_width: int, shape: tuple | None = None,
                    origin: tuple = (0, 0)) -> np.ndarray:
    """The ``patch_width`` x ``patch_width`` patch of ``layers`` (rows, cols, c) centred on each centroid (n, 2).

    The scene is mirrored at its borders. ``layers`` may be a window of a scene of ``shape`` whose top-left
    pixel is ``origin`` (a tile with its halo). Returns an array (n, w, w, c) of the dtype of ``layers``.
    Each pixel's c values are gathered as one record (twice as fast as indexing the layers themselves).
    """
    rows, cols = patch_indices(centroids, patch_width, shape or layers.shape, origin)
    channels = layers.shape[-1]
    records = np.ascontiguousarray(layers).view(np.dtype((np.void, layers.dtype.itemsize * channels)))[..., 0]
    return records[rows, cols].view(layers.dtype).reshape(len(centroids), patch_width, patch_width, channels)


def superpixel_masks(owners: np.ndarray, centroids: np.ndarray, patch_width: int, shape: tuple | None = None,
                     origin: tuple = (0, 0), first_id: int = 0, ids: np.ndarray | None = None) -> np.ndarray:
    """For each superpixel i (ids ``first_id``, ``first_id`` + 1, ... in the order of ``centroids``, or ``ids``),
    the patch around its point of ``centroids`` with 1 where the pixel belongs to i, else 0: uint8 (n, w, w).

    ``owners`` (rows, cols) holds superpixel ids (or -1) on the same pixels as ``layers`` in
    :func:`extract_patches`. Tells the CNN which of the patch's pixels are the superpixel it labels (the centre
    may be all it has in a patch of many small superpixels).
    """
    ids = np.arange(first_id, first_id + len(centroids)) if ids is None else np.asarray(ids)
    patches = owners[patch_indices(centroids, patch_width, shape or owners.shape, origin)]
    return (patches == ids.astype(owners.dtype)[:, None, None]).astype(np.uint8)


class SuperpixelPixels:
    """Every pixel of some superpixels of a segmentation (rows, cols; superpixel ids, -1 where none), to centre
    patches anywhere in a superpixel rather than only on its centroid."""

    def __init__(self, segments: np.ndarray, ids: np.ndarray):
        flat = segments.ravel()
        self.ids = np.unique(ids)
        members = np.flatnonzero(np.isin(flat, self.ids))
        self.pixels = members[np.argsort(flat[members], kind="stable")]  # flat pixel indices, grouped by superpixel
        self.counts = np.bincount(np.searchsorted(self.ids, flat[self.pixels]), minlength=self.ids.size)
        if not self.counts.all():
            raise InputDataError(f"superpixel {self.ids[self.counts == 0][0]} has no pixel in the segmentation")
        self.first = np.cumsum(self.counts) - self.counts
        self.shape = segments.shape

    def random_pixels(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One pixel of each superpixel of ``ids`` (n,; among those given at construction), drawn uniformly by
        ``rng``: scene pixels (row, col), int64 (n, 2).

        >>> segments = np.array([[0, 0, 1], [2, 2, 1]])
        >>> centres = SuperpixelPixels(segments, np.array([1, 2])).random_pixels(np.array([1, 1, 2]),
        ...                                                                     np.random.default_rng(0))
        >>> segments[centres[:, 0], centres[:, 1]].tolist()
        [1, 1, 2]
        """
        at = np.searchsorted(self.ids, ids)
        offset = np.minimum((rng.random(len(ids)) * self.counts[at]).astype(np.int64), self.counts[at] - 1)
        chosen = self.pixels[self.first[at] + offset]
        return np.stack(np.unravel_index(chosen, self.shape), axis=1)


def class_counts(segments: np.ndarray, codes: np.ndarray, n_classes: int, block_pixels: int = 2**20) -> np.ndarray:
    """Pixels of each superpixel of ``segments`` (rows, cols; -1 = none, not counted) by class code in ``codes``
    (rows, cols): int64
    (n, ``n_classes`` + 1), column k for code k, the last for pixels without a class (any code >= ``n_classes``);
    a row sums to the superpixel's size. Counted in blocks of rows of about ``block_pixels`` pixels, one
    ``np.bincount`` of (id, class) pairs each.

    >>> class_counts(np.array([[0, 0, 1, -1]]), np.array([[2, 255, 0, 1]]), 3).tolist()
    [[0, 0, 1, 1], [1, 0, 0, 0]]
    """
    n, columns = int(segments.max()) + 1, n_classes + 1
    pair_type = np.int32 if (n + 1) * columns < 2**31 else np.int64
    counts = np.zeros((n + 1) * columns, dtype=np.int64)  # a first row for pixels of no superpixel, dropped
    for rows in row_blocks(*segments.shape, block_pixels):
        pairs = (segments[rows].astype(pair_type) + 1) * columns
        pairs += np.minimum(codes[rows], n_classes)
        counts += np.bincount(pairs.ravel(), minlength=(n + 1) * columns)
    return counts.reshape(n + 1, columns)[1:]


#: A superpixel less than half labelled (by training polygons or points) is labelled when at least this many of its
#: pixels carry a class ...
MIN_LABELLED_PIXELS = 5
#: ... and its majority class holds at least this share of them.
MIN_AGREEMENT = 0.9


def majority_labels(counts: np.ndarray, min_pixels: int = MIN_LABELLED_PIXELS,
                    min_agreement: float = MIN_AGREEMENT):
    """Majority reference class of each superpixel, and its purity, from its :func:`class_counts` ``counts``
    (n, K + 1).

    A superpixel gets its majority class when at least half its pixels carry a class (a reference covering the
    scene: every superpixel), or when at least ``min_pixels`` of them do and the majority class holds at least
    ``min_agreement`` of those (a reference of polygons or points: every superpixel a polygon's interior reaches);
    else 255. Purity is the share of its labelled pixels (those carrying a class) in the majority class: how much
    the reference agrees within the superpixel, 0 without any labelled pixel.

    Returns
    -------
    labels : uint8 array (n,)
    purity : float32 array (n,)

    >>> segments = np.repeat([[0, 1, 2]], 6, axis=1)   # three superpixels of 6 pixels
    >>> codes = np.array([[2, 2, 255, 255, 255, 255,  1, 1, 1, 0, 255, 255,  0, 1, 255, 255, 255, 255]])
    >>> labels, purity = majority_labels(class_counts(segments, codes, 3), min_pixels=2)
    >>> labels.tolist(), purity.tolist()
    ([2, 1, 255], [1.0, 0.75, 0.5])
    """
    classes = counts[:, :-1]
    majority = classes.argmax(axis=1)
    labelled = classes.sum(axis=1)
    in_majority = classes[np.arange(len(counts)), majority]
    covered = 2 * labelled >= counts.sum(axis=1)
    agreeing = (labelled >= min_pixels) & (in_majority >= min_agreement * labelled)
    labels = np.where((covered | agreeing) & (labelled > 0), majority, UNLABELLED).astype(np.uint8)
    purity = (in_majority / np.maximum(labelled, 1)).astype(np.float32)
    return labels, purity


def sample_superpixels(layers: np.ndarray, segments: np.ndarray, codes: np.ndarray, patch_width: int, n_classes: int, shape: tuple | None = None, origin: tuple = (0, 0),
                       core: tuple = (0, 0), block_superpixels: int = 2048) -> dict:
    """Tutorial 2.2 for every superpixel of ``segments``: centroid, patch, mask, majority label, purity.

    ``segments`` (ids, -1 on masked pixels) and ``codes`` (rows, cols) cover the part of the scene (of ``shape``) starting at
    scene pixel ``core``; ``layers`` (rows', cols', 8) covers it plus a halo, starting at ``origin`` (for the
    whole scene: all three the same).

    Returns the superpixel-sized arrays under their ``samples_labels.mat`` keys: ``centroids`` (n, 2) int32 in
    scene pixels, ``samples`` (the patches, n x w x w x 8, of the dtype of ``layers``), ``masks`` (n, w, w)
    uint8, ``labels`` (n,) uint8 and ``purity`` (n,) float32. Patches and masks are cut ``block_superpixels`` at
    a time on every core.
    """
    n = int(segments.max()) + 1
    centroids = superpixels.centroids(segments) + np.array(core, dtype=np.int32)
    if layers.shape[:2] == segments.shape:
        owners = segments
    else:
        owners = np.full(layers.shape[:2], NO_SUPERPIXEL, dtype=np.int32)
        owners[core[0] - origin[0]:core[0] - origin[0] + segments.shape[0],
               core[1] - origin[1]:core[1] - origin[1] + segments.shape[1]] = segments
    samples = np.empty((n, patch_width, patch_width, layers.shape[-1]), dtype=layers.dtype)
    masks = np.empty((n, patch_width, patch_width), dtype=np.uint8)

    def cut(first: int) -> None:  # a block of superpixels, whose temporaries stay in cache
        block = slice(first, min(n, first + block_superpixels))
        samples[block] = extract_patches(layers, centroids[block], patch_width, shape, origin)
        masks[block] = superpixel_masks(owners, centroids[block], patch_width, shape, origin, first)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # numpy's gathers release the GIL
        cutting = pool.map(cut, range(0, n, block_superpixels))
        counts = class_counts(segments, codes, n_classes)
        labels, purity = majority_labels(counts)
        list(cutting)
    return {"centroids": centroids, "samples": samples, "masks": masks, "labels": labels, "purity": purity}


def example_indices(labels: np.ndarray, n_classes: int, rng: np.random.Generator, per_class: int = 6) -> list:
    """Up to ``per_class`` random superpixels of each class code 0..``n_classes``-1 among ``labels`` (n,):
    a list of ``n_classes`` index arrays."""
    chosen = []
    for code in range(n_classes):
        members = np.flatnonzero(labels == code)
        chosen.append(rng.choice(members, size=min(per_class, members.size), replace=False) if members.size
                      else np.zeros(0, dtype=int))
    return chosen


@dataclass(frozen=True)
class PreparedScene:
    """A scene segmented and sampled, whole or tile by tile, as Step 0's figures and summary need it."""

    labels: np.ndarray  # (n,) uint8 majority class codes
    split: np.ndarray  # (n,) uint8 split codes
    purity: np.ndarray  # (n,) float32
    invalid_pixels: int
    preview_steps: np.ndarray  # stretched layers (rows', cols', 8) of the preview, as stored uint8 steps
    preview_segments: np.ndarray  # superpixel ids (rows', cols') on the preview
    read_patches: Callable[[np.ndarray], np.ndarray]  # superpixel indices -> their patches (m, w, w, 8), float32
    tiles: int = 1
