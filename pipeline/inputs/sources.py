"""Turn the files users have into inputs on one work grid: the image to read, band numbers and reference codes.

The image may be an ordinary raster, tiles of one (a glob pattern, mosaicked by :mod:`pipeline.inputs.mosaic`), a Sentinel-2
``.SAFE`` folder, its ``.zip`` or a plain folder of band files named as in a product (:mod:`pipeline.inputs.sentinel2`);
several dates are a list of these. The work grid is the image's grid, cut to the ``aoi`` when
one is given. The reference may be a raster on any grid or a vector file (:mod:`pipeline.inputs.reference`). GDAL does
all geometry (VRT, warp, rasterize); these modules only map values and check what the user gave.

The prepared image of a product is a Float32 VRT of reflectance (ComplexSource ScaleRatio/ScaleOffset) whose
nodata is NaN; an ordinary raster cut to an aoi is a VRT of its window; tiles are a VRT mosaic (``mosaic.vrt``).
These are written by GDAL into the folder given to :func:`prepare_image`; Step 0 gives :data:`FOLDER` of its output
set's staging folder, so they appear with Step 0's other outputs or not at all. Nothing is written for the
reference: its codes stay in memory.
"""
from __future__ import annotations

import dataclasses
import glob
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from gdal_tif2rgb import Grid, open_raster, use_gdal
from pipeline.inputs import clouds, composite, mosaic, sentinel2
from pipeline.core.vocabulary import UNLABELLED
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.inputs.georef import (as_path, crs_name, describe, north_up_grid, overlaps, same_grid, spatial_reference,
                             transform_bounds, vector_bounds)
from pipeline.inputs.reference import reference_codes
from pipeline.run.config import Tiles

#: Folder of the work folder that holds the image VRTs Step 0 prepared (image.vrt, stack_dn.vrt, ...).
FOLDER = "sources"
#: Unit of the values of an image prepared from a Sentinel-2 product.
REFLECTANCE = "reflectance"


@dataclass(frozen=True)
class PreparedSources:
    """The inputs of a scene on its work grid.

    Attributes
    ----------
    image : the raster to read: the user's raster, or the prepared VRT ``sources/image.vrt`` (``mosaic.vrt`` of
        tiles), or a composite's ``image.tif``
    bands : layer role -> 1-based band number of ``image``
    grid : the work grid (the grid of ``image``)
    unit : unit of the image values: "reflectance" for a Sentinel-2 product, "raster values (<GDAL data types of
        the bands used>)" for an ordinary raster; stretch limits are in this unit
    reference_codes : None (no reference), or uint8 class codes of shape (grid.rows, grid.cols), 255 = unlabelled
    sources : JSON-able description of what was used, for ``run.json``
    clear_observations : None (one date, no mask), or the clear dates of every pixel, uint8 (rows, cols)
    """

    image: Path | str
    bands: dict
    grid: Grid
    unit: str
    reference_codes: np.ndarray | None
    sources: dict
    clear_observations: np.ndarray | None = None

    def read_image(self, window: tuple | None = None) -> tuple[dict, np.ndarray]:
        """The bands of the image, whole or a ``window`` (row, col, rows, cols): layer name -> array (rows,
        cols) in ``unit``, of the bands' own type if integers of up to 16 bits, else float32
        (``gdal_tif2rgb.read_bands``), and the valid mask (False at NaN or nodata pixels of any read band)."""
        names = list(self.bands)
        data, _, valid = gdal_tif2rgb.read_bands(self.image, [self.bands[n] for n in names], None, window)
        return dict(zip(names, data)), valid

    @staticmethod
    def codes_where_valid(codes: np.ndarray | None, valid: np.ndarray) -> np.ndarray:
        """A copy of the class codes ``codes`` (uint8, of the work grid or a tile of it; None without a
        reference) with 255 where the image is not ``valid`` (bool, same shape); all 255 for a scene without a
        reference (one to map with a trained model)."""
        if codes is None:
            return np.full(valid.shape, UNLABELLED, dtype=np.uint8)
        codes = codes.copy()
        codes[~valid] = UNLABELLED
        return codes


