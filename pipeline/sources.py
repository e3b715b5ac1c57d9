"""Turn the files users have into inputs on one work grid: image stack, band numbers and reference codes.

The image may be an ordinary raster, a Sentinel-2 ``.SAFE`` folder, its ``.zip`` or a plain folder of
band files named as in a product. The reference may be a raster on any grid or a vector file. GDAL does
all geometry (VRT, warp, rasterize); this module only maps values and checks what the user gave.

Choices
-------
* Product bands at 20 m or 60 m are warped onto the 10 m grid with **bilinear** resampling by a warped
  VRT (``gdal.Warp`` to VRT, source nodata 0). Bilinear upsampling gives smooth fields instead of the
  2x2 (or 6x6) staircase blocks of nearest neighbour, which superpixels would otherwise follow as
  false edges; GDAL's warper leaves nodata (DN 0) out of the kernel, so the swath edge does not bleed
  into the valid pixels. Average gives the same blocks as nearest when upsampling.
* Reflectance = (DN + offset) / quantification, from ``MTD_MSIL1C.xml`` (``QUANTIFICATION_VALUE``,
  ``RADIO_ADD_OFFSET``) or ``MTD_MSIL2A.xml`` (``BOA_QUANTIFICATION_VALUE``, ``BOA_ADD_OFFSET``);
  offsets are used from processing baseline 04.00 (or when the baseline is unknown). Without the
  metadata file the fallback is quantification 10000 and offset 0, and ``sources`` says so. The
  prepared image is a Float32 VRT (ComplexSource ScaleRatio/ScaleOffset) whose nodata is NaN.
* Reference rasters are mapped to class codes first, then warped with nearest neighbour when they are
  as coarse as the image or coarser, and with ``mode`` (majority of the reference pixels, unlabelled
  pixels included as a value) when finer.
* Vector references are rasterized with the pixel-centre rule (``ALL_TOUCHED=FALSE``): a pixel gets a
  class when its centre lies inside a polygon of that class. Pixels covered by classes that disagree,
  or not covered, are unlabelled (255).
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdal_tif2rgb import InputFileError
from pipeline.errors import ConfigError, InputDataError

#: Class code of unlabelled pixels in ``reference.tif`` (also its nodata value).
UNLABELLED = 255
#: Folder of the work folder that holds what Step 0 prepared (image.vrt, the reference's codes, ...).
FOLDER = "sources"
#: Product band names in the order of the ``band_id`` attributes of the product metadata.
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: Bands of a product used for the roles the scene's [bands] table does not name.
DEFAULT_PRODUCT_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir": "B11"}
#: Fallback when a product has no metadata file: reflectance = DN / 10000.
FALLBACK_QUANTIFICATION = 10000.0
PRODUCT_RESAMPLING = "bilinear"
_BAND_FILE = re.compile(r"_(B(?:0[1-9]|1[0-2]|8A))(?:_(10|20|60)m)?\.jp2$", re.IGNORECASE)
_METADATA_FILES = ("MTD_MSIL1C.xml", "MTD_MSIL2A.xml")


@dataclass(frozen=True)
class PreparedSources:
    """Inputs on the work grid: image, band numbers of the layer roles, reference codes, description."""

    image: Path
    bands: dict
    reference: Path | None
    sources: dict


@dataclass(frozen=True)
class _Grid:
    """A north-up pixel grid: size, GDAL geotransform and CRS as WKT."""

    width: int
    height: int
    geotransform: tuple
    wkt: str

    @property
    def bounds(self) -> tuple:
        """(xmin, ymin, xmax, ymax) of the grid."""
        x0, dx, _, y0, _, dy = self.geotransform
        xs, ys = (x0, x0 + dx * self.width), (y0, y0 + dy * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def describe(self) -> dict:
        """JSON-able description."""
        return {"width": self.width, "height": self.height, "geotransform": list(self.geotransform),
                "crs": _crs_name(self.wkt)}


def prepare_sources(image: Path, bands: dict, reference: Path | None, classes: dict, out_dir: Path, *,
                    aoi=None, reference_field: str | None = None) -> PreparedSources:
    """Prepare the image and the reference of a scene on one work grid.

    Parameters
    ----------
    image : raster file, Sentinel-2 ``.SAFE`` folder, its ``.zip``, or a folder of ``*_Bxx[_RRm].jp2`` files
    bands : layer role -> 1-based band number or band description (rasters) or band name "B02" (products)
    reference : raster or vector file of reference labels, or None
    classes : ordered class name -> reference values; the order gives the codes 0..K-1
    out_dir : folder for the prepared files (created)
    aoi : None, {"bbox": [xmin, ymin, xmax, ymax], "crs": "EPSG:4326"} (crs defaults to the image's CRS)
        or a vector file whose extent (reprojected to the image CRS) is used
    reference_field : attribute of a vector reference holding the values of ``classes``

    Returns
    -------
    PreparedSources
    """
    from osgeo import gdal

    gdal.UseExceptions()
    image, out_dir = _as_path(image), Path(out_dir)
    class_values = _check_classes(classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    if _is_product(image):
        stack, band_map, info, scaling = _product_stack(image, bands, out_dir)
    else:
        stack, band_map, info, scaling = image, _raster_bands(image, bands), {"kind": "raster"}, None
    full = _grid_of(_open_raster(stack), stack)
    window, aoi_info = _aoi_window(full, aoi, image)
    grid = _window_grid(full, window)
    prepared = _finish_image(stack, full, window, scaling, out_dir)
    info.update(image=str(image), prepared_image=str(prepared), aoi=aoi_info, work_grid=grid.describe())
    ref_path = None
    if reference is not None:
        ref_path, ref_info = _prepare_reference(_as_path(reference), class_values, grid, out_dir, reference_field)
        info["reference"] = ref_info
    else:
        info["reference"] = None
    info["classes"] = {name: list(values) for name, values in class_values}
    return PreparedSources(image=prepared, bands=band_map, reference=ref_path, sources=info)


# ---------------------------------------------------------------------------------------------- checks

def _check_classes(classes: dict) -> list:
    """Return [(name, values)] after checking the class table; ConfigError when it is unusable."""
    if not classes:
        raise ConfigError("[classes] is empty: list at least one class name = [reference values]")
    if len(classes) >= UNLABELLED:
        raise ConfigError(f"[classes] has {len(classes)} classes: at most {UNLABELLED - 1} are supported")
    result, seen = [], {}
    for name, values in classes.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise ConfigError(f"[classes] {name!r} lists no reference values")
        for value in values:
            key = str(value)
            if key in seen and seen[key] != name:
                raise ConfigError(f"[classes] value {value!r} is listed for both {seen[key]!r} and {name!r}")
            seen[key] = name
        result.append((name, values))
    return result


def _open_raster(path):
    """Open a raster (path or GDAL /vsi path); InputFileError when missing or unreadable."""
    from osgeo import gdal

    name = str(path)
    if not name.startswith("/vsi") and not Path(name).exists():
        raise InputFileError(f"{name}: file not found")
    try:
        return gdal.OpenEx(name, gdal.OF_RASTER)
    except RuntimeError as error:
        raise InputFileError(f"{name}: not a readable raster ({_first_line(error)})") from None


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "GDAL cannot open it"


def _grid_of(dataset, path) -> _Grid:
    """Grid of a dataset; InputDataError when it is rotated."""
    gt = tuple(dataset.GetGeoTransform())
    if gt[2] or gt[4] or gt[1] <= 0 or gt[5] >= 0:
        raise InputDataError(f"{path}: the raster is not north-up (geotransform {gt}); warp it first")
    return _Grid(dataset.RasterXSize, dataset.RasterYSize, gt, dataset.GetProjection())


def _srs(wkt_or_text: str):
    """osr.SpatialReference in x/y (lon/lat) axis order."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.SetFromUserInput(wkt_or_text)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _crs_name(wkt: str) -> str | None:
    if not wkt:
        return None
    srs = _srs(wkt)
    code = srs.GetAuthorityCode(None)
    return f"{srs.GetAuthorityName(None)}:{code}" if code else srs.ExportToProj4().strip()


def _transform_bounds(bounds, src_wkt: str, dst_wkt: str) -> tuple:
    """(xmin, ymin, xmax, ymax) in src CRS -> enclosing bounds in dst CRS (edges densified by GDAL)."""
    from osgeo import osr

    if not src_wkt or not dst_wkt:
        return tuple(bounds)
    src, dst = _srs(src_wkt), _srs(dst_wkt)
    if src.IsSame(dst):
        return tuple(bounds)
    return tuple(osr.CoordinateTransformation(src, dst).TransformBounds(*bounds, 21))


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# ----------------------------------------------------------------------------------------- raster image

def _raster_bands(path: Path, bands: dict) -> dict:
    """Role -> 1-based band number of an ordinary raster; strings are band descriptions."""
    dataset = _open_raster(path)
    count = dataset.RasterCount
    descriptions = [dataset.GetRasterBand(i + 1).GetDescription() for i in range(count)]
    result = {}
    for role, value in bands.items():
        if isinstance(value, str):
            matches = [i + 1 for i, text in enumerate(descriptions) if text.strip().lower() == value.strip().lower()]
            if len(matches) != 1:
                shown = ", ".join(repr(text) for text in descriptions if text) or "none"
                problem = "no band" if not matches else f"{len(matches)} bands"
                raise ConfigError(f"{path}: [bands] {role} = {value!r}: {problem} with that description "
                                  f"(descriptions: {shown}); give a band number 1..{count} instead")
            value = matches[0]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= count:
            raise ConfigError(f"{path}: [bands] {role} = {value!r} is not a band number 1..{count}")
        result[role] = value
    return result


def _finish_image(stack, full: _Grid, window, scaling, out_dir: Path) -> Path:
    """The prepared image: the user's raster, or a VRT cut to the window and/or scaled to reflectance."""
    from osgeo import gdal

    whole = window == (0, 0, full.width, full.height)
    if scaling is None and whole:
        return _as_path(stack)
    options = {"format": "VRT", "srcWin": list(window)}
    if scaling is not None:
        dataset = gdal.Open(str(stack), gdal.GA_Update)
        for number, (ratio, offset) in enumerate(scaling, start=1):
            dataset.GetRasterBand(number).SetScale(ratio)
            dataset.GetRasterBand(number).SetOffset(offset)
        dataset = None
        options.update(outputType=gdal.GDT_Float32, unscale=True, noData="nan")
    target = out_dir / "image.vrt"
    gdal.Translate(str(target), str(stack), **options)
    return target


def _aoi_window(grid: _Grid, aoi, image: Path) -> tuple:
    """(col, row, width, height) of the image grid cut to the aoi, snapped outwards to whole pixels."""
    if aoi is None:
        return (0, 0, grid.width, grid.height), None
    bounds, info = _aoi_bounds(aoi, grid.wkt)
    x0, dx, _, y0, _, dy = grid.geotransform
    eps = 1e-6
    col0 = max(0, math.floor((bounds[0] - x0) / dx + eps))
    col1 = min(grid.width, math.ceil((bounds[2] - x0) / dx - eps))
    row0 = max(0, math.floor((bounds[3] - y0) / dy + eps))
    row1 = min(grid.height, math.ceil((bounds[1] - y0) / dy - eps))
    if col1 <= col0 or row1 <= row0:
        raise InputDataError(f"{image}: the aoi {info} does not overlap the image "
                             f"(image bounds {tuple(round(v, 2) for v in grid.bounds)}, "
                             f"aoi in image CRS {tuple(round(v, 2) for v in bounds)})")
    info["window"] = [col0, row0, col1 - col0, row1 - row0]
    return (col0, row0, col1 - col0, row1 - row0), info


def _aoi_bounds(aoi, image_wkt: str) -> tuple:
    """Aoi bounds in the image CRS and a JSON-able description of the aoi."""
    if isinstance(aoi, dict):
        bbox = aoi.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not bbox[0] < bbox[2] or not bbox[1] < bbox[3]:
            raise ConfigError(f"aoi bbox {bbox!r} must be [xmin, ymin, xmax, ymax] with xmin < xmax, ymin < ymax")
        crs = aoi.get("crs")
        if crs and not image_wkt:
            raise InputDataError(f"aoi crs {crs} is given but the image has no CRS; give the bbox in the "
                                 "image's own coordinates and leave out 'crs'")
        try:
            src_wkt = _srs(crs).ExportToWkt() if crs else image_wkt
        except RuntimeError:
            raise ConfigError(f"aoi crs {crs!r} is not a CRS GDAL knows (e.g. 'EPSG:4326')") from None
        bounds = _transform_bounds([float(v) for v in bbox], src_wkt, image_wkt)
        return bounds, {"bbox": [float(v) for v in bbox], "crs": crs or _crs_name(image_wkt)}
    if isinstance(aoi, (str, Path)):
        return _vector_bounds(Path(aoi), image_wkt), {"file": str(aoi)}
    raise ConfigError(f"aoi {aoi!r} must be a {{'bbox': [...], 'crs': ...}} table or a vector file path")


def _window_grid(grid: _Grid, window) -> _Grid:
    col, row, width, height = window
    x0, dx, rx, y0, ry, dy = grid.geotransform
    return _Grid(width, height, (x0 + col * dx, dx, rx, y0 + row * dy, ry, dy), grid.wkt)


# --------------------------------------------------------------------------------- Sentinel-2 products

def _as_path(path):
    """A Path, but GDAL virtual paths (/vsizip//data/a.zip/b.tif) as given: Path would fold their '//'."""
    return path if str(path).startswith("/vsi") else Path(path)


def _is_product(path) -> bool:
    return isinstance(path, Path) and (path.is_dir() or path.suffix.lower() == ".zip")


def _product_root(path: Path) -> str:
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    return f"/vsizip/{path.resolve()}" if path.suffix.lower() == ".zip" else str(path.resolve())


def _product_stack(path: Path, bands: dict, out_dir: Path):
    """Build the 10 m DN stack VRT of a product; return it, role -> band, description, (ratio, offset)s."""
    from osgeo import gdal

    root = _product_root(path)
    try:
        listing = gdal.ReadDirRecursive(root) or []
    except RuntimeError as error:
        raise InputFileError(f"{path}: cannot list the product ({_first_line(error)})") from None
    files = _band_files(root, listing)
    roles = _product_roles(path, bands)
    names = list(dict.fromkeys(roles.values()))
    missing = [f"{role}={name}" for role, name in roles.items() if name not in files]
    if missing:
        found = ", ".join(sorted(files)) or "none"
        raise InputDataError(f"{path}: no band file for {', '.join(missing)} (bands found: {found}); "
                             "add the band files or map the role to another band in [bands]")
    metadata = _read_metadata(path, root, listing)
    stack = _build_stack(path, [files[name] for name in names], names, out_dir)
    scaling = [(1.0 / metadata["quantification"],
                metadata["offsets"].get(name, 0.0) / metadata["quantification"]) for name in names]
    metadata["offsets"] = {name: metadata["offsets"].get(name, 0.0) for name in names}
    info = {"kind": "zip" if root.startswith("/vsizip/") else "folder", **metadata,
            "band_files": {name: files[name][0] for name in names}, "resampling": PRODUCT_RESAMPLING,
            "stack": str(stack), "reflectance": "(DN + offset) / quantification; DN 0 is nodata (NaN)"}
    return stack, {role: names.index(name) + 1 for role, name in roles.items()}, info, scaling


def _product_roles(path: Path, bands: dict) -> dict:
    """Role -> product band name ("B02"...); missing spectral roles get the defaults."""
    roles = dict(DEFAULT_PRODUCT_BANDS)
    for role, value in bands.items():
        name = str(value).strip().upper()
        match = re.fullmatch(r"B(\d{1,2}|8A)", name)
        if isinstance(value, bool) or not isinstance(value, str) or not match:
            raise ConfigError(f"{path}: [bands] {role} = {value!r}: a Sentinel-2 product needs band names "
                              f"such as 'B02', 'B8A', 'B11'")
        number = match.group(1)
        name = "B8A" if number == "8A" else f"B{int(number):02d}"
        if name not in S2_BANDS:
            raise ConfigError(f"{path}: [bands] {role} = {value!r} is not a Sentinel-2 band ({', '.join(S2_BANDS)})")
        roles[role] = name
    return roles


def _band_files(root: str, listing) -> dict:
    """Band name -> (path, resolution in m) of its finest file in the product."""
    from osgeo import gdal

    found = {}
    for relative in listing:
        match = _BAND_FILE.search(relative)
        base = relative.rsplit("/", 1)[-1]
        if not match or "/QI_DATA/" in f"/{relative}" or base.upper().startswith("MSK_"):
            continue
        name, path = match.group(1).upper(), f"{root}/{relative}"
        if match.group(2):
            resolution = float(match.group(2))
        else:
            resolution = abs(_open_raster(path).GetGeoTransform()[1])
        if name in found and found[name][1] == resolution:
            raise InputDataError(f"{root}: two files for band {name} at {resolution:g} m "
                                 f"({found[name][0]} and {path}); keep one granule per folder")
        if name not in found or resolution < found[name][1]:
            found[name] = (path, resolution)
    return found


def _read_metadata(path: Path, root: str, listing) -> dict:
    """Quantification, offsets per band, baseline and product type from MTD_MSIL1C/2A.xml, or the fallback."""
    from osgeo import gdal

    candidates = sorted((rel for rel in listing if rel.rsplit("/", 1)[-1] in _METADATA_FILES),
                        key=lambda rel: rel.count("/"))
    if not candidates:
        return {"metadata": None, "product_type": None, "processing_baseline": None,
                "quantification": FALLBACK_QUANTIFICATION, "offsets": {},
                "scaling_source": "fallback: no MTD_MSIL1C.xml/MTD_MSIL2A.xml, quantification 10000, offset 0"}
    name = f"{root}/{candidates[0]}"
    try:
        handle = gdal.VSIFOpenL(name, "rb")
        size = gdal.VSIStatL(name).size
        text = gdal.VSIFReadL(1, size, handle)
        gdal.VSIFCloseL(handle)
        tree = ElementTree.fromstring(text)
    except (RuntimeError, ElementTree.ParseError) as error:
        raise InputFileError(f"{name}: not a readable product metadata file ({_first_line(error)})") from None
    return _parse_metadata(name, tree)


def _parse_metadata(name: str, tree) -> dict:
    """Values of a parsed MTD_MSIL1C.xml / MTD_MSIL2A.xml (namespaces ignored)."""
    level2 = name.endswith("MTD_MSIL2A.xml")
    texts, offsets = {}, {}
    offset_tag = "BOA_ADD_OFFSET" if level2 else "RADIO_ADD_OFFSET"
    for element in tree.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == offset_tag and element.get("band_id") is not None:
            offsets[S2_BANDS[int(element.get("band_id"))]] = float(element.text)
        elif element.text and element.text.strip():
            texts.setdefault(tag, element.text.strip())
    quant_tag = next((tag for tag in ("BOA_QUANTIFICATION_VALUE", "L2A_BOA_QUANTIFICATION_VALUE")
                      if tag in texts), None) if level2 else "QUANTIFICATION_VALUE"
    if quant_tag not in texts:
        raise InputDataError(f"{name}: no {'BOA_' if level2 else ''}QUANTIFICATION_VALUE in the metadata")
    baseline = texts.get("PROCESSING_BASELINE")
    use_offsets = baseline is None or float(baseline) >= 4.0
    return {"metadata": name, "product_type": texts.get("PRODUCT_TYPE"), "processing_baseline": baseline,
            "quantification": float(texts[quant_tag]), "offsets": offsets if use_offsets else {},
            "scaling_source": f"{quant_tag} and {offset_tag if use_offsets else 'no offsets (baseline < 04.00)'}"}


def _build_stack(path: Path, files: list, names: list, out_dir: Path) -> Path:
    """VRT of the bands (DN, nodata 0) on the grid of the finest band; coarser bands warped bilinearly."""
    from osgeo import gdal

    datasets = [_open_raster(file) for file, _ in files]
    grids = [_grid_of(dataset, file) for dataset, (file, _) in zip(datasets, files)]
    finest = min(range(len(grids)), key=lambda i: grids[i].geotransform[1])
    target = grids[finest]
    for grid, (file, _), name in zip(grids, files, names):
        tolerance = 1e-3 * target.geotransform[1]
        if not np.allclose(grid.bounds, target.bounds, rtol=0, atol=tolerance) or not _srs(grid.wkt).IsSame(
                _srs(target.wkt)):
            raise InputDataError(f"{path}: band {name} ({file}) covers {grid.bounds} {_crs_name(grid.wkt)}, "
                                 f"not the footprint {target.bounds} {_crs_name(target.wkt)} of band "
                                 f"{names[finest]}; the band files must come from one tile")
    sources = []
    for grid, (file, _), name in zip(grids, files, names):
        if grid.width == target.width and grid.height == target.height:
            sources.append(file)
            continue
        warped = str(out_dir / f"{name}_{target.geotransform[1]:g}m.vrt")
        gdal.Warp(warped, file, format="VRT", outputBounds=target.bounds, width=target.width,
                  height=target.height, resampleAlg=PRODUCT_RESAMPLING, srcNodata=0, dstNodata=0)
        sources.append(warped)
    stack = out_dir / "stack_dn.vrt"
    dataset = gdal.BuildVRT(str(stack), sources, separate=True, srcNodata=0, VRTNodata=0)
    for number, name in enumerate(names, start=1):
        dataset.GetRasterBand(number).SetDescription(name)
    dataset = None
    return stack


# ------------------------------------------------------------------------------------------- reference

def _prepare_reference(path: Path, class_values: list, grid: _Grid, out_dir: Path, field):
    """Write reference.tif (codes, 255 unlabelled) on the work grid; return its path and a description."""
    from osgeo import gdal

    if not (gdal.VSIStatL(str(path)) if str(path).startswith("/vsi") else path.exists()):
        raise InputFileError(f"{path}: file not found")
    try:
        dataset = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_VECTOR)
    except RuntimeError as error:
        raise InputFileError(f"{path}: not a readable raster or vector file ({_first_line(error)})") from None
    target = out_dir / "reference.tif"
    if dataset.RasterCount > 0 and dataset.GetLayerCount() == 0:
        if field is not None:
            raise ConfigError(f"{path}: reference_field {field!r} is given but the reference is a raster")
        info = _reference_from_raster(path, dataset, class_values, grid, target)
    else:
        info = _reference_from_vector(path, dataset, class_values, grid, target, field)
    return target, {"path": str(path), "prepared": str(target), **info}


