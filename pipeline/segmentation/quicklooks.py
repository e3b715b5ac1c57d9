"""Step 0's figures and PNGs: colour composites, index maps, histograms, superpixel boundaries, example patches
and the SLIC exploration figure (tutorial sections 1.1, 2.1 and 2.2).

Layers are stretched (or, for index maps and histograms, raw) float32 stacks (rows, cols, 8) in the order of
``LAYER_NAMES``; figures are returned and written by ``pipeline.run.files.save_png``.
"""
from __future__ import annotations

import numpy as np

import gdal_tif2rgb
from pipeline.core import grids
from pipeline.core.stretch import unit_to_byte
from pipeline.run import files
from pipeline.segmentation import superpixels
from pipeline.core.vocabulary import INDEX_LAYERS, LAYER_NAMES, NO_SUPERPIXEL
from pipeline.run.figures import pyplot
from pipeline.segmentation.layers import select_layers

#: Layer triplets written as colour composites, and the colour maps of the index layers.
COMPOSITES = {"rgb": ("red", "green", "blue"), "nir_green_blue": ("nir", "green", "blue"),
              "swir_green_blue": ("swir", "green", "blue")}
INDEX_COLOUR_MAPS = {"ndvi": "RdYlGn", "ndwi": "BrBG", "ndbi": "RdGy_r"}
#: Longest side of an index map's image (px): about what its figure shows, so matplotlib has little to resample.
INDEX_MAP_PX = 1000


def write_quicklooks(out, raw: np.ndarray, steps: np.ndarray, limits: dict, valid: np.ndarray,
                     scene_shape: tuple) -> None:
    """Colour composites, index maps with colour bars and a histogram per layer (tutorial 1.1), written to
    ``out.path(name)`` (an ``outputs.OutputSet``).

    ``raw`` and ``steps`` are (rows, cols, 8) previews of the layers before and after the stretch (as stored
    uint8 steps),
    ``valid`` their mask (rows, cols) and ``limits`` the stretch (layer name -> (low, high)); scenes bigger
    than 2000 px (``scene_shape``, rows and cols) pass a subsampled preview, and the index maps show every
    s-th pixel of it, at most ``INDEX_MAP_PX`` on the longest side.
    """
    plt = pyplot()
    step = grids.display_stride(*valid.shape, INDEX_MAP_PX)  # the index maps' pixels at the figure's size
    for name, triplet in COMPOSITES.items():  # masked pixels blank (white)
        files.save_png(out.path(f"{name}.png"), np.where(valid[..., None], select_layers(steps, triplet), 255))
    for name in INDEX_LAYERS:
        figure, axis = plt.subplots(figsize=(7, 6))
        figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93)  # its own margins: drawn once
        shown = np.where(valid[::step, ::step], raw[::step, ::step, LAYER_NAMES.index(name)], np.nan)
        image = axis.imshow(shown, cmap=INDEX_COLOUR_MAPS[name], vmin=limits[name][0], vmax=limits[name][1])
        figure.colorbar(image, ax=axis, label=name.upper())
        axis.set_title(f"{name.upper()} (colour scale: 1st-99th percentile)")
        axis.set_axis_off()
        files.save_png(out.path(f"{name}.png"), figure, crop=False)
    for i, name in enumerate(LAYER_NAMES):
        figure, axis = plt.subplots(figsize=(6, 3.5))
        figure.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)
        counts, edges = np.histogram(raw[..., i][valid], bins=200)
        axis.stairs(counts, edges, fill=True, color="0.3")  # one artist, not 200 bars: 4x faster to draw
        for bound in limits[name]:
            axis.axvline(bound, color="tab:red", linestyle="--")
        axis.set_title(f"{name}: histogram, dashed lines = stretch limits (1 %, 99 %)")
        axis.set_xlabel("value in the image's units" if name not in INDEX_LAYERS else "index value")
        axis.set_ylabel("pixels" + (" (preview)" if raw.shape[:2] != scene_shape else ""))
        files.save_png(out.path(f"histogram_{name}.png"), figure, crop=False)


