"""The hand-off contract between the steps: file names, keys and dtypes, codes, layer names, loaders and savers.

Every step reads what an earlier step wrote only through :func:`load` and the checked loaders below, and writes
its hand-offs only through :func:`save`, so a missing, truncated or foreign file is reported with the step to
rerun, and a hand-off always holds every key of its declared type.

===============================  =========  ==========================================================
file                             made by    keys (dtype)
===============================  =========  ==========================================================
``segments.mat``                 Step 0     ``segments`` (rows x cols int32, ids 0..n-1)
``samples_labels.mat``           Step 0     ``samples`` (n x w x w x 8 float32), ``masks`` (n x w x w uint8),
                                            ``labels`` (n uint8), ``centroids`` (n x 2 int32), ``purity``,
                                            ``valid_fraction`` (n float32), ``split`` (n uint8),
                                            ``class_names``, ``layer_names`` (text)
``Samples_classBalanced_<N>.mat``  Step 1   ``images``, ``masks``, ``labels``, ``index`` (m int32), names
``predLabels.mat``               Step 2     ``predLabels`` (n uint8)
``predProb.mat``                 Step 2     ``predProb`` (n x classes float32)
``predMap.mat``                  Step 2     ``predMap`` (rows x cols uint8; whole-scene runs only)
===============================  =========  ==========================================================

Rasters handed on: ``layers.tif`` (8 float32 bands in :data:`LAYER_NAMES` order), ``segments.tif`` and
``reference.tif`` (uint8 class codes, :data:`UNLABELLED` where there is no label), all on the image's grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.errors import InputDataError

#: The tutorial's 8 layers, in the order of ``layers.tif`` and of every patch's last axis.
LAYER_NAMES = ("blue", "green", "red", "nir", "swir", "ndvi", "ndwi", "ndbi")
SPECTRAL_BANDS = LAYER_NAMES[:5]
INDEX_LAYERS = LAYER_NAMES[5:]
#: Extra patch channel the CNN may see: 1 on the pixels of the superpixel the patch is centred on, else 0.
MASK_CHANNEL = "mask"
#: Class code of superpixels and pixels without a reference label, and map nodata.
UNLABELLED = 255
#: Codes of the ``split`` hand-off.
TRAIN, TEST, UNUSED = 0, 1, 2

STEP0, STEP1, STEP2, STEP3 = ("Step0_Data_Preparation.py", "Step1_Class_Balance.py", "Step2_Model_Training.py",
                              "Step3_Accuracy_Assessment.py")
TEXT = "text"

LAYERS_TIF, SEGMENTS_TIF, REFERENCE_TIF = "layers.tif", "segments.tif", "reference.tif"
MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class HandOff:
    """A ``.mat`` hand-off: file name (may hold ``{per_class}``), the step that makes it, key -> dtype."""

    filename: str
    made_by: str
    keys: dict

    def path(self, workdir: Path, **fields) -> Path:
        return Path(workdir) / self.filename.format(**fields)


SEGMENTS = HandOff("segments.mat", STEP0, {"segments": np.int32})
SAMPLES = HandOff("samples_labels.mat", STEP0, {
    "samples": np.float32, "masks": np.uint8, "labels": np.uint8, "centroids": np.int32, "purity": np.float32,
    "split": np.uint8, "valid_fraction": np.float32, "class_names": TEXT, "layer_names": TEXT})
BALANCED = HandOff("Samples_classBalanced_{per_class}.mat", STEP1, {
    "images": np.float32, "masks": np.uint8, "labels": np.uint8, "index": np.int32, "class_names": TEXT,
    "layer_names": TEXT})
PRED_LABELS = HandOff("predLabels.mat", STEP2, {"predLabels": np.uint8})
PRED_PROB = HandOff("predProb.mat", STEP2, {"predProb": np.float32})
PRED_MAP = HandOff("predMap.mat", STEP2, {"predMap": np.uint8})


def typed(handoff: HandOff, arrays: dict) -> dict:
    """``arrays`` with every key of ``handoff``, each in its declared dtype (text as an array of str)."""
    missing = set(handoff.keys) - set(arrays)
    extra = set(arrays) - set(handoff.keys)
    if missing or extra:
        raise ValueError(f"{handoff.filename}: keys missing {sorted(missing)}, unexpected {sorted(extra)}")
    return {key: np.array(list(value), dtype=str) if dtype == TEXT else np.asarray(value, dtype=dtype)
            for key, value in arrays.items() for dtype in (handoff.keys[key],)}


def save(handoff: HandOff, workdir: Path, arrays: dict, **fields) -> Path:
    """Write a complete hand-off atomically; returns its path."""
    path = handoff.path(workdir, **fields)
    gdal_tif2rgb.save_mat(path, typed(handoff, arrays))
    return path


def load(handoff: HandOff, workdir: Path, keys, **fields) -> dict:
    """Read ``keys`` of a hand-off; a missing or damaged file names the step to rerun."""
    return gdal_tif2rgb.load_mat(handoff.path(workdir, **fields), list(keys), made_by=handoff.made_by)


def load_rows(handoff: HandOff, workdir: Path, keys, rows, **fields) -> dict:
    """Rows ``rows`` (slice or indices) of ``keys``; a MATLAB 7.3 file is read only at those rows."""
    path = existing(handoff.path(workdir, **fields), handoff.made_by)
    return gdal_tif2rgb.load_mat_rows(path, list(keys), rows, made_by=handoff.made_by)


def existing(path: Path, made_by: str) -> Path:
    """``path`` if the file exists, else an error saying which step to run first."""
    if not Path(path).is_file():
        raise gdal_tif2rgb.InputFileError(f"{path}: not found; run {made_by} first")
    return Path(path)


def load_step0(workdir: Path, class_names, keys) -> tuple[dict, np.ndarray]:
    """Step 0's ``samples_labels.mat`` (``keys``) and ``segments``, checked to describe the same superpixels
    and the scene's classes and layers."""
    segments = load(SEGMENTS, workdir, ["segments"])["segments"]
    samples = load(SAMPLES, workdir, {*keys, "class_names", "layer_names"})
    check_names(SAMPLES.path(workdir), samples, class_names, STEP0)
    n = int(segments.max()) + 1
    for key in keys:
        if SAMPLES.keys[key] != TEXT and len(samples[key]) != n:
            raise InputDataError(f"{SAMPLES.path(workdir)}: {key} has {len(samples[key])} rows but segments.mat "
                                 f"has {n} superpixels; rerun {STEP0}")
    return samples, segments


