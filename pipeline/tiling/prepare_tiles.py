"""Step 0 tile by tile on a Dask cluster, for scenes bigger than memory: each tile's layers, superpixels and
samples on a worker (:func:`prepare_tile`), written as they arrive and then split into train and test
(:func:`prepare_tiled`). The preview, the stretch limits and the quicklooks come first, from
:mod:`pipeline.workflow.prepare`.
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np

from pipeline.core import grids
from pipeline.core.vocabulary import layer_names_of
from pipeline.handoffs import contract, provenance
from pipeline.inputs.sources import PreparedSources
from pipeline.run import cli
from pipeline.run.config import Scene
from pipeline.run.outputs import OutputSet
from pipeline.segmentation import superpixels
from pipeline.segmentation.layers import apply_stretch, build_layers, slic_lab
from pipeline.segmentation.sampling import PreparedScene, sample_superpixels
from pipeline.segmentation.split import tiled_split
from pipeline.tiling import cluster
from pipeline.tiling.tiled_outputs import TiledOutputs, write_tiles

log = logging.getLogger(__name__)


def prepare_tile(scene: Scene, image: PreparedSources, limits: dict, window: tuple, shape: tuple,
                 codes: np.ndarray | None, n_strips: int = 1) -> dict:
    """Step 0 on one tile (runs on a Dask worker): read the ``window`` (row, col, rows, cols) of a scene of
    ``shape`` from ``image`` (on the work grid) with a halo of w/2 pixels, stretch with the scene's ``limits``,
    segment the tile itself (ids from 0, in ``n_strips`` strips), and sample its superpixels with patches that
    see the real neighbours in the halo, labelled by ``codes`` (the reference codes of the ``window``, or None).
    Superpixels end at the tile's edges. Returns what ``tiled_outputs.write_tiles`` writes of a tile, layers and
    patches as stored (uint8 steps, ``contract.encode_unit_values``)."""
    p = scene.params
    row, col, rows, cols = window
    top, left, *_ = haloed = grids.with_halo(window, p.patch_width // 2, shape)
    raw, valid = image.read_image(haloed)
    layers = apply_stretch(build_layers(raw, valid), limits, valid)
    del raw
    core = (slice(row - top, row - top + rows), slice(col - left, col - left + cols))
    codes = image.codes_where_valid(codes, valid[core])
    n_segments = max(1, round(p.n_segments * rows * cols / (shape[0] * shape[1])))
    segments = superpixels.segment(slic_lab(layers[core], p.slic_layers), n_segments, p.compactness, valid[core],
                                   n_strips)
    steps = contract.encode_unit_values(layers)  # the stored precision, a quarter of the bytes to ship
    sampled = sample_superpixels(steps, segments, codes, p.patch_width, len(scene.classes), shape,
                                 (top, left), (row, col))
    return {"window": window, "layers": np.ascontiguousarray(steps[core]), "segments": segments, "codes": codes,
            "invalid": int((~valid[core]).sum()), **sampled}


def prepare_tiled(scene: Scene, image: PreparedSources, limits: dict, codes: np.ndarray | None, out: OutputSet,
                  record: dict, client, timings: dict, preview_steps: np.ndarray) -> PreparedScene:
    """Step 0 tile by tile on the Dask ``client``'s cluster, memory bounded by the tile size: layers, reference
    and segments go to GeoTIFF window by window, the hand-offs to MATLAB 7.3 files tile by tile, into ``out``.

    ``image``: the image on the work grid, stretched with ``limits``; ``codes``: its reference codes (None: no
    reference); ``record``: the hand-offs' provenance, completed here; ``timings``: stage -> seconds, added to;
    ``preview_steps``: the stretched preview of the scene (uint8 steps), for the boundary figure.
    """
    p, grid = scene.params, image.grid
    shape = (grid.rows, grid.cols)
    windows = grids.tile_windows(shape, p.tile_size)
    with cli.timed(f"tiles: layers, SLIC (n_segments={p.n_segments}), sampling, writes, split", timings):
        log.info("%d tiles of up to %d px on %s", len(windows), p.tile_size, client)
        tiles = cluster.map_in_order(client, prepare_tile, (
            (scene, image, limits, (row, col, rows, cols), shape,
             None if codes is None else codes[row:row + rows, col:col + cols]) for row, col, rows, cols in windows))
        with contextlib.ExitStack() as mat_files:
            with contextlib.ExitStack() as rasters:  # closed (made final) first, so that they can be fingerprinted
                outputs = TiledOutputs.open(out, grid, record["stamp"], rasters, mat_files, layer_names_of(limits),
                                            scene.class_names if scene.reference is not None else None)
                kept = write_tiles(outputs, tiles, shape, len(windows), scene.class_names)
            contract.record_rasters(record, out, contract.STEP0_RASTERS)
            record["superpixels"] = len(kept["labels"])
            split = tiled_split(lambda window: outputs.segments_mat.read_window("segments", *window), windows,
                                shape, kept["centroids"], kept["labels"], p.patch_width, p.block_size,
                                p.test_fraction, np.random.default_rng(p.split_seed))
            outputs.samples_mat.put("split", split)
            record["run"] = provenance.step0_identity(record, {**kept, "split": split})
            for mat in (outputs.segments_mat, outputs.samples_mat):
                mat.put(contract.PROVENANCE, contract.as_text(record))
    return PreparedScene(
        labels=kept["labels"], split=split, purity=kept["purity"], invalid_pixels=kept["invalid"],
        preview_steps=preview_steps, preview_segments=kept["segments_preview"], tiles=len(windows),
        read_patches=lambda indices: contract.load_rows(contract.SAMPLES, out.staging, ["samples"],
                                                        indices)["samples"])
