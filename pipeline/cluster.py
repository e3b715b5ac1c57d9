"""The Dask cluster of tiled runs: a client of a running scheduler or of a LocalCluster, and ordered mapping."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
from collections import deque

from pipeline.errors import ConfigError

#: Seconds to wait for a scheduler to accept a connection and to greet.
CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None):
    """A ``dask.distributed`` client of the cluster at ``scheduler``, or of a LocalCluster of ``workers``
    single-threaded processes (default: one per core) made for the block."""
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
    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def check_settings(scheduler: str | None, workers: int | None) -> None:
    """Refuse a worker count below 1 and a scheduler address that does not answer as a Dask scheduler."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    if scheduler:
        check_scheduler(scheduler)


def check_scheduler(address: str) -> None:
    """Refuse, within :data:`CONNECT_TIMEOUT_S` seconds each, a TCP address that does not accept connections or
    that accepts but does not greet as a Dask scheduler does (it speaks first: a handshake)."""
    if "://" in address and not address.startswith("tcp://"):
        return  # tls://, ucx://, ...: left to Dask
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--scheduler {address}: not an address like tcp://10.0.0.5:8786")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            connection.settimeout(CONNECT_TIMEOUT_S)
            greeting = connection.recv(1)
    except socket.timeout:
        raise ConfigError(f"--scheduler {address}: answered but did not greet within {CONNECT_TIMEOUT_S} s as a "
                          f"Dask scheduler does; check the address and port") from None
    except OSError as error:
        raise ConfigError(f"--scheduler {address}: cannot connect ({error.strerror or error})") from None
    if not greeting:
        raise ConfigError(f"--scheduler {address}: closed the connection; not a Dask scheduler")


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
