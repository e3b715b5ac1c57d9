"""Compressed hand-offs in both MATLAB versions: v5 (what a scene's hand-offs are while every variable fits, so
that scipy.io.loadmat reads them) with each array compressed on its own where a trial chunk shows that it pays,
and v7.3 (past 2 GB, or written tile by tile) in chunks of CHUNK_ROWS rows deflated by the same rule; both read
back whole or at chosen rows, and their text (the provenance records) read back identically."""
from __future__ import annotations

import json
import struct
import zlib

import h5py
import numpy as np
import pytest
import scipy.io

from pipeline.handoffs import contract, matfile

N = 1000  # rows: 1.25 MB of masks and 5 MB of patches
MI_MATRIX, MI_COMPRESSED = 14, 15  # MATLAB v5 element types of a variable stored as it is and compressed


@pytest.fixture()
def arrays():
    rng = np.random.default_rng(0)
    masks = np.zeros((N, 25, 25, 2), np.uint8)
    masks[:, 10:15, 8:17] = 1  # a blob per patch: deflates to a few per cent
    patches = rng.integers(0, 256, (N, 25, 25, 8), dtype=np.uint8)  # noise: deflate cannot pay
    return {"masks": masks, "patches": patches, "labels": rng.integers(0, 4, N).astype(np.uint8)}


def v73_layout(path):
    with h5py.File(path, "r") as file:
        return {name: (file[name].compression, file[name].chunks) for name in ("masks", "patches")}


def v5_variables(path) -> list[tuple[int, bytes]]:
    """Each top-level variable of a MATLAB v5 file, in file order: its element type (compressed or not) and its
    bytes as a miMATRIX element (inflated where compressed). The file: a 128-byte header, then per variable an
    8-byte tag (type, byte count) and its bytes, padded to 8 where not compressed."""
    data, variables, position = path.read_bytes(), [], 128
    while position < len(data):
        kind, size = struct.unpack_from("<II", data, position)
        element = data[position:position + 8 + size + (-size % 8 if kind == MI_MATRIX else 0)]
        variables.append((kind, zlib.decompress(element[8:]) if kind == MI_COMPRESSED else element))
        position += len(element)
    return variables


def v5_element_types(path) -> list[int]:
    return [kind for kind, _ in v5_variables(path)]


def assert_reads_back(path, arrays):
    back = matfile.load_mat(path, list(arrays), made_by="a test")
    for name, value in arrays.items():
        assert np.array_equal(np.asarray(back[name]).reshape(value.shape), value), name
    rows = np.array([3, 64, 65, 999, 3])  # inside a chunk, on chunk edges, in the padded last chunk, repeated
    picked = matfile.load_mat_rows(path, ["masks", "patches"], rows, made_by="a test")
    assert np.array_equal(picked["patches"], arrays["patches"][rows])
    assert np.array_equal(picked["masks"], arrays["masks"][rows])
    assert np.array_equal(matfile.load_mat_rows(path, ["masks"], slice(60, 70), made_by="a test")["masks"],
                          arrays["masks"][60:70])


def test_a_scene_hand_off_is_v5_that_scipy_reads_with_only_the_arrays_that_pay_compressed(tmp_path, arrays):
    path = tmp_path / "samples.mat"
    matfile.save_mat(path, arrays, compressed=True)
    assert path.read_bytes()[:19] == b"MATLAB 5.0 MAT-file"
    assert v5_element_types(path) == [MI_COMPRESSED, MI_MATRIX, MI_MATRIX]  # masks, patches, labels
    assert np.array_equal(scipy.io.loadmat(path)["patches"], arrays["patches"])
    assert_reads_back(path, arrays)
    assert path.stat().st_size < arrays["patches"].nbytes + arrays["masks"].nbytes / 5
    matfile.save_mat(path, arrays)
    assert v5_element_types(path) == [MI_MATRIX] * 3  # not a compressed hand-off: nothing compressed


