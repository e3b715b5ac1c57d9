"""How settings flow between the steps, on the real subset: a flag given once carries through the later steps,
a flag that contradicts a hand-off is one line of advice, a seed per concern, and a Step 0 rerun that reproduces
its outputs invalidates nothing."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from osgeo import ogr

import gdal_tif2rgb
import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from builders import SUBSET, SUBSET_PARAMETERS, fails_with_one_line, label_file, write_scene
from pipeline.core.errors import InputDataError
from pipeline.handoffs import contract, settings
from pipeline.run.config import load_scene


def run_logged(main, arguments) -> tuple[int, str]:
    """A step's exit code and what it logged."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = main(arguments)
    return code, log.getvalue()


@pytest.fixture(scope="module")
def flowed(tmp_path_factory, subset_reference) -> dict:
    """The subset after ``Step0 --n-segments 1200``, ``Step1 --per-class 100`` and plain Steps 2 and 3 (the
    TOML says 1500 and 150), with each step's exit code and log."""
    folder = tmp_path_factory.mktemp("flow")
    config = write_scene(folder / "flow.toml", SUBSET, subset_reference, {**SUBSET_PARAMETERS, "epochs": 1})
    arguments = ["--config", str(config), "--workdir", str(folder / "work")]
    runs = ["--runs-dir", str(folder / "runs")]
    steps = {0: run_logged(step0.main, [*arguments, "--n-segments", "1200"]),
             1: run_logged(step1.main, [*arguments, "--per-class", "100"]),
             2: run_logged(step2.main, [*arguments, *runs]), 3: run_logged(step3.main, arguments)}
    return {"config": config, "workdir": folder / "work", "arguments": arguments, "runs": runs, "steps": steps}


def copied(flowed, tmp_path) -> list:
    """The arguments of a copy of the flowed work folder."""
    shutil.copytree(flowed["workdir"], tmp_path / "work")
    return [*flowed["arguments"][:2], "--workdir", str(tmp_path / "work")]


def provenance(workdir, handoff, **fields) -> dict:
    return contract.provenance_of(contract.load(handoff, workdir, [contract.PROVENANCE], **fields), workdir,
                                  handoff.made_by)


def test_a_seed_per_concern_and_run_seed_the_default_of_each(tmp_path):
    config = write_scene(tmp_path / "seeds.toml", SUBSET, None, {"sample_seed": 9})
    config.write_text(config.read_text() + "[run]\nseed = 7\n")
    params = load_scene(config).params
    assert (params.split_seed, params.training_seed, params.sample_seed) == (7, 7, 9)
    scene = load_scene(config, overrides={"training_seed": 3, "split_seed": None})
    assert (scene.params.split_seed, scene.params.training_seed, scene.given_flags) == (7, 3, {"training_seed"})


def test_later_steps_run_with_the_flags_given_to_earlier_steps(flowed):
    assert {step: code for step, (code, _) in flowed["steps"].items()} == {0: 0, 1: 0, 2: 0, 3: 0}
    ran = json.loads((flowed["workdir"] / "run.json").read_text())["steps"]
    for step in ("Step1_Class_Balance", "Step2_Model_Training", "Step3_Accuracy_Assessment"):
        assert ran[step]["parameters"]["n_segments"] == 1200, step
    for step in ("Step2_Model_Training", "Step3_Accuracy_Assessment"):
        assert ran[step]["parameters"]["per_class"] == 100, step
    assert provenance(flowed["workdir"], contract.SAMPLES)["flags"] == ["n_segments"]
    assert provenance(flowed["workdir"], contract.PRED_LABELS)["flags"] == ["n_segments", "per_class"]
    assert not (flowed["workdir"] / "Samples_classBalanced_150.mat").exists()


def test_step2_names_the_balanced_set_in_its_log_and_run_json(flowed):
    path = flowed["workdir"] / "Samples_classBalanced_100.mat"
    assert f"balanced set: {path} (per_class 100, training_seed 42)" in flowed["steps"][2][1]
    ran = json.loads((flowed["workdir"] / "run.json").read_text())["steps"]["Step2_Model_Training"]
    assert ran["balanced_set"] == str(path)


def test_step2_trains_on_the_balanced_set_step1_made_last_or_the_one_named(flowed, tmp_path):
    arguments = copied(flowed, tmp_path)
    assert step1.main([*arguments, "--per-class", "120"]) == 0
    scene = load_scene(flowed["config"], tmp_path / "work")
    assert settings.for_training(scene)[1].name == "Samples_classBalanced_120.mat"
    assert step1.main([*arguments, "--per-class", "100"]) == 0  # drawn again: now the last
    assert settings.for_training(scene)[1].name == "Samples_classBalanced_100.mat"
    named = load_scene(flowed["config"], tmp_path / "work", {"per_class": 120})
    named_scene, path = settings.for_training(named)
    assert path.name == "Samples_classBalanced_120.mat" and named_scene.params.per_class == 120


