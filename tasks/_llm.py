"""The LLM client a stage uses, with one spend ledger per flow run and replies cached in the store."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect.runtime import flow_run as runtime_flow_run

from latentqa.config import EndpointConfig
from latentqa.llm import LLM, Ledger, read_api_key
from latentqa.server import serving
from storage.requests import RequestCache, request_key
from storage.store import Store


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
