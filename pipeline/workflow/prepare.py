"""Step 0's work (tutorial sections 1, 2.1 and 2.2): the scene's inputs on one work grid, then its layers,
superpixels and samples, whole in memory (:func:`prepare_whole_scene`) or tile by tile on a Dask cluster
(:func:`prepare_tiled`, :mod:`pipeline.tiling.prepare_tiles`), both ending in the same :func:`finish`; or only
the SLIC exploration (:func:`explore_slic`).

Stages overlap where they use different resources: the inputs' checksums and the reference's warp run beside
the image's preparation and stretch, the quicklooks and GeoTIFF writes beside SLIC and the sampling.
"""
from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import grids, vocabulary
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.core.vocabulary import INDEX_LAYERS, LAYER_NAMES, SPECTRAL_BANDS, layer_names_of
from pipeline.handoffs import contract, memory, model_card, provenance
from pipeline.handoffs.fingerprints import fingerprint
from pipeline.inputs import sources
from pipeline.model import scene_shift
from pipeline.run import cli, files
from pipeline.run.config import Scene
from pipeline.run.outputs import OutputSet, open_outputs
from pipeline.segmentation import quicklooks, superpixels
from pipeline.segmentation.layers import (StretchedLayers, check_limits_fit, select_layers, stretched_layers,
                                          stretched_preview)
from pipeline.segmentation.sampling import PreparedScene, example_indices, sample_superpixels
from pipeline.segmentation.split import spatial_split, summarise
from pipeline.tiling import cluster, prepare_tiles

log = logging.getLogger(__name__)

#: The clear dates of every pixel, written when the scene is masked or has several dates.
CLEAR_OBSERVATIONS = "clear_observations.tif"
#: Every file Step 0 writes (committed together; ``.aux.xml`` side files go with their rasters).
OUTPUTS = (contract.LAYERS.filename, contract.REFERENCE.filename, contract.SEGMENTS_RASTER.filename,
           contract.SEGMENTS.filename,
           contract.SAMPLES.filename, *(f"{name}.png" for name in (*quicklooks.COMPOSITES, *INDEX_LAYERS)),
           *(f"histogram_{name}.png" for name in LAYER_NAMES), "segments_boundaries.png", "example_patches.png",
           "run.json", f"{sources.FOLDER}/", CLEAR_OBSERVATIONS, "clear_observations.png")
#: What ``--explore`` writes.
EXPLORE_OUTPUTS = ("explore_slic.png",)


@dataclass(frozen=True)
class Step0Run:
    """A Step 0 run under way (made by :func:`step0_run`)."""

    scene: Scene
    out: OutputSet  # the output set, committed as one when the run ends cleanly
    client: object  # the dask.distributed Client of a tiled run, None for the whole scene in memory
    side: ThreadPoolExecutor  # the checksums and the reference's warp: GDAL and hashlib work without the GIL
    provenance: Future  # -> the hand-offs' provenance record (``provenance.step0_provenance``)
    timings: dict  # stage -> seconds, filled in as the run goes
    started: float  # ``time.perf_counter()`` at the start, for the wall time


@dataclass(frozen=True)
class WorkGridInputs:
    """The scene's inputs on its work grid (made by :func:`inputs_on_work_grid`)."""

    image: sources.PreparedSources  # the image on the work grid, without reference codes
    with_reference: Future  # -> ``image`` with the reference's class codes, warped on the side
    record: dict  # the hand-offs' provenance: the run, the inputs as read, the parameters, the stretch


def input_files(scene: Scene) -> tuple:
    """Every file Step 0 reads of ``scene`` (a product's or a shapefile's side files too): outputs made from
    them are checked against them."""
    return tuple(file for path in (*scene.images, scene.reference, scene.mask, scene.config_path,
                                   scene.stretch_from, scene.aoi if isinstance(scene.aoi, Path) else None) if path
                 for file in sources.files_of(path))


@contextlib.contextmanager
def step0_run(scene: Scene, scheduler: str | None = None, workers: int | None = None):
    """A :class:`Step0Run` of ``scene`` for the block: its output set (committed when the block ends cleanly),
    the inputs' checksums started on the side, and for a tiled scene (``tile_size``) the Dask client of the
    cluster at ``scheduler`` or of a LocalCluster of ``workers``."""
    started, tiled = time.perf_counter(), bool(scene.params.tile_size)
    if tiled:
        cluster.check_settings(scheduler, workers)
    with open_outputs(scene.workdir, OUTPUTS, input_files(scene)) as out, ThreadPoolExecutor(2) as side:
        record = side.submit(lambda: provenance.step0_provenance(
            scene, [fingerprint(image) for image in scene.images], scene.reference and fingerprint(scene.reference)))
        with cluster.client_if(tiled, scheduler, workers, out) as client:
            yield Step0Run(scene, out, client, side, record, {}, started)


