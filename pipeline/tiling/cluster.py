"""The Dask cluster of tiled runs: a client of a running scheduler or of a LocalCluster, and ordered mapping."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import struct
from collections import deque
from pathlib import Path

from pipeline.core.errors import ConfigError

#: Seconds to wait for a scheduler to accept a connection and to greet.
CONNECT_TIMEOUT_S = 10
#: The scratch folder of a LocalCluster in a step's staging area (see :func:`dask_client`).
SCRATCH = "dask-scratch"


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None, scratch: Path | None = None):
    """A ``dask.distributed`` client of the cluster at ``scheduler``, or of a LocalCluster of ``workers``
    single-threaded processes (default: one per core) made for the block, whose spill and lock files go to the
    folder ``scratch`` (a step's staging area, removed with it) instead of ``$TMPDIR/dask-scratch-space``."""
    import dask
    from dask.distributed import Client, LocalCluster

    for name in ("distributed", "tornado"):  # Dask's start-up and shutdown chatter, set up on its import
        logging.getLogger(name).setLevel(logging.ERROR)
    check_settings(scheduler, workers)
    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as error:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler "
                              f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
        with client:
            yield client
        return
    if scratch is not None:
        Path(scratch).mkdir(exist_ok=True)
    with dask.config.set({"temporary-directory": str(scratch) if scratch else None}), \
            LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                         dashboard_address=":0", local_directory=str(scratch) if scratch else None) as cluster, \
            Client(cluster) as client:
        yield client


def client_if(tiled: bool, scheduler: str | None, workers: int | None, out):
    """:func:`dask_client` for a tiled run, its scratch in the staging area of ``out`` (an
    :class:`~pipeline.run.outputs.OutputSet`); for a whole-scene run, a block that gets None."""
    return dask_client(scheduler, workers, out.path(SCRATCH)) if tiled else contextlib.nullcontext()


def check_settings(scheduler: str | None, workers: int | None) -> None:
    """Refuse a worker count below 1 and a scheduler address that does not answer as a Dask scheduler."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    if scheduler:
        check_scheduler(scheduler)


def check_scheduler(address: str) -> None:
    """Refuse, within :data:`CONNECT_TIMEOUT_S` seconds each, an address that is not ``tcp://host:port`` (the
    only protocol the tool sets up), and a server that does not accept connections or does not greet as a Dask
    scheduler does: it speaks first, one framed message (an 8-byte total length, then the frame count and
    lengths, then the frames), which is read and checked before Dask trusts its lengths."""
    if "://" in address and not address.startswith("tcp://"):
        raise ConfigError(f"--scheduler {address}: only tcp:// scheduler addresses are supported, like "
                          f"tcp://10.0.0.5:8786")
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--scheduler {address}: not an address like tcp://10.0.0.5:8786")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            connection.settimeout(CONNECT_TIMEOUT_S)
            greeting = _framed_message(connection)
    except socket.timeout:
        raise ConfigError(f"--scheduler {address}: answered but did not greet within {CONNECT_TIMEOUT_S} s as a "
                          f"Dask scheduler does; check the address and port") from None
    except OSError as error:
        raise ConfigError(f"--scheduler {address}: cannot connect ({error.strerror or error})") from None
    if greeting is None:
        raise ConfigError(f"--scheduler {address}: does not greet as a Dask scheduler (another protocol, or it "
                          f"closed the connection); check the address and port")


def _framed_message(connection: socket.socket, limit: int = 1 << 20) -> bytes | None:
    """The first message the server sends, if it is framed as Dask frames its messages and at most ``limit``
    bytes long (a handshake is a few hundred); None for anything else, a closed connection included."""
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = connection.recv(count - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    header = exactly(8)
    total = struct.unpack("<Q", header)[0] if len(header) == 8 else 0
    if not 16 <= total <= limit:
        return None
    body = exactly(total)
    count = struct.unpack_from("<Q", body)[0] if len(body) == total else 0
    if not 1 <= count <= 64 or total < 8 * (1 + count):
        return None
    lengths = struct.unpack_from(f"<{count}Q", body, 8)
    return body if 8 * (1 + count) + sum(lengths) == total else None


def map_in_order(client, function, argument_tuples, in_flight: int | None = None):
    """Run ``function(*arguments)`` for each tuple on the cluster, at most ``in_flight`` at a time (default: two
    per worker), and yield the results in the order given, so ids and file offsets do not depend on which
    worker finished first."""
    in_flight = in_flight or 2 * max(1, len(client.scheduler_info()["workers"]))
    arguments = iter(argument_tuples)
    pending = deque(client.submit(function, *a, pure=False) for a in itertools.islice(arguments, in_flight))
    while pending:
        future = pending.popleft()
        result = future.result()
        future.release()
        following = next(arguments, None)
        if following is not None:
            pending.append(client.submit(function, *following, pure=False))
        yield result