@dataclass(frozen=True)
class Masking:
    """How each date is masked (:mod:`pipeline.inputs.clouds`): ``enabled``, the SCL ``classes`` to mask, the buffer in
    metres around clouds and shadows, and the scene's mask ``raster`` (None: none) with its masked values."""

    enabled: bool = False
    classes: tuple = ()
    buffer_m: float = 0.0
    raster: Path | str | None = None
    raster_values: tuple = ()


def prepare_sources(images, bands: dict, reference: Path | None, classes: dict, out_dir: Path, *,
                    aoi=None, reference_field: str | None = None, masking: Masking = Masking(),
                    run_windows=None) -> PreparedSources:
    """Prepare the image (one date or several) and the reference of a scene on one work grid: the image as
    :func:`prepare_image` does it, then the ``reference`` (raster or vector file of reference labels, or None)
    as :func:`add_reference` does it, with the ``classes`` and ``reference_field`` described there."""
    image = prepare_image(images, bands, out_dir, aoi=aoi, masking=masking, run_windows=run_windows)
    return add_reference(image, reference, classes, reference_field)


def prepare_image(images, bands: dict, out_dir: Path, *, aoi=None, masking: Masking = Masking(),
                  run_windows=None) -> PreparedSources:
    """Prepare the image (one date or several) of a scene on its work grid; no reference codes yet.

    Parameters
    ----------
    images : tuple of dates, each a raster file, :class:`pipeline.run.config.Tiles` of rasters, Sentinel-2 ``.SAFE``
        folder, its ``.zip``, or a folder of ``*_Bxx[_RRm].jp2`` files; the first one's grid (cut to the ``aoi``)
        is the work grid
    bands : layer role -> 1-based band number or band description (rasters) or band name "B02" (products)
    out_dir : folder for the prepared VRTs (made when one is written) and a composite's ``image.tif``
    aoi : None, {"bbox": [xmin, ymin, xmax, ymax], "crs": "EPSG:4326"} (crs defaults to the image's CRS)
        or a vector file whose extent (reprojected to the image CRS) is used
    masking : how dates are masked; with masks or several dates the image is their composite
    run_windows : ``run_windows(function, argument tuples)`` -> results in order; default: in this process

    Returns
    -------
    PreparedSources
    """
    use_gdal()
    images = tuple(images) if isinstance(images, (list, tuple)) else (images,)
    out_dir = Path(out_dir)
    first = _date_stack(_as_input(images[0]), bands, out_dir)
    full = north_up_grid(open_raster(first["stack"]), first["stack"])
    window, aoi_info = _aoi_window(full, aoi, first["source"])
    grid = full.subgrid(window)
    scene_mask = None
    if masking.enabled and masking.raster is not None:
        scene_mask = clouds.MaskSource("raster", clouds.mask_on_work_grid(str(masking.raster), grid,
                                                                          out_dir / "mask_raster.vrt"),
                                       masking.raster_values)
        clouds.check_mask_values(masking.raster, scene_mask, grid, composite.COMPOSITE_WINDOW)
    stacks = [first]
    dates = [_date_on_work_grid(first, full, window, grid, out_dir, masking, scene_mask)]
    for number, image in enumerate(images[1:], start=2):
        date = _date_stack(_as_input(image), bands, out_dir / f"date_{number}")
        stacks.append(date)
        if date["unit"] != first["unit"] or set(date["bands"]) != set(first["bands"]):
            raise InputDataError(f"{image}: its bands ({date['unit']}: {', '.join(date['bands'])}) cannot be stacked "
                                 f"with those of {images[0]} ({first['unit']}: {', '.join(first['bands'])})")
        date_grid = north_up_grid(open_raster(date["stack"]), date["stack"])
        dates.append(_date_on_work_grid(date, date_grid, (0, 0, date_grid.rows, date_grid.cols), grid,
                                        out_dir / f"date_{number}", masking, scene_mask))
    info = {**first["info"], "image": str(images[0]), "aoi": aoi_info, "work_grid": describe(grid),
            "unit": first["unit"]}
    image, band_map, clear = dates[0].image, dates[0].bands, None
    if len(dates) > 1 or dates[0].masks:
        image, band_map, clear = _clear_image(dates, list(first["bands"]), grid, out_dir / "image.tif",
                                              clouds.buffer_radius_px(masking.buffer_m, grid),
                                              run_windows or _in_process, info)
        for described, stack in zip(info["dates"], stacks):
            if "tiles" in stack["info"]:
                described["tiles"] = stack["info"]["tiles"]
    info["prepared_image"], info["prepared_bands"] = str(image), dict(band_map)
    return PreparedSources(image=image, bands=band_map, grid=grid, unit=first["unit"], reference_codes=None,
                           sources=info, clear_observations=clear)


