"""synthesize through the openai client against a real HTTP server; the API key never reaches anything written."""

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect import flow

from latentqa.config import CatalogConfig, EndpointConfig, SynthesizeConfig
from storage.manifest import Manifest
from storage.parquet import DIALOGS, QA, same_columns
from storage.store import Store
from tasks.catalog import load_catalog
from tasks.synthesize import synthesize
from tests.fault_server import FaultServer

pytestmark = pytest.mark.slow
SECRET = "sk-latentqa-test-SECRET-7f3a9c"


def reply_for(body: dict) -> dict:
    """A valid reply for whichever of the three synthesis steps the request is (2 answers, 2 pairs)."""
    if '"answers"' in body["messages"][-1]["content"]:
        return {"answers": ["A cheerful persona.", "Friendly and warm."]}
    if '"pairs"' in body["messages"][-1]["content"]:
        return {"pairs": [{"question": "If the user is sad, how will the assistant respond?", "answer": "Kindly."},
                          {"question": "If the user asks for help, what will it do?", "answer": "Help warmly."}]}
    return {"control_model": "Sure.", "stimulus_user": "Hi!", "stimulus_model": "Hello, friend!"}


@flow(name="synthesize-only")
def synth_flow(catalog: CatalogConfig, cfg: SynthesizeConfig, endpoint: EndpointConfig, root: str) -> Manifest:
    store = Store(root)
    return synthesize(cfg, endpoint, load_catalog(catalog, store), store)


def test_synthesize_writes_schema_tables_and_never_the_key(prefect_harness, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_LOCAL_STORAGE_PATH

    monkeypatch.setenv("LATENTQA_SECRET_KEY", SECRET)
    started = time.time() - 1
    with FaultServer(reply_for) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model_id="test-model", api_key_env="LATENTQA_SECRET_KEY",
                                  structured_output="json_object")
        catalog = CatalogConfig(families=["persona", "goal", "scenario"], n_controls=6)
        state = synth_flow(catalog, SynthesizeConfig(n_description=2, n_implication=2), endpoint,
                           str(tmp_path / "store"), return_state=True)
        assert state.is_completed(), state.message
        prompts = [b["messages"][-1]["content"] for b in server.bodies]
    assert server.auth_headers and all(h == f"Bearer {SECRET}" for h in server.auth_headers)  # the key was used...
    manifest, store = state.result(), Store(tmp_path / "store")
    assert manifest.counts["n_dialogs"] == 6 and manifest.counts["n_qa"] == 24
    # scenarios are retold and questioned extractively; personas and goals are instructions
    assert sum("has this situation in mind" in p for p in prompts) == 2 * 3
    assert sum("has been given this instruction" in p for p in prompts) == 3 * 4
    assert sorted(set(pq.read_table(store.path(manifest, "qa.parquet")).column("kind").to_pylist())) == \
        ["description", "implication"]
    assert same_columns(pq.read_schema(store.path(manifest, "dialogs.parquet")), DIALOGS)
    qa = pq.read_table(store.path(manifest, "qa.parquet"))
    assert same_columns(qa.schema, QA)
    assert set(qa.column("dialog_id").to_pylist()) == set(pq.read_table(store.path(manifest, "dialogs.parquet"))
                                                          .column("dialog_id").to_pylist())

    db = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[-1])
    written = [p for root in (store.root, Path(PREFECT_LOCAL_STORAGE_PATH.value())) for p in root.rglob("*")
               if p.is_file() and p.stat().st_mtime >= started]
    written += list(db.parent.glob(db.name + "*"))  # the Prefect database: parameters, logs, states
    assert len(written) > 5
    for path in written:  # ...and is in no file, log, parameter, result or cache entry
        assert SECRET.encode() not in path.read_bytes(), path


def test_failures_are_accounted_for_with_reasons(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    def only_dialogs(body):  # the answers step always gets a reply that fails its schema
        return {"control_model": "Sure.", "stimulus_user": "Hi!", "stimulus_model": "Hello, friend!"}

    with FaultServer(only_dialogs) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model_id="m", structured_output="none")
        state = synth_flow(CatalogConfig(n_controls=3), SynthesizeConfig(n_description=2, n_implication=0,
                                                                          max_fail_fraction=1.0),
                           endpoint, str(tmp_path / "store"), return_state=True)
    manifest = state.result()
    assert manifest.counts["n_dialogs"] == 0
    assert manifest.counts["failed_answers_schema_invalid"] == 3
    rejected = pq.read_table(Store(tmp_path / "store").path(manifest, "rejected.parquet")).to_pylist()
    assert {r["step"] for r in rejected} == {"answers"} and len({r["label"] for r in rejected}) == 3


def test_too_many_failures_fail_the_stage(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with FaultServer({"wrong": 1}) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model_id="m")
        state = synth_flow(CatalogConfig(n_controls=2), SynthesizeConfig(n_description=1, n_implication=0), endpoint,
                           str(tmp_path / "store"), return_state=True)
    assert state.is_failed() and "max_fail_fraction" in state.message
    assert not list((tmp_path / "store" / "synthesize").glob("*/manifest.json"))


KILL_SCRIPT = """
import sys
from latentqa.config import EndpointConfig, SynthesizeConfig
from storage.store import Store
from tasks.synthesize import synthesize
store = Store(sys.argv[1])
synthesize.fn(SynthesizeConfig.model_validate_json(sys.argv[2]), EndpointConfig.model_validate_json(sys.argv[3]),
              store.finished("catalog", sys.argv[4]), store)
"""


def test_sigkill_then_rerun_sends_only_missing_requests(tmp_path, monkeypatch):
    import sqlite3

    from tasks.catalog import load_catalog as catalog_task
    from tests.tasks.helpers import run_and_kill

    monkeypatch.setenv("OPENAI_API_KEY", "test")
    cfg = SynthesizeConfig(n_description=2, n_implication=2)
    with FaultServer(reply_for, latency_s=0.3) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model_id="m", concurrency=1)
        ref_store, kill_store = Store(tmp_path / "ref"), Store(tmp_path / "killed")
        ref = synthesize.fn(cfg, endpoint, catalog_task.fn(CatalogConfig(n_controls=6), ref_store), ref_store)
        controls = catalog_task.fn(CatalogConfig(n_controls=6), kill_store)
        db = kill_store.root / "requests.sqlite"

        def stored_replies() -> int:
            try:  # the file exists a moment before its tables do
                return sqlite3.connect(db).execute("SELECT count(*) FROM responses").fetchone()[0] if db.exists() else 0
            except sqlite3.OperationalError:
                return 0

        run_and_kill([KILL_SCRIPT, str(kill_store.root), cfg.model_dump_json(), endpoint.model_dump_json(),
                      controls.fingerprint], ready=lambda: stored_replies() >= 4, timeout_s=60)
        time.sleep(0.6)  # the killed client's request in flight still reaches the server; let it land first
        stored = stored_replies()
        assert kill_store.finished("synthesize", ref.fingerprint) is None
        before = server.requests
        resumed = synthesize.fn(cfg, endpoint, controls, kill_store)
        sent = server.requests - before
    assert sent == ref.counts["requests_sent"] - stored == resumed.counts["requests_sent"]
    assert resumed.counts["requests_cached"] == stored
    for name in ("dialogs.parquet", "qa.parquet"):
        assert pq.read_table(kill_store.path(resumed, name)).equals(pq.read_table(ref_store.path(ref, name)))
