"""The project as users operate it: a real `prefect server start`, prefect.yaml deployed, a process worker.

One server for the module (`latentqa up`, as `make serve` runs it): full-pipeline on the tiny config completes,
a second run is all Cached, a run made to fail in train (LATENTQA_TEST_FAIL, read by the worker's flow runs)
and retried with `prefect flow-run retry` re-runs only train and evaluate. tests/flows/test_ui.py opens the same
server's UI in a browser.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from app.operate import down, prefect_env, up
from tests.flows.helpers import tiny_config

pytestmark = pytest.mark.slow
STAGES = {"catalog", "synthesize", "extract", "filter", "train", "evaluate"}
DEPLOYMENTS = {"regenerate-dataset", "train-decoder", "evaluate", "full-pipeline", "steer", "scaling-sweep"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A running local deployment and the calls a test makes against its API."""

    def __init__(self, services, home, flag):
        self.services, self.home, self.fail_flag = services, home, flag

    def client(self):
        return get_client(sync_client=True)

    def settings(self):
        return temporary_settings({PREFECT_API_URL: self.services.api_url})

    def run(self, deployment: str, parameters: dict, timeout_s: float = 600):
        with self.settings(), self.client() as client:
            dep = client.read_deployment_by_name(deployment)
            run = client.create_flow_run_from_deployment(dep.id, parameters=parameters)
        return self.wait(run.id, timeout_s)

    def wait(self, flow_run_id: UUID, timeout_s: float = 600, after_attempt: int = 0):
        deadline = time.monotonic() + timeout_s
        with self.settings(), self.client() as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(flow_run_id)
                if run.state.is_final() and run.run_count > after_attempt:
                    return run
                time.sleep(2)
        raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout_s} s; worker log:\n"
                           + (self.home / "worker.log").read_text()[-4000:])

    def task_states(self, flow_run_id: UUID) -> dict[str, str]:
        """{task name: state of its newest task run} of one flow run."""
        deadline = time.monotonic() + 60  # task states reach the server through events, after the flow run's
        with self.settings(), self.client() as client:
            while True:
                runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
                if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        newest: dict[str, object] = {}
        for r in sorted(runs, key=lambda r: r.created):
            newest[r.name.rsplit("-", 1)[0]] = r  # run names are "<task>-<suffix>"
        return {name: r.state.name for name, r in newest.items() if name in STAGES}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    flag = home / "fail-train"
    try:
        services = up(home, port=_free_port(), extra_env={"LATENTQA_TEST_FAIL": f"train:{flag}"}, say=lambda m: None)
    except Exception:
        down(home, say=lambda m: None)
        raise
    yield Served(services, home, flag)
    down(home, say=lambda m: None)


@pytest.fixture(scope="module")
def first(served, tiny_model_dir, tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("deployed-store"), tiny_model_dir)
    run = served.run("latentqa-pipeline/full-pipeline", {"cfg": cfg.model_dump(mode="json")})
    return cfg, run


def test_every_deployment_is_there_with_its_pool_and_limits(served):
    with served.settings(), served.client() as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert set(deployments) >= DEPLOYMENTS
    assert {d.work_pool_name for d in deployments.values()} == {"latentqa"}
    regenerate = deployments["regenerate-dataset"]
    assert [(s.schedule.cron, s.active) for s in regenerate.schedules] == [("0 3 * * *", False)]  # nightly, off
    assert regenerate.global_concurrency_limit.limit == 1 and deployments["full-pipeline"].global_concurrency_limit.limit == 1
    assert all(d.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
               for d in deployments.values())


def test_deployed_pipeline_completes(served, first):
    _, run = first
    assert run.state.is_completed(), run.state.message
    assert served.task_states(run.id) == {s: "Completed" for s in STAGES}


def test_second_deployed_run_is_all_cached(served, first):
    cfg, _ = first
    run = served.run("latentqa-pipeline/full-pipeline", {"cfg": cfg.model_dump(mode="json")})
    assert run.state.is_completed(), run.state.message
    assert served.task_states(run.id) == {s: "Cached" for s in STAGES}


def test_deployed_sweep_reuses_the_pipelines_decoder(served, first):
    cfg, _ = first
    sweep = cfg.model_validate({**cfg.model_dump(mode="json"), "sweep": {"fractions": [1.0]}})
    run = served.run("scaling-sweep/scaling-sweep", {"cfg": sweep.model_dump(mode="json")})
    assert run.state.is_completed(), run.state.message
    states = served.task_states(run.id)  # the one cell is the full-pipeline's decoder and evaluation
    assert states == {s: "Cached" for s in STAGES}
    assert list((cfg.storage.root / "sweep").glob("*/sweep.parquet"))


