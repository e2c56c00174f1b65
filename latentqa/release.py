"""`latentqa import-latentqa`: the original LatentQA release's evaluation data in this project's formats.

Reads the data files of the release (see ../shared/latentqa_data/README.md): data/eval/{control,qa,system}.json
and controls/*.json. storage/imports.py writes what this returns into OUT:

  catalog/{persona,goal,scenario}.yaml   the eval controls as catalog files (catalog.paths); `sqa` labels
                                         become the scenario family, category `sqa`
  qa.parquet                             label, family, question, answer (the release's reference pairs)
  hidden_persona.parquet                 label, text, stimulus_user: the release's `system` behaviours of
                                         persona labels (evaluate.hidden_persona_file)
  steering/<name>.yaml                   the release's steering controls as {pairs: [[q, a], ...]}

The release has no relational-knowledge file; the relational task uses latentqa/evals/facts.yaml.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

FAMILIES = {"persona": "persona", "goal": "goal", "sqa": "scenario"}


def _split_label(label: str) -> tuple[str, str, str]:
    """(family, category, slug) of a release label: persona-stage-foster-youth, sqa-eval-o1-scenario-0."""
    prefix, _, rest = label.partition("-")
    if prefix == "sqa":
        return "scenario", "sqa", rest
    category, _, slug = rest.partition("-")
    return FAMILIES[prefix], category, slug or category


def _load(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --source must be the release's data folder (with data/eval/)")
    return json.loads(path.read_text())


@dataclass
class Release:
    catalogs: dict[str, str]            # family -> catalog YAML text
    qa: list[dict]                      # label, family, question, answer
    personas: list[dict]                # label, text, stimulus_user
    steering: dict[str, str]            # name -> control YAML text
    n_controls: int


def read_release(source: Path) -> Release:
    source = Path(source)
    controls = _load(source / "data" / "eval" / "control.json")
    qa = _load(source / "data" / "eval" / "qa.json")
    system = _load(source / "data" / "eval" / "system.json")
    catalogs: dict[str, dict[str, dict[str, str]]] = {}
    for c in controls:
        family, category, slug = _split_label(c["label"])
        catalogs.setdefault(family, {}).setdefault(category, {})[slug] = c["control_user"].strip()
    texts = {family: "# imported from the LatentQA release (data/eval/control.json)\n" + yaml.safe_dump(
        {"family": family, "categories": categories}, sort_keys=True, allow_unicode=True, width=1000)
        for family, categories in catalogs.items()}
    qa_rows = [{"label": label, "family": _split_label(label)[0], "question": q, "answer": a}
               for label, pairs in qa.items() for q, a in pairs]
    personas = [{"label": s["label"], "text": s["system"].strip(), "stimulus_user": s["stimulus_user"].strip()}
                for s in system if s["label"].startswith("persona-")]
    steering = {}
    for path in sorted((source / "controls").glob("*.json")) if (source / "controls").is_dir() else []:
        for prompt, pairs in json.loads(path.read_text()).items():
            name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower())
            steering[name] = yaml.safe_dump({"prompt": prompt, "pairs": pairs}, allow_unicode=True, width=1000)
    return Release(texts, qa_rows, personas, steering, len(controls))
