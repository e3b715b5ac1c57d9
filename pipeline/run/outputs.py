"""A step's outputs as one set: checked before the work, staged while it runs, committed together at the end.

A step opens its work folder with :func:`open_outputs`, which

1. takes the folder's lock (an exclusive ``flock`` on the folder itself; no lock file), so two runs on one work
   folder are refused rather than interleaved;
2. checks that the folder is a writable folder, that no output name is taken by a folder, and that no output
   path resolves to one of the step's inputs (the image, the reference, the configuration, the hand-offs it
   reads): inputs are never overwritten;
3. yields an :class:`OutputSet` whose :meth:`~OutputSet.path` points into a staging folder beside the outputs.

When the step's block ends cleanly and the folder is still the one locked (not removed or replaced during the
run), :meth:`OutputSet.commit` moves the staged files into place while SIGINT and SIGTERM wait, removing outputs
of the step's set that this run did not make, and restores the previous set if a move fails. Any failure or
signal before that leaves the previous set exactly as it was and removes the staging folder, so no temporary
file is left behind; a folder removed during the run is a one-line failure, and nothing is committed.
"""
from __future__ import annotations

import contextlib
import errno
try:  # POSIX; on Windows the work folder is locked through a lock file with msvcrt
    import fcntl
except ImportError:
    fcntl = None
import os
import re
import shutil
import signal
import uuid
from pathlib import Path

from pipeline.core.errors import ConfigError, InputDataError

STAGING_PREFIX = ".staging-"
#: The file locked in a work folder where the folder itself cannot be (Windows).
LOCK_FILE = ".lock"


class OutputSet:
    """The outputs of one step run, staged in ``staging`` until :meth:`commit` moves them to ``folder``."""

    def __init__(self, folder: Path, names, staging: Path, identity: tuple | None = None):
        self.folder = folder
        self.names = tuple(name.rstrip("/") for name in names)
        self.staging = staging
        self.identity = identity  # (device, inode) of the folder as opened, checked at the commit
        self.extra_folders: dict[Path, Path] = {}

    def path(self, name: str) -> Path:
        """Where to write output ``name`` during the run (a name that is not an output of the set is scratch,
        discarded at the end)."""
        return self.staging / name

    def new_folder(self, final: Path) -> Path:
        """A staging folder for a whole new output folder (e.g. a TensorBoard run) that appears at ``final``
        when the set is committed; ``final`` must not exist yet."""
        if final.exists():
            raise InputDataError(f"{final}: exists already; remove it or wait a second before rerunning")
        _make_folder(final.parent)
        remove_orphans(final.parent)
        staging = final.parent / f"{STAGING_PREFIX}{os.getpid()}-{final.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        self.extra_folders[staging] = final
        return staging

    def commit(self) -> list[str]:
        """Move the staged outputs into place as one set (signals wait); returns the names committed. Staged
        entries that are not outputs of the set (scratch files) are discarded with the staging folder."""
        self.check_in_place()
        declared = {*self.names, *(f"{n}.aux.xml" for n in self.names)}
        made = sorted(p.name for p in self.staging.iterdir() if p.name in declared)  # files, and folders
        backup = self.staging / ".previous"
        backup.mkdir()
        moved = []
        with signals_deferred():
            try:
                for name in declared:
                    if (self.folder / name).is_file() or (self.folder / name).is_dir():
                        os.replace(self.folder / name, backup / name)
                        moved.append(name)
                for name in made:
                    os.replace(self.staging / name, self.folder / name)
                for staging, final in self.extra_folders.items():
                    os.replace(staging, final)
            except OSError:
                for name in made:
                    if (self.folder / name).exists() and not (self.staging / name).exists():
                        os.replace(self.folder / name, self.staging / name)
                for name in moved:
                    os.replace(backup / name, self.folder / name)
                raise
        return made

    def still_in_place(self) -> bool:
        """Whether the folder at ``folder`` is still the one opened, and the staging folder still in it."""
        try:
            stat = os.stat(self.folder)
        except OSError:
            return False
        return (self.identity is None or (stat.st_dev, stat.st_ino) == self.identity) and self.staging.is_dir()

    def check_in_place(self) -> None:
        """Refuse to go on with a work folder removed or replaced during the run (see :meth:`still_in_place`)."""
        if not self.still_in_place():
            raise ConfigError(f"{self.folder}: the work folder was removed or replaced while the step ran; nothing "
                              f"was committed, run the step again")

    def discard(self) -> None:
        """Remove everything staged (the previous outputs stay as they were); a work folder that writes remade
        after it was removed during the run goes too, once empty."""
        in_place = self.still_in_place()
        shutil.rmtree(self.staging, ignore_errors=True)
        for staging in self.extra_folders:
            shutil.rmtree(staging, ignore_errors=True)
        if not in_place:
            with contextlib.suppress(OSError):
                self.folder.rmdir()


