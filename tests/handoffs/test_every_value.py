"""Every value of a hand-off is honoured or refused: for every ``.mat`` hand-off of Steps 0-2 that a later step
reads (made once on the real subset; ``predProb.mat`` and ``predMap.mat`` are for the user, no step reads them) and
every key in it, and every field of its provenance record, the key or field is removed, and a numeric key set to
an absurd value; each step that reads the file then either makes exactly what the untouched run makes (the key is
truly unused there) or exits non-zero with one stderr line naming the file, never a traceback.

Step 2 reads every key it is given here before it trains, so it must refuse each change. Step 3 is stopped once
it has read its hand-offs (its figures take seconds): what it read (``assess.HandOffs``, all its later work
depends on besides the rasters, whose checks are tested elsewhere) must equal what it reads untouched."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import scipy.io

import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from pipeline.handoffs import checks, contract, matfile
from pipeline.workflow import assess

#: Each hand-off of Steps 0-2 and the steps that read it (Step 2 only where it refuses before training).
READERS = [(contract.SEGMENTS, (step1, step2)), (contract.SAMPLES, (step1, step3)), (contract.BALANCED, (step2, step3)),
           (contract.PRED_LABELS, (step3,))]
#: The keys a step does not read of a hand-off it reads (every other key, and every provenance field, it checks).
UNUSED = {(step1, "segments.mat"): {"segments"}, (step1, "samples_labels.mat"): {"centroids", "purity"},
          (step3, "samples_labels.mat"): {"samples", "patch_scale", "masks", "purity"},
          (step3, contract.BALANCED.filename): {"images", "patch_scale", "masks"}}


def stopping_step3(monkeypatch) -> list:
    """What Step 3 reads (its ``HandOffs``) in each run of it from now on, which then stops (exit code 130, as
    after Ctrl-C)."""
    read = []

    def stop(scene, out, hand_offs, timings, validation=None):
        read.append(hand_offs)
        raise KeyboardInterrupt

    monkeypatch.setattr(assess, "assess_map", stop)
    return read


@pytest.fixture()
def step3_reads(monkeypatch) -> list:
    return stopping_step3(monkeypatch)


def same(first, second) -> bool:
    """Whether two ``assess.HandOffs`` hold equal values."""
    return all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
               for a, b in zip(dataclasses.astuple(first), dataclasses.astuple(second)))


@pytest.fixture(scope="module")
def prepared(step2_workdir, subset_config):
    """The subset's work folder after Steps 0-2 (never changed: each case copies it) and its balanced set."""
    workdir, _, _ = step2_workdir
    return {"workdir": workdir, "config": subset_config, "balanced": balanced_arrays(workdir),
            "per_class": balanced_path(workdir).stem.rpartition("_")[2]}


@pytest.fixture(scope="module")
def untouched(prepared, tmp_path_factory):
    """What Step 3 reads of the untouched hand-offs (of a copy)."""
    workdir = tmp_path_factory.mktemp("untouched") / "work"
    shutil.copytree(prepared["workdir"], workdir)
    with pytest.MonkeyPatch.context() as monkeypatch:
        read = stopping_step3(monkeypatch)
        assert step3.main(["--config", str(prepared["config"]), "--workdir", str(workdir)]) == 130
    return read.pop()


def balanced_path(workdir):
    return next(workdir.glob("Samples_classBalanced_*.mat"))


def balanced_arrays(workdir) -> dict:
    contents = scipy.io.loadmat(balanced_path(workdir))
    return {key: contents[key] for key in ("images", "masks", "labels", "index")}


def stored(path) -> dict:
    """The variables of a v5 hand-off as stored (text as str arrays), in file order."""
    names = [name for name, _, _ in scipy.io.whosmat(path)]
    contents = scipy.io.loadmat(path, chars_as_strings=True)
    return {name: contents[name] for name in names}


def absurd(key: str, value: np.ndarray) -> np.ndarray:
    """A value of ``key`` no step may use: NaN for a float; in its own dtype past its declared range, or past
    the superpixels or the grid, where the dtype allows; else the same shape in float64 at -1e30."""
    rule = checks.VALUES[key]
    if value.dtype.kind == "f":
        return np.full_like(value, np.nan)
    if rule.high is not None and rule.high < np.iinfo(value.dtype).max or key in ("segments", "centroids", "index"):
        return np.full_like(value, np.iinfo(value.dtype).max)  # past the bound, or past the superpixels or grid
    return np.full(value.shape, -1e30)


def cases():
    """(hand-off, what is changed) for every key of every hand-off and every field of its provenance."""
    yield from ((handoff, readers, change) for handoff, readers in READERS for change in changes(handoff))


def changes(handoff) -> list[str]:
    fields = checks.RECORDS[handoff.made_by]
    keys = [key for key in handoff.keys if key != contract.PROVENANCE]
    return ([f"remove {key}" for key in (*keys, contract.PROVENANCE)]
            + [f"absurd {key}" for key in keys if handoff.keys[key] != contract.TEXT]
            + (["scale patch_scale"] if contract.PATCH_SCALE in keys else [])  # 0.01, as an issue found it
            + [f"remove provenance.{field}" for field in fields]
            + ([f"remove provenance.inputs.{field}" for field in fields["inputs"]] if "inputs" in fields else []))


def changed(path, change: str) -> None:
    """Apply ``change`` ("remove KEY", "absurd KEY", "scale patch_scale", "remove provenance.FIELD[.FIELD]") to the
    hand-off at ``path``."""
    action, _, target = change.partition(" ")
    variables = stored(path)
    if target.startswith("provenance."):
        record = json.loads("".join(str(part) for part in variables[contract.PROVENANCE].ravel()))
        *parents, field = target.split(".")[1:]
        inner = record
        for parent in parents:
            inner = inner[parent]
        del inner[field]
        variables[contract.PROVENANCE] = contract.as_text(record)
    elif action == "remove":
        del variables[target]
    elif action == "scale":
        variables[target] = np.full_like(variables[target], 0.01)
    else:
        variables[target] = absurd(target, variables[target])
    matfile.save_mat(path, variables)


@pytest.mark.parametrize("handoff, readers, change", [pytest.param(*case, id=f"{case[0].filename} {case[2]}")
                                                     for case in cases()])
def test_every_value_is_honoured_or_refused(prepared, untouched, step3_reads, tmp_path, capsys, handoff, readers,
                                            change):
    for step in readers:  # each on its own copy: a step that succeeds makes new hand-offs
        workdir = tmp_path / step.__name__
        shutil.copytree(prepared["workdir"], workdir)
        path = handoff.path(workdir, per_class=prepared["per_class"])
        changed(path, change)
        arguments = ["--config", str(prepared["config"]), "--workdir", str(workdir)]
        code = step.main([*arguments, "--runs-dir", str(tmp_path / "runs")] if step is step2 else arguments)
        error = capsys.readouterr().err
        assert "Traceback" not in error
        if code not in (0, 130):
            lines = error.strip().splitlines()
            assert len(lines) == 1 and path.name in lines[0], (step.__name__, error)
            continue
        assert change.split()[1] in UNUSED.get((step, handoff.filename), ()), f"{step.__name__} ignored it"
        if step is step3:
            assert code == 130 and same(step3_reads.pop(), untouched)
        else:
            assert step is step1 and code == 0, step.__name__
            made = balanced_arrays(workdir)
            assert all(np.array_equal(made[key], prepared["balanced"][key]) for key in made)