# --- 1. The inputs on one work grid ----------------------------------------------------------------------------

def image_on_work_grid(scene: Scene, out: OutputSet, client=None) -> sources.PreparedSources:
    """The scene's image prepared on its work grid by GDAL (the tutorial's SNAP work): a Sentinel-2 product's
    bands stacked at 10 m as reflectance, the image cut to the ``aoi``, each date's clouds, shadows and bad
    pixels masked and several dates combined, window by window (on the Dask ``client``'s cluster if given) (see
    ``pipeline/inputs/sources.py``); the VRTs and a composite go to ``sources/`` in ``out``, the clear dates of every
    pixel to ``clear_observations.tif`` and ``.png``. The reference comes next (``sources.add_reference``)."""
    p = scene.params
    masking = sources.Masking(p.masking, p.mask_classes, p.mask_buffer_m, scene.mask, scene.mask_values)
    run_windows = None if client is None else (lambda function, tuples: cluster.map_in_order(client, function, tuples))
    image = sources.prepare_image(scene.images, scene.bands, out.path(sources.FOLDER), aoi=scene.aoi,
                                  masking=masking, run_windows=run_windows)
    if image.clear_observations is not None:
        quicklooks.write_clear_observations(out.path(CLEAR_OBSERVATIONS), image.clear_observations, image.grid,
                                            len(scene.images))
        for date in image.sources["dates"]:
            shares = ", ".join(f"{cause} {share:.1%}" for cause, share in date["masked_share"].items()) or "nothing"
            log.info("%s (%s): masked %s", date["source"], date["acquired"] or "time unknown", shares)
    check_affordable(scene, image.grid.rows, image.grid.cols)
    missing = [role for role in SPECTRAL_BANDS if role not in image.bands]
    if missing:
        raise ConfigError(f"{scene.config_path}: [bands] lacks {', '.join(missing)} (needed for an image that is "
                          f"not a Sentinel-2 product)")
    return image


