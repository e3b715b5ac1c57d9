"""Step 0, data preparation (tutorial sections 1 and 2): layers, superpixels and patch samples.

Puts the scene's image and land-cover reference on one work grid, the image's (``pipeline/inputs/sources.py``): the
image may be any raster or a Sentinel-2 product (``.SAFE`` folder, its ``.zip``, a folder of band files), read
at 10 m as reflectance and cut to the ``aoi``, its clouds, shadows and bad pixels masked (``pipeline/inputs/clouds.py``),
several dates combined as the median of their clear observations (``pipeline/inputs/composite.py``); the reference, if
any, a raster on any grid and CRS or a vector file, resampled or rasterized to class codes. Then builds the
tutorial's 8 layers (Blue, Green, Red, NIR, SWIR, NDVI, NDWI, NDBI) stretched to [0, 1] (``pipeline/segmentation/layers.py``),
segments 3 of them into SLIC superpixels (``pipeline/segmentation/superpixels.py``) and cuts one w x w x 8 patch centred on
every superpixel, labelled by the majority class of its reference pixels (``pipeline/segmentation/sampling.py``). A block
split (``pipeline/segmentation/split.py``) marks superpixels for training or testing; no training patch sees a test pixel.

Outputs in the work folder (``data/<name>/`` by default; keys and types in ``pipeline/handoffs/contract.py``):

- ``sources/`` (what the work grid was made from; ``image.tif``: a masked image or composite), ``layers.tif``
  (8 stretched layers in [0, 1] as uint8 steps of 1/255, that band scale set), ``reference.tif`` (codes,
  uint8, 255 = unlabelled, colours), on the work grid;
- quicklooks (``pipeline/segmentation/quicklooks.py``): ``rgb.png``, ``nir_green_blue.png``, ``swir_green_blue.png``,
  ``ndvi.png``, ``ndwi.png``, ``ndbi.png``, ``histogram_<layer>.png``;
- ``segments.mat`` (``segments``: int32 rows x cols, superpixel ids 0..n-1, -1 on masked and nodata pixels),
  ``segments.tif``,
  ``segments_boundaries.png``;
- ``samples_labels.mat``: ``samples`` (n x w x w x 8, uint8 steps of ``patch_scale`` = 1/255), ``masks``
  (n x w x w uint8, 1 on the superpixel's own pixels), ``labels`` (n uint8, 255 = unlabelled), ``centroids``
  (n x 2 int32, row and column), ``purity`` (n float32), ``class_names``, ``layer_names``, ``split`` (n uint8:
  0 train, 1 test, 2 unused);
- ``clear_observations.tif`` (uint8, the clear dates of each pixel) and ``.png``, for a masked scene;
- ``example_patches.png``, and ``run.json`` (parameters, timings, package versions, input checksums, sources).

Three drivers: the whole scene in memory (default); ``--tile-size``, tile by tile with a halo on a Dask cluster
(``--scheduler``, ``--workers``) for scenes bigger than memory, whose hand-offs are MATLAB 7.3 files; both end
in the same finishing path. ``--explore`` instead renders SLIC boundaries for a range of ``compactness`` and
``n_segments`` values on a crop (tutorial 2.1), writes ``explore_slic.png`` and stops.
"""
from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.run import files
from pipeline.run import cli
from pipeline.tiling import cluster
from pipeline.handoffs import contract, model_card
from pipeline.core import grids
from pipeline.segmentation import quicklooks, superpixels
from pipeline.model import scene_shift
from pipeline.inputs import sources
from pipeline.run.config import Scene
from pipeline.run.outputs import OutputSet, open_outputs
from pipeline.core.vocabulary import INDEX_LAYERS, LAYER_NAMES, SPECTRAL_BANDS
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.handoffs.fingerprints import fingerprint
from pipeline.segmentation.layers import (apply_stretch, build_layers, check_limits_fit, select_layers, slic_lab, stretched_layers,
                             stretched_preview)
from pipeline.segmentation.sampling import example_indices, sample_superpixels
from pipeline.segmentation.split import spatial_split, summarise, tiled_split
from pipeline.tiling.tiled_outputs import TiledOutputs, write_tiles
from pipeline.core import vocabulary

