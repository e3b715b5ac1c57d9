"""Raster I/O of the pipeline, and a small RGB-quicklook tool.

Every raster the steps read or write goes through this module (GDAL's other home is ``pipeline/inputs/``, which
prepares the sources): reading bands and windows, writing Cloud-Optimized GeoTIFFs with their class colour
tables and names. Every file appears whole or not at all
(:func:`~pipeline.core.atomic_files.atomic_output`). Of the pipeline it imports :mod:`pipeline.core` only.

Run as a script it writes an RGB PNG of any GeoTIFF::

    python gdal_tif2rgb.py scene.tif scene_rgb.png --bands 3 2 1
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from pipeline.core.atomic_files import atomic_output, new_file_beside
from pipeline.core.errors import (InputFileError, error_text, gdal_messages_mark, gdal_messages_since,
                                  keep_gdal_message, write_failure)
from pipeline.core.grids import Grid
from pipeline.core.geotiff_options import STAGING_IN_MEMORY_BYTES, compression_options, overview_factors
from pipeline.core.png import png_bytes
from pipeline.core.stretch import percentile_limits, rescale_to_unit, unit_to_byte


def pixel_area_m2(grid: Grid) -> float | None:
    """Area of one pixel of ``grid`` in square metres; None when the CRS is missing or not projected (degrees)."""
    from osgeo import osr

    crs = osr.SpatialReference(grid.crs_wkt) if grid.crs_wkt else None
    if crs is None or not crs.IsProjected():
        return None
    gt = grid.geotransform
    return abs(gt[1] * gt[5] - gt[2] * gt[4]) * crs.GetLinearUnits() ** 2


def open_raster(path):
    """Open a raster read-only (a path or a GDAL virtual path such as ``/vsizip/...``); InputFileError when it
    is missing or unreadable."""
    from osgeo import gdal

    use_gdal()
    virtual = str(path).startswith("/vsi")  # GDAL virtual file systems: /vsizip/, /vsicurl/, ...
    if not (gdal.VSIStatL(str(path)) is not None if virtual else Path(path).is_file()):
        raise InputFileError(f"{path}: file not found")
    try:
        dataset = gdal.Open(str(path))
    except RuntimeError as error:
        raise InputFileError(f"{path}: not a readable raster ({error_text(error)})") from None
    return dataset


def read_bands(path: Path, bands: list[int], dtype=np.float32, window: tuple | None = None
               ) -> tuple[np.ndarray, Grid, np.ndarray]:
    """Read 1-based ``bands`` of a raster, whole or a ``window`` (row, col, rows, cols) of it, as ``dtype``;
    None: the bands' own type where they are all integers of up to 16 bits (which float32 holds exactly, in
    half its bytes), else float32.

    Returns
    -------
    data : ndarray, shape (len(bands), rows, cols)
    grid : Grid
    valid : ndarray of bool, shape (rows, cols)
        False where any read band is NaN, infinite or equal to its nodata value.
    """
    from osgeo import gdal, gdal_array

    gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", "ALL_CPUS")  # parallel decoding; read when files open
    try:
        dataset = open_raster(path)
        count = dataset.RasterCount
        too_high = [b for b in bands if not 1 <= b <= count]
        if too_high:
            raise InputFileError(f"{path}: has {count} bands, but the configuration asks for band(s) {too_high}")
        grid = Grid.of(dataset)
        row, col, rows, cols = window or (0, 0, grid.rows, grid.cols)
        if dtype is None:
            types = [np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(dataset.GetRasterBand(b).DataType))
                     for b in bands]
            dtype = np.result_type(*types) if all(t.kind in "iu" and t.itemsize <= 2 for t in types) else np.float32
        data = np.empty((len(bands), rows, cols), dtype=dtype)
        dataset.ReadAsArray(col, row, cols, rows, buf_obj=data, band_list=list(bands))  # each block decoded once
    except RuntimeError as error:
        raise InputFileError(f"{path}: bands {list(bands)} cannot be read ({str(error).strip()})") from None
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
    valid = np.ones((rows, cols), dtype=bool)
    for i, number in enumerate(bands):
        nodata = dataset.GetRasterBand(number).GetNoDataValue()
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data[i])
        if nodata is not None and not np.isnan(nodata):
            valid &= data[i] != nodata
    return data, grid, valid


def read_layout(path: Path) -> tuple[Grid, int, np.dtype, dict]:
    """The :class:`Grid`, band count, pixel dtype (of band 1) and file-level metadata items of a raster, without
    reading its pixels."""
    from osgeo import gdal_array

    dataset = open_raster(path)
    grid = Grid.of(dataset)
    dtype = np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(dataset.GetRasterBand(1).DataType))
    return grid, dataset.RasterCount, dtype, dict(dataset.GetMetadata() or {})


def read_window(path: Path, n_bands: int, dtype, window: tuple | None = None,
                channels_last: bool = False) -> np.ndarray:
    """Bands 1..n_bands of a raster as ``dtype``, (n_bands, rows, cols), or (rows, cols, n_bands) read straight
    into that order if ``channels_last``; whole or a ``window`` (row, col, rows, cols)."""
    dataset = open_raster(path)
    row, col, rows, cols = window or (0, 0, dataset.RasterYSize, dataset.RasterXSize)
    data = np.empty((rows, cols, n_bands) if channels_last else (n_bands, rows, cols), dtype=dtype)
    for i in range(n_bands):
        try:
            dataset.GetRasterBand(i + 1).ReadAsArray(col, row, cols, rows, buf_obj=data[..., i] if channels_last
                                                     else data[i])
        except RuntimeError as error:
            raise InputFileError(f"{path}: band {i + 1} cannot be read ({str(error).strip()})") from None
    return data

def virtual_file_stat(path: str) -> tuple[int, int]:
    """Size (bytes) and modification time (ns) of a file GDAL reads through a virtual path (``/vsizip/...``)."""
    from osgeo import gdal

    stat = gdal.VSIStatL(path)
    if stat is None:
        raise FileNotFoundError(path)
    return stat.size, int(stat.mtime) * 10**9


def virtual_file_chunks(path: str, size: int):
    """The bytes of a file GDAL reads through a virtual path, in chunks of ``size`` bytes."""
    from osgeo import gdal

    handle = gdal.VSIFOpenL(path, "rb")
    try:
        while chunk := gdal.VSIFReadL(1, size, handle):
            yield chunk
    finally:
        gdal.VSIFCloseL(handle)


def use_gdal() -> None:
    """GDAL as the pipeline uses it: errors raise, messages are kept (``errors.keep_gdal_message``), never printed,
    nor is a dataset closing with an error after a failed write (Python's "Exception ignored"): the write's is."""
    from osgeo import gdal

    gdal.UseExceptions()
    if getattr(sys.unraisablehook, "__name__", "") != "_unless_a_dataset_closing":  # once a process
        gdal.SetConfigOption("CPL_LOG", os.devnull)  # what GDAL's own threads print (they bypass the handler)
        gdal.SetErrorHandler(keep_gdal_message)
        report = sys.unraisablehook

        def _unless_a_dataset_closing(unraisable):
            if getattr(unraisable.object, "__name__", "") != "delete_Dataset":
                report(unraisable)

        sys.unraisablehook = _unless_a_dataset_closing


def _gdal_call(path: Path, method, *args):
    """``method(*args)``: a GDAL call writing ``path``; its error becomes an OSError naming the file (ENOSPC when
    GDAL said so, or the disk is nearly full: :func:`~pipeline.core.errors.write_failure`), holding no reference to the dataset (not even
    through the traceback), so that the dataset closes where its writer drops it."""
    mark = gdal_messages_mark()
    try:
        return method(*args)
    except RuntimeError as error:
        said = [error_text(error), *gdal_messages_since(mark)]
    del method, args
    raise write_failure(path, said)


#: Band-1 metadata item prefix naming class values inside a class GeoTIFF: ``CLASS_0=urban``, ``CLASS_1=crop``...
CLASS_NAME_ITEM = "CLASS_"


@contextlib.contextmanager
def geotiff_writer(path: Path, grid: Grid, n_bands: int, dtype, *, band_names=None, nodata=None, scale=None,
                   class_names=None, class_colours=None, metadata=None, cloud_optimized: bool = True):
    """Yield ``write(array, row=0, col=0)``, which writes a (rows, cols) or (bands, rows, cols) block of a
    compressed Cloud-Optimized GeoTIFF on ``grid`` (a plain tiled one unless ``cloud_optimized``); the file
    appears at ``path`` only when the block exits cleanly. Blocks go to an uncompressed staging raster, in
    memory up to ``STAGING_IN_MEMORY_BYTES``, else a tiled GeoTIFF beside ``path``, given its overviews
    (``overview_factors``; nearest-neighbour for class and id rasters, average for float or scaled layers:
    built on the staging raster, half the CPU of the COG driver's own), which GDAL's COG driver then
    compresses into the final file (:mod:`pipeline.core.geotiff_options`); a staging file is removed in every
    case. ``scale``: the band scale of integer steps of a continuous value (value = stored * scale, as QGIS
    reads it). ``class_names`` and ``class_colours`` (RGB tuples indexed by class value) add a colour table and
    category names to band 1, which QGIS shows as a legend. GeoTIFF keeps category names only in the
    ``.aux.xml`` side file, so they are also written inside the file as band 1 metadata items
    ``CLASS_<value>=<name>`` (:func:`read_class_names` reads either). ``metadata`` (a dict of str) is stored as
    the file's own metadata items (:func:`read_layout`).
    """
    description = dict(band_names=band_names, nodata=nodata, scale=scale, class_names=class_names,
                       class_colours=class_colours, metadata=metadata)
    with _staged_geotiff(path, grid, n_bands, dtype, cloud_optimized, description) as dataset:
        yield lambda array, row=0, col=0: _write_block(path, dataset, array, row, col)


def write_geotiff(path: Path, data: np.ndarray, grid: Grid, *, cloud_optimized: bool = True, **description) -> None:
    """Write ``data`` of shape (rows, cols) or (bands, rows, cols) as a GeoTIFF (see :func:`geotiff_writer`);
    staged in memory, GDAL reads ``data`` where it lies (no copy)."""
    bands = data[np.newaxis] if data.ndim == 2 else data
    with _staged_geotiff(path, grid, len(bands), data.dtype, cloud_optimized, description, bands):
        pass


def _write_block(path: Path, dataset, array: np.ndarray, row: int, col: int) -> None:
    """Write a (rows, cols) or (bands, rows, cols) block into ``dataset`` at pixel ``row``, ``col``."""
    array = array[np.newaxis] if array.ndim == 2 else array
    for i in range(dataset.RasterCount):
        _gdal_call(path, dataset.GetRasterBand(i + 1).WriteArray, array[i], col, row)


@contextlib.contextmanager
def _staged_geotiff(path: Path, grid: Grid, n_bands: int, dtype, cloud_optimized: bool, description: dict,
                    data: np.ndarray | None = None):
    """Yield :func:`geotiff_writer`'s staging raster, described (band names, nodata, ...: ``description``) and
    holding ``data`` (bands, rows, cols) if given; give it overviews, then publish it as the file ``path`` when
    the block exits cleanly. Staged in memory, the raster is a numpy array (``data`` itself, else zeros) that
    GDAL reads and writes in place."""
    from osgeo import gdal_array

    use_gdal()
    path = Path(path)
    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(dtype))
    if gdal_type is None:
        raise TypeError(f"{path}: numpy dtype {np.dtype(dtype)} has no GDALDataType")
    is_float = np.dtype(dtype).kind == "f"
    continuous = is_float or description.get("scale") is not None
    in_memory = cloud_optimized and n_bands * grid.rows * grid.cols * np.dtype(dtype).itemsize <= \
        STAGING_IN_MEMORY_BYTES
    with atomic_output(path) as temporary, _staging_file(path, in_memory) as staging:
        if in_memory:  # ``pixels`` lives as long as the dataset over it
            pixels = np.zeros((n_bands, grid.rows, grid.cols), dtype) if data is None else _steppable(data)
            dataset = _gdal_call(path, _memory_raster, pixels)
        else:
            dataset = _gdal_call(path, *_creation(staging, grid, n_bands, gdal_type, is_float, continuous,
                                                  cloud_optimized))
        try:
            _describe_bands(dataset, grid, **description)
            if data is not None and not in_memory:
                _write_block(path, dataset, data, 0, 0)
            yield dataset
            if cloud_optimized:
                _gdal_call(path, dataset.BuildOverviews, "AVERAGE" if continuous else "NEAREST",
                           overview_factors((grid.rows, grid.cols)))
            _gdal_call(path, dataset.FlushCache)
            if in_memory:
                staging = dataset  # converted from memory below
        finally:
            dataset = None  # the last reference to a staging file's dataset: it closes here (see use_gdal)
        try:
            _publish(path, staging, temporary, cloud_optimized, is_float, continuous)
        finally:
            staging = None  # an in-memory staging raster is freed here


def _steppable(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (bands, rows, cols) itself if GDAL can step through its memory (strides > 0 where they count),
    else a C-ordered copy."""
    strides = pixels.strides[1:] if len(pixels) == 1 else pixels.strides
    return pixels if min(strides) > 0 else np.ascontiguousarray(pixels)


def _memory_raster(pixels: np.ndarray):
    """A GDAL in-memory raster over the memory of ``pixels`` (bands, rows, cols; see :func:`_steppable`), no
    copy: ``pixels`` must outlive it."""
    from osgeo import gdal, gdal_array

    n_bands, rows, cols = pixels.shape
    band_step, line_step, pixel_step = pixels.strides
    kind = gdal.GetDataTypeName(gdal_array.NumericTypeCodeToGDALTypeCode(pixels.dtype))
    name = (f"MEM:::DATAPOINTER={pixels.ctypes.data},PIXELS={cols},LINES={rows},BANDS={n_bands},DATATYPE={kind},"
            f"PIXELOFFSET={pixel_step},LINEOFFSET={line_step},BANDOFFSET={band_step}")
    allowed = gdal.GetThreadLocalConfigOption("GDAL_MEM_ENABLE_OPEN", None)
    gdal.SetThreadLocalConfigOption("GDAL_MEM_ENABLE_OPEN", "YES")  # GDAL 3.10 and newer ask for it
    try:
        return gdal.OpenEx(name, gdal.OF_RASTER | gdal.OF_UPDATE)
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_MEM_ENABLE_OPEN", allowed)


def _publish(path: Path, staging, temporary: Path, cloud_optimized: bool, is_float: bool, continuous: bool) -> None:
    """Make the staged raster (a file's path, or an in-memory dataset) the file ``temporary``, converted to a
    COG or moved, and move its ``.aux.xml`` side file, if any, beside ``path``."""
    try:
        if cloud_optimized:
            _gdal_call(path, _translate_to_cog, staging, temporary, is_float, continuous)
        else:
            os.replace(staging, temporary)
            _gdal_call(path, _check_complete, temporary)  # its last writes happened as it closed
    except BaseException:
        _remove_sidecar(temporary)
        raise
    sidecar = Path(f"{temporary}.aux.xml")  # GDAL keeps category names in this side file
    if sidecar.exists():
        os.replace(sidecar, f"{path}.aux.xml")


def _creation(staging: Path, grid: Grid, n_bands: int, gdal_type: int, is_float: bool, continuous: bool,
              cloud_optimized: bool) -> tuple:
    """GDAL's ``Create`` and its arguments for :func:`geotiff_writer`'s staging file: a tiled GeoTIFF at
    ``staging``, uncompressed for a COG (the COG driver compresses once, as it copies), else compressed."""
    from osgeo import gdal

    compression = [f"{key}={value}" for key, value in compression_options(is_float, continuous, "GTiff").items()]
    options = ["TILED=YES", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS",
               *(["COMPRESS=NONE"] if cloud_optimized else compression)]
    return gdal.GetDriverByName("GTiff").Create, str(staging), grid.cols, grid.rows, n_bands, gdal_type, options


@contextlib.contextmanager
def _staging_file(path: Path, in_memory: bool = False):
    """Yield a fresh temporary .tif path beside ``path`` (None if the raster is staged ``in_memory``); remove it
    and its side file on exit, whatever happens."""
    if in_memory:
        yield None
        return
    staging = new_file_beside(path, "staging.tif")
    try:
        yield staging
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staging)
        _remove_sidecar(staging)


def _remove_sidecar(path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(f"{path}.aux.xml")


def _describe_bands(dataset, grid: Grid, band_names=None, nodata=None, scale=None, class_names=None,
                    class_colours=None, metadata=None) -> None:
    """Set the grid, band names, nodata, scale, colour table, class names and file metadata of a new GeoTIFF."""
    from osgeo import gdal

    dataset.SetGeoTransform(grid.geotransform)
    dataset.SetProjection(grid.crs_wkt)
    for i in range(dataset.RasterCount):
        band = dataset.GetRasterBand(i + 1)
        if band_names is not None:
            band.SetDescription(band_names[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if scale is not None:
            band.SetScale(scale)
            band.SetOffset(0.0)
    if class_colours is not None:
        table = gdal.ColorTable()
        for value, colour in enumerate(class_colours):
            table.SetColorEntry(value, (*colour, 255))
        dataset.GetRasterBand(1).SetRasterColorTable(table)
        dataset.GetRasterBand(1).SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    if class_names is not None:
        dataset.GetRasterBand(1).SetCategoryNames(list(class_names))
        for value, name in enumerate(class_names):
            dataset.GetRasterBand(1).SetMetadataItem(f"{CLASS_NAME_ITEM}{value}", str(name))
    for key, value in (metadata or {}).items():
        dataset.SetMetadataItem(key, str(value))


def _translate_to_cog(source, target: Path, is_float: bool, continuous: bool) -> None:
    """Convert a raster (a GeoTIFF's path, or an open GDAL dataset) with its overviews (see
    :func:`geotiff_writer`) to a Cloud-Optimized GeoTIFF, compressed as :func:`geotiff_writer`'s."""
    from osgeo import gdal

    compression = [f"{key}={value}" for key, value in compression_options(is_float, continuous, "COG").items()]
    options = [*compression, "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS",
               "OVERVIEWS=FORCE_USE_EXISTING"]
    source = str(source) if isinstance(source, Path) else source
    result = gdal.Translate(str(target), source, format="COG", creationOptions=options)
    if result is None:
        raise InputFileError(f"{target}: GDAL could not write the Cloud-Optimized GeoTIFF")
    result.FlushCache()
    result = None
    _check_complete(target)


def _check_complete(path: Path) -> None:
    """RuntimeError unless the GeoTIFF at ``path`` holds all of its last band's blocks: GDAL's COG driver may
    meet a failed write (a full disk, a file size limit) without raising, leaving a file cut short."""
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(dataset.RasterCount)
    width, height = band.GetBlockSize()
    blocks = [(x, y) for y in range(-(-dataset.RasterYSize // height)) for x in range(-(-dataset.RasterXSize // width))]
    end = max(int(band.GetMetadataItem(f"BLOCK_OFFSET_{x}_{y}", "TIFF") or 0) +
              int(band.GetMetadataItem(f"BLOCK_SIZE_{x}_{y}", "TIFF") or 0) for x, y in blocks)
    size = os.path.getsize(path)
    if end > size:
        raise RuntimeError(f"it was cut short at byte {size} of {end}: a full disk or a file size limit?")


def read_class_names(path: Path) -> list[str]:
    """Class names of a class GeoTIFF, from its band 1 ``CLASS_<value>`` metadata or, failing that, from
    the category names GDAL reads from its ``.aux.xml`` side file; [] when it has neither."""
    dataset = open_raster(path)  # held: a band outlives no dataset
    band = dataset.GetRasterBand(1)
    items = band.GetMetadata() or {}
    values = sorted(int(key[len(CLASS_NAME_ITEM):]) for key in items
                    if key.startswith(CLASS_NAME_ITEM) and key[len(CLASS_NAME_ITEM):].isdigit())
    if values:
        return [items.get(f"{CLASS_NAME_ITEM}{value}", "") for value in range(values[-1] + 1)]
    return list(band.GetCategoryNames() or [])


def tif_to_rgb(source: Path, target: Path, bands=(3, 2, 1), low: float = 2.0, high: float = 98.0) -> None:
    """Write an RGB PNG of three 1-based ``bands`` of a raster, each stretched between percentiles."""
    data, _, valid = read_bands(source, list(bands))
    image = unit_to_byte(np.stack([rescale_to_unit(band, *percentile_limits(band, valid, low, high)) for band in data],
                             axis=-1))
    image[~valid] = 0
    with atomic_output(target) as temporary:
        temporary.write_bytes(png_bytes(image))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write an RGB PNG of three bands of any GeoTIFF.")
    parser.add_argument("source", type=Path, help="input raster (any GDAL format)")
    parser.add_argument("target", type=Path, help="output PNG")
    parser.add_argument("--bands", type=int, nargs=3, default=(3, 2, 1), metavar=("R", "G", "B"),
                        help="1-based band numbers shown as red, green, blue (default: 3 2 1)")
    parser.add_argument("--percentiles", type=float, nargs=2, default=(2.0, 98.0), metavar=("LOW", "HIGH"),
                        help="stretch limits in percent (default: 2 98)")
    args = parser.parse_args(argv)
    try:
        tif_to_rgb(args.source, args.target, args.bands, *args.percentiles)
    except InputFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
