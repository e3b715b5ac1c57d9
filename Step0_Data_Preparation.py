"""Step 0, data preparation (tutorial sections 1 and 2): layers, superpixels and patch samples.

Reads the scene's multi-band image and its land-cover reference (both GeoTIFFs on the same grid),
builds the tutorial's 8 layers (Blue, Green, Red, NIR, SWIR, NDVI, NDWI, NDBI) stretched to [0, 1],
segments 3 of them into SLIC superpixels, and cuts one w x w x 8 patch centred on every superpixel,
labelled by the majority class of its reference pixels. A spatial block split marks superpixels for
training or testing so that no training patch sees a test pixel.

Outputs in the work folder (``data/<name>/`` by default):

- ``layers.tif``: the 8 stretched layers, float32, georeferenced like the image;
- quicklooks: ``rgb.png``, ``nir_green_blue.png``, ``swir_green_blue.png``, ``ndvi.png``, ``ndwi.png``,
  ``ndbi.png``, ``histogram_<layer>.png``;
- ``segments.mat`` (``segments``: int32 rows x cols, superpixel ids 0..n-1), ``segments.tif``,
  ``segments_boundaries.png``;
- ``samples_labels.mat``: ``samples`` (n x w x w x 8 float32), ``masks`` (n x w x w uint8, 1 on the
  superpixel's own pixels), ``labels`` (n uint8, 255 = unlabelled),
  ``centroids`` (n x 2 int32, row and column), ``purity`` (n float32), ``class_names``, ``layer_names``,
  ``split`` (n uint8: 0 train, 1 test, 2 unused), ``valid_fraction`` (n float32);
- ``example_patches.png``, and ``run.json`` (parameters, timings, package versions, input checksums).

``--tile-size`` processes the scene tile by tile, with a halo, on a Dask cluster (``--scheduler``, ``--workers``),
for scenes bigger than memory; the hand-offs are then MATLAB 7.3 files (see the README).

``--explore`` instead renders SLIC boundaries for a range of ``compactness`` and ``n_segments`` values on
a crop (tutorial 2.1), writes ``explore_slic.png`` and stops.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys

import numpy as np

import gdal_tif2rgb as io
import pipeline
from pipeline import INDEX_LAYERS, LAYER_NAMES, timed

log = logging.getLogger(__name__)
STEP0 = "Step0_Data_Preparation.py"
#: Codes of the ``split`` hand-off.
TRAIN, TEST, UNUSED = 0, 1, 2

#: Layer triplets written as colour composites, and the colour maps of the index layers.
COMPOSITES = {"rgb": ("red", "green", "blue"), "nir_green_blue": ("nir", "green", "blue"),
              "swir_green_blue": ("swir", "green", "blue")}
INDEX_COLOUR_MAPS = {"ndvi": "RdYlGn", "ndwi": "BrBG", "ndbi": "RdGy_r"}


def read_inputs(scene: pipeline.Scene):
    """Read the bands the scene names and its reference; refuse grids that differ.

    Returns
    -------
    raw : dict of layer name -> float32 array (rows, cols), in the image's units
    grid : gdal_tif2rgb.Grid
    valid : bool array (rows, cols), False at NaN or nodata pixels of any read band
    codes : uint8 array (rows, cols), class codes 0..K-1 of the reference, 255 where unlabelled
    """
    names = list(scene.bands)
    data, grid, valid = io.read_bands(scene.image, [scene.bands[n] for n in names])
    reference, reference_grid, _ = io.read_labels(scene.reference)
    check_grids(scene, grid, reference_grid)
    codes = reference_to_codes(reference, scene.classes)
    check_class_pixels(scene, np.bincount(codes.ravel(), minlength=256)[:len(scene.classes)], np.unique(reference))
    return dict(zip(names, data)), grid, valid, codes


def check_grids(scene, grid: io.Grid, reference_grid: io.Grid) -> None:
    """Refuse a reference whose grid (size, geotransform, CRS) differs from the image's."""
    if not grid.same_as(reference_grid):
        raise io.InputDataError(f"{scene.reference}: grid ({reference_grid.describe()}) differs from the image "
                                f"{scene.image.name} ({grid.describe()}); resample one onto the other")


