"""Step 0, data preparation (tutorial sections 1 and 2): layers, superpixels and patch samples.

Reads the scene's multi-band image and its land-cover reference (both GeoTIFFs on the same grid),
builds the tutorial's 8 layers (Blue, Green, Red, NIR, SWIR, NDVI, NDWI, NDBI) stretched to [0, 1],
segments 3 of them into SLIC superpixels, and cuts one w x w x 8 patch centred on every superpixel,
labelled by the majority class of its reference pixels. A spatial block split marks superpixels for
training or testing so that no training patch sees a test pixel.

Outputs in the work folder (``data/<name>/`` by default; keys and types in ``pipeline/contract.py``):

- ``layers.tif``: the 8 stretched layers, float32, georeferenced like the image; ``reference.tif``: the
  reference as class codes (uint8, 255 = unlabelled) with the class colours;
- quicklooks: ``rgb.png``, ``nir_green_blue.png``, ``swir_green_blue.png``, ``ndvi.png``, ``ndwi.png``,
  ``ndbi.png``, ``histogram_<layer>.png``;
- ``segments.mat`` (``segments``: int32 rows x cols, superpixel ids 0..n-1), ``segments.tif``,
  ``segments_boundaries.png``;
- ``samples_labels.mat``: ``samples`` (n x w x w x 8 float32), ``masks`` (n x w x w uint8, 1 on the
  superpixel's own pixels), ``labels`` (n uint8, 255 = unlabelled),
  ``centroids`` (n x 2 int32, row and column), ``purity`` (n float32), ``class_names``, ``layer_names``,
  ``split`` (n uint8: 0 train, 1 test, 2 unused), ``valid_fraction`` (n float32);
- ``example_patches.png``, and ``run.json`` (parameters, timings, package versions, input checksums).

Three drivers: the whole scene in memory (default); ``--tile-size``, tile by tile with a halo on a Dask cluster
(``--scheduler``, ``--workers``) for scenes bigger than memory, whose hand-offs are MATLAB 7.3 files; both end
in the same finishing path. ``--explore`` instead renders SLIC boundaries for a range of ``compactness`` and
``n_segments`` values on a crop (tutorial 2.1), writes ``explore_slic.png`` and stops.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import gdal_tif2rgb
from pipeline import cli, cluster, contract, grids, matfile, model_card, sources
from pipeline.config import Scene
from pipeline.outputs import OutputSet, open_outputs
from pipeline.contract import INDEX_LAYERS, LAYER_NAMES, SPECTRAL_BANDS, TEST, TRAIN, UNLABELLED, UNUSED
from pipeline.errors import ConfigError, InputDataError
from pipeline.figures import pyplot

log = logging.getLogger(__name__)

#: Layer triplets written as colour composites, and the colour maps of the index layers.
COMPOSITES = {"rgb": ("red", "green", "blue"), "nir_green_blue": ("nir", "green", "blue"),
              "swir_green_blue": ("swir", "green", "blue")}
INDEX_COLOUR_MAPS = {"ndvi": "RdYlGn", "ndwi": "BrBG", "ndbi": "RdGy_r"}
#: Superpixel-sized keys of ``samples_labels.mat`` that the tiled driver appends tile by tile.
SAMPLED_KEYS = ("samples", "masks", "labels", "centroids", "purity", "valid_fraction")
#: Every file Step 0 writes (committed together; ``.aux.xml`` side files go with their rasters).
OUTPUTS = (contract.LAYERS_TIF, contract.REFERENCE_TIF, contract.SEGMENTS_TIF, contract.SEGMENTS.filename,
           contract.SAMPLES.filename, *(f"{name}.png" for name in (*COMPOSITES, *INDEX_LAYERS)),
           *(f"histogram_{name}.png" for name in LAYER_NAMES), "segments_boundaries.png", "example_patches.png",
           "run.json", f"{sources.FOLDER}/")
EXPLORE_OUTPUTS = ("explore_slic.png",)


@dataclass
class PreparedScene:
    """What either driver hands to the shared finishing path."""

    labels: np.ndarray  # (n,) uint8 majority class codes
    split: np.ndarray  # (n,) uint8 split codes
    purity: np.ndarray  # (n,) float32
    invalid_pixels: int
    preview_layers: np.ndarray  # stretched layers of the preview grid (every s-th row and column)
    preview_segments: np.ndarray  # superpixel ids on the preview grid
    read_patches: Callable[[np.ndarray], np.ndarray]  # superpixel indices -> their patches
    tiles: int = 1


# --- 1. Inputs ---------------------------------------------------------------------------------------------

def read_image(scene: Scene, window: tuple | None = None) -> tuple[dict, np.ndarray]:
    """The bands the scene names, whole or a ``window`` (row, col, rows, cols): layer name -> float32 array
    (rows, cols) in the image's units, and the valid mask (False at NaN or nodata pixels of any read band)."""
    names = list(scene.bands)
    data, _, valid = gdal_tif2rgb.read_bands(scene.image, [scene.bands[n] for n in names], window=window)
    return dict(zip(names, data)), valid


def read_reference_codes(scene: Scene, valid: np.ndarray, window: tuple | None = None) -> np.ndarray:
    """The reference, whole or a ``window``, as class codes 0..K-1 (uint8; 255 where unlabelled or not
    ``valid``); all 255 for a scene without a reference (one to map with a trained model)."""
    if scene.reference is None:
        return np.full(valid.shape, UNLABELLED, dtype=np.uint8)
    codes = reference_to_codes(gdal_tif2rgb.read_labels(scene.reference, window=window)[0], scene.classes)
    codes[~valid] = UNLABELLED
    return codes