def check_affordable(scene: Scene, rows: int, cols: int) -> None:
    """Refuse, before SLIC and the patches allocate anything, an ``n_segments`` beyond the work grid's
    ``rows`` x ``cols`` pixels, a ``patch_width`` wider than the mirrored borders allow (less than twice the
    grid's shorter side), and patches of every superpixel (of a tile's, in tiled runs) beyond half the memory free."""
    p, where = scene.params, scene.config_path
    pixels = rows * cols
    if p.n_segments > pixels:  # SLIC's arrays grow with the count
        raise ConfigError(f"{where}: n_segments = {p.n_segments} exceeds the {pixels} px of the work grid")
    if p.patch_width // 2 >= min(rows, cols):
        raise ConfigError(f"{where}: patch_width = {p.patch_width} is too large for the {cols} x {rows} px work "
                          f"grid (at most {2 * min(rows, cols) - 1})")
    tile = min(p.tile_size or max(rows, cols), rows) * min(p.tile_size or max(rows, cols), cols)
    memory.check_patches_fit(-(-p.n_segments * tile // pixels), p.patch_width,
                               f"{where}: patch_width = {p.patch_width} with n_segments = {p.n_segments}: the patches "
                               f"of {'a tile' if p.tile_size else 'the scene'}",
                               "choose a smaller patch_width or n_segments" + ("" if p.tile_size else " or tile_size"))


def inputs_on_work_grid(run: Step0Run) -> WorkGridInputs:
    """Tutorial section 1: the image on the work grid (:func:`image_on_work_grid`), its reference warped onto it
    on the side, and the provenance record with the stretch to use (:func:`stretch_from_model`)."""
    scene = run.scene
    with cli.timed("image on the work grid", run.timings):
        image = image_on_work_grid(scene, run.out, run.client)
    with_reference = run.side.submit(sources.add_reference, image, scene.reference, scene.classes,
                                     scene.reference_field)
    with cli.timed("checksums of the image and reference (beside the image on the work grid)", run.timings):
        record = run.provenance.result()
    record["stretch"] = stretch_from_model(scene, image.unit, layer_names_of(image.bands))
    return WorkGridInputs(image, with_reference, record)


def stretch_from_model(scene: Scene, unit: str, layer_names: tuple) -> dict:
    """The stretch of the scene, whose image values are in ``unit`` and whose layers are ``layer_names``: the limits of the training scene of the
    model ``scene.stretch_from`` (so a model sees its inputs scaled as in training), or None to take them from
    this scene. A model whose limits are in another unit, or in an unrecorded one, or that lacks a layer of the
    scene, is refused."""
    if scene.stretch_from is None:
        return {"limits": None, "from_model_run": None, "unit": unit}
    card = model_card.read(scene.stretch_from)
    if card.stretch_unit != unit:
        raise InputDataError(f"{scene.stretch_from}: its stretch limits are in {card.stretch_unit}, this scene's "
                             f"image values in {unit}; give a scene of the model's kind of image, or train a model "
                             f"on this kind with {vocabulary.STEP2}")
    missing = [name for name in layer_names if name not in card.stretch_limits]
    if missing:
        raise InputDataError(f"{scene.stretch_from}: the model was trained without the layer(s) {', '.join(missing)} "
                             f"this scene names in [bands]; leave them out of [bands] of {scene.config_path.name}")
    log.info("stretching with the limits of the model %s trained on scene %s", scene.stretch_from, card.scene)
    return {"limits": {name: tuple(card.stretch_limits[name]) for name in layer_names},
            "from_model_run": card.model_run, "from_model": str(scene.stretch_from), "unit": unit}


def record_stretch(scene: Scene, record: dict, limits: dict, preview: np.ndarray, preview_valid: np.ndarray) -> None:
    """Record in ``record["stretch"]`` the ``limits`` that stretched the layers and the quantiles of the layers
    before the stretch (of their ``preview``, (rows', cols', c), over ``preview_valid``), to compare scenes with
    (``pipeline/model/scene_shift.py``), then the ``stamp`` the rasters carry; limits of a model
    (``scene.stretch_from``) must fit the scene."""
    if scene.stretch_from:
        check_limits_fit(preview, preview_valid, limits, scene.stretch_from)
    record["stretch"]["limits"] = limits
    record["stretch"]["layer_quantiles"] = scene_shift.layer_quantiles(preview, preview_valid, layer_names_of(limits))
    provenance.stamp_step0(record)


def reference_on_work_grid(inputs: WorkGridInputs, beside: str, timings: dict) -> sources.PreparedSources:
    """The image of ``inputs`` with its reference codes, once warped (``beside``: what ran meanwhile)."""
    with cli.timed(f"waiting for the reference on the work grid (warped beside {beside})", timings):
        return inputs.with_reference.result()


# --- 1.2, 2.1, 2.2: layers, superpixels, samples ---------------------------------------------------------------

def layers_superpixels_and_samples(run: Step0Run, inputs: WorkGridInputs) -> PreparedScene:
    """Tutorial sections 1.2-2.2 with the driver the scene asks for: the whole scene in memory, or tile by tile
    on the run's Dask cluster (``tile_size``); the layers, reference, segments and hand-offs go into the run's
    output set."""
    if run.client is None:
        return prepare_whole_scene(run, inputs)
    return prepare_tiled(run, inputs)


def stretched_scene(run: Step0Run, inputs: WorkGridInputs) -> tuple[StretchedLayers, np.ndarray]:
    """The scene's 8 layers stretched (as stored, and SLIC's CIELAB input) and its valid pixels (bool (rows,
    cols)), read whole; the stretch recorded in the provenance."""
    scene, image = run.scene, inputs.image
    with cli.timed("read image", run.timings):
        raw, valid = image.read_image()
    if not valid.any():
        raise InputDataError(f"{image.image}: every pixel is NaN or nodata")
    log.info("scene %s: %d x %d px, %d classes %s", scene.name, image.grid.cols, image.grid.rows, len(scene.classes),
             scene.class_names)
    with cli.timed("layers and stretch", run.timings):
        stretched = stretched_layers(raw, valid, scene.params.slic_layers, inputs.record["stretch"]["limits"])
        record_stretch(scene, inputs.record, stretched.limits, stretched.preview, stretched.preview_valid)
    return stretched, valid


def prepare_whole_scene(run: Step0Run, inputs: WorkGridInputs) -> PreparedScene:
    """Step 0 on the whole scene in memory: layers, quicklooks, SLIC, sampling, split, then the writes into the
    run's output set; quicklooks and GeoTIFFs are written beside SLIC and the sampling."""
    p, timings = run.scene.params, run.timings
    stretched, valid = stretched_scene(run, inputs)
    codes = inputs.image.codes_where_valid(
        reference_on_work_grid(inputs, "the read and the layers", timings).reference_codes, valid)
    with ThreadPoolExecutor(1) as background:  # matplotlib, PNG and GeoTIFF encoding overlap SLIC's strips
        background_done = background.submit(write_quicklooks_and_rasters, run, inputs, stretched, valid, codes)
        with cli.timed(f"SLIC (n_segments={p.n_segments}, compactness={p.compactness})", timings):
            segments = superpixels.segment(stretched.slic_lab, p.n_segments, p.compactness, valid)
        inputs.record["superpixels"] = int(segments.max()) + 1  # the row count every superpixel hand-off must have
        log.info("%d superpixels, %.1f px each on average", inputs.record["superpixels"],
                 np.count_nonzero(valid) / inputs.record["superpixels"])
        rasters_done = background.submit(write_segments_raster, run, inputs, segments)  # beside the sampling
        with cli.timed("sampling: centroids, patches, majority labels, split", timings):
            sampled = sample_and_split(run.scene, stretched.steps, segments, codes)
        with cli.timed("write segments and samples", timings):
            background_done.result()  # its errors first: files fail in the order they are written
            rasters_done.result()
            inputs.record["run"] = provenance.step0_identity(inputs.record, sampled)
            segments_saved = background.submit(contract.save, contract.SEGMENTS, run.out.staging,
                                               {"segments": segments, contract.PROVENANCE: inputs.record})
            contract.save(contract.SAMPLES, run.out.staging, {
                **sampled, "class_names": run.scene.class_names, "layer_names": layer_names_of(stretched.limits),
                contract.PROVENANCE: inputs.record})
            segments_saved.result()
    stride = grids.display_stride(*valid.shape)
    return PreparedScene(labels=sampled["labels"], split=sampled["split"], purity=sampled["purity"],
                         invalid_pixels=int(valid.size - valid.sum()), preview_steps=stretched.preview_steps,
                         preview_segments=segments[::stride, ::stride],
                         read_patches=lambda indices: contract.decode_unit_values(sampled["samples"][indices]))


def write_quicklooks_and_rasters(run: Step0Run, inputs: WorkGridInputs, stretched: StretchedLayers,
                                 valid: np.ndarray, codes: np.ndarray) -> None:
    """The quicklooks of the ``stretched`` layers, ``layers.tif`` and (with a reference) ``reference.tif`` of
    the class ``codes`` (uint8 (rows, cols)), into the run's output set."""
    scene, grid, run_id = run.scene, inputs.image.grid, inputs.record["stamp"]
    with cli.timed("quicklooks (drawn alongside SLIC and the sampling)", run.timings):
        quicklooks.write_quicklooks(run.out, stretched.preview, stretched.preview_steps, stretched.limits,
                                    stretched.preview_valid, valid.shape)
    with cli.timed("write layers and reference (alongside SLIC and the sampling)", run.timings):
        contract.write_raster(contract.layers_raster(layer_names_of(stretched.limits)), run.out.staging,
                              stretched.steps, grid, run_id)
        if scene.reference is not None:
            contract.write_raster(contract.REFERENCE, run.out.staging, codes, grid, run_id,
                                  **contract.class_style(scene.class_names))


def write_segments_raster(run: Step0Run, inputs: WorkGridInputs, segments: np.ndarray) -> None:
    """``segments.tif``, the last raster, then the fingerprints of all three in the provenance (the .mat files
    carry them)."""
    contract.write_raster(contract.SEGMENTS_RASTER, run.out.staging, segments, inputs.image.grid,
                          inputs.record["stamp"])
    contract.record_rasters(inputs.record, run.out, contract.STEP0_RASTERS)


def sample_and_split(scene: Scene, steps: np.ndarray, segments: np.ndarray, codes: np.ndarray) -> dict:
    """Tutorial 2.2 on the whole scene: each superpixel's patch of the layers (uint8 ``steps`` (rows, cols, 8)),
    mask, majority label of the class ``codes`` and purity (``sample_superpixels``), and its ``split`` code."""
    p = scene.params
    sampled = sample_superpixels(steps, segments, codes, p.patch_width, len(scene.classes))
    sampled["split"] = spatial_split(segments, sampled["centroids"], sampled["labels"], p.patch_width,
                                     p.block_size, p.test_fraction, np.random.default_rng(p.split_seed))
    return sampled


def prepare_tiled(run: Step0Run, inputs: WorkGridInputs) -> PreparedScene:
    """Step 0 tile by tile on the run's Dask cluster: the scene's preview, stretch limits and quicklooks first,
    then the tiles (:func:`pipeline.tiling.prepare_tiles.prepare_tiled`)."""
    scene, image, p = run.scene, inputs.image, run.scene.params
    if p.tile_size < p.patch_width:
        raise ConfigError(f"tile_size = {p.tile_size} must be at least the patch width ({p.patch_width} px)")
    shape = (image.grid.rows, image.grid.cols)
    with cli.timed("preview, stretch limits and quicklooks", run.timings):
        preview, preview_steps, preview_valid, limits = stretched_preview(
            image.image, image.bands, shape, grids.display_stride(*shape), inputs.record["stretch"]["limits"])
        record_stretch(scene, inputs.record, limits, preview, preview_valid)
        quicklooks.write_quicklooks(run.out, preview, preview_steps, limits, preview_valid, shape)
    codes = reference_on_work_grid(inputs, "the preview", run.timings).reference_codes  # each tile gets its window's
    return prepare_tiles.prepare_tiled(scene, image, limits, codes, run.out, inputs.record, run.client, run.timings,
                                       preview_steps)


# --- The finishing path of both drivers ------------------------------------------------------------------------

def finish(run: Step0Run, inputs: WorkGridInputs, prepared: PreparedScene) -> None:
    """What every driver ends with: superpixel boundaries, example patches, the class summary and ``run.json``
    (timings, the sources used, the wall time since the run started)."""
    scene = run.scene
    if prepared.invalid_pixels:
        log.warning("%d pixels are NaN or nodata in %s: they are masked", prepared.invalid_pixels,
                    Path(str(scene.image)).name)
    with cli.timed("superpixel boundaries and example patches", run.timings):
        draw_boundaries_and_examples(scene, run.out, prepared)
    summary = summarise(prepared.labels, prepared.split, prepared.purity, scene.class_names)
    for line in summary["table"]:
        log.info(line)
    wall_s = round(time.perf_counter() - run.started, 2)  # less than the timings' sum: stages overlap
    cli.record_run(scene, run.out.path("run.json"), "Step0_Data_Preparation", {
        "timings_s": run.timings, "sources": inputs.with_reference.result().sources, "wall_s": wall_s,
        "superpixels": len(prepared.labels), "invalid_pixels": prepared.invalid_pixels,
        "classes": summary["counts"], "tiles": prepared.tiles, "run": inputs.record["run"]},
        inputs={fp["path"]: fp["sha256"] for fp in provenance.input_fingerprints(inputs.record)})
    log.info("outputs in %s (%.1f s in all)", scene.workdir, wall_s)


def draw_boundaries_and_examples(scene: Scene, out: OutputSet, prepared: PreparedScene) -> None:
    """``segments_boundaries.png`` (drawn on the side: numpy and PNG encoding, no pyplot) and
    ``example_patches.png``, a few random patches of every class."""
    def draw_boundaries():
        files.save_png(out.path("segments_boundaries.png"), quicklooks.boundary_image(
            select_layers(prepared.preview_steps, quicklooks.COMPOSITES["rgb"]), prepared.preview_segments))

    with ThreadPoolExecutor(1) as side:
        boundaries = side.submit(draw_boundaries)
        chosen = example_indices(prepared.labels, len(scene.classes), np.random.default_rng(scene.params.split_seed))
        patches = prepared.read_patches(np.concatenate(chosen).astype(np.int64))
        files.save_png(out.path("example_patches.png"),
                              quicklooks.plot_example_patches(chosen, patches, scene.class_names))
        boundaries.result()


# --- Tutorial 2.1: explore SLIC's parameters -------------------------------------------------------------------

def explore_slic(scene: Scene, crop_size: int = 200) -> None:
    """Only ``explore_slic.png``: a grid of SLIC boundaries on a central crop of ``crop_size`` px of the image on
    the work grid over compactness 0.01..100 and three superpixel counts (see
    ``quicklooks.plot_slic_exploration``), to pick ``n_segments`` and ``compactness`` with."""
    with open_outputs(scene.workdir, EXPLORE_OUTPUTS, input_files(scene)) as out:
        raw, valid = image_on_work_grid(scene, out).read_image()
        stretched = stretched_layers(raw, valid, scene.params.slic_layers)
        rgb = select_layers(stretched.steps, quicklooks.COMPOSITES["rgb"])
        figure = quicklooks.plot_slic_exploration(rgb, stretched.slic_lab, valid, scene.params.n_segments, crop_size)
        files.save_png(out.path("explore_slic.png"), figure)
    log.info("wrote explore_slic.png in %s: pick n_segments and compactness, then run without --explore",
             scene.workdir)
