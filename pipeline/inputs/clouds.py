"""Where a date is not clear: its masked pixels on the work grid, window by window, by cause.

A date's mask comes from the first of these it has:

- ``scl``: an L2A product's scene classification layer (``*_SCL_20m.jp2``); the classes ``mask_classes`` are
  masked (default: 0 no data, 1 saturated or defective, 3 cloud shadows, 8 and 9 cloud medium and high
  probability, 10 thin cirrus; 11 snow when asked);
- ``msk_classi``: an L1C product's ``MSK_CLASSI_B00.jp2`` (processing baseline 04.00 on): band 1 opaque clouds,
  band 2 cirrus (band 3, snow, when 11 is in ``mask_classes``);
- ``raster``: the scene's ``mask`` raster (any grid and CRS), whose ``mask_values`` are masked;
- ``detector``: for a product without a mask of its own, the spectral cloud test of :func:`detect_clouds`.

Mask rasters are brought onto the work grid by GDAL (a warped VRT, nearest neighbour). Clouds and shadows grow by
``mask_buffer_m``. Masks are bool arrays (rows, cols), True = masked; reflectance is unitless (0-1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdal_tif2rgb import Grid, open_raster
from pipeline.core.errors import InputDataError
from pipeline.core.grids import tile_windows
from pipeline.inputs.georef import overlaps, transform_bounds

#: Causes by SCL class, as ``run.json`` counts them.
SCL_CAUSES = {0: "no data", 1: "saturated or defective", 2: "dark area", 3: "cloud shadow", 4: "vegetation",
              5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud", 9: "cloud", 10: "cirrus", 11: "snow"}
#: Causes that the buffer grows.
BUFFERED = ("cloud", "cloud shadow", "cirrus")
#: The detector's thresholds (reflectance): bright, white, hazy, and not snow (after Zhu & Woodcock 2012, Fmask).
MIN_BLUE, MAX_WHITENESS, MAX_NDSI = 0.2, 0.7, 0.8
#: The smallest cloud the detector keeps, in m² (50 m x 50 m): smaller bright specks are roofs and sand. On the
#: clear demo scene the test flags 0.13 % of the pixels, 0.05 % in parts this size or larger (0.22 % buffered).
MIN_CLOUD_M2 = 2500.0


@dataclass(frozen=True)
class MaskSource:
    """Where one date's mask comes from: ``kind`` ("scl", "msk_classi", "raster", "detector"), the mask raster on
    the work grid (a VRT; None for the detector) and the masked ``values`` (SCL classes, MSK bands, raster values)."""

    kind: str
    raster: str | None
    values: tuple


def mask_on_work_grid(path: str, grid: Grid, target: Path) -> str:
    """A VRT at ``target`` of the raster ``path`` on ``grid`` (nearest neighbour: codes stay codes);
    InputDataError when its CRS cannot be carried onto the grid's or it does not overlap the grid."""
    from osgeo import gdal

    source = open_raster(path)
    bounds = transform_bounds(Grid.of(source).bounds, source.GetProjection(), grid.crs_wkt, path)
    if not overlaps(bounds, grid.bounds):
        raise InputDataError(f"{path}: the mask does not overlap the work grid (mask {tuple(round(v) for v in bounds)}"
                             f", work grid {tuple(round(v) for v in grid.bounds)}, in the work grid's CRS)")
    target.parent.mkdir(parents=True, exist_ok=True)
    options = {"format": "VRT", "outputBounds": grid.bounds, "width": grid.cols, "height": grid.rows,
               "resampleAlg": "near", "dstSRS": grid.crs_wkt or None}
    if not source.GetProjection():
        options.pop("dstSRS")
    gdal.Warp(str(target), source, **options)
    return str(target)


def check_mask_values(path, source: MaskSource, grid: Grid, window_size: int) -> None:
    """Refuse a scene ``mask`` (``path``; ``source`` its raster on ``grid``) in which one of its masked values
    never occurs on the work grid, as a reference class without a pixel is refused; the line names the values
    present (the first 12, with their pixel counts). The mask is read window by window of ``window_size`` px."""
    from osgeo import gdal

    dataset = gdal.Open(source.raster)  # held while its band is read
    band = dataset.GetRasterBand(1)
    listed = np.array(source.values, np.float64)
    found, present = np.zeros(len(listed), np.int64), {}
    for row, col, rows, cols in tile_windows((grid.rows, grid.cols), window_size):
        values, counts = np.unique(band.ReadAsArray(col, row, cols, rows), return_counts=True)
        found += [int(counts[values == value].sum()) for value in listed]
        for value, count in zip(values[:64].tolist(), counts[:64].tolist()):
            present[value] = present.get(value, 0) + count
    if found.all():
        return
    missing = ", ".join(f"{value:g}" for value, n in zip(listed, found) if n == 0)
    shown = ", ".join(f"{value:g} ({present[value]} px)" for value in sorted(present)[:12])
    raise InputDataError(f"{path}: mask_values {missing} never occur in the mask on the work grid (values present: "
                         f"{shown}); fix mask_values")


