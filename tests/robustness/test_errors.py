"""Bad input, interrupted writes and reruns: one clear line, nothing half-written, the same result twice."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import scipy.io

import gdal_tif2rgb
import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
from builders import QUADRANT_PARAMETERS, fails_with_one_line, quadrant_scene, snapshot, write_scene, write_tif
from pipeline.handoffs import contract, matfile
from pipeline.segmentation import sampling
from pipeline.core import vocabulary
from pipeline.core.errors import InputFileError


@pytest.fixture(scope="module")
def step0_scene(tmp_path_factory):
    """A good quadrant scene, its configuration (naming its files relative to itself) and a work folder holding a
    finished Step 0 run (only ever read or copied from)."""
    folder = tmp_path_factory.mktemp("quadrant")
    image, reference = quadrant_scene(folder)
    write_tif(folder / "image.tif", image)
    write_tif(folder / "reference.tif", reference)
    config = write_scene(folder / "scene.toml", "image.tif", "reference.tif", QUADRANT_PARAMETERS)
    workdir = folder / "work"
    assert step0.main(["--config", str(config), "--workdir", str(workdir)]) == 0
    return {"folder": folder, "config": config, "workdir": workdir, "image": image, "reference": reference}


@pytest.fixture
def scene(step0_scene, tmp_path):
    """A copy of the good quadrant scene in the test's folder: its files, configuration and finished Step 0 run."""
    shutil.copytree(step0_scene["folder"], tmp_path, dirs_exist_ok=True)
    return dict(step0_scene, folder=tmp_path, config=tmp_path / "scene.toml", workdir=tmp_path / "work")


class TestBadInputs:
    def run_bad(self, scene, capsys, config_text, *fragments, main=step0.main, extra=()):
        before = snapshot(scene["workdir"])
        config = scene["folder"] / "bad.toml"
        config.write_text(config_text)
        fails_with_one_line(main, ["--config", str(config), "--workdir", str(scene["workdir"]), *extra], capsys,
                            *fragments)
        assert snapshot(scene["workdir"]) == before

    def good_text(self, scene, **replace):
        text = scene["config"].read_text()
        for old, new in replace.items():
            text = text.replace(old, new)
        return text

    def test_missing_image(self, scene, capsys):
        self.run_bad(scene, capsys, self.good_text(scene, **{"image.tif": "gone.tif"}), "gone.tif", "not found")

    def test_file_that_is_not_a_raster(self, scene, capsys):
        (scene["folder"] / "notes.tif").write_text("this is not a GeoTIFF")
        self.run_bad(scene, capsys, self.good_text(scene, **{"image.tif": "notes.tif"}), "notes.tif",
                     "not a readable raster")

    def test_fewer_bands_than_configured(self, scene, capsys):
        self.run_bad(scene, capsys, self.good_text(scene, **{"swir = 9": "swir = 12"}), "image.tif", "swir = 12",
                     "1..10")

    def test_reference_that_does_not_overlap_the_image(self, scene, capsys):
        far = (900000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0)  # 400 km east of the image
        write_tif(scene["folder"] / "far.tif", scene["reference"], geotransform=far)
        self.run_bad(scene, capsys, self.good_text(scene, **{"reference.tif": "far.tif"}), "far.tif",
                     "does not overlap")

    def test_reference_without_any_configured_class(self, scene, capsys):
        write_tif(scene["folder"] / "other.tif", np.full((64, 64), 7, np.uint8))
        self.run_bad(scene, capsys, self.good_text(scene, **{"reference.tif": "other.tif"}), "other.tif",
                     "none of its values is listed", "7 (")

    def test_class_without_pixels(self, scene, capsys):
        self.run_bad(scene, capsys, self.good_text(scene, **{"water = [4]": "water = [4]\nsnow = [9]"}),
                     "class 'snow'", "has no pixel")

    @pytest.mark.parametrize("replace, fragments", [
        ({'reference = ': 'ref = '}, ("unknown key 'ref'", "keys are name, image, reference")),
        ({'image = ': 'img = '}, ("unknown key 'img' (did you mean 'image'?)",)),
        ({"[classes]": "[clases]"}, ("unknown key 'clases' (did you mean 'classes'?)",)),
        ({'image = ': '# image = '}, ("missing key 'image'",)),
        ({"nir = 7": "nirr = 7"}, ("unknown band name", "nirr")),
        ({"patch_width = 19": "patch_width = 20"}, ("patch_width = 20", "must be odd")),
        ({"patch_width = 19": "window = 20"}, ("window = 20", "must be odd")),  # the older name
        ({"n_segments = 64": "n_segments = nan"}, ("n_segments = nan", "must be an integer")),
        ({"n_segments = 64": "compactness = inf"}, ("compactness = inf", "finite")),
        ({"n_segments = 64": "n_segments = 0"}, ("n_segments = 0", "at least 1")),
        ({"epochs = 1": "epochs = -3"}, ("epochs = -3", "at least 1")),
        ({"[sampling]": "[sampling]\nwindoww = 3"}, ("unknown parameter 'windoww'",)),
        ({"[sampling]": "[sampling]\nblock_sise = 3"}, ("unknown parameter 'block_sise' in [sampling] (did you mean "
                                                          "'block_size'?)",)),
        ({"[sampling]": "[sampling]\nn_segments = 30"}, ("parameter 'n_segments' belongs in [superpixels]",)),
        ({"[sampling]": "[run]\nsed = 3\n[sampling]"}, ("unknown parameter 'sed' in [run] (did you mean 'seed'?)",
                                                         "split_seed, training_seed, sample_seed")),
        ({"[sampling]": "[run]\nseed = -1\n[sampling]"}, ("seed = -1", "at least 0")),
        ({"[bands]": "[bands"}, ("not valid TOML",)),
    ])
    def test_bad_configuration(self, scene, capsys, replace, fragments):
        self.run_bad(scene, capsys, self.good_text(scene, **replace), "bad.toml", *fragments)

    @pytest.mark.parametrize("unit, fragments", [
        ("reflectance", ("model.keras", "stretch limits are in reflectance", "image values in raster values (UInt16)",
                         "Step2")),
        (None, ("model.json", "lacks stretch_unit", "rerun Step2")),
        ("raster values (UInt16)", ("model.keras", "make layers of this scene constant", "blue (100.0% of pixels",
                                    "another scale"))],
        ids=["another unit", "no unit recorded", "same unit, another scale"])
    def test_stretch_from_a_model_of_another_unit(self, scene, capsys, unit, fragments):
        model = scene["folder"] / "model" / "model.keras"
        model.parent.mkdir()
        model.write_bytes(b"")  # Step 0 reads only the card beside it
        card = {"model_run": "m1", "scene": "other", "layer_names": list(vocabulary.LAYER_NAMES),
                "train_layers": list(vocabulary.LAYER_NAMES), "patch_width": 19, "class_names": ["a", "b"],
                "class_colours": [[0, 0, 0], [1, 1, 1]], "prior_shares": [0.5, 0.5], "prior_correction": True,
                "stretch_limits": {name: [0.0, 1.0] for name in vocabulary.LAYER_NAMES}, "parameters": {},
                "preparation": {},
                "step0_run": "s0", "step1_run": "s1", **({"stretch_unit": unit} if unit else {})}
        (model.parent / "model.json").write_text(json.dumps(card))
        self.run_bad(scene, capsys, scene["config"].read_text(), *fragments, extra=["--stretch-from", str(model)])

    def test_unknown_layer_flag(self, scene, capsys):
        self.run_bad(scene, capsys, scene["config"].read_text(), "command line", "unknown layer", "['nir2']",
                     main=step2.main, extra=["--train-layers", "red", "nir2"])

    def test_bad_flag_value(self, scene, capsys):
        self.run_bad(scene, capsys, scene["config"].read_text(), "command line", "epochs = -1", main=step2.main,
                     extra=["--epochs", "-1"])


