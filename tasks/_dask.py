"""Running stage parts on a Dask cluster through prefect-dask.

No address: a LocalCluster of n worker processes (one thread each) is started for the stage and closed after.
With CUDA, each LocalCluster worker offers one `GPU` resource and every part asks for one, so a worker runs one
part at a time on its own device; a remote cluster's workers must be started with `--resources GPU=1`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch


@contextmanager
def dask_runner(address: str | None, n_workers: int):
    from prefect_dask import DaskTaskRunner

    if address:
        runner = DaskTaskRunner(address=address)
    else:
        resources = {"GPU": 1} if torch.cuda.is_available() else None
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                                                "resources": resources, "dashboard_address": None})
    with runner:
        yield runner


def gpu_annotation():
    if not torch.cuda.is_available():
        return nullcontext()
    import dask

    return dask.annotate(resources={"GPU": 1})


def worker_device(device: str) -> str:
    """On a Dask worker of a multi-GPU machine, spread workers over the devices by worker number."""
    if device != "auto" or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else device
