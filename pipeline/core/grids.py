"""Pixel-grid arithmetic shared by the steps: the :class:`Grid` of a raster (bounds, sub-grids, pixel <-> map
coordinates), tile windows and halos, reading rasters window by window, previews, painting superpixel labels.

A *window* here is always a rectangle of the scene, ``(row, col, rows, cols)`` in pixels; the width of a patch
around a superpixel is the *patch width* (``Parameters.patch_width``).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


def tile_windows(shape: tuple, tile_size: int) -> list[tuple[int, int, int, int]]:
    """(row, col, rows, cols) of the tiles covering a scene of ``shape``, row by row.

    >>> tile_windows((5, 7), 4)
    [(0, 0, 4, 4), (0, 4, 4, 3), (4, 0, 1, 4), (4, 4, 1, 3)]
    """
    return [(row, col, min(tile_size, shape[0] - row), min(tile_size, shape[1] - col))
            for row in range(0, shape[0], tile_size) for col in range(0, shape[1], tile_size)]


def read_windows(shape: tuple, size: int, *readers):
    """For each of the :func:`tile_windows` of ``size`` px over a scene of ``shape``, the tuple of what every
    reader returns for it (``reader(window)``, window = (row, col, rows, cols)): only one window of each raster
    is in memory at a time.

    >>> segments = np.arange(6).reshape(2, 3)
    >>> [s.tolist() for s, in read_windows(segments.shape, 2, lambda w: segments[w[0]:w[0] + w[2], w[1]:w[1] + w[3]])]
    [[[0, 1], [3, 4]], [[2], [5]]]
    """
    for window in tile_windows(shape, size):
        yield tuple(read(window) for read in readers)


def pixel_values(read, shape: tuple, size: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values (int64) of an integer raster of a scene of ``shape`` at the pixels ``rows``, ``cols`` (int arrays,
    inside the scene), reading only the :func:`tile_windows` of ``size`` px that hold one of them:
    ``read(window)`` returns the raster's (rows, cols) in a window (row, col, rows, cols).

    >>> scene = np.arange(12).reshape(3, 4)
    >>> def read(w): return scene[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]
    >>> pixel_values(read, scene.shape, 2, np.array([2, 0, 1]), np.array([3, 1, 2])).tolist()
    [11, 1, 6]
    """
    values = np.zeros(len(rows), np.int64)
    for row, col, n_rows, n_cols in tile_windows(shape, size):
        inside = (rows >= row) & (rows < row + n_rows) & (cols >= col) & (cols < col + n_cols)
        if inside.any():
            values[inside] = read((row, col, n_rows, n_cols))[rows[inside] - row, cols[inside] - col]
    return values


