"""The benchmark runs end to end on a tiny mirrored scene (timings are not asserted: tests stay fast)."""
from __future__ import annotations

import json
import sys

import numpy as np

from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks"))

import bench_step0  # noqa: E402
from tutorial_scene import mirror_tile  # noqa: E402


def test_mirror_tiling_is_seamless_and_keeps_the_original():
    original = np.arange(12).reshape(3, 4)
    tiled = mirror_tile(original, 8)
    assert tiled.shape == (8, 8)
    assert np.array_equal(tiled[:3, :4], original)
    assert np.array_equal(tiled[3:6, :4], original[::-1])  # mirrored, not wrapped


def test_benchmark_runs_on_a_tiny_scene(tmp_path, capsys):
    output = tmp_path / "results.json"
    assert bench_step0.main(["--size", "300", "--n-segments", "200", "--baseline-superpixels", "10",
                             "--train-samples", "128", "--pairs", "2", "--folder", str(tmp_path), "--output",
                             str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["scene_px"] == [300, 300] and results["step0"]["superpixels"] > 100
    assert results["sampling"]["speedup"] > 1 and results["painting"]["tutorial_s"] > 0
    assert results["step2"]["predict_samples_per_s"] > 0
    assert results["slic_alone"]["seconds"] > 0 and results["slic_alone"]["step0_to_slic_ratio"] > 0
    pairs = results["slic_alone"]["pairs"]
    assert len(pairs) == 2 and all(pair["ratio"] > 0 and pair["step0_s"] > 0 for pair in pairs)
    output = capsys.readouterr().out
    assert "sampling speed-up" in output and "plain slic, one thread" in output