class TestMissingInvalidPixels:
    def test_nan_and_nodata_are_masked_counted_and_unlabelled(self, tmp_path, capsys):
        image, reference = quadrant_scene(tmp_path, np.float32)
        image[:, :20, :20] = np.nan  # a block of NaN in the urban quadrant
        image[:, 50:, 50:] = -9999  # and a block of nodata in the water quadrant
        config = write_scene(tmp_path / "scene.toml", write_tif(tmp_path / "image.tif", image, nodata=-9999),
                             write_tif(tmp_path / "reference.tif", reference), QUADRANT_PARAMETERS)
        workdir = tmp_path / "work"
        assert step0.main(["--config", str(config), "--workdir", str(workdir)]) == 0
        assert "596 pixels" in capsys.readouterr().out  # 400 NaN + 196 nodata
        path = contract.SEGMENTS.path(workdir)
        record = contract.provenance_of(contract.load(contract.SEGMENTS, workdir, [contract.PROVENANCE]), path,
                                        vocabulary.STEP0)
        layers = contract.read_raster(contract.LAYERS, workdir, record)
        assert np.isfinite(layers).all() and layers.min() >= 0 and layers.max() <= 1
        segments = contract.load(contract.SEGMENTS, workdir, ["segments"])["segments"]
        labels = contract.load(contract.SAMPLES, workdir, ["labels"])["labels"]
        invalid = np.isnan(image[0]) | (image[0] == -9999)
        assert np.array_equal(segments == -1, invalid)  # invalid pixels belong to no superpixel
        assert (labels != 255).sum() > 10


