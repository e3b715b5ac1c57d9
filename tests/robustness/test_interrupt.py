"""Ctrl-C (SIGINT) stops a step run from a terminal within a few seconds, inside SLIC and inside TensorFlow's
training, with exit code 130, one line on stderr, and the earlier outputs as they were."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

import Step1_Class_Balance as step1
from builders import PROJECT, snapshot

from tutorial_scene import build_scene

#: Seconds a step may take to stop after Ctrl-C: what is being written is finished (a figure, a raster block),
#: what is being computed (SLIC strips, a training epoch) is dropped.
STOP_WITHIN_S = 8


def interrupt_when(arguments: list, line_start: str, delay_s: float) -> tuple[int, float, str]:
    """Run a step script with ``arguments``, send SIGINT ``delay_s`` after it logs a line starting with
    ``line_start``; its exit code, the seconds it took to stop, and its stderr."""
    process = subprocess.Popen([sys.executable, *arguments], cwd=PROJECT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith(line_start):
            break
    else:
        pytest.fail(f"the step ended without logging {line_start!r}: {process.stderr.read()}")
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    _, stderr = process.communicate(timeout=120)
    return process.returncode, time.perf_counter() - sent, stderr


def test_ctrl_c_inside_slic_stops_step0_and_leaves_no_work_folder(tmp_path):
    config = build_scene(tmp_path / "scene", 2400, "[superpixels]\nn_segments = 20000\n")
    workdir = tmp_path / "work"
    code, seconds, stderr = interrupt_when(
        ["Step0_Data_Preparation.py", "--config", str(config), "--workdir", str(workdir)], "SLIC (", 0.5)
    assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted: earlier outputs are left as they were"
    assert seconds < STOP_WITHIN_S
    assert not workdir.exists()  # a first run that stops leaves nothing behind


def test_ctrl_c_inside_training_stops_step2_with_earlier_outputs_as_they_were(step0_workdir, subset_config,
                                                                               tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(step0_workdir, workdir)
    arguments = ["--config", str(subset_config), "--workdir", str(workdir)]
    assert step1.main(arguments) == 0
    before = snapshot(workdir)
    code, seconds, stderr = interrupt_when(
        ["Step2_Model_Training.py", *arguments, "--epochs", "50", "--runs-dir", str(tmp_path / "runs")],
        "training on", 2.0)
    assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted: earlier outputs are left as they were"
    assert seconds < STOP_WITHIN_S
    assert snapshot(workdir) == before
