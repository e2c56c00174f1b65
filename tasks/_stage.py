"""A stage's protocol in one place: the `stage_task` decorator, cache keys from fingerprints, assets, provenance.

A stage module defines its identity (`fingerprint_of`) and a body that writes its files into an open stage
directory and returns what it made (`Made`). The decorator does the rest, the same way for every stage:
fingerprint the call's arguments, return the finished directory if there is one, the test fault, open
`<stage>/<fp12>.partial/`, run the body, commit (inputs: the Manifest arguments in order; config: every config
section argument in full), publish the artifacts (storage/PROTOCOL.md).

The store is the source of truth. A stage's cache key is `<stage>-<fp12>-<token>`: when the store holds a
finished directory for the fingerprint, the token is the one recorded in its manifest, so Prefect finds the
result it persisted when that directory was made; when it does not (never made, or deleted), the token is
fresh, no cached result can match, and the task runs. A cache entry never stands in for files that are gone.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from prefect.assets import Asset, AssetProperties
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import MaterializingTask
from prefect.transactions import get_transaction

from latentqa.config import EndpointConfig
from storage.manifest import Manifest
from storage.store import StageDir, Store
from tasks._ui import publish, publish_image

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
        deps = [stage_asset(store, m.stage, m.fingerprint) for m in manifests_in(params)]
        return self.with_options(assets=[stage_asset(store, self.stage, fp)], asset_deps=deps)(*args, **kwargs)


@dataclass
class Made:
    """What a stage body hands back: the manifest's counts, the rows of each table it wrote and its summary; for
    the UI, the figures of its table artifact (default: the counts) and a title per PNG it wrote."""

    counts: dict[str, int]
    rows: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] | None = None
    images: dict[str, str] = field(default_factory=dict)


def stage_task(stage: str, version: int, fingerprint_of: Callable[[dict[str, Any]], str], section: str | None = None,
               **options):
    """Decorator: `body(out, **arguments) -> Made` becomes the cached, asset-materialising Prefect task of `stage`,
    called with the arguments alone. `section`: the config section name of the body's `cfg` argument in the
    manifest (default: the stage's name)."""
    def wrap(body: Callable[..., Made]) -> StageTask:
        signature = inspect.signature(body)
        params = [p for name, p in signature.parameters.items() if name != "out"]
        public = signature.replace(parameters=params, return_annotation=Manifest)

        @functools.wraps(body)
        def run(*args, **kwargs) -> Manifest:
            bound = public.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments, store = bound.arguments, bound.arguments["store"]
            fp = fingerprint_of(arguments)
            if done := store.finished(stage, fp):
                return done
            fail_if_asked(stage)
            with store.open_stage(stage, fp) as out:
                made = body(out, **arguments)
                manifest = _commit(out, version, arguments, section or stage, made)
            publish(manifest, store, figures=made.figures)
            for image, title in made.images.items():
                publish_image(manifest, store, image, title)
            return manifest

        run.__signature__ = public
        return StageTask(run, stage=stage, fingerprint_of=fingerprint_of, **options)
    return wrap


def manifests_in(arguments: dict[str, Any]) -> list[Manifest]:
    """The upstream manifests of a call, in argument order: Manifest arguments, and the items of a list of them
    (the sweep reads every cell's evaluation)."""
    found = []
    for value in arguments.values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [m for m in items if isinstance(m, Manifest)]
    return found


def _commit(out: StageDir, version: int, arguments: dict[str, Any], section: str, made: Made) -> Manifest:
    """The manifest: every Manifest argument (or list item) an input; every config section argument dumped in full (an
    endpoint without its base_url, which can carry credentials), and every plain value argument as it is."""
    config = {}
    for name, value in arguments.items():
        if isinstance(value, BaseModel) and not isinstance(value, Manifest):
            exclude = {"base_url"} if isinstance(value, EndpointConfig) else None
            config[section if name == "cfg" else name] = value.model_dump(mode="json", exclude=exclude)
        elif isinstance(value, (str, int, float, bool)):
            config[name] = value
    return out.commit(version=version, inputs=manifests_in(arguments),
                      config=config, counts=made.counts, summary=made.summary, rows=made.rows, **provenance())


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
