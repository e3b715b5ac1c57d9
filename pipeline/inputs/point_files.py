"""Point files people label in QGIS: a GeoPackage point layer with a CSV copy beside it (``x``, ``y`` in the map's
CRS, then the fields), and the reading of such files back (GeoPackage, CSV, or any OGR point layer).

Fields are given as columns: name -> list or 1-d array of str, int or float values, one per point.
"""
from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np

from gdal_tif2rgb import use_gdal
from pipeline.core.errors import (InputDataError, InputFileError, error_text, gdal_messages_mark,
                                  gdal_messages_since, write_failure)
from pipeline.inputs.georef import spatial_reference


def write_points(path: Path, layer_name: str, x: np.ndarray, y: np.ndarray, fields: dict, crs_wkt: str) -> None:
    """A GeoPackage of points at ``x``, ``y`` (map CRS units) with ``fields``, at ``path`` (which must not
    exist; write into a staging folder), and the same table as ``path.with_suffix('.csv')``. A write that fails
    (a full disk) is an OSError naming the file."""
    from osgeo import ogr

    use_gdal()
    mark = gdal_messages_mark()
    kinds = {name: _field_type(values) for name, values in fields.items()}
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    if source is None:
        raise write_failure(path, gdal_messages_since(mark, failures_only=True))
    layer = source.CreateLayer(layer_name, spatial_reference(crs_wkt), ogr.wkbPoint)
    for name, kind in kinds.items():
        layer.CreateField(ogr.FieldDefn(name, kind))
    layer.StartTransaction()
    for i in range(len(x)):
        feature = ogr.Feature(layer.GetLayerDefn())
        for name, values in fields.items():
            feature.SetField(name, _plain(values[i]))
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({float(x[i])!r} {float(y[i])!r})"))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    layer = source = None  # closes the file
    failed = gdal_messages_since(mark, failures_only=True)
    if failed:
        raise write_failure(path, failed)
    table_path = path.with_suffix(".csv")
    try:
        with open(table_path, "w", newline="", encoding="utf-8") as table:
            writer = csv.writer(table)
            writer.writerow(["x", "y", *fields])
            for i in range(len(x)):
                writer.writerow([repr(float(x[i])), repr(float(y[i])), *(_plain(v[i]) for v in fields.values())])
    except OSError as error:  # its last bytes are written as it closes, where Python names no file
        raise OSError(error.errno, error.strerror, str(table_path)) from None


def _field_type(values) -> int:
    from osgeo import ogr

    kind = np.asarray(values).dtype.kind
    return ogr.OFTInteger64 if kind in "iu" else ogr.OFTReal if kind == "f" else ogr.OFTString


def _plain(value):
    """A numpy scalar as the Python value OGR and csv take."""
    return value.item() if isinstance(value, np.generic) else value


def read_points(path: Path, crs_wkt: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``x``, ``y`` (in the CRS ``crs_wkt``) and every field (name -> list, None where empty) of the points in
    ``path``: a CSV with ``x`` and ``y`` columns in that CRS, or a vector file of points in any CRS. A file that
    cannot be read as such (empty, text, cut short) is an :class:`InputDataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    from osgeo import osr

    with _vector(path) as dataset:
        layer = dataset.GetLayer(0)
        source_crs = layer.GetSpatialRef()
        target = spatial_reference(crs_wkt)
        transform = None
        if source_crs is not None and not source_crs.IsSame(target):
            source_crs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            transform = osr.CoordinateTransformation(source_crs, target)
        xs, ys, columns = [], [], {name: [] for name in _field_names(layer)}
        for feature in layer:
            geometry = _point(path, feature)
            if transform is not None:
                geometry = geometry.Clone()
                geometry.Transform(transform)
            xs.append(geometry.GetX())
            ys.append(geometry.GetY())
            for name, values in columns.items():
                values.append(feature.GetField(name) if feature.IsFieldSetAndNotNull(name) else None)
    return np.array(xs, np.float64), np.array(ys, np.float64), columns


def read_fields(path: Path) -> dict:
    """Every field of ``path`` whatever its geometry (name -> list of values, None where empty): a CSV's columns
    (``x`` and ``y`` among them), or the fields of every layer of a vector file (a name used by several layers
    holds the values of all). A file that cannot be read is an :class:`InputDataError` naming it."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _csv_columns(path)
    columns = {}
    with _vector(path) as dataset:
        for layer in (dataset.GetLayer(i) for i in range(dataset.GetLayerCount())):
            names = _field_names(layer)
            for feature in layer:
                for name in names:
                    columns.setdefault(name, []).append(feature.GetField(name) if feature.IsFieldSetAndNotNull(name)
                                                        else None)
    return columns


@contextlib.contextmanager
def _vector(path: Path):
    """The vector dataset at ``path``, open while the block reads it; GDAL's failure to open or read it (an
    empty or text file, a file cut short) is one :class:`InputDataError` naming the file."""
    from osgeo import gdal

    use_gdal()
    try:
        dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
        if dataset is None or dataset.GetLayerCount() == 0:
            raise RuntimeError("no layer")
        yield dataset
    except RuntimeError as error:
        reason = error_text(error).replace(f"`{path}' ", "")
        raise InputDataError(f"{path}: not a vector file of points GDAL can read ({reason}); give a GeoPackage or "
                             f"a CSV") from None


def _field_names(layer) -> list[str]:
    definition = layer.GetLayerDefn()
    return [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]


def _point(path: Path, feature):
    """The point geometry of ``feature``; any other geometry, or none, is an error."""
    from osgeo import ogr

    geometry = feature.GetGeometryRef()
    if geometry is None or ogr.GT_Flatten(geometry.GetGeometryType()) != ogr.wkbPoint:
        raise InputDataError(f"{path}: feature {feature.GetFID()} is not a point")
    return geometry


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    columns = _csv_columns(path)
    if not {"x", "y"} <= set(columns) or not columns["x"]:
        raise InputDataError(f"{path}: a CSV of points needs a header with x and y columns and at least one row")
    try:
        xs, ys = (np.array([float(value) for value in columns.pop(axis)]) for axis in ("x", "y"))
    except (TypeError, ValueError):
        raise InputDataError(f"{path}: x and y must be numbers on every row") from None
    return xs, ys, columns


def _csv_columns(path: Path) -> dict:
    """Every column of a CSV (header name -> its values, None where empty); a column without a header, or a
    repeated header, is named by its number. Bytes that are not UTF-8 text are an error naming the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as table:
            rows = list(csv.reader(table))
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputDataError(f"{path}: not a CSV of UTF-8 text ({error_text(error)})") from None
    if not rows:
        raise InputDataError(f"{path}: an empty file; a CSV of points needs a header with x and y columns")
    names = []
    for number in range(1, max(map(len, rows)) + 1):
        name = rows[0][number - 1] if number <= len(rows[0]) else ""
        names.append(name if name and name not in names else f"column {number}")
    return {name: [row[i] if i < len(row) and row[i].strip() else None for row in rows[1:]]
            for i, name in enumerate(names)}