def add_reference(image: PreparedSources, reference: Path | None, classes: dict,
                  reference_field: str | None = None) -> PreparedSources:
    """``image`` (from :func:`prepare_image`) with the class codes of the ``reference`` on its work grid, resampled
    or rasterized (:func:`pipeline.inputs.reference.reference_codes`; None: no reference, no codes), and both described
    in its ``sources``. ``classes`` maps ordered class names to lists of reference values (as checked by
    :mod:`pipeline.run.config`), the order giving the codes 0..K-1; ``reference_field`` is the attribute of a vector
    reference holding those values."""
    codes, described = None, None
    if reference is not None:
        codes, described = reference_codes(as_path(reference), classes, image.grid, reference_field)
    info = {**image.sources, "reference": described, "classes": {name: list(values) for name, values in classes.items()}}
    return dataclasses.replace(image, reference_codes=codes, sources=info)


def _clear_image(dates: list, roles: list, grid: Grid, target: Path, buffer_px: int, run_windows, info: dict):
    """The composite of the masked ``dates`` at ``target`` (see :func:`pipeline.inputs.composite.write_composite`): its
    path, band numbers and clear dates per pixel; what each date lost, by cause, goes into ``info``."""
    clear, masked = composite.write_composite(tuple(dates), roles, grid, target, buffer_px, run_windows)
    info["dates"] = [{"source": date.source, "acquired": date.acquired, "masks": [source.kind for source in date.masks],
                      "masked_share": {cause: round(n / clear.size, 6) for cause, n in counts.items() if n}}
                     for date, counts in zip(dates, masked)]
    info["composite"] = "median of the clear observations" if len(dates) > 1 else "one date, masked"
    info["no_clear_date_share"] = round(float((clear == 0).mean()), 6)
    return target, {role: i + 1 for i, role in enumerate(roles)}, clear


def files_of(path) -> list:
    """The files an input is made of: itself, the tiles of :class:`pipeline.run.config.Tiles`, and for a Shapefile its
    side files (``.dbf``, ``.shx``, ``.prj``...)."""
    if isinstance(path, Tiles):
        return list(path.files)
    path = as_path(path)
    if isinstance(path, Path) and path.suffix.lower() == ".shp":
        return [path, *sorted(p for p in path.parent.glob(f"{glob.escape(path.stem)}.*") if p != path)]
    return [path]


def _in_process(function, argument_tuples):
    return (function(*arguments) for arguments in argument_tuples)


def _as_input(image):
    """A date as :func:`_date_stack` takes it: tiles as they are, paths as :func:`pipeline.inputs.georef.as_path`."""
    return image if isinstance(image, Tiles) else as_path(image)


