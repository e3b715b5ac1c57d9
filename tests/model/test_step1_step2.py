"""Steps 1 and 2: the balanced set, the CNN, TensorBoard logs and the painted, georeferenced map."""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from osgeo import gdal

import Step2_Model_Training as step2
from builders import SUBSET, SUBSET_PARAMETERS
from pipeline.model import cnn
from pipeline.model.balancing import balance_classes
from pipeline.workflow.train import tensorboard_command
from pipeline.handoffs import contract
from pipeline.core.errors import InputDataError

CLASSES = ["urban", "crop", "vegetation", "water"]


class TestBalance:
    def test_equal_counts_from_train_superpixels_only(self):
        labels = np.array([0] * 50 + [1] * 50 + [255] * 10, np.uint8)
        split = np.array(([0, 1, 2, 0, 0] * 20) + [2] * 10, np.uint8)
        index, replaced = balance_classes(labels, split, ["a", "b"], 10, np.random.default_rng(0))
        assert np.bincount(labels[index]).tolist() == [10, 10]
        assert (split[index] == 0).all() and replaced == []

    def test_small_class_is_drawn_with_replacement(self):
        labels = np.array([0] * 30 + [1] * 6, np.uint8)
        index, replaced = balance_classes(labels, np.zeros(36, np.uint8), ["a", "b"], 10,
                                                np.random.default_rng(0))
        assert replaced == ["b"] and set(index[labels[index] == 1]) == set(range(30, 36))

    def test_class_below_the_floor_is_named_with_its_file(self):
        labels = np.array([0] * 30 + [1] * 4, np.uint8)
        with pytest.raises(InputDataError, match=r"^samples_labels.mat: class 'b' has only 4 distinct training "
                                                 r"superpixels, fewer than the 5 Step 1 needs"):
            balance_classes(labels, np.zeros(34, np.uint8), ["a", "b"], 10, np.random.default_rng(0))

    def test_class_without_training_samples_is_named(self):
        labels = np.array([0] * 5 + [1], np.uint8)
        split = np.array([0] * 5 + [1], np.uint8)
        with pytest.raises(InputDataError, match="class 'water' has no training superpixel"):
            balance_classes(labels, split, ["urban", "water"], 5, np.random.default_rng(0))

    def test_balanced_file_traces_back_to_train_superpixels(self, step2_workdir):
        workdir, _, _ = step2_workdir
        balanced = contract.load(contract.BALANCED, workdir, ["images", "labels", "index"], per_class=150)
        step0 = contract.load(contract.SAMPLES, workdir, ["samples", "labels", "split"])
        assert np.bincount(balanced["labels"]).tolist() == [150] * 4
        assert (step0["split"][balanced["index"]] == 0).all()
        assert np.array_equal(step0["labels"][balanced["index"]], balanced["labels"])
        assert np.array_equal(step0["samples"][balanced["index"]], balanced["images"])


class TestModel:
    def test_output_shape_is_one_probability_per_class(self):
        model = cnn.build_cnn((25, 25, 8), 4)
        assert model.output_shape == (None, 4)
        probabilities = model.predict(np.zeros((3, 25, 25, 8), np.float32), verbose=0)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)

    def test_augmentation_only_turns_and_mirrors(self):
        patches = np.random.default_rng(0).random((64, 5, 5, 2)).astype(np.float32)
        turned = cnn.random_dihedral(patches, np.random.default_rng(1))
        for original, result in zip(patches, turned):
            variants = [np.rot90(original, k) for k in range(4)]
            variants += [v[:, ::-1] for v in variants]
            assert any(np.array_equal(result, v) for v in variants)

    def test_validation_holds_out_whole_superpixels(self):
        index = np.array([1, 1, 2, 3, 3, 3, 4, 5, 6, 7])
        held = cnn.validation_mask(index, 0.5, np.random.default_rng(0))
        assert not set(index[held]) & set(index[~held])


