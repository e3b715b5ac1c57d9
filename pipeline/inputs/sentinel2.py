"""Sentinel-2 products as one stack: band files found in a ``.SAFE`` folder, its ``.zip`` or a plain folder of
band files, their scaling to reflectance read from the product metadata, and the 10 m DN stack VRT.

Choices
-------
* Bands at 20 m or 60 m are warped onto the 10 m grid with **bilinear** resampling by a warped VRT
  (``gdal.Warp`` to VRT, source nodata 0). Bilinear upsampling gives smooth fields instead of the 2x2 (or 6x6)
  staircase blocks of nearest neighbour, which superpixels would otherwise follow as false edges; GDAL's warper
  leaves nodata (DN 0) out of the kernel, so the swath edge does not bleed into the valid pixels. Average gives
  the same blocks as nearest when upsampling.
* Reflectance = (DN + offset) / quantification, from ``MTD_MSIL1C.xml`` (``QUANTIFICATION_VALUE``,
  ``RADIO_ADD_OFFSET``) or ``MTD_MSIL2A.xml`` (``BOA_QUANTIFICATION_VALUE``, ``BOA_ADD_OFFSET``); offsets are used
  from processing baseline 04.00 (or when the baseline is unknown). Without the metadata file the fallback is
  quantification 10000 and offset 0, and the description says so.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from gdal_tif2rgb import open_raster
from pipeline.core.errors import error_text
from pipeline.core.errors import ConfigError, InputDataError, InputFileError
from pipeline.core.vocabulary import EXTRA_BANDS
from pipeline.inputs.georef import crs_name, north_up_grid, spatial_reference

#: Product band names in the order of the ``band_id`` attributes of the product metadata.
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: Bands of a product used for the roles the scene's [bands] table does not name.
DEFAULT_PRODUCT_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir": "B11"}
#: The further layers' bands (``vocabulary.EXTRA_BANDS``), taken by default where the product has their files.
EXTRA_PRODUCT_BANDS = dict(zip(EXTRA_BANDS, ("B05", "B06", "B07", "B8A", "B12")))
#: Fallback when a product has no metadata file: reflectance = DN / 10000.
FALLBACK_QUANTIFICATION = 10000.0
PRODUCT_RESAMPLING = "bilinear"
_BAND_FILE = re.compile(r"_(B(?:0[1-9]|1[0-2]|8A))(?:_(10|20|60)m)?\.jp2$", re.IGNORECASE)
_METADATA_FILES = ("MTD_MSIL1C.xml", "MTD_MSIL2A.xml")


def is_product(path) -> bool:
    """Whether ``path`` (a Path; GDAL virtual paths are str) is a product folder or zip rather than a raster."""
    return isinstance(path, Path) and (path.is_dir() or path.suffix.lower() == ".zip")


def _product_root(path: Path) -> str:
    """The folder GDAL lists: the product folder itself, or the zip as ``/vsizip/...``."""
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    return f"/vsizip/{path.resolve()}" if path.suffix.lower() == ".zip" else str(path.resolve())


def product_stack(path: Path, bands: dict, out_dir: Path):
    """Build the DN stack VRT of a product on the grid of its finest band (10 m).

    Parameters
    ----------
    path : ``.SAFE`` folder, its ``.zip``, or a folder of ``*_Bxx[_RRm].jp2`` band files
    bands : layer role -> product band name ("B02"); spectral roles left out take :data:`DEFAULT_PRODUCT_BANDS`,
        and those of :data:`EXTRA_PRODUCT_BANDS` whose band files the product has
    out_dir : folder for ``stack_dn.vrt`` and the warped VRTs of the coarser bands (made; GDAL writes them)

    Returns
    -------
    stack : Path of the stack VRT (DN, nodata 0), one band per product band used
    bands : layer role -> 1-based band number in the stack
    info : JSON-able description (files, metadata, scaling, resampling) for ``run.json``
    scaling : per stack band, (ratio, offset) with reflectance = DN * ratio + offset
    """
    from osgeo import gdal

    root = _product_root(path)
    try:
        listing = gdal.ReadDirRecursive(root) or []
    except RuntimeError as error:
        raise InputFileError(f"{path}: cannot list the product ({error_text(error)})") from None
    files = _band_files(root, listing)
    roles = _product_roles(path, bands)
    roles.update({role: name for role, name in EXTRA_PRODUCT_BANDS.items() if role not in roles and name in files})
    names = list(dict.fromkeys(roles.values()))
    missing = [f"{role}={name}" for role, name in roles.items() if name not in files]
    if missing:
        found = ", ".join(sorted(files)) or "none"
        raise InputDataError(f"{path}: no band file for {', '.join(missing)} (bands found: {found}); "
                             "add the band files or map the role to another band in [bands]")
    metadata = _read_metadata(path, root, listing)
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = _build_stack(path, [files[name] for name in names], names, out_dir)
    scaling = [(1.0 / metadata["quantification"],
                metadata["offsets"].get(name, 0.0) / metadata["quantification"]) for name in names]
    metadata["offsets"] = {name: metadata["offsets"].get(name, 0.0) for name in names}
    info = {"kind": "zip" if root.startswith("/vsizip/") else "folder", **metadata,
            "mask_file": _mask_file(listing, root), "acquired": metadata.pop("acquired", None) or _stamp_time(listing),
            "band_files": {name: files[name][0] for name in names}, "resampling": PRODUCT_RESAMPLING,
            "stack": str(stack), "reflectance": "(DN + offset) / quantification; DN 0 is nodata (NaN)"}
    return stack, {role: names.index(name) + 1 for role, name in roles.items()}, info, scaling


def _mask_file(listing, root: str) -> dict | None:
    """The product's own mask: an L2A scene classification layer (``*_SCL_20m.jp2``, else ``_60m``) or an L1C
    ``MSK_CLASSI_B00.jp2``, as {"kind": "scl" or "msk_classi", "path": ...}; None when it has neither."""
    found = {}
    for relative in listing:
        base = relative.rsplit("/", 1)[-1].upper()
        scl = re.search(r"_SCL_(20|60)M\.JP2$", base)
        if scl:
            found.setdefault(f"scl{scl.group(1)}", f"{root}/{relative}")
        elif base == "MSK_CLASSI_B00.JP2":
            found.setdefault("msk_classi", f"{root}/{relative}")
    for key, kind in (("scl20", "scl"), ("scl60", "scl"), ("msk_classi", "msk_classi")):
        if key in found:
            return {"kind": kind, "path": found[key]}
    return None


def _stamp_time(listing) -> str | None:
    """The sensing time in the band files' names (``..._20210527T113321_...``), ISO formatted, or None."""
    for relative in listing:
        stamp = re.search(r"_(\d{8})T(\d{6})", relative)
        if stamp:
            day, time = stamp.groups()
            return f"{day[:4]}-{day[4:6]}-{day[6:]}T{time[:2]}:{time[2:4]}:{time[4:]}"
    return None


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
            resolution = abs(open_raster(path).GetGeoTransform()[1])
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
        raise InputFileError(f"{name}: not a readable product metadata file ({error_text(error)})") from None
    return _parse_metadata(name, tree)


