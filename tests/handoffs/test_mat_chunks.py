"""Compressed MATLAB 7.3 hand-offs: arrays in chunks of CHUNK_ROWS rows, deflated only where a trial chunk
shows that it pays, read back whole or at chosen rows, written whole or appended tile by tile."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipeline.handoffs import matfile

N = 1000  # rows: 1.25 MB of masks and 5 MB of patches


@pytest.fixture()
def arrays():
    rng = np.random.default_rng(0)
    masks = np.zeros((N, 25, 25, 2), np.uint8)
    masks[:, 10:15, 8:17] = 1  # a blob per patch: deflates to a few per cent
    patches = rng.integers(0, 256, (N, 25, 25, 8), dtype=np.uint8)  # noise: deflate cannot pay
    return {"masks": masks, "patches": patches, "labels": rng.integers(0, 4, N).astype(np.uint8)}


def stored(path):
    with h5py.File(path, "r") as file:
        return {name: (file[name].compression, file[name].chunks) for name in ("masks", "patches")}


def test_written_whole_compressible_arrays_are_deflated_and_noise_is_not(tmp_path, arrays):
    path = tmp_path / "samples.mat"
    matfile.save_mat(path, arrays, compressed=True)
    layout = stored(path)
    assert layout["masks"][0] == "gzip" and layout["patches"][0] is None
    assert layout["masks"][1][-1] == layout["patches"][1][-1] == matfile.CHUNK_ROWS
    back = matfile.load_mat(path, list(arrays), made_by="a test")
    for name, value in arrays.items():
        assert np.array_equal(np.asarray(back[name]).reshape(value.shape), value), name
    rows = np.array([3, 64, 65, 999])  # inside a chunk, on chunk edges, in the padded last chunk
    picked = matfile.load_mat_rows(path, ["masks", "patches"], rows, made_by="a test")
    assert np.array_equal(picked["patches"], arrays["patches"][rows])
    assert np.array_equal(picked["masks"], arrays["masks"][rows])
    assert path.stat().st_size < arrays["patches"].nbytes + arrays["masks"].nbytes / 5


def test_appended_tile_by_tile_follows_the_same_rule_and_reads_back_equal(tmp_path, arrays):
    path = tmp_path / "samples.mat"
    with matfile.mat_v73_writer(path, compressed=True) as mat:
        for start in range(0, N, 300):
            for name in ("masks", "patches"):
                mat.append(name, arrays[name][start:start + 300])
    layout = stored(path)
    assert layout["masks"][0] == "gzip" and layout["patches"][0] is None
    back = matfile.load_mat(path, ["masks", "patches"], made_by="a test")
    assert np.array_equal(np.asarray(back["patches"]).reshape(arrays["patches"].shape), arrays["patches"])
    assert np.array_equal(np.asarray(back["masks"]).reshape(arrays["masks"].shape), arrays["masks"])