log = logging.getLogger(__name__)

#: The clear dates of every pixel, written when the scene is masked or has several dates.
CLEAR_OBSERVATIONS = "clear_observations.tif"
#: Every file Step 0 writes (committed together; ``.aux.xml`` side files go with their rasters).
OUTPUTS = (contract.LAYERS.filename, contract.REFERENCE.filename, contract.SEGMENTS_RASTER.filename,
           contract.SEGMENTS.filename,
           contract.SAMPLES.filename, *(f"{name}.png" for name in (*quicklooks.COMPOSITES, *INDEX_LAYERS)),
           *(f"histogram_{name}.png" for name in LAYER_NAMES), "segments_boundaries.png", "example_patches.png",
           "run.json", f"{sources.FOLDER}/", CLEAR_OBSERVATIONS, "clear_observations.png")
EXPLORE_OUTPUTS = ("explore_slic.png",)


@dataclass
class PreparedScene:
    """What either driver hands to the shared finishing path."""

    labels: np.ndarray  # (n,) uint8 majority class codes
    split: np.ndarray  # (n,) uint8 split codes
    purity: np.ndarray  # (n,) float32
    invalid_pixels: int
    preview_steps: np.ndarray  # stretched layers (rows', cols', 8) of the preview, as stored uint8 steps
    preview_segments: np.ndarray  # superpixel ids (rows', cols') on the preview
    read_patches: Callable[[np.ndarray], np.ndarray]  # superpixel indices -> their patches (m, w, w, 8)
    tiles: int = 1


# --- 1. Inputs ---------------------------------------------------------------------------------------------

def on_work_grid(scene: Scene, out: OutputSet, client=None) -> sources.PreparedSources:
    """The scene's image prepared on its work grid by GDAL (the tutorial's SNAP work): a Sentinel-2 product's
    bands stacked at 10 m as reflectance, the image cut to the ``aoi``, each date's clouds, shadows and bad
    pixels masked and several dates combined, window by window (on the Dask ``client``'s cluster if given) (see
    ``pipeline/inputs/sources.py``); the VRTs and a composite go to ``sources/`` in ``out``, the clear dates of every
    pixel to ``clear_observations.tif`` and ``.png``. The reference comes next (``sources.add_reference``)."""
    p = scene.params
    masking = sources.Masking(p.masking, p.mask_classes, p.mask_buffer_m, scene.mask, scene.mask_values)
    run_windows = None if client is None else (lambda function, tuples: cluster.map_in_order(client, function, tuples))
    prepared = sources.prepare_image(scene.images, scene.bands, out.path(sources.FOLDER), aoi=scene.aoi,
                                     masking=masking, run_windows=run_windows)
    if prepared.clear_observations is not None:
        quicklooks.write_clear_observations(out.path(CLEAR_OBSERVATIONS), prepared.clear_observations, prepared.grid,
                                            len(scene.images))
        for date in prepared.sources["dates"]:
            shares = ", ".join(f"{cause} {share:.1%}" for cause, share in date["masked_share"].items()) or "nothing"
            log.info("%s (%s): masked %s", date["source"], date["acquired"] or "time unknown", shares)
    pixels = prepared.grid.rows * prepared.grid.cols
    if p.n_segments > pixels:  # SLIC's arrays grow with the count: refuse before allocating them
        raise ConfigError(f"{scene.config_path}: n_segments = {p.n_segments} exceeds the {pixels} px of the work grid")
    missing = [role for role in SPECTRAL_BANDS if role not in prepared.bands]
    if missing:
        raise ConfigError(f"{scene.config_path}: [bands] lacks {', '.join(missing)} (needed for an image that is "
                          f"not a Sentinel-2 product)")
    return prepared


