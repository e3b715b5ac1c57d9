"""Where rasters and vector files lie: north-up grids, bounds carried into another CRS, vector extents.

Bounds are always ``(xmin, ymin, xmax, ymax)`` in the units of the CRS named with them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gdal_tif2rgb import Grid
from pipeline.core.errors import error_text
from pipeline.core.errors import InputDataError, InputFileError


def as_path(path):
    """A Path, but GDAL virtual paths (/vsizip//data/a.zip/b.tif) as given: Path would fold their '//'."""
    return path if str(path).startswith("/vsi") else Path(path)


def spatial_reference(text: str):
    """An ``osr.SpatialReference`` from WKT or a user string ("EPSG:4326"), in x/y (lon/lat) axis order."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.SetFromUserInput(text)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def crs_name(wkt: str) -> str | None:
    """The name of a CRS as "AUTHORITY:CODE" (its PROJ string when it has no code); None for an empty WKT."""
    if not wkt:
        return None
    srs = spatial_reference(wkt)
    code = srs.GetAuthorityCode(None)
    return f"{srs.GetAuthorityName(None)}:{code}" if code else srs.ExportToProj4().strip()


def describe(grid: Grid) -> dict:
    """JSON-able description of ``grid``: size, geotransform and CRS name (e.g. "EPSG:27700"; None without a CRS).

    >>> describe(Grid(2, 3, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), ""))["width"]
    3
    """
    return {"width": grid.cols, "height": grid.rows, "geotransform": list(grid.geotransform),
            "crs": crs_name(grid.crs_wkt)}


def north_up_grid(dataset, path) -> Grid:
    """The :class:`~gdal_tif2rgb.Grid` of an open dataset; InputDataError when it is rotated or flipped."""
    gt = tuple(dataset.GetGeoTransform())
    if gt[2] or gt[4] or gt[1] <= 0 or gt[5] >= 0:
        raise InputDataError(f"{path}: the raster is not north-up (geotransform {gt}); warp it first")
    return Grid.of(dataset)


def same_grid(a: Grid, b: Grid) -> bool:
    """Whether two grids have the same size, pixels (to a thousandth of a pixel) and CRS."""
    same_crs = (not a.crs_wkt and not b.crs_wkt) or (bool(a.crs_wkt) and bool(b.crs_wkt) and
                                                     spatial_reference(a.crs_wkt).IsSame(spatial_reference(b.crs_wkt)))
    return (a.rows, a.cols) == (b.rows, b.cols) and same_crs and np.allclose(
        a.geotransform, b.geotransform, rtol=0, atol=1e-3 * abs(b.geotransform[1]))


def transform_bounds(bounds, src_wkt: str, dst_wkt: str, path) -> tuple:
    """Bounds in the CRS ``src_wkt`` (that of the file ``path``) -> the bounds enclosing them in ``dst_wkt``
    (edges densified by GDAL); unchanged when either CRS is missing or both are the same. InputDataError when
    no transformation joins the two (a local or engineering CRS, one PROJ cannot place on the Earth)."""
    from osgeo import osr

    if not src_wkt or not dst_wkt:
        return tuple(bounds)
    src, dst = spatial_reference(src_wkt), spatial_reference(dst_wkt)
    if src.IsSame(dst):
        return tuple(bounds)
    try:
        result = tuple(osr.CoordinateTransformation(src, dst).TransformBounds(*bounds, 21))
    except (RuntimeError, TypeError, AttributeError):  # no transformation: GDAL gives an error or a null object
        result = (float("nan"),)
    if not np.all(np.isfinite(result)):
        raise InputDataError(f"{path}: its CRS '{src.GetName()}' cannot be transformed to the work grid's CRS "
                             f"'{dst.GetName()}' (a local or engineering CRS?); give it in the image's CRS")
    return result


def overlaps(a: tuple, b: tuple) -> bool:
    """Whether two bounds share an area (touching edges do not count).

    >>> overlaps((0, 0, 2, 2), (1, 1, 3, 3)), overlaps((0, 0, 1, 1), (1, 0, 2, 1))
    (True, False)
    """
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def open_dataset(path: Path, kinds: int, what: str):
    """Open ``path`` (a path or a GDAL virtual path) with the GDAL open flags ``kinds`` (``gdal.OF_VECTOR``...);
    InputFileError naming ``what`` it should be when it is missing or unreadable."""
    from osgeo import gdal

    if not (gdal.VSIStatL(str(path)) if str(path).startswith("/vsi") else Path(path).exists()):
        raise InputFileError(f"{path}: file not found")
    try:
        return gdal.OpenEx(str(path), kinds)
    except RuntimeError as error:
        raise InputFileError(f"{path}: not a readable {what} ({error_text(error)})") from None


def vector_bounds(path: Path, image_wkt: str, layers=None) -> tuple:
    """Union of the extents of the layers of a vector file (all, or those named in ``layers``) that hold
    features, in the CRS ``image_wkt``; InputDataError when none does."""
    from osgeo import gdal

    dataset = open_dataset(path, gdal.OF_VECTOR, "vector file")
    boxes = []
    for index in range(dataset.GetLayerCount()):
        layer = dataset.GetLayer(index)
        if (layers is not None and layer.GetName() not in layers) or layer.GetFeatureCount() == 0:
            continue
        xmin, xmax, ymin, ymax = layer.GetExtent()
        srs = layer.GetSpatialRef()
        boxes.append(transform_bounds((xmin, ymin, xmax, ymax), srs.ExportToWkt() if srs else image_wkt, image_wkt,
                                      path))
    if not boxes:
        raise InputDataError(f"{path}: the vector file has no features")
    boxes = np.asarray(boxes)
    return (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))
