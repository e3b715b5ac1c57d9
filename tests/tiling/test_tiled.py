"""Tiled mode on the demo scene: unique ids, identical layers and patches, accuracy close to the whole-scene run,
and the tiles run through a Dask LocalCluster with 2 workers, and through a real scheduler and two worker processes
with the same outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from builders import DEMO_PARAMETERS, assert_cog, dask_cluster, flags, qml_classes
from pipeline.handoffs import contract
from pipeline.core.grids import tile_windows

TILE = 400  # the demo scene is 930 x 947 px: 9 tiles


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo scene through Steps 0-3, whole and in tiles on a 2-worker LocalCluster."""
    folders = {}
    for mode, extra in (("whole", []), ("tiled", ["--tile-size", str(TILE), "--workers", "2"])):
        workdir = tmp_path_factory.mktemp(mode)
        common = ["--workdir", str(workdir)]
        assert step0.main([*common, *extra]) == 0
        assert step1.main([*common, *flags(per_class=DEMO_PARAMETERS["per_class"])]) == 0
        assert step2.main([*common, *flags(**DEMO_PARAMETERS), *extra, "--runs-dir", str(workdir / "runs")]) == 0
        assert step3.main([*common, *flags(per_class=DEMO_PARAMETERS["per_class"])]) == 0
        folders[mode] = workdir
    return folders


def test_superpixel_ids_are_unique_across_tiles(runs):
    segments = gdal.Open(str(runs["tiled"] / "segments.tif")).ReadAsArray()
    labels = contract.load(contract.SAMPLES, runs["tiled"], ["labels"])["labels"]
    assert np.array_equal(np.unique(segments), np.arange(len(labels)))
    tile_of = {}
    for number, (row, col, rows, cols) in enumerate(tile_windows(segments.shape, TILE)):
        for superpixel in np.unique(segments[row:row + rows, col:col + cols]):
            assert tile_of.setdefault(superpixel, number) == number, f"superpixel {superpixel} crosses a seam"
    assert np.array_equal(contract.load(contract.SEGMENTS, runs["tiled"], ["segments"])["segments"],
                          segments)


def test_layers_and_patches_are_those_of_the_whole_scene(runs):
    whole = gdal.Open(str(runs["whole"] / "layers.tif")).ReadAsArray()
    assert np.array_equal(gdal.Open(str(runs["tiled"] / "layers.tif")).ReadAsArray(), whole)
    tiled = contract.load(contract.SAMPLES, runs["tiled"], ["samples", "masks", "centroids"])
    segments = gdal.Open(str(runs["tiled"] / "segments.tif")).ReadAsArray()
    layers = np.moveaxis(whole, 0, -1)
    half = tiled["samples"].shape[1] // 2
    padded_layers = contract.decoded(contract.SAMPLES, {"samples": contract.encode_unit_values(
        np.pad(layers, ((half, half), (half, half), (0, 0)), mode="reflect"))})["samples"]
    padded_segments = np.pad(segments, half, mode="reflect")
    seam = np.zeros(len(tiled["centroids"]), bool)
    for i, (row, col) in enumerate(tiled["centroids"]):
        window = (slice(row, row + 2 * half + 1), slice(col, col + 2 * half + 1))
        assert np.array_equal(tiled["samples"][i], padded_layers[window]), i
        assert np.array_equal(tiled["masks"][i], (padded_segments[window] == i).astype(np.uint8)), i
        seam[i] = min(row % TILE, col % TILE, TILE - 1 - row % TILE, TILE - 1 - col % TILE) < half
    assert seam.any() and (~seam).any()  # patches near seams see the neighbouring tile through the halo


def test_held_out_accuracy_within_two_points_of_the_whole_scene_run(runs):
    accuracy = {mode: json.loads((folder / "metrics.json").read_text())["assessments"]["superpixel_test"]
                for mode, folder in runs.items()}
    assert accuracy["whole"]["overall_accuracy"] > 0.85
    assert abs(accuracy["tiled"]["overall_accuracy"] - accuracy["whole"]["overall_accuracy"]) <= 0.02


def test_tiled_hand_offs_are_matlab_73_and_the_map_is_georeferenced(runs):
    for name in ("segments.mat", "samples_labels.mat"):
        assert (runs["tiled"] / name).read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    predicted = gdal.Open(str(runs["tiled"] / "predMap.tif"))
    source = gdal.Open(str(runs["whole"] / "layers.tif"))
    assert predicted.GetGeoTransform() == source.GetGeoTransform()
    segments = gdal.Open(str(runs["tiled"] / "segments.tif")).ReadAsArray()
    labels = contract.load(contract.PRED_LABELS, runs["tiled"], ["predLabels"])["predLabels"]
    assert np.array_equal(predicted.GetRasterBand(1).ReadAsArray(), labels[segments])


def test_rasters_are_cogs_with_overviews_and_the_map_has_its_style(runs):
    """Whole-scene and tiled (written window by window through the same writer): COGs with overviews."""
    expected = qml_classes(runs["whole"] / "predMap.qml")
    assert [label for _, label, _ in expected] == ["urban", "crop", "vegetation", "water"]
    for mode, folder in runs.items():
        for name in ("layers.tif", "reference.tif", "segments.tif", "predMap.tif"):
            assert_cog(folder / name, overviews=True)
        assert qml_classes(folder / "predMap.qml") == expected, mode


@pytest.fixture
def distributed_cluster(tmp_path):
    """The address of a real distributed cluster on localhost: a ``dask scheduler`` and two ``dask worker``
    processes started from the command line as on separate machines."""
    with dask_cluster(tmp_path, workers=2) as (address, _):
        yield address


def test_steps_0_and_2_through_a_scheduler_and_two_workers_equal_the_local_cluster_run(runs, tmp_path,
                                                                                        distributed_cluster):
    workdir = tmp_path / "distributed"
    common = ["--workdir", str(workdir), "--tile-size", str(TILE), "--scheduler", distributed_cluster]
    assert step0.main(common) == 0
    assert json.loads((workdir / "run.json").read_text())["steps"]["Step0_Data_Preparation"]["tiles"] == 9
    local = runs["tiled"]
    for handoff, keys in ((contract.SEGMENTS, ["segments"]), (contract.SAMPLES, ["samples", "masks", "labels",
                                                                                 "centroids", "split"])):
        mine, theirs = contract.load(handoff, workdir, keys), contract.load(handoff, local, keys)
        for key in keys:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    assert step2.main([*common, "--model", str(local / contract.MODEL_FILE)]) == 0  # tiled prediction, no training
    mine, theirs = (contract.load(contract.PRED_LABELS, folder, ["predLabels"])["predLabels"] for folder in
                    (workdir, local))
    np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(*(gdal.Open(str(folder / "predMap.tif")).ReadAsArray() for folder in
                                    (workdir, local)))