def _date_stack(image, bands: dict, out_dir: Path) -> dict:
    """One date's stack on its own grid: ``stack`` (path), ``bands`` (role -> band), ``scaling`` (products:
    (ratio, offset) per band, else None), ``unit``, ``info`` and ``product`` (whether it is a product). Tiles are
    mosaicked into ``out_dir`` first; their bands are those of the first tile (every tile has the same)."""
    if isinstance(image, Tiles):
        stack = mosaic.build_mosaic(image, out_dir / "mosaic.vrt")
        band_map = _raster_bands(image.files[0], bands)
        return {"stack": stack, "bands": band_map, "scaling": None, "unit": _raster_unit(stack, band_map),
                "info": {"kind": "raster", "tiles": [str(tile) for tile in image.files]}, "product": False,
                "source": image}
    if sentinel2.is_product(image):
        stack, band_map, info, scaling = sentinel2.product_stack(image, bands, out_dir)
        return {"stack": stack, "bands": band_map, "scaling": scaling, "unit": REFLECTANCE, "info": info,
                "product": True, "source": image}
    band_map = _raster_bands(image, bands)
    return {"stack": image, "bands": band_map, "scaling": None, "unit": _raster_unit(image, band_map),
            "info": {"kind": "raster"}, "product": False, "source": image}


def _date_on_work_grid(date: dict, own: Grid, window: tuple, grid: Grid, out_dir: Path, masking: Masking,
                       scene_mask) -> composite.Date:
    """A :class:`pipeline.inputs.composite.Date` whose image is ``date``'s bands on the work ``grid``: its own grid
    ``own`` cut to ``window`` (the first date), or warped onto the work grid (later dates of other grids), and
    its masks: the product's own (or the detector) and ``scene_mask`` (a MaskSource of the scene's mask raster,
    or None)."""
    from osgeo import gdal

    image = _finish_image(date["stack"], own, window, date["scaling"], out_dir)
    if not same_grid(own.subgrid(window), grid):
        bounds = transform_bounds(own.bounds, own.crs_wkt, grid.crs_wkt, date['source'])
        if not overlaps(bounds, grid.bounds):
            raise InputDataError(f"{date['source']}: covers {tuple(round(v) for v in bounds)}, which does not overlap "
                                 f"the work grid {tuple(round(v) for v in grid.bounds)} of the first date: another "
                                 f"area (tiles of one date are given as one glob pattern, e.g. image = "
                                 f"\"tiles/*.tif\")")
        out_dir.mkdir(parents=True, exist_ok=True)
        warped = out_dir / "on_work_grid.vrt"
        gdal.Warp(str(warped), str(image), format="VRT", outputBounds=grid.bounds, width=grid.cols,
                  height=grid.rows, dstSRS=grid.crs_wkt or None, resampleAlg="bilinear", outputType=gdal.GDT_Float32,
                  dstNodata=float("nan"))
        image = warped
    masks = [scene_mask] if scene_mask is not None else []
    if masking.enabled and date["product"]:
        own_mask = date["info"].get("mask_file")
        if own_mask is None:
            masks.append(clouds.detector(grid))
        else:
            values = masking.classes if own_mask["kind"] == "scl" else (1, 2, *((3,) if 11 in masking.classes else ()))
            masks.append(clouds.MaskSource(own_mask["kind"], clouds.mask_on_work_grid(own_mask["path"], grid,
                                                                                      out_dir / "mask.vrt"), values))
    return composite.Date(source=str(date["source"]), image=image, bands=date["bands"], masks=tuple(masks),
                          acquired=date["info"].get("acquired"))


def _raster_bands(path: Path, bands: dict) -> dict:
    """Role -> 1-based band number of an ordinary raster; strings are band descriptions."""
    dataset = open_raster(path)
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


def _raster_unit(path, bands: dict) -> str:
    """The unit of an ordinary raster's values: "raster values (UInt16)", with the GDAL data types of the bands
    used (all bands when none is named), each once in band order, e.g. "raster values (UInt16, Float32)"."""
    from osgeo import gdal

    dataset = open_raster(path)
    numbers = sorted(set(bands.values())) or range(1, dataset.RasterCount + 1)
    types = [gdal.GetDataTypeName(dataset.GetRasterBand(number).DataType) for number in numbers]
    return f"raster values ({', '.join(dict.fromkeys(types))})"


