"""Ctrl-C (SIGINT) stops a step run from a terminal inside SLIC and inside TensorFlow's training, with exit code
130, one line on stderr, and the earlier outputs as they were. How fast is measured, not asserted (timings belong
to benchmarks): a step that ignored Ctrl-C would run into the generous bound below and fail."""
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

#: Seconds after Ctrl-C past which a step counts as deaf to it (they stop in 2-5 s here; Step 2's 50 epochs and
#: Step 0 on this scene run far longer than this).
DEAF_AFTER_S = 60


def interrupt_when(arguments: list, line_start: str, delay_s: float) -> tuple[int, str]:
    """Run a step script with ``arguments``, send SIGINT ``delay_s`` after it logs a line starting with
    ``line_start``; its exit code and its stderr (a step still running :data:`DEAF_AFTER_S` later fails)."""
    process = subprocess.Popen([sys.executable, *arguments], cwd=PROJECT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith(line_start):
            break
    else:
        pytest.fail(f"the step ended without logging {line_start!r}: {process.stderr.read()}")
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=DEAF_AFTER_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {DEAF_AFTER_S} s after Ctrl-C")
    return process.returncode, stderr


def test_ctrl_c_inside_slic_stops_step0_and_leaves_no_work_folder(tmp_path):
    config = build_scene(tmp_path / "scene", 2400, "[superpixels]\nn_segments = 20000\n")
    workdir = tmp_path / "work"
    code, stderr = interrupt_when(
        ["Step0_Data_Preparation.py", "--config", str(config), "--workdir", str(workdir)], "SLIC (", 0.5)
    assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted: earlier outputs are left as they were"
    assert not workdir.exists()  # a first run that stops leaves nothing behind


def test_ctrl_c_inside_training_stops_step2_with_earlier_outputs_as_they_were(step0_workdir, subset_config,
                                                                               tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(step0_workdir, workdir)
    arguments = ["--config", str(subset_config), "--workdir", str(workdir)]
    assert step1.main(arguments) == 0
    before = snapshot(workdir)
    code, stderr = interrupt_when(
        ["Step2_Model_Training.py", *arguments, "--epochs", "50", "--runs-dir", str(tmp_path / "runs")],
        "training on", 2.0)
    assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted: earlier outputs are left as they were"
    assert snapshot(workdir) == before
