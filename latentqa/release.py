"""The original LatentQA release (../shared/latentqa_data/README.md) in this project's formats.

Two uses:
  release_dataset   behaviour files + qa.json -> controls, dialogs and QA rows in the synthesize stage's schema
                    (the `import` stage, tasks/import_release.py): a trainable dataset
  read_release      data/eval/{control,qa,system}.json and controls/*.json -> catalog YAML, reference QA,
                    hidden personas and steering controls (`latentqa import-latentqa --out`)

Behaviour files, by file name (current and paper-era releases alike; `control_thought` is accepted and unused):
  control.json              {control_user, label}                                  -> variant control
  stimulus.json             {control_user, control_model, stimulus_user, label}    -> variant stimulus
  stimulus_completion.json  ... + stimulus_model                                   -> variant stimulus_completion
  system.json               {system, stimulus_user, label}                         -> variant system
qa.json maps a label to its [question, answer] pairs. A label without pairs gets a description pair derived
from its control text (kind `derived`, latentqa/describe.py). Every input is checked before anything is
returned; a malformed one raises ReleaseError naming the file, the item and the problem.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from latentqa.describe import describe

FAMILIES = {"persona": "persona", "goal": "goal", "sqa": "scenario"}
LABEL = re.compile(r"^(persona|goal|sqa)-[^\s]+$")  # no whitespace; the release has non-ASCII slugs (doppelgänger)
BEHAVIOURS = {  # file stem -> (variant, required text fields)
    "control": ("control", ("control_user",)),
    "stimulus": ("stimulus", ("control_user", "control_model", "stimulus_user")),
    "stimulus_completion": ("stimulus_completion", ("control_user", "control_model", "stimulus_user",
                                                    "stimulus_model")),
    "system": ("system", ("system", "stimulus_user")),
}
OPTIONAL = {"control_thought"}
MAX_TEXT_CHARS = 8_000  # far above the release's longest text (506 characters), far below any model's context
HELDOUT_CATEGORY = "heldout"  # the category of labels from held-out files: filter.heldout_categories: [heldout]

# User turns that a persona answers in character but that say nothing about which persona it is: with them,
# a reader of the text alone has nothing to go on (the release's own stimuli often name the persona's topic)
NEUTRAL_STIMULI = (
    "Tell me about yourself.", "How are you today?", "What would you like to talk about?",
    "Can you introduce yourself?", "What's on your mind?", "Hi there! How's it going?",
    "Say a few words about who you are.", "What should I know about you?", "Hello!",
    "How would you describe your day so far?", "Do you have anything to share with me?",
    "What do you think about most?",
)


class ReleaseError(ValueError):
    """A release file that cannot be imported; the message names the file, the item and the problem."""


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise ReleaseError(f"{path} not found: --source / release.source must be the release's folder "
                           "(holding data/eval/ and data/train/)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ReleaseError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ReleaseError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None


def family_of(label: str) -> str:
    return FAMILIES[label.partition("-")[0]]


def split_label(label: str) -> tuple[str, str, str]:
    """(family, category, slug) of a release label: persona-stage-foster-youth, sqa-eval-o1-scenario-0."""
    prefix, _, rest = label.partition("-")
    if prefix == "sqa":
        return "scenario", "sqa", rest
    category, _, slug = rest.partition("-")
    return FAMILIES[prefix], category, slug or category


def _check_label(path: Path, where: str, label: Any) -> str:
    if not isinstance(label, str) or not LABEL.match(label):
        raise ReleaseError(f"{path}: {where}: label {label!r} is not a release label (persona-..., goal-... or sqa-...)")
    return label


def read_behaviours(path: Path) -> list[dict]:
    """One behaviour file as dialogs {label, variant, control_user, control_model, stimulus_user, stimulus_model}."""
    if path.stem not in BEHAVIOURS:
        raise ReleaseError(f"{path}: unknown behaviour file name; expected one of "
                           f"{', '.join(s + '.json' for s in BEHAVIOURS)}")
    variant, required = BEHAVIOURS[path.stem]
    data = load_json(path)
    if not isinstance(data, list) or not data:
        raise ReleaseError(f"{path}: expected a non-empty JSON list of behaviours, got {type(data).__name__}"
                           f"{' (empty)' if data == [] else ''}")
    out, seen = [], {}
    for i, item in enumerate(data):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise ReleaseError(f"{path}: {where}: expected an object, got {type(item).__name__}")
        label = _check_label(path, where, item.get("label"))
        where = f"item {i} ({label})"
        if label in seen:
            raise ReleaseError(f"{path}: {where}: label repeats item {seen[label]}")
        seen[label] = i
        unknown = set(item) - set(required) - OPTIONAL - {"label"}
        if unknown:
            raise ReleaseError(f"{path}: {where}: unexpected field(s) {sorted(unknown)} for a {path.name} behaviour "
                               f"(expected {sorted(required)})")
        for key in required:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if key not in item else f"not a non-empty string ({value!r:.40})"
                raise ReleaseError(f"{path}: {where}: field {key!r} is {problem}")
            if len(value) > MAX_TEXT_CHARS:
                raise ReleaseError(f"{path}: {where}: field {key!r} is {len(value):,} characters, more than "
                                   f"{MAX_TEXT_CHARS:,}: not a prompt a model can read whole")
        text = lambda k: item.get(k, "").strip()  # noqa: E731
        out.append({"label": label, "variant": variant, "control_user": text("system") or text("control_user"),
                    "control_model": text("control_model"), "stimulus_user": text("stimulus_user"),
                    "stimulus_model": text("stimulus_model")})
    return out


def read_qa(path: Path) -> dict[str, list[tuple[str, str]]]:
    """qa.json: label -> [(question, answer), ...], every label with the same number of pairs."""
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise ReleaseError(f"{path}: expected a non-empty JSON object of label -> [[question, answer], ...], "
                           f"got {type(data).__name__}")
    out, width = {}, None
    for label, pairs in data.items():
        _check_label(path, f"key {label!r}", label)
        if not isinstance(pairs, list) or not pairs:
            raise ReleaseError(f"{path}: {label}: expected a non-empty list of [question, answer] pairs")
        for j, pair in enumerate(pairs):
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(x, str) and x.strip() for x in pair)):
                raise ReleaseError(f"{path}: {label}: pair {j} is not [question, answer] with two non-empty "
                                   f"strings: {pair!r:.80}")
        if width is not None and len(pairs) != width:
            raise ReleaseError(f"{path}: {label}: {len(pairs)} pairs where every other label so far has {width} "
                               "(the release gives each label the same number)")
        width = len(pairs)
        out[label] = [(q.strip(), a.strip()) for q, a in pairs]
    return out


@dataclass
class ReleaseData:
    controls: list[dict] = field(default_factory=list)   # label, family, category, text
    dialogs: list[dict] = field(default_factory=list)    # the synthesize stage's dialog rows, plus variant
    qa: list[dict] = field(default_factory=list)         # the synthesize stage's QA rows
    counts: dict[str, int] = field(default_factory=dict)


def _tag(rel: str) -> str:
    """A short, unique name for a behaviour file: system, h-stimulus (a paper-era history_* file), ..."""
    return ("h-" if "history" in rel else "") + Path(rel).stem


def _qa_kind(family: str, index: int) -> str:
    # the release's eval pairs: a description first, then an implication; scenario pairs are both extractive
    return "extractive" if family == "scenario" else ("description" if index == 0 else "implication")


def release_dataset(source: Path, files: list[tuple[str, bool]], qa_files: list[str], stimulus: str = "release",
                    max_labels: int | None = None, seed: int = 0) -> ReleaseData:
    """Dialogs and QA rows from behaviour files (relative path, held out?) and qa files under `source`.

    A label from a held-out file gets category HELDOUT_CATEGORY, so filter.heldout_categories keeps every one of
    its dialogs out of training. `stimulus: neutral` replaces the user turn of system behaviours with a seeded
    neutral one; `max_labels` samples that many labels of each file (seeded)."""
    source = Path(source)
    pairs: dict[str, list[tuple[str, str]]] = {}
    for rel in qa_files:
        for label, p in read_qa(source / rel).items():
            pairs.setdefault(label, p)
    data, texts, heldout = ReleaseData(), {}, set()
    rng = random.Random(seed)
    for rel, held in files:
        rows = read_behaviours(source / rel)
        paired = [r["label"] in pairs for r in rows]
        if any(paired) and not all(paired):  # a file paired with the qa files must be paired whole
            missing = [r["label"] for r, p in zip(rows, paired) if not p]
            raise ReleaseError(f"{source / rel}: {len(missing)} of its {len(rows)} labels have no pairs in "
                               f"{', '.join(qa_files)} while the others do (first: {', '.join(missing[:3])}); a "
                               "label without pairs would get a derived description instead, silently")
        if max_labels is not None and len(rows) > max_labels:
            rows = sorted(random.Random(f"{seed}:{rel}").sample(rows, max_labels), key=lambda r: r["label"])
        for row in rows:
            label = row.pop("label")
            heldout |= {label} if held else set()
            texts.setdefault(label, row["control_user"])
            if stimulus == "neutral" and row["variant"] == "system":
                row["stimulus_user"] = rng.choice(NEUTRAL_STIMULI)
            data.dialogs.append({"dialog_id": f"{label}:{_tag(rel)}", "label": label, **row})
        data.counts[f"n_dialogs_{_tag(rel)}"] = len(rows)
    for label, text in sorted(texts.items()):
        family, category, _ = split_label(label)
        data.controls.append({"label": label, "family": family, "category": HELDOUT_CATEGORY if label in heldout
                              else category, "text": text})
    meta = {c["label"]: {"family": c["family"], "category": c["category"]} for c in data.controls}
    for d in data.dialogs:
        d.update(meta[d["label"]])
        family = meta[d["label"]]["family"]
        given = pairs.get(d["label"])
        rows = [(_qa_kind(family, j), q, a) for j, (q, a) in enumerate(given)] if given else \
            [("derived", *describe(family, texts[d["label"]]))]
        data.qa += [{"qa_id": f"{d['dialog_id']}:q{j}", "dialog_id": d["dialog_id"], "label": d["label"],
                     **meta[d["label"]], "kind": kind, "question": q, "answer": a} for j, (kind, q, a) in enumerate(rows)]
    kinds: dict[str, int] = {}
    for r in data.qa:
        kinds[f"n_qa_{r['kind']}"] = kinds.get(f"n_qa_{r['kind']}", 0) + 1
    data.counts.update(n_labels=len(texts), n_heldout_labels=len(heldout), n_dialogs=len(data.dialogs),
                       n_qa=len(data.qa), **kinds)
    return data


def validation_prompts(source: Path, files: list[tuple[str, bool]], max_labels: int | None, seed: int = 0,
                       per_family: int | None = None) -> dict[str, list[dict]]:
    """{family: [{label, text, stimulus_user}]} of the system-prompt labels of the training files (not held out)
    that `release_dataset`'s `max_labels` sample left out: prompts of the training distribution that no decoder
    trained on that sample has seen, to choose settings on without touching the test labels. Each gets a neutral
    user turn (seeded), as `stimulus: neutral` gives the training dialogs; at most `per_family` of each family,
    a seeded sample."""
    source, out = Path(source), {}
    for rel, held in files:
        rows = read_behaviours(source / rel)
        if held or max_labels is None or len(rows) <= max_labels or rows[0]["variant"] != "system":
            continue
        used = {r["label"] for r in random.Random(f"{seed}:{rel}").sample(rows, max_labels)}
        for r in rows:
            if r["label"] not in used and family_of(r["label"]) in ("persona", "goal"):
                out.setdefault(family_of(r["label"]), []).append({"label": r["label"], "text": r["control_user"]})
    rng = random.Random(f"{seed}:validation")
    for family, rows in out.items():
        if per_family is not None and len(rows) > per_family:
            out[family] = rows = sorted(rng.sample(rows, per_family), key=lambda r: r["label"])
        for r in rows:
            r["stimulus_user"] = rng.choice(NEUTRAL_STIMULI)
    return out


def behaviour_files(source: Path) -> list[tuple[str, bool]]:
    """Every behaviour file of a release folder (relative path, held out?): data/train/*, data/eval/* (held out)
    and the paper-era history_*/data/eval/* (held out)."""
    source = Path(source)
    found = sorted(p for p in source.glob("**/data/*/*.json") if p.stem in BEHAVIOURS)
    return [(p.relative_to(source).as_posix(), p.parent.name == "eval") for p in found]


@dataclass
class Release:
    catalogs: dict[str, str]            # family -> catalog YAML text
    qa: list[dict]                      # label, family, question, answer
    personas: list[dict]                # label, text, stimulus_user
    steering: dict[str, str]            # name -> control YAML text
    n_controls: int


def read_release(source: Path) -> Release:
    """The release's eval controls, reference QA, hidden personas and steering controls, all checked first."""
    source = Path(source)
    controls = read_behaviours(source / "data" / "eval" / "control.json")
    qa = read_qa(source / "data" / "eval" / "qa.json")
    system = read_behaviours(source / "data" / "eval" / "system.json")
    catalogs: dict[str, dict[str, dict[str, str]]] = {}
    for c in controls:
        family, category, slug = split_label(c["label"])
        catalogs.setdefault(family, {}).setdefault(category, {})[slug] = c["control_user"]
    texts = {family: "# imported from the LatentQA release (data/eval/control.json)\n" + yaml.safe_dump(
        {"family": family, "categories": categories}, sort_keys=True, allow_unicode=True, width=1000)
        for family, categories in catalogs.items()}
    qa_rows = [{"label": label, "family": family_of(label), "question": q, "answer": a}
               for label, pairs in qa.items() for q, a in pairs]
    personas = [{"label": s["label"], "text": s["control_user"], "stimulus_user": s["stimulus_user"]}
                for s in system if s["label"].startswith("persona-")]
    steering = {}
    for path in sorted((source / "controls").glob("*.json")) if (source / "controls").is_dir() else []:
        data = load_json(path)
        if not isinstance(data, dict) or not data:
            raise ReleaseError(f"{path}: expected an object of control prompt -> [[question, answer], ...]")
        for prompt, pairs in data.items():
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise ReleaseError(f"{path}: control {prompt[:40]!r}: expected a list of [question, answer] pairs")
            name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower())
            steering[name] = yaml.safe_dump({"prompt": prompt, "pairs": pairs}, allow_unicode=True, width=1000)
    return Release(texts, qa_rows, personas, steering, len(controls))
