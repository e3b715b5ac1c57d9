"""Every step answers --help: exit code 0, its usage, its tutorial section and its own flags, on stdout."""
from __future__ import annotations

import pytest

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3

#: Each step's main, a line of its docstring and flags only it (or few steps) takes.
STEPS = {"Step0": (step0.main, "Step 0, data preparation", ("--n-segments", "--explore", "--stretch-from",
                                                              "--seed SPLIT_SEED, --split-seed")),
         "Step1": (step1.main, "Step 1, class balance", ("--per-class", "--seed TRAINING_SEED, --training-seed")),
         "Step2": (step2.main, "Step 2, model training", ("--epochs", "--model", "--runs-dir",
                                                          "--seed TRAINING_SEED, --training-seed")),
         "Step3": (step3.main, "Step 3, accuracy assessment", ("--per-class", "--design-sample", "--target-se",
                                                                "--validation", "--suggest",
                                                                "--seed SAMPLE_SEED, --sample-seed"))}


@pytest.mark.parametrize("step", STEPS)
def test_help_prints_usage_and_the_steps_flags(step, capsys):
    main, heading, flags = STEPS[step]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage:") and heading in captured.out and captured.err == ""
    for flag in ("--config", "--workdir", "--seed", *flags):
        assert flag in captured.out, flag
