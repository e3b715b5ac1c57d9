"""The spatial split of labelled superpixels into training and test, so that no training patch sees a test pixel.

Split codes are ``TRAIN`` (0), ``TEST`` (1) and ``UNUSED`` (2), one uint8 per superpixel; centroids
are (n, 2) int32 scene pixels (row, col) and labels (n,) uint8 class codes (255 = unlabelled).
"""
from __future__ import annotations

import numpy as np

from pipeline.core import grids
from pipeline.core.vocabulary import TEST, TRAIN, UNLABELLED, UNUSED
from pipeline.segmentation.sampling import patch_indices


def held_out_superpixels(centroids: np.ndarray, labels: np.ndarray, shape: tuple, block_size: int,
                         test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which labelled superpixels are held out for testing (bool, n): square blocks of ``block_size`` px of a
    scene of ``shape``, in random order, go to test until their centroids hold ``test_fraction`` of the
    labelled superpixels."""
    labelled = labels != UNLABELLED
    block = block_of(centroids, shape, block_size)
    n_blocks = (-(-shape[0] // block_size)) * (-(-shape[1] // block_size))
    order = rng.permutation(n_blocks)
    held = np.cumsum(np.bincount(block[labelled], minlength=n_blocks)[order])
    n_test_blocks = int(np.searchsorted(held, test_fraction * labelled.sum())) + 1
    return labelled & np.isin(block, order[:n_test_blocks])


def block_of(centroids: np.ndarray, shape: tuple, block_size: int) -> np.ndarray:
    """The split block of each superpixel, by its centroid (n, 2 row, col): blocks of ``block_size`` px
    numbered row by row over a scene of ``shape`` (int64, n).

    >>> block_of(np.array([[0, 0], [0, 130], [130, 5]]), (200, 300), 128).tolist()
    [0, 1, 3]
    """
    centroids = np.asarray(centroids, dtype=np.int64)
    return (centroids[:, 0] // block_size) * (-(-shape[1] // block_size)) + centroids[:, 1] // block_size


def touches(pixels: np.ndarray, centroids: np.ndarray, patch_width: int, shape: tuple | None = None,
            origin: tuple = (0, 0)) -> np.ndarray:
    """Whether the mirrored patch around each centroid holds a True pixel of ``pixels`` (bool, rows x cols):
    bool (n,).

    ``pixels`` may be a window of a bigger scene of ``shape`` whose top-left pixel is ``origin``.

    >>> pixels = np.zeros((5, 5), bool); pixels[0, 0] = True
    >>> touches(pixels, np.array([[1, 1], [4, 4]]), 3).tolist()
    [True, False]
    """
    return pixels[patch_indices(centroids, patch_width, shape or pixels.shape, origin)].any(axis=(1, 2))


def split_of(test: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The split code of each superpixel: TEST where ``test`` (bool, n), TRAIN for the other labelled ones,
    UNUSED for the unlabelled (uint8, n).

    >>> split_of(np.array([True, False, False]), np.array([0, 1, 255])).tolist()
    [1, 0, 2]
    """
    return np.where(test, TEST, np.where(labels != UNLABELLED, TRAIN, UNUSED)).astype(np.uint8)


def spatial_split(segments: np.ndarray, centroids: np.ndarray, labels: np.ndarray, patch_width: int,
                  block_size: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Split labelled superpixels of ``segments`` (rows, cols) into train (0) and test (1) by blocks
    (:func:`held_out_superpixels`); the rest is 2. A train superpixel whose patch (mirrored at the borders, as
    in ``sampling.extract_patches``) touches any pixel of a test superpixel becomes unused (2), so no training
    patch sees a test pixel. Returns uint8 (n,)."""
    return tiled_split(lambda window: segments, [(0, 0, *segments.shape)], segments.shape, centroids, labels,
                       patch_width, block_size, test_fraction, rng)


def tiled_split(read_owners, windows, shape: tuple, centroids: np.ndarray, labels: np.ndarray, patch_width: int,
                block_size: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """:func:`spatial_split` of a scene of ``shape`` in ``windows`` (row, col, rows, cols): test superpixels are
    chosen from all centroids at once, then the training superpixels centred in each window are checked against
    the test pixels of the window and its halo, read by ``read_owners(haloed_window)`` (superpixel ids,
    int (rows, cols), -1 on masked pixels). Returns uint8 (n,)."""
    test = held_out_superpixels(centroids, labels, shape, block_size, test_fraction, rng)
    split = split_of(test, labels)
    for window in windows:
        row, col, rows, cols = window
        in_window = ((centroids[:, 0] >= row) & (centroids[:, 0] < row + rows) & (centroids[:, 1] >= col)
                     & (centroids[:, 1] < col + cols) & (split == TRAIN))
        train = np.flatnonzero(in_window)
        top, left, *_ = haloed = grids.with_halo(window, patch_width // 2, shape)
        owners = read_owners(haloed)
        test_pixels = grids.paint_map(test, owners, False)
        split[train[touches(test_pixels, centroids[train], patch_width, shape, (top, left))]] = UNUSED
    return split


def summarise(labels: np.ndarray, split: np.ndarray, purity: np.ndarray, class_names) -> dict:
    """Superpixel counts per class and split, and the mean purity, of ``labels``, ``split`` and ``purity`` (n,):
    ``counts`` (class name, or "unlabelled" -> dict) and ``table`` (printable lines)."""
    counts = {}
    table = [f"{'class':<12}{'superpixels':>12}{'train':>8}{'test':>8}{'unused':>8}{'purity':>8}"]
    for code, name in enumerate([*class_names, "unlabelled"]):
        member = labels == (code if code < len(class_names) else UNLABELLED)
        row = {"superpixels": int(member.sum()), "train": int((member & (split == TRAIN)).sum()),
               "test": int((member & (split == TEST)).sum()), "unused": int((member & (split == UNUSED)).sum()),
               "mean_purity": round(float(purity[member].mean()), 3) if member.any() else None}
        counts[name] = row
        table.append(f"{name:<12}{row['superpixels']:>12}{row['train']:>8}{row['test']:>8}{row['unused']:>8}"
                     f"{row['mean_purity'] if row['mean_purity'] is not None else '-':>8}")
    return {"counts": counts, "table": table}
