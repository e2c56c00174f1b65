"""PROTOCOL.md's fingerprint table says what each stage hashes; this checks it against what each stage does hash.

Each stage's fingerprint_of is called with every optional input switched on (an LLM-generated catalog, a judge,
a hidden-persona file, a steering control file) while `fingerprint` is recorded, and the config classes,
file hashes and upstream stages it received are compared with the table's row.
"""

import importlib
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from latentqa.config import (CatalogConfig, EndpointConfig, EvaluateConfig, ExtractConfig, FilterConfig, ModelConfig,
                             OrganismConfig, ReleaseConfig, ReleaseFile, SteerConfig, SweepConfig, SynthesizeConfig,
                             TrainConfig)
from storage.store import StoreError

PROTOCOL = Path(__file__).resolve().parents[2] / "storage" / "PROTOCOL.md"
MODULES = {"catalog": "tasks.catalog", "synthesize": "tasks.synthesize", "import": "tasks.import_release",
           "extract": "tasks.extract", "filter": "tasks.filter", "train": "tasks.train", "evaluate": "tasks.evaluate",
           "steer": "tasks.steer", "sweep": "tasks.sweep", "organism": "tasks.organism"}


def table() -> dict[str, tuple[str, str]]:
    """{stage: (sections cell, inputs cell)} from the table under "## Fingerprints"."""
    text = PROTOCOL.read_text().split("## Fingerprints", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): (cells[1].strip(), cells[2].strip()) for cells in rows[1:]}


def params(stage: str, tmp: Path, model_dir: Path) -> dict:
    """Inputs of `stage` with every optional section on; upstream manifests stand in as {fingerprint: stage}."""
    up = {name: SimpleNamespace(fingerprint=name) for name in MODULES}
    endpoint, model = EndpointConfig(base_url="http://127.0.0.1:9", model_id="m"), ModelConfig(name=str(model_dir))
    personas, control, release = tmp / "personas.csv", tmp / "control.yaml", tmp / "release"
    personas.write_text("label,text\npersona-a-b,Talk like a pirate.\n")
    control.write_text("pairs: [[q, a]]\n")
    (release / "data").mkdir(parents=True)
    for name in ("s.json", "qa.json"):
        (release / "data" / name).write_text("[]")
    return {
        "catalog": {"cfg": CatalogConfig(generate_per_category=1), "endpoint": endpoint},
        "synthesize": {"cfg": SynthesizeConfig(), "endpoint": endpoint, "controls": up["catalog"]},
        "import": {"cfg": ReleaseConfig(source=release, files=[ReleaseFile(path="data/s.json")], qa=["data/qa.json"])},
        "extract": {"cfg": ExtractConfig(), "model": model, "dialogs": up["synthesize"]},
        "filter": {"cfg": FilterConfig(), "qa": up["synthesize"], "acts": up["extract"]},
        "train": {"cfg": TrainConfig(), "model": model, "split": up["filter"], "acts": up["extract"]},
        "evaluate": {"cfg": EvaluateConfig(judge=True, hidden_persona_file=personas), "model": model,
                     "endpoint": endpoint, "decoder": up["train"], "split": up["filter"], "acts": up["extract"],
                     "synth": up["synthesize"], "organism": up["organism"]},
        "steer": {"cfg": SteerConfig(control=str(control)), "model": model, "decoder": up["train"]},
        "sweep": {"cfg": SweepConfig(models=[str(model_dir)]), "evaluations": [up["evaluate"]]},
        "organism": {"cfg": OrganismConfig(), "model": model},
    }[stage]


def hashed(stage: str, tmp: Path, model_dir: Path, monkeypatch) -> tuple[set[str], bool, bool, set[str]]:
    """(config classes, whether file contents are hashed, whether the model identity is, upstream stages) that
    `stage` puts in its fingerprint."""
    module = importlib.import_module(MODULES[stage])
    seen = {}
    monkeypatch.setattr(module, "fingerprint", lambda st, version, sections=(), inputs=(): seen.update(
        sections=list(sections), inputs=list(inputs)) or "0" * 64)
    module.fingerprint_of(params(stage, tmp, model_dir))
    classes = {type(s).__name__ for s in seen["sections"] if isinstance(s, BaseModel)}
    classes |= {"CatalogConfig" for s in seen["sections"] if isinstance(s, dict) and "families" in s}  # dumped
    identity = [s for s in seen["sections"] if isinstance(s, dict) and set(s) in ({"weights_sha256"}, {"revision"})]
    digests = [v for s in seen["sections"] if not isinstance(s, BaseModel) and s not in identity
               for v in (s.values() if isinstance(s, dict) else s if isinstance(s, list) else [s])]
    files = any(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in digests)
    return classes, files, bool(identity), set(seen["inputs"])


@pytest.mark.parametrize("stage", list(MODULES))
def test_fingerprint_table_matches_what_the_stage_hashes(stage, tmp_path, tiny_model_dir, monkeypatch):
    rows = table()
    assert stage in rows, f"PROTOCOL.md's fingerprint table has no row for {stage}"
    sections, inputs = rows[stage]
    classes, files, weights, upstream = hashed(stage, tmp_path, tiny_model_dir, monkeypatch)
    assert ("model identity" in sections) == weights, f"{stage}: table says {sections!r}"
    assert set(re.findall(r"\b[A-Z]\w*Config\b", sections)) == classes, f"{stage}: table says {sections!r}"
    assert ("sha256" in sections) == files, f"{stage}: table says {sections!r}"
    documented = {alt.split(" or ")[0].split(" (")[0].strip() for alt in inputs.split(",") if alt.strip() not in ("-", "")}
    assert documented == upstream, f"{stage}: table says inputs {inputs!r}, the stage hashes {sorted(upstream)}"


def test_a_store_of_another_protocol_version_is_refused_on_read(tmp_store):
    from tests.storage.test_store import _commit

    manifest = _commit(tmp_store)
    path = tmp_store.root / manifest.dir / "manifest.json"
    path.write_text(path.read_text().replace('"protocol": 1', '"protocol": 99'))
    with pytest.raises(StoreError, match="protocol 99"):
        tmp_store.finished(manifest.stage, manifest.fingerprint)
