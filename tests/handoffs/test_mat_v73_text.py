"""MATLAB 7.3 hand-offs keep text as MATLAB char matrices, readable by hdf5storage and by load_mat."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipeline.handoffs import matfile

hdf5storage = pytest.importorskip("hdf5storage")

CLASS_NAMES = ["urban", "crop", "vegetation", "water"]


@pytest.fixture()
def mat_file(tmp_path):
    path = tmp_path / "samples_labels.mat"
    with matfile.mat_v73_writer(path) as mat:
        mat.put("class_names", np.array(CLASS_NAMES))
        mat.put("site", np.array(["forêt"]))
        mat.put("values", np.arange(12, dtype=np.float32).reshape(3, 4))
    return path


def test_text_is_stored_as_matlab_does_a_char_matrix(mat_file):
    with h5py.File(mat_file, "r") as file:
        names = file["class_names"]
        assert names.dtype == np.uint16
        assert names.shape == (10, 4)  # a 4 x 10 char matrix ("vegetation" is 10 long), stored transposed
        assert names.attrs["MATLAB_class"] == b"char"
        assert int(names.attrs["MATLAB_int_decode"]) == 2
        assert "".join(map(chr, names[:, 1])) == "crop      "
        assert file["values"].attrs["MATLAB_class"] == b"single"
    with open(mat_file, "rb") as file:
        header = file.read(128)
    assert header.startswith(b"MATLAB 7.3 MAT-file, Platform: ") and b"Created on: " in header
    assert header[:116].rstrip(b" ").endswith(b"HDF5 schema 1.00 .")
    assert header[116:] == bytes(8) + b"\x00\x02IM"


def test_hdf5storage_reads_the_text_and_numbers_back(mat_file):
    contents = hdf5storage.loadmat(str(mat_file))
    names = np.asarray(contents["class_names"])  # hdf5storage joins each char-matrix row into one str
    assert names.shape == (4, 1) and names.dtype == np.dtype("<U10")
    assert [str(row).rstrip(" ") for row in names.ravel()] == CLASS_NAMES
    assert np.asarray(contents["site"]).ravel().tolist() == ["forêt"]
    np.testing.assert_array_equal(contents["values"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert hdf5storage.read(path="/values", filename=str(mat_file)).dtype == np.float32


def test_load_mat_returns_lists_of_str(mat_file):
    contents = matfile.load_mat(mat_file, ["class_names", "site", "values"], made_by="Step0")
    assert contents["class_names"] == CLASS_NAMES
    assert contents["site"] == ["forêt"]
    np.testing.assert_array_equal(contents["values"], np.arange(12, dtype=np.float32).reshape(3, 4))


def test_characters_outside_the_basic_plane_and_empty_text(tmp_path):
    path = tmp_path / "odd.mat"
    with matfile.mat_v73_writer(path) as mat:
        mat.put("names", np.array(["a\U0001F332", "ß"]))  # a surrogate pair in UTF-16
        mat.put("nothing", np.array([], dtype=str))
    assert matfile.load_mat(path, ["names", "nothing"], made_by="Step0") == {"names": ["a\U0001F332", "ß"],
                                                                        "nothing": []}
    assert np.asarray(hdf5storage.loadmat(str(path))["nothing"]).size == 0


def test_files_of_the_earlier_utf8_layout_still_load(tmp_path):
    path = tmp_path / "old.mat"
    with matfile.mat_v73_writer(path) as mat:
        dataset = mat.file.create_dataset("class_names", data=np.array([b"urban", b"for\xc3\xaat"]))
        dataset.attrs["MATLAB_class"] = np.bytes_("char")
    assert matfile.load_mat(path, ["class_names"], made_by="Step0")["class_names"] == ["urban", "forêt"]
