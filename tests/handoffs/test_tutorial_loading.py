"""The KTH tutorial's own loading lines read the hand-offs unchanged: its Step 1 (section 2.3) and Step 2
(sections 3 and 4) load ``samples_labels.mat``, ``Samples_classBalanced_1000.mat`` and ``segments.mat`` with
``scipy.io.loadmat``, which reads MATLAB v5 only; the later steps' ``.mat`` files load the same way."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import scipy.io as spio

import Step1_Class_Balance as step1
from pipeline.handoffs import contract

band4train = [2, 1, 0]  # the tutorial's configuration: red, green, blue of the 8 layers


@pytest.fixture(scope="module")
def tutorial_folder(tmp_path_factory, step0_workdir, subset_config):
    """A copy of the subset's Step 0 work folder with the tutorial's balanced set, 1000 patches per class."""
    folder = tmp_path_factory.mktemp("tutorial") / "work"
    shutil.copytree(step0_workdir, folder)
    assert step1.main(["--config", str(subset_config), "--workdir", str(folder), "--per-class", "1000"]) == 0
    return folder


def test_the_tutorials_loading_lines_read_step_0_and_step_1_hand_offs(tutorial_folder):
    dataPath = str(tutorial_folder) + os.sep
    # the tutorial's Step 1
    data = spio.loadmat(dataPath + "samples_labels.mat")
    samples = data['samples']
    labels = data['labels'].squeeze()
    # the tutorial's Step 2, section 3
    ChongQing0 = spio.loadmat(dataPath + "samples_labels.mat")
    images0 = ChongQing0['samples'][..., band4train]
    labels0 = ChongQing0['labels'].transpose().squeeze()
    ChongQing = spio.loadmat(dataPath + "Samples_classBalanced_1000.mat")
    images = ChongQing['images'][..., band4train]
    labels = ChongQing['labels'].transpose().squeeze()
    # the tutorial's Step 2, section 4
    segments = spio.loadmat(dataPath + "segments.mat")
    segments = segments['segments']

    step0 = contract.load(contract.SAMPLES, tutorial_folder, ["samples", "labels"])
    n = int(segments.max()) + 1
    assert samples.shape == (n, 25, 25, 8) and images0.shape == (n, 25, 25, 3)
    assert np.array_equal(labels0, step0["labels"])
    np.testing.assert_allclose(samples * data["patch_scale"], step0["samples"], atol=1e-6)  # as the docs say
    balanced = contract.load(contract.BALANCED, tutorial_folder, ["images", "labels"], per_class=1000)
    assert images.shape == (4000, 25, 25, 3) and labels.shape == (4000,)
    assert np.array_equal(labels, balanced["labels"]) and np.bincount(labels).tolist() == [1000] * 4
    np.testing.assert_allclose(images * ChongQing["patch_scale"], balanced["images"][..., band4train], atol=1e-6)
    assert segments.shape == (339, 324) and segments.dtype == np.int32


def test_step_2_hand_offs_load_with_scipy_too(step2_workdir):
    workdir = step2_workdir[0]
    n = int(spio.loadmat(workdir / "segments.mat")["segments"].max()) + 1
    pred_labels = spio.loadmat(workdir / "predLabels.mat")["predLabels"].squeeze()
    assert pred_labels.shape == (n,)
    assert spio.loadmat(workdir / "predProb.mat")["predProb"].shape == (n, 4)
    pred_map = spio.loadmat(workdir / "predMap.mat")["predMap"]
    assert pred_map.shape == (339, 324) and set(np.unique(pred_map)) <= {0, 1, 2, 3, 255}