def _parse_metadata(name: str, tree) -> dict:
    """Values of a parsed MTD_MSIL1C.xml / MTD_MSIL2A.xml (namespaces ignored), each checked where it is read:
    a wrong one is a one-line error naming the file, the key and the value."""
    level2 = name.endswith("MTD_MSIL2A.xml")
    texts, offsets = {}, {}
    offset_tag = "BOA_ADD_OFFSET" if level2 else "RADIO_ADD_OFFSET"
    for element in tree.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "PROCESSING_BASELINE" and not (element.text or "").strip():
            raise InputDataError(f"{name}: PROCESSING_BASELINE is empty, not a baseline such as 04.00")
        if tag == offset_tag and element.get("band_id") is not None:
            band_id = element.get("band_id")
            if not band_id.isdigit() or int(band_id) >= len(S2_BANDS):
                raise InputDataError(f"{name}: {offset_tag} band_id = {band_id!r} is not a Sentinel-2 band (0-12)")
            offsets[S2_BANDS[int(band_id)]] = _number(name, offset_tag, element.text)
        elif element.text and element.text.strip():
            texts.setdefault(tag, element.text.strip())
    quant_tag = next((tag for tag in ("BOA_QUANTIFICATION_VALUE", "L2A_BOA_QUANTIFICATION_VALUE")
                      if tag in texts), None) if level2 else "QUANTIFICATION_VALUE"
    if quant_tag not in texts:
        raise InputDataError(f"{name}: no {'BOA_' if level2 else ''}QUANTIFICATION_VALUE in the metadata")
    quantification = _number(name, quant_tag, texts[quant_tag])
    if quantification <= 0:
        raise InputDataError(f"{name}: {quant_tag} = {texts[quant_tag]!r} must be above 0")
    baseline = texts.get("PROCESSING_BASELINE")
    use_offsets = baseline is None or _baseline(name, baseline) >= 4.0
    return {"metadata": name, "product_type": texts.get("PRODUCT_TYPE"), "processing_baseline": baseline,
            "acquired": texts.get("PRODUCT_START_TIME") or texts.get("DATATAKE_SENSING_START"),
            "quantification": quantification, "offsets": offsets if use_offsets else {},
            "scaling_source": f"{quant_tag} and {offset_tag if use_offsets else 'no offsets (baseline < 04.00)'}"}