def _raster_codes(path: Path, band, class_values: list) -> np.ndarray:
    """Class codes (uint8, 255 unlabelled) of a reference band: memory in proportion to its pixels."""
    values = band.ReadAsArray()
    keys, codes = [], []
    for code, (name, listed) in enumerate(class_values):
        for value in listed:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{path}: [classes] {name} value {value!r} must be an integer for a raster reference")
            keys.append(int(value))
            codes.append(code)
    order = np.argsort(keys, kind="stable")
    keys = np.asarray(keys, dtype=object)[order]
    keys = keys.astype(np.float64 if values.dtype.kind == "f" else np.int64)
    codes = np.asarray(codes, dtype=np.uint8)[order]
    index = np.searchsorted(keys, values).clip(0, len(keys) - 1)
    matched = keys[index] == values
    result = np.full(values.shape, UNLABELLED, dtype=np.uint8)
    result[matched] = codes[index[matched]]
    nodata = band.GetNoDataValue()
    if nodata is not None:
        result[values == nodata] = UNLABELLED
    return result


def _check_every_class_occurs(path: Path, band, codes: np.ndarray, class_values: list) -> None:
    """Refuse a reference in which no class, or one of them, has a pixel; name the values it holds."""
    counts = np.bincount(codes.ravel(), minlength=UNLABELLED + 1)[:len(class_values)]
    if counts.all():
        return
    values, pixels = np.unique(band.ReadAsArray(), return_counts=True)
    present = ", ".join(f"{value} ({count} px)" for value, count in zip(values[:12].tolist(), pixels[:12].tolist()))
    if not counts.any():
        raise InputDataError(f"{path}: none of its values is listed in [classes]; values present: {present}")
    missing = ", ".join(f"'{name}' (values {listed})" for (name, listed), n in zip(class_values, counts) if n == 0)
    raise InputDataError(f"{path}: class {missing} has no pixel (values present: {present}); fix [classes]")


