"""scaling-sweep: one decoder per (model, share of the training labels), each evaluated alike, then one table
and one plot over them all (LatentQA's "scales with data and model size").

The dataset stages are the run's own and cached (the import is shared by every model; each model extracts and
filters once); a cell adds only a train and an evaluate directory, cached like any other, so a sweep that was
killed resumes with its finished cells Cached. Cells run one after another, or `sweep.parallel` at a time in a
process pool or on Dask (`sweep.runner`).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from latentqa.config import RunConfig, SweepConfig
from latentqa.preflight import check_sweep
from latentqa.sweep import cell_train
from flows.dataset import build_dataset
from flows.organism import organism_for
from storage.datasets import lease
from storage.manifest import Manifest
from storage.store import Store
from tasks.evaluate import evaluate
from tasks.sweep import sweep
from tasks.train import train


@task(name="sweep-cell", cache_policy=NO_CACHE, persist_result=False)
def sweep_cell(run: RunConfig, fraction: float, chain: dict[str, Manifest], store: Store) -> Manifest:
    """Train on a nested share of the training labels, then evaluate: two cached stages (the model's organism,
    when the organism task is evaluated, was made before the cells and is found cached here)."""
    decoder = train(cell_train(run, fraction), run.model, chain["filter"], chain["extract"], store)
    return evaluate(run.evaluate, run.model, decoder, chain["filter"], chain["extract"], chain["synthesize"], store,
                    run.endpoint, organism_for(run, store))


@contextmanager
def cell_runner(cfg: SweepConfig):
    """None (cells in this process, in order), or a task runner for `parallel` cells at a time."""
    if cfg.runner == "local":
        yield None
    elif cfg.runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        with ProcessPoolTaskRunner(max_workers=cfg.parallel) as runner:
            yield runner
    else:
        from tasks._dask import dask_runner

        with dask_runner(cfg.dask_address, cfg.parallel) as runner:
            yield runner


def run_cells(cfg: SweepConfig, cells: list[tuple[RunConfig, float, dict[str, Manifest]]], store: Store) -> list[Manifest]:
    """Every cell's evaluation, in the order given."""
    with cell_runner(cfg) as runner:
        if runner is None:
            return [sweep_cell(run, fraction, chain, store) for run, fraction, chain in cells]
        # the largest shares first: the longest cells start early and the small ones fill in behind them
        order = sorted(range(len(cells)), key=lambda i: -cells[i][1])
        futures = {i: runner.submit(sweep_cell, parameters={"run": cells[i][0], "fraction": cells[i][1],
                                                             "chain": cells[i][2], "store": store}) for i in order}
        return [futures[i].result() for i in range(len(cells))]


@flow(name="scaling-sweep")
def scaling_sweep(cfg: RunConfig = RunConfig()) -> Manifest:  # noqa: B008
    runs = check_sweep(cfg)  # every model's layers and inputs, before any stage
    store = Store(cfg.storage.root, cfg.name)
    chains = [build_dataset(run, store) for run in runs]
    for run in runs:  # each model's organism once, before cells that may run in parallel share it
        organism_for(run, store)
    cells = [(run, fraction, chain) for run, chain in zip(runs, chains) for fraction in cfg.sweep.fractions]
    with ExitStack() as held:
        for chain in chains:
            held.enter_context(lease(store, cfg.name, chain["filter"].fingerprint))
        evaluations = run_cells(cfg.sweep, cells, store)
        return sweep(cfg.sweep.model_copy(update={"models": [run.model.name for run in runs]}), evaluations, store)
