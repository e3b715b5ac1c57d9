"""Shared raster and colour helpers of the pipeline, and a small RGB-quicklook tool.

Every raster, colour table, QGIS style and PNG the steps read or write goes through this module, so GDAL
and colour code live in one place (the ``.mat`` hand-offs have theirs, ``pipeline/handoffs/matfile.py``). Every
writer goes through :func:`atomic_output`: the file is written under a temporary name in its own folder and
renamed when complete, so an interrupted run never leaves a half-written file that a later step would read.

Run as a script it writes an RGB PNG of any GeoTIFF::

    python gdal_tif2rgb.py scene.tif scene_rgb.png --bands 3 2 1
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import struct
import sys
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The tutorial's class colours (RGB, 0-255), keyed by class name.
CLASS_COLOURS = {
    "urban": (255, 248, 18),
    "crop": (255, 119, 88),
    "vegetation": (11, 131, 20),
    "water": (31, 59, 255),
}
#: Colours for class names the tutorial does not have, taken in turn.
EXTRA_COLOURS = ((148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (23, 190, 207),
                 (188, 189, 34), (214, 39, 40), (44, 160, 44), (255, 187, 120), (174, 199, 232),
                 (152, 223, 138), (196, 156, 148), (219, 219, 141), (158, 218, 229), (247, 182, 210),
                 (99, 99, 99), (57, 59, 121), (132, 60, 57), (123, 65, 115), (82, 84, 163))


class InputFileError(OSError):
    """A raster or ``.mat`` file is missing, unreadable, or not what it should be (one-line message)."""


@dataclass(frozen=True)
class Grid:
    """The pixel grid of a raster: size in pixels, GDAL geotransform and CRS as WKT."""

    rows: int
    cols: int
    geotransform: tuple
    crs_wkt: str

    @classmethod
    def of(cls, dataset) -> "Grid":
        """The grid of an open GDAL dataset."""
        return cls(dataset.RasterYSize, dataset.RasterXSize, tuple(dataset.GetGeoTransform()), dataset.GetProjection())

    @property
    def bounds(self) -> tuple:
        """(xmin, ymin, xmax, ymax) of a north-up grid, in its CRS units.

        >>> Grid(2, 3, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "").bounds
        (100.0, 480.0, 130.0, 500.0)
        """
        x0, dx, _, y0, _, dy = self.geotransform
        xs, ys = (x0, x0 + dx * self.cols), (y0, y0 + dy * self.rows)
        return min(xs), min(ys), max(xs), max(ys)

    def subgrid(self, window: tuple) -> "Grid":
        """The grid of a ``window`` (row, col, rows, cols) of this grid, in pixels.

        >>> Grid(5, 5, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "").subgrid((1, 2, 3, 2)).geotransform
        (120.0, 10.0, 0.0, 490.0, 0.0, -10.0)
        """
        row, col, rows, cols = window
        x0, dx, rx, y0, ry, dy = self.geotransform
        return Grid(rows, cols, (x0 + col * dx, dx, rx, y0 + row * dy, ry, dy), self.crs_wkt)

    def xy(self, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """Map x, y (CRS units) of the centres of the pixels at ``rows``, ``cols`` (arrays of pixel indices).

        >>> Grid(5, 5, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "").xy(np.array([0, 2]), np.array([1, 4]))
        (array([115., 145.]), array([495., 475.]))
        """
        x0, dx, rx, y0, ry, dy = self.geotransform
        rows, cols = np.asarray(rows) + 0.5, np.asarray(cols) + 0.5
        return x0 + cols * dx + rows * rx, y0 + cols * ry + rows * dy

    def rowcol(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (int64, possibly off the grid) of the pixels holding map points ``x``, ``y`` (CRS units):
        the inverse of :meth:`xy`.

        >>> grid = Grid(5, 5, (100.0, 10.0, 0.0, 500.0, 0.0, -10.0), "")
        >>> grid.rowcol(np.array([115.0, 99.0]), np.array([475.0, 495.0]))
        (array([2, 0]), array([ 1, -1]))
        """
        x0, dx, rx, y0, ry, dy = self.geotransform
        det = dx * dy - rx * ry
        cols = np.floor(((x - x0) * dy - (y - y0) * rx) / det).astype(np.int64)
        rows = np.floor(((y - y0) * dx - (x - x0) * ry) / det).astype(np.int64)
        return rows, cols

    def pixel_area_m2(self) -> float | None:
        """Area of one pixel in square metres; None when the CRS is missing or not projected (degrees)."""
        from osgeo import osr

        crs = osr.SpatialReference(self.crs_wkt) if self.crs_wkt else None
        if crs is None or not crs.IsProjected():
            return None
        gt = self.geotransform
        return abs(gt[1] * gt[5] - gt[2] * gt[4]) * crs.GetLinearUnits() ** 2