def test_past_the_v5_limit_v73_chunks_compressible_arrays_deflated_and_noise_not(tmp_path, arrays, monkeypatch):
    path = tmp_path / "samples.mat"
    monkeypatch.setattr(matfile, "MAT_V5_LIMIT_BYTES", arrays["masks"].nbytes - 1)  # as if 2 GB were passed
    matfile.save_mat(path, arrays, compressed=True)
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    layout = v73_layout(path)
    assert layout["masks"][0] == "gzip" and layout["patches"][0] is None
    assert layout["masks"][1][-1] == layout["patches"][1][-1] == matfile.CHUNK_ROWS
    assert_reads_back(path, arrays)
    assert path.stat().st_size < arrays["patches"].nbytes + arrays["masks"].nbytes / 5


def test_appended_tile_by_tile_follows_the_same_rule_and_reads_back_equal(tmp_path, arrays):
    path = tmp_path / "samples.mat"
    with matfile.mat_v73_writer(path, compressed=True) as mat:
        for start in range(0, N, 300):
            for name in ("masks", "patches"):
                mat.append(name, arrays[name][start:start + 300])
    layout = v73_layout(path)
    assert layout["masks"][0] == "gzip" and layout["patches"][0] is None
    back = matfile.load_mat(path, ["masks", "patches"], made_by="a test")
    assert np.array_equal(np.asarray(back["patches"]).reshape(arrays["patches"].shape), arrays["patches"])
    assert np.array_equal(np.asarray(back["masks"]).reshape(arrays["masks"].shape), arrays["masks"])


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_provenance_and_names_round_trip_identically_in_both_versions(tmp_path, monkeypatch, version):
    record = {"step": "Step0", "run": "0f3a", "image": "/data/Ærø/forêt \U0001F332.tif", "padded": "ends  ",
              "parameters": {"n_segments": 30000, "compactness": 30.0, "aoi": None}, "dates": ["a", "b"]}
    names = ["urban", "forêt", "a\U0001F332"]
    if version == "v7.3":
        monkeypatch.setattr(matfile, "MAT_V5_LIMIT_BYTES", 0)
    path = tmp_path / "provenance.mat"
    matfile.save_mat(path, {"provenance": contract.as_text(record), "class_names": contract.as_text(names)})
    assert path.read_bytes()[:19] == (b"MATLAB 7.3 MAT-file" if version == "v7.3" else b"MATLAB 5.0 MAT-file")
    back = matfile.load_mat(path, ["provenance", "class_names"], made_by="a test")
    assert json.loads("".join(back["provenance"])) == record
    assert back["class_names"] == names


def test_numeric_variables_are_the_bytes_scipy_writes(tmp_path, monkeypatch):
    """save_mat streams numeric arrays in MATLAB's column order itself (slab by slab: here slabs of 1 kB); the file
    is byte for byte what scipy.io.savemat writes, and compressed variables inflate to scipy's bytes."""
    monkeypatch.setattr(matfile, "_SLAB_BYTES", 1000)
    rng = np.random.default_rng(1)
    variables = {"patch_scale": np.float64(1 / 255), "labels": rng.integers(0, 4, 1000).astype(np.uint8),
                 "none": np.zeros(0, np.int32), "x": np.array([[1, 2], [3, 4]], np.uint8),
                 "masks": rng.integers(0, 2, (300, 7, 5), dtype=np.uint8),
                 "samples": rng.random((70, 5, 5, 8)).astype(np.float32), "big": rng.integers(0, 9, (900, 300))}
    ours, theirs = tmp_path / "ours.mat", tmp_path / "theirs.mat"
    matfile.save_mat(ours, variables)
    scipy.io.savemat(theirs, variables, oned_as="column")
    assert ours.read_bytes()[128:] == theirs.read_bytes()[128:]  # after the header, which holds the time
    matfile.save_mat(ours, variables, compressed=True)
    scipy.io.savemat(theirs, variables, oned_as="column", do_compression=True)
    ours_inflated, theirs_inflated = v5_variables(ours), v5_variables(theirs)
    assert [kind for kind, _ in ours_inflated] == [MI_MATRIX] * 4 + [MI_COMPRESSED, MI_MATRIX, MI_COMPRESSED]
    assert [data for _, data in ours_inflated] == [data for _, data in theirs_inflated]
