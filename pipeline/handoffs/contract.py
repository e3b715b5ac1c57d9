"""The hand-off contract between the steps: file names, keys and dtypes, codes, layer names, loaders and savers.

Every step reads what an earlier step wrote only through :func:`load`, :func:`read_raster` and the checked
loaders below, and writes its hand-offs only through :func:`save` and :func:`raster_writer`, so a missing,
truncated or foreign file is reported with the step to rerun, and a hand-off always holds every key of its
declared type.

===============================  =========  ==========================================================
file                             made by    keys (dtype)
===============================  =========  ==========================================================
``segments.mat``                 Step 0     ``segments`` (rows x cols int32, ids 0..n-1; -1 masked)
``samples_labels.mat``           Step 0     ``samples`` (n x w x w x 8 patches, see below), ``patch_scale``,
                                            ``masks`` (n x w x w uint8),
                                            ``labels`` (n uint8), ``centroids`` (n x 2 int32), ``purity``
                                            (n float32), ``split`` (n uint8),
                                            ``class_names``, ``layer_names`` (text)
``Samples_classBalanced_<N>.mat``  Step 1   ``images``, ``masks``, ``labels``, ``index`` (m int32), names
``predLabels.mat``               Step 2     ``predLabels`` (n uint8)
``predProb.mat``                 Step 2     ``predProb`` (n x classes float32)
``predMap.mat``                  Step 2     ``predMap`` (rows x cols uint8; whole-scene runs only)
===============================  =========  ==========================================================

================================  =========  =========================================================
raster (Cloud-Optimized GeoTIFF)  made by    bands (dtype), nodata
================================  =========  =========================================================
``layers.tif``                   Step 0     the layers (the tutorial's 8 in :data:`LAYER_NAMES` order, then the
                                            further bands the scene names), stretched to [0, 1]
``segments.tif``                 Step 0     superpixel ids (int32), as ``segments.mat``, nodata -1
``reference.tif``                Step 0     class codes (uint8), nodata :data:`UNLABELLED`
``predMap.tif``                  Step 2     predicted class codes (uint8), nodata :data:`UNLABELLED`
``uncertainty.tif``              Step 2     1 - the highest class probability (float32), nodata NaN
================================  =========  =========================================================

All rasters lie on the work grid (the image's grid, cut to the aoi) and carry the stamp of the run that wrote
them in the metadata item ``STEP0_RUN`` or ``STEP2_RUN`` (Step 0's ``stamp``, a digest of its inputs and settings;
Step 2's run id); :func:`raster_writer` writes them, :func:`record_rasters`
adds their size, time and SHA-256 to the run's provenance, and :func:`read_raster` and :func:`raster_grid` read
them, checking that stamp, that the file is the one recorded (same size and time, else same SHA-256), the dtype
and the band count.

Patches (``samples`` of ``samples_labels.mat``, ``images`` of the balanced set) are stored as uint8: the layer
value is the stored value times ``patch_scale`` (1 / 255), within 0.002 of the float32 value Step 0 cut;
:func:`load` and :func:`load_rows` return them as float32 again. Every ``.mat`` hand-off is MATLAB v5 (``scipy.io.loadmat``
reads it, as the tutorial does), v7.3 (HDF5) only where a variable passes v5's 2 GB and for a tiled scene's
``segments.mat`` and ``samples_labels.mat`` (written tile by tile); in these two files the arrays that pay for it
are compressed (the masks; about a fifth of the float32 size in all). Outside the pipeline:
``scipy.io.loadmat(path)["samples"] * patch_scale`` in Python (``hdf5storage.loadmat`` reads both versions),
``double(samples) * patch_scale`` in MATLAB.

Provenance: every ``.mat`` hand-off holds ``provenance``, a JSON text naming the step and its run id (Step 0's:
a digest of what it made), the runs of the hand-offs it was made from, the parameters that shaped it and which
of them were set by flags (:mod:`pipeline.handoffs.provenance`); Step 0's also holds the size, time and SHA-256
of the image and the reference as they were read. The checked loaders refuse hand-offs that do not
belong together or to the current configuration, naming the files and the step to rerun.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.handoffs import checks, matfile
from pipeline.core.errors import InputDataError, InputFileError
from pipeline.core.colours import class_palette
from pipeline.core.stretch import unit_to_byte
from pipeline.handoffs.fingerprints import fingerprint, unchanged
from pipeline.handoffs.provenance import check_step0_provenance
from pipeline.core.vocabulary import (LAYER_NAMES, NO_SUPERPIXEL, STEP0, STEP1, STEP2, TRAIN, UNIT_SCALE,
                                      UNIT_STEPS, UNLABELLED, layer_names_of)

TEXT = "text"
#: Dtype of patch keys: layer values as uint8 steps (deflated where that pays); :func:`load` gives float32 back.
#: Readers outside the pipeline multiply by the stored ``patch_scale``: ``value = stored * scale``.
PATCHES = "patches"
PATCH_SCALE = "patch_scale"
PROVENANCE = "provenance"
#: Metadata items of the raster hand-offs naming the run of the step that wrote them.
STEP0_RUN_ITEM, STEP2_RUN_ITEM = "STEP0_RUN", "STEP2_RUN"

MODEL_FILE, MODEL_CARD = "model.keras", "model.json"
#: The trained random forest of ``classifier = "forest"`` (joblib's pickle), with its card ``model.json`` beside it.
FOREST_MODEL_FILE = "model.forest.joblib"


@dataclass(frozen=True)
class HandOff:
    """A ``.mat`` hand-off: file name (may hold ``{per_class}``), the step that makes it, key -> dtype; in a
    ``compressed`` one the big arrays are compressed where that pays (:mod:`pipeline.handoffs.matfile`)."""

    filename: str
    made_by: str
    keys: dict
    compressed: bool = False

    def path(self, workdir: Path, **fields) -> Path:
        return Path(workdir) / self.filename.format(**fields)


SEGMENTS = HandOff("segments.mat", STEP0, {"segments": np.int32, PROVENANCE: TEXT})
SAMPLES = HandOff("samples_labels.mat", STEP0, {
    "samples": PATCHES, PATCH_SCALE: np.float64, "masks": np.uint8, "labels": np.uint8, "centroids": np.int32,
    "purity": np.float32, "split": np.uint8, "class_names": TEXT, "layer_names": TEXT,
    PROVENANCE: TEXT}, compressed=True)
BALANCED = HandOff("Samples_classBalanced_{per_class}.mat", STEP1, {
    "images": PATCHES, PATCH_SCALE: np.float64, "masks": np.uint8, "labels": np.uint8, "index": np.int32,
    "class_names": TEXT, "layer_names": TEXT, PROVENANCE: TEXT}, compressed=True)
PRED_LABELS = HandOff("predLabels.mat", STEP2, {"predLabels": np.uint8, PROVENANCE: TEXT})
PRED_PROB = HandOff("predProb.mat", STEP2, {"predProb": np.float32, PROVENANCE: TEXT})
PRED_MAP = HandOff("predMap.mat", STEP2, {"predMap": np.uint8, PROVENANCE: TEXT})



@dataclass(frozen=True)
class RasterHandOff:
    """A GeoTIFF hand-off: file name, the step that makes it, pixel dtype, band count, nodata value, and the
    metadata item in which it carries the id of the run that wrote it; with a ``scale``, the file holds layer
    values in [0, 1] as uint8 steps of ``scale`` (GDAL's band scale: QGIS shows the values), read back as float32."""

    filename: str
    made_by: str
    dtype: type
    bands: int
    nodata: float | None
    run_item: str
    band_names: tuple | None = None
    scale: float | None = None

    def path(self, workdir: Path) -> Path:
        return Path(workdir) / self.filename


def layers_raster(layer_names: tuple) -> RasterHandOff:
    """``layers.tif`` of a Step 0 run whose layers are ``layer_names``: one band each, in their order."""
    return RasterHandOff("layers.tif", STEP0, np.uint8, len(layer_names), None, STEP0_RUN_ITEM, tuple(layer_names),
                         scale=UNIT_SCALE)


def layer_names_of_run(step0_record: dict) -> tuple:
    """The layers of a Step 0 run, in order (``vocabulary.layer_names_of``), from its provenance: those its stretch
    limits are given for."""
    limits = step0_record.get("stretch", {}).get("limits")
    names = layer_names_of(limits) if isinstance(limits, dict) else ()
    if set(names) != set(limits or ()):
        raise InputDataError(f"the provenance of Step 0 run {step0_record.get('run')} names no layers; rerun {STEP0}")
    return names


#: ``layers.tif`` of a scene with the tutorial's 8 layers (its file name and path are every run's).
LAYERS = layers_raster(LAYER_NAMES)
SEGMENTS_RASTER = RasterHandOff("segments.tif", STEP0, np.int32, 1, NO_SUPERPIXEL, STEP0_RUN_ITEM)
REFERENCE = RasterHandOff("reference.tif", STEP0, np.uint8, 1, UNLABELLED, STEP0_RUN_ITEM)
PRED_MAP_RASTER = RasterHandOff("predMap.tif", STEP2, np.uint8, 1, UNLABELLED, STEP2_RUN_ITEM)
UNCERTAINTY = RasterHandOff("uncertainty.tif", STEP2, np.float32, 1, float("nan"), STEP2_RUN_ITEM,
                            ("1 - max class probability",))
STEP0_RASTERS = (LAYERS, SEGMENTS_RASTER, REFERENCE)
STEP2_RASTERS = (PRED_MAP_RASTER, UNCERTAINTY)

def typed(handoff: HandOff, arrays: dict) -> dict:
    """``arrays`` with every key of ``handoff``, each in its declared dtype (text as an array of str, patches
    encoded by :func:`encode_unit_values`); ``patch_scale`` is added where the hand-off has patches."""
    if PATCH_SCALE in handoff.keys:
        arrays = {**arrays, PATCH_SCALE: UNIT_SCALE}
    missing = set(handoff.keys) - set(arrays)
    extra = set(arrays) - set(handoff.keys)
    if missing or extra:
        raise ValueError(f"{handoff.filename}: keys missing {sorted(missing)}, unexpected {sorted(extra)}")
    return {key: encoded(handoff, key, value) for key, value in arrays.items()}


def encoded(handoff: HandOff, key: str, value) -> np.ndarray:
    """``value`` of ``key`` as ``handoff`` stores it: its declared dtype, text as an array of str, patches as
    :func:`encode_unit_values` makes them (also for rows appended to a hand-off written tile by tile)."""
    kind = handoff.keys[key]
    return as_text(value) if kind == TEXT else encode_unit_values(value) if kind == PATCHES else np.asarray(value, kind)


def encode_unit_values(values: np.ndarray) -> np.ndarray:
    """Layer values in [0, 1] (layers, patches) as uint8 steps of 1 / :data:`UNIT_STEPS` (rounded half up,
    clipped to the range; :func:`~pipeline.core.stretch.unit_to_byte`); uint8 values as they are.

    >>> encode_unit_values(np.array([0.0, 0.5, 1.0], np.float32)).tolist()
    [0, 128, 255]
    """
    values = np.asarray(values)
    return values if values.dtype == np.uint8 else unit_to_byte(values)


def decode_unit_values(steps: np.ndarray) -> np.ndarray:
    """uint8 steps of :func:`encode_unit_values` as float32 layer values in [0, 1]."""
    return np.divide(steps, np.float32(UNIT_STEPS), dtype=np.float32)


def decoded(handoff: HandOff, contents: dict) -> dict:
    """``contents`` read from ``handoff`` with its patch keys as float32 layer values again."""
    return {key: decode_unit_values(value)
            if handoff.keys.get(key) == PATCHES and np.asarray(value).dtype == np.uint8 else value
            for key, value in contents.items()}


def as_text(value) -> np.ndarray:
    """Text as an array of str: a dict becomes one JSON string, a str one string, a sequence one per item."""
    if isinstance(value, dict):
        value = [json.dumps(value, sort_keys=True)]
    elif isinstance(value, str):
        value = [value]
    return np.array(list(value), dtype=str)


def save(handoff: HandOff, workdir: Path, arrays: dict, **fields) -> Path:
    """Write a complete hand-off atomically; returns its path."""
    path = handoff.path(workdir, **fields)
    matfile.save_mat(path, typed(handoff, arrays), compressed=handoff.compressed)
    return path


def load(handoff: HandOff, workdir: Path, keys, **fields) -> dict:
    """Read ``keys`` of a hand-off (patches as float32, with their ``patch_scale``), each checked
    (:func:`checked`); a missing or damaged file, or a key or value it should not hold, names the step to rerun."""
    path = handoff.path(workdir, **fields)
    return decoded(handoff, checked(handoff, path, matfile.load_mat(path, with_scale(handoff, keys),
                                                                    made_by=handoff.made_by)))


def load_rows(handoff: HandOff, workdir: Path, keys, rows, **fields) -> dict:
    """Rows ``rows`` (slice or indices) of ``keys``, checked as by :func:`load`; a MATLAB 7.3 file is read only
    at those rows."""
    path = existing(handoff.path(workdir, **fields), handoff.made_by)
    keys = with_scale(handoff, keys)
    scale = [PATCH_SCALE] if PATCH_SCALE in keys else []
    contents = matfile.load_mat_rows(path, [key for key in keys if key not in scale], rows, made_by=handoff.made_by)
    return decoded(handoff, checked(handoff, path, {**contents, **matfile.load_mat(path, scale,
                                                                                   made_by=handoff.made_by)}))


def with_scale(handoff: HandOff, keys) -> list:
    """``keys`` and, where they hold patches, ``patch_scale``: patches are read only with their scale."""
    keys = list(keys)
    return keys + [PATCH_SCALE] if PATCH_SCALE not in keys and any(handoff.keys.get(k) == PATCHES for k in keys) \
        else keys


def checked(handoff: HandOff, path: Path, contents: dict) -> dict:
    """``contents`` read from ``handoff`` at ``path`` if every key holds what the contract declares (its dtype,
    rank, shape and range: :mod:`pipeline.handoffs.checks`) and its per-row keys are as long as each other."""
    for key, value in contents.items():
        kind = handoff.keys.get(key)
        if kind == TEXT:
            checks.check_text(path, key, value, handoff.made_by)
        elif kind is not None:
            checks.check_key(path, key, value, np.uint8 if kind == PATCHES else kind, handoff.made_by)
    checks.check_rows(path, contents, handoff.made_by)
    return contents


def existing(path: Path, made_by: str) -> Path:
    """``path`` if the file exists, else an error saying which step to run first."""
    if not Path(path).is_file():
        raise InputFileError(f"{path}: not found; run {made_by} first")
    return Path(path)


def load_step0(scene, keys, with_segments: bool = True) -> tuple[dict, np.ndarray | None]:
    """Step 0's ``samples_labels.mat`` (``keys``) and, ``with_segments``, its ``segments`` (else None: a tiled
    scene's segments can be as big as the image), checked to come from one Step 0 run on the scene's current
    image, reference, classes, layers and Step-0 parameters, and to hold one row per superpixel of that run.
    The contents hold the Step 0 run's provenance under ``"provenance"`` (a dict)."""
    segments_file = load(SEGMENTS, scene.workdir, ["segments", PROVENANCE] if with_segments else [PROVENANCE])
    samples = load(SAMPLES, scene.workdir, {*keys, "class_names", "layer_names", PROVENANCE})
    path = SAMPLES.path(scene.workdir)
    samples[PROVENANCE] = record = provenance_of(samples, path, STEP0)
    if provenance_of(segments_file, SEGMENTS.path(scene.workdir), STEP0)["run"] != record["run"]:
        raise InputDataError(f"{SEGMENTS.path(scene.workdir)} and samples_labels.mat come from different runs of "
                             f"{STEP0}; rerun {STEP0}")
    check_step0_provenance(scene, record, path)
    check_names(path, samples, scene.class_names, STEP0, layer_names_of_run(record))
    n = record.get("superpixels")
    if n is None:
        raise InputDataError(f"{path}: written by an older version of {STEP0}; rerun {STEP0}")
    segments = segments_file["segments"] if with_segments else None
    if segments is not None and int(segments.max()) + 1 != n:
        raise InputDataError(f"{SEGMENTS.path(scene.workdir)}: {int(segments.max()) + 1} superpixels, but "
                             f"samples_labels.mat describes {n}; rerun {STEP0}")
    for key in keys:
        if SAMPLES.keys[key] != TEXT and len(samples[key]) != n:
            raise InputDataError(f"{path}: {key} has {len(samples[key])} rows but the Step 0 run made {n} "
                                 f"superpixels; rerun {STEP0}")
    if "labels" in samples:
        checks.check_codes(path, "labels", samples["labels"], len(scene.classes), STEP0)
    return samples, segments


def provenance_of(contents: dict, path: Path, made_by: str) -> dict:
    """The provenance dict of a loaded hand-off, checked to hold every field its step writes
    (:func:`pipeline.handoffs.checks.check_record`)."""
    try:
        record = json.loads("".join(contents[PROVENANCE]))
    except (json.JSONDecodeError, TypeError):
        raise InputDataError(f"{path}: its provenance record is damaged; rerun {made_by}") from None
    return checks.check_record(record, path, made_by)


def check_names(path: Path, contents: dict, class_names, made_by: str, layer_names: tuple) -> None:
    """Refuse a hand-off made for other classes than the scene's or other layers than ``layer_names``, its Step 0
    run's."""
    if list(contents["class_names"]) != list(class_names):
        raise InputDataError(f"{path}: made for classes {list(contents['class_names'])}, not {list(class_names)}; "
                             f"rerun {made_by}")
    if tuple(contents["layer_names"]) != tuple(layer_names):
        raise InputDataError(f"{path}: made for layers {list(contents['layer_names'])}; rerun {made_by}")
    for key in ("samples", "images"):
        if key in contents and contents[key].shape[-1] != len(layer_names):
            raise InputDataError(f"{path}: {key} holds {contents[key].shape[-1]} layers, not the {len(layer_names)} "
                                 f"of its layer_names; rerun {made_by}")


def load_balanced(scene, keys, step0_record: dict, n_superpixels: int) -> dict:
    """Step 1's balanced set (``keys``) for the scene's ``per_class``, checked to be drawn from the Step 0 run of
    ``step0_record`` (its provenance; ``n_superpixels`` superpixels) with the scene's ``training_seed``, with the
    scene's class codes and the run's layers; its provenance is under ``"provenance"``."""
    step0_run = step0_record["run"]
    per_class, patch_width = scene.params.per_class, scene.params.patch_width
    path = BALANCED.path(scene.workdir, per_class=per_class)
    contents = load(BALANCED, scene.workdir, {*keys, "index", "class_names", "layer_names", PROVENANCE},
                    per_class=per_class)
    contents[PROVENANCE] = record = provenance_of(contents, path, STEP1)
    check_names(path, contents, scene.class_names, STEP1, layer_names_of_run(step0_record))
    if record.get("step0_run") != step0_run or record["parameters"].get("training_seed") != scene.params.training_seed:
        raise InputDataError(f"{path}: drawn from another run of {STEP0} or with another seed than "
                             f"{scene.config_path.name} now; rerun {STEP1}")
    if "images" in contents and contents["images"].shape[1] != patch_width:
        raise InputDataError(f"{path}: patches of {contents['images'].shape[1]} px, not {patch_width}; rerun {STEP1}")
    if "labels" in contents:
        checks.check_codes(path, "labels", contents["labels"], len(scene.classes), STEP1, unlabelled=False)
    checks.check_below(path, "index", contents["index"], n_superpixels, STEP1)
    return contents


def load_pred_labels(scene, step0_run: str, n_superpixels: int) -> tuple[np.ndarray, dict]:
    """Step 2's ``predLabels`` and provenance, checked to label the ``n_superpixels`` superpixels of the Step 0
    run ``step0_run`` with the scene's class codes (or 255). The provenance's ``step1_run`` names the balanced set
    the model was trained on here (None for a model applied from elsewhere, whose run is ``model_run``)."""
    contents = load(PRED_LABELS, scene.workdir, ["predLabels", PROVENANCE])
    path = PRED_LABELS.path(scene.workdir)
    record = provenance_of(contents, path, STEP2)
    if record.get("step0_run") != step0_run:
        raise InputDataError(f"{path}: predicted for other Step 0 outputs than those in {scene.workdir}; "
                             f"rerun {STEP2}")
    labels = contents["predLabels"].ravel()
    if len(labels) != n_superpixels:
        raise InputDataError(f"{path}: labels {len(labels)} superpixels, but the Step 0 run made {n_superpixels}; "
                             f"rerun {STEP2}")
    checks.check_codes(path, "predLabels", labels, len(scene.classes), STEP2)
    return labels, record


@contextlib.contextmanager
def raster_writer(handoff: RasterHandOff, folder: Path, grid, run: str, **style):
    """Yield ``write(block, row=0, col=0)`` filling the raster hand-off in ``folder`` on ``grid`` (a
    :class:`gdal_tif2rgb.Grid`) block by block, stamped with the ``run`` (the stamp of the run) that writes it; blocks are (rows, cols),
    or (rows, cols, bands) channels last. ``style``: ``class_names`` and ``class_colours`` of a class raster
    (:func:`class_style`).
    The file appears only when the block exits cleanly (:func:`gdal_tif2rgb.geotiff_writer`)."""
    with gdal_tif2rgb.geotiff_writer(handoff.path(folder), grid, handoff.bands, handoff.dtype,
                                     **_description(handoff, run, style)) as write:
        yield lambda block, row=0, col=0: write(_band_first(handoff, block), row, col)


def write_raster(handoff: RasterHandOff, folder: Path, array: np.ndarray, grid, run: str, **style) -> None:
    """Write a whole raster hand-off at once, as :func:`raster_writer` would (GDAL reads ``array`` where it lies,
    if it is already of the stored type)."""
    gdal_tif2rgb.write_geotiff(handoff.path(folder), np.asarray(_band_first(handoff, array), handoff.dtype), grid,
                               **_description(handoff, run, style))


def _description(handoff: RasterHandOff, run: str, style: dict) -> dict:
    return dict(nodata=handoff.nodata, band_names=handoff.band_names, scale=handoff.scale,
                metadata={handoff.run_item: run}, **style)


def _band_first(handoff: RasterHandOff, block: np.ndarray) -> np.ndarray:
    """A block (rows, cols) or (rows, cols, bands) as stored (unit values as steps), bands first (a view)."""
    block = encode_unit_values(block) if handoff.scale else block
    return np.moveaxis(block, -1, 0) if block.ndim == 3 else block


def class_style(class_names) -> dict:
    """The style of a class raster of ``class_names``: their names and palette colours, for :func:`raster_writer`."""
    return {"class_names": list(class_names), "class_colours": class_palette(class_names)}


def record_rasters(record: dict, out, handoffs) -> None:
    """Add to ``record`` (a run's provenance, before it is saved) the fingerprint of each raster hand-off of
    ``handoffs`` staged in ``out`` (an :class:`~pipeline.run.outputs.OutputSet`), at the path it has once committed,
    so that :func:`raster_grid` can check at read that the file is still the one written."""
    record["rasters"] = {handoff.filename: {**fingerprint(handoff.path(out.staging)),
                                            "path": str(handoff.path(out.folder))}
                         for handoff in handoffs if handoff.path(out.staging).is_file()}


def raster_grid(handoff: RasterHandOff, workdir: Path, record: dict):
    """The :class:`gdal_tif2rgb.Grid` of a raster hand-off in ``workdir``, after checking that it exists, was
    stamped by the run of ``record`` (the provenance of the hand-offs read with it: its ``stamp``, else its
    ``run``), is the file that run wrote
    (its recorded size and time, else its SHA-256) and has the declared dtype and band count."""
    path = existing(handoff.path(workdir), handoff.made_by)
    grid, bands, dtype, metadata = gdal_tif2rgb.read_layout(path)
    if metadata.get(handoff.run_item) != record.get("stamp", record["run"]):
        raise InputDataError(f"{path}: written by another run of {handoff.made_by} than the hand-offs read with it "
                             f"in {Path(workdir)}; rerun {handoff.made_by}")
    rasters = record.get("rasters")
    recorded = rasters.get(handoff.filename) if isinstance(rasters, dict) else None
    if not isinstance(recorded, dict):
        raise InputDataError(f"{path}: the provenance of run {record['run']} records no checksum of this file; "
                             f"rerun {handoff.made_by}")
    if not unchanged(recorded, path):
        raise InputDataError(f"{path}: changed since {handoff.made_by} wrote it (its SHA-256 is not the one its run "
                             f"recorded); rerun {handoff.made_by}")
    if bands != handoff.bands or dtype != np.dtype(handoff.dtype):
        raise InputDataError(f"{path}: {bands} band(s) of {dtype}, not {handoff.bands} of "
                             f"{np.dtype(handoff.dtype)}; rerun {handoff.made_by}")
    return grid


def read_raster(handoff: RasterHandOff, workdir: Path, record: dict, window: tuple | None = None,
                as_stored: bool = False) -> np.ndarray:
    """A raster hand-off, whole or a ``window`` (row, col, rows, cols), checked as by :func:`raster_grid`:
    (rows, cols) of its dtype for one band, (rows, cols, bands) for several (contiguous, channels last); float32
    layer values where it holds uint8 steps (a ``scale``), unless ``as_stored`` (the steps themselves)."""
    raster_grid(handoff, workdir, record)
    several = handoff.bands > 1
    data = gdal_tif2rgb.read_window(handoff.path(workdir), handoff.bands, handoff.dtype, window, channels_last=several)
    data = decode_unit_values(data) if handoff.scale and not as_stored else data
    return data if several else data[0]


def train_labels(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Labels of the training superpixels (split TRAIN, labelled)."""
    return labels[(split == TRAIN) & (labels != UNLABELLED)]