def record_stretch(record: dict, limits: dict, preview: np.ndarray, preview_valid: np.ndarray) -> None:
    """Record in ``record["stretch"]`` the ``limits`` that stretched the layers and the quantiles of the layers
    before the stretch (of their ``preview``, (rows', cols', 8), over ``preview_valid``), to compare scenes with
    (``pipeline/model/scene_shift.py``)."""
    record["stretch"]["limits"] = limits
    record["stretch"]["layer_quantiles"] = scene_shift.layer_quantiles(preview, preview_valid)


# --- Driver 1: the whole scene in memory (tutorial 1.1, 2.1, 2.2) ----------------------------------------------

def prepare_whole_scene(scene: Scene, image: sources.PreparedSources, work: Future, out: OutputSet, record: dict,
                        timings: dict) -> PreparedScene:
    """Step 0 on the whole scene in memory: layers, quicklooks, SLIC, sampling, split, then the writes into ``out``;
    ``image``: the image on the work grid, ``work``: its future with the reference, ``record``: the provenance."""
    p, grid = scene.params, image.grid
    with cli.timed("read image", timings):
        raw, valid = image.read_image()
    if not valid.any():
        raise InputDataError(f"{image.image}: every pixel is NaN or nodata")
    log.info("scene %s: %d x %d px, %d classes %s", scene.name, grid.cols, grid.rows, len(scene.classes),
             scene.class_names)
    with cli.timed("layers and stretch", timings):
        stretched = stretched_layers(raw, valid, p.slic_layers, record["stretch"]["limits"])
        if scene.stretch_from:
            check_limits_fit(stretched.preview, stretched.preview_valid, stretched.limits, scene.stretch_from)
        record_stretch(record, stretched.limits, stretched.preview, stretched.preview_valid)
        del raw
    with cli.timed("waiting for the reference on the work grid (warped beside the read and the layers)", timings):
        codes = image.codes_where_valid(work.result().reference_codes, valid)
    steps = stretched.steps  # the stored precision: layers.tif and the patches

    def quicklooks_and_rasters():
        with cli.timed("quicklooks (drawn alongside SLIC and the sampling)", timings):
            quicklooks.write_quicklooks(out, stretched.preview, stretched.preview_steps, stretched.limits,
                                        stretched.preview_valid, valid.shape)
        with cli.timed("write layers and reference (alongside SLIC and the sampling)", timings):
            contract.write_raster(contract.LAYERS, out.staging, steps, grid, record["run"])
            if scene.reference is not None:
                contract.write_raster(contract.REFERENCE, out.staging, codes, grid, record["run"],
                                      **contract.class_style(scene.class_names))

    def write_segments_and_fingerprints(segments: np.ndarray) -> None:  # the last raster, after the others
        contract.write_raster(contract.SEGMENTS_RASTER, out.staging, segments, grid, record["run"])
        contract.record_rasters(record, out, contract.STEP0_RASTERS)  # the .mat files carry the fingerprints

    with ThreadPoolExecutor(1) as background:  # matplotlib, PNG and GeoTIFF encoding overlap SLIC's strips
        background_done = background.submit(quicklooks_and_rasters)
        with cli.timed(f"SLIC (n_segments={p.n_segments}, compactness={p.compactness})", timings):
            segments = superpixels.segment(stretched.slic_lab, p.n_segments, p.compactness, valid)
        record["superpixels"] = int(segments.max()) + 1  # the row count every superpixel hand-off must have
        log.info("%d superpixels, %.1f px each on average", record["superpixels"],
                 np.count_nonzero(valid) / record["superpixels"])
        rasters_done = background.submit(write_segments_and_fingerprints, segments)  # beside the sampling
        with cli.timed("sampling: centroids, patches, majority labels, split", timings):
            sampled = sample_superpixels(steps, segments, codes, p.patch_width, len(scene.classes))
            sampled["split"] = spatial_split(segments, sampled["centroids"], sampled["labels"], p.patch_width,
                                             p.block_size, p.test_fraction, np.random.default_rng(p.seed))
        with cli.timed("write segments and samples", timings):
            background_done.result()  # its errors first: files fail in the order they are written
            rasters_done.result()
            segments_saved = background.submit(contract.save, contract.SEGMENTS, out.staging,
                                               {"segments": segments, contract.PROVENANCE: record})
            contract.save(contract.SAMPLES, out.staging, {**sampled, "class_names": scene.class_names,
                                                           "layer_names": LAYER_NAMES, contract.PROVENANCE: record})
            segments_saved.result()
    step = grids.display_stride(*valid.shape)
    return PreparedScene(labels=sampled["labels"], split=sampled["split"], purity=sampled["purity"],
                         invalid_pixels=int(valid.size - valid.sum()), preview_steps=stretched.preview_steps,
                         preview_segments=segments[::step, ::step],
                         read_patches=lambda indices: contract.decode_unit_values(sampled["samples"][indices]))