def _finish_image(stack, full: Grid, window: tuple, scaling, out_dir: Path):
    """The prepared image: the user's raster, or a VRT in ``out_dir`` cut to the ``window`` (row, col, rows, cols)
    and/or scaled to reflectance by ``scaling``, (ratio, offset) per band."""
    from osgeo import gdal

    row, col, rows, cols = window
    if scaling is None and window == (0, 0, full.rows, full.cols):
        return as_path(stack)
    options = {"format": "VRT", "srcWin": [col, row, cols, rows]}  # GDAL's order: x offset, y offset, sizes
    if scaling is not None:
        dataset = gdal.Open(str(stack), gdal.GA_Update)
        for number, (ratio, offset) in enumerate(scaling, start=1):
            dataset.GetRasterBand(number).SetScale(ratio)
            dataset.GetRasterBand(number).SetOffset(offset)
        dataset = None
        options.update(outputType=gdal.GDT_Float32, unscale=True, noData="nan")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "image.vrt"
    gdal.Translate(str(target), str(stack), **options)
    return target


def _aoi_window(grid: Grid, aoi, image: Path) -> tuple:
    """The window (row, col, rows, cols) of the image grid cut to the aoi, snapped outwards to whole pixels, and
    a JSON-able description of the aoi (None without one)."""
    if aoi is None:
        return (0, 0, grid.rows, grid.cols), None
    bounds, info = _aoi_bounds(aoi, grid.crs_wkt)
    x0, dx, _, y0, _, dy = grid.geotransform
    eps = 1e-6
    col0 = max(0, math.floor((bounds[0] - x0) / dx + eps))
    col1 = min(grid.cols, math.ceil((bounds[2] - x0) / dx - eps))
    row0 = max(0, math.floor((bounds[3] - y0) / dy + eps))
    row1 = min(grid.rows, math.ceil((bounds[1] - y0) / dy - eps))
    if col1 <= col0 or row1 <= row0:
        raise InputDataError(f"{image}: the aoi {info} does not overlap the image "
                             f"(image bounds {tuple(round(v, 2) for v in grid.bounds)}, "
                             f"aoi in image CRS {tuple(round(v, 2) for v in bounds)})")
    info["window"] = [col0, row0, col1 - col0, row1 - row0]  # run.json keeps GDAL's srcWin order, as before
    return (row0, col0, row1 - row0, col1 - col0), info


def _aoi_bounds(aoi, image_wkt: str) -> tuple:
    """Aoi bounds in the image CRS and a JSON-able description of the aoi."""
    if isinstance(aoi, dict):
        bbox = aoi.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox) \
                or not bbox[0] < bbox[2] or not bbox[1] < bbox[3]:
            raise ConfigError(f"aoi bbox {bbox!r} must be [xmin, ymin, xmax, ymax], finite numbers with xmin < xmax "
                              f"and ymin < ymax")
        crs = aoi.get("crs")
        if crs is not None and not (isinstance(crs, str) and crs.strip()):
            raise ConfigError(f"aoi crs = {crs!r} must be text such as \"EPSG:4326\"")
        if crs and not image_wkt:
            raise InputDataError(f"aoi crs {crs} is given but the image has no CRS; give the bbox in the "
                                 "image's own coordinates and leave out 'crs'")
        try:
            src_wkt = spatial_reference(crs).ExportToWkt() if crs else image_wkt
        except RuntimeError:
            raise ConfigError(f"aoi crs {crs!r} is not a CRS GDAL knows (e.g. 'EPSG:4326')") from None
        bounds = transform_bounds([float(v) for v in bbox], src_wkt, image_wkt, "aoi bbox")
        return bounds, {"bbox": [float(v) for v in bbox], "crs": crs or crs_name(image_wkt)}
    if isinstance(aoi, (str, Path)):
        return vector_bounds(Path(aoi), image_wkt), {"file": str(aoi)}
    raise ConfigError(f"aoi {aoi!r} must be a {{'bbox': [...], 'crs': ...}} table or a vector file path")
