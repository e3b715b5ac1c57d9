"""One image of a scene's clear pixels: each date masked (:mod:`pipeline.inputs.clouds`), the dates combined band by band
as the median of each pixel's clear observations, window by window.

Every date's bands are on the work grid (VRTs made by :mod:`pipeline.inputs.sources`). The result is a Float32 GeoTIFF
(NaN where a pixel has no clear date), so the rest of Step 0 treats masked pixels as any nodata: left out of the
stretch, SLIC, sampling and every map. Why the median: per pixel and band it ignores the odd bright haze or dark
shadow a mask missed (up to half the observations), needs no weights, and keeps a real observation's value when
one or two dates are clear.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.inputs import clouds
from pipeline.core import grids

#: Side of the windows the composite is computed in (px): 5 bands x 10 dates of float32 take 200 MiB.
COMPOSITE_WINDOW = 1024


@dataclass(frozen=True)
class Date:
    """One date of a scene: ``source`` the user's file, ``image`` its bands on the work grid (``bands``: role ->
    1-based band), its ``masks`` (:class:`pipeline.inputs.clouds.MaskSource`, empty: none) and ``acquired`` (ISO time or
    None)."""

    source: str
    image: Path | str
    bands: dict
    masks: tuple
    acquired: str | None


def clear_date(date: Date, roles: list, window: tuple, shape: tuple, buffer_px: int, shared: dict):
    """Bands ``roles`` of ``window`` (row, col, rows, cols) of a date, float32 (len(roles), rows, cols) with NaN
    where the date is not clear, and the masked pixels by cause (cause -> count). ``shared`` keeps the causes
    of mask rasters every date has (the scene's own ``mask``), so each is read once per window."""
    haloed = grids.with_halo(window, buffer_px, shape)
    data, _, valid = gdal_tif2rgb.read_bands(date.image, [date.bands[r] for r in roles], window=haloed)
    core = (slice(window[0] - haloed[0], window[0] - haloed[0] + window[2]),
            slice(window[1] - haloed[1], window[1] - haloed[1] + window[3]))
    masked = ~valid
    counts = {"no data": int(masked[core].sum())}
    reflectance = dict(zip(roles, data))  # for the detector; no-data pixels are masked whatever it finds
    for source in date.masks:
        if source.kind == "raster" and source not in shared:
            shared[source] = clouds.causes(source, haloed, None)
        found = shared[source] if source.kind == "raster" else clouds.causes(source, haloed, reflectance)
        for cause, mask in found.items():
            if cause in clouds.BUFFERED:
                mask = clouds.grow(mask, buffer_px)
            mask = mask[core]
            counts[cause] = counts.get(cause, 0) + int((mask & ~masked[core]).sum())
            masked[core] |= mask
    data = data[:, core[0], core[1]]
    data[:, masked[core]] = np.nan
    return data, counts


def median_of_clear(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 (dates) of the finite values of ``stack`` (dates, bands, rows, cols); NaN where a
    pixel has none. Half-way between the middle two of an even count. The dates are sorted by an odd-even
    transposition network of whole-array minima and maxima (NaN as +inf, so last), which for the few dates of
    a composite is several times faster than ``np.sort`` along the first axis.

    >>> median_of_clear(np.array([[[[1.0, np.nan]]], [[[3.0, np.nan]]], [[[np.nan, 5.0]]]])).tolist()
    [[[2.0, 5.0]]]
    """
    dates = len(stack)
    count = np.isfinite(stack).sum(axis=0, dtype=np.int16)
    ordered = np.where(np.isnan(stack), np.inf, stack)
    for start in range(dates):
        for i in range(start % 2, dates - 1, 2):
            low, high = np.minimum(ordered[i], ordered[i + 1]), np.maximum(ordered[i], ordered[i + 1])
            ordered[i], ordered[i + 1] = low, high
    median = (ordered[(dates - 1) // 2] + ordered[dates // 2]) / 2  # right where every date is clear
    partly = (count > 0) & (count < dates)
    if partly.any():
        clear, columns = count[partly], np.arange(int(partly.sum()))
        values = ordered[:, partly]
        median[partly] = (values[(clear - 1) // 2, columns] + values[clear // 2, columns]) / 2
    median[count == 0] = np.nan
    return median.astype(np.float32)


def composite_window(dates: tuple, roles: list, window: tuple, shape: tuple, buffer_px: int):
    """The composite of ``window``: bands float32 (len(roles), rows, cols), the clear dates of each pixel uint8
    (rows, cols), and per date its masked pixels by cause."""
    shared = {}
    stack, counts = zip(*(clear_date(date, roles, window, shape, buffer_px, shared) for date in dates))
    stack = np.stack(stack)
    clear = np.isfinite(stack[:, 0])  # a date's pixel is NaN in every band or in none (clear_date)
    composite = stack[0] if len(dates) == 1 else median_of_clear(stack)
    return composite, clear.sum(axis=0).astype(np.uint8), counts


def write_composite(dates: tuple, roles: list, grid: gdal_tif2rgb.Grid, target, buffer_px: int, run_windows):
    """Write the composite of ``dates`` on ``grid`` to the GeoTIFF ``target`` (tiled, not cloud-optimized: Step 0
    reads it once; bands named by ``roles``, NaN = no clear date); ``run_windows(function, argument tuples)``
    maps :func:`composite_window` over the windows (in this process or on a cluster), in order. Returns the
    clear dates of every pixel (uint8, rows x cols) and per date its masked pixels by cause (list of dicts)."""
    shape = (grid.rows, grid.cols)
    windows = grids.tile_windows(shape, COMPOSITE_WINDOW)
    clear = np.zeros(shape, np.uint8)
    totals = [{} for _ in dates]
    with gdal_tif2rgb.geotiff_writer(target, grid, len(roles), np.float32, band_names=roles, nodata=float("nan"),
                                     cloud_optimized=False) as write:
        results = run_windows(composite_window, ((dates, roles, window, shape, buffer_px) for window in windows))
        for (row, col, rows, cols), (bands, count, masked) in zip(windows, results):
            write(bands, row, col)
            clear[row:row + rows, col:col + cols] = count
            for total, date_counts in zip(totals, masked):
                for cause, n in date_counts.items():
                    total[cause] = total.get(cause, 0) + n
    return clear, totals