def _reference_from_raster(path: Path, dataset, class_values, grid: _Grid, target: Path) -> dict:
    """Map reference values to codes, then warp the codes onto the work grid (nearest or mode)."""
    from osgeo import gdal

    ref_grid = _grid_of(dataset, path)
    if not ref_grid.wkt and grid.wkt:
        raise InputDataError(f"{path}: the reference raster has no CRS; give it the CRS of its grid")
    ref_bounds = _transform_bounds(ref_grid.bounds, ref_grid.wkt, grid.wkt)
    if not _overlaps(ref_bounds, grid.bounds):
        raise InputDataError(f"{path}: the reference does not overlap the image/aoi work grid "
                             f"(reference {tuple(round(v, 2) for v in ref_bounds)}, work grid "
                             f"{tuple(round(v, 2) for v in grid.bounds)}, both in the image CRS)")
    codes = _raster_codes(path, dataset.GetRasterBand(1), class_values)
    _check_every_class_occurs(path, dataset.GetRasterBand(1), codes, class_values)
    area = (ref_bounds[2] - ref_bounds[0]) * (ref_bounds[3] - ref_bounds[1])
    ref_pixel = math.sqrt(area / (ref_grid.width * ref_grid.height))
    resampling = "nearest" if ref_pixel >= 0.99 * grid.geotransform[1] else "mode"
    memory = gdal.GetDriverByName("MEM").Create("", ref_grid.width, ref_grid.height, 1, gdal.GDT_Byte)
    memory.SetGeoTransform(ref_grid.geotransform)
    memory.SetProjection(ref_grid.wkt)
    memory.GetRasterBand(1).WriteArray(codes)
    del codes
    gdal.Warp(str(target), memory, format="GTiff", outputBounds=grid.bounds, width=grid.width,
              height=grid.height, dstSRS=grid.wkt or None, resampleAlg=resampling, dstNodata=UNLABELLED,
              outputType=gdal.GDT_Byte, creationOptions=["COMPRESS=DEFLATE", "TILED=YES"])
    return {"kind": "raster", "field": None, "resampling": resampling,
            "reference_pixel_in_image_crs": round(ref_pixel, 4)}


