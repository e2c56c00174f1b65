"""The Prefect edge shared by every stage: cache keys from fingerprints, run ids, artifacts, progress.

The store is the source of truth. A stage's cache key is `<stage>-<fp12>-<token>`: when the store holds a
finished directory for the fingerprint, the token is the one recorded in its manifest, so Prefect finds the
result it persisted when that directory was made; when it does not (never made, or deleted), the token is
fresh, no cached result can match, and the task runs. A cache entry never stands in for files that are gone.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.assets import Asset, AssetProperties
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run as runtime_flow_run
from prefect.tasks import MaterializingTask
from prefect.transactions import get_transaction

from latentqa.config import EndpointConfig
from latentqa.decoder import encode_example
from latentqa.llm import LLM, Ledger, read_api_key
from latentqa.server import serving
from storage.manifest import Manifest
from storage.parquet import SPLIT, ActivationReader, read_table
from storage.requests import RequestCache, request_key
from storage.store import Store

_KEY = re.compile(r"^(?P<stage>[a-z_]+)-(?P<fp>[0-9a-f]{12})-(?P<token>[0-9a-z]+)$")


def stage_cache_policy(stage: str, fingerprint_of: Callable[[dict[str, Any]], str]) -> CacheKeyFnPolicy:
    def key_fn(_ctx: TaskRunContext, parameters: dict[str, Any]) -> str:
        fp = fingerprint_of(parameters)
        store: Store = parameters["store"]
        done = store.finished(stage, fp)
        token = (done.cache_token or "none") if done else uuid.uuid4().hex[:12]
        return f"{stage}-{fp[:12]}-{token}"

    return CacheKeyFnPolicy(cache_key_fn=key_fn)


def cache_token() -> str | None:
    """The token of the cache key this task run will be stored under (None outside Prefect)."""
    txn = get_transaction()
    match = _KEY.match(txn.key) if txn and txn.key else None
    return match["token"] if match else None


def flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def provenance() -> dict[str, str | None]:
    """Keyword arguments for StageDir.commit that tie the directory to this Prefect run."""
    return {"flow_run_id": flow_run_id(), "cache_token": cache_token()}


class StageTask(MaterializingTask):
    """A stage task that declares its output directory as a Prefect asset when called.

    The asset key is the stage directory's file:// URI, known only once the inputs are: so each call binds its
    arguments, fingerprints them, and runs a copy of the task that materialises `file://<root>/<stage>/<fp12>`
    with the input manifests' directories as `asset_deps`. Materialisation events then carry the lineage.
    """

    def __init__(self, fn: Callable, *, stage: str, fingerprint_of: Callable[[dict[str, Any]], str], **options):
        super().__init__(fn=fn, assets=[], name=stage,
                         cache_policy=stage_cache_policy(stage, fingerprint_of), result_serializer="json", **options)
        self.stage, self.fingerprint_of = stage, fingerprint_of

    def _bind(self, args, kwargs) -> tuple[dict[str, Any], Store, str]:
        """(the call's arguments by name, its store, its fingerprint)."""
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments, bound.arguments["store"], self.fingerprint_of(bound.arguments)

    def finished(self, *args, **kwargs) -> Manifest | None:
        """The manifest a call with these arguments would return at once, or None; runs nothing. Flows look up
        a stage's output through this, never by rebuilding its fingerprint's parameter names."""
        _, store, fp = self._bind(args, kwargs)
        return store.finished(self.stage, fp)

    def __call__(self, *args, **kwargs):
        params, store, fp = self._bind(args, kwargs)
        deps = [stage_asset(store, m.stage, m.fingerprint) for m in params.values() if isinstance(m, Manifest)]
        return self.with_options(assets=[stage_asset(store, self.stage, fp)], asset_deps=deps)(*args, **kwargs)


def stage_task(stage: str, fingerprint_of: Callable[[dict[str, Any]], str], **options):
    """Decorator: `fn` becomes the cached, asset-materialising Prefect task of `stage`."""
    return lambda fn: StageTask(fn, stage=stage, fingerprint_of=fingerprint_of, **options)


def stage_asset(store: Store, stage: str, fp: str) -> Asset:
    path = store.stage_dir(stage, fp)
    key = "file://" + re.sub(r"[\s#?&%\"'<>\\\[\]{}|^`;]", "_", path.as_posix())  # characters Prefect refuses in keys
    return Asset(key=key, properties=AssetProperties(
        name=f"{store.dataset} {stage} {fp[:12]}", url=key,
        description=f"LatentQA {stage} output of dataset {store.dataset!r} (storage/PROTOCOL.md)"))


def fail_if_asked(stage: str) -> None:
    """Test-only fault: LATENTQA_TEST_FAIL=<stage>:<flag file> fails `stage` while the flag file exists, so an
    end-to-end test can make a deployed run fail and then retry it (the worker keeps its environment)."""
    spec = os.environ.get("LATENTQA_TEST_FAIL", "")
    target, _, flag = spec.partition(":")
    if target == stage and flag and Path(flag).exists():
        raise RuntimeError(f"{stage}: failing on purpose (LATENTQA_TEST_FAIL, flag {flag} exists)")


_LEDGERS: dict[str, Ledger] = {}


def run_ledger() -> Ledger:
    """The spend ledger of the current flow run: one cap for all its stages' clients (a fresh one outside a run)."""
    run_id = runtime_flow_run.id
    if run_id is None:
        return Ledger()
    return _LEDGERS.setdefault(run_id, Ledger())


@contextmanager
def endpoint_client(endpoint: EndpointConfig, store: Store) -> Iterator[LLM]:
    """The structured LLM client of `endpoint` (the project's own server when it has no base_url), with replies
    cached in <root>/requests.sqlite; the server stops and the cache closes on exit."""
    cache = RequestCache(store.root / "requests.sqlite")
    try:
        with serving(endpoint) as base_url:
            yield LLM(endpoint, base_url, read_api_key(endpoint, local=not endpoint.base_url), cache, request_key,
                      ledger=run_ledger())
    finally:
        cache.close()


def logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run, the `latentqa` logger outside (CLI, tests calling .fn)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("latentqa")


def in_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


# what each stage's artifacts are called in the UI: `<noun>-<dataset>`, one key per stage and dataset, so the
# Artifacts page lists a stage's versions over time
ARTIFACT_NOUNS = {"catalog": "controls", "import": "release", "synthesize": "synthesis", "extract": "activations",
                  "filter": "dataset", "train": "decoder", "evaluate": "evaluation", "steer": "steering"}


def artifact_key(stage: str, store: Store) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", store.dataset.lower()).strip("-") or "default"
    return f"{ARTIFACT_NOUNS.get(stage, stage.replace('_', '-'))}-{name}"


def publish(manifest: Manifest, store: Store, figures: dict[str, Any] | None = None) -> None:
    """One markdown and one table artifact per stage, both views of the manifest."""
    if not in_run():
        return
    key = artifact_key(manifest.stage, store)
    inputs = "\n".join(f"- {i.stage} `{i.fingerprint[:12]}`: [{i.dir}]({(store.root / i.dir).as_uri()})"
                       f" (artifact `{artifact_key(i.stage, store)}`)" for i in manifest.inputs) or "- none"
    counts = "\n".join(f"| {k} | {v} |" for k, v in sorted(manifest.counts.items()))
    files = "\n".join(f"| {f.path} | {f.bytes} | {f.rows if f.rows is not None else ''} |" for f in manifest.files)
    md = (f"# {manifest.stage} `{manifest.fp12}`\n\n"
          f"Dataset: `{store.dataset}`  \nDirectory: [{store.root / manifest.dir}]({(store.root / manifest.dir).as_uri()})  \n"
          f"Fingerprint: `{manifest.fingerprint}`  \n"
          f"Created: {manifest.created_at} in {manifest.elapsed_s:.1f} s\n\n## Inputs\n{inputs}\n\n"
          f"## Counts\n| count | value |\n|---|---|\n{counts}\n\n## Files\n| file | bytes | rows |\n|---|---|---|\n{files}\n\n"
          f"## Config\n```json\n{json.dumps(manifest.config, indent=2, sort_keys=True)}\n```\n")
    create_markdown_artifact(markdown=md, key=key, description=f"{manifest.stage} {manifest.fp12}")
    table = figures if figures is not None else {**manifest.counts, "elapsed_s": manifest.elapsed_s}
    create_table_artifact(table=[{"name": k, "value": v} for k, v in table.items()], key=f"{key}-table")


def publish_image(manifest: Manifest, store: Store, name: str, title: str) -> None:
    """A markdown artifact pointing at a PNG of the stage directory (the open-source UI shows links, not files)."""
    if not in_run():
        return
    path = store.path(manifest, name)
    create_markdown_artifact(markdown=f"# {title}\n\n[{path.name}]({path.as_uri()})  \n`{path}`\n",
                             key=f"{artifact_key(manifest.stage, store)}-{path.stem}", description=title)


class Progress:
    """Progress of a long stage: a terminal bar (when stderr is a terminal), a Prefect progress artifact inside
    a run, and a log line every 10%."""

    def __init__(self, total: int, description: str):
        from tqdm import tqdm

        self.total, self.done, self.description, self._logged = max(total, 1), 0, description, 0
        self.id = create_progress_artifact(0.0, description=description) if in_run() else None
        self.bar = tqdm(total=total, desc=description, disable=None, leave=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        percent = 100.0 * min(self.done, self.total) / self.total
        if self.id is not None:
            update_progress_artifact(self.id, progress=percent)
        if percent >= self._logged + 10 or self.done >= self.total:
            self._logged = int(percent // 10 * 10)
            logger().info("%s: %d/%d", self.description, self.done, self.total)
        if self.done >= self.total:
            self.bar.close()

def activation_reader(store: Store, acts: Manifest) -> ActivationReader:
    return ActivationReader(store.path(acts, f.path) for f in acts.files_matching("part-"))


def load_examples(store: Store, split: Manifest, reader: ActivationReader, name: str, tokenizer, ph_id: int,
                  layer: int, loss_on_ack: bool = False, limit: int | None = None):
    """(rows, decoder examples, activation views) for one split file; views share the Parquet buffers."""
    rows = read_table(store.path(split, name), SPLIT).to_pylist()[:limit]
    views = [reader.acts(r["dialog_id"], layer) for r in rows]
    examples = [encode_example(tokenizer, len(v), r["question"], r["answer"], ph_id, loss_on_ack)
                for r, v in zip(rows, views)]
    return rows, examples, views