def boundary_image(rgb: np.ndarray, segments: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """Copy of ``rgb`` (rows, cols, 3 uint8) with the edges of the superpixels ``segments`` (rows, cols)
    painted in ``colour`` and pixels of no superpixel (-1, masked) blank (white).

    >>> boundary_image(np.zeros((1, 4, 3), np.uint8), np.array([[0, 0, 1, -1]]))[..., 2].tolist()
    [[0, 0, 0, 255]]
    """
    edges = np.zeros(segments.shape, dtype=bool)
    edges[:, 1:] |= segments[:, 1:] != segments[:, :-1]
    edges[1:, :] |= segments[1:, :] != segments[:-1, :]
    out = rgb.copy()
    out[edges] = colour
    out[segments == NO_SUPERPIXEL] = 255
    return out


def plot_example_patches(chosen: list, patches: np.ndarray, class_names, per_class: int = 6, gap: int = 8):
    """Figure of the RGB ``patches`` (m, w, w, 8), stretched, of the superpixels ``chosen`` per class (one
    index array per class, m indices in all, in that order) (tutorial 2.2): one row per class, the patches
    ``gap`` px apart in one mosaic image (one image draws several times faster than an axes per patch)."""
    width = patches.shape[1]
    cell = width + gap
    mosaic = np.full((len(class_names) * cell, per_class * cell, 3), 255, np.uint8)
    rgb = unit_to_byte(select_layers(patches, COMPOSITES["rgb"]))
    figure, axis = pyplot().subplots(figsize=(1.6 * per_class, 1.6 * per_class * mosaic.shape[0] / mosaic.shape[1]))
    figure.subplots_adjust(left=0.14, right=0.99, bottom=0.01, top=0.9)
    start = 0
    for code, name in enumerate(class_names):
        for j, index in enumerate(chosen[code][:per_class]):
            top, left = code * cell + gap, j * cell + gap // 2
            mosaic[top:top + width, left:left + width] = rgb[start + j]
            axis.text(left + width / 2, top - 1, f"#{index}", fontsize=7, ha="center", va="bottom")
        start += len(chosen[code])
        axis.text(-2, code * cell + gap + width / 2, name, ha="right", va="center")
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_axis_off()
    figure.suptitle("Example patches per class (RGB, centred on the superpixel)")
    return figure


def plot_slic_exploration(rgb: np.ndarray, slic_lab: np.ndarray, valid: np.ndarray, n_segments: int,
                          crop_size: int = 200):
    """Figure of SLIC boundaries on the central ``crop_size`` px crop of a scene (tutorial 2.1), drawn on its
    ``rgb`` (rows, cols, 3 uint8), of SLIC on its ``slic_lab`` (rows, cols, 3: CIELAB of the stretched SLIC
    layers, see ``superpixels.segment``): compactness 0.01..100 across, down three superpixel counts, half, once
    and twice the scene's ``n_segments`` scaled to the crop; ``valid`` (rows, cols) masks the pixels SLIC sees."""
    rows, cols = valid.shape
    size = min(crop_size, rows, cols)
    top, left = (rows - size) // 2, (cols - size) // 2
    crop = (slice(top, top + size), slice(left, left + size))
    scene_count = n_segments * size * size / (rows * cols)
    counts = sorted({max(2, round(scene_count * f)) for f in (0.5, 1, 2)})
    compactness_values = [0.01, 0.1, 1, 10, 100]
    figure, axes = pyplot().subplots(len(counts), len(compactness_values), squeeze=False,
                                     figsize=(3 * len(compactness_values), 3.1 * len(counts)))
    for i, count in enumerate(counts):
        for j, compactness in enumerate(compactness_values):
            segments = superpixels.segment(slic_lab[crop], count, compactness, valid[crop])
            axes[i][j].imshow(boundary_image(rgb[crop], segments))
            axes[i][j].set_title(f"n_segments={count}, compactness={compactness:g}", fontsize=8)
            axes[i][j].set_axis_off()
    figure.suptitle(f"SLIC on a {size}x{size} px crop at row {top}, col {left} "
                    f"(counts scaled from n_segments={n_segments} for the whole scene)")
    return figure


def write_clear_observations(path, clear: np.ndarray, grid, n_dates: int) -> None:
    """The clear dates of every pixel (uint8, rows x cols on ``grid``) as the GeoTIFF ``path`` and, beside it,
    its quicklook (``.png``)."""
    gdal_tif2rgb.write_geotiff(path, clear, grid, band_names=["clear_observations"])
    step = grids.display_stride(*clear.shape)
    files.save_png(path.with_suffix(".png"), plot_clear_observations(clear[::step, ::step], n_dates))


def plot_clear_observations(clear: np.ndarray, n_dates: int):
    """Figure of the clear dates of every pixel (uint8, rows x cols of a preview), 0 (no clear date, nodata) to
    ``n_dates``, with a colour bar."""
    figure, axes = pyplot().subplots(figsize=(8, 8 * clear.shape[0] / max(clear.shape[1], 1) + 0.8))
    image = axes.imshow(clear, cmap="viridis", vmin=0, vmax=max(n_dates, 1), interpolation="nearest")
    figure.colorbar(image, ax=axes, ticks=range(n_dates + 1), label="clear dates (0 = no data)", shrink=0.8)
    axes.set_title(f"Clear observations of each pixel ({n_dates} date{'s' if n_dates > 1 else ''})")
    axes.set_axis_off()
    return figure
