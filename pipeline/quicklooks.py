"""Step 0's figures and PNGs: colour composites, index maps, histograms, superpixel boundaries, example patches
and the SLIC exploration figure (tutorial sections 1.1, 2.1 and 2.2).

Layers are stretched (or, for index maps and histograms, raw) float32 stacks (rows, cols, 8) in the order of
``contract.LAYER_NAMES``; figures are returned and written by ``gdal_tif2rgb.save_png``.
"""
from __future__ import annotations

import numpy as np

import gdal_tif2rgb
from pipeline import grids, superpixels
from pipeline.contract import INDEX_LAYERS, LAYER_NAMES
from pipeline.figures import pyplot

#: Layer triplets written as colour composites, and the colour maps of the index layers.
COMPOSITES = {"rgb": ("red", "green", "blue"), "nir_green_blue": ("nir", "green", "blue"),
              "swir_green_blue": ("swir", "green", "blue")}
INDEX_COLOUR_MAPS = {"ndvi": "RdYlGn", "ndwi": "BrBG", "ndbi": "RdGy_r"}


def write_quicklooks(out, raw: np.ndarray, stretched: np.ndarray, limits: dict, valid: np.ndarray,
                     scene_shape: tuple) -> None:
    """Colour composites, index maps with colour bars and a histogram per layer (tutorial 1.1), written to
    ``out.path(name)`` (an ``outputs.OutputSet``).

    ``raw`` and ``stretched`` are (rows, cols, 8) previews of the layers before and after the stretch,
    ``valid`` their mask (rows, cols) and ``limits`` the stretch (layer name -> (low, high)); scenes bigger
    than 2000 px (``scene_shape``, rows and cols) pass a subsampled preview.
    """
    plt = pyplot()
    for name, triplet in COMPOSITES.items():
        rgb = stretched[..., [LAYER_NAMES.index(n) for n in triplet]]
        gdal_tif2rgb.save_png(out.path(f"{name}.png"), gdal_tif2rgb.unit_to_byte(rgb))
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


def boundary_image(rgb: np.ndarray, segments: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """Copy of ``rgb`` (rows, cols, 3 uint8) with the edges of the superpixels ``segments`` (rows, cols)
    painted in ``colour``.

    >>> boundary_image(np.zeros((1, 3, 3), np.uint8), np.array([[0, 0, 1]]))[..., 0].tolist()
    [[0, 0, 255]]
    """
    edges = np.zeros(segments.shape, dtype=bool)
    edges[:, 1:] |= segments[:, 1:] != segments[:, :-1]
    edges[1:, :] |= segments[1:, :] != segments[:-1, :]
    out = rgb.copy()
    out[edges] = colour
    return out


def to_rgb_display(layers: np.ndarray) -> np.ndarray:
    """RGB uint8 image (rows, cols, 3) of the Red, Green, Blue layers of a stretched stack (rows, cols, 8)."""
    return gdal_tif2rgb.unit_to_byte(layers[..., [LAYER_NAMES.index(n) for n in COMPOSITES["rgb"]]])


def plot_example_patches(chosen: list, patches: np.ndarray, class_names, per_class: int = 6):
    """Figure of the RGB ``patches`` (m, w, w, 8), stretched, of the superpixels ``chosen`` per class (one
    index array per class, m indices in all, in that order) (tutorial 2.2)."""
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


def plot_slic_exploration(layers: np.ndarray, valid: np.ndarray, slic_layers, n_segments: int,
                          crop_size: int = 200):
    """Figure of SLIC boundaries on the central ``crop_size`` px crop of the stretched ``layers`` (rows, cols, 8)
    (tutorial 2.1): compactness 0.01..100 across, down three superpixel counts, half, once and twice the
    scene's ``n_segments`` scaled to the crop; ``valid`` (rows, cols) masks the pixels SLIC sees."""
    rows, cols = valid.shape
    size = min(crop_size, rows, cols)
    top, left = (rows - size) // 2, (cols - size) // 2
    crop, crop_valid = layers[top:top + size, left:left + size], valid[top:top + size, left:left + size]
    scene_count = n_segments * size * size / (rows * cols)
    counts = sorted({max(2, round(scene_count * f)) for f in (0.5, 1, 2)})
    compactness_values = [0.01, 0.1, 1, 10, 100]
    rgb = to_rgb_display(crop)
    figure, axes = pyplot().subplots(len(counts), len(compactness_values), squeeze=False,
                                     figsize=(3 * len(compactness_values), 3.1 * len(counts)))
    for i, count in enumerate(counts):
        for j, compactness in enumerate(compactness_values):
            segments = superpixels.segment(crop, slic_layers, count, compactness, crop_valid)
            axes[i][j].imshow(boundary_image(rgb, segments))
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
    gdal_tif2rgb.save_png(path.with_suffix(".png"), plot_clear_observations(clear[::step, ::step], n_dates))


def plot_clear_observations(clear: np.ndarray, n_dates: int):
    """Figure of the clear dates of every pixel (uint8, rows x cols of a preview), 0 (no clear date, nodata) to
    ``n_dates``, with a colour bar."""
    figure, axes = pyplot().subplots(figsize=(8, 8 * clear.shape[0] / max(clear.shape[1], 1) + 0.8))
    image = axes.imshow(clear, cmap="viridis", vmin=0, vmax=max(n_dates, 1), interpolation="nearest")
    figure.colorbar(image, ax=axes, ticks=range(n_dates + 1), label="clear dates (0 = no data)", shrink=0.8)
    axes.set_title(f"Clear observations of each pixel ({n_dates} date{'s' if n_dates > 1 else ''})")
    axes.set_axis_off()
    return figure
