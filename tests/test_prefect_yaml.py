"""prefect.yaml stays in step with the code: entrypoints are flows, the default cfg is configs/demo.yaml."""

import importlib
from pathlib import Path

import yaml

from latentqa.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_points_at_a_flow_and_runs_on_the_pool():
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in project["deployments"]}
    assert {"regenerate-dataset", "train-decoder", "evaluate", "full-pipeline", "steer", "scaling-sweep"} <= names
    for d in project["deployments"]:
        path, fn = d["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), fn)
        assert hasattr(flow, "deploy"), f"{d['entrypoint']} is not a Prefect flow"
        assert d["work_pool"]["name"] == "latentqa"
        assert set(d["parameters"]) <= set(flow.parameters.properties), d["name"]


def test_the_deployments_default_cfg_is_the_demo_config():
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    demo = load_config(ROOT / "configs" / "demo.yaml")
    for d in project["deployments"]:
        assert parse_config(d["parameters"]["cfg"]) == demo, f"{d['name']}: cfg differs from configs/demo.yaml"
