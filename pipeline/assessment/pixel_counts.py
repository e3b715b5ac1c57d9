"""Step 3's pixel counts of the map against the reference, summed window by window over the scene so that memory
is bounded by a window, not by the scene, and previews of the rasters for the figures.

Class codes are uint8, 0..K-1, 255 (``UNLABELLED``) where there is none; segments are superpixel ids 0..n-1, and
-1 (``NO_SUPERPIXEL``) on masked and nodata pixels, which the map leaves unmapped.
Every count is an int64 number of pixels and the same whatever the windows; a preview holds every
``grids.display_stride``-th row and column of a raster, as Step 0's quicklooks do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.assessment.accuracy import confusion_counts, tables_by_block
from pipeline.core.vocabulary import NO_SUPERPIXEL, TEST, UNLABELLED
from pipeline.core.grids import display_stride, paint_map, place_in_preview, tile_windows


@dataclass
class PixelCounts:
    """The counts of :func:`count_pixels` over a scene of K classes (a scene without a reference: the map's only,
    the others 0, its previews unfilled)."""

    #: (K,) pixels of each map class.
    map_pixels: np.ndarray
    #: Pixels of no superpixel (masked clouds and shadows, nodata): not mapped, in no class's area.
    masked: int
    #: (K, K + 1) the labelled pixels of the test superpixels, reference by map (``accuracy.confusion_counts``).
    pixel_test: np.ndarray
    #: (K, K + 1) the same pixels, reference by the majority reference label of their superpixel.
    segmentation_ceiling: np.ndarray
    #: (m, K, K) the mapped ones of those pixels in each of the m split blocks holding test superpixels (in
    #: increasing block order), reference by map.
    block_tables: np.ndarray
    #: Mapped pixels with a reference class.
    mapped_labelled: int
    #: (K,) pixels of each reference class.
    reference_pixels: np.ndarray
    #: Pixels with a reference class where the map gives another class.
    disagreeing: int
    #: Previews (rows, cols) of the reference codes, the map (uint8) and the segments (int32), by name.
    previews: dict
    #: ``pixel_test`` and ``block_tables`` of a peer's map (each superpixel given its ``peer_labels``), or None.
    peer_pixel_test: np.ndarray | None = None
    peer_block_tables: np.ndarray | None = None

    @property
    def labelled(self) -> int:
        """Pixels with a reference class."""
        return int(self.reference_pixels.sum())

    @property
    def disagreement_share(self) -> float:
        """Share of the labelled pixels where the map disagrees with the reference (0 without any)."""
        return self.disagreeing / self.labelled if self.labelled else 0.0


def count_pixels(read, shape: tuple, size: int, k: int, labels: np.ndarray, split: np.ndarray,
                 block: np.ndarray, peer_labels: np.ndarray | None = None) -> PixelCounts:
    """The :class:`PixelCounts` of a scene of ``shape`` (rows, cols) with ``k`` classes, read in the
    ``grids.tile_windows`` of ``size`` px: ``read(window)`` returns the map, the reference codes and the
    segments of a window (row, col, rows, cols), (rows, cols) each; the codes and segments are None for a scene
    without a reference. Per superpixel (n,): ``labels`` (majority reference label), ``split`` (split code) and
    ``block`` (split block, ``split.block_of``), and optionally ``peer_labels``, another classifier's class of
    each superpixel, whose map is counted on the same pixels.

    >>> segments = np.array([[0, 0, 1, 1]])
    >>> codes, pred_map = np.array([[0, 1, 1, 255]], np.uint8), np.array([[0, 0, 1, 255]], np.uint8)
    >>> def read(w): return tuple(a[:, w[1]:w[1] + w[3]] for a in (pred_map, codes, segments))
    >>> counts = count_pixels(read, (1, 4), 3, 2, np.array([0, 1], np.uint8), np.array([1, 1], np.uint8),
    ...                       np.array([0, 0]))
    >>> counts.map_pixels.tolist(), counts.masked, counts.pixel_test.tolist(), counts.block_tables.tolist()
    ([2, 1], 1, [[1, 0, 0], [1, 1, 0]], [[[1, 0], [1, 1]]])
    >>> peer = count_pixels(read, (1, 4), 3, 2, np.array([0, 1], np.uint8), np.array([1, 1], np.uint8),
    ...                     np.array([0, 0]), peer_labels=np.array([1, 1], np.uint8))
    >>> peer.peer_pixel_test.tolist(), peer.peer_block_tables.tolist()
    ([[0, 1, 0], [0, 2, 0]], [[[0, 1], [0, 2]]])
    """
    test = (labels != UNLABELLED) & (split == TEST)
    test_blocks, unit = np.unique(block[test], return_inverse=True)
    block_unit = np.zeros(len(labels), np.intp)
    block_unit[test] = unit  # index among the m test blocks
    m = len(test_blocks)
    step = display_stride(*shape)
    preview_shape = (-(-shape[0] // step), -(-shape[1] // step))
    previews = {"codes": np.full(preview_shape, UNLABELLED, np.uint8),
                "map": np.full(preview_shape, UNLABELLED, np.uint8),
                "segments": np.full(preview_shape, NO_SUPERPIXEL, np.int32)}
    map_pixels, reference_pixels = np.zeros(k, np.int64), np.zeros(k, np.int64)
    pixel_test, ceiling, peer_test = (np.zeros((k, k + 1), np.int64) for _ in range(3))
    tables, peer_tables = np.zeros((m, k, k), np.int64), np.zeros((m, k, k), np.int64)
    mapped_labelled = disagreeing = masked = 0
    for window in tile_windows(shape, size):
        pred_map, codes, segments = read(window)
        mapped = pred_map < k
        map_pixels += np.bincount(pred_map[mapped], minlength=k)
        masked += mapped.size - np.count_nonzero(mapped)  # Step 2 maps every superpixel: the rest is masked
        if codes is None:
            continue
        labelled = codes < k
        mapped_labelled += np.count_nonzero(mapped & labelled)
        reference_pixels += np.bincount(codes[labelled], minlength=k)
        disagreeing += np.count_nonzero(labelled & (pred_map != codes))
        observed = labelled & paint_map(test, segments, False)
        ids, reference, predicted = segments[observed], codes[observed], pred_map[observed]
        pixel_test += confusion_counts(reference, predicted, k)
        ceiling += confusion_counts(reference, labels[ids], k)
        tables += tables_by_block(block_unit[ids], reference, predicted, m, k)
        if peer_labels is not None:
            peer_test += confusion_counts(reference, peer_labels[ids], k)
            peer_tables += tables_by_block(block_unit[ids], reference, peer_labels[ids], m, k)
        for name, raster in (("codes", codes), ("map", pred_map), ("segments", segments)):
            place_in_preview(previews[name], raster, window[0], window[1], step)
    return PixelCounts(map_pixels, int(masked), pixel_test, ceiling, tables, int(mapped_labelled),
                       reference_pixels, int(disagreeing), previews,
                       *((None, None) if peer_labels is None else (peer_test, peer_tables)))

