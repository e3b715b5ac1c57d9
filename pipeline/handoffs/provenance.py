"""What the hand-offs' provenance records hold: a new run's record, Step 0's record with its ``stamp`` and its
identity, the check of Step 0's record against the scene, and the parameters that shape each step's hand-offs.

A Step 0 run is identified by a digest of what it made (:func:`step0_identity`), not by a random id: a rerun with
the same inputs and settings that reproduces its outputs exactly keeps the id the later steps' hand-offs name, so
it invalidates none of them.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputDataError
from pipeline.core.vocabulary import STEP0
from pipeline.handoffs.fingerprints import digest, matches

#: Parameters that shape Step 0's hand-offs; a later step takes their values from them (see
#: :mod:`pipeline.handoffs.settings`) or refuses hand-offs made with other values.
STEP0_PARAMETERS = ("split_seed", "n_segments", "compactness", "slic_layers", "patch_width", "test_fraction",
                    "block_size", "masking", "mask_classes", "mask_buffer_m")
#: Parameters that shape Step 1's balanced set, and so say which balanced set a model was trained on.
BALANCE_PARAMETERS = ("per_class", "training_seed")
#: The arrays of ``samples_labels.mat`` that a Step 0 run's identity hashes besides its rasters: its patches and
#: masks are cut from ``layers.tif`` and ``segments.tif`` at these ``centroids``.
IDENTITY_ARRAYS = ("labels", "split", "centroids", "purity")


def new_run(step: str, scene, names=None, **fields) -> dict:
    """A provenance record of a new run of ``step`` on ``scene``, with its :func:`flags`."""
    return {"step": step, "run": uuid.uuid4().hex, "flags": flags(scene, names), **fields}


def flags(scene, names=None) -> list[str]:
    """Those of the parameters ``names`` (all if None) that were set on a command line for ``scene``, this
    step's or an earlier one's: a later step takes their recorded values as its defaults."""
    return [name for name in scene.flags if names is None or name in names]


def step0_parameters(scene) -> dict:
    """What shapes Step 0's hand-offs: bands, classes, the later dates, the mask raster and the aoi (by path or
    table), the reference field, and the Step-0 parameters of ``scene``."""
    params = scene.params.as_dict()
    return {"bands": dict(scene.bands), "classes": {k: list(v) for k, v in scene.classes.items()},
            "later_dates": [str(image) for image in scene.images[1:]], "mask": scene.mask and str(scene.mask),
            "aoi": scene.aoi if isinstance(scene.aoi, dict) or scene.aoi is None else str(scene.aoi),
            "reference_field": scene.reference_field,
            "mask_values": list(scene.mask_values), "composite": scene.composite,
            **{name: list(params[name]) if isinstance(params[name], tuple) else params[name]
               for name in STEP0_PARAMETERS}}


def step0_provenance(scene, date_fingerprints: list, reference_fingerprint: dict | None) -> dict:
    """Provenance of a new Step 0 run on ``scene`` whose inputs had these fingerprints when read (one per date of
    its image, in order; no reference: None), the Step-0 parameters set by flags among them. Step 0 adds its
    ``stretch`` and ``stamp`` (:func:`stamp_step0`): the limits, the model they came from, if any, and its layers'
    quantiles before the stretch (``layer_quantiles``, :func:`pipeline.model.scene_shift.layer_quantiles`); then
    its ``run`` (:func:`step0_identity`). Two dates of the same contents are refused: one observation twice."""
    seen = {}
    for date in date_fingerprints:
        if date["sha256"] in seen:
            raise InputDataError(f"{scene.config_path}: image dates {seen[date['sha256']]} and {date['path']} have "
                                 f"the same contents; list each date once")
        seen[date["sha256"]] = date["path"]
    return {"step": STEP0, "flags": flags(scene, STEP0_PARAMETERS),
            "inputs": {"image": date_fingerprints[0], "reference": reference_fingerprint,
                       "later_dates": date_fingerprints[1:]},
            "parameters": step0_parameters(scene)}


def input_fingerprints(record: dict) -> list[dict]:
    """The fingerprints of every input of Step 0's ``record``: each date of the image, then the reference."""
    inputs = record["inputs"]
    return [inputs["image"], *inputs["later_dates"], *([inputs["reference"]] if inputs["reference"] else [])]


def stamp_step0(record: dict) -> None:
    """Add to Step 0's ``record`` its ``stamp``, which its rasters carry: a digest of the inputs' contents, the
    parameters and the stretch, known before the rasters are written and the same for the same settings."""
    inputs = {role: [date["sha256"] for date in value] if isinstance(value, list) else value and value["sha256"]
              for role, value in record["inputs"].items()}
    record["stamp"] = digest({"inputs": inputs, "parameters": record["parameters"], "stretch": record["stretch"]})


def step0_identity(record: dict, samples: dict) -> str:
    """The ``run`` of a Step 0 run: a digest of its ``stamp``, its rasters' SHA-256 (``layers.tif`` holds the
    patches' values, ``segments.tif`` the superpixels) and the :data:`IDENTITY_ARRAYS` of its ``samples``."""
    rasters = {name: raster["sha256"] for name, raster in record["rasters"].items()}
    return digest({"stamp": record["stamp"], "rasters": rasters, "superpixels": record["superpixels"]},
                  [np.asarray(samples[key]) for key in IDENTITY_ARRAYS])


def check_step0_provenance(scene, record: dict, path: Path) -> None:
    """Refuse Step 0 hand-offs made from other inputs or other Step-0 parameters than the scene's now."""
    for role in ("image", "reference"):
        if (record["inputs"][role] is None) != (getattr(scene, role) is None):
            raise InputDataError(f"{path}: made {'without' if record['inputs'][role] is None else 'with'} a {role}, "
                                 f"unlike {scene.config_path.name} now; rerun {STEP0}")
        if record["inputs"][role] is not None and not matches(record["inputs"][role], getattr(scene, role)):
            raise InputDataError(f"{path}: made from {record['inputs'][role]['path']}, which is not the {role} "
                                 f"{getattr(scene, role)} of {scene.config_path.name} as it is now; rerun {STEP0}")
    later = record["inputs"]["later_dates"]
    if len(later) != len(scene.images) - 1:
        raise InputDataError(f"{path}: made from {1 + len(later)} date(s) of the image, not the {len(scene.images)} "
                             f"of {scene.config_path.name} now; rerun {STEP0}")
    for recorded, date in zip(later, scene.images[1:]):
        if not matches(recorded, date):
            raise InputDataError(f"{path}: made from {recorded['path']}, which is not the date {date} of "
                                 f"{scene.config_path.name} as it is now; rerun {STEP0}")
    current = step0_parameters(scene)
    changed = [name for name in current if record["parameters"].get(name) != current[name]]
    if changed:
        details = ", ".join(f"{n} {record['parameters'].get(n)!r} -> {current[n]!r}" for n in changed)
        raise InputDataError(f"{path}: made with other settings than {scene.config_path.name} now ({details}); "
                             f"rerun {STEP0}")
