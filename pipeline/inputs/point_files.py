"""Point files people label in QGIS: a GeoPackage point layer with a CSV copy beside it (``x``, ``y`` in the map's
CRS, then the fields), and the reading of such files back (GeoPackage, CSV, or any OGR point layer).

Fields are given as columns: name -> list or 1-d array of str, int or float values, one per point.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputDataError, InputFileError
from pipeline.inputs.georef import spatial_reference


def write_points(path: Path, layer_name: str, x: np.ndarray, y: np.ndarray, fields: dict, crs_wkt: str) -> None:
    """A GeoPackage of points at ``x``, ``y`` (map CRS units) with ``fields``, at ``path`` (which must not
    exist; write into a staging folder), and the same table as ``path.with_suffix('.csv')``."""
    from osgeo import ogr

    kinds = {name: _field_type(values) for name, values in fields.items()}
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    if source is None:
        raise InputFileError(f"{path}: cannot create a GeoPackage here")
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
    source = None
    with open(path.with_suffix(".csv"), "w", newline="", encoding="utf-8") as table:
        writer = csv.writer(table)
        writer.writerow(["x", "y", *fields])
        for i in range(len(x)):
            writer.writerow([repr(float(x[i])), repr(float(y[i])), *(_plain(v[i]) for v in fields.values())])


def _field_type(values) -> int:
    from osgeo import ogr

    kind = np.asarray(values).dtype.kind
    return ogr.OFTInteger64 if kind in "iu" else ogr.OFTReal if kind == "f" else ogr.OFTString


def _plain(value):
    """A numpy scalar as the Python value OGR and csv take."""
    return value.item() if isinstance(value, np.generic) else value


def read_points(path: Path, crs_wkt: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``x``, ``y`` (in the CRS ``crs_wkt``) and every field (name -> list, None where empty) of the points in
    ``path``: a CSV with ``x`` and ``y`` columns in that CRS, or a vector file of points in any CRS."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    from osgeo import gdal, ogr, osr

    dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    if dataset is None or dataset.GetLayerCount() == 0:
        raise InputDataError(f"{path}: not a vector file of points")
    layer = dataset.GetLayer(0)
    source_crs = layer.GetSpatialRef()
    target = spatial_reference(crs_wkt)
    transform = None
    if source_crs is not None and not source_crs.IsSame(target):
        source_crs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(source_crs, target)
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    xs, ys, columns = [], [], {name: [] for name in names}
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None or ogr.GT_Flatten(geometry.GetGeometryType()) != ogr.wkbPoint:
            raise InputDataError(f"{path}: feature {feature.GetFID()} is not a point")
        if transform is not None:
            geometry = geometry.Clone()
            geometry.Transform(transform)
        xs.append(geometry.GetX())
        ys.append(geometry.GetY())
        for name in names:
            columns[name].append(feature.GetField(name) if feature.IsFieldSetAndNotNull(name) else None)
    return np.array(xs, np.float64), np.array(ys, np.float64), columns


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with open(path, newline="", encoding="utf-8-sig") as table:
        rows = list(csv.DictReader(table))
    if not rows or not {"x", "y"} <= set(rows[0]):
        raise InputDataError(f"{path}: a CSV of points needs a header with x and y columns and at least one row")
    try:
        xs = np.array([float(row["x"]) for row in rows])
        ys = np.array([float(row["y"]) for row in rows])
    except (TypeError, ValueError):
        raise InputDataError(f"{path}: x and y must be numbers on every row") from None
    columns = {name: [row[name] if row[name] not in ("", None) else None for row in rows]
               for name in rows[0] if name not in ("x", "y")}
    return xs, ys, columns