@pytest.mark.parametrize("main, flags, line", [
    (step3.main, ["--per-class", "150"], "predLabels.mat: Step2_Model_Training.py ran with per_class 100; drop "
                                         "--per-class here, or rerun Step2_Model_Training.py with --per-class 150"),
    (step2.main, ["--per-class", "150"], "Samples_classBalanced_100.mat: Step1_Class_Balance.py ran with per_class "
                                         "100; drop --per-class here, or rerun Step1_Class_Balance.py with "
                                         "--per-class 150"),
    (step1.main, ["--n-segments", "20000"], "samples_labels.mat: Step0_Data_Preparation.py ran with n_segments "
                                            "1200; drop --n-segments here, or rerun Step0_Data_Preparation.py with "
                                            "--n-segments 20000"),
    (step3.main, ["--patch-width", "21"], "samples_labels.mat: Step0_Data_Preparation.py ran with patch_width 25; "
                                          "drop --patch-width here, or rerun Step0_Data_Preparation.py with "
                                          "--patch-width 21"),
    (step2.main, ["--seed", "7"], "Samples_classBalanced_100.mat: Step1_Class_Balance.py ran with training_seed "
                                  "42; drop --training-seed here, or rerun Step1_Class_Balance.py with "
                                  "--training-seed 7"),
])
def test_a_flag_that_contradicts_a_hand_off_is_one_line_of_advice(flowed, capsys, main, flags, line):
    extra = flowed["runs"] if main is step2.main else []
    error = fails_with_one_line(main, [*flowed["arguments"], *extra, *flags], capsys, line)
    assert error == f"error: {flowed['workdir'] / line}\n"


def test_the_advice_names_the_step_its_value_and_the_flag_to_rerun_with(flowed):
    scene = load_scene(flowed["config"], flowed["workdir"], {"n_segments": 20000})
    with pytest.raises(InputDataError, match=r"samples_labels.mat: Step0_Data_Preparation.py ran with n_segments "
                                             r"1200; drop --n-segments here, or rerun Step0_Data_Preparation.py with "
                                             r"--n-segments 20000$"):
        settings.with_step0_settings(scene)


def test_a_flag_carries_over_but_a_changed_toml_asks_for_step0_again(flowed, tmp_path, capsys):
    arguments = copied(flowed, tmp_path)
    config = tmp_path / "flow.toml"
    arguments[1] = str(config)
    text = flowed["config"].read_text()
    config.write_text(text.replace("n_segments = 1500", "n_segments = 900"))  # Step 0 had it by flag
    assert step1.main(arguments) == 0
    config.write_text(text.replace("block_size = 64", "block_size = 32"))  # Step 0 had it from the TOML
    fails_with_one_line(step1.main, arguments, capsys, "samples_labels.mat: made with other settings",
                        "block_size 64 -> 32", "rerun Step0")


def test_a_step0_rerun_that_reproduces_its_outputs_keeps_later_outputs_valid(flowed, tmp_path, capsys):
    arguments = copied(flowed, tmp_path)
    workdir = tmp_path / "work"
    before = provenance(workdir, contract.SAMPLES)["run"]
    assert step0.main([*arguments, "--n-segments", "1200"]) == 0
    assert provenance(workdir, contract.SAMPLES)["run"] == before == provenance(workdir, contract.PRED_LABELS)[
        "step0_run"]
    assert step3.main(arguments) == 0
    assert step0.main([*arguments, "--n-segments", "1200", "--seed", "5"]) == 0  # another split: other outputs
    capsys.readouterr()
    fails_with_one_line(step3.main, arguments, capsys, "predLabels.mat: predicted for other Step 0 outputs",
                        "rerun Step2")


def test_a_training_seed_of_its_own_keeps_the_split(flowed, tmp_path):
    arguments = copied(flowed, tmp_path)
    workdir = tmp_path / "work"
    assert step1.main([*arguments, "--seed", "5"]) == 0
    balanced = provenance(workdir, contract.BALANCED, per_class=150)  # the TOML's per_class: no flag
    assert balanced["parameters"] == {"per_class": 150, "training_seed": 5}
    assert balanced["step0_run"] == provenance(workdir, contract.SAMPLES)["run"]
    assert provenance(workdir, contract.SAMPLES)["parameters"]["split_seed"] == 42
    assert settings.for_training(load_scene(flowed["config"], workdir))[0].params.training_seed == 5  # Step 2's


def designed_points(path) -> np.ndarray:
    """(points, 2) x and y of a designed sample's points."""
    dataset = ogr.Open(str(path))  # kept while its layer is read
    return np.array([feature.GetGeometryRef().GetPoints()[0] for feature in dataset.GetLayer(0)])


def test_two_seeds_design_two_samples_of_the_same_map_and_both_estimate(flowed, tmp_path):
    arguments = copied(flowed, tmp_path)
    workdir = tmp_path / "work"
    codes = gdal_tif2rgb.read_window(workdir / "reference.tif", 1, np.uint8)[0]
    grid = gdal_tif2rgb.read_layout(workdir / "predMap.tif")[0]
    points, estimates = [], []
    for seed in ("7", "8"):
        assert step3.main([*arguments, "--design-sample", "--seed", seed, "--sample-size", "120"]) == 0
        labelled = tmp_path / f"labelled_{seed}.gpkg"
        shutil.move(workdir / "validation_sample.gpkg", labelled)
        points.append(designed_points(labelled))
        label_file(labelled, codes, grid, ["urban", "crop", "vegetation", "water"])
        assert step3.main([*arguments, "--validation", str(labelled)]) == 0
        estimates.append(json.loads((workdir / "metrics.json").read_text())["validation_sample"])
    assert len(points[0]) == len(points[1]) >= 120 and not np.array_equal(points[0], points[1])
    assert all(0 < estimate["overall_accuracy"] <= 1 and estimate["sample"]["labelled"] == len(points[0])
               for estimate in estimates)
