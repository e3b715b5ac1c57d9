"""A reference of small polygons (issue 31): every superpixel a polygon reaches is labelled, Step 1 warns about and
refuses classes of few training superpixels, the map holds every drawn class, and Step 3 names absent classes.

The polygons are 7 x 7 px squares drawn inside each class of the real reference on the real 324 x 339 px subset
(``builders.small_polygons``), vectorized to a GeoPackage as a QGIS user would draw them."""
from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from pipeline.workflow import assess
from builders import (SUBSET, SUBSET_PARAMETERS, fails_with_one_line, flags, polygonize, small_polygons, write_scene,
                      write_tif)
from pipeline.handoffs import contract
from pipeline.assessment import report
from pipeline.run.config import load_scene
from pipeline.core.vocabulary import TRAIN, UNLABELLED
from pipeline.run.outputs import OutputSet
from pipeline.segmentation.sampling import class_counts
from pipeline.segmentation.split import spatial_split

#: The scene's classes as the polygons' 'landcover' names (builders.CLASS_NAMES) give them.
CLASSES = {"urban": ["urban"], "crop": ["grass"], "vegetation": ["forest"], "water": ["water"]}
#: Squares per reference value (3 urban, 2 grass, 1 forest, 4 water): about 580 px of each class.
SQUARES = {3: 12, 2: 12, 1: 12, 4: 12}


def polygon_scene(folder, subset_reference, squares: dict):
    """A scene TOML of the subset with ``squares`` 7 x 7 px polygons per reference value as its reference."""
    folder.mkdir()
    source = gdal.Open(str(subset_reference))
    sparse = small_polygons(source.ReadAsArray(), squares, 7)
    raster = write_tif(folder / "polygons.tif", sparse, source.GetGeoTransform(), 27700, nodata=0)
    vector = polygonize(folder / "polygons.gpkg", raster)
    return write_scene(folder / "scene.toml", SUBSET, vector, SUBSET_PARAMETERS, classes=CLASSES,
                       reference_field="landcover")


@pytest.fixture(scope="module")
def polygon_run(tmp_path_factory, subset_reference):
    """Step 0 on the subset with the polygon reference: the Step arguments and the work folder."""
    folder = tmp_path_factory.mktemp("polygons")
    arguments = ["--config", str(polygon_scene(folder / "scene", subset_reference, SQUARES)),
                 "--workdir", str(folder / "work")]
    assert step0.main(arguments) == 0
    return arguments, folder / "work"


def training_counts(labels, split):
    """Training superpixels of each of the 4 classes."""
    return np.bincount(labels[(split == TRAIN) & (labels != UNLABELLED)], minlength=4)


def test_polygons_give_each_class_tens_of_training_superpixels_where_half_coverage_gave_about_one(polygon_run):
    _, work = polygon_run
    step0_out = contract.load(contract.SAMPLES, work, ["labels", "split", "centroids"])
    segments = contract.load(contract.SEGMENTS, work, ["segments"])["segments"]
    counts = class_counts(segments, gdal.Open(str(work / "reference.tif")).ReadAsArray(), 4)
    labelled = counts[:, :4].sum(axis=1)
    half_covered = np.where((2 * labelled >= counts.sum(axis=1)) & (labelled > 0), counts[:, :4].argmax(axis=1),
                            UNLABELLED).astype(np.uint8)  # the rule before issue 31
    half_split = spatial_split(segments, step0_out["centroids"], half_covered, 25, SUBSET_PARAMETERS["block_size"],
                               0.3, np.random.default_rng(42))
    before, after = training_counts(half_covered, half_split), training_counts(step0_out["labels"], step0_out["split"])
    assert before.min() <= 1 and after.min() >= 10, (before, after)


@pytest.fixture(scope="module")
def mapped_run(polygon_run):
    """Steps 1-3 after :func:`polygon_run` (Step 2 with 4 epochs): the arguments, the work folder and Step 1's
    output."""
    arguments, work = polygon_run
    with contextlib.redirect_stdout(io.StringIO()) as step1_output:  # Step 1 logs to the sys.stdout it finds
        assert step1.main(arguments) == 0
    assert step2.main([*arguments, *flags(epochs=4), "--runs-dir", str(work / "runs")]) == 0
    assert step3.main(arguments) == 0
    return arguments, work, step1_output.getvalue()


def test_step1_warns_in_one_line_of_each_class_under_30_training_superpixels(mapped_run):
    _, work, output = mapped_run
    step0_out = contract.load(contract.SAMPLES, work, ["labels", "split"])
    counts = training_counts(step0_out["labels"], step0_out["split"])
    assert counts.min() < 30
    for name, count in zip(CLASSES, counts):
        warning = f"class '{name}' has only {count} distinct training superpixels (fewer than 30): its 150 samples"
        assert (warning in output) == (count < 30), name


def test_the_map_holds_every_drawn_class_and_step3_finds_none_absent(mapped_run):
    _, work, _ = mapped_run
    pred_map = contract.load(contract.PRED_MAP, work, ["predMap"])["predMap"]
    assert np.bincount(pred_map.ravel(), minlength=4)[:4].min() > 0
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["absent_classes"] == {"map": [], "test_set": []}
    assert 'id="absent"' not in (work / "report.html").read_text(encoding="utf-8")


def test_step1_refuses_a_class_below_the_floor_in_one_line(tmp_path, subset_reference, capsys):
    config = polygon_scene(tmp_path / "scene", subset_reference, {**SQUARES, 3: 1})
    arguments = ["--config", str(config), "--workdir", str(tmp_path / "work")]
    assert step0.main(arguments) == 0
    fails_with_one_line(step1.main, arguments, capsys, "samples_labels.mat", "class 'urban' has",
                        "fewer than the 5 Step 1 needs (min_training_superpixels)")


def test_absent_classes_are_the_reference_classes_missing_from_the_map_or_the_test_set():
    counts = SimpleNamespace(reference_pixels=np.array([5, 0, 3, 2]), map_pixels=np.array([0, 0, 4, 9]))
    labels, split = np.array([0, 2, 3, 255], np.uint8), np.array([0, 1, 0, 2], np.uint8)
    absent = assess.absent_classes(counts, labels, split, list(CLASSES))
    assert absent == {"map": ["urban"], "test_set": ["urban", "water"]}  # crop: not in the reference


def test_report_names_the_classes_missing_from_the_map_and_the_test_set(mapped_run, tmp_path):
    arguments, work, _ = mapped_run
    metrics = json.loads((work / "metrics.json").read_text())
    metrics["absent_classes"] = {"map": ["urban"], "test_set": ["water"]}
    report.write_report(load_scene(arguments[1], work), OutputSet(tmp_path, ["report.html"], tmp_path), metrics)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert ('<b id="absent" class="note">Not in the map: urban (0 ha, although the reference holds it; the overall '
            'accuracy does not show this). Not in the test set: water (no accuracy measured).</b>') in page
