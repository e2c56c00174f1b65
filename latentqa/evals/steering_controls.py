"""Steering controls: what the target is steered towards, as (question, answer) pairs the decoder should give.

A control is a builtin one of steering.yaml (positive, fair), persona:<catalog label> (its pairs come later, by
reading), or a YAML/JSON file of pairs ({pairs: [[q, a], ...]} or LatentQA's {prompt: [[q, a], ...]}).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from latentqa.catalog import builtin_paths, load_controls
from latentqa.config import SteerConfig
from latentqa.evals import steering_evals as ev


def control_pairs(cfg: SteerConfig) -> tuple[list[tuple[str, str]], str | None]:
    """(pairs, persona text or None). Persona controls get their pairs later, by reading."""
    if cfg.control.startswith("persona:"):
        label = cfg.control.split(":", 1)[1]
        personas = {c.label: c.text for c in load_controls(builtin_paths(), ["persona"])}
        if label not in personas:
            raise ValueError(f"steer.control={cfg.control!r}: no persona {label!r} in the builtin catalog")
        return [], personas[label]
    if cfg.control in ev.steering_data()["controls"]:
        return [tuple(p) for p in ev.steering_data()["controls"][cfg.control]], None
    path = Path(cfg.control)
    if not path.is_file():
        raise ValueError(f"steer.control={cfg.control!r} is neither a builtin control "
                         f"({', '.join(sorted(ev.steering_data()['controls']))}), persona:<label>, nor a file")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))  # YAML is a superset of JSON
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not YAML/JSON ({str(err).splitlines()[0]})") from None
    pairs = raw.get("pairs") if isinstance(raw, dict) and "pairs" in raw else \
        next(iter(raw.values()), None) if isinstance(raw, dict) and raw else None
    if not pairs or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p)
                            for p in pairs):
        raise ValueError(f"{cfg.control}: expected {{pairs: [[question, answer], ...]}} or {{prompt: [[q, a], ...]}}")
    return [tuple(p) for p in pairs], None
