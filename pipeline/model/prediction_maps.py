"""The land-cover map and its uncertainty as files: Cloud-Optimized GeoTIFFs written block by block, a QGIS
style, PNG previews, and the blocks of a tiled run painted window by window from ``segments.tif``.

A *block* is a (rows, cols) array of the scene whose top-left pixel is at (row, col) of the grid.
"""
from __future__ import annotations

import numpy as np

import gdal_tif2rgb
from pipeline.handoffs import contract
from pipeline.core import grids
from pipeline.core.vocabulary import UNLABELLED
from pipeline.run.figures import add_map_frame, plot_class_map, pyplot
from pipeline.run import files
from pipeline.run.outputs import OutputSet

def write_maps(out: OutputSet, class_names, grid: gdal_tif2rgb.Grid, blocks, run: str) -> None:
    """Write the map files of a scene on ``grid`` into ``out`` from ``blocks``.

    ``blocks`` is an iterable of (map block uint8 class codes, uncertainty block float32, row, col) covering the
    grid. Writes the raster hand-offs ``predMap.tif`` (class codes with colour table and ``class_names``, nodata
    255) and ``uncertainty.tif`` (1 - max class probability, NaN where no data), both stamped with the Step 2
    ``run`` id, the QGIS style ``predMap.qml``, and ``predMap.png`` and ``uncertainty.png`` from previews built
    up block by block.
    """
    style = contract.class_style(class_names)
    step = grids.display_stride(grid.rows, grid.cols)
    shape = (-(-grid.rows // step), -(-grid.cols // step))
    preview, uncertainty_preview = np.full(shape, UNLABELLED, dtype=np.uint8), np.full(shape, np.nan, np.float32)
    files.write_qml(out.path("predMap.qml"), **style, nodata=UNLABELLED)
    with contract.raster_writer(contract.PRED_MAP_RASTER, out.staging, grid, run, **style) as write_map, \
            contract.raster_writer(contract.UNCERTAINTY, out.staging, grid, run) as write_uncertainty:
        for block, uncertainty, row, col in blocks:
            write_map(block, row, col)
            write_uncertainty(uncertainty, row, col)
            grids.place_in_preview(preview, block, row, col, step)
            grids.place_in_preview(uncertainty_preview, uncertainty, row, col, step)
    files.save_png(out.path("predMap.png"), plot_class_map(preview, class_names, "Predicted land cover",
                                                           grid=grid))
    files.save_png(out.path("uncertainty.png"),
                   plot_uncertainty(uncertainty_preview, len(class_names), grid=grid))


def uncertainty_maximum(n_classes: int) -> float:
    """The largest possible uncertainty, 1 - max class probability, of ``n_classes`` classes: 1 - 1/K, reached
    when every class is equally likely.

    >>> uncertainty_maximum(4), uncertainty_maximum(2)
    (0.75, 0.5)
    """
    return 1.0 - 1.0 / n_classes


def plot_uncertainty(uncertainty: np.ndarray, n_classes: int | None = None, *, grid=None):
    """Map of ``uncertainty`` (rows, cols), 1 - max class probability per pixel (0 = certain, NaN = no data),
    with a colour bar from 0 to its real maximum 1 - 1/K for ``n_classes`` = K (to 1 when not given); returns
    the Figure. ``grid``: the scene's grid, of which ``uncertainty`` may be a preview, for coordinates and a
    scale bar (see :func:`pipeline.run.figures.plot_class_map`)."""
    top = 1.0 if n_classes is None else uncertainty_maximum(n_classes)
    figure, axis = pyplot().subplots(figsize=(8, 7), layout="constrained")
    extent = None
    if grid is not None:
        xmin, ymin, xmax, ymax = grid.bounds
        extent = (xmin, xmax, ymin, ymax)
    image = axis.imshow(uncertainty, cmap="magma", vmin=0, vmax=top, interpolation="nearest", extent=extent)
    bar = figure.colorbar(image, ax=axis, shrink=0.8, ticks=np.linspace(0, top, 4 if n_classes else 6))
    bar.ax.yaxis.set_major_formatter(lambda value, _: f"{value:.2f}")
    bar.set_label("1 - max class probability" + (f" (at most 1 - 1/{n_classes})" if n_classes else ""))
    axis.set_title("Uncertainty of the predicted class (per superpixel)")
    if grid is None:
        axis.set_axis_off()
    else:
        add_map_frame(axis, grid)
    return figure


def painted_windows(scene, step0_record: dict, grid: gdal_tif2rgb.Grid, pred_labels: np.ndarray,
                    uncertainty: np.ndarray):
    """The blocks of a tiled run: (map block, uncertainty block, row, col), one per window of the scene's
    ``tile_size``, painted with ``pred_labels`` (n,) uint8 and ``uncertainty`` (n,) float32 per superpixel from
    the window of ``segments.tif``, checked to be the file of the Step 0 run of provenance ``step0_record``."""
    for window in grids.tile_windows((grid.rows, grid.cols), scene.params.tile_size):
        segments = contract.read_raster(contract.SEGMENTS_RASTER, scene.workdir, step0_record, window)
        yield (grids.paint_map(pred_labels, segments, UNLABELLED), grids.paint_map(uncertainty, segments, np.nan),
               window[0], window[1])
