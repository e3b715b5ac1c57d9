"""The benchmark runs end to end on a tiny mirrored scene (timings are not asserted: tests stay fast)."""
from __future__ import annotations

import json

import numpy as np


import bench_step0
from tutorial_scene import mirror_tile


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
    assert len(results["slic_alone"]["pairs"]) == 2 and len(results["masked"]["pairs"]) == 2
    assert 0.2 < results["masked"]["masked_share"] < 0.45  # the painted clouds were applied
    assert results["masked"]["superpixels"] < results["step0"]["superpixels"]
    output = capsys.readouterr().out
    for row in ("sampling speed-up", "plain slic, one thread", "Step 0 masked / unmasked", "Step 2 prediction"):
        assert row in output
