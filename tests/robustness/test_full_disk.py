"""A full disk is one line: every step run with its work folder (and Step 2's runs folder) on a small tmpfs that
already holds the subset's outputs of Steps 0 to 2, with a few MiB left, so that the disk fills at different
points of each step. Each run exits 1 with exactly one stderr line naming a file and the full disk (or, where the
room sufficed, exits 0 with nothing on stderr); a failed run leaves every file as it was and no partial or hidden
file behind. Needs root to mount the tmpfs (skipped otherwise; test_hostile_inputs.py emulates a full disk with a
file size limit)."""
from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess

import pytest

from builders import PROJECT, run_script

#: Room left on the tmpfs beyond the earlier outputs it holds, MiB.
ROOM_MIB = (0.05, 1, 3, 8)
#: (step, its extra arguments, room in MiB) of every run: each step at every room, and Step 3's designed sample
#: (a GeoPackage and a CSV of some 100 kB) where it fills the disk.
RUNS = [*((step, [], room) for step in range(4) for room in ROOM_MIB),
        *((3, ["--design-sample"], room) for room in (0, 0.05))]


def tree(folder):
    """Relative path -> SHA-256 of every file under ``folder``, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def small_disk(mount_point, size_bytes: int):
    """A tmpfs of ``size_bytes`` (rounded up to pages) mounted at ``mount_point`` for the block."""
    mount_point.mkdir(parents=True)
    pages = -(-size_bytes // 4096) * 4096
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.mark.parametrize("step, extra, room_mib", RUNS, ids=lambda v: str(v))
def test_a_full_disk_is_one_line_and_leaves_every_file_as_it_was(step2_workdir, tmp_path, step, extra, room_mib):
    workdir, _, arguments = step2_workdir
    config = arguments[1]
    # the file system's own bookkeeping (inodes, folders) takes room too: a page a file, roughly
    files = [p for p in workdir.rglob("*") if p.is_file()]
    size = folder_bytes(workdir) + 4096 * (len(files) + 64) + int(room_mib * 2**20)
    with small_disk(tmp_path / "disk", size) as disk:
        work, runs = disk / "work", disk / "runs"
        shutil.copytree(workdir, work)
        runs.mkdir()
        before = tree(disk)
        extra = [*extra, *(["--runs-dir", runs] if step == 2 else [])]
        code, _, error, seconds = run_script(step, ["--config", config, "--workdir", work, *extra], 300, PROJECT)
        print(f"Step {step} {' '.join(map(str, extra))}, {room_mib} MiB left: exit {code} in {seconds:.0f} s; {error.strip()[:400]}")
        if code == 0:
            assert room_mib > min(ROOM_MIB), "the smallest room must fill the disk"
            assert error == "", error[-3000:]
            return
        assert code == 1 and error.startswith("error: ") and error.count("\n") == 1, error[-3000:]
        assert "no space left on device" in error.lower() and str(disk) in error, error
        assert tree(disk) == before  # earlier outputs as they were; nothing partial, nothing hidden left