def error_text(error: Exception) -> str:
    """The first line of a GDAL error, for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else "GDAL cannot open it"


def open_raster(path):
    """Open a raster read-only (a path or a GDAL virtual path such as ``/vsizip/...``); InputFileError when it
    is missing or unreadable."""
    from osgeo import gdal

    gdal.UseExceptions()
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


def read_window(path: Path, n_bands: int, dtype, window: tuple | None = None) -> np.ndarray:
    """Bands 1..n_bands of a raster as ``dtype``, (n_bands, rows, cols); whole or a ``window`` (row, col, rows, cols)"""
    dataset = open_raster(path)
    row, col, rows, cols = window or (0, 0, dataset.RasterYSize, dataset.RasterXSize)
    data = np.empty((n_bands, rows, cols), dtype=dtype)
    for i in range(n_bands):
        try:
            dataset.GetRasterBand(i + 1).ReadAsArray(col, row, cols, rows, buf_obj=data[i])
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


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file is created with the permissions a plain ``open`` would give (the user's umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_file_beside(path, f"partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError) and error.filename is None and error.errno in DISK_ERRORS:
            raise OSError(error.errno, error.strerror, str(path)) from None  # a full disk: name the file written
        raise


#: Errors of a file system that takes no more data (full, a file too large, out of quota).
DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _gdal_call(path: Path, method, *args):
    """``method(*args)``: a GDAL call writing ``path``; its error (a full disk...) becomes an OSError naming the
    file, raised holding no reference to the dataset (not even through the traceback), so that the dataset
    closes where its writer drops it."""
    try:
        return method(*args)
    except RuntimeError as error:
        message = error_text(error)
    del method, args
    raise OSError(errno.EIO, f"GDAL could not write it ({message})", str(path))


@contextlib.contextmanager
def _failed_write_closes_quiet():
    """Inside, a GDAL dataset that closes with an error (it flushes blocks its failed write could not write)
    is not reported again as Python's "Exception ignored": the write's own error is the one reported."""
    report = sys.unraisablehook

    def unless_a_failed_close(unraisable):
        if getattr(unraisable.object, "__name__", "") != "delete_Dataset":
            report(unraisable)

    sys.unraisablehook = unless_a_failed_close
    try:
        yield
    finally:
        sys.unraisablehook = report


#: Band-1 metadata item prefix naming class values inside a class GeoTIFF: ``CLASS_0=urban``, ``CLASS_1=crop``...
CLASS_NAME_ITEM = "CLASS_"


#: Rasters of at most this many bytes, uncompressed, are staged in memory for the COG driver (one pass to disk).
STAGING_IN_MEMORY_BYTES = 512 * 2**20


@contextlib.contextmanager
def geotiff_writer(path: Path, grid: Grid, n_bands: int, dtype, *, band_names=None, nodata=None, scale=None,
                   class_names=None, class_colours=None, metadata=None, cloud_optimized: bool = True):
    """Yield ``write(array, row=0, col=0)``, which writes a (rows, cols) or (bands, rows, cols) block of a
    compressed Cloud-Optimized GeoTIFF on ``grid`` (a plain tiled one unless ``cloud_optimized``); the file
    appears at ``path`` only when the block exits cleanly. Blocks go to an uncompressed staging raster, in
    memory up to ``STAGING_IN_MEMORY_BYTES``, else a tiled GeoTIFF beside ``path``, given its overviews
    (:func:`overview_factors`; nearest-neighbour for class and id rasters, average for float or scaled layers:
    built on the staging raster, half the CPU of the COG driver's own), which GDAL's COG driver then
    compresses into the final file; a staging file is removed in every case. ``scale``: the band scale of integer
    steps of a continuous value (value = stored * scale, as QGIS reads it). ``class_names`` and
    ``class_colours`` (RGB tuples indexed by class value) add a colour table and category names to band 1,
    which QGIS shows as a legend. GeoTIFF keeps category names only in the ``.aux.xml`` side file, so they are
    also written inside the file as band 1 metadata items ``CLASS_<value>=<name>`` (:func:`read_class_names`
    reads either). ``metadata`` (a dict of str) is stored as the file's own metadata items (:func:`read_layout`).
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
    from osgeo import gdal, gdal_array

    gdal.UseExceptions()
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
        written = False
        try:
            _describe_bands(dataset, grid, **description)
            if data is not None and not in_memory:
                _write_block(path, dataset, data, 0, 0)
            yield dataset
            if cloud_optimized:
                _gdal_call(path, dataset.BuildOverviews, "AVERAGE" if continuous else "NEAREST",
                           overview_factors(grid))
            _gdal_call(path, dataset.FlushCache)
            written = True
            if in_memory:
                staging = dataset  # converted from memory below
        finally:
            with contextlib.nullcontext() if written else _failed_write_closes_quiet():
                dataset = None  # the last reference to a staging file's dataset: it closes here
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

    compression = [f"{key}={value}" for key, value in _compression(is_float, continuous, "GTiff").items()]
    options = ["TILED=YES", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS",
               *(["COMPRESS=NONE"] if cloud_optimized else compression)]
    return gdal.GetDriverByName("GTiff").Create, str(staging), grid.cols, grid.rows, n_bands, gdal_type, options


def _new_file_beside(path: Path, suffix: str) -> Path:
    """Create an empty, hidden, uniquely named file ``.<stem>.<random>.<suffix>`` beside ``path`` (with the
    permissions a plain ``open`` gives, i.e. the user's umask) and return its path."""
    new = path.parent / f".{path.stem}.{uuid.uuid4().hex[:12]}.{suffix}"
    os.close(os.open(new, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return new


@contextlib.contextmanager
def _staging_file(path: Path, in_memory: bool = False):
    """Yield a fresh temporary .tif path beside ``path`` (None if the raster is staged ``in_memory``); remove it
    and its side file on exit, whatever happens."""
    if in_memory:
        yield None
        return
    staging = _new_file_beside(path, "staging.tif")
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


def _compression(is_float: bool, continuous: bool, driver: str) -> dict:
    """Creation options of GDAL's ``driver`` (GTiff or COG) compressing a raster: continuous layers (float, or
    scaled integer steps) with ZSTD level 1, the fastest codec that still shrinks them, and its predictor;
    class and id rasters with DEFLATE level 1, which every GIS reads."""
    codec = "ZSTD" if continuous else "DEFLATE"
    level = "LEVEL" if driver == "COG" else "ZSTD_LEVEL" if continuous else "ZLEVEL"
    predictor = ("3" if is_float else "2") if driver == "GTiff" else ("FLOATING_POINT" if is_float else "STANDARD")
    return {"COMPRESS": codec, level: 1, "PREDICTOR": predictor}


def overview_factors(grid: Grid, block: int = 512) -> list[int]:
    """Overview factors 2, 4, 8... of a COG on ``grid`` in ``block`` px tiles, down to the first level whose
    longest side fits one tile, as GDAL's COG driver chooses them.

    >>> overview_factors(Grid(3500, 3500, (0, 10, 0, 0, 0, -10), "")), overview_factors(Grid(64, 64, (), ""))
    ([2, 4, 8], [])
    """
    factors, side = [], max(grid.rows, grid.cols)
    while side > block:
        side = -(-side // 2)
        factors.append(2 * (factors[-1] if factors else 1))
    return factors


def _translate_to_cog(source, target: Path, is_float: bool, continuous: bool) -> None:
    """Convert a raster (a GeoTIFF's path, or an open GDAL dataset) with its overviews (see
    :func:`geotiff_writer`) to a Cloud-Optimized GeoTIFF, compressed as :func:`geotiff_writer`'s."""
    from osgeo import gdal

    compression = [f"{key}={value}" for key, value in _compression(is_float, continuous, "COG").items()]
    options = [*compression, "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS",
               "OVERVIEWS=FORCE_USE_EXISTING"]
    source = str(source) if isinstance(source, Path) else source
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # its errors still raise; its warnings (a failing write's
    try:  # about rewriting a block of a half-written file) are not printed on the user's terminal
        result = gdal.Translate(str(target), source, format="COG", creationOptions=options)
    finally:
        gdal.PopErrorHandler()
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


def write_qml(path: Path, class_names, class_colours, nodata=255) -> None:
    """Write a QGIS layer style (.qml) for a class raster, atomically: a paletted renderer of band 1 with one
    entry per class value (its colour and name as label), and ``nodata`` shown transparent."""
    import xml.etree.ElementTree as ET

    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "AllStyleCategories"})
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {"type": "paletted", "band": "1", "opacity": "1",
                                                      "alphaBand": "-1", "nodataColor": ""})
    transparency = ET.SubElement(renderer, "rasterTransparency")
    if nodata is not None:
        pixels = ET.SubElement(transparency, "singleValuePixelList")
        ET.SubElement(pixels, "pixelListEntry", {"min": f"{nodata:g}", "max": f"{nodata:g}",
                                                 "percentTransparent": "100"})
    palette = ET.SubElement(renderer, "colorPalette")
    for value, (name, colour) in enumerate(zip(class_names, class_colours)):
        ET.SubElement(palette, "paletteEntry", {"value": str(value), "label": str(name), "alpha": "255",
                                                "color": "#{:02x}{:02x}{:02x}".format(*colour[:3])})
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    text = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode")
    with atomic_output(path) as temporary:
        Path(temporary).write_text(text + "\n", encoding="utf-8")


def class_palette(class_names) -> list[tuple[int, int, int]]:
    """RGB colour per class code: the tutorial's colour for its names, distinct extras otherwise."""
    extras = iter(EXTRA_COLOURS * (len(class_names) // len(EXTRA_COLOURS) + 1))
    return [CLASS_COLOURS.get(name, None) or next(extras) for name in class_names]


def colourise(codes: np.ndarray, class_names, colours=None) -> np.ndarray:
    """Turn class codes 0..K-1 of shape (rows, cols) into an RGB uint8 image; other codes (unlabelled, masked)
    are blank (white).
    ``colours`` (K RGB tuples) replaces the class palette.

    >>> colourise(np.array([[0, 255]], np.uint8), ["water"]).tolist()
    [[[31, 59, 255], [255, 255, 255]]]
    >>> colourise(np.array([[0]], np.uint8), ["agree"], [(0, 128, 0)]).tolist()
    [[[0, 128, 0]]]
    """
    lookup = np.full((256, 3), 255, dtype=np.uint8)
    lookup[: len(class_names)] = class_palette(class_names) if colours is None else colours
    return lookup[codes]


def percentile_limits(values: np.ndarray, valid: np.ndarray | None = None, low: float = 1.0,
                      high: float = 99.0) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of ``values`` over ``valid`` pixels (0, 0 if there are none)."""
    sample = values if valid is None or valid.all() else values[valid]
    if sample.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(sample, [low, high])
    return float(lo), float(hi)


def rescale_to_unit(values: np.ndarray, lo, hi) -> np.ndarray:
    """Linear map of ``values`` to float32 [0, 1], ``lo`` to 0 and ``hi`` to 1, clipped outside; ``lo`` and
    ``hi`` are numbers, or one per channel (the last axis) of ``values``.

    >>> rescale_to_unit(np.array([0.0, 10.0, 50.0, 100.0]), *percentile_limits(np.arange(101.0), None, 10, 90))
    array([0. , 0. , 0.5, 1. ], dtype=float32)
    >>> rescale_to_unit(np.array([[5.0, 5.0]]), [0, 0], [10, 5]).tolist()
    [[0.5, 1.0]]
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    scale = np.divide(1.0, hi - lo, out=np.zeros(np.broadcast(lo, hi).shape), where=hi > lo).astype(np.float32)
    stretched = np.subtract(values, lo.astype(np.float32), dtype=np.float32)
    stretched *= scale
    return np.clip(stretched, 0.0, 1.0, out=stretched)


def unit_to_byte(values: np.ndarray, rows: int = 1024) -> np.ndarray:
    """Values in [0, 1] (e.g. an RGB image (rows, cols, 3)) as uint8 0..255, rounded half up and clipped to the
    range, ``rows`` along the first axis at a time (no float copy of the whole array).

    >>> unit_to_byte(np.array([[[0.0, 0.5, 1.0]]])).tolist()
    [[[0, 128, 255]]]
    """
    values = np.asarray(values)
    byte = np.empty(values.shape, dtype=np.uint8)
    for start in range(0, max(len(values), 1), rows):
        block = np.clip(values[start:start + rows], 0, 1) * np.float32(255) + np.float32(0.5)
        byte[start:start + rows] = block.astype(np.uint8)
    return byte


def save_png(path: Path, image_or_figure, crop: bool = True) -> None:
    """Write a uint8 image array (:func:`png_bytes`) or a matplotlib Figure to PNG atomically (figures are
    closed); a figure is cropped to what it draws, unless ``crop`` is False (for a figure with its own margins:
    cropping draws it twice).

    PNGs use zlib level 1: about 5x faster than the default on photos of scenes, files a little larger.
    """
    with atomic_output(path) as temporary:
        if isinstance(image_or_figure, np.ndarray):
            Path(temporary).write_bytes(png_bytes(image_or_figure))
        else:
            import matplotlib.pyplot as plt

            image_or_figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight" if crop else None,
                                    pil_kwargs={"compress_level": 1})
            plt.close(image_or_figure)


#: PNG colour type of an image with 1, 2, 3 or 4 channels (grey, grey + alpha, RGB, RGBA).
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
#: Largest PNG chunk written (PNG allows up to 2**31 - 1 bytes): the deflated image goes in IDAT chunks of this size.
PNG_CHUNK_BYTES = 2**30


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG file of a uint8 image (rows, cols) or (rows, cols, 1 to 4 channels: grey, grey + alpha, RGB,
    RGBA), deflated at zlib level 1, every row unfiltered or every row filtered "Up" (minus the row above),
    whichever deflates a band of rows from the middle smaller: Up for photos of scenes, none for drawn images
    such as boundaries (files within about 5 % of Pillow's, which takes twice the time).

    >>> png_bytes(np.zeros((2, 3), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4) \
            or 0 in image.shape:
        raise ValueError(f"a PNG holds uint8 (rows, cols[, 1-4 channels]), not {image.dtype} {image.shape}")
    rows, cols = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    flat = image.reshape(rows, cols * channels)
    middle = flat[max(0, rows // 2 - 32):rows // 2 + 32]
    up = len(zlib.compress(_scanlines(middle, True), 1)) < len(zlib.compress(_scanlines(middle, False), 1))
    header = struct.pack(">IIBBBBB", cols, rows, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    deflated = memoryview(zlib.compress(_scanlines(flat, up), 1))
    chunks = [(b"IHDR", header), *((b"IDAT", deflated[start:start + PNG_CHUNK_BYTES])
                                   for start in range(0, len(deflated), PNG_CHUNK_BYTES)), (b"IEND", b"")]
    parts = [b"\x89PNG\r\n\x1a\n"]
    for kind, data in chunks:
        parts += [struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))]
    return b"".join(parts)  # the image's bytes copied once


def _scanlines(flat: np.ndarray, up: bool) -> np.ndarray:
    """PNG's filtered rows of an image's rows of bytes ``flat``: each its filter type (0 none, 2 Up), then its
    bytes, minus those of the row above (mod 256) for Up."""
    lines = np.empty((len(flat), 1 + flat.shape[1]), np.uint8)
    lines[:, 0] = 2 if up else 0
    lines[:, 1:] = flat
    if up:
        np.subtract(lines[1:, 1:], flat[:-1], out=lines[1:, 1:])
    return lines


def tif_to_rgb(source: Path, target: Path, bands=(3, 2, 1), low: float = 2.0, high: float = 98.0) -> None:
    """Write an RGB PNG of three 1-based ``bands`` of a raster, each stretched between percentiles."""
    data, _, valid = read_bands(source, list(bands))
    image = unit_to_byte(np.stack([rescale_to_unit(band, *percentile_limits(band, valid, low, high)) for band in data],
                             axis=-1))
    image[~valid] = 0
    save_png(target, image)


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