def causes(source: MaskSource, window: tuple, reflectance: dict | None) -> dict:
    """Cause -> bool mask (rows, cols) of ``window`` (row, col, rows, cols) of the work grid; ``reflectance``
    (role -> float array of the window, NaN where no data) is used by the detector."""
    from osgeo import gdal

    if source.kind == "detector":
        return {"cloud": without_specks(detect_clouds(reflectance), source.values[0])}
    row, col, rows, cols = window
    dataset = gdal.Open(source.raster)
    if source.kind == "msk_classi":
        named = {1: "cloud", 2: "cirrus", 3: "snow"}
        return {named[band]: dataset.GetRasterBand(band).ReadAsArray(col, row, cols, rows) > 0
                for band in source.values if band <= dataset.RasterCount}
    values = dataset.GetRasterBand(1).ReadAsArray(col, row, cols, rows)
    if source.kind == "scl":
        found = {}
        for code in source.values:
            cause = SCL_CAUSES[code]
            found[cause] = found.get(cause, np.zeros(values.shape, bool)) | (values == code)
        return found
    return {"mask raster": np.isin(values, source.values)}


def detect_clouds(reflectance: dict) -> np.ndarray:
    """Clouds by a spectral test on the bands every product has (bool, True = cloud): bright (blue > 0.2), white
    (the visible bands' mean absolute deviation below 0.7 of their mean), hazy (HOT = blue - 0.5 red - 0.08 > 0)
    and not snow (NDSI = (green - swir) / (green + swir) < 0.8), the potential-cloud tests of Fmask (Zhu and
    Woodcock 2012) that need no thermal band, with a brightness floor against bright roofs and sand. Shadows
    are not detected; the buffer adds a margin.

    >>> detect_clouds({"blue": np.array([0.45, 0.05]), "green": np.array([0.45, 0.08]),
    ...                "red": np.array([0.46, 0.04]), "swir": np.array([0.3, 0.1])}).tolist()
    [True, False]
    """
    blue, green, red, swir = (np.asarray(reflectance[k]) for k in ("blue", "green", "red", "swir"))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (blue + green + red) / 3
        whiteness = (abs(blue - mean) + abs(green - mean) + abs(red - mean)) / mean
        ndsi = (green - swir) / (green + swir)
        return (blue > MIN_BLUE) & (whiteness < MAX_WHITENESS) & (blue - 0.5 * red - 0.08 > 0) & (ndsi < MAX_NDSI)


def detector(grid: Grid) -> MaskSource:
    """The cloud detector's :class:`MaskSource` for ``grid`` (its smallest cloud in pixels)."""
    pixel_m2 = abs(grid.geotransform[1] * grid.geotransform[5])
    return MaskSource("detector", None, (max(1, int(round(MIN_CLOUD_M2 / pixel_m2))),))


def without_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its connected parts (8-neighbours) of fewer than ``min_pixels`` pixels.

    >>> without_specks(np.array([[1, 1, 0, 0, 1]], bool), 2).astype(int).tolist()
    [[1, 1, 0, 0, 0]]
    """
    from scipy import ndimage

    if min_pixels <= 1 or not mask.any():
        return mask
    parts, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(parts.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[parts]


def buffer_radius_px(buffer_m: float, grid: Grid) -> int:
    """The buffer in whole pixels of ``grid``."""
    return int(round(buffer_m / abs(grid.geotransform[1]))) if buffer_m > 0 else 0


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by a disk of ``radius`` pixels (bool, same shape): every pixel whose centre lies within
    ``radius`` pixels of a masked one, by a Euclidean distance transform, so the cost (about 16 bytes and a few
    passes a pixel) does not depend on the radius; the same pixels as a binary dilation with the disk
    ``x² + y² <= radius²``.

    >>> grow(np.eye(1, 5, 2, dtype=bool), 1).astype(int).tolist()
    [[0, 1, 1, 1, 0]]
    """
    from scipy import ndimage

    if radius <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask) <= radius
