"""Hostile input: every refusal is one line with the right exit code, leaves the inputs and earlier outputs as they
were and writes nothing anywhere else; the outputs of a step appear as one set or not at all.

Each refused case checks (a) the exit code (1 for a refused input, configuration or parameter; 2 for a malformed
command line), (b) stderr is exactly one line starting with ``error: `` holding the listed fragments (case-blind; a
tuple of fragments means "any of them"), (c) the inputs' SHA-256 before and after, (d) the work folder's files
byte-identical and no temporary file (``partial``, ``staging``) anywhere under it, (e) nothing new or changed in the
test's folder outside the work and runs folders (the steps run from an empty current folder), (f) a time bound.
In-process ``main([...])`` calls where possible; subprocesses for signals, stderr silence, memory, and the cases that
start a Dask cluster (which could hang or leave threads behind), each with a hard timeout.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
import Step3_Accuracy_Assessment as step3
from builders import (ABERYSTWYTH_BANDS, ABERYSTWYTH_CLASSES, PROJECT, QUADRANT_PARAMETERS, SCRIPTS, SUBSET,
                      assert_one_line, fails_with_one_line, free_port, quadrant_scene, run_script, snapshot,
                      write_scene, write_tif)
from pipeline.core import atomic_files
from pipeline.core.colours import class_palette
from pipeline.core.errors import ConfigError, InputFileError
from pipeline.handoffs import matfile
from pipeline.run import files

STEPS = {0: step0.main, 1: step1.main, 2: step2.main, 3: step3.main}
#: Names of files the steps write (to look for strays outside the work folder).
OUTPUT_NAMES = {"layers.tif", "reference.tif", "segments.tif", "segments.mat", "samples_labels.mat", "run.json",
                "rgb.png", "ndvi.png", "example_patches.png", "segments_boundaries.png", "model.keras",
                "predLabels.mat", "predMap.tif", "metrics.json", "report.html"}
TEMPORARY_MARKS = ("partial", "staging")
NO_SPACE = "No space left on device"


# --- Helpers --------------------------------------------------------------------------------------------------

def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path, exclude=()) -> dict:
    """Relative path -> SHA-256 (files), 'dir' or 'link -> target' of everything under ``folder``, skipping the
    ``exclude`` paths and what is below them."""
    folder = Path(folder)
    exclude = [Path(p) for p in exclude if p is not None]
    result = {}
    if not folder.exists():
        return result
    for path in folder.rglob("*"):
        if any(path == e or e in path.parents for e in exclude):
            continue
        key = str(path.relative_to(folder))
        if path.is_symlink():
            result[key] = f"link -> {os.readlink(path)}"
        elif path.is_file():
            result[key] = sha(path)
        else:
            result[key] = "dir"
    return result


def temporary_leftovers(folder: Path) -> list:
    """Temporary files anywhere under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if any(mark in p.name for mark in TEMPORARY_MARKS) or p.name.startswith(".staging"))


