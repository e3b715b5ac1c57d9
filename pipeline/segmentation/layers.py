"""The tutorial's 8 layers (section 1.1): spectral bands and normalized-difference indices, stretched to [0, 1],
followed by the further bands a scene names (``vocabulary.EXTRA_BANDS``).

Layers are float32 arrays (rows, cols, c), channels last in the order of ``vocabulary.layer_names_of`` (the
tutorial's 8 first, so ``LAYER_NAMES.index`` finds them); ``valid`` masks are bool (rows, cols), False at NaN or
nodata pixels.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

import gdal_tif2rgb
from pipeline.core import grids
from pipeline.core.stretch import percentile_limits, rescale_to_unit
from pipeline.core.vocabulary import LAYER_NAMES, layer_names_of
from pipeline.handoffs.contract import encode_unit_values
from pipeline.core.errors import InputDataError
from pipeline.segmentation.superpixels import to_lab


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) as float32, 0 where a + b == 0.

    >>> normalized_difference(np.array([3.0, 0.0]), np.array([1.0, 0.0])).tolist()
    [0.5, 0.0]
    """
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    total = a + b
    result = np.subtract(a, b, dtype=np.float32)
    np.divide(result, total, out=result, where=total != 0)
    result[total == 0] = 0
    return result


def build_layers(raw: dict, valid: np.ndarray) -> np.ndarray:
    """Stack the layers of ``raw`` (layer name -> array (rows, cols) in the image's units), channels last, in the
    order of ``layer_names_of(raw)`` (not yet stretched): the tutorial's 8, then the further bands ``raw`` holds.

    NDVI = (NIR-Red)/(NIR+Red), NDWI = (Green-SWIR)/(Green+SWIR), NDBI = (SWIR-NIR)/(SWIR+NIR), unless ``raw``
    already holds them. Pixels outside ``valid`` are set to 0 in every layer.

    Returns float32 array of shape (rows, cols, c).
    """
    formulas = {"ndvi": ("nir", "red"), "ndwi": ("green", "swir"), "ndbi": ("swir", "nir")}
    rows, cols = valid.shape
    names = layer_names_of(raw)
    layers = np.empty((rows, cols, len(names)), dtype=np.float32)
    for i, name in enumerate(names):
        layers[..., i] = raw[name] if name in raw else normalized_difference(*(raw[n] for n in formulas[name]))
    if not valid.all():
        layers[~valid] = 0
    return layers


def stretch_limits(layers: np.ndarray, valid: np.ndarray, names, low: float = 1.0, high: float = 99.0) -> dict:
    """Layer name -> (``low``, ``high``) percentile of the valid pixels of ``layers`` (rows, cols, c), whose layers
    are ``names``, in their order.

    The 1-99 % interval is the tutorial's 98 % stretch. Step 0 takes the percentiles from the preview (every
    pixel of scenes up to 2000 px, every s-th row and column of bigger ones), in tiled mode too, so both
    modes stretch alike.
    """
    # one layer per thread: numpy's partition releases the GIL
    limits = grids.parallel_map(lambda i: percentile_limits(layers[..., i], valid, low, high),
                                range(len(names)), os.cpu_count() or 1)
    return dict(zip(names, limits))


def apply_stretch(layers: np.ndarray, limits: dict, valid: np.ndarray) -> np.ndarray:
    """Each layer of ``layers`` (rows, cols, c) mapped to [0, 1] between its ``limits`` (layer name -> (low,
    high) for each layer of the stack), invalid pixels 0: a new float32 array (rows, cols, c)."""
    lows, highs = zip(*(limits[name] for name in layer_names_of(limits)))
    stretched = rescale_to_unit(layers, lows, highs)  # all layers at once: contiguous passes
    if not valid.all():
        stretched[~valid] = 0
    return stretched


def check_limits_fit(preview: np.ndarray, valid: np.ndarray, limits: dict, source, share: float = 0.99) -> None:
    """Refuse stretch ``limits`` borrowed from ``source`` (a model's card) under which a layer of this scene would
    be constant: ``share`` or more of the ``valid`` pixels of its ``preview`` (rows, cols, c, unstretched) lie at
    or beyond one limit, as when the model was trained on images of another scale."""
    values = preview[valid]
    if not len(values):
        return
    flat = []
    for i, name in enumerate(layer_names_of(limits)):
        low, high = limits[name]
        at_end = max(np.mean(values[:, i] <= low), np.mean(values[:, i] >= high))
        if at_end >= share:
            flat.append(f"{name} ({at_end:.1%} of pixels at one limit)")
    if flat:
        raise InputDataError(f"{source}: its stretch limits make layers of this scene constant: {', '.join(flat)}; "
                             f"the model was trained on images of another scale, so train one on this kind")