def test_failed_run_retried_reruns_only_train_and_evaluate(served, first, tiny_model_dir):
    cfg, _ = first
    changed = tiny_config(cfg.storage.root, tiny_model_dir, lr=7e-4)  # so that train has work to do
    served.fail_flag.write_text("fail train once")
    run = served.run("latentqa-pipeline/full-pipeline", {"cfg": changed.model_dump(mode="json")})
    assert run.state.is_failed()
    states = served.task_states(run.id)
    assert states["train"] == "Failed" and "evaluate" not in states
    assert {states[s] for s in STAGES - {"train", "evaluate"}} == {"Cached"}

    served.fail_flag.unlink()
    env = prefect_env(served.home, served.services.port)
    retry = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(run.id)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    again = served.wait(run.id, after_attempt=run.run_count)
    assert again.state.is_completed(), again.state.message
    states = served.task_states(run.id)
    assert {s for s, name in states.items() if name != "Cached"} == {"train", "evaluate"}
    assert states["train"] == states["evaluate"] == "Completed"


def _browser(profile, extra: list[str] = ()):
    """Headless Chromium from Debian's packages, or a skip that says why."""
    import shutil

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                "--window-size=1600,1000", f"--user-data-dir={profile}", *extra):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _click_tab(browser, label: str) -> None:
    matches = browser.find_elements("xpath", f"//*[normalize-space(.)='{label}']")
    assert matches, f"no {label!r} tab on the page"
    matches[-1].click()  # the innermost element with exactly that text


def _wait_for_text(browser, texts, timeout_s=60) -> str:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        body = browser.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(1)
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"the page never showed {missing}; it showed:\n{body[:3000]}")


def test_ui_shows_the_flow_run_graph_and_stage_artifacts(served, first, tmp_path, request):
    _, run = first
    with served.settings(), served.client() as client:
        artifacts = client.read_artifacts()
        graph = client._client.get(f"/flow_runs/{run.id}/graph-v2").json()  # what the UI draws the graph from
    keys = {a.key for a in artifacts if a.key and a.flow_run_id == run.id}
    expected = {"controls-demo", "synthesis-demo", "activations-demo", "dataset-demo", "decoder-demo", "evaluation-demo"}
    assert expected <= keys
    assert {n["label"].rsplit("-", 1)[0] for _, n in graph["nodes"]} >= STAGES

    browser = _browser(tmp_path / "profile")
    shots = Path(request.config.getoption("--screenshots") or tmp_path)
    try:
        browser.get(f"{served.services.ui_url}/runs/flow-run/{run.id}")
        _wait_for_text(browser, [run.name, "Completed"])
        time.sleep(3)  # the graph canvas draws after the run loads
        canvases = browser.find_elements("css selector", "canvas")
        assert canvases and canvases[0].size["height"] > 100, "no flow-run graph canvas on the page"
        browser.save_screenshot(str(shots / "flow-run-graph.png"))
        _click_tab(browser, "Task Runs")
        _wait_for_text(browser, sorted(STAGES))
        _click_tab(browser, "Artifacts")
        _wait_for_text(browser, sorted(expected))
        browser.save_screenshot(str(shots / "flow-run-artifacts.png"))
    finally:
        browser.quit()


def test_materialisation_events_carry_the_lineage(served, first):
    cfg, run = first
    root = cfg.storage.root.resolve().as_posix()
    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline:  # events reach the server asynchronously
        with served.settings(), served.client() as client:
            body = {"filter": {"event": {"name": ["prefect.asset.materialization.succeeded"]},
                               "resource": {"id_prefix": [f"file://{root}/"]},
                               "occurred": {"since": run.start_time.isoformat()}}, "limit": 50}
            events = client._client.post("/events/filter", json=body).json()["events"]
        if len({e["resource"]["prefect.resource.id"] for e in events}) >= len(STAGES):
            break
        time.sleep(2)
    by_asset = {e["resource"]["prefect.resource.id"]: e for e in events}
    stages = {key.rsplit("/", 2)[-2]: key for key in by_asset}
    stages.pop("sweep", None)  # the deployed sweep's own asset, in the same store
    assert set(stages) == STAGES
    upstream = {r["prefect.resource.id"] for r in by_asset[stages["filter"]]["related"]
                if r.get("prefect.resource.role") == "asset"}
    # what filter read, and nothing downstream of it (Prefect may add transitive upstream assets it inferred)
    assert {stages["synthesize"], stages["extract"]} <= upstream <= {stages[s] for s in ("catalog", "synthesize", "extract")}
    evaluate_deps = {r["prefect.resource.id"] for r in by_asset[stages["evaluate"]]["related"]
                     if r.get("prefect.resource.role") == "asset"}
    assert {stages["train"], stages["filter"], stages["extract"]} <= evaluate_deps and stages["evaluate"] not in evaluate_deps