def check_class_pixels(scene, pixels_per_class: np.ndarray, present_values: np.ndarray) -> None:
    """Refuse a reference in which no configured class, or one of them, has any pixel."""
    if not pixels_per_class.any():
        present = present_values[:10].tolist()
        raise io.InputDataError(f"{scene.reference}: none of its values {present} is listed in [classes] of "
                                f"{scene.config_path.name}")
    for name, count in zip(scene.classes, pixels_per_class):
        if count == 0:
            raise io.InputDataError(f"{scene.reference}: class '{name}' (values {scene.classes[name]}) has no pixel; "
                                    f"fix [classes] in {scene.config_path.name}")


def reference_to_codes(reference: np.ndarray, classes: dict) -> np.ndarray:
    """Map reference values to class codes 0..K-1 in the order of ``classes``; other values to 255.

    >>> reference_to_codes(np.array([[0, 3], [2, 9]]), {"urban": [3], "crop": [2, 9]}).tolist()
    [[255, 0], [1, 1]]
    """
    lookup = np.full(max(int(reference.max()), max(max(v) for v in classes.values())) + 1, io.UNLABELLED, np.uint8)
    for code, values in enumerate(classes.values()):
        lookup[values] = code
    if reference.min() >= 0:
        return lookup[reference]
    codes = lookup[np.where(reference < 0, 0, reference)]
    codes[reference < 0] = io.UNLABELLED
    return codes


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
    return {name: io.percentile_limits(layers[..., i], valid, low, high) for i, name in enumerate(LAYER_NAMES)}


def apply_stretch(layers: np.ndarray, limits: dict, valid: np.ndarray) -> None:
    """Map each layer in place to [0, 1] between its ``limits``; invalid pixels become 0."""
    for i, name in enumerate(LAYER_NAMES):
        layers[..., i] = io.rescale_to_unit(layers[..., i], *limits[name])
    layers[~valid] = 0


def segment_superpixels(layers: np.ndarray, slic_layers, n_segments: int, compactness: float,
                        valid: np.ndarray, n_strips: int | None = None) -> np.ndarray:
    """SLIC superpixels of 3 layers, treated as an RGB triplet and converted to CIELAB as in the tutorial
    (so ``compactness`` is in Lab units: 10-40 gives compact superpixels that still follow edges).

    The image is cut into ``n_strips`` horizontal strips (default: one per CPU core, each at least 256 rows)
    segmented in parallel threads; superpixels do not cross strip boundaries. Invalid pixels, if any, are
    left out of SLIC and gathered in one superpixel per strip.

    Returns int32 array (rows, cols) of superpixel ids 0..n-1 without gaps.
    """
    from concurrent.futures import ThreadPoolExecutor

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


def superpixel_centroids(segments: np.ndarray) -> np.ndarray:
    """Mean row and column of each superpixel's pixels, rounded half up: int32 array (n, 2)."""
    rows, cols = segments.shape
    flat = segments.ravel()
    sizes = np.bincount(flat)
    row_sum = np.bincount(flat, weights=np.repeat(np.arange(rows, dtype=np.float64), cols))
    col_sum = np.bincount(flat, weights=np.tile(np.arange(cols, dtype=np.float64), rows))
    return np.floor(np.stack([row_sum, col_sum], axis=1) / sizes[:, None] + 0.5).astype(np.int32)


def mirrored_indices(centres: np.ndarray, window: int, length: int) -> np.ndarray:
    """Indices of a ``window``-wide run centred on each of ``centres``, mirrored at 0 and ``length``-1.

    >>> mirrored_indices(np.array([0, 4]), 3, 5).tolist()
    [[1, 0, 1], [3, 4, 3]]
    """
    half = window // 2
    index = centres[:, None] + np.arange(-half, half + 1)
    index = np.abs(index)
    return np.where(index >= length, 2 * (length - 1) - index, index)


