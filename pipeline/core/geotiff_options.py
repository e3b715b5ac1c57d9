"""How the pipeline's GeoTIFFs are made, decided without GDAL (``gdal_tif2rgb.geotiff_writer`` applies it): the
compression by content, the overview factors of a Cloud-Optimized GeoTIFF, and the size up to which a raster is
staged in memory."""
from __future__ import annotations

#: Rasters of at most this many bytes, uncompressed, are staged in memory for the COG driver (one pass to disk).
STAGING_IN_MEMORY_BYTES = 512 * 2**20


def compression_options(is_float: bool, continuous: bool, driver: str) -> dict:
    """Creation options of GDAL's ``driver`` (GTiff or COG) compressing a raster: continuous layers (float, or
    scaled integer steps) with ZSTD level 1, the fastest codec that still shrinks them, and its predictor;
    class and id rasters with DEFLATE level 1, which every GIS reads.

    >>> compression_options(False, False, "COG")
    {'COMPRESS': 'DEFLATE', 'LEVEL': 1, 'PREDICTOR': 'STANDARD'}
    """
    codec = "ZSTD" if continuous else "DEFLATE"
    level = "LEVEL" if driver == "COG" else "ZSTD_LEVEL" if continuous else "ZLEVEL"
    predictor = ("3" if is_float else "2") if driver == "GTiff" else ("FLOATING_POINT" if is_float else "STANDARD")
    return {"COMPRESS": codec, level: 1, "PREDICTOR": predictor}


def overview_factors(shape: tuple, block: int = 512) -> list[int]:
    """Overview factors 2, 4, 8... of a COG of ``shape`` (rows, cols) in ``block`` px tiles, down to the first
    level whose longest side fits one tile, as GDAL's COG driver chooses them.

    >>> overview_factors((3500, 3500)), overview_factors((64, 64))
    ([2, 4, 8], [])
    """
    factors, side = [], max(shape)
    while side > block:
        side = -(-side // 2)
        factors.append(2 * (factors[-1] if factors else 1))
    return factors
