"""What a later step accepts of a ``.mat`` hand-off: every key it reads of the declared dtype, rank and range
(:func:`check_key`, :func:`check_rows`), and every provenance record with the fields, and field types, that the
step that made it writes (:func:`check_record`). Anything else is one :class:`InputDataError` naming the file,
the key or field, and the step to rerun: a value of a hand-off is honoured or refused, never ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputDataError
from pipeline.core.vocabulary import NO_SUPERPIXEL, STEP0, STEP1, STEP2, UNIT_SCALE, UNLABELLED


@dataclass(frozen=True)
class Values:
    """What a numeric key holds: its rank (0: one number), whether it has one row per superpixel or sample
    (``rows``: all such keys of a file as long), its trailing shape (None: any), whether its rows are patches
    (odd squares), and the closed range of its values (None: the dtype's own)."""

    ndim: int
    rows: bool = False
    trailing: tuple | None = None
    patches: bool = False
    low: float | None = None
    high: float | None = None


#: The numeric keys of the ``.mat`` hand-offs (a name means the same in every file that has it).
VALUES = {
    "segments": Values(2, low=NO_SUPERPIXEL),
    "samples": Values(4, rows=True, trailing=(None, None, None), patches=True),
    "images": Values(4, rows=True, trailing=(None, None, None), patches=True),
    "patch_scale": Values(0, low=UNIT_SCALE, high=UNIT_SCALE),
    "masks": Values(3, rows=True, low=0, high=1),
    "labels": Values(1, rows=True),
    "centroids": Values(2, rows=True, trailing=(2,), low=0),
    "purity": Values(1, rows=True, low=0, high=1),
    "split": Values(1, rows=True, low=0, high=2),
    "index": Values(1, rows=True, low=0),
    "predLabels": Values(1, rows=True, low=0, high=UNLABELLED),
    "predProb": Values(2, rows=True, low=0, high=1),
    "predMap": Values(2, low=0, high=UNLABELLED),
}


def check_key(path: Path, key: str, value, dtype, made_by: str) -> None:
    """Refuse ``value`` of numeric ``key`` read from ``path`` unless it has the declared ``dtype``, the rank,
    trailing shape and range of :data:`VALUES` (patches: odd square windows of the layers; NaN is out of any
    range)."""
    rule, value = VALUES[key], np.asarray(value)
    problem = None
    if value.dtype != np.dtype(dtype):
        problem = f"holds {value.dtype}, not {np.dtype(dtype)}"
    elif (value.size != 1) if rule.ndim == 0 else value.ndim != rule.ndim:
        problem = f"has shape {value.shape}, not {'one number' if rule.ndim == 0 else f'{rule.ndim} dimensions'}"
    elif rule.trailing and any(want not in (None, got) for want, got in zip(rule.trailing, value.shape[1:])):
        problem = f"has shape {value.shape}"
    elif rule.patches and (value.shape[1] != value.shape[2] or value.shape[1] % 2 == 0):
        problem = f"has patches of {value.shape[1]} x {value.shape[2]} px, not an odd square"
    elif value.size and not _within(value, rule.low, rule.high):
        problem = f"holds values outside [{_shown(rule.low)}, {_shown(rule.high)}] (from {_shown(np.min(value))})"
    if problem:
        raise InputDataError(f"{path}: {key} {problem}; rerun {made_by}")


def _within(value: np.ndarray, low, high) -> bool:
    if value.dtype.kind == "f" and np.isnan(value).any():
        return False
    return (low is None or value.min() >= low) and (high is None or value.max() <= high)


def _shown(number) -> str:
    return "..." if number is None else f"{float(number):g}"


def check_rows(path: Path, contents: dict, made_by: str) -> None:
    """Refuse a file whose per-row keys (one row per superpixel or sample) among ``contents`` differ in length."""
    lengths = {key: len(value) for key, value in contents.items() if key in VALUES and VALUES[key].rows}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key} {length}" for key, length in lengths.items())
        raise InputDataError(f"{path}: its keys differ in rows ({shown}); rerun {made_by}")


def check_codes(path: Path, key: str, labels: np.ndarray, n_classes: int, made_by: str,
                unlabelled: bool = True) -> None:
    """Refuse class codes beyond the scene's ``n_classes`` classes (other than the unlabelled code, where
    ``unlabelled`` ones may be)."""
    unknown = np.unique(labels[(labels >= n_classes) & ((labels != UNLABELLED) | (not unlabelled))])
    if unknown.size:
        raise InputDataError(f"{path}: {key} holds class codes {unknown.tolist()[:5]} beyond the scene's "
                             f"{n_classes} classes; rerun {made_by}")


def check_below(path: Path, key: str, value: np.ndarray, limit, made_by: str) -> None:
    """Refuse values of ``key`` at or past ``limit`` (e.g. a superpixel index past the superpixels)."""
    value = np.asarray(value)
    if value.size and value.max() >= limit:
        raise InputDataError(f"{path}: {key} holds {value.max()}, past the {limit} it can be; rerun {made_by}")


def check_text(path: Path, key: str, value, made_by: str) -> None:
    """Refuse a text key that is not a list of strings."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputDataError(f"{path}: {key} is not text; rerun {made_by}")


#: A file's fingerprint as provenance records it (:func:`pipeline.handoffs.fingerprints.fingerprint`).
FINGERPRINT = {"path": str, "size": int, "mtime_ns": int, "sha256": str}
#: The fields of each step's provenance record and their types (a tuple: any of them; a dict: a dict with
#: those fields; a list holding one type: a list of those).
RECORDS = {
    STEP0: {"step": str, "run": str, "flags": [str], "parameters": dict, "stamp": str, "superpixels": int,
            "rasters": dict, "stretch": {"unit": str, "limits": dict},
            "inputs": {"image": FINGERPRINT, "reference": (FINGERPRINT, None), "later_dates": [FINGERPRINT]}},
    STEP1: {"step": str, "run": str, "flags": [str], "parameters": dict, "step0_run": str, "made": (float, int)},
    STEP2: {"step": str, "run": str, "flags": [str], "parameters": dict, "step0_run": str, "step1_run": (str, None),
            "rasters": dict},
}


def check_record(record, path: Path, made_by: str) -> dict:
    """``record`` (a parsed provenance record of a hand-off of ``made_by``) if it has every field of
    :data:`RECORDS` of the step, of its type, and names that step; else one line naming the field."""
    problem = _mismatch(record, RECORDS[made_by], "provenance")
    if problem is None and record["step"] != made_by:
        problem = f"provenance names {record['step']!r}, not {made_by}"
    if problem:
        raise InputDataError(f"{path}: its {problem}; rerun {made_by}")
    return record


def _mismatch(value, kind, name: str) -> str | None:
    """What is wrong with ``value`` as a ``kind`` (see :data:`RECORDS`) at ``name``, or None."""
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            return f"{name} is not a record"
        for field, inner in kind.items():
            if field not in value:
                return f"{name} lacks {field!r} (written by another version, or edited)"
            problem = _mismatch(value[field], inner, f"{name}.{field}")
            if problem:
                return problem
        return None
    if isinstance(kind, list):
        if not isinstance(value, list):
            return f"{name} is not a list"
        return next(filter(None, (_mismatch(item, kind[0], f"{name}[{i}]") for i, item in enumerate(value))), None)
    if isinstance(kind, tuple):
        problems = [_mismatch(value, option, name) for option in kind]
        return None if None in problems else problems[0]
    if kind is None:
        return None if value is None else f"{name} is not null"
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        return f"{name} is {type(value).__name__}, not {kind.__name__}"
    return None
