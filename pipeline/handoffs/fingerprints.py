"""Fingerprints of files: path, size, modification time and SHA-256, to tell later whether a file (an input, a
raster hand-off) is still the one a run recorded. Folders (Sentinel-2 products) are fingerprinted by their
listing, tiles (:class:`pipeline.run.config.Tiles`) by their names and contents; GDAL virtual paths (``/vsizip/``...)
through GDAL. And :func:`digest`, the identity of what a run made, from its description and arrays."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

import gdal_tif2rgb
from pipeline.core.errors import InputFileError
from pipeline.run.config import Tiles


def fingerprint(path) -> dict:
    """Path, size, modification time and SHA-256 of an input file (GDAL virtual paths included); of a folder
    (a Sentinel-2 product), the SHA-256 of its files' relative paths, sizes and times; of tiles, the SHA-256 of
    each tile's name and bytes, with the pattern as path, the tiles' total size and latest time."""
    try:
        size, mtime_ns = _stat(path)
        digest = hashlib.sha256()
        for chunk in _chunks(path):
            digest.update(chunk)
    except FileNotFoundError:
        raise InputFileError(f"{path}: file not found") from None
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    return {"path": str(path), "size": size, "mtime_ns": mtime_ns, "sha256": digest.hexdigest()}


def matches(recorded: dict, path) -> bool:
    """Whether the file at ``path`` is the one ``recorded``: the same path, size and time, or the same SHA-256."""
    try:
        same_stat = list(_stat(path)) == [recorded["size"], recorded["mtime_ns"]]
        if recorded["path"] == str(path) and same_stat and not isinstance(path, Tiles) and not Path(path).is_dir():
            return True
        return fingerprint(path)["sha256"] == recorded["sha256"]
    except (OSError, KeyError, TypeError):
        return False


def _stat(path) -> tuple[int, int]:
    if isinstance(path, Tiles):
        stats = [os.stat(tile) for tile in path.files]
        return sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)
    if str(path).startswith("/vsi"):
        return gdal_tif2rgb.virtual_file_stat(str(path))
    if Path(path).is_dir():
        stats = [file.stat() for file in Path(path).rglob("*") if file.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _chunks(path, size: int = 8 << 20):
    """The bytes of a file (or a GDAL virtual path) in chunks (a file's: views of one reused buffer, valid until
    the next); of a folder, its listing with sizes and times; of tiles, each tile's name and then its bytes."""
    if isinstance(path, Tiles):
        for tile in path.files:
            yield f"{tile.name}\n".encode()
            yield from _chunks(tile, size)
        return
    if Path(path).is_dir():
        for file in sorted(Path(path).rglob("*")):
            if file.is_file():
                stat = file.stat()
                yield f"{file.relative_to(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
        return
    if not str(path).startswith("/vsi"):
        buffer = memoryview(bytearray(size))
        with open(path, "rb") as file:
            while read := file.readinto(buffer):
                yield buffer[:read]
        return
    yield from gdal_tif2rgb.virtual_file_chunks(str(path), size)


_UNCHANGED: dict = {}  # path -> (size, mtime_ns, recorded SHA-256) of raster hand-offs already checked here


def unchanged(recorded: dict, path: Path) -> bool:
    """:func:`matches`, computed once per process for a file whose size and time stay the same."""
    try:
        key = (*_stat(path), recorded.get("sha256"))
    except OSError:
        return False
    if _UNCHANGED.get(str(path)) == key:
        return True
    if matches(recorded, path):
        _UNCHANGED[str(path)] = key
        return True
    return False


def digest(description: dict, arrays=()) -> str:
    """The SHA-256 (hex) of ``description`` (as sorted-key JSON) and of the dtype, shape and bytes of each of
    ``arrays``: the same text for the same description and arrays, on any machine.

    >>> digest({"a": 1}) == digest({"a": 1}) != digest({"a": 2})
    True
    """
    hashed = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        hashed.update(f"{array.dtype.str}{array.shape}".encode())
        hashed.update(array.view(np.uint8).ravel() if array.size else b"")
    return hashed.hexdigest()