def row_blocks(rows: int, cols: int, block_pixels: int) -> list[slice]:
    """Slices of consecutive rows of a (rows, cols) array, each of about ``block_pixels`` pixels (at least one
    row): blocks small enough that their temporaries stay in cache and in the allocator's reused memory.

    >>> row_blocks(5, 4, 8)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None)]
    """
    step = max(1, block_pixels // max(cols, 1))
    return [slice(top, top + step) for top in range(0, rows, step)]


def with_halo(window: tuple, halo: int, shape: tuple) -> tuple[int, int, int, int]:
    """The (row, col, rows, cols) ``window`` grown by ``halo`` pixels on every side, within the scene.

    >>> with_halo((0, 4, 4, 3), 2, (5, 7))
    (0, 2, 5, 5)
    """
    row, col, rows, cols = window
    top, left = max(0, row - halo), max(0, col - halo)
    return top, left, min(shape[0], row + rows + halo) - top, min(shape[1], col + cols + halo) - left


def display_stride(rows: int, cols: int, longest_side: int = 2000) -> int:
    """Subsampling step that brings the longest side of an image to at most ``longest_side`` pixels.

    >>> display_stride(930, 947), display_stride(3500, 3500)
    (1, 2)
    """
    return max(1, -(-max(rows, cols) // longest_side))


def place_in_preview(preview: np.ndarray, block: np.ndarray, row: int, col: int, step: int) -> None:
    """Copy into ``preview`` (a scene's every ``step``-th row and column) the pixels of ``block``, the part of
    the scene at (``row``, ``col``), that fall on it; so previews of big rasters build up tile by tile.

    >>> scene, preview = np.arange(36).reshape(6, 6), np.zeros((3, 3), int)
    >>> place_in_preview(preview, scene[3:, 1:], 3, 1, 2)
    >>> preview.tolist() == [[0, 0, 0], [0, 0, 0], [0, 26, 28]]
    True
    """
    rows, cols = block.shape[:2]
    preview[-(-row // step):-(-(row + rows) // step), -(-col // step):-(-(col + cols) // step)] = \
        block[(-row) % step::step, (-col) % step::step]


def paint_map(superpixel_values: np.ndarray, segments: np.ndarray, nodata) -> np.ndarray:
    """Each pixel gets its superpixel's value, pixels of no superpixel (-1, masked) ``nodata``: a lookup, no loop
    over superpixels (the land-cover map).

    The lookup runs over the pixels in memory order, in one chunk per core (``np.take`` releases the GIL):
    memory-bound, it gains about 1.6x on 2 cores.

    >>> paint_map(np.array([7, 9], np.uint8), np.array([[0, 1], [1, -1]]), 255).tolist()
    [[7, 9], [9, 255]]
    """
    values = np.append(superpixel_values, np.array(nodata, superpixel_values.dtype))  # values[-1]: nodata
    segments = segments if segments.flags.forc else np.ascontiguousarray(segments)
    painted = np.empty_like(segments, dtype=values.dtype)  # same memory order as segments
    flat_segments, flat_map = segments.ravel(order="K"), painted.ravel(order="K")  # views, not copies
    bounds = np.linspace(0, flat_segments.size, (os.cpu_count() or 1) + 1).astype(int)
    parallel_map(lambda b: np.take(values, flat_segments[b[0]:b[1]], out=flat_map[b[0]:b[1]]),
                 zip(bounds[:-1], bounds[1:]), len(bounds) - 1)
    return painted


def parallel_map(function, items, threads: int) -> list:
    """``[function(item) for item in items]`` on ``threads`` threads (for work that releases the GIL). On an
    error or Ctrl-C it returns at once, cancelling what has not started, without waiting for running calls.

    >>> parallel_map(lambda x: x * x, range(4), 2)
    [0, 1, 4, 9]
    """
    pool = ThreadPoolExecutor(threads)
    try:
        return list(pool.map(function, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Grid:
    """The pixel grid of a raster: size in pixels, GDAL geotransform and CRS as WKT."""

    rows: int
    cols: int
    geotransform: tuple
    crs_wkt: str

    @classmethod
    def of(cls, dataset) -> "Grid":
        """The grid of an open GDAL dataset."""
        return cls(dataset.RasterYSize, dataset.RasterXSize, tuple(dataset.GetGeoTransform()), dataset.GetProjection())

    @property
    def bounds(self) -> tuple:
        """(xmin, ymin, xmax, ymax) of a north-up grid, in its CRS units.

        >>> Grid(2, 3, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "").bounds
        (100.0, 480.0, 130.0, 500.0)
        """
        x0, dx, _, y0, _, dy = self.geotransform
        xs, ys = (x0, x0 + dx * self.cols), (y0, y0 + dy * self.rows)
        return min(xs), min(ys), max(xs), max(ys)

    def subgrid(self, window: tuple) -> "Grid":
        """The grid of a ``window`` (row, col, rows, cols) of this grid, in pixels.

        >>> Grid(5, 5, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "").subgrid((1, 2, 3, 2)).geotransform
        (120.0, 10.0, 0.0, 490.0, 0.0, -10.0)
        """
        row, col, rows, cols = window
        x0, dx, rx, y0, ry, dy = self.geotransform
        return Grid(rows, cols, (x0 + col * dx, dx, rx, y0 + row * dy, ry, dy), self.crs_wkt)

    def xy(self, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """Map x, y (CRS units) of the centres of the pixels at ``rows``, ``cols`` (arrays of pixel indices).

        >>> Grid(5, 5, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "").xy(np.array([0, 2]), np.array([1, 4]))
        (array([115., 145.]), array([495., 475.]))
        """
        x0, dx, rx, y0, ry, dy = self.geotransform
        rows, cols = np.asarray(rows) + 0.5, np.asarray(cols) + 0.5
        return x0 + cols * dx + rows * rx, y0 + cols * ry + rows * dy

    def rowcol(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (int64, possibly off the grid) of the pixels holding map points ``x``, ``y`` (CRS units):
        the inverse of :meth:`xy`.

        >>> grid = Grid(5, 5, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "")
        >>> grid.rowcol(np.array([115.0, 99.0]), np.array([475.0, 495.0]))
        (array([2, 0]), array([ 1, -1]))
        """
        x0, dx, rx, y0, ry, dy = self.geotransform
        det = dx * dy - rx * ry
        cols = np.floor(((x - x0) * dy - (y - y0) * rx) / det).astype(np.int64)
        rows = np.floor(((y - y0) * dx - (x - x0) * ry) / det).astype(np.int64)
        return rows, cols
