"""Build a tutorial-size (or larger) scene from the real demo scene by mirror-tiling it.

The 930 x 947 px Aberystwyth image and its reference are mirrored at their edges (like a kaleidoscope)
until they cover ``size`` x ``size`` pixels, so every pixel value and every class boundary is real and
the image stays seamless. Both rasters keep the demo scene's origin, pixel size and CRS.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.core.vocabulary import EXTRA_BANDS
from pipeline.run.config import DEFAULT_CONFIG, load_scene


def mirror_tile(array: np.ndarray, size: int) -> np.ndarray:
    """Extend the last two axes of ``array`` to ``size`` x ``size`` by repeated mirroring (then crop).

    >>> mirror_tile(np.array([[1, 2]]), 3).tolist()
    [[1, 2, 2], [1, 2, 2], [1, 2, 2]]
    """
    rows, cols = array.shape[-2:]
    widths = [(0, 0)] * (array.ndim - 2) + [(0, max(0, size - rows)), (0, max(0, size - cols))]
    return np.pad(array, widths, mode="symmetric")[..., :size, :size]


def build_scene(folder: Path, size: int, settings: str = "") -> Path:
    """Write ``image.tif``, ``reference.tif`` and ``scene.toml`` of a mirrored ``size`` px scene; return the TOML."""
    demo = load_scene(DEFAULT_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    grid, count, _, _ = gdal_tif2rgb.read_layout(demo.image)
    image, _, _ = gdal_tif2rgb.read_bands(demo.image, list(range(1, count + 1)), dtype=np.float32)
    reference = gdal_tif2rgb.read_window(demo.reference, 1, np.int32)[0]
    big = gdal_tif2rgb.Grid(size, size, grid.geotransform, grid.crs_wkt)
    gdal_tif2rgb.write_geotiff(folder / "image.tif", mirror_tile(image, size).astype(np.uint16), big)
    gdal_tif2rgb.write_geotiff(folder / "reference.tif", mirror_tile(reference, size), big, nodata=0)
    return scene_config(folder, settings)


def scene_config(folder: Path, settings: str = "", further_bands: bool = False) -> Path:
    """The TOML of the mirrored scene in ``folder``: the demo's bands and classes, then ``settings``; with the
    tutorial's five bands only (``scene.toml``) or with the further bands the demo names too
    (``scene_further_bands.toml``)."""
    demo_text = DEFAULT_CONFIG.read_text()
    body = demo_text[demo_text.index("[bands]"):demo_text.index("[run]")]
    if not further_bands:
        body = "\n".join(line for line in body.splitlines() if line.split("=")[0].strip() not in EXTRA_BANDS)
    config = folder / ("scene_further_bands.toml" if further_bands else "scene.toml")
    config.write_text(f'name = "tutorial_size"\nimage = "image.tif"\nreference = "reference.tif"\n\n{body}\n{settings}')
    return config