def run_main(main, argv) -> int:
    """Exit code of a step's ``main(argv)``: its return value or the code of a SystemExit. Any other exception
    fails the test (a refused input must end in an exit code, not a traceback)."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code
    except pytest.fail.Exception:
        raise
    except BaseException as error:  # noqa: BLE001 - reported as the failure
        pytest.fail(f"main raised {type(error).__name__}: {str(error)[:500]} (expected an exit code and one "
                    f"'error: ' line)", pytrace=False)


class Guard:
    """Runs a step on hostile input and checks (a)-(f) of the module docstring."""

    def __init__(self, tmp: Path, capsys):
        self.tmp = tmp
        self.capsys = capsys
        self.cwd = tmp / "cwd"

    @contextlib.contextmanager
    def untouched(self, work: Path, inputs=(), runs: Path | None = None):
        """Check that the block leaves ``inputs``, the files of ``work`` and the test folder outside ``work`` and
        ``runs`` as they were, and no temporary file under ``work``."""
        work = Path(work)
        inputs = [Path(p) for p in inputs]
        hashes = {p: sha(p) for p in inputs}
        before = snapshot(work) if work.is_dir() else None
        outside = listing(self.tmp, exclude=(work, runs))
        yield
        assert {p: sha(p) for p in inputs} == hashes, "an input file changed"
        if before is not None:
            after = snapshot(work)
            changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
            assert not changed, f"earlier outputs changed, appeared or vanished in the work folder: {changed}"
        assert temporary_leftovers(work) == [], f"temporary files left: {temporary_leftovers(work)}"
        now = listing(self.tmp, exclude=(work, runs))
        stray = sorted(k for k in set(outside) | set(now) if outside.get(k) != now.get(k))
        assert not stray, f"written outside the work and runs folders: {stray}"

    def refused(self, main, argv, *fragments, work: Path, inputs=(), runs=None, code: int = 1,
                limit: float = 30.0) -> str:
        """``main(argv)`` exits with ``code`` in under ``limit`` s, one stderr line with ``fragments``, nothing
        touched."""
        with self.untouched(work, inputs, runs):
            self.capsys.readouterr()
            start = time.monotonic()
            got = run_main(main, argv)
            seconds = time.monotonic() - start
            error = self.capsys.readouterr().err
            assert got == code, f"exit code {got!r}, expected {code}; stderr: {error[-1500:]!r}"
            assert_one_line(error, fragments)
            assert seconds < limit, f"took {seconds:.1f} s, more than {limit} s"
        return error

    def refused_script(self, step: int, argv, *fragments, work: Path, inputs=(), runs=None, limit: float = 30.0,
                       timeout: float | None = None, code: int = 1) -> str:
        """As :meth:`refused`, for the step script run in a subprocess from the empty current folder."""
        with self.untouched(work, inputs, runs):
            got, _, error, seconds = run_script(step, argv, timeout or limit + 5, self.cwd)
            assert got == code, f"exit code {got}, expected {code}; stderr: {error[-1500:]!r}"
            assert_one_line(error, fragments)
            assert seconds < limit, f"took {seconds:.1f} s, more than {limit} s"
        return error


@pytest.fixture
def guard(tmp_path, capsys, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return Guard(tmp_path, capsys)


def make_scene(folder: Path, flip: bool = False) -> dict:
    """The 64 x 64 quadrant scene (mirrored left-right with ``flip``) with its TOML in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    image, reference = quadrant_scene(folder)
    if flip:
        image, reference = image[:, :, ::-1].copy(), reference[:, ::-1].copy()
    image_path = write_tif(folder / "image.tif", image)
    reference_path = write_tif(folder / "reference.tif", reference)
    config = write_scene(folder / "scene.toml", image_path, reference_path, QUADRANT_PARAMETERS)
    return {"folder": folder, "config": config, "image": image_path, "reference": reference_path,
            "work": folder / "work", "runs": folder / "runs"}


def run_steps(scene: dict, steps=(0, 1, 2)) -> None:
    for number in steps:
        extra = ["--runs-dir", scene["runs"]] if number == 2 else []
        assert run_main(STEPS[number], ["--config", scene["config"], "--workdir", scene["work"], *extra]) == 0, number


def args(scene: dict, *extra) -> list:
    return ["--config", scene["config"], "--workdir", scene["work"], *extra]


def inputs(scene: dict) -> tuple:
    return scene["image"], scene["reference"], scene["config"]


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> dict:
    """A quadrant scene after a good run of Steps 0, 1 and 2 (only ever copied from)."""
    scene = make_scene(tmp_path_factory.mktemp("golden"))
    run_steps(scene)
    return scene


@pytest.fixture
def copied(golden, tmp_path) -> dict:
    """The golden scene's inputs with a copy of its work folder (Steps 0-2 done) and an empty runs folder."""
    scene = dict(golden, work=tmp_path / "work", runs=tmp_path / "runs")
    shutil.copytree(golden["work"], scene["work"])
    scene["runs"].mkdir()
    return scene


@pytest.fixture(scope="module")
def other_scene(tmp_path_factory) -> dict:
    """Another scene (the quadrants mirrored) after its own Steps 0 and 1."""
    scene = make_scene(tmp_path_factory.mktemp("other"), flip=True)
    run_steps(scene, (0, 1))
    return scene


