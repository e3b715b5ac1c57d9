"""A tiled Step 0 on a real Dask cluster (``dask scheduler`` and ``dask worker`` processes on 127.0.0.1) that loses
a worker or its scheduler mid-run: the work goes on while a worker remains, with the same outputs; with no worker
left, or the scheduler killed or frozen, the step stops within the documented bound (``cluster.WORKERLESS_LIMIT_S``
after the last worker or answer; at once for a closed connection) with exit code 1, one stderr line naming the
scheduler, and the earlier outputs byte-identical. "Mid-run" is when the step has logged its first tile."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import Step0_Data_Preparation as step0
from builders import PROJECT, assert_one_line, dask_cluster, snapshot
from pipeline.handoffs import contract
from pipeline.tiling import cluster

TILE = 32  # the 324 x 339 px subset in 121 tiles, about 4 s of work for one worker
#: Seconds past the documented bound a step may take to stop (the step's own exit, a loaded machine).
SLACK_S = 15
#: Seconds after which a step that has not stopped counts as hung.
HUNG_S = 120


@pytest.fixture
def earlier(step0_workdir, tmp_path):
    """A work folder holding the subset's earlier Step 0 outputs (a copy), and their SHA-256 by name."""
    workdir = tmp_path / "work"
    shutil.copytree(step0_workdir, workdir)
    return workdir, snapshot(workdir)


def run_and_kill(arguments: list, victim: subprocess.Popen, how: signal.Signals, stderr_path) -> dict:
    """Run Step 0 with ``arguments``; when it logs its first tile, send ``how`` to the process group of
    ``victim``. Its exit code, its stderr, the seconds from the signal to its end, and the tile lines logged after
    the signal. A step still running :data:`HUNG_S` s after it started is killed and fails the test."""
    with open(stderr_path, "w") as stderr:
        step = subprocess.Popen([sys.executable, str(PROJECT / "Step0_Data_Preparation.py"), *map(str, arguments)],
                                cwd=stderr_path.parent, stdout=subprocess.PIPE, stderr=stderr, text=True)
    watchdog = threading.Timer(HUNG_S, step.kill)
    watchdog.start()
    signalled, after = None, []
    with step, step.stdout:
        for line in step.stdout:
            if signalled is None and line.startswith("  tile 1 / "):
                os.killpg(victim.pid, how)
                signalled = time.monotonic()
            elif signalled is not None and line.startswith("  tile "):
                after.append(line)
        step.wait()
    ended = time.monotonic()
    watchdog.cancel()
    assert step.returncode != -signal.SIGKILL, f"still running {HUNG_S} s after it started (killed)"
    assert signalled is not None, f"the step ended before its first tile: {stderr_path.read_text()[-1500:]}"
    return {"code": step.returncode, "stderr": stderr_path.read_text(), "seconds": ended - signalled,
            "tiles_after": after}


def assert_stopped(result: dict, workdir, before: dict, bound_s: float, *fragments) -> None:
    """Exit code 1 within ``bound_s`` s of the loss, one stderr line with ``fragments``, earlier outputs as they
    were and no staging folder left."""
    assert result["code"] == 1, f"exit code {result['code']}; stderr: {result['stderr'][-1500:]!r}"
    assert_one_line(result["stderr"], fragments)
    assert result["seconds"] < bound_s, f"stopped {result['seconds']:.1f} s after the loss, bound {bound_s} s"
    assert snapshot(workdir) == before, "earlier outputs changed"
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".staging")], "staging folder left"


def test_a_lost_worker_is_replaced_by_the_other_and_the_outputs_are_those_of_a_local_run(
        subset_config, tmp_path):
    local = tmp_path / "local"
    assert step0.main(["--config", str(subset_config), "--workdir", str(local), "--tile-size", str(TILE),
                       "--workers", "1"]) == 0
    workdir = tmp_path / "work"
    with dask_cluster(tmp_path, workers=2) as (address, processes):
        result = run_and_kill(["--config", subset_config, "--workdir", workdir, "--tile-size", TILE, "--scheduler",
                               address], processes[1], signal.SIGKILL, tmp_path / "stderr.txt")
    assert result["code"] == 0 and result["stderr"] == "", result["stderr"][-1500:]
    assert len(result["tiles_after"]) == 120  # all tiles but the first came after the worker died
    for handoff, keys in ((contract.SEGMENTS, ["segments"]),
                          (contract.SAMPLES, ["samples", "labels", "centroids", "split"])):
        mine, theirs = contract.load(handoff, workdir, keys), contract.load(handoff, local, keys)
        for key in keys:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)


def test_the_only_worker_lost_stops_the_step_within_the_bound(subset_config, earlier, tmp_path):
    workdir, before = earlier
    with dask_cluster(tmp_path, workers=1) as (address, processes):
        result = run_and_kill(["--config", subset_config, "--workdir", workdir, "--tile-size", TILE, "--scheduler",
                               address], processes[1], signal.SIGKILL, tmp_path / "stderr.txt")
    assert_stopped(result, workdir, before, cluster.WORKERLESS_LIMIT_S + SLACK_S, address, "no worker",
                   "earlier outputs are left as they were")
    assert result["seconds"] >= cluster.WORKERLESS_LIMIT_S  # it gave Dask the documented time to get a worker


@pytest.mark.parametrize("how, bound_s, fragment", [
    (signal.SIGKILL, SLACK_S, "connection to it was lost"),  # a closed connection: at once
    (signal.SIGSTOP, cluster.WORKERLESS_LIMIT_S + SLACK_S, "has not answered"),  # a frozen or unreachable scheduler
], ids=["killed", "frozen"])
def test_a_lost_scheduler_stops_the_step_within_the_bound(subset_config, earlier, tmp_path, how, bound_s, fragment):
    workdir, before = earlier
    with dask_cluster(tmp_path, workers=1) as (address, processes):
        result = run_and_kill(["--config", subset_config, "--workdir", workdir, "--tile-size", TILE, "--scheduler",
                               address], processes[0], how, tmp_path / "stderr.txt")
    assert_stopped(result, workdir, before, bound_s, address, fragment, "earlier outputs are left as they were")
