"""Every wait on a tiled run's cluster (``cluster.result_of``) ends: a cluster without a worker from the start is
one ``ClusterError`` after the bound, a task that keeps killing its workers is one at once, and a task's own error
reaches the step as it is. (Workers and a scheduler killed mid-run: tests/robustness/test_lost_cluster.py.)"""
from __future__ import annotations

import os
import time

import dask
import pytest
from dask.distributed import Client, LocalCluster

from pipeline.core.errors import ClusterError
from pipeline.tiling import cluster


def test_a_cluster_without_a_worker_is_an_error_after_the_bound(monkeypatch):
    monkeypatch.setattr(cluster, "WORKERLESS_LIMIT_S", 2)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as local, Client(local) as client:
        start = time.monotonic()
        with pytest.raises(ClusterError, match=f"{local.scheduler_address}: has had no worker for 2 s"):
            list(cluster.map_in_order(client, abs, [(-1,)]))
        assert 2 <= time.monotonic() - start < 10


def test_a_task_that_kills_its_workers_is_an_error_naming_the_scheduler():
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
            Client(local) as client:
        with pytest.raises(ClusterError, match=f"{local.scheduler_address}: the workers running one task kept dying"):
            list(cluster.map_in_order(client, os._exit, [(1,)]))


def test_a_tasks_own_error_is_raised_as_it_is():
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as local, Client(local) as client:
        with pytest.raises(ValueError, match="invalid literal"):
            list(cluster.map_in_order(client, int, [("x",)]))