def check_names(path: Path, contents: dict, class_names, made_by: str) -> None:
    """Refuse a hand-off made for other classes or layers than the scene's."""
    if list(contents["class_names"]) != list(class_names):
        raise InputDataError(f"{path}: made for classes {list(contents['class_names'])}, not {list(class_names)}; "
                             f"rerun {made_by}")
    if tuple(contents["layer_names"]) != LAYER_NAMES:
        raise InputDataError(f"{path}: made for layers {list(contents['layer_names'])}; rerun {made_by}")


def load_balanced(workdir: Path, per_class: int, class_names, keys, n_superpixels: int,
                  patch_width: int | None = None) -> dict:
    """Step 1's balanced set (``keys``), checked against Step 0's superpixel count and patch width."""
    contents = load(BALANCED, workdir, {*keys, "index", "class_names", "layer_names"}, per_class=per_class)
    path = BALANCED.path(workdir, per_class=per_class)
    check_names(path, contents, class_names, STEP1)
    wrong_width = patch_width is not None and "images" in contents and contents["images"].shape[1] != patch_width
    if contents["index"].max(initial=0) >= n_superpixels or wrong_width:
        raise InputDataError(f"{path}: does not match samples_labels.mat (another scene or patch width?); "
                             f"rerun {STEP1}")
    return contents


def load_pred_labels(workdir: Path, n_superpixels: int) -> np.ndarray:
    """Step 2's ``predLabels``, checked to hold one label per superpixel of Step 0."""
    pred_labels = load(PRED_LABELS, workdir, ["predLabels"])["predLabels"]
    if len(pred_labels) != n_superpixels:
        raise InputDataError(f"{PRED_LABELS.path(workdir)}: {len(pred_labels)} labels for {n_superpixels} "
                             f"superpixels of segments.mat; rerun {STEP2}")
    return pred_labels


def train_labels(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Labels of the training superpixels (split TRAIN, labelled)."""
    return labels[(split == TRAIN) & (labels != UNLABELLED)]