# --- Driver 2: tiles with a halo on a Dask cluster -----------------------------------------------------------

def prepare_tile(scene: Scene, work: sources.PreparedSources, limits: dict, window: tuple, shape: tuple,
                 codes: np.ndarray | None, n_strips: int = 1) -> dict:
    """Step 0 on one tile (runs on a Dask worker): read the ``window`` (row, col, rows, cols) of a scene of
    ``shape`` from ``work`` with a halo of w/2 pixels, stretch with the scene's ``limits``, segment the tile
    itself (ids from 0, in ``n_strips`` strips), and sample its superpixels with patches that see the real
    neighbours in the halo, labelled by ``codes`` (the reference codes of the ``window``, or None). Superpixels
    end at the tile's edges. Returns what ``tiled_outputs.write_tiles`` writes of a tile, layers and patches as
    stored (uint8 steps, ``contract.encode_unit_values``)."""
    p = scene.params
    row, col, rows, cols = window
    top, left, *_ = haloed = grids.with_halo(window, p.patch_width // 2, shape)
    raw, valid = work.read_image(haloed)
    layers = apply_stretch(build_layers(raw, valid), limits, valid)
    del raw
    core = (slice(row - top, row - top + rows), slice(col - left, col - left + cols))
    codes = work.codes_where_valid(codes, valid[core])
    n_segments = max(1, round(p.n_segments * rows * cols / (shape[0] * shape[1])))
    segments = superpixels.segment(slic_lab(layers[core], p.slic_layers), n_segments, p.compactness, valid[core],
                                   n_strips)
    steps = contract.encode_unit_values(layers)  # the stored precision, a quarter of the bytes to ship
    sampled = sample_superpixels(steps, segments, codes, p.patch_width, len(scene.classes), shape,
                                 (top, left), (row, col))
    return {"window": window, "layers": np.ascontiguousarray(steps[core]), "segments": segments, "codes": codes,
            "invalid": int((~valid[core]).sum()), **sampled}


def prepare_tiled(scene: Scene, image: sources.PreparedSources, work: Future, out: OutputSet, record: dict, client,
                  timings: dict) -> PreparedScene:
    """Step 0 tile by tile on the Dask ``client``'s cluster, memory bounded by the tile size: layers, reference
    and segments go to GeoTIFF window by window, the hand-offs to MATLAB 7.3 files tile by tile, into ``out``;
    ``image``: the image on the work grid, ``work``: its future with the reference, ``record``: the provenance."""
    p, grid = scene.params, image.grid
    if p.tile_size < p.patch_width:
        raise ConfigError(f"tile_size = {p.tile_size} must be at least the patch width ({p.patch_width} px)")
    shape = (grid.rows, grid.cols)
    windows = grids.tile_windows(shape, p.tile_size)
    step = grids.display_stride(*shape)
    with cli.timed("preview, stretch limits and quicklooks", timings):
        preview, preview_steps, preview_valid, limits = stretched_preview(image.image, image.bands, shape, step,
                                                                          record["stretch"]["limits"])
        if scene.stretch_from:
            check_limits_fit(preview, preview_valid, limits, scene.stretch_from)
        record_stretch(record, limits, preview, preview_valid)
        quicklooks.write_quicklooks(out, preview, preview_steps, limits, preview_valid, shape)
    with cli.timed("waiting for the reference on the work grid (warped beside the preview)", timings):
        codes = work.result().reference_codes  # each tile gets only its window's codes, with the image
    with cli.timed(f"tiles: layers, SLIC (n_segments={p.n_segments}), sampling, writes, split", timings):
        log.info("%d tiles of up to %d px on %s", len(windows), p.tile_size, client)
        tiles = cluster.map_in_order(client, prepare_tile, (
            (scene, image, limits, (row, col, rows, cols), shape,
             None if codes is None else codes[row:row + rows, col:col + cols]) for row, col, rows, cols in windows))
        with contextlib.ExitStack() as mat_files:
            with contextlib.ExitStack() as rasters:  # closed (made final) first, so that they can be fingerprinted
                outputs = TiledOutputs.open(out, grid, record["run"], rasters, mat_files,
                                            scene.class_names if scene.reference is not None else None)
                kept = write_tiles(outputs, tiles, shape, len(windows), scene.class_names)
            contract.record_rasters(record, out, contract.STEP0_RASTERS)
            record["superpixels"] = len(kept["labels"])
            for mat in (outputs.segments_mat, outputs.samples_mat):
                mat.put(contract.PROVENANCE, contract.as_text(record))
            split = tiled_split(lambda window: outputs.segments_mat.read_window("segments", *window), windows,
                                shape, kept["centroids"], kept["labels"], p.patch_width, p.block_size,
                                p.test_fraction, np.random.default_rng(p.seed))
            outputs.samples_mat.put("split", split)
    return PreparedScene(
        labels=kept["labels"], split=split, purity=kept["purity"], invalid_pixels=kept["invalid"],
        preview_steps=preview_steps, preview_segments=kept["segments_preview"], tiles=len(windows),
        read_patches=lambda indices: contract.load_rows(contract.SAMPLES, out.staging, ["samples"],
                                                        indices)["samples"])


# --- The finishing path of both drivers ------------------------------------------------------------------------

def finish(scene: Scene, out: OutputSet, prepared: PreparedScene, record: dict, details: dict, started: float) -> None:
    """What every driver ends with: superpixel boundaries, example patches, the summary and ``run.json``
    (with ``details``: timings and the sources used; ``started``: the step's ``time.perf_counter()`` at its
    start, for its wall time)."""
    if prepared.invalid_pixels:
        log.warning("%d pixels are NaN or nodata in %s: they are masked", prepared.invalid_pixels,
                    Path(str(scene.image)).name)
    def draw_boundaries():  # numpy and PNG encoding, no pyplot: safe beside the example-patch figure
        files.save_png(out.path("segments_boundaries.png"), quicklooks.boundary_image(
            select_layers(prepared.preview_steps, quicklooks.COMPOSITES["rgb"]), prepared.preview_segments))

    with cli.timed("superpixel boundaries and example patches", details["timings_s"]), ThreadPoolExecutor(1) as side:
        boundaries = side.submit(draw_boundaries)
        chosen = example_indices(prepared.labels, len(scene.classes), np.random.default_rng(scene.params.seed))
        patches = prepared.read_patches(np.concatenate(chosen).astype(np.int64))
        files.save_png(out.path("example_patches.png"),
                       quicklooks.plot_example_patches(chosen, patches, scene.class_names))
        boundaries.result()
    summary = summarise(prepared.labels, prepared.split, prepared.purity, scene.class_names)
    for line in summary["table"]:
        log.info(line)
    wall_s = round(time.perf_counter() - started, 2)  # less than the timings' sum: stages overlap
    cli.record_run(scene, out.path("run.json"), "Step0_Data_Preparation", {
        **details, "wall_s": wall_s, "superpixels": len(prepared.labels), "invalid_pixels": prepared.invalid_pixels,
        "classes": summary["counts"], "tiles": prepared.tiles, "run": record["run"]},
        inputs={fp["path"]: fp["sha256"] for fp in record["inputs"].values() if fp})
    log.info("outputs in %s (%.1f s in all)", scene.workdir, wall_s)


# --- Driver 3: explore SLIC's parameters (tutorial 2.1) ---------------------------------------------------------

def explore_slic(scene: Scene, work: sources.PreparedSources, out: OutputSet, crop_size: int = 200) -> None:
    """Grid of SLIC boundaries on a central crop of ``crop_size`` px of the image on the work grid (``work``) over
    compactness 0.01..100 and three superpixel counts (see ``quicklooks.plot_slic_exploration``)."""
    raw, valid = work.read_image()
    stretched = stretched_layers(raw, valid, scene.params.slic_layers)
    rgb = select_layers(stretched.steps, quicklooks.COMPOSITES["rgb"])
    figure = quicklooks.plot_slic_exploration(rgb, stretched.slic_lab, valid, scene.params.n_segments, crop_size)
    files.save_png(out.path("explore_slic.png"), figure)
    log.info("wrote explore_slic.png in %s: pick n_segments and compactness, then run without --explore",
             scene.workdir)


def stretch_from_model(scene: Scene, unit: str) -> dict:
    """The stretch of the scene, whose image values are in ``unit``: the limits of the training scene of the
    model ``scene.stretch_from`` (so a model sees its inputs scaled as in training), or None to take them from
    this scene. A model whose limits are in another unit, or in an unrecorded one, is refused."""
    if scene.stretch_from is None:
        return {"limits": None, "from_model_run": None, "unit": unit}
    card = model_card.read(scene.stretch_from)
    if card.stretch_unit != unit:
        raise InputDataError(f"{scene.stretch_from}: its stretch limits are in {card.stretch_unit}, this scene's "
                             f"image values in {unit}; give a scene of the model's kind of image, or train a model "
                             f"on this kind with {vocabulary.STEP2}")
    log.info("stretching with the limits of the model %s trained on scene %s", scene.stretch_from, card.scene)
    return {"limits": {name: tuple(card.stretch_limits[name]) for name in LAYER_NAMES},
            "from_model_run": card.model_run, "from_model": str(scene.stretch_from), "unit": unit}


def prepare(scene: Scene, scheduler: str | None = None, workers: int | None = None, explore: bool = False) -> None:
    """Step 0 with the driver the scene's ``tile_size`` asks for, then the shared finishing path (or, with
    ``explore``, only the SLIC exploration); its outputs are committed as one set."""
    started, timings = time.perf_counter(), {}
    inputs = tuple(file for path in (*scene.images, scene.reference, scene.mask, scene.config_path, scene.stretch_from,
                                     scene.aoi if isinstance(scene.aoi, Path) else None) if path
                   for file in sources.files_of(path))
    if explore:
        with open_outputs(scene.workdir, EXPLORE_OUTPUTS, inputs) as out:
            return explore_slic(scene, on_work_grid(scene, out), out)
    tiled = bool(scene.params.tile_size)
    if tiled:
        cluster.check_settings(scheduler, workers)
    with open_outputs(scene.workdir, OUTPUTS, inputs) as out, ThreadPoolExecutor(2) as side:
        # checksums and the reference's warp are GDAL and hashlib work without the GIL: beside the image's
        provenance = side.submit(lambda: contract.step0_provenance(
            scene, fingerprint(scene.image), scene.reference and fingerprint(scene.reference)))
        with cluster.client_if(tiled, scheduler, workers, out) as client:
            with cli.timed("image on the work grid", timings):
                image = on_work_grid(scene, out, client)
            work = side.submit(sources.add_reference, image, scene.reference, scene.classes, scene.reference_field)
            with cli.timed("checksums of the image and reference (beside the image on the work grid)", timings):
                record = provenance.result()
            record["stretch"] = stretch_from_model(scene, image.unit)
            if tiled:
                prepared = prepare_tiled(scene, image, work, out, record, client, timings)
            else:
                prepared = prepare_whole_scene(scene, image, work, out, record, timings)
        finish(scene, out, prepared, record, {"timings_s": timings, "sources": work.result().sources}, started)


def build_parser():
    parser = cli.build_parser(__doc__, ["n_segments", "compactness", "slic_layers", "patch_width",
                                        "test_fraction", "block_size", "tile_size", "masking", "mask_classes",
                                        "mask_buffer_m"])
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
    cli.exit_process(main())