def config_variant(scene: dict, path: Path, **replace) -> Path:
    """A copy of the scene's TOML at ``path`` with text replaced."""
    text = scene["config"].read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def change_one_pixel(image: Path) -> None:
    dataset = gdal.Open(str(image), gdal.GA_Update)
    band = dataset.GetRasterBand(1)
    pixel = band.ReadAsArray(0, 0, 1, 1)
    band.WriteArray(pixel + 1, 0, 0)
    dataset = None


# --- 1. Inputs are read-only ----------------------------------------------------------------------------------

class TestInputsAreReadOnly:
    @pytest.mark.parametrize("which, name", [("image", "layers.tif"), ("image", "reference.tif"),
                                             ("image", "segments.tif"), ("reference", "reference.tif")])
    def test_input_stored_under_an_output_name(self, guard, tmp_path, which, name):
        scene = make_scene(tmp_path / "scene")
        work = tmp_path / "work"
        work.mkdir()
        moved = work / name
        shutil.move(scene[which], moved)
        config = write_scene(tmp_path / "scene" / "moved.toml", moved if which == "image" else scene["image"],
                             moved if which == "reference" else scene["reference"], QUADRANT_PARAMETERS)
        guard.refused(step0.main, ["--config", config, "--workdir", work], name, "input", work=work,
                      inputs=(moved, config, scene["reference" if which == "image" else "image"]))

    @pytest.mark.parametrize("kind", ["hard link", "symlink"])
    def test_link_to_the_image_under_an_output_name(self, guard, tmp_path, kind):
        scene = make_scene(tmp_path / "scene")
        work = tmp_path / "work"
        work.mkdir()
        (os.link if kind == "hard link" else os.symlink)(scene["image"], work / "layers.tif")
        guard.refused(step0.main, args(dict(scene, work=work)), ("layers.tif", "image.tif"), "input", work=work,
                      inputs=inputs(scene))

    def test_configuration_inside_the_work_folder_under_an_output_name(self, guard, tmp_path):
        scene = make_scene(tmp_path / "scene")
        work = tmp_path / "work"
        work.mkdir()
        config = work / "run.json"  # TOML content, named like the run record
        shutil.copy(scene["config"], config)
        guard.refused(step0.main, ["--config", config, "--workdir", work], "run.json", work=work,
                      inputs=(scene["image"], scene["reference"], config))

    def test_run_record_holds_the_checksums_of_the_inputs(self, guard, tmp_path):
        scene = make_scene(tmp_path / "scene")
        before = {p: sha(p) for p in (scene["image"], scene["reference"])}
        assert run_main(step0.main, args(scene)) == 0
        recorded = json.loads((scene["work"] / "run.json").read_text())["inputs_sha256"]
        for path, digest in before.items():
            assert recorded[str(path.resolve())] == digest, path.name

    def test_run_record_holds_the_checksum_of_the_image_as_it_was_read(self, guard, tmp_path, monkeypatch):
        """The image changes on disk after Step 0 read it: run.json must not record the new file's checksum as
        the one the outputs came from (recording the checksum as read, or refusing the run, both pass)."""
        scene = make_scene(tmp_path / "scene")
        as_read = sha(scene["image"])
        original, calls = files.save_png, []

        def change_image_then_save(path, figure, **options):
            if not calls:
                change_one_pixel(scene["image"])
            calls.append(path)
            return original(path, figure, **options)

        monkeypatch.setattr(files, "save_png", change_image_then_save)
        guard.capsys.readouterr()
        code = run_main(step0.main, args(scene))
        assert calls, "no PNG was written: the image was never changed"
        if code == 0:
            recorded = json.loads((scene["work"] / "run.json").read_text())["inputs_sha256"]
            assert recorded[str(scene["image"].resolve())] == as_read, "run.json holds the checksum of the image " \
                                                                       "as changed after it was read"
        else:
            assert code == 1
            assert_one_line(guard.capsys.readouterr().err, ["image.tif"])


# --- 2. The scene name is a plain folder name -------------------------------------------------------------------

@contextlib.contextmanager
def _no_output(path, *args, **kwargs):
    pytest.fail(f"the step wrote {path}: a refused name must stop it before any output", pytrace=False)
    yield