def on_work_grid(scene: Scene, out: OutputSet) -> tuple[Scene, dict]:
    """The scene with its image and reference prepared on one work grid by GDAL (the tutorial's SNAP work):
    a Sentinel-2 product's bands stacked at 10 m as reflectance, the image cut to the ``aoi``, the reference
    resampled or rasterized onto the grid as class codes (see ``pipeline/sources.py``). Returns the scene to
    read (its classes are now the codes) and what was used, for ``run.json``."""
    prepared = sources.prepare_sources(scene.image, scene.bands, scene.reference, scene.classes,
                                       out.path(sources.FOLDER), aoi=scene.aoi, reference_field=scene.reference_field)
    missing = [role for role in SPECTRAL_BANDS if role not in prepared.bands]
    if missing:
        raise ConfigError(f"{scene.config_path}: [bands] lacks {', '.join(missing)} (needed for an image that is "
                          f"not a Sentinel-2 product)")
    work = dataclasses.replace(scene, image=prepared.image, bands=prepared.bands, reference=prepared.reference,
                               classes={name: [code] for code, name in enumerate(scene.classes)}, aoi=None)
    return work, prepared.sources


def reference_to_codes(reference: np.ndarray, classes: dict) -> np.ndarray:
    """Map reference values to class codes 0..K-1 in the order of ``classes``; other values to 255.

    Works for values of any integer type and range in memory proportional to the pixels (a search in the
    sorted class values, no lookup table as long as the value range).

    >>> reference_to_codes(np.array([[0, 3], [2, 9]]), {"urban": [3], "crop": [2, 9]}).tolist()
    [[255, 0], [1, 1]]
    """
    values = np.array([v for vs in classes.values() for v in vs], dtype=np.int64)
    codes_of = np.array([code for code, vs in enumerate(classes.values()) for _ in vs], dtype=np.uint8)
    order = np.argsort(values)
    values, codes_of = values[order], codes_of[order]
    flat = reference.ravel()
    if flat.dtype.kind == "u" and flat.dtype.itemsize == 8:  # uint64 beyond int64's range cannot be a class
        flat = np.where(flat > np.iinfo(np.int64).max, -1, flat).astype(np.int64)
    position = np.minimum(np.searchsorted(values, flat), len(values) - 1)
    found = values[position] == flat
    return np.where(found, codes_of[position], UNLABELLED).astype(np.uint8).reshape(reference.shape)


# --- 2. Layers and stretch (tutorial 1.1) -----------------------------------------------------------------

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
    """Stack the tutorial's 8 layers, channels last, in the order of ``LAYER_NAMES`` (not yet stretched).

    NDVI = (NIR-Red)/(NIR+Red), NDWI = (Green-SWIR)/(Green+SWIR), NDBI = (SWIR-NIR)/(SWIR+NIR), unless
    ``raw`` already holds them. Pixels outside ``valid`` are set to 0 in every layer.

    Returns float32 array of shape (rows, cols, 8).
    """
    formulas = {"ndvi": ("nir", "red"), "ndwi": ("green", "swir"), "ndbi": ("swir", "nir")}
    rows, cols = valid.shape
    layers = np.empty((rows, cols, len(LAYER_NAMES)), dtype=np.float32)
    for i, name in enumerate(LAYER_NAMES):
        layers[..., i] = raw[name] if name in raw else normalized_difference(*(raw[n] for n in formulas[name]))
    layers[~valid] = 0
    return layers


def stretch_limits(layers: np.ndarray, valid: np.ndarray, low: float = 1.0, high: float = 99.0) -> dict:
    """Layer name -> (``low``, ``high``) percentile of the valid pixels of ``layers`` (rows, cols, 8).

    The 1-99 % interval is the tutorial's 98 % stretch. Step 0 takes the percentiles from the preview (every
    pixel of scenes up to 2000 px, every s-th row and column of bigger ones), in tiled mode too, so both
    modes stretch alike.
    """
    return {name: gdal_tif2rgb.percentile_limits(layers[..., i], valid, low, high)
            for i, name in enumerate(LAYER_NAMES)}


def apply_stretch(layers: np.ndarray, limits: dict, valid: np.ndarray) -> None:
    """Map each layer in place to [0, 1] between its ``limits``; invalid pixels become 0."""
    for i, name in enumerate(LAYER_NAMES):
        layers[..., i] = gdal_tif2rgb.rescale_to_unit(layers[..., i], *limits[name])
    layers[~valid] = 0


def write_quicklooks(out: OutputSet, raw: np.ndarray, stretched: np.ndarray, limits: dict, valid: np.ndarray,
                     scene_shape: tuple) -> None:
    """Colour composites, index maps with colour bars and a histogram per layer (tutorial 1.1).

    ``raw`` and ``stretched`` are (rows, cols, 8) previews of the layers before and after the stretch,
    ``valid`` their mask; scenes bigger than 2000 px (``scene_shape``) pass a subsampled preview.
    """
    plt = pyplot()
    for name, triplet in COMPOSITES.items():
        rgb = stretched[..., [LAYER_NAMES.index(n) for n in triplet]]
        gdal_tif2rgb.save_png(out.path(f"{name}.png"), gdal_tif2rgb.to_rgb8(rgb))
    for name in INDEX_LAYERS:
        figure, axis = plt.subplots(figsize=(7, 6))
        shown = np.where(valid, raw[..., LAYER_NAMES.index(name)], np.nan)
        image = axis.imshow(shown, cmap=INDEX_COLOUR_MAPS[name], vmin=limits[name][0], vmax=limits[name][1])
        figure.colorbar(image, ax=axis, label=name.upper())
        axis.set_title(f"{name.upper()} (colour scale: 1st-99th percentile)")
        axis.set_axis_off()
        gdal_tif2rgb.save_png(out.path(f"{name}.png"), figure)
    for i, name in enumerate(LAYER_NAMES):
        figure, axis = plt.subplots(figsize=(6, 3.5))
        counts, edges = np.histogram(raw[..., i][valid], bins=200)
        axis.stairs(counts, edges, fill=True, color="0.3")  # one artist, not 200 bars: 4x faster to draw
        for bound in limits[name]:
            axis.axvline(bound, color="tab:red", linestyle="--")
        axis.set_title(f"{name}: histogram, dashed lines = stretch limits (1 %, 99 %)")
        axis.set_xlabel("value in the image's units" if name not in INDEX_LAYERS else "index value")
        axis.set_ylabel("pixels" + (" (preview)" if raw.shape[:2] != scene_shape else ""))
        gdal_tif2rgb.save_png(out.path(f"histogram_{name}.png"), figure)


