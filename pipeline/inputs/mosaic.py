"""One date given as tiles: the rasters a glob pattern matches (``image = "tiles/*.tif"``), mosaicked by GDAL into
one VRT that the rest of Step 0 reads as an ordinary raster.

Tiles are taken in the order of their paths. Where tiles overlap, the first tile that has data there wins: GDAL's
VRT draws its sources in order, the last on top, so the tiles are handed to it last first. A tile's nodata pixels
(its bands' own nodata value) are transparent, so they never cover another tile's data. Tiles must share CRS,
band count, data types, pixel size, pixel grid and nodata values; the mosaic is then the tiles' pixels as they
are, nothing resampled.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gdal_tif2rgb import open_raster
from pipeline.core.errors import InputDataError
from pipeline.inputs.georef import north_up_grid, spatial_reference
from pipeline.inputs.sentinel2 import is_product
from pipeline.run.config import Tiles

#: How far (in pixels) tiles' pixel sizes and pixel grids may differ and still be one grid.
GRID_TOLERANCE_PX = 1e-3


def build_mosaic(tiles: Tiles, target: Path) -> Path:
    """Write the VRT mosaic of ``tiles`` to ``target`` (via a temporary file, renamed) and return its path.

    Raises
    ------
    InputDataError
        A tile is a Sentinel-2 product, is not north-up, or differs from the first tile in CRS, band count, data
        types, pixel size, pixel grid or nodata; or the tiles leave gaps in their extent and have no nodata value
        that could mark them.
    """
    from osgeo import gdal

    first = _layout(tiles.files[0], tiles)
    windows = [(0, 0, *first["size"])]
    for tile in tiles.files[1:]:
        windows.append(_window_on_first(first, _layout(tile, tiles), tile, tiles))
    if set(first["nodata"]) == {"none"} and has_gaps(np.array(windows)):
        raise InputDataError(f"{tiles.pattern}: the tiles leave gaps in their extent and have no nodata value to mark "
                             f"them; set one on every tile (gdal_edit.py -a_nodata 0) or fill the gaps")
    temporary = target.with_name(f".{target.name}.part")
    target.parent.mkdir(parents=True, exist_ok=True)
    # the last source is drawn on top, so the first tile goes last; without srcNodata GDAL keeps each tile's own
    # nodata as transparent and gives the mosaic the same value (the tiles share it, checked above)
    dataset = gdal.BuildVRT(str(temporary), [str(tile) for tile in reversed(tiles.files)])
    dataset = None
    os.replace(temporary, target)
    return target


def _layout(tile: Path, tiles: Tiles) -> dict:
    """What tiles must share: the CRS, the band count, data types and nodata values, and the geotransform."""
    from osgeo import gdal

    if is_product(tile):
        raise InputDataError(f"{tile}: a Sentinel-2 product (folder or zip) matched by {tiles.pattern}; mosaic the "
                             f"products first (gdalbuildvrt, or gdalwarp -t_srs for several UTM zones) and give the "
                             f"mosaic as image")
    dataset = open_raster(tile)
    grid = north_up_grid(dataset, tile)
    bands = [dataset.GetRasterBand(number + 1) for number in range(dataset.RasterCount)]
    return {"tile": tile, "crs": grid.crs_wkt, "bands": len(bands), "size": (grid.rows, grid.cols),
            "types": tuple(gdal.GetDataTypeName(band.DataType) for band in bands),
            "nodata": tuple(_nodata_text(band.GetNoDataValue()) for band in bands), "geotransform": grid.geotransform}


def _window_on_first(first: dict, layout: dict, tile: Path, tiles: Tiles) -> tuple:
    """The window (row, col, rows, cols) of ``tile`` on the first tile's pixel grid; InputDataError naming ``tile``
    when it cannot join the first tile in one mosaic."""
    same_crs = (not first["crs"] and not layout["crs"]) or (bool(first["crs"]) and bool(layout["crs"]) and
                                                            spatial_reference(first["crs"]).IsSame(
                                                                spatial_reference(layout["crs"])))
    x0, dx, _, y0, _, dy = first["geotransform"]
    x, tile_dx, _, y, _, tile_dy = layout["geotransform"]
    offset = np.array([(y - y0) / dy, (x - x0) / dx])
    problems = [
        (not same_crs, "another CRS"),
        (layout["bands"] != first["bands"], f"{layout['bands']} bands, not {first['bands']}"),
        (layout["types"] != first["types"], f"bands of type {', '.join(dict.fromkeys(layout['types']))}, not "
                                            f"{', '.join(dict.fromkeys(first['types']))}"),
        (abs(tile_dx - dx) > GRID_TOLERANCE_PX * dx or abs(tile_dy - dy) > GRID_TOLERANCE_PX * -dy,
         f"pixels of {tile_dx:g} x {-tile_dy:g}, not {dx:g} x {-dy:g}"),
        (np.abs(offset - np.round(offset)).max() > GRID_TOLERANCE_PX, "pixels offset by a fraction of a pixel"),
        (layout["nodata"] != first["nodata"], f"nodata {', '.join(dict.fromkeys(layout['nodata']))}, not "
                                              f"{', '.join(dict.fromkeys(first['nodata']))}"),
    ]
    problem = next((text for found, text in problems if found), None)
    if problem is not None:
        raise InputDataError(f"{tile}: does not match the first tile {first['tile'].name} of {tiles.pattern}: "
                             f"{problem}; the tiles of one date must share CRS, bands, pixel size, pixel grid and "
                             f"nodata (warp them onto one grid first: gdalwarp)")
    row, col = np.round(offset).astype(int).tolist()
    return row, col, *layout["size"]


def _nodata_text(value) -> str:
    """A band's nodata value as text that compares as values should (NaN equals NaN), "none" without one.

    >>> _nodata_text(None), _nodata_text(0.0), _nodata_text(float("nan")), _nodata_text(-3.4028234663852886e38)
    ('none', '0', 'nan', '-3.4028234663852886e+38')
    """
    return "none" if value is None else f"{value:.17g}"


def has_gaps(windows: np.ndarray) -> bool:
    """Whether pixel windows (n, 4: row, col, rows, cols) leave holes in the rectangle that holds them all. Their
    edges cut the rectangle into cells; each cell is covered or not by every window as a whole.

    >>> has_gaps(np.array([[0, 0, 2, 2], [0, 2, 2, 3]])), has_gaps(np.array([[0, 0, 2, 2], [1, 1, 2, 2]]))
    (False, True)
    """
    tops, lefts = windows[:, 0], windows[:, 1]
    bottoms, rights = tops + windows[:, 2], lefts + windows[:, 3]
    row_edges, col_edges = np.unique([tops, bottoms])[:-1], np.unique([lefts, rights])[:-1]
    in_rows = (tops[:, None] <= row_edges) & (row_edges < bottoms[:, None])  # (windows, cell rows)
    in_cols = (lefts[:, None] <= col_edges) & (col_edges < rights[:, None])  # (windows, cell columns)
    covering = in_rows.T.astype(np.int64) @ in_cols.astype(np.int64)  # windows covering each cell
    return bool((covering == 0).any())
