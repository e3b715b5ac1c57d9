"""The Dask cluster of tiled runs: a client of a running scheduler or of a LocalCluster, and ordered mapping."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections import deque


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None):
    """A ``dask.distributed`` client of the cluster at ``scheduler``, or of a LocalCluster of ``workers``
    single-threaded processes (default: one per core) made for the block."""
    from dask.distributed import Client, LocalCluster

    for name in ("distributed", "tornado"):  # Dask's start-up and shutdown chatter, set up on its import
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


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