class TestStepOrder:
    def test_step1_before_step0(self, scene, tmp_path, capsys):
        fails_with_one_line(step1.main, ["--config", str(scene["config"]), "--workdir", str(tmp_path / "empty")],
                            capsys, "empty", "run Step0_Data_Preparation.py first")

    def test_step2_before_step1(self, scene, capsys):
        fails_with_one_line(step2.main, ["--config", str(scene["config"]), "--workdir", str(scene["workdir"])],
                            capsys, "Samples_classBalanced_20.mat", "run Step1_Class_Balance.py first")

    def test_truncated_mat(self, scene, capsys):
        path = scene["workdir"] / "samples_labels.mat"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        fails_with_one_line(step1.main, ["--config", str(scene["config"]), "--workdir", str(scene["workdir"])],
                            capsys, "samples_labels.mat", "truncated", "rerun Step0")

    def test_mat_from_another_scene(self, scene, capsys):
        segments = scene["workdir"] / "segments.mat"
        scipy.io.savemat(segments, {"segments": np.zeros((64, 64), np.int32)})  # a segmentation of one superpixel
        fails_with_one_line(step1.main, ["--config", str(scene["config"]), "--workdir", str(scene["workdir"])],
                            capsys, "segments.mat", "rerun Step0_Data_Preparation.py")

    def test_debug_shows_the_traceback(self, scene, tmp_path):
        with pytest.raises(InputFileError):
            step1.main(["--config", str(scene["config"]), "--workdir", str(tmp_path / "empty"), "--debug"])


class TestInterruptedWrites:
    def test_failed_mat_write_keeps_the_previous_file(self, scene, monkeypatch):
        path = scene["workdir"] / "segments.mat"
        before = path.read_bytes()

        def disk_full(stream, *args, **kwargs):  # save_mat writes variable by variable into one open stream
            stream.write(b"MATLAB 5.0 partial")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(scipy.io, "savemat", disk_full)
        with pytest.raises(OSError, match="No space left"):
            matfile.save_mat(path, {"segments": np.ones((3, 3), np.int32)})
        assert path.read_bytes() == before
        assert sorted(p.name for p in scene["workdir"].iterdir() if "partial" in p.name) == []

    def test_interrupted_step_leaves_outputs_intact(self, scene, monkeypatch, capsys):
        before = snapshot(scene["workdir"])

        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(sampling, "extract_patches", interrupt)
        assert step0.main(["--config", str(scene["config"]), "--workdir", str(scene["workdir"]), "--n-segments",
                           "30"]) == 130
        assert "interrupted" in capsys.readouterr().err
        after = snapshot(scene["workdir"])
        assert {k: after[k] for k in ("segments.mat", "samples_labels.mat")} == {
            k: before[k] for k in ("segments.mat", "samples_labels.mat")}
        assert not [p for p in scene["workdir"].iterdir() if "partial" in p.name]

    def test_failed_geotiff_write_leaves_no_partial_file(self, tmp_path):
        grid = gdal_tif2rgb.Grid(4, 4, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), "")
        with pytest.raises(TypeError, match="GDALDataType"):
            gdal_tif2rgb.write_geotiff(tmp_path / "out.tif", np.zeros((4, 4), np.complex64).astype(object), grid)
        assert list(tmp_path.iterdir()) == []


class TestReproducibility:
    def test_same_configuration_gives_identical_arrays(self, scene, tmp_path):
        second = tmp_path / "second"
        arguments = ["--config", str(scene["config"])]
        assert step0.main([*arguments, "--workdir", str(second)]) == 0
        for handoff, keys in ((contract.SEGMENTS, ["segments"]),
                              (contract.SAMPLES, ["samples", "labels", "centroids", "purity", "split"])):
            first = contract.load(handoff, scene["workdir"], keys)
            again = contract.load(handoff, second, keys)
            for key in keys:
                assert np.array_equal(first[key], again[key]), key
        for folder in (scene["workdir"], second):
            assert step1.main([*arguments, "--workdir", str(folder)]) == 0
        keys = ["images", "labels", "index"]
        first = contract.load(contract.BALANCED, scene["workdir"], keys, per_class=20)
        again = contract.load(contract.BALANCED, second, keys, per_class=20)
        assert all(np.array_equal(first[k], again[k]) for k in keys)

    def test_run_record_holds_configuration_seed_versions_and_checksums(self, step0_scene):
        record = json.loads((step0_scene["workdir"] / "run.json").read_text())
        assert record["config_text"] == step0_scene["config"].read_text()
        assert record["steps"]["Step0_Data_Preparation"]["parameters"]["split_seed"] == 42
        assert {"numpy", "scikit-image", "GDAL"} <= set(record["packages"])
        image = step0_scene["folder"] / "image.tif"
        assert record["inputs_sha256"][str(image.resolve())] == hashlib.sha256(image.read_bytes()).hexdigest()


class TestMatFiles:
    def test_v73_hdf5_files_read_back_through_the_same_helper(self, tmp_path):
        path = tmp_path / "big.mat"
        arrays = {"samples": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "labels": np.array([1, 255], np.uint8),
                  "class_names": np.array(["urban", "water"])}
        with matfile.mat_v73_writer(path) as mat:
            for name, value in arrays.items():
                mat.put(name, value)
        assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
        loaded = matfile.load_mat(path, list(arrays), made_by="Step0")
        for key, value in arrays.items():
            assert np.array_equal(loaded[key], value), key