# --- 3. Superpixels (tutorial 2.1) ---------------------------------------------------------------------------

def segment_superpixels(layers: np.ndarray, slic_layers, n_segments: int, compactness: float,
                        valid: np.ndarray, n_strips: int | None = None) -> np.ndarray:
    """SLIC superpixels of 3 layers, treated as an RGB triplet and converted to CIELAB as in the tutorial
    (so ``compactness`` is in Lab units: 10-40 gives compact superpixels that still follow edges).

    The image is cut into ``n_strips`` horizontal strips (default: one per CPU core, each at least 256 rows)
    segmented in parallel threads; superpixels do not cross strip boundaries. Invalid pixels, if any, are
    left out of SLIC and gathered in one superpixel per strip.

    Returns int32 array (rows, cols) of superpixel ids 0..n-1 without gaps.
    """
    rows = valid.shape[0]
    n_strips = n_strips or max(1, min(os.cpu_count() or 1, rows // 256))
    bounds = np.linspace(0, rows, n_strips + 1).round().astype(int)
    channels = [LAYER_NAMES.index(name) for name in slic_layers]

    def segment_strip(k: int) -> np.ndarray:
        strip = slice(bounds[k], bounds[k + 1])
        share = (bounds[k + 1] - bounds[k]) / rows
        return slic_lab(layers[strip][..., channels], max(1, round(n_segments * share)), compactness, valid[strip])

    with ThreadPoolExecutor(n_strips) as pool:  # scikit-image's SLIC loop releases the GIL
        strips = list(pool.map(segment_strip, range(n_strips)))
    offsets = np.cumsum([0] + [int(strip.max()) + 1 for strip in strips[:-1]])
    return consecutive_ids(np.concatenate([strip + offset for strip, offset in zip(strips, offsets)]))


def slic_lab(rgb: np.ndarray, n_segments: int, compactness: float, valid: np.ndarray) -> np.ndarray:
    """scikit-image SLIC of an RGB float image in [0, 1] with its default CIELAB conversion, done here.

    SLIC rescales whatever it gets to [0, 1] by its min and max. On the Lab image that would make
    ``compactness`` depend on the strip's colour range, so it is divided by that range, which leaves
    every SLIC distance comparison exactly as on the unscaled Lab image.
    """
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    if not valid.any():
        return np.zeros(valid.shape, dtype=np.int64)
    lab = rgb2lab(rgb)
    mask = None if valid.all() else valid
    values = lab if mask is None else lab[mask]
    lab_range = float(values.max() - values.min()) or 1.0
    return slic(lab, n_segments=n_segments, compactness=compactness / lab_range, channel_axis=-1,
                convert2lab=False, start_label=0 if mask is None else 1, mask=mask)


def consecutive_ids(segments: np.ndarray) -> np.ndarray:
    """Renumber ids to 0..n-1 in order, removing gaps.

    >>> consecutive_ids(np.array([[5, 5], [2, 9]])).tolist()
    [[1, 1], [0, 2]]
    """
    present = np.bincount(segments.ravel()) > 0
    if present.all():
        return segments.astype(np.int32, copy=False)
    new_ids = (np.cumsum(present) - 1).astype(np.int32)
    return new_ids[segments]


def boundary_image(rgb: np.ndarray, segments: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """Copy of ``rgb`` (rows, cols, 3 uint8) with superpixel edges painted in ``colour``."""
    edges = np.zeros(segments.shape, dtype=bool)
    edges[:, 1:] |= segments[:, 1:] != segments[:, :-1]
    edges[1:, :] |= segments[1:, :] != segments[:-1, :]
    out = rgb.copy()
    out[edges] = colour
    return out


def to_rgb_display(layers: np.ndarray) -> np.ndarray:
    """RGB uint8 image (rows, cols, 3) of the Red, Green, Blue layers of a stretched stack."""
    return gdal_tif2rgb.to_rgb8(layers[..., [LAYER_NAMES.index(n) for n in COMPOSITES["rgb"]]])


# --- 4. Patches and labels (tutorial 2.2) --------------------------------------------------------------------

def superpixel_centroids(segments: np.ndarray) -> np.ndarray:
    """Mean row and column of each superpixel's pixels, rounded half up: int32 array (n, 2)."""
    rows, cols = segments.shape
    flat = segments.ravel()
    sizes = np.bincount(flat)
    row_sum = np.bincount(flat, weights=np.repeat(np.arange(rows, dtype=np.float64), cols))
    col_sum = np.bincount(flat, weights=np.tile(np.arange(cols, dtype=np.float64), rows))
    return np.floor(np.stack([row_sum, col_sum], axis=1) / sizes[:, None] + 0.5).astype(np.int32)


def mirrored_indices(centres: np.ndarray, patch_width: int, length: int) -> np.ndarray:
    """Indices of a ``patch_width``-wide run centred on each of ``centres``, mirrored at 0 and ``length``-1.

    >>> mirrored_indices(np.array([0, 4]), 3, 5).tolist()
    [[1, 0, 1], [3, 4, 3]]
    """
    half = patch_width // 2
    index = centres[:, None] + np.arange(-half, half + 1)
    index = np.abs(index)
    return np.where(index >= length, 2 * (length - 1) - index, index)


def patch_indices(centroids: np.ndarray, patch_width: int, shape: tuple,
                  origin: tuple = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Row (n, w, 1) and column (n, 1, w) indices of the patch at each centroid, mirrored at the borders of a
    scene of ``shape``, relative to ``origin`` (the top-left pixel of the array indexed)."""
    rows, cols = shape[:2]
    if patch_width // 2 >= min(rows, cols):
        raise InputDataError(f"patch width {patch_width} px is too large for a {cols}x{rows} px image")
    return (mirrored_indices(centroids[:, 0], patch_width, rows)[:, :, None] - origin[0],
            mirrored_indices(centroids[:, 1], patch_width, cols)[:, None, :] - origin[1])


def extract_patches(layers: np.ndarray, centroids: np.ndarray, patch_width: int, shape: tuple | None = None,
                    origin: tuple = (0, 0)) -> np.ndarray:
    """The ``patch_width`` x ``patch_width`` patch of ``layers`` (rows, cols, c) centred on each centroid.

    The scene is mirrored at its borders. ``layers`` may be a window of a scene of ``shape`` whose top-left
    pixel is ``origin`` (a tile with its halo). Returns float32 array (n, w, w, c).
    """
    return layers[patch_indices(centroids, patch_width, shape or layers.shape, origin)]


def superpixel_masks(owners: np.ndarray, centroids: np.ndarray, patch_width: int, shape: tuple | None = None,
                     origin: tuple = (0, 0)) -> np.ndarray:
    """For each superpixel i, its patch with 1 where the pixel belongs to i, else 0: uint8 (n, w, w).

    ``owners`` holds superpixel ids (or -1) on the same pixels as ``layers`` in :func:`extract_patches`.
    Tells the CNN which of the patch's pixels are the superpixel it labels (the centre may be all it has in a
    patch of many small superpixels).
    """
    ids = np.arange(len(centroids), dtype=owners.dtype)[:, None, None]
    return (owners[patch_indices(centroids, patch_width, shape or owners.shape, origin)] == ids).astype(np.uint8)


def majority_labels(segments: np.ndarray, codes: np.ndarray, n_classes: int):
    """Majority reference class of each superpixel, and its purity.

    A superpixel of which fewer than half the pixels carry a class (code < ``n_classes``) gets 255.
    Purity is the share of all its pixels that carry the majority class.

    Returns
    -------
    labels : uint8 array (n,)
    purity : float32 array (n,)
    """
    flat = segments.ravel()
    n = int(flat.max()) + 1
    codes = codes.ravel()
    labelled = codes < n_classes
    counts = np.bincount(flat[labelled].astype(np.int64) * n_classes + codes[labelled],
                         minlength=n * n_classes).reshape(n, n_classes)
    sizes = np.bincount(flat, minlength=n)
    majority = counts.argmax(axis=1)
    enough = 2 * counts.sum(axis=1) >= sizes
    labels = np.where(enough & (counts.sum(axis=1) > 0), majority, UNLABELLED).astype(np.uint8)
    purity = (counts[np.arange(n), majority] / sizes).astype(np.float32)
    return labels, purity


def sample_superpixels(layers: np.ndarray, segments: np.ndarray, codes: np.ndarray, valid: np.ndarray,
                       patch_width: int, n_classes: int, shape: tuple | None = None, origin: tuple = (0, 0),
                       core: tuple = (0, 0)) -> dict:
    """Tutorial 2.2 for every superpixel of ``segments``: centroid, patch, mask, majority label, purity.

    ``segments``, ``codes`` and ``valid`` cover the part of the scene (of ``shape``) starting at ``core``;
    ``layers`` covers it plus a halo, starting at ``origin`` (for the whole scene: all three the same).
    Centroids are in scene pixels.
    """
    n = int(segments.max()) + 1
    centroids = superpixel_centroids(segments) + np.array(core, dtype=np.int32)
    if layers.shape[:2] == segments.shape:
        owners = segments
    else:
        owners = np.full(layers.shape[:2], -1, dtype=np.int32)
        owners[core[0] - origin[0]:core[0] - origin[0] + segments.shape[0],
               core[1] - origin[1]:core[1] - origin[1] + segments.shape[1]] = segments
    labels, purity = majority_labels(segments, codes, n_classes)
    sizes = np.bincount(segments.ravel(), minlength=n)
    return {"centroids": centroids, "samples": extract_patches(layers, centroids, patch_width, shape, origin),
            "masks": superpixel_masks(owners, centroids, patch_width, shape, origin), "labels": labels,
            "purity": purity, "valid_fraction": (np.bincount(segments.ravel(), weights=valid.ravel(), minlength=n)
                                                 / sizes).astype(np.float32)}


def example_indices(labels: np.ndarray, n_classes: int, rng: np.random.Generator, per_class: int = 6) -> list:
    """Up to ``per_class`` random superpixels of each class (a list of index arrays, one per class)."""
    chosen = []
    for code in range(n_classes):
        members = np.flatnonzero(labels == code)
        chosen.append(rng.choice(members, size=min(per_class, members.size), replace=False) if members.size
                      else np.zeros(0, dtype=int))
    return chosen


def plot_example_patches(chosen: list, patches: np.ndarray, class_names, per_class: int = 6):
    """Figure of the RGB ``patches`` of the superpixels ``chosen`` per class (tutorial 2.2)."""
    rgb = [LAYER_NAMES.index(n) for n in ("red", "green", "blue")]
    figure, axes = pyplot().subplots(len(class_names), per_class, squeeze=False,
                                     figsize=(1.6 * per_class, 1.7 * len(class_names)))
    start = 0
    for code, name in enumerate(class_names):
        for j, axis in enumerate(axes[code]):
            axis.set_axis_off()
            if j < len(chosen[code]):
                axis.imshow(patches[start + j][..., rgb])
                axis.set_title(f"#{chosen[code][j]}", fontsize=7)
        start += len(chosen[code])
        axes[code][0].text(-0.1, 0.5, name, transform=axes[code][0].transAxes, ha="right", va="center")
    figure.suptitle("Example patches per class (RGB, centred on the superpixel)")
    return figure


# --- 5. Spatial split ----------------------------------------------------------------------------------------

def held_out_superpixels(centroids: np.ndarray, labels: np.ndarray, shape: tuple, block_size: int,
                         test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which labelled superpixels are held out for testing (bool, n): square blocks of ``block_size`` px,
    in random order, go to test until their centroids hold ``test_fraction`` of the labelled superpixels."""
    labelled = labels != UNLABELLED
    blocks_across = -(-shape[1] // block_size)
    block = (centroids[:, 0] // block_size) * blocks_across + centroids[:, 1] // block_size
    n_blocks = (-(-shape[0] // block_size)) * blocks_across
    order = rng.permutation(n_blocks)
    held = np.cumsum(np.bincount(block[labelled], minlength=n_blocks)[order])
    n_test_blocks = int(np.searchsorted(held, test_fraction * labelled.sum())) + 1
    return labelled & np.isin(block, order[:n_test_blocks])


def touches(pixels: np.ndarray, centroids: np.ndarray, patch_width: int, shape: tuple | None = None,
            origin: tuple = (0, 0)) -> np.ndarray:
    """Whether the mirrored patch around each centroid holds a True pixel of ``pixels`` (bool, n).

    ``pixels`` may be a window of a bigger scene of ``shape`` whose top-left pixel is ``origin``.
    """
    return pixels[patch_indices(centroids, patch_width, shape or pixels.shape, origin)].any(axis=(1, 2))


def split_codes(test: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """TEST for held-out superpixels, TRAIN for the other labelled ones, UNUSED for the unlabelled (uint8, n)."""
    return np.where(test, TEST, np.where(labels != UNLABELLED, TRAIN, UNUSED)).astype(np.uint8)


def spatial_split(segments: np.ndarray, centroids: np.ndarray, labels: np.ndarray, patch_width: int,
                  block_size: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Split labelled superpixels into train (0) and test (1) by blocks (:func:`held_out_superpixels`); the rest
    is 2. A train superpixel whose patch (mirrored at the borders, as in :func:`extract_patches`) touches any
    pixel of a test superpixel becomes unused (2), so no training patch sees a test pixel."""
    return tiled_split(lambda window: segments, [(0, 0, *segments.shape)], segments.shape, centroids, labels,
                       patch_width, block_size, test_fraction, rng)


def tiled_split(read_owners, windows, shape: tuple, centroids: np.ndarray, labels: np.ndarray, patch_width: int,
                block_size: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """:func:`spatial_split` of a scene in ``windows``: test superpixels are chosen from all centroids at once,
    then the training superpixels centred in each window are checked against the test pixels of the window and
    its halo, read by ``read_owners(haloed_window)`` (superpixel ids)."""
    test = held_out_superpixels(centroids, labels, shape, block_size, test_fraction, rng)
    split = split_codes(test, labels)
    for window in windows:
        row, col, rows, cols = window
        in_window = ((centroids[:, 0] >= row) & (centroids[:, 0] < row + rows) & (centroids[:, 1] >= col)
                     & (centroids[:, 1] < col + cols) & (split == TRAIN))
        train = np.flatnonzero(in_window)
        top, left, *_ = haloed = grids.with_halo(window, patch_width // 2, shape)
        owners = read_owners(haloed)
        split[train[touches(test[owners], centroids[train], patch_width, shape, (top, left))]] = UNUSED
    return split


# --- Driver 1: the whole scene in memory ---------------------------------------------------------------------

def prepare_whole_scene(scene: Scene, out: OutputSet, record: dict, timings: dict) -> PreparedScene:
    """Step 0 on the whole scene in memory: layers, quicklooks, SLIC, sampling, split, then the writes into
    ``out``; ``record`` is the run's provenance."""
    p = scene.params
    with cli.timed("read image and reference", timings):
        grid = gdal_tif2rgb.read_grid(scene.image)[0]
        raw, valid = read_image(scene)
        codes = read_reference_codes(scene, valid)
    if not valid.any():
        raise InputDataError(f"{scene.image}: every pixel is NaN or nodata")
    log.info("scene %s: %d x %d px, %d classes %s", scene.name, grid.cols, grid.rows, len(scene.classes),
             scene.class_names)
    with cli.timed("layers and stretch", timings):
        layers, preview, preview_valid, limits = stretched_layers(raw, valid, record["stretch"]["limits"])
        record["stretch"]["limits"] = limits
        del raw
    step = grids.display_stride(*valid.shape)
    with cli.timed("quicklooks", timings):
        write_quicklooks(out, preview, layers[::step, ::step], limits, preview_valid, valid.shape)
    del preview
    with cli.timed(f"SLIC (n_segments={p.n_segments}, compactness={p.compactness})", timings):
        segments = segment_superpixels(layers, p.slic_layers, p.n_segments, p.compactness, valid)
    record["superpixels"] = int(segments.max()) + 1  # the row count every superpixel hand-off must have
    log.info("%d superpixels, %.1f px each on average", record["superpixels"], segments.size / record["superpixels"])
    with cli.timed("sampling: centroids, patches, majority labels, split", timings):
        sampled = sample_superpixels(layers, segments, codes, valid, p.patch_width, len(scene.classes))
        sampled["split"] = spatial_split(segments, sampled["centroids"], sampled["labels"], p.patch_width,
                                         p.block_size, p.test_fraction, np.random.default_rng(p.seed))
    with cli.timed("write layers, reference, segments and samples", timings):
        stamp = {contract.STEP0_RUN_ITEM: record["run"]}
        gdal_tif2rgb.write_geotiff(out.path(contract.LAYERS_TIF), np.moveaxis(layers, -1, 0), grid,
                                   band_names=LAYER_NAMES, metadata=stamp)
        if scene.reference is not None:
            with reference_writer(scene, out, grid, stamp) as write_reference:
                write_reference(codes)
        contract.save(contract.SEGMENTS, out.staging, {"segments": segments, contract.PROVENANCE: record})
        gdal_tif2rgb.write_geotiff(out.path(contract.SEGMENTS_TIF), segments, grid, metadata=stamp)
        contract.save(contract.SAMPLES, out.staging, {**sampled, "class_names": scene.class_names,
                                                       "layer_names": LAYER_NAMES, contract.PROVENANCE: record})
    return PreparedScene(labels=sampled["labels"], split=sampled["split"], purity=sampled["purity"],
                         invalid_pixels=int(valid.size - valid.sum()), preview_layers=layers[::step, ::step],
                         preview_segments=segments[::step, ::step],
                         read_patches=lambda indices: sampled["samples"][indices])


def stretched_layers(raw: dict, valid: np.ndarray, limits: dict | None = None):
    """The 8 layers stretched in place with ``limits`` (default: from the preview); also the unstretched preview,
    its mask and the limits (for the quicklooks)."""
    layers = build_layers(raw, valid)
    step = grids.display_stride(*valid.shape)
    preview, preview_valid = layers[::step, ::step].copy(), valid[::step, ::step]
    limits = limits or stretch_limits(preview, preview_valid)
    apply_stretch(layers, limits, valid)
    return layers, preview, preview_valid, limits


def reference_writer(scene: Scene, out: OutputSet, grid: gdal_tif2rgb.Grid, metadata: dict):
    """Writer of ``reference.tif`` (see :func:`gdal_tif2rgb.geotiff_writer`): the reference as class codes
    (255 = unlabelled) with the class colours and names."""
    return gdal_tif2rgb.geotiff_writer(out.path(contract.REFERENCE_TIF), grid, 1, np.uint8, nodata=UNLABELLED,
                                       class_names=scene.class_names, metadata=metadata,
                                       class_colours=gdal_tif2rgb.class_palette(scene.class_names))


# --- Driver 2: tiles with a halo on a Dask cluster -----------------------------------------------------------

def read_preview(scene: Scene, shape: tuple, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Unstretched layers (rows, cols, 8) and valid mask of every ``step``-th row and column, read in strips."""
    names = list(scene.bands)
    strip = step * max(1, 4096 // step)
    parts, masks = [], []
    for row in range(0, shape[0], strip):
        data, _, valid = gdal_tif2rgb.read_bands(scene.image, [scene.bands[n] for n in names],
                                                 window=(row, 0, min(strip, shape[0] - row), shape[1]))
        parts.append(build_layers(dict(zip(names, data[:, ::step, ::step])), valid[::step, ::step]))
        masks.append(valid[::step, ::step])
    return np.concatenate(parts), np.concatenate(masks)


def prepare_tile(scene: Scene, limits: dict, window: tuple, shape: tuple, n_strips: int = 1) -> dict:
    """Step 0 on one tile (runs on a Dask worker): read it with a halo of w/2 pixels, stretch with the
    scene's ``limits``, segment the tile itself (ids from 0), and sample its superpixels with patches that
    see the real neighbours in the halo. Superpixels end at the tile's edges."""
    p = scene.params
    row, col, rows, cols = window
    top, left, *_ = haloed = grids.with_halo(window, p.patch_width // 2, shape)
    raw, valid = read_image(scene, haloed)
    layers = build_layers(raw, valid)
    del raw
    apply_stretch(layers, limits, valid)
    core = (slice(row - top, row - top + rows), slice(col - left, col - left + cols))
    codes = read_reference_codes(scene, valid[core], window)
    n_segments = max(1, round(p.n_segments * rows * cols / (shape[0] * shape[1])))
    segments = segment_superpixels(layers[core], p.slic_layers, n_segments, p.compactness, valid[core], n_strips)
    sampled = sample_superpixels(layers, segments, codes, valid[core], p.patch_width, len(scene.classes), shape,
                                 (top, left), (row, col))
    return {"window": window, "layers": np.ascontiguousarray(layers[core]), "segments": segments, "codes": codes,
            "invalid": int((~valid[core]).sum()), **sampled}


def prepare_tiled(scene: Scene, out: OutputSet, record: dict, client, timings: dict) -> PreparedScene:
    """Step 0 tile by tile on the Dask ``client``'s cluster, memory bounded by the tile size: layers, reference
    and segments go to GeoTIFF window by window, the hand-offs to MATLAB 7.3 files tile by tile, into ``out``;
    ``record`` is the run's provenance."""
    p = scene.params
    grid = gdal_tif2rgb.read_grid(scene.image)[0]
    if p.tile_size < p.patch_width:
        raise ConfigError(f"tile_size = {p.tile_size} must be at least the patch width ({p.patch_width} px)")
    shape = (grid.rows, grid.cols)
    windows = grids.tile_windows(shape, p.tile_size)
    step = grids.display_stride(*shape)
    with cli.timed("preview, stretch limits and quicklooks", timings):
        preview, preview_valid = read_preview(scene, shape, step)
        limits = record["stretch"]["limits"] or stretch_limits(preview, preview_valid)
        record["stretch"]["limits"] = limits
        stretched = preview.copy()
        apply_stretch(stretched, limits, preview_valid)
        write_quicklooks(out, preview, stretched, limits, preview_valid, shape)
    with cli.timed(f"tiles: layers, SLIC (n_segments={p.n_segments}), sampling, writes, split", timings):
        log.info("%d tiles of up to %d px on %s", len(windows), p.tile_size, client)
        tiles = cluster.map_in_order(client, prepare_tile, ((scene, limits, window, shape) for window in windows))
        with contextlib.ExitStack() as stack:
            outputs = TiledOutputs.open(scene, out, grid, {contract.STEP0_RUN_ITEM: record["run"]}, stack)
            kept = write_tiles(scene, outputs, tiles, shape, len(windows))
            record["superpixels"] = len(kept["labels"])
            for mat in (outputs.segments_mat, outputs.samples_mat):
                mat.put(contract.PROVENANCE, contract.as_text(record))
            split = tiled_split(lambda window: outputs.segments_mat.read_window("segments", *window), windows,
                                shape, kept["centroids"], kept["labels"], p.patch_width, p.block_size,
                                p.test_fraction, np.random.default_rng(p.seed))
            outputs.samples_mat.put("split", split)
    return PreparedScene(
        labels=kept["labels"], split=split, purity=kept["purity"], invalid_pixels=kept["invalid"],
        preview_layers=stretched, preview_segments=kept["segments_preview"], tiles=len(windows),
        read_patches=lambda indices: contract.load_rows(contract.SAMPLES, out.staging, ["samples"],
                                                        indices)["samples"])


@dataclass
class TiledOutputs:
    """The writers a tiled run fills tile by tile; every file appears only when the run's block exits cleanly."""

    write_layers: Callable
    write_segments: Callable
    write_reference: Callable
    segments_mat: matfile.MatV73
    samples_mat: matfile.MatV73

    @classmethod
    def open(cls, scene: Scene, out: OutputSet, grid: gdal_tif2rgb.Grid, stamp: dict,
             stack: contextlib.ExitStack) -> "TiledOutputs":
        return cls(
            write_layers=stack.enter_context(gdal_tif2rgb.geotiff_writer(
                out.path(contract.LAYERS_TIF), grid, len(LAYER_NAMES), np.float32, band_names=LAYER_NAMES,
                metadata=stamp)),
            write_segments=stack.enter_context(gdal_tif2rgb.geotiff_writer(
                out.path(contract.SEGMENTS_TIF), grid, 1, np.int32, metadata=stamp)),
            write_reference=stack.enter_context(reference_writer(scene, out, grid, stamp))
            if scene.reference is not None else lambda block, row, col: None,
            segments_mat=stack.enter_context(matfile.mat_v73_writer(contract.SEGMENTS.path(out.staging))),
            samples_mat=stack.enter_context(matfile.mat_v73_writer(contract.SAMPLES.path(out.staging))))


def write_tiles(scene: Scene, outputs: TiledOutputs, tiles, shape: tuple, n_tiles: int) -> dict:
    """Write each tile's layers, reference codes, segments (ids made unique in tile order) and samples as they
    arrive; returns the superpixels' centroids, labels and purity, the invalid pixel count and the segments'
    preview."""
    step = grids.display_stride(*shape)
    segments_preview = np.zeros((-(-shape[0] // step), -(-shape[1] // step)), dtype=np.int32)
    kept = {key: [] for key in ("centroids", "labels", "purity")}
    invalid, offset = 0, 0
    for number, tile in enumerate(tiles, 1):
        row, col, rows, cols = tile["window"]
        ids = tile["segments"] + offset
        outputs.write_layers(np.moveaxis(tile["layers"], -1, 0), row, col)
        outputs.write_segments(ids, row, col)
        outputs.write_reference(tile["codes"], row, col)
        outputs.segments_mat.write_window("segments", ids, row, col, shape)
        grids.place_in_preview(segments_preview, ids, row, col, step)
        for key in SAMPLED_KEYS:
            outputs.samples_mat.append(key, tile[key])
        for key in kept:
            kept[key].append(tile[key])
        invalid += tile["invalid"]
        offset += len(tile["labels"])
        log.info("  tile %d / %d at row %d, col %d: %d superpixels", number, n_tiles, row, col, len(tile["labels"]))
    outputs.samples_mat.put("class_names", np.array(scene.class_names))
    outputs.samples_mat.put("layer_names", np.array(LAYER_NAMES))
    return {**{key: np.concatenate(values) for key, values in kept.items()}, "invalid": invalid,
            "segments_preview": segments_preview}


# --- The finishing path of both drivers ------------------------------------------------------------------------

def summarise(labels: np.ndarray, split: np.ndarray, purity: np.ndarray, class_names) -> dict:
    """Superpixel counts per class and split, as a dict and as printable table lines."""
    counts = {}
    table = [f"{'class':<12}{'superpixels':>12}{'train':>8}{'test':>8}{'unused':>8}{'purity':>8}"]
    for code, name in enumerate([*class_names, "unlabelled"]):
        member = labels == (code if code < len(class_names) else UNLABELLED)
        row = {"superpixels": int(member.sum()), "train": int((member & (split == TRAIN)).sum()),
               "test": int((member & (split == TEST)).sum()), "unused": int((member & (split == UNUSED)).sum()),
               "mean_purity": round(float(purity[member].mean()), 3) if member.any() else None}
        counts[name] = row
        table.append(f"{name:<12}{row['superpixels']:>12}{row['train']:>8}{row['test']:>8}{row['unused']:>8}"
                     f"{row['mean_purity'] if row['mean_purity'] is not None else '-':>8}")
    return {"counts": counts, "table": table}


def finish(scene: Scene, out: OutputSet, prepared: PreparedScene, record: dict, details: dict) -> None:
    """What every driver ends with: superpixel boundaries, example patches, the summary and ``run.json``
    (with ``details``: timings and the sources used)."""
    if prepared.invalid_pixels:
        log.warning("%d pixels are NaN or nodata in %s: they are masked", prepared.invalid_pixels, scene.image.name)
    gdal_tif2rgb.save_png(out.path("segments_boundaries.png"),
                          boundary_image(to_rgb_display(prepared.preview_layers), prepared.preview_segments))
    chosen = example_indices(prepared.labels, len(scene.classes), np.random.default_rng(scene.params.seed))
    patches = prepared.read_patches(np.concatenate(chosen).astype(np.int64))
    gdal_tif2rgb.save_png(out.path("example_patches.png"), plot_example_patches(chosen, patches, scene.class_names))
    summary = summarise(prepared.labels, prepared.split, prepared.purity, scene.class_names)
    for line in summary["table"]:
        log.info(line)
    cli.record_run(scene, out.path("run.json"), "Step0_Data_Preparation", {
        **details, "superpixels": len(prepared.labels), "invalid_pixels": prepared.invalid_pixels,
        "classes": summary["counts"], "tiles": prepared.tiles, "run": record["run"]},
        inputs={fp["path"]: fp["sha256"] for fp in record["inputs"].values() if fp})
    log.info("outputs in %s (total %.1f s)", scene.workdir, sum(details["timings_s"].values()))


# --- Driver 3: explore SLIC's parameters (tutorial 2.1) ---------------------------------------------------------

def explore_slic(scene: Scene, out: OutputSet, crop_size: int = 200) -> None:
    """Grid of SLIC boundaries on a central crop over compactness 0.01..100 and three superpixel counts."""
    raw, valid = read_image(scene)
    layers = stretched_layers(raw, valid)[0]
    rows, cols = valid.shape
    size = min(crop_size, rows, cols)
    top, left = (rows - size) // 2, (cols - size) // 2
    crop, crop_valid = layers[top:top + size, left:left + size], valid[top:top + size, left:left + size]
    scene_count = scene.params.n_segments * size * size / (rows * cols)
    counts = sorted({max(2, round(scene_count * f)) for f in (0.5, 1, 2)})
    compactness_values = [0.01, 0.1, 1, 10, 100]
    rgb = to_rgb_display(crop)
    figure, axes = pyplot().subplots(len(counts), len(compactness_values), squeeze=False,
                                     figsize=(3 * len(compactness_values), 3.1 * len(counts)))
    for i, count in enumerate(counts):
        for j, compactness in enumerate(compactness_values):
            segments = segment_superpixels(crop, scene.params.slic_layers, count, compactness, crop_valid)
            axes[i][j].imshow(boundary_image(rgb, segments))
            axes[i][j].set_title(f"n_segments={count}, compactness={compactness:g}", fontsize=8)
            axes[i][j].set_axis_off()
    figure.suptitle(f"SLIC on a {size}x{size} px crop at row {top}, col {left} "
                    f"(counts scaled from n_segments={scene.params.n_segments} for the whole scene)")
    gdal_tif2rgb.save_png(out.path("explore_slic.png"), figure)
    log.info("wrote explore_slic.png in %s: pick n_segments and compactness, then run without --explore",
             scene.workdir)


def stretch_from_model(scene: Scene) -> dict:
    """The stretch of the scene: the limits of the training scene of the model ``scene.stretch_from`` (so a
    model sees its inputs scaled as in training), or None to take them from this scene."""
    if scene.stretch_from is None:
        return {"limits": None, "from_model_run": None}
    card = model_card.read(scene.stretch_from)
    log.info("stretching with the limits of the model %s trained on scene %s", scene.stretch_from, card.scene)
    return {"limits": {name: tuple(card.stretch_limits[name]) for name in LAYER_NAMES},
            "from_model_run": card.model_run, "from_model": str(scene.stretch_from)}


def prepare(scene: Scene, scheduler: str | None = None, workers: int | None = None, explore: bool = False) -> None:
    """Step 0 with the driver the scene's ``tile_size`` asks for, then the shared finishing path (or, with
    ``explore``, only the SLIC exploration); its outputs are committed as one set."""
    timings = {}
    inputs = tuple(path for path in (scene.image, scene.reference, scene.config_path, scene.stretch_from) if path)
    if explore:
        with open_outputs(scene.workdir, EXPLORE_OUTPUTS, inputs) as out:
            return explore_slic(on_work_grid(scene, out)[0], out)
    tiled = bool(scene.params.tile_size)
    if tiled:
        cluster.check_settings(scheduler, workers)
    with open_outputs(scene.workdir, OUTPUTS, inputs) as out:
        with cli.timed("checksums of the image and reference", timings):
            record = contract.step0_provenance(scene, contract.fingerprint(scene.image), scene.reference and
                                               contract.fingerprint(scene.reference))
        record["stretch"] = stretch_from_model(scene)
        with cli.timed("image and reference on the work grid", timings):
            work, used = on_work_grid(scene, out)
        record["stretch"]["unit"] = "raster values" if used.get("kind") == "raster" else "reflectance"
        if tiled:
            with cluster.dask_client(scheduler, workers) as client:
                prepared = prepare_tiled(work, out, record, client, timings)
        else:
            prepared = prepare_whole_scene(work, out, record, timings)
        finish(scene, out, prepared, record, {"timings_s": timings, "sources": used})


def build_parser():
    parser = cli.build_parser(__doc__, ["n_segments", "compactness", "slic_layers", "patch_width",
                                        "test_fraction", "block_size", "tile_size"])
    cli.add_cluster_flags(parser)
    parser.add_argument("--stretch-from", type=Path, default=None, metavar="MODEL",
                        help="model.keras of a trained model: stretch the layers with its training scene's limits, "
                             "so that it sees this scene's inputs scaled as in training (default: the TOML's "
                             "stretch_from, else this scene's own 1-99 %% limits)")
    parser.add_argument("--explore", action="store_true",
                        help="only render SLIC boundaries for several compactness and n_segments values on a crop")
    return parser


def main(argv=None) -> int:
    """Step 0 from the command line (``--help`` lists the flags)."""
    return cli.run_step(build_parser(), argv, prepare, "scheduler", "workers", "explore")


if __name__ == "__main__":
    sys.exit(main())
