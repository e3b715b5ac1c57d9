"""Where the tutorial's users are (Windows, conda, PyCharm): every module imports, and a step runs, without the
POSIX-only parts (``fcntl``, signal masks), the work folder then locked through a lock file as on Windows."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from builders import PROJECT, QUADRANT_PARAMETERS, quadrant_scene, write_scene, write_tif

#: Run in a fresh interpreter: hide ``fcntl`` and ``signal.pthread_sigmask``, and stand in for Windows' ``msvcrt``
#: with its locking call (non-blocking exclusive lock of the first byte); import every module and run Step 0.
WITHOUT_POSIX = textwrap.dedent("""
    import fcntl, importlib, pathlib, signal, subprocess, sys, types
    posix_lock = fcntl.lockf
    sys.modules["fcntl"] = None  # import fcntl now raises ImportError, as on Windows
    del signal.pthread_sigmask
    sys.path.insert(0, ".")
    for path in sorted(pathlib.Path("pipeline").rglob("*.py")):
        importlib.import_module(".".join(path.with_suffix("").parts).removesuffix(".__init__"))
    for step in ("Step0_Data_Preparation", "Step1_Class_Balance", "Step2_Model_Training", "Step3_Accuracy_Assessment"):
        importlib.import_module(step)
    msvcrt = types.ModuleType("msvcrt")  # after the imports: subprocess takes msvcrt for a sign of Windows
    msvcrt.LK_NBLCK = 2
    msvcrt.locking = lambda handle, mode, count: posix_lock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, count)
    sys.modules["msvcrt"] = msvcrt
    import Step0_Data_Preparation
    sys.exit(Step0_Data_Preparation.main(sys.argv[1:]))
""")


def test_every_module_imports_and_step0_runs_without_fcntl_or_signal_masks(tmp_path):
    image, reference = quadrant_scene(tmp_path)
    config = write_scene(tmp_path / "scene.toml", write_tif(tmp_path / "image.tif", image),
                         write_tif(tmp_path / "reference.tif", reference), QUADRANT_PARAMETERS)
    workdir = tmp_path / "work"
    done = subprocess.run([sys.executable, "-c", WITHOUT_POSIX, "--config", str(config), "--workdir", str(workdir)],
                          cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (workdir / "samples_labels.mat").is_file() and (workdir / ".lock").is_file()  # locked by its lock file