@contextlib.contextmanager
def open_outputs(folder: Path, names, inputs=()):
    """Lock ``folder``, check it and the output ``names`` against ``inputs``, and yield an :class:`OutputSet`
    committed when the block ends cleanly and discarded otherwise (see the module docstring)."""
    folder = Path(folder)
    for source in inputs:  # before anything is made: a work folder inside an input folder (a product) is refused
        if not str(source).startswith("/vsi") and Path(source).is_dir() and (
                same_file(folder, source) or inside(folder, Path(source))):
            raise ConfigError(f"{folder}: is inside the input {source}; choose a --workdir outside it")
    made = not folder.exists()
    _make_folder(folder)
    try:
        with _locked_outputs(folder, names, inputs) as outputs:
            yield outputs
    except BaseException:
        if made:  # a first run that failed leaves no empty work folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


@contextlib.contextmanager
def _locked_outputs(folder: Path, names, inputs):
    with folder_lock(folder) as identity:
        remove_stale_staging(folder)
        check_outputs(folder, names, inputs)
        staging = folder / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
        except OSError as error:
            raise ConfigError(f"{folder}: cannot write in this work folder ({error.strerror})") from None
        outputs = OutputSet(folder, names, staging, identity)
        try:
            yield outputs
            outputs.commit()
        except Exception:
            outputs.check_in_place()  # a write that failed because the folder went: say so
            raise
        finally:
            outputs.discard()


def final_path(text: str) -> str:
    """``text`` (a message) with each staged output's path as it will be once committed.

    >>> final_path("w/.staging-12-0a1b2c3d/x.tif: full; runs/.staging-12-demo-1-0a1b2c3d: full")
    'w/x.tif: full; runs/demo-1: full'
    """
    prefix = re.escape(STAGING_PREFIX)
    text = re.sub(rf"/{prefix}\d+-[0-9a-f]{{8}}/", "/", text)  # a work folder's staging folder
    return re.sub(rf"/{prefix}\d+-(.+?)-[0-9a-f]{{8}}(?=[/:;,\s)]|$)", r"/\1", text)  # a new output folder's


def _make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, not a folder; choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{folder}: cannot make this folder ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: this folder is not writable; choose another one")


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` for the block, which gets the folder's (device, inode); refuse at once
    if another run holds it. On POSIX the folder itself is locked (no file is left); on Windows, which cannot lock
    a folder, its hidden file ``.lock``."""
    try:
        handle = (os.open(folder, os.O_RDONLY | os.O_DIRECTORY) if fcntl is not None else
                  os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT))
    except OSError as error:
        raise ConfigError(f"{folder}: cannot open this work folder ({error.strerror})") from None
    try:
        try:
            _lock_at_once(handle)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                raise InputDataError(f"{folder}: another run is using this work folder; wait for it to finish "
                                     f"or choose another --workdir") from None
            raise
        stat = os.stat(folder)
        yield stat.st_dev, stat.st_ino
    finally:
        os.close(handle)


def _lock_at_once(handle: int) -> None:
    """An exclusive lock on the open file ``handle``, or OSError (EAGAIN, EACCES) at once if another holds it."""
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        import msvcrt

        msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)


def remove_stale_staging(folder: Path) -> None:
    """Remove staging folders left by a run that was killed outright (SIGKILL, power loss); the lock is held."""
    for stale in folder.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def remove_orphans(parent: Path) -> None:
    """Remove the staging folders in ``parent`` (a shared folder such as ``runs/``, which no lock guards) of runs
    whose process has ended: killed outright before they could clean up. Live runs' folders stay."""
    for stale in parent.glob(f"{STAGING_PREFIX}*"):
        pid = stale.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (psutil: ``os.kill(pid, 0)`` would end the process on Windows)."""
    import psutil

    return psutil.pid_exists(pid)


def check_outputs(folder: Path, names, inputs) -> None:
    """Refuse output names taken by the other kind (a folder where the step writes a file; names ending in "/"
    are output folders), and outputs that would overwrite an input (or, for a folder, hold one)."""
    for name in names:
        target = folder / name.rstrip("/")
        if name.endswith("/") and target.exists() and not target.is_dir():
            raise ConfigError(f"{target}: is a file, but this step writes a folder of that name; move it away")
        if not name.endswith("/") and target.is_dir():
            raise ConfigError(f"{target}: is a folder, but this step writes a file of that name; move it away")
        for source in inputs:
            if same_file(target, source) or name.endswith("/") and inside(source, target):
                raise ConfigError(f"{source}: is an input of this step and would be overwritten by its output "
                                  f"{name}; move it out of {folder} or choose another --workdir")


def inside(source, folder: Path) -> bool:
    """Whether the input ``source`` lies in ``folder`` (after links)."""
    path = str(source)
    if path.startswith("/vsi"):
        path = path.split("/", 2)[-1]  # /vsizip//data/a.zip/b.tif -> /data/a.zip/b.tif
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def same_file(output: Path, source) -> bool:
    """Whether ``output`` and the input ``source`` are one file (same path after links, or the same inode)."""
    source = str(source)
    if source.startswith("/vsi"):
        return False
    if os.path.realpath(output) == os.path.realpath(source):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(output, source)
    return False


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM back for the block (they are delivered after it). Windows has no signal masks: there
    the block runs unguarded (it is a few renames)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signals = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
