"""The hostile-input corpus: bad inputs a user can hand `latentqa run`, each with the fragment its error must show.

A case is a config (YAML text, or a dict merged over a store root), the files it points to, extra CLI
arguments, and the expected fragment of the message. `{dir}` in any string is the case's own folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # a fragment of the error message (case-sensitive)
    config: dict | str | bytes = field(default_factory=dict)  # a dict is merged into the base config; text or bytes are the file
    files: dict[str, str | bytes] = field(default_factory=dict)  # relative path -> text (or bytes, as they are)
    args: tuple[str, ...] = ()


def _release(system: str | None = None, qa: str | None = None, **extra) -> dict:
    """A release folder with one training behaviour file and a qa.json, either of them replaceable."""
    ok_system = json.dumps([{"label": "persona-sea-pirate", "system": "Talk like a pirate."}])
    files = {"rel/data/train/system.json": ok_system if system is None else system,
             "rel/data/eval/qa.json": json.dumps({"persona-sea-pirate": [["Who?", "A pirate."]]}) if qa is None else qa}
    config = {"release": {"source": "{dir}/rel", "files": [{"path": "data/train/system.json"}],
                          "qa": ["data/eval/qa.json"], **extra}}
    return {"config": config, "files": files}


def _catalog(text: str) -> dict:
    return {"config": {"catalog": {"paths": ["{dir}/cat.yaml"]}}, "files": {"cat.yaml": text}}


CASES = [
    # configs: syntax
    Case("yaml syntax", "config.yaml:3:1: not valid YAML", "train:\n  lr: [1e-4\n"),
    Case("yaml tab indentation", "config.yaml:2:1: not valid YAML", "train:\n\tlr: 1e-4\n"),
    Case("yaml top level is a list", "top level must be a mapping of sections", "- train\n- lr\n"),
    Case("section that is not a mapping", "train: Input should be a valid dictionary", "train: 5\n"),
    # configs: unknown keys, types, ranges
    Case("unknown section", "trian: Extra inputs are not permitted", {"trian": {"lr": 1e-4}}),
    Case("unknown field", "train.lrr: Extra inputs are not permitted", {"train": {"lrr": 1e-4}}),
    Case("string for a float", "train.lr", {"train": {"lr": "fast"}}),
    Case("negative learning rate", "train.lr", {"train": {"lr": -1.0}}),
    Case("zero batch size", "train.batch_size", {"train": {"batch_size": 0}}),
    Case("eval fraction above one", "filter.eval_fraction", {"filter": {"eval_fraction": 1.5}}),
    Case("negative temperature", "synthesize.temperature", {"synthesize": {"temperature": -0.5}}),
    Case("unknown evaluation task", "evaluate.tasks", {"evaluate": {"tasks": ["telepathy"]}}),
    Case("unknown extract variant", "extract.variant", {"extract": {"variant": "sideways"}}),
    Case("unknown dtype", "model.dtype", {"model": {"dtype": "float13"}}),
    Case("processes neither int nor auto", "train.processes", {"train": {"processes": "many"}}),
    Case("no families", "catalog.families=[] selects no controls", {"catalog": {"families": []}}),
    Case("unknown family", "catalog.families", {"catalog": {"families": ["dragons"]}}),
    # configs: impossible combinations, checked against the model and the environment
    Case("read layer beyond the model", "extract.read_layers=99 is beyond the model's depth", {"extract": {"read_layers": [99]}}),
    Case("write layer beyond the model", "train.write_layer=99 is beyond the model's depth", {"train": {"write_layer": 99}}),
    Case("model folder without config.json", "has no config.json", {"model": {"name": "{dir}/empty-model"}},
         files={"empty-model/README": "no weights here"}),
    Case("remote endpoint without its key", "LATENTQA_HOSTILE_UNSET_KEY",
         {"endpoint": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "LATENTQA_HOSTILE_UNSET_KEY"}}),
    Case("hidden persona file missing", "nope.parquet not found", {"evaluate": {"hidden_persona_file": "{dir}/nope.parquet"}}),
    Case("hidden persona file not parquet", "not a Parquet table",
         {"evaluate": {"hidden_persona_file": "{dir}/personas.parquet"}}, files={"personas.parquet": "label,text\n"}),
    # CLI overrides
    Case("--set without a value", "section.field=value", {}, args=("--set", "train.lr")),
    Case("--set of an unknown field", "train.nonsense: Extra inputs are not permitted", {}, args=("--set", "train.nonsense=1")),
    Case("--set of a bad type", "train.epochs", {}, args=("--set", "train.epochs=many")),
    # SQL rules
    Case("sql syntax error", "filter.keep_where.short: 'answer LIKE' is not a valid condition", {"filter": {"keep_where": {"short": "answer LIKE"}}}),
    Case("sql statement instead of a condition", "is not a valid condition", {"filter": {"keep_where": {"x": "1=1; DROP TABLE base"}}}),
    Case("sql reading a file", "Permission Error",
         {"filter": {"keep_where": {"x": "answer IN (SELECT * FROM read_csv('/etc/passwd'))"}}}),
    Case("sql unknown column", "Referenced column \"no_such_column\" not found", {"filter": {"keep_where": {"x": "no_such_column > 3"}}}),
    # catalog files
    Case("catalog file missing", "control catalog file(s) not found", {"catalog": {"paths": ["{dir}/missing.yaml"]}}),
    Case("catalog not yaml", "cat.yaml:2:1: not valid YAML", **_catalog("family: [unclosed\n")),
    Case("catalog not a mapping", "expected a mapping", **_catalog("- persona\n")),
    Case("catalog unknown family", "family must be one of", **_catalog("family: dragon\ncategories: {}\n")),
    Case("catalog category not a mapping", "must map slug -> control text",
         **_catalog("family: persona\ncategories:\n  sea: [a, b]\n")),
    Case("catalog empty control text", "sea/pirate has no text",
         **_catalog("family: persona\ncategories:\n  sea:\n    pirate: ''\n")),
    # LatentQA release folders
    Case("release folder missing", "release file(s) not found", {"release": {"source": "{dir}/nowhere",
                                                           "files": [{"path": "data/train/system.json"}]}}),
    Case("release behaviour file not json", "system.json: not valid JSON", **_release(system="[{")),
    Case("release behaviour file not a list", "system.json: expected a non-empty JSON list", **_release(system=json.dumps({"label": "x"}))),
    Case("release item without label", "system.json: item 0: label None is not a release label", **_release(system=json.dumps([{"system": "Be a cat."}]))),
    Case("release label of an unknown family", "label 'dragon-sea-x' is not a release label",
         **_release(system=json.dumps([{"label": "dragon-sea-x", "system": "Be a dragon."}]))),
    Case("release empty system prompt", "item 0 (persona-sea-x): field 'system' is not a non-empty string",
         **_release(system=json.dumps([{"label": "persona-sea-x", "system": "  "}]))),
    Case("release qa not json", "qa.json: not valid JSON", **_release(qa="{]")),
    Case("release qa of the wrong shape", "persona-sea-pirate: expected a non-empty list of [question, answer] pairs", **_release(qa=json.dumps({"persona-sea-pirate": "yes"}))),
    # steering control files
    Case("steering control missing", "missing-control.yaml' is not a builtin control", {"steer": {"control": "{dir}/missing-control.yaml"}}),
    Case("steering control not yaml", "control.yaml: not YAML/JSON", {"steer": {"control": "{dir}/control.yaml"}},
         files={"control.yaml": "pairs: [[unclosed\n"}),
    Case("steering control without pairs", "control.yaml: expected {pairs: [[question, answer], ...]}", {"steer": {"control": "{dir}/control.yaml"}},
         files={"control.yaml": "pairs: []\n"}),
    Case("steering pair of three", "control.yaml: expected {pairs: [[question, answer], ...]}", {"steer": {"control": "{dir}/control.yaml"}},
         files={"control.yaml": "pairs: [[q, a, extra]]\n"}),
    Case("steering unknown persona", "no persona 'persona-nowhere-nobody' in the builtin catalog", {"steer": {"control": "persona:persona-nowhere-nobody"}}),
    # second hardening round (issue 32)
    Case("--set malformed value", "--set 'train.lr=[1e-4': the value is not valid YAML", {}, args=("--set", "train.lr=[1e-4")),
    Case("--set tab in the value", "the value is not valid YAML", {}, args=("--set", "train.lr=\t1e-4")),
    Case("--set a field of the name", "name is a value, not a section", {}, args=("--set", "name.x=1")),
    Case("--set an unknown section", "no config section 'trian'", {}, args=("--set", "trian.lr=1")),
    Case("--set a name that is no file name", "name: String should match pattern", {}, args=("--set", "name=a/b")),
    Case("spend cap without prices", "every request would cost $0", {"endpoint": {"max_cost_usd": 0.01}}),
    Case("boolean for a layer", "read_layers: expected a number, got the boolean", {"extract": {"read_layers": [True]}}),
    Case("boolean for a count", "batch_size: expected a number, got the boolean", {"train": {"batch_size": True}}),
    Case("duplicate yaml key", "duplicate key 'lr'", "train:\n  lr: 1.0e-4\n  lr: 2.0e-4\n"),
    Case("config not utf-8", "config.yaml: not UTF-8 text", b"train:\n  lr: \xff\n"),
    Case("empty config file", "config.yaml is empty", ""),
    Case("storage root is a file", "is a file, not a folder", {"storage": {"root": "{dir}/afile/store"}}, files={"afile": "x"}),
    Case("release label missing from its qa.json", "1 of its 2 labels have no pairs in data/eval/qa.json",
         **_release(system=json.dumps([{"label": f"persona-sea-{who}", "system": f"Talk like a {who}.",
                                        "stimulus_user": "Hi."} for who in ("pirate", "captain")]))),
    Case("release control text too long", "more than 8,000: not a prompt",
         **_release(system=json.dumps([{"label": "persona-sea-pirate", "system": "Arr! " * 60_000,
                                        "stimulus_user": "Hi."}]))),
    Case("steering control not utf-8", "control.yaml: not UTF-8 text", {"steer": {"control": "{dir}/control.yaml"}},
         files={"control.yaml": b"pairs: [[q, \xff]]\n"}),
    Case("sql that never ends", "ran past 5 s and was stopped",
         {"filter": {"keep_where": {"x": "(SELECT count(*) FROM range(100000000000000)) > 0"}}}),
    Case("sql that comments out the stage's own", "is not a valid condition", {"filter": {"keep_where": {"x": "true) --"}}}),
    Case("dataset name with a path", "name: String should match pattern", {"name": "../elsewhere"}),
]


def materialize(case: Case, folder: Path) -> list[str]:
    """Write the case's files and config under `folder`; the argv of `latentqa run` on them."""
    def fill(obj):
        if isinstance(obj, str):
            return obj.replace("{dir}", str(folder))
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        return obj

    for rel, text in case.files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (folder / rel).write_bytes(text)
        else:
            (folder / rel).write_text(fill(text))
    config = folder / "config.yaml"
    if isinstance(case.config, bytes):
        config.write_bytes(case.config)
    elif isinstance(case.config, str):
        config.write_text(case.config)
    else:
        config.write_text(yaml.safe_dump({"storage": {"root": str(folder / "store")}, **fill(case.config)}))
    return ["run", "--config", str(config), *case.args]
