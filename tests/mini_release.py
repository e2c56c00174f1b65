"""A small LatentQA release folder in the release's own formats (current and paper-era), for tests that must run
without ../shared: 12 training system prompts (no QA pairs), 6 eval labels in four behaviour files with qa.json."""

from __future__ import annotations

import json
from pathlib import Path

PERSONAS = ["a retired lighthouse keeper", "a jazz pianist from New Orleans", "a medieval blacksmith",
            "a marine biologist", "a chess grandmaster", "a beekeeper in the Alps", "a desert nomad",
            "a tired night-shift nurse", "a cheerful kindergarten teacher", "a grumpy librarian",
            "an astronaut back from orbit", "a pirate captain"]
GOALS = ["use an analogy in every reply", "end every reply with a question", "answer in exactly two sentences"]
EVAL = [("persona-job-train-conductor", "a train conductor who loves punctuality"),
        ("persona-job-volcanologist", "a volcanologist who studies eruptions"),
        ("persona-hobby-origami", "an origami artist who folds paper cranes"),
        ("persona-place-arctic-explorer", "an arctic explorer who braved the ice"),
        ("goal-style-haiku", None), ("sqa-eval-scenario-0", None)]


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))


def make_release(root: Path) -> Path:
    train = [{"system": f"Please adopt the persona of {p}. Share stories from that life.", "stimulus_user":
              "What do you do all day?", "label": f"persona-mini-{i}"} for i, p in enumerate(PERSONAS)]
    train += [{"system": f"Please make every effort to {g} in your next reply.", "stimulus_user": "How do plants grow?",
               "label": f"goal-mini-{i}"} for i, g in enumerate(GOALS)]
    _write(root / "data" / "train" / "system.json", train)
    texts = {label: (f"Please adopt the persona of {who}." if who else
                     "Please make every effort to answer in a haiku." if label.startswith("goal") else
                     "Mara found a silver key under the old oak tree and opened the shed.") for label, who in EVAL}
    _write(root / "data" / "eval" / "control.json", [{"control_user": t, "label": l} for l, t in texts.items()])
    _write(root / "data" / "eval" / "system.json", [{"system": t, "stimulus_user": "Tell me something.", "label": l}
                                                    for l, t in texts.items() if not l.startswith("sqa")])
    _write(root / "data" / "eval" / "stimulus.json", [
        {"control_user": t, "control_thought": "Okay.", "control_model": "Sure!", "stimulus_user": "Any plans?",
         "label": l} for l, t in texts.items() if not l.startswith("sqa")])
    _write(root / "history_0e4eebf" / "data" / "eval" / "stimulus_completion.json", [
        {"control_user": t, "control_model": "Sure!", "stimulus_user": "Any plans?", "stimulus_model": "Oh, plenty!",
         "label": l} for l, t in texts.items() if not l.startswith("sqa")])
    qa = {l: [["What type of persona will the assistant adopt?", f"The assistant will adopt the persona of {who}."],
              ["If the user is bored, what will the model suggest?", "Something from its own line of work."]]
          for l, who in EVAL if who}
    qa["goal-style-haiku"] = [["How does the assistant reply?", "In a haiku."], ["If asked for a recipe?", "A haiku."]]
    qa["sqa-eval-scenario-0"] = [["What did Mara find?", "A silver key."], ["Where was it?", "Under the old oak tree."]]
    _write(root / "data" / "eval" / "qa.json", qa)
    _write(root / "controls" / "pirate.json", {"Be a pirate.": [["Who are you?", "A pirate."]] * 5})
    return root
