"""A reference on the work grid as class codes: a raster on any grid and CRS, or a vector file of polygons.

Reference values become class codes (0..K-1 in the order of the scene's [classes], :data:`UNLABELLED` for
others) exactly once, by :func:`class_codes`; GDAL does the geometry, in memory (no file is written).

Choices
-------
* Reference rasters are mapped to class codes first, then warped with nearest neighbour when they are as
  coarse as the image or coarser, and with ``mode`` (majority of the reference pixels, unlabelled pixels
  included as a value) when finer.
* Vector references are rasterized with the pixel-centre rule (``ALL_TOUCHED=FALSE``): a pixel gets a class
  when its centre lies inside a polygon of that class. Pixels covered by classes that disagree, or not
  covered, are unlabelled.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from gdal_tif2rgb import Grid
from pipeline.core import grids
from pipeline.core.vocabulary import UNLABELLED
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.inputs.georef import north_up_grid, open_dataset, overlaps, same_grid, transform_bounds, vector_bounds


def class_codes(values: np.ndarray, classes: dict, nodata=None, chunk: int = 2**20) -> np.ndarray:
    """Map reference values to class codes 0..K-1 in the order of ``classes``; other values and ``nodata`` to 255.

    Works for values of any integer or float type and range in memory proportional to the pixels (a search in
    the sorted class values, no lookup table as long as the value range), ``chunk`` values at a time.

    Parameters
    ----------
    values : ndarray of reference values, any shape
    classes : class name -> list of integer reference values
    nodata : value of ``values`` that is no label (it wins over a class listing it), or None

    Returns
    -------
    ndarray of uint8, the shape of ``values``

    >>> class_codes(np.array([[0, 3], [2, 9]]), {"urban": [3], "crop": [2, 9]}).tolist()
    [[255, 0], [1, 1]]
    >>> class_codes(np.array([2.0, 2.5, 7.0]), {"a": [2], "b": [7]}, nodata=7.0).tolist()
    [0, 255, 255]
    """
    keys = np.array([v for listed in classes.values() for v in listed],
                    dtype=np.float64 if values.dtype.kind == "f" else np.int64)
    codes_of = np.array([code for code, listed in enumerate(classes.values()) for _ in listed], dtype=np.uint8)
    order = np.argsort(keys, kind="stable")
    keys, codes_of = keys[order], codes_of[order]
    flat = values.ravel()
    codes = np.empty(flat.shape, dtype=np.uint8)
    for values_at in grids.row_blocks(flat.size, 1, chunk):  # 8 MB temporaries, reused, not one set per scene
        part = flat[values_at]
        if part.dtype.kind == "u" and part.dtype.itemsize == 8:  # uint64 beyond int64's range cannot be a class
            part = np.where(part > np.iinfo(np.int64).max, -1, part).astype(np.int64)
        position = np.minimum(np.searchsorted(keys, part), len(keys) - 1)
        codes[values_at] = np.where(keys[position] == part, codes_of[position], UNLABELLED)
    codes = codes.reshape(values.shape)
    if nodata is not None:
        codes[values == nodata] = UNLABELLED
    return codes


def reference_codes(path: Path, classes: dict, grid: Grid, field: str | None = None) -> tuple[np.ndarray, dict]:
    """The class codes of a raster or vector reference on the work ``grid``.

    Parameters
    ----------
    path : raster (any grid and CRS) or vector file of reference labels
    classes : class name -> reference values (integers for a raster; attribute values or layer names for a
        vector file); the order gives the codes 0..K-1
    grid : the work grid
    field : attribute of a vector reference holding the values of ``classes``; None: each layer's name is one

    Returns
    -------
    codes : ndarray of uint8, shape (grid.rows, grid.cols); 255 = unlabelled
    info : JSON-able description for ``run.json``
    """
    from osgeo import gdal

    dataset = open_dataset(path, gdal.OF_RASTER | gdal.OF_VECTOR, "raster or vector file")
    if dataset.RasterCount > 0 and dataset.GetLayerCount() == 0:
        if field is not None:
            raise ConfigError(f"{path}: reference_field {field!r} is given but the reference is a raster")
        codes, info = _from_raster(path, dataset, classes, grid)
    else:
        codes, info = _from_vector(path, dataset, classes, grid, field)
    return codes, {"path": str(path), **info}


def _check_integer_values(path: Path, classes: dict) -> None:
    """ConfigError when [classes] lists a value that is not an integer: a raster reference holds numbers."""
    for name, listed in classes.items():
        for value in listed:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{path}: [classes] {name} value {value!r} must be an integer for a raster reference")


def _check_overlap(path: Path, bounds: tuple, grid: Grid) -> None:
    if not overlaps(bounds, grid.bounds):
        raise InputDataError(f"{path}: the reference does not overlap the image/aoi work grid "
                             f"(reference {tuple(round(v, 2) for v in bounds)}, work grid "
                             f"{tuple(round(v, 2) for v in grid.bounds)}, both in the image CRS)")


def _check_every_class_occurs(path: Path, band, codes: np.ndarray, classes: dict) -> None:
    """Refuse a reference in which no class, or one of them, has a pixel; name the values it holds."""
    counts = np.bincount(codes.ravel(), minlength=UNLABELLED + 1)[:len(classes)]
    if counts.all():
        return
    values, pixels = np.unique(band.ReadAsArray(), return_counts=True)
    present = ", ".join(f"{value} ({count} px)" for value, count in zip(values[:12].tolist(), pixels[:12].tolist()))
    if not counts.any():
        raise InputDataError(f"{path}: none of its values is listed in [classes]; values present: {present}")
    missing = ", ".join(f"'{name}' (values {listed})" for (name, listed), n in zip(classes.items(), counts) if n == 0)
    raise InputDataError(f"{path}: class {missing} has no pixel (values present: {present}); fix [classes]")


def _memory_raster(grid: Grid, codes: np.ndarray | None = None):
    """A one-band Byte GDAL MEM dataset on ``grid``, holding ``codes`` when given."""
    from osgeo import gdal

    memory = gdal.GetDriverByName("MEM").Create("", grid.cols, grid.rows, 1, gdal.GDT_Byte)
    memory.SetGeoTransform(grid.geotransform)
    memory.SetProjection(grid.crs_wkt)
    if codes is not None:
        memory.GetRasterBand(1).WriteArray(codes)
    return memory


def _from_raster(path: Path, dataset, classes: dict, grid: Grid) -> tuple[np.ndarray, dict]:
    """Map reference values to codes, then warp the codes onto the work grid (nearest or mode), in memory,
    unless they are on it already."""
    from osgeo import gdal

    ref_grid = north_up_grid(dataset, path)
    if not ref_grid.crs_wkt and grid.crs_wkt:
        raise InputDataError(f"{path}: the reference raster has no CRS; give it the CRS of its grid")
    ref_bounds = transform_bounds(ref_grid.bounds, ref_grid.crs_wkt, grid.crs_wkt, path)
    _check_overlap(path, ref_bounds, grid)
    _check_integer_values(path, classes)
    band = dataset.GetRasterBand(1)
    codes = class_codes(band.ReadAsArray(), classes, band.GetNoDataValue())
    _check_every_class_occurs(path, band, codes, classes)
    area = (ref_bounds[2] - ref_bounds[0]) * (ref_bounds[3] - ref_bounds[1])
    ref_pixel = math.sqrt(area / (ref_grid.cols * ref_grid.rows))
    if same_grid(ref_grid, grid):  # already on the work grid: taken as it is
        resampling = None
    else:
        resampling = "nearest" if ref_pixel >= 0.99 * grid.geotransform[1] else "mode"
        source = _memory_raster(ref_grid, codes)
        del codes
        warped = gdal.Warp("", source, format="MEM", outputBounds=grid.bounds, width=grid.cols, height=grid.rows,
                           dstSRS=grid.crs_wkt or None, resampleAlg=resampling, dstNodata=UNLABELLED,
                           outputType=gdal.GDT_Byte)
        codes = warped.GetRasterBand(1).ReadAsArray()
        # GDAL's warper writes 254 where a pixel's value is the nodata value 255 but counts as data (the mode of
        # unlabelled pixels), so that it is not read as nodata: that pixel is unlabelled too.
        codes[codes >= len(classes)] = UNLABELLED
    return codes, {"kind": "raster", "field": None, "resampling": resampling,
                   "reference_pixel_in_image_crs": round(ref_pixel, 4)}


def _layer_fields(dataset) -> dict:
    """Layer name -> {field name: is string}."""
    from osgeo import ogr

    result = {}
    for index in range(dataset.GetLayerCount()):
        definition = dataset.GetLayer(index).GetLayerDefn()
        result[dataset.GetLayer(index).GetName()] = {
            definition.GetFieldDefn(i).GetName(): definition.GetFieldDefn(i).GetType() == ogr.OFTString
            for i in range(definition.GetFieldCount())}
    return result


def _field_counts(dataset, layers: list, field: str) -> Counter:
    """How many features have each value of ``field`` in ``layers``."""
    counts = Counter()
    for name in layers:
        layer = dataset.GetLayerByName(name)
        layer.ResetReading()
        for feature in layer:
            counts[feature.GetField(field)] += 1
        layer.ResetReading()
    return counts


def _sql_literal(value, is_string: bool) -> str:
    if is_string:
        return "'" + str(value).replace("'", "''") + "'"
    return repr(float(value))


def _vector_selections(path: Path, dataset, classes: dict, field) -> tuple:
    """Per class: (layer names, attribute filter or None); plus a description."""
    fields = _layer_fields(dataset)
    if field is None:
        if len(fields) < 2:
            listed = ", ".join(name for layer in fields.values() for name in layer) or "none"
            raise ConfigError(f"{path}: a single-layer vector reference needs reference_field "
                              f"(fields: {listed})")
        wanted = {str(v) for values in classes.values() for v in values}
        if not wanted <= set(fields):
            raise InputDataError(f"{path}: no layer named {', '.join(sorted(wanted - set(fields)))} "
                                 f"(layers: {', '.join(fields)}); without reference_field each layer "
                                 "name is a class value")
        return [([str(v) for v in values], None) for values in classes.values()], {"kind": "vector layers"}
    layers = [name for name, layer in fields.items() if field in layer]
    if not layers:
        listed = "; ".join(f"{name}: {', '.join(layer) or 'none'}" for name, layer in fields.items())
        raise ConfigError(f"{path}: no field {field!r} (fields of each layer: {listed}); set reference_field")
    is_string = fields[layers[0]][field]
    return _field_selections(path, dataset, classes, field, layers, is_string)


def _field_selections(path, dataset, classes: dict, field, layers, is_string) -> tuple:
    """Per class (layers, where clause) for a reference field; InputDataError for values never found."""
    counts = _field_counts(dataset, layers, field)
    found = {(str(k) if is_string else k): n for k, n in counts.items() if k is not None}
    selections, absent = [], []
    for name, values in classes.items():
        try:
            keys = [str(v) if is_string else float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: [classes] {name} values {values!r} must be numbers: "
                              f"field {field!r} is numeric") from None
        absent += [repr(v) for v, key in zip(values, keys) if key not in found]
        literals = ", ".join(_sql_literal(key, is_string) for key in keys)
        selections.append((layers, f'"{field}" IN ({literals})'))
    if absent:
        shown = ", ".join(f"{k!r} ({n})" for k, n in sorted(found.items(), key=lambda kv: -kv[1]))
        raise InputDataError(f"{path}: [classes] value(s) {', '.join(absent)} never occur in field {field!r} "
                             f"(values with feature counts: {shown or 'none'})")
    return selections, {"kind": "vector field"}


def _from_vector(path: Path, dataset, classes: dict, grid: Grid, field) -> tuple[np.ndarray, dict]:
    """Rasterize each class (pixel centres) in memory and count overlaps; 255 where none or several."""
    from osgeo import gdal

    selections, info = _vector_selections(path, dataset, classes, field)
    used = sorted({name for layers, _ in selections for name in layers})
    _check_overlap(path, vector_bounds(path, grid.crs_wkt, layers=used), grid)
    labels = np.full((grid.rows, grid.cols), UNLABELLED, dtype=np.uint8)
    count = np.zeros((grid.rows, grid.cols), dtype=np.uint8)
    memory = _memory_raster(grid)
    for code, (layers, where) in enumerate(selections):
        memory.GetRasterBand(1).Fill(0)
        gdal.Rasterize(memory, dataset, layers=layers, where=where, burnValues=[1], allTouched=False)
        covered = memory.GetRasterBand(1).ReadAsArray().astype(bool)
        count += covered
        labels[covered] = code
    labels[count != 1] = UNLABELLED
    return labels, {**info, "field": field,
                    "rasterize": "pixel centre (ALL_TOUCHED=FALSE); overlaps of classes -> 255",
                    "overlap_pixels": int((count > 1).sum())}
