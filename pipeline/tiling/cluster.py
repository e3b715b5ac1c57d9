"""The Dask cluster of tiled runs: a client of a running scheduler or of a LocalCluster, and ordered mapping."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import struct
import time
from collections import deque
from pathlib import Path

from pipeline.core.errors import ClusterError, ConfigError, PipelineError

#: Seconds to wait for a scheduler to accept a connection and to greet.
CONNECT_TIMEOUT_S = 10
#: Seconds a tiled run waits on a cluster without a worker, or whose scheduler does not answer, before it stops.
WORKERLESS_LIMIT_S = 30
#: Seconds between looks at the cluster while a task is awaited; also how long a look waits for the scheduler.
LOOK_EVERY_S = 1
#: The scratch folder of a LocalCluster in a step's staging area (see :func:`dask_client`).
SCRATCH = "dask-scratch"


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None, scratch: Path | None = None):
    """A ``dask.distributed`` client of the cluster at ``scheduler``, or of a LocalCluster of ``workers``
    single-threaded processes (default: one per core) made for the block, whose spill and lock files go to the
    folder ``scratch`` (a step's staging area, removed with it) instead of ``$TMPDIR/dask-scratch-space``."""
    import dask
    from dask.distributed import Client, LocalCluster

    # Dask's start-up and shutdown chatter, set up on its import, and its tracebacks of a lost scheduler or worker
    # (each loss reaches the step as one exception, see result_of)
    for name in ("distributed", "distributed.client", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
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
    in_flight = in_flight or 2 * max(1, worker_count(client) or 0)
    arguments = iter(argument_tuples)
    pending = deque(client.submit(function, *a, pure=False) for a in itertools.islice(arguments, in_flight))
    while pending:
        future = pending.popleft()
        result = result_of(client, future)
        future.release()
        following = next(arguments, None)
        if following is not None:
            pending.append(client.submit(function, *following, pure=False))
        yield result


def result_of(client, future):
    """The result of ``future``, awaited as long as ``client``'s cluster has a worker: Dask itself runs the tasks
    of a lost worker again on the others (up to its ``distributed.scheduler.allowed-failures`` times a task).

    Every wait on the cluster goes through here. Raises :class:`ClusterError` at once when the connection to the
    scheduler is lost or a task killed its workers, and after :data:`WORKERLESS_LIMIT_S` s in which the
    scheduler had no worker or did not answer; an error of the task itself is raised as it is."""
    from distributed import KilledWorker
    from distributed.client import CancelledError

    scheduler = f"Dask scheduler {client.scheduler.address}"
    seen = time.monotonic()
    while True:
        failed = future.status == "error"  # the task's own error, raised at once
        try:
            return future.result(timeout=None if failed else LOOK_EVERY_S)
        except TimeoutError:
            if failed:
                raise
        except (CancelledError, OSError) as error:  # OSError: Dask's CommClosedError among them
            if failed or isinstance(error, PipelineError):
                raise
            reason = getattr(error, "reason", None) or type(error).__name__
            raise ClusterError(f"{scheduler}: the connection to it was lost ({reason}); check that it runs and "
                               f"rerun; earlier outputs are left as they were") from None
        except KilledWorker:
            raise ClusterError(f"{scheduler}: the workers running one task kept dying (out of memory?), beyond "
                               f"distributed.scheduler.allowed-failures; earlier outputs are left as they were") \
                from None
        count = worker_count(client)
        if count:
            seen = time.monotonic()
        elif time.monotonic() - seen > WORKERLESS_LIMIT_S:
            problem = ("has had no worker for {} s (lost, or none started); start workers" if count == 0 else
                       "has not answered for {} s (stopped, or unreachable); check that it runs")
            raise ClusterError(f"{scheduler}: {problem.format(WORKERLESS_LIMIT_S)} and rerun; earlier outputs are "
                               f"left as they were")


def worker_count(client) -> int | None:
    """The number of workers of ``client``'s scheduler, or None if it does not answer in :data:`LOOK_EVERY_S` s."""
    try:
        return len(client.nthreads(callback_timeout=LOOK_EVERY_S))
    except OSError:  # TimeoutError included
        return None
