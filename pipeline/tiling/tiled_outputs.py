"""The files a tiled Step 0 writes tile by tile: layers, reference and segments GeoTIFFs window by window, the
hand-offs ``segments.mat`` and ``samples_labels.mat`` as MATLAB 7.3 files appended to superpixel by superpixel.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

import gdal_tif2rgb
from pipeline.handoffs import contract, matfile
from pipeline.core import grids
from pipeline.core.vocabulary import NO_SUPERPIXEL
from pipeline.run.outputs import OutputSet
from pipeline.core import vocabulary

log = logging.getLogger(__name__)

#: Superpixel-sized keys of ``samples_labels.mat`` that the tiled driver appends tile by tile.
SAMPLED_KEYS = ("samples", "masks", "labels", "centroids", "purity")


@dataclass
class TiledOutputs:
    """The writers a tiled run fills tile by tile; every file appears only when the run's block exits cleanly."""

    write_layers: Callable
    write_segments: Callable
    write_reference: Callable
    segments_mat: matfile.MatV73
    samples_mat: matfile.MatV73
    layer_names: tuple  # the layers of ``layers.tif`` and of the patches, in order

    @classmethod
    def open(cls, out: OutputSet, grid: gdal_tif2rgb.Grid, run: str, raster_stack: contextlib.ExitStack,
             mat_stack: contextlib.ExitStack, layer_names: tuple, class_names=None) -> "TiledOutputs":
        """The writers of ``out``'s files on ``grid``, the rasters entered on ``raster_stack``, the MATLAB files
        on ``mat_stack``; the rasters carry the Step 0 ``run``; the layers are ``layer_names``. ``class_names`` are those of ``reference.tif``,
        or None for a scene without a reference (its blocks are then dropped)."""
        def raster(handoff, **style):
            return raster_stack.enter_context(contract.raster_writer(handoff, out.staging, grid, run, **style))

        return cls(
            write_layers=raster(contract.layers_raster(layer_names)), write_segments=raster(contract.SEGMENTS_RASTER),
            write_reference=raster(contract.REFERENCE, **contract.class_style(class_names))
            if class_names is not None else lambda block, row, col: None,
            segments_mat=mat_stack.enter_context(matfile.mat_v73_writer(contract.SEGMENTS.path(out.staging))),
            samples_mat=mat_stack.enter_context(matfile.mat_v73_writer(contract.SAMPLES.path(out.staging),
                                                                       contract.SAMPLES.compressed)),
            layer_names=tuple(layer_names))


def write_tiles(outputs: TiledOutputs, tiles, shape: tuple, n_tiles: int, class_names) -> dict:
    """Write each of ``tiles`` (dicts of a tile's window, layers, class codes, segments and sampled arrays) of a
    scene of ``shape`` as they arrive: layers, reference codes, segments (ids made unique in tile order) and
    samples; then the ``class_names`` and layer names.

    Returns the superpixels' ``centroids`` (n, 2), ``labels`` and ``purity`` (n,), the ``invalid`` pixel count
    and ``segments_preview``, the segments (int32) on every ``grids.display_stride``-th row and column.
    """
    step = grids.display_stride(*shape)
    segments_preview = np.full((-(-shape[0] // step), -(-shape[1] // step)), NO_SUPERPIXEL, dtype=np.int32)
    kept = {key: [] for key in ("centroids", "labels", "purity")}
    invalid, offset = 0, 0
    for number, tile in enumerate(tiles, 1):
        row, col, rows, cols = tile["window"]
        ids = np.where(tile["segments"] == NO_SUPERPIXEL, NO_SUPERPIXEL, tile["segments"] + offset)
        outputs.write_layers(tile["layers"], row, col)
        outputs.write_segments(ids, row, col)
        outputs.write_reference(tile["codes"], row, col)
        outputs.segments_mat.write_window("segments", ids, row, col, shape)
        grids.place_in_preview(segments_preview, ids, row, col, step)
        for key in SAMPLED_KEYS:
            outputs.samples_mat.append(key, contract.encoded(contract.SAMPLES, key, tile[key]))
        for key in kept:
            kept[key].append(tile[key])
        invalid += tile["invalid"]
        offset += len(tile["labels"])
        log.info("  tile %d / %d at row %d, col %d: %d superpixels", number, n_tiles, row, col, len(tile["labels"]))
    outputs.samples_mat.put(contract.PATCH_SCALE, contract.encoded(contract.SAMPLES, contract.PATCH_SCALE,
                                                                   vocabulary.UNIT_SCALE))
    outputs.samples_mat.put("class_names", np.array(class_names))
    outputs.samples_mat.put("layer_names", np.array(outputs.layer_names))
    return {**{key: np.concatenate(values) for key, values in kept.items()}, "invalid": invalid,
            "segments_preview": segments_preview}