class TestMap:
    def test_painted_map_equals_lookup_of_segments(self, step2_workdir):
        workdir, _, _ = step2_workdir
        segments = contract.load(contract.SEGMENTS, workdir, ["segments"])["segments"]
        labels = contract.load(contract.PRED_LABELS, workdir, ["predLabels"])["predLabels"]
        pred_map = contract.load(contract.PRED_MAP, workdir, ["predMap"])["predMap"]
        probabilities = contract.load(contract.PRED_PROB, workdir, ["predProb"])["predProb"]
        assert np.array_equal(pred_map, labels[segments])
        assert probabilities.shape == (segments.max() + 1, 4)
        assert np.array_equal(probabilities.argmax(axis=1), labels)

    def test_map_geotiff_is_georeferenced_with_colours_and_names(self, step2_workdir):
        workdir, _, _ = step2_workdir
        source = gdal.Open(str(SUBSET))
        result = gdal.Open(str(workdir / "predMap.tif"))
        assert result.GetGeoTransform() == source.GetGeoTransform()
        assert result.GetSpatialRef().IsSame(source.GetSpatialRef())
        band = result.GetRasterBand(1)
        table = band.GetColorTable()
        assert [table.GetColorEntry(i)[:3] for i in range(4)] == [(255, 248, 18), (255, 119, 88), (11, 131, 20),
                                                                  (31, 59, 255)]
        assert band.GetCategoryNames()[:4] == CLASSES and band.GetNoDataValue() == 255
        pred_map = contract.load(contract.PRED_MAP, workdir, ["predMap"])["predMap"]
        assert np.array_equal(band.ReadAsArray(), pred_map)

    def test_map_rasters_carry_the_step2_run_of_pred_labels(self, step2_workdir):
        workdir, _, _ = step2_workdir
        record = json.loads("".join(contract.load(contract.PRED_LABELS, workdir, ["provenance"])["provenance"]))
        for handoff in (contract.PRED_MAP_RASTER, contract.UNCERTAINTY):
            assert contract.raster_grid(handoff, workdir, record).rows == gdal.Open(str(SUBSET)).RasterYSize
        uncertainty = gdal.Open(str(workdir / "uncertainty.tif"))  # kept: its band lives only as long as it does
        assert uncertainty.GetRasterBand(1).GetDescription() == "1 - max class probability"

    def test_same_seed_gives_the_same_labels(self, step2_workdir, tmp_path):
        workdir, _, arguments = step2_workdir
        first = contract.load(contract.PRED_LABELS, workdir, ["predLabels"])["predLabels"]
        assert step2.main([*arguments, "--runs-dir", str(tmp_path)]) == 0
        second = contract.load(contract.PRED_LABELS, workdir, ["predLabels"])["predLabels"]
        assert np.array_equal(first, second)


class TestTensorBoard:
    def test_event_files_hold_loss_and_accuracy_and_a_projector_config(self, step2_workdir):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        _, runs, _ = step2_workdir
        (run,) = [p for p in runs.iterdir() if p.is_dir()]
        for split in ("train", "validation"):
            events = EventAccumulator(str(run / split), size_guidance={"tensors": 0}).Reload()
            assert {"epoch_loss", "epoch_accuracy"} <= set(events.Tags()["tensors"])
            assert len(events.Tensors("epoch_loss")) == SUBSET_PARAMETERS["epochs"]  # one per epoch
        config = (run / "projector_config.pbtxt").read_text()
        assert "raw_patches" in config and "learned_features" in config and "sprite" in config

    def test_real_tensorboard_server_serves_scalars_and_projector(self, step2_workdir):
        _, runs, _ = step2_workdir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        printed = shlex.split(tensorboard_command(runs))  # the command Step 2 prints, run as printed
        assert printed[-2:] == ["--logdir", str(runs)]
        server = subprocess.Popen([*printed, "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            tags = _get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout_s=90)
            (run,) = {name.split("/")[0] for name in tags}
            assert "epoch_accuracy" in tags[f"{run}/validation"] and "epoch_loss" in tags[f"{run}/train"]
            projector_runs = _get_json(f"http://127.0.0.1:{port}/data/plugin/projector/runs", timeout_s=30)
            assert run in projector_runs
            config = _get_json(f"http://127.0.0.1:{port}/data/plugin/projector/info?run={run}", timeout_s=30)
            assert {e["tensorName"].split(":")[0] for e in config["embeddings"]} == {"raw_patches", "learned_features"}
        finally:
            server.terminate()
            server.wait(timeout=30)


def _get_json(url: str, timeout_s: float):
    """GET ``url`` as JSON, retrying until the server answers with content or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                content = json.loads(response.read())
            if content:
                return content
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url}")
        time.sleep(1)
