"""Every spectral band of the image as a layer: a scene that names further bands in [bands] gets them in
layers.tif and the patches after the tutorial's 8, the CNN sees them by default, and a model or stretch trained
with other layers is refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
from builders import ABERYSTWYTH_BANDS, SUBSET, SUBSET_PARAMETERS, write_scene
from pipeline.core.vocabulary import EXTRA_BANDS, LAYER_NAMES, STEP0
from pipeline.handoffs import contract
from pipeline.model import cnn

FURTHER = {"red_edge1": 4, "red_edge2": 5, "red_edge3": 6, "nir_narrow": 8, "swir2": 10}


@pytest.fixture(scope="module")
def further_run(tmp_path_factory, subset_reference):
    """Steps 0-2 on the real subset with its five further bands named (and the tutorial's five)."""
    folder = tmp_path_factory.mktemp("further")
    config = write_scene(folder / "further.toml", SUBSET, subset_reference, SUBSET_PARAMETERS,
                         bands={**ABERYSTWYTH_BANDS, **FURTHER})
    arguments = ["--config", str(config), "--workdir", str(folder / "work")]
    for step in (step0, step1):
        assert step.main(arguments) == 0
    assert step2.main([*arguments, "--runs-dir", str(folder / "runs")]) == 0
    return folder / "work", arguments


def test_further_bands_are_layers_after_the_tutorials_eight(further_run):
    workdir, _ = further_run
    dataset = gdal.Open(str(workdir / "layers.tif"))
    names = tuple(dataset.GetRasterBand(i + 1).GetDescription() for i in range(dataset.RasterCount))
    assert names == (*LAYER_NAMES, *EXTRA_BANDS)
    samples = contract.load(contract.SAMPLES, workdir, ["samples", "layer_names", contract.PROVENANCE])
    assert tuple(samples["layer_names"]) == names and samples["samples"].shape[-1] == len(names)
    # a further layer is its band stretched to [0, 1] between its limits, like the tutorial's: swir2 is band 10
    low, high = contract.provenance_of(samples, workdir, STEP0)["stretch"]["limits"]["swir2"]
    image = gdal.Open(str(SUBSET))
    expected = np.clip((image.GetRasterBand(10).ReadAsArray() - low) / (high - low), 0, 1)
    stored = contract.decode_unit_values(dataset.GetRasterBand(len(names)).ReadAsArray())
    assert np.abs(stored - expected).max() <= 0.5 / 255 + 1e-6


def test_the_cnn_sees_every_layer_and_the_mask_by_default(further_run):
    workdir, _ = further_run
    card = json.loads((workdir / contract.MODEL_CARD).read_text())
    assert card["train_layers"] == [*LAYER_NAMES, *EXTRA_BANDS, "mask"]
    assert card["layer_names"] == [*LAYER_NAMES, *EXTRA_BANDS]
    assert set(card["stretch_limits"]) == set(card["layer_names"])


def test_a_model_with_further_layers_is_refused_on_a_scene_without_them(further_run, step2_workdir, capsys):
    workdir, _ = further_run
    plain_workdir, _, plain_arguments = step2_workdir
    before = {path.name: path.read_bytes() for path in plain_workdir.iterdir() if path.is_file()}
    capsys.readouterr()
    assert step2.main([*plain_arguments, "--model", str(workdir / contract.MODEL_FILE)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "red_edge1" in lines[0] and "[bands]" in lines[0]
    assert {path.name: path.read_bytes() for path in plain_workdir.iterdir() if path.is_file()} == before


def test_stretching_with_a_model_without_a_layer_of_the_scene_is_refused(further_run, step2_workdir, tmp_path,
                                                                        subset_reference, capsys):
    plain_workdir, _, _ = step2_workdir
    config = write_scene(tmp_path / "further.toml", SUBSET, subset_reference, SUBSET_PARAMETERS,
                         bands={**ABERYSTWYTH_BANDS, **FURTHER})
    capsys.readouterr()
    code = step0.main(["--config", str(config), "--workdir", str(tmp_path / "work"),
                       "--stretch-from", str(plain_workdir / contract.MODEL_FILE)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "trained without the layer(s) red_edge1" in lines[0]
    assert not (tmp_path / "work" / "layers.tif").exists()


def test_train_layers_naming_a_band_the_scene_lacks_is_one_line(step2_workdir, capsys):
    _, runs, arguments = step2_workdir
    capsys.readouterr()
    assert step2.main([*arguments, "--runs-dir", str(runs), "--train-layers", "red", "swir2"]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "swir2" in lines[0] and "lack" in lines[0]


def test_network_channels_expand_all_and_keep_order():
    assert cnn.network_channels(["red", "all"], ("blue", "red"), "x") == ("red", "blue", "mask")
    with pytest.raises(Exception, match="nir_narrow"):
        cnn.network_channels(["nir_narrow"], LAYER_NAMES, "scene.toml")