def _number(name: str, tag: str, text) -> float:
    """The finite number in ``text`` of the metadata element ``tag``; anything else is a one-line error."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise InputDataError(f"{name}: {tag} = {text!r} is not a number")
    return value


def _baseline(name: str, text: str) -> float:
    """A processing baseline as a number: "04.00" and the product name's "N0400" both give 4.0."""
    match = re.fullmatch(r"N?(\d{2})\.?(\d{2})", text.strip())
    if not match:
        raise InputDataError(f"{name}: PROCESSING_BASELINE = {text!r} is not a baseline such as 04.00")
    return int(match.group(1)) + int(match.group(2)) / 100


def _build_stack(path: Path, files: list, names: list, out_dir: Path) -> Path:
    """VRT of the bands (DN, nodata 0) on the grid of the finest band; coarser bands warped bilinearly."""
    from osgeo import gdal

    datasets = [open_raster(file) for file, _ in files]
    grids = [north_up_grid(dataset, file) for dataset, (file, _) in zip(datasets, files)]
    finest = min(range(len(grids)), key=lambda i: grids[i].geotransform[1])
    target = grids[finest]
    for grid, (file, _), name in zip(grids, files, names):
        tolerance = 1e-3 * target.geotransform[1]
        same_crs = spatial_reference(grid.crs_wkt).IsSame(spatial_reference(target.crs_wkt))
        if not np.allclose(grid.bounds, target.bounds, rtol=0, atol=tolerance) or not same_crs:
            raise InputDataError(f"{path}: band {name} ({file}) covers {grid.bounds} {crs_name(grid.crs_wkt)}, "
                                 f"not the footprint {target.bounds} {crs_name(target.crs_wkt)} of band "
                                 f"{names[finest]}; the band files must come from one tile")
    sources = []
    for grid, (file, _), name in zip(grids, files, names):
        if grid.cols == target.cols and grid.rows == target.rows:
            sources.append(file)
            continue
        warped = str(out_dir / f"{name}_{target.geotransform[1]:g}m.vrt")
        gdal.Warp(warped, file, format="VRT", outputBounds=target.bounds, width=target.cols,
                  height=target.rows, resampleAlg=PRODUCT_RESAMPLING, srcNodata=0, dstNodata=0)
        sources.append(warped)
    stack = out_dir / "stack_dn.vrt"
    dataset = gdal.BuildVRT(str(stack), sources, separate=True, srcNodata=0, VRTNodata=0)
    for number, name in enumerate(names, start=1):
        dataset.GetRasterBand(number).SetDescription(name)
    dataset = None
    return stack