def _stray_outputs(folder: Path) -> set:
    return {n for n in os.listdir(folder) if n in OUTPUT_NAMES or any(m in n for m in TEMPORARY_MARKS)}


class TestSceneName:
    NAMES = ["../..", "/tmp/x", "", ".", "..", "a/b", "x" * 300, "a\nb"]

    @pytest.mark.parametrize("step", [0, 1, 2])
    @pytest.mark.parametrize("name", NAMES, ids=["up-up", "absolute", "empty", "dot", "dotdot", "a-slash-b",
                                                 "300-chars", "newline"])
    def test_bad_name(self, guard, tmp_path, monkeypatch, step, name):
        # Safety net for running this against code that does not check the name: any output write fails the test
        # before it can land in the project, /work or /tmp.
        for module in list(sys.modules.values()):  # every module that took atomic_output by name
            if getattr(module, "atomic_output", None) is atomic_files.atomic_output:
                monkeypatch.setattr(module, "atomic_output", _no_output)
        monkeypatch.setattr(atomic_files, "atomic_output", _no_output)
        scene = make_scene(tmp_path / "scene")
        config = config_variant(scene, tmp_path / "scene" / "named.toml",
                                **{'name = "test"': f"name = {json.dumps(name)}"})
        data, runs = PROJECT / "data", PROJECT / "runs"
        before = (listing(data), listing(runs), _stray_outputs(PROJECT), _stray_outputs(PROJECT.parent),
                  Path("/tmp/x").exists())
        guard.refused(STEPS[step], ["--config", config], "name", work=tmp_path / "no-work",
                      inputs=(scene["image"], scene["reference"], config))
        after = (listing(data), listing(runs), _stray_outputs(PROJECT), _stray_outputs(PROJECT.parent),
                 Path("/tmp/x").exists())
        assert after == before, "something was created in data/, runs/, the project, /work or /tmp"


# --- 3. Outputs as one set ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, subset_reference) -> dict:
    """The real subset after a finished Step 0 (n_segments 1500), and a second configuration whose outputs all
    differ from the first's (another NIR band, fewer superpixels)."""
    folder = tmp_path_factory.mktemp("subset_run")
    config = write_scene(folder / "subset.toml", SUBSET, subset_reference, {"n_segments": 1500})
    other = write_scene(folder / "subset_other.toml", SUBSET, subset_reference, {"n_segments": 1200},
                        bands={**ABERYSTWYTH_BANDS, "nir": 8})
    work = folder / "work"
    assert run_main(step0.main, ["--config", config, "--workdir", work]) == 0
    return {"config": config, "other": other, "work": work, "reference": subset_reference}