def window_indices(centroids: np.ndarray, window: int, shape: tuple,
                   origin: tuple = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Row (n, window, 1) and column (n, 1, window) indices of the window at each centroid, mirrored at the
    borders of a scene of ``shape``, relative to ``origin`` (the top-left pixel of the array indexed)."""
    rows, cols = shape[:2]
    if window // 2 >= min(rows, cols):
        raise io.InputDataError(f"window {window} px is too large for a {cols}x{rows} px image")
    return (mirrored_indices(centroids[:, 0], window, rows)[:, :, None] - origin[0],
            mirrored_indices(centroids[:, 1], window, cols)[:, None, :] - origin[1])


def extract_patches(layers: np.ndarray, centroids: np.ndarray, window: int, shape: tuple | None = None,
                    origin: tuple = (0, 0)) -> np.ndarray:
    """The ``window`` x ``window`` patch of ``layers`` (rows, cols, c) centred on each centroid.

    The scene is mirrored at its borders. ``layers`` may be a window of a scene of ``shape`` whose top-left
    pixel is ``origin`` (a tile with its halo). Returns float32 array (n, window, window, c).
    """
    return layers[window_indices(centroids, window, shape or layers.shape, origin)]


def superpixel_masks(owners: np.ndarray, centroids: np.ndarray, window: int, shape: tuple | None = None,
                     origin: tuple = (0, 0)) -> np.ndarray:
    """For each superpixel i, its patch window with 1 where the pixel belongs to i, else 0: uint8 (n, w, w).

    ``owners`` holds superpixel ids (or -1) on the same pixels as ``layers`` in :func:`extract_patches`.
    Tells the CNN which of the patch's pixels are the superpixel it labels (the centre may be all it has in a
    window of many small superpixels).
    """
    ids = np.arange(len(centroids), dtype=owners.dtype)[:, None, None]
    return (owners[window_indices(centroids, window, shape or owners.shape, origin)] == ids).astype(np.uint8)


def sample_superpixels(layers: np.ndarray, segments: np.ndarray, codes: np.ndarray, valid: np.ndarray,
                       window: int, n_classes: int, shape: tuple | None = None, origin: tuple = (0, 0),
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
    return {"centroids": centroids, "samples": extract_patches(layers, centroids, window, shape, origin),
            "masks": superpixel_masks(owners, centroids, window, shape, origin), "labels": labels, "purity": purity,
            "valid_fraction": (np.bincount(segments.ravel(), weights=valid.ravel(), minlength=n) / sizes
                               ).astype(np.float32)}


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
    labels = np.where(enough & (counts.sum(axis=1) > 0), majority, io.UNLABELLED).astype(np.uint8)
    purity = (counts[np.arange(n), majority] / sizes).astype(np.float32)
    return labels, purity


def held_out_superpixels(centroids: np.ndarray, labels: np.ndarray, shape: tuple, block_size: int,
                     test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which labelled superpixels are held out for testing (bool, n): square blocks of ``block_size`` px,
    in random order, go to test until their centroids hold ``test_fraction`` of the labelled superpixels."""
    labelled = labels != io.UNLABELLED
    blocks_across = -(-shape[1] // block_size)
    block = (centroids[:, 0] // block_size) * blocks_across + centroids[:, 1] // block_size
    n_blocks = (-(-shape[0] // block_size)) * blocks_across
    order = rng.permutation(n_blocks)
    held = np.cumsum(np.bincount(block[labelled], minlength=n_blocks)[order])
    n_test_blocks = int(np.searchsorted(held, test_fraction * labelled.sum())) + 1
    return labelled & np.isin(block, order[:n_test_blocks])


def touches(pixels: np.ndarray, centroids: np.ndarray, window: int, shape: tuple | None = None,
            origin: tuple = (0, 0)) -> np.ndarray:
    """Whether the mirrored ``window`` around each centroid holds a True pixel of ``pixels`` (bool, n).

    ``pixels`` may be a window of a bigger scene of ``shape`` whose top-left pixel is ``origin``.
    """
    return pixels[window_indices(centroids, window, shape or pixels.shape, origin)].any(axis=(1, 2))


def spatial_split(segments: np.ndarray, centroids: np.ndarray, labels: np.ndarray, window: int,
                  block_size: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Split labelled superpixels into train (0) and test (1) by blocks (:func:`held_out_superpixels`); the rest
    is 2. A train superpixel whose ``window`` patch (mirrored at the borders, as in :func:`extract_patches`)
    touches any pixel of a test superpixel becomes unused (2), so no training patch sees a test pixel."""
    test = held_out_superpixels(centroids, labels, segments.shape, block_size, test_fraction, rng)
    split = split_codes(test, labels)
    train = np.flatnonzero(split == TRAIN)
    split[train[touches(test[segments], centroids[train], window)]] = UNUSED
    return split


def split_codes(test: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """TEST for held-out superpixels, TRAIN for the other labelled ones, UNUSED for the unlabelled (uint8, n)."""
    return np.where(test, TEST, np.where(labels != io.UNLABELLED, TRAIN, UNUSED)).astype(np.uint8)


def write_quicklooks(scene, raw: np.ndarray, stretched: np.ndarray, limits: dict, valid: np.ndarray,
                     scene_shape: tuple) -> None:
    """Colour composites, index maps with colour bars and a histogram per layer (tutorial 1.1).

    ``raw`` and ``stretched`` are (rows, cols, 8) previews of the layers before and after the stretch,
    ``valid`` their mask; scenes bigger than 2000 px (``scene_shape``) pass a subsampled preview.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, triplet in COMPOSITES.items():
        rgb = stretched[..., [LAYER_NAMES.index(n) for n in triplet]]
        io.save_png(scene.output(f"{name}.png"), io.to_rgb8(rgb))
    for name in INDEX_LAYERS:
        figure, axis = plt.subplots(figsize=(7, 6))
        shown = np.where(valid, raw[..., LAYER_NAMES.index(name)], np.nan)
        image = axis.imshow(shown, cmap=INDEX_COLOUR_MAPS[name], vmin=limits[name][0], vmax=limits[name][1])
        figure.colorbar(image, ax=axis, label=name.upper())
        axis.set_title(f"{name.upper()} (colour scale: 1st-99th percentile)")
        axis.set_axis_off()
        io.save_png(scene.output(f"{name}.png"), figure)
    for i, name in enumerate(LAYER_NAMES):
        figure, axis = plt.subplots(figsize=(6, 3.5))
        counts, edges = np.histogram(raw[..., i][valid], bins=200)
        axis.stairs(counts, edges, fill=True, color="0.3")  # one artist, not 200 bars: 4x faster to draw
        for bound in limits[name]:
            axis.axvline(bound, color="tab:red", linestyle="--")
        axis.set_title(f"{name}: histogram, dashed lines = stretch limits (1 %, 99 %)")
        axis.set_xlabel("value in the image's units" if name not in INDEX_LAYERS else "index value")
        axis.set_ylabel("pixels" + (" (preview)" if raw.shape[:2] != scene_shape else ""))
        io.save_png(scene.output(f"histogram_{name}.png"), figure)


def boundary_image(rgb: np.ndarray, segments: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """Copy of ``rgb`` (rows, cols, 3 uint8) with superpixel edges painted in ``colour``."""
    edges = np.zeros(segments.shape, dtype=bool)
    edges[:, 1:] |= segments[:, 1:] != segments[:, :-1]
    edges[1:, :] |= segments[1:, :] != segments[:-1, :]
    out = rgb.copy()
    out[edges] = colour
    return out


def plot_example_patches(samples: np.ndarray, labels: np.ndarray, class_names, rng: np.random.Generator,
                         per_class: int = 6):
    """Figure of ``per_class`` random RGB patches of each class (tutorial 2.2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = [LAYER_NAMES.index(n) for n in ("red", "green", "blue")]
    figure, axes = plt.subplots(len(class_names), per_class, figsize=(1.6 * per_class, 1.7 * len(class_names)),
                                squeeze=False)
    for code, name in enumerate(class_names):
        members = np.flatnonzero(labels == code)
        chosen = rng.choice(members, size=min(per_class, members.size), replace=False) if members.size else []
        for j, axis in enumerate(axes[code]):
            axis.set_axis_off()
            if j < len(chosen):
                axis.imshow(samples[chosen[j]][..., rgb])
                axis.set_title(f"#{chosen[j]}", fontsize=7)
        axes[code][0].text(-0.1, 0.5, name, transform=axes[code][0].transAxes, ha="right", va="center")
    figure.suptitle("Example patches per class (RGB, centred on the superpixel)")
    return figure


def explore_slic(scene, layers: np.ndarray, valid: np.ndarray, crop_size: int = 200) -> None:
    """Grid of SLIC boundaries on a central crop over compactness 0.01..100 and three superpixel counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = valid.shape
    size = min(crop_size, rows, cols)
    top, left = (rows - size) // 2, (cols - size) // 2
    crop = layers[top:top + size, left:left + size]
    crop_valid = valid[top:top + size, left:left + size]
    scene_count = scene.params["n_segments"] * size * size / (rows * cols)
    counts = sorted({max(2, round(scene_count * f)) for f in (0.5, 1, 2)})
    compactness_values = [0.01, 0.1, 1, 10, 100]
    rgb = to_rgb_display(crop)
    figure, axes = plt.subplots(len(counts), len(compactness_values), figsize=(3 * len(compactness_values),
                                                                            3.1 * len(counts)), squeeze=False)
    for i, count in enumerate(counts):
        for j, compactness in enumerate(compactness_values):
            segments = segment_superpixels(crop, scene.params["slic_layers"], count, compactness, crop_valid)
            axes[i][j].imshow(boundary_image(rgb, segments))
            axes[i][j].set_title(f"n_segments={count}, compactness={compactness:g}", fontsize=8)
            axes[i][j].set_axis_off()
    figure.suptitle(f"SLIC on a {size}x{size} px crop at row {top}, col {left} "
                    f"(counts scaled from n_segments={scene.params['n_segments']} for the whole scene)")
    io.save_png(scene.output("explore_slic.png"), figure)
    log.info("wrote %s: pick n_segments and compactness, then run without --explore", scene.output("explore_slic.png"))


def to_rgb_display(layers: np.ndarray) -> np.ndarray:
    """RGB uint8 image (rows, cols, 3) of the Red, Green, Blue layers of a stretched stack."""
    return io.to_rgb8(layers[..., [LAYER_NAMES.index(n) for n in COMPOSITES["rgb"]]])


def prepare(args) -> None:
    """Run Step 0 with parsed arguments."""
    scene = pipeline.scene_from_args(args)
    p = scene.params
    timings = {}
    if p["tile_size"] and not args.explore:
        return prepare_scene_tiled(scene, args, timings)
    with timed("read image and reference", timings):
        raw, grid, valid, codes = read_inputs(scene)
    n_invalid = int(valid.size - valid.sum())
    log.info("scene %s: %d x %d px, %d classes %s", scene.name, grid.cols, grid.rows, len(scene.classes),
             scene.class_names)
    if n_invalid:
        log.warning("%d pixels (%.2f %%) are NaN or nodata in %s: they are masked", n_invalid,
                    100 * n_invalid / valid.size, scene.image.name)
    if n_invalid == valid.size:
        raise io.InputDataError(f"{scene.image}: every pixel is NaN or nodata")
    codes[~valid] = io.UNLABELLED
    with timed("layers and stretch", timings):
        layers = build_layers(raw, valid)
        del raw
        step = io.display_stride(*valid.shape)
        preview = layers[::step, ::step].copy()
        limits = stretch_limits(preview, valid[::step, ::step])
        apply_stretch(layers, limits, valid)
    if args.explore:
        explore_slic(scene, layers, valid)
        return
    with timed("quicklooks", timings):
        write_quicklooks(scene, preview, layers[::step, ::step], limits, valid[::step, ::step], valid.shape)
    del preview
    with timed(f"SLIC (n_segments={p['n_segments']}, compactness={p['compactness']})", timings):
        segments = segment_superpixels(layers, p["slic_layers"], p["n_segments"], p["compactness"], valid)
    n = int(segments.max()) + 1
    log.info("%d superpixels, %.1f px each on average", n, segments.size / n)
    with timed("sampling: centroids, patches, majority labels, split", timings):
        sampled = sample_superpixels(layers, segments, codes, valid, p["window"], len(scene.classes))
        sampled["split"] = spatial_split(segments, sampled["centroids"], sampled["labels"], p["window"],
                                         p["block_size"], p["test_fraction"], np.random.default_rng(p["seed"]))
    with timed("write layers, segments and samples", timings):
        io.write_geotiff(scene.output("layers.tif"), np.moveaxis(layers, -1, 0), grid, band_names=LAYER_NAMES)
        io.save_mat(scene.output("segments.mat"), {"segments": segments})
        io.write_geotiff(scene.output("segments.tif"), segments, grid)
        io.save_mat(scene.output("samples_labels.mat"), {
            **sampled, "class_names": np.array(scene.class_names), "layer_names": np.array(LAYER_NAMES)})
        step = io.display_stride(*segments.shape)
        io.save_png(scene.output("segments_boundaries.png"),
                    boundary_image(to_rgb_display(layers[::step, ::step]), segments[::step, ::step]))
        io.save_png(scene.output("example_patches.png"),
                    plot_example_patches(sampled["samples"], sampled["labels"], scene.class_names,
                                         np.random.default_rng(p["seed"])))
    summary = summarise(sampled["labels"], sampled["split"], sampled["purity"], scene.class_names)
    for line in summary["table"]:
        log.info(line)
    pipeline.record_run(scene, "Step0_Data_Preparation", {"timings_s": timings, "superpixels": n,
                                                          "invalid_pixels": n_invalid, "classes": summary["counts"]})
    log.info("outputs in %s (total %.1f s)", scene.workdir, sum(timings.values()))


def load_outputs(scene: pipeline.Scene, keys) -> tuple[dict, np.ndarray]:
    """Step 0's ``samples_labels.mat`` (``keys``) and ``segments``, checked to describe the same superpixels.

    Later steps read Step 0's hand-offs through this, so a missing, truncated or foreign file is reported
    with the step to rerun.
    """
    segments = io.load_mat(scene.output("segments.mat"), ["segments"], made_by=STEP0)["segments"]
    samples = io.load_mat(scene.output("samples_labels.mat"), keys, made_by=STEP0)
    n = int(segments.max()) + 1
    for key in keys:
        if key in ("class_names", "layer_names"):
            continue
        if len(samples[key]) != n:
            raise io.InputDataError(f"{scene.output('samples_labels.mat')}: {key} has {len(samples[key])} rows but "
                                    f"segments.mat has {n} superpixels; rerun {STEP0}")
    return samples, segments


def summarise(labels: np.ndarray, split: np.ndarray, purity: np.ndarray, class_names) -> dict:
    """Superpixel counts per class and split, as a dict and as printable table lines."""
    counts = {}
    table = [f"{'class':<12}{'superpixels':>12}{'train':>8}{'test':>8}{'unused':>8}{'purity':>8}"]
    for code, name in enumerate([*class_names, "unlabelled"]):
        member = labels == (code if code < len(class_names) else io.UNLABELLED)
        row = {"superpixels": int(member.sum()), "train": int((member & (split == TRAIN)).sum()),
               "test": int((member & (split == TEST)).sum()), "unused": int((member & (split == UNUSED)).sum()),
               "mean_purity": round(float(purity[member].mean()), 3) if member.any() else None}
        counts[name] = row
        table.append(f"{name:<12}{row['superpixels']:>12}{row['train']:>8}{row['test']:>8}{row['unused']:>8}"
                     f"{row['mean_purity'] if row['mean_purity'] is not None else '-':>8}")
    return {"counts": counts, "table": table}


def prepare_scene_tiled(scene, args, timings: dict) -> None:
    """Step 0 in tiled mode (``--tile-size``), then the same summary and run record as a whole-scene run."""
    grid, _ = io.read_grid(scene.image)
    check_grids(scene, grid, io.read_grid(scene.reference)[0])
    if scene.params["tile_size"] < scene.params["window"]:
        raise io.ConfigError(f"tile_size = {scene.params['tile_size']} must be at least the window "
                             f"({scene.params['window']} px)")
    result = prepare_tiled(scene, args, grid, timings)
    if result["invalid"]:
        log.warning("%d pixels are NaN or nodata in %s: they are masked", result["invalid"], scene.image.name)
    summary = summarise(result["labels"], result["split"], result["purity"], scene.class_names)
    for line in summary["table"]:
        log.info(line)
    pipeline.record_run(scene, "Step0_Data_Preparation", {
        "timings_s": timings, "superpixels": len(result["labels"]), "invalid_pixels": result["invalid"],
        "classes": summary["counts"], "tiles": len(tile_windows((grid.rows, grid.cols), scene.params["tile_size"]))})
    log.info("outputs in %s (total %.1f s)", scene.workdir, sum(timings.values()))


# --- Tiled mode: scenes bigger than memory, tiles in parallel on a Dask cluster -------------------------------

def tile_windows(shape: tuple, tile_size: int) -> list[tuple[int, int, int, int]]:
    """(row, col, rows, cols) of the tiles covering a scene of ``shape``, row by row.

    >>> tile_windows((5, 7), 4)
    [(0, 0, 4, 4), (0, 4, 4, 3), (4, 0, 1, 4), (4, 4, 1, 3)]
    """
    return [(row, col, min(tile_size, shape[0] - row), min(tile_size, shape[1] - col))
            for row in range(0, shape[0], tile_size) for col in range(0, shape[1], tile_size)]


def with_halo(window: tuple, halo: int, shape: tuple) -> tuple[int, int, int, int]:
    """The (row, col, rows, cols) ``window`` grown by ``halo`` pixels on every side, within the scene.

    >>> with_halo((0, 4, 4, 3), 2, (5, 7))
    (0, 2, 5, 5)
    """
    row, col, rows, cols = window
    top, left = max(0, row - halo), max(0, col - halo)
    return top, left, min(shape[0], row + rows + halo) - top, min(shape[1], col + cols + halo) - left


def read_preview(scene, shape: tuple, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Unstretched layers (rows, cols, 8) and valid mask of every ``step``-th row and column, read in strips."""
    names = list(scene.bands)
    strip = step * max(1, 4096 // step)
    parts, masks = [], []
    for row in range(0, shape[0], strip):
        data, _, valid = io.read_bands(scene.image, [scene.bands[n] for n in names],
                                       window=(row, 0, min(strip, shape[0] - row), shape[1]))
        parts.append(build_layers(dict(zip(names, data[:, ::step, ::step])), valid[::step, ::step]))
        masks.append(valid[::step, ::step])
    return np.concatenate(parts), np.concatenate(masks)


def prepare_tile(scene, limits: dict, window: tuple, shape: tuple, n_strips: int = 1) -> dict:
    """Step 0 on one tile (runs on a Dask worker): read it with a halo of w/2 pixels, stretch with the
    scene's ``limits``, segment the tile itself (ids from 0), and sample its superpixels with patches that
    see the real neighbours in the halo. Superpixels end at the tile's edges."""
    p = scene.params
    row, col, rows, cols = window
    top, left, *_ = haloed = with_halo(window, p["window"] // 2, shape)
    names = list(scene.bands)
    data, _, valid = io.read_bands(scene.image, [scene.bands[n] for n in names], window=haloed)
    layers = build_layers(dict(zip(names, data)), valid)
    del data
    apply_stretch(layers, limits, valid)
    core = (slice(row - top, row - top + rows), slice(col - left, col - left + cols))
    reference = io.read_labels(scene.reference, window=window)[0]
    codes = reference_to_codes(reference, scene.classes)
    codes[~valid[core]] = io.UNLABELLED
    n_segments = max(1, round(p["n_segments"] * rows * cols / (shape[0] * shape[1])))
    segments = segment_superpixels(layers[core], p["slic_layers"], n_segments, p["compactness"], valid[core], n_strips)
    sampled = sample_superpixels(layers, segments, codes, valid[core], p["window"], len(scene.classes), shape,
                                 (top, left), (row, col))
    return {"window": window, "layers": np.ascontiguousarray(layers[core]), "segments": segments,
            "class_pixels": np.bincount(codes.ravel(), minlength=256)[:len(scene.classes)],
            "reference_values": np.unique(reference), "invalid": int((~valid[core]).sum()), **sampled}


def prepare_tiled(scene, args, grid: io.Grid, timings: dict) -> dict:
    """Step 0 tile by tile on a Dask cluster, memory bounded by the tile size: layers, segments and the map
    go to GeoTIFF window by window, the hand-offs to MATLAB 7.3 files row block by row block."""
    p = scene.params
    shape = (grid.rows, grid.cols)
    windows = tile_windows(shape, p["tile_size"])
    step = io.display_stride(*shape)
    with timed("preview, stretch limits and quicklooks", timings):
        preview, preview_valid = read_preview(scene, shape, step)
        limits = stretch_limits(preview, preview_valid)
        stretched = preview.copy()
        apply_stretch(stretched, limits, preview_valid)
        write_quicklooks(scene, preview, stretched, limits, preview_valid, shape)
    kept = {key: [] for key in ("centroids", "labels", "purity")}
    segments_preview = np.zeros(preview_valid.shape, dtype=np.int32)
    class_pixels, present, invalid, offset, examples = 0, set(), 0, 0, None
    with contextlib.ExitStack() as outputs:
        write_layers = outputs.enter_context(io.geotiff_writer(scene.output("layers.tif"), grid, len(LAYER_NAMES),
                                                               np.float32, band_names=LAYER_NAMES))
        write_segments = outputs.enter_context(io.geotiff_writer(scene.output("segments.tif"), grid, 1, np.int32))
        segments_mat = outputs.enter_context(io.mat_v73_writer(scene.output("segments.mat")))
        samples_mat = outputs.enter_context(io.mat_v73_writer(scene.output("samples_labels.mat")))
        client = outputs.enter_context(pipeline.dask_client(args.scheduler, args.workers))
        log.info("%d tiles of up to %d px on %s", len(windows), p["tile_size"], client)
        with timed(f"tiles: layers, SLIC (n_segments={p['n_segments']}), sampling, writes", timings):
            workers = len(client.scheduler_info()["workers"])
            tasks = ((scene, limits, window, shape) for window in windows)
            for number, tile in enumerate(pipeline.map_in_order(client, prepare_tile, tasks, 2 * workers), 1):
                row, col, rows, cols = tile["window"]
                ids = tile["segments"] + offset
                write_layers(np.moveaxis(tile["layers"], -1, 0), row, col)
                write_segments(ids, row, col)
                segments_mat.write_window("segments", ids, row, col, shape)
                io.place_in_preview(segments_preview, ids, row, col, step)
                for key in ("samples", "masks", "labels", "centroids", "purity", "valid_fraction"):
                    samples_mat.append(key, tile[key])
                for key in kept:
                    kept[key].append(tile[key])
                class_pixels = class_pixels + tile["class_pixels"]
                present.update(tile["reference_values"].tolist())
                invalid += tile["invalid"]
                offset += len(tile["labels"])
                examples = examples or (tile["samples"], tile["labels"])
                log.info("  tile %d / %d at row %d, col %d: %d superpixels", number, len(windows), row, col,
                         len(tile["labels"]))
        check_class_pixels(scene, class_pixels, np.array(sorted(present)))
        centroids, labels, purity = (np.concatenate(kept[key]) for key in ("centroids", "labels", "purity"))
        with timed("spatial split, tile by tile", timings):
            split = tiled_split(segments_mat, windows, shape, centroids, labels, p)
        samples_mat.put("split", split)
        samples_mat.put("class_names", np.array(scene.class_names))
        samples_mat.put("layer_names", np.array(LAYER_NAMES))
    io.save_png(scene.output("segments_boundaries.png"),
                boundary_image(to_rgb_display(stretched), segments_preview))
    io.save_png(scene.output("example_patches.png"),
                plot_example_patches(*examples, scene.class_names, np.random.default_rng(p["seed"])))
    return {"labels": labels, "split": split, "purity": purity, "invalid": invalid}


def tiled_split(segments_mat, windows, shape, centroids, labels, p) -> np.ndarray:
    """:func:`spatial_split` for a tiled scene: test superpixels are chosen from all centroids at once, then
    each tile's training superpixels are checked against the test pixels of the tile and its halo."""
    test = held_out_superpixels(centroids, labels, shape, p["block_size"], p["test_fraction"],
                                np.random.default_rng(p["seed"]))
    split = split_codes(test, labels)
    for window in windows:
        row, col, rows, cols = window
        in_tile = ((centroids[:, 0] >= row) & (centroids[:, 0] < row + rows) & (centroids[:, 1] >= col)
                   & (centroids[:, 1] < col + cols) & (split == TRAIN))
        train = np.flatnonzero(in_tile)
        top, left, *_ = haloed = with_halo(window, p["window"] // 2, shape)
        owners = segments_mat.read_window("segments", *haloed)
        split[train[touches(test[owners], centroids[train], p["window"], shape, (top, left))]] = UNUSED
    return split


def build_parser():
    parser = pipeline.build_parser(__doc__, ["n_segments", "compactness", "slic_layers", "window", "test_fraction",
                                             "block_size", "tile_size"])
    pipeline.add_cluster_flags(parser)
    parser.add_argument("--explore", action="store_true",
                        help="only render SLIC boundaries for several compactness and n_segments values on a crop")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return pipeline.run_step(prepare, args)


if __name__ == "__main__":
    sys.exit(main())