def _vector_bounds(path: Path, image_wkt: str, layers=None) -> tuple:
    """Union of the layer extents of a vector file, in the image CRS."""
    from osgeo import gdal

    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    try:
        dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    except RuntimeError as error:
        raise InputFileError(f"{path}: not a readable vector file ({_first_line(error)})") from None
    boxes = []
    for index in range(dataset.GetLayerCount()):
        layer = dataset.GetLayer(index)
        if (layers is not None and layer.GetName() not in layers) or layer.GetFeatureCount() == 0:
            continue
        xmin, xmax, ymin, ymax = layer.GetExtent()
        srs = layer.GetSpatialRef()
        boxes.append(_transform_bounds((xmin, ymin, xmax, ymax), srs.ExportToWkt() if srs else image_wkt, image_wkt))
    if not boxes:
        raise InputDataError(f"{path}: the vector file has no features")
    boxes = np.asarray(boxes)
    return (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))


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


def _vector_selections(path: Path, dataset, class_values: list, field) -> tuple:
    """Per class: (layer names, attribute filter or None); plus a description."""
    fields = _layer_fields(dataset)
    if field is None:
        if len(fields) < 2:
            listed = ", ".join(name for layer in fields.values() for name in layer) or "none"
            raise ConfigError(f"{path}: a single-layer vector reference needs reference_field "
                              f"(fields: {listed})")
        wanted = {str(v) for _, values in class_values for v in values}
        if not wanted <= set(fields):
            raise InputDataError(f"{path}: no layer named {', '.join(sorted(wanted - set(fields)))} "
                                 f"(layers: {', '.join(fields)}); without reference_field each layer "
                                 "name is a class value")
        return [([str(v) for v in values], None) for _, values in class_values], {"kind": "vector layers"}
    layers = [name for name, layer in fields.items() if field in layer]
    if not layers:
        listed = "; ".join(f"{name}: {', '.join(layer) or 'none'}" for name, layer in fields.items())
        raise ConfigError(f"{path}: no field {field!r} (fields of each layer: {listed}); set reference_field")
    is_string = fields[layers[0]][field]
    return _field_selections(path, dataset, class_values, field, layers, is_string)