class StretchedLayers(NamedTuple):
    """What :func:`stretched_layers` makes of a scene's bands: the stored layers, SLIC's input and the preview."""

    steps: np.ndarray  # uint8 (rows, cols, c): the stretched layers as stored (``contract.encode_unit_values``)
    slic_lab: np.ndarray  # float32 (rows, cols, 3): CIELAB of the stretched layers SLIC segments (not rounded)
    preview: np.ndarray  # float32 (ceil(rows / s), ceil(cols / s), c): the preview before the stretch
    preview_steps: np.ndarray  # uint8, the same preview stretched, as stored: every s-th pixel of ``steps``
    preview_valid: np.ndarray  # bool (ceil(rows / s), ceil(cols / s))
    limits: dict  # layer name -> (low, high), the limits used


def select_layers(layers: np.ndarray, names) -> np.ndarray:
    """The tutorial's layers ``names`` (in that order) of a stack (..., c) of a scene's layers: a copy."""
    return layers[..., [LAYER_NAMES.index(name) for name in names]]


def slic_lab(layers: np.ndarray, slic_layers) -> np.ndarray:
    """What SLIC segments: the CIELAB image (``superpixels.to_lab``) of the ``slic_layers`` of a stretched stack
    (..., c), float32 (..., 3)."""
    return to_lab(select_layers(layers, slic_layers))


def stretched_layers(raw: dict, valid: np.ndarray, slic_layers, limits: dict | None = None,
                     block_pixels: int = 2**17) -> StretchedLayers:
    """The layers of ``raw`` (see :func:`build_layers`) stretched with ``limits`` (default: from the preview,
    every s-th row and column, s = ``grids.display_stride``), as stored steps and, for the ``slic_layers``, as
    the CIELAB image SLIC segments (``superpixels.to_lab``); built in blocks of rows of about ``block_pixels``
    pixels on every core, so no float32 copy of all layers is made (blocks of 4 MB stay in cache and in the
    allocator's reused memory: 3 times faster than blocks of 16 MB on a 3500 px wide scene)."""
    step = grids.display_stride(*valid.shape)
    preview_valid = valid[::step, ::step]
    names = layer_names_of(raw)
    preview = np.empty((*preview_valid.shape, len(names)), dtype=np.float32)
    steps = np.empty((*valid.shape, len(names)), dtype=np.uint8)
    lab = np.empty((*valid.shape, 3), dtype=np.float32)

    sampled = {name: np.ascontiguousarray(band[::step, ::step]) for name, band in raw.items()}  # 6x faster than
    # arithmetic on the strided views

    def build_preview(rows: slice) -> None:  # rows of the preview
        preview[rows] = build_layers({name: band[rows] for name, band in sampled.items()}, preview_valid[rows])

    def build_and_stretch(rows: slice) -> None:  # a block of rows stays in cache through every pass
        block = apply_stretch(build_layers({name: band[rows] for name, band in raw.items()}, valid[rows]), limits,
                              valid[rows])
        steps[rows] = encode_unit_values(block)
        lab[rows] = slic_lab(block, slic_layers)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # numpy's arithmetic releases the GIL
        list(pool.map(build_preview, grids.row_blocks(*preview_valid.shape, block_pixels)))
        limits = limits or stretch_limits(preview, preview_valid, names)
        list(pool.map(build_and_stretch, grids.row_blocks(*valid.shape, block_pixels)))
    preview_steps = np.ascontiguousarray(steps[::step, ::step])
    return StretchedLayers(steps, lab, preview, preview_steps, preview_valid, limits)


def read_preview(image: Path, bands: dict, shape: tuple, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Unstretched layers of every ``step``-th row and column of ``image`` (a scene of ``shape``), read in
    strips of rows so memory stays bounded.

    ``bands`` maps layer names to the image's band numbers (1-based). Returns the layers, float32
    (ceil(rows / step), ceil(cols / step), c), and their valid mask, bool (ceil(rows / step), ceil(cols / step)).
    """
    names = list(bands)
    strip = step * max(1, 4096 // step)
    parts, masks = [], []
    for row in range(0, shape[0], strip):
        data, _, valid = gdal_tif2rgb.read_bands(image, [bands[n] for n in names],
                                                 window=(row, 0, min(strip, shape[0] - row), shape[1]))
        parts.append(build_layers(dict(zip(names, data[:, ::step, ::step])), valid[::step, ::step]))
        masks.append(valid[::step, ::step])
    return np.concatenate(parts), np.concatenate(masks)


def stretched_preview(image: Path, bands: dict, shape: tuple, step: int, limits: dict | None = None):
    """The preview of ``image`` (see :func:`read_preview`) before and after the stretch with ``limits``
    (default: the preview's own, :func:`stretch_limits`): the whole-scene preview of a scene read tile by tile.

    Returns
    -------
    preview : float32 array (ceil(rows / step), ceil(cols / step), c), before the stretch
    preview_steps : uint8 array of the same shape, stretched to [0, 1] as stored steps
    preview_valid : bool array (ceil(rows / step), ceil(cols / step))
    limits : dict, layer name -> (low, high), the limits used
    """
    preview, preview_valid = read_preview(image, bands, shape, step)
    limits = limits or stretch_limits(preview, preview_valid, layer_names_of(bands))
    return preview, encode_unit_values(apply_stretch(preview, limits, preview_valid)), preview_valid, limits