class TestOutputsAsOneSet:
    def test_step0_write_fails_midway(self, guard, copied, monkeypatch):
        original, calls = matfile.save_mat, []

        def disk_full_on_second_call(path, variables, **options):
            calls.append(path)
            if len(calls) == 2:
                raise OSError(28, NO_SPACE)
            return original(path, variables, **options)

        monkeypatch.setattr(matfile, "save_mat", disk_full_on_second_call)
        guard.refused(step0.main, args(copied, "--n-segments", 30), NO_SPACE, work=copied["work"],
                      inputs=inputs(copied))
        assert len(calls) >= 2, "the disk-full error was never raised"

    def test_step2_write_fails_after_training(self, guard, copied, monkeypatch):
        original, failed = files.save_png, []

        def disk_full_on_the_map(path, figure, **options):
            if "predMap" in Path(path).name:
                failed.append(path)
                raise OSError(28, NO_SPACE)
            return original(path, figure, **options)

        monkeypatch.setattr(files, "save_png", disk_full_on_the_map)
        before = snapshot(copied["work"])
        assert {"model.keras", "learning_curve.png", "predLabels.mat"} <= set(before)
        guard.refused(step2.main, args(copied, "--epochs", 2, "--runs-dir", copied["runs"]), NO_SPACE,
                      work=copied["work"], runs=copied["runs"], inputs=inputs(copied))
        assert failed, "the disk-full error was never raised"

    @pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_signal_during_step0(self, tmp_path, subset_run, signal_number):
        work = tmp_path / "work"
        shutil.copytree(subset_run["work"], work)
        before, project = snapshot(work), sorted(os.listdir(PROJECT))
        inputs_before = {p: sha(p) for p in (SUBSET, subset_run["reference"], subset_run["other"])}
        start = time.monotonic()
        process = subprocess.Popen([sys.executable, SCRIPTS[0], "--config", str(subset_run["other"]), "--workdir",
                                    str(work)], cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        while not Path(f"/proc/{process.pid}").exists() and time.monotonic() - start < 5:
            time.sleep(0.01)
        time.sleep(max(0.0, start + 1.5 - time.monotonic()))
        process.send_signal(signal_number)
        try:
            _, error = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("Step 0 still running 30 s after the signal", pytrace=False)
        assert process.returncode != 0, "Step 0 finished before the signal: nothing was tested"
        after = snapshot(work)
        changed = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
        assert not changed, f"files changed by the interrupted run: {changed}"
        assert temporary_leftovers(work) == [], temporary_leftovers(work)
        assert {p: sha(p) for p in inputs_before} == inputs_before
        assert sorted(os.listdir(PROJECT)) == project


# --- 4. Provenance ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stale_image(tmp_path_factory) -> dict:
    """A quadrant scene after Steps 0-2 whose image then had one pixel changed (same path)."""
    scene = make_scene(tmp_path_factory.mktemp("stale"))
    run_steps(scene)
    change_one_pixel(scene["image"])
    return scene


class TestProvenance:
    def test_step0_hand_offs_of_another_scene(self, guard, copied, other_scene):
        for name in ("segments.mat", "samples_labels.mat"):
            shutil.copy(other_scene["work"] / name, copied["work"] / name)
        guard.refused(step1.main, args(copied), ("segments.mat", "samples_labels.mat"), "rerun Step0",
                      work=copied["work"], inputs=inputs(copied))

    def test_balanced_set_of_another_scene(self, guard, copied, other_scene):
        name = "Samples_classBalanced_20.mat"
        shutil.copy(other_scene["work"] / name, copied["work"] / name)
        guard.refused(step2.main, args(copied, "--runs-dir", copied["runs"]), name, "Step1", work=copied["work"],
                      runs=copied["runs"], inputs=inputs(copied), limit=15)

    @pytest.mark.parametrize("step", [1, 2, 3])
    def test_image_changed_after_step0(self, guard, tmp_path, stale_image, step):
        scene = dict(stale_image, work=tmp_path / "work", runs=tmp_path / "runs")
        shutil.copytree(stale_image["work"], scene["work"])
        extra = ["--runs-dir", scene["runs"]] if step == 2 else []
        guard.refused(STEPS[step], args(scene, *extra), "Step0", work=scene["work"], runs=scene["runs"],
                      inputs=inputs(scene), limit=15)

    def test_step0_parameter_changed_after_step0(self, guard, tmp_path):
        scene = make_scene(tmp_path / "scene")
        run_steps(scene, (0,))
        config_variant(scene, scene["config"], **{"n_segments = 64": "n_segments = 80"})
        guard.refused(step1.main, args(scene), "n_segments", "Step0", work=scene["work"], inputs=inputs(scene))

    def test_concurrent_run(self, guard, copied):
        handle = os.open(copied["work"], os.O_RDONLY | os.O_DIRECTORY)  # what a running step holds
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            guard.refused(step1.main, args(copied), "another run", work=copied["work"], inputs=inputs(copied))
        finally:
            os.close(handle)
        assert run_main(step1.main, args(copied)) == 0, "Step 1 fails after the other run released the lock"

    def test_a_running_step_holds_the_folder(self, copied):
        process = subprocess.Popen([sys.executable, SCRIPTS[0], *map(str, args(copied))], cwd=PROJECT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            handle = os.open(copied["work"], os.O_RDONLY | os.O_DIRECTORY)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except OSError:
                    break  # the running step holds it
                time.sleep(0.05)
            else:
                pytest.fail("Step 0 never held the work folder's lock")
            os.close(handle)
        finally:
            assert process.wait(timeout=60) == 0


# --- 5. Cluster --------------------------------------------------------------------------------------------------

@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never speaks; yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted, stop = [], threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    server.close()


class TestCluster:
    def test_scheduler_refuses_connections(self, guard, copied):
        address = f"127.0.0.1:{free_port()}"
        guard.refused_script(0, args(copied, "--tile-size", 32, "--scheduler", f"tcp://{address}"), address,
                             work=copied["work"], inputs=inputs(copied), limit=20)

    def test_scheduler_never_answers(self, guard, copied, silent_server):
        address = f"127.0.0.1:{silent_server}"
        guard.refused_script(0, args(copied, "--tile-size", 32, "--scheduler", f"tcp://{address}"), address,
                             work=copied["work"], inputs=inputs(copied), limit=30)


# --- 6. Parameters refused before long work --------------------------------------------------------------------

def _limit_address_space(gib: float):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (int(gib * 2**30), int(gib * 2**30)))
    return limit


class TestParameters:
    @pytest.mark.parametrize("old, new, fragment", [
        ("n_segments = 64", "n_segments = nan", "n_segments"),
        ("n_segments = 64", "n_segments = 64\ncompactness = inf", "compactness"),
        ("[sampling]", "[sampling]\ntest_fraction = nan", "test_fraction"),
    ])
    def test_not_finite_in_the_toml(self, guard, copied, tmp_path, old, new, fragment):
        config = config_variant(copied, tmp_path / "bad.toml", **{old: new})
        guard.refused(step0.main, ["--config", config, "--workdir", copied["work"]], fragment, work=copied["work"],
                      inputs=(*inputs(copied), config))

    @pytest.mark.parametrize("seed", ["-1", "99999999999"])
    def test_seed_out_of_range(self, guard, copied, seed):
        guard.refused(step0.main, args(copied, "--seed", seed), "seed", work=copied["work"], inputs=inputs(copied))

    def test_balanced_set_bigger_than_memory(self, guard, copied, tmp_path):
        """Run in a subprocess limited to 6 GiB of address space: code that tries to draw 10^9 samples per class
        must not take the machine down with it."""
        config = config_variant(copied, tmp_path / "huge.toml", **{"per_class = 20": "per_class = 1000000000"})
        with guard.untouched(copied["work"], (*inputs(copied), config)):
            code, _, error, seconds = run_script(1, ["--config", config, "--workdir", copied["work"]], 60, guard.cwd,
                                                 preexec_fn=_limit_address_space(6))
            assert code == 1, f"exit code {code}; stderr: {error[-1500:]!r}"
            assert_one_line(error, ["per_class"])
            assert seconds < 30

    def test_nothing_left_to_train_on(self, guard, copied, tmp_path):
        config = config_variant(copied, tmp_path / "few.toml", **{
            "per_class = 20": "per_class = 1", "epochs = 1": "epochs = 1\nvalidation_fraction = 0.9"})
        assert run_main(step1.main, ["--config", config, "--workdir", copied["work"]]) == 0
        guard.refused(step2.main, ["--config", config, "--workdir", copied["work"], "--runs-dir", copied["runs"]],
                      "validation_fraction", work=copied["work"], runs=copied["runs"],
                      inputs=(*inputs(copied), config), limit=15)

    @pytest.mark.parametrize("workers", ["-1", "0"])
    def test_workers_below_one(self, guard, copied, workers):
        guard.refused_script(0, args(copied, "--tile-size", 32, "--workers", workers), "workers",
                             work=copied["work"], inputs=inputs(copied), limit=15)

    @pytest.mark.parametrize("step", [0, 1])
    def test_workdir_is_a_file(self, guard, copied, tmp_path, step):
        not_a_folder = tmp_path / "work_file"
        not_a_folder.write_text("a file, not a folder")
        guard.refused(STEPS[step], ["--config", copied["config"], "--workdir", not_a_folder], "work_file", "folder",
                      work=not_a_folder, inputs=(*inputs(copied), not_a_folder))

    def test_runs_dir_is_a_file(self, guard, copied, tmp_path):
        not_a_folder = tmp_path / "runs_file"
        not_a_folder.write_text("a file, not a folder")
        guard.refused(step2.main, args(copied, "--runs-dir", not_a_folder), "runs_file", work=copied["work"],
                      inputs=(*inputs(copied), not_a_folder), limit=15)

    def test_output_name_taken_by_a_folder(self, guard, copied):
        (copied["work"] / "layers.tif").unlink()
        (copied["work"] / "layers.tif").mkdir()
        guard.refused(step0.main, args(copied, "--n-segments", 30), "layers.tif", work=copied["work"],
                      inputs=inputs(copied))

    def test_read_only_work_folder(self, guard, copied):
        if os.geteuid() == 0:
            pytest.skip("root ignores folder permissions")
        copied["work"].chmod(0o555)
        try:
            guard.refused(step0.main, args(copied, "--n-segments", 30), str(copied["work"]), work=copied["work"],
                          inputs=inputs(copied))
        finally:
            copied["work"].chmod(0o755)

    def test_work_folder_that_cannot_be_made(self, guard, golden):
        work = Path("/proc/self/nonexistent_dir")
        guard.refused(step0.main, ["--config", golden["config"], "--workdir", work], "nonexistent_dir", work=work,
                      inputs=inputs(golden))


# --- 7. Large integer labels ---------------------------------------------------------------------------------------

RSS_OF_CHILDREN = ("import resource, subprocess, sys\n"
                   "code = subprocess.call(sys.argv[1:])\n"
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                   "sys.exit(code)\n")


class TestLargeIntegerLabels:
    def test_uint32_reference_with_huge_values(self, tmp_path):
        small_image, small_reference = quadrant_scene(tmp_path)
        spectra = np.stack([small_image[:, small_reference == code].mean(axis=1) for code in (1, 2, 3, 4)], axis=1)
        reference = np.zeros((150, 150), np.uint32)
        reference[:75, :75], reference[:75, 75:], reference[75:, :75], reference[75:, 75:] = 3, 2, 1, 4
        rng = np.random.default_rng(1)
        image = (spectra[:, reference - 1] * rng.uniform(0.95, 1.05, (10, 150, 150))).astype(np.uint16)
        reference[:10, :10] = 4294967295
        config = write_scene(tmp_path / "scene.toml", write_tif(tmp_path / "image.tif", image),
                             write_tif(tmp_path / "reference.tif", reference, nodata=4294967295),
                             {**QUADRANT_PARAMETERS, "n_segments": 300},
                             classes={**ABERYSTWYTH_CLASSES, "water": [4, 4294967290]})
        process = subprocess.run([sys.executable, "-c", RSS_OF_CHILDREN, sys.executable, str(PROJECT / SCRIPTS[0]),
                                  "--config", str(config), "--workdir", str(tmp_path / "work")],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert process.returncode == 0, process.stderr[-2000:]
        peak_kib = int(process.stdout.strip().splitlines()[-1])
        assert peak_kib < 1.5 * 2**20, f"Step 0 peaked at {peak_kib / 2**20:.2f} GiB"


# --- 8. Names and text ---------------------------------------------------------------------------------------------

class TestNamesAndText:
    @pytest.mark.parametrize("name", ["water ", "water\t", "wa\nter", " water", ""],
                             ids=["trailing-space", "tab", "newline", "leading-space", "empty"])
    def test_bad_class_name(self, guard, copied, tmp_path, name):
        config = config_variant(copied, tmp_path / "bad.toml", **{"water = [4]": f"{json.dumps(name)} = [4]"})
        guard.refused(step0.main, ["--config", config, "--workdir", copied["work"]], "class", work=copied["work"],
                      inputs=(*inputs(copied), config))

    def test_toml_with_a_byte_order_mark(self, guard, golden, tmp_path):
        config = tmp_path / "bom.toml"
        config.write_bytes(b"\xef\xbb\xbf" + golden["config"].read_bytes())
        guard.capsys.readouterr()
        code = run_main(step0.main, ["--config", config, "--workdir", tmp_path / "work"])
        assert code == 0, guard.capsys.readouterr().err[-1500:]
        assert (tmp_path / "work" / "samples_labels.mat").is_file()

    @pytest.fixture
    def zipped(self, golden, tmp_path) -> Path:
        archive = tmp_path / "scene.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.write(golden["image"], "image.tif")
        return archive

    def test_image_inside_a_zip(self, guard, golden, tmp_path, zipped):
        config = write_scene(tmp_path / "zip.toml", f"/vsizip/{zipped}/image.tif", golden["reference"],
                             QUADRANT_PARAMETERS)
        guard.capsys.readouterr()
        code = run_main(step0.main, ["--config", config, "--workdir", tmp_path / "work"])
        assert code == 0, guard.capsys.readouterr().err[-1500:]
        assert (tmp_path / "work" / "samples_labels.mat").is_file()

    def test_missing_member_of_a_zip(self, guard, golden, tmp_path, zipped):
        config = write_scene(tmp_path / "zip.toml", f"/vsizip/{zipped}/nope.tif", golden["reference"],
                             QUADRANT_PARAMETERS)
        guard.refused(step0.main, ["--config", config, "--workdir", tmp_path / "work"], "nope.tif",
                      work=tmp_path / "work", inputs=(zipped, config, golden["reference"]))

    def test_twenty_class_colours_are_distinct_and_not_black(self):
        colours = [tuple(c) for c in class_palette([f"c{i}" for i in range(20)])]
        assert len(colours) == 20
        assert len(set(colours)) == 20, f"repeated colours: {colours}"
        assert (0, 0, 0) not in colours


@pytest.fixture(scope="module")
def quiet_runs(tmp_path_factory) -> dict:
    """Steps 0, 1, 2 of a fresh quadrant scene as scripts, TF_CPP_MIN_LOG_LEVEL unset: step -> (code, stderr)."""
    scene = make_scene(tmp_path_factory.mktemp("quiet"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    results = {}
    for step in (0, 1, 2):
        extra = ["--runs-dir", scene["runs"]] if step == 2 else []
        code, _, error, _ = run_script(step, args(scene, *extra), 180, scene["folder"], env=env)
        results[step] = (code, error)
    return results


class TestQuietSuccess:
    @pytest.mark.parametrize("step", [0, 1, 2])
    def test_successful_step_prints_nothing_on_stderr(self, quiet_runs, step):
        code, error = quiet_runs[step]
        assert code == 0, error[-1500:]
        noise = [line for line in error.splitlines() if not line.startswith("warning:")]
        assert not noise, f"{len(noise)} stderr lines, first: {noise[:3]}"


# --- 9. Command line -----------------------------------------------------------------------------------------------

class TestCommandLine:
    @pytest.mark.parametrize("step, flags, fragment", [
        (2, ["--epochs", "abc"], "--epochs"),
        (0, ["--n-segments", "abc"], "--n-segments"),
        (2, ["--epoch", "3"], "--epoch"),  # an abbreviation of --epochs is an unknown flag, not --epochs 3
        (1, ["--per-clas", "5"], "--per-clas"),
        (0, ["--no-such-flag"], "--no-such-flag"),
    ])
    def test_malformed_command_line(self, guard, copied, step, flags, fragment):
        extra = ["--runs-dir", copied["runs"]] if step == 2 else []
        guard.refused(STEPS[step], args(copied, *extra, *flags), fragment, code=2, work=copied["work"],
                      runs=copied["runs"], inputs=inputs(copied))

    def test_unknown_training_layer(self, guard, copied):
        with guard.untouched(copied["work"], inputs(copied), copied["runs"]):
            fails_with_one_line(step2.main, [str(a) for a in args(copied, "--runs-dir", copied["runs"],
                                                                   "--train-layers", "red", "nir2")],
                                guard.capsys, "nir2", "blue")

    def test_even_patch_width(self, guard, copied):
        guard.refused(step0.main, args(copied, "--patch-width", 24), "patch_width", work=copied["work"],
                      inputs=inputs(copied))

    def test_debug_raises_the_configuration_error(self, copied):
        with pytest.raises(ConfigError, match="patch_width"):
            step0.main([str(a) for a in args(copied, "--patch-width", 24, "--debug")])

    def test_debug_raises_the_input_file_error(self, copied, tmp_path):
        config = config_variant(copied, tmp_path / "gone.toml", **{str(copied["image"]): str(tmp_path / "gone.tif")})
        with pytest.raises(InputFileError, match="gone.tif"):
            step0.main(["--config", str(config), "--workdir", str(copied["work"]), "--debug"])