def _field_selections(path, dataset, class_values, field, layers, is_string) -> tuple:
    """Per class (layers, where clause) for a reference field; InputDataError for values never found."""
    counts = _field_counts(dataset, layers, field)
    found = {(str(k) if is_string else k): n for k, n in counts.items() if k is not None}
    selections, absent = [], []
    for name, values in class_values:
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


def _reference_from_vector(path: Path, dataset, class_values, grid: _Grid, target: Path, field) -> dict:
    """Rasterize each class (pixel centres), count overlaps, write codes; 255 where none or several."""
    from osgeo import gdal

    selections, info = _vector_selections(path, dataset, class_values, field)
    used = sorted({name for layers, _ in selections for name in layers})
    bounds = _vector_bounds(path, grid.wkt, layers=used)
    if not _overlaps(bounds, grid.bounds):
        raise InputDataError(f"{path}: the reference does not overlap the image/aoi work grid "
                             f"(reference {tuple(round(v, 2) for v in bounds)}, work grid "
                             f"{tuple(round(v, 2) for v in grid.bounds)}, both in the image CRS)")
    labels = np.full((grid.height, grid.width), UNLABELLED, dtype=np.uint8)
    count = np.zeros((grid.height, grid.width), dtype=np.uint8)
    memory = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Byte)
    memory.SetGeoTransform(grid.geotransform)
    memory.SetProjection(grid.wkt)
    for code, (layers, where) in enumerate(selections):
        memory.GetRasterBand(1).Fill(0)
        gdal.Rasterize(memory, dataset, layers=layers, where=where, burnValues=[1], allTouched=False)
        covered = memory.GetRasterBand(1).ReadAsArray().astype(bool)
        count += covered
        labels[covered] = code
    labels[count != 1] = UNLABELLED
    _write_codes(target, labels, grid)
    return {**info, "field": field, "rasterize": "pixel centre (ALL_TOUCHED=FALSE); overlaps of classes -> 255",
            "overlap_pixels": int((count > 1).sum())}


def _write_codes(target: Path, labels: np.ndarray, grid: _Grid) -> None:
    from osgeo import gdal

    dataset = gdal.GetDriverByName("GTiff").Create(str(target), grid.width, grid.height, 1, gdal.GDT_Byte,
                                                   options=["COMPRESS=DEFLATE", "TILED=YES"])
    dataset.SetGeoTransform(grid.geotransform)
    dataset.SetProjection(grid.wkt)
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(UNLABELLED)
    band.WriteArray(labels)
    dataset = None
