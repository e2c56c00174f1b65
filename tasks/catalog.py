"""catalog: control catalog files (and, optionally, LLM-written controls) -> the controls this run expands.

Reads   the builtin catalog (latentqa/controls/*.yaml) and any catalog.paths
Writes  catalog/<fp>/{controls,generated_rejected}.parquet + manifest.json   (storage/PROTOCOL.md, "catalog")
Resume  generation requests are kept in <root>/requests.sqlite as they arrive, like synthesis'.

With catalog.generate_per_category > 0, the LLM is shown each category's controls as seeds and asked for new
ones; a new control whose label or text is a (near-)duplicate of the catalog's or of an earlier new one is
dropped with its reason. New labels are <family>-<category>-gen-<slug>.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentqa.catalog import Control, accept_new, builtin_paths, load_controls, sample_controls
from latentqa.config import CatalogConfig, EndpointConfig
from latentqa.llm import run_all, stop_if_over_budget
from latentqa.prompts import generate_controls_messages
from latentqa.rejections import drop_counts, reject
from latentqa.schemas import controls_reply
from storage.fingerprint import file_sha256, fingerprint
from storage.parquet import CONTROLS, REJECTED, write_table
from storage.store import StageDir, Store
from tasks._llm import endpoint_client
from tasks._stage import Made, stage_task

STAGE, VERSION = "catalog", 2


def _paths(cfg: CatalogConfig) -> list[Path]:
    return (builtin_paths() if cfg.builtin else []) + [Path(p) for p in cfg.paths]


def fingerprint_of(p: dict[str, Any]) -> str:
    cfg: CatalogConfig = p["cfg"]
    # the catalog is identified by its files' bytes, not their names
    files = [file_sha256(path) for path in _paths(cfg)]
    generation = [p["endpoint"]] if cfg.generate_per_category and p.get("endpoint") else []
    return fingerprint(STAGE, VERSION, sections=[cfg.model_dump(mode="json", exclude={"paths"}), files, *generation])


def generate(cfg: CatalogConfig, endpoint: EndpointConfig, catalog: list[Control], store: Store
             ) -> tuple[list[Control], list[dict]]:
    """New controls per (family, category) of `catalog`, deduplicated; (accepted, rejected rows)."""
    groups: dict[tuple[str, str], list[Control]] = {}
    for c in catalog:
        groups.setdefault((c.family, c.category), []).append(c)
    n, chars = cfg.generate_per_category, cfg.generate_max_chars
    params = {"temperature": cfg.generate_temperature, "max_tokens": n * (chars // 3 + 24) + 32, "seed": cfg.seed}
    with endpoint_client(endpoint, store) as llm:
        results = run_all(llm, [llm.complete(generate_controls_messages(f, cat, [c.text for c in seeds], n, chars),
                                             controls_reply(n, chars), params) for (f, cat), seeds in groups.items()])
        stop_if_over_budget(results, llm, "catalog generation")
    candidates, rejected = [], []
    for ((family, category), _), result in zip(groups.items(), results):
        if not result.ok:
            rejected.append(reject(f"{family}-{category}", "generate", result.reason, result.detail))
            continue
        candidates += [Control(f"{family}-{category}-gen-{g.slug}", family, category, g.text.strip())
                       for g in result.reply.controls]
    accepted, dups = accept_new(catalog, candidates)
    rejected += [reject(c.label, "dedupe", reason, f"like {like}") for c, reason, like in dups]
    return accepted, rejected


@stage_task(STAGE, VERSION, fingerprint_of)
def load_catalog(out: StageDir, cfg: CatalogConfig, store: Store, endpoint: EndpointConfig | None = None) -> Made:
    """Load and check the controls, add LLM-written ones if asked, sample, and write them as a table."""
    catalog = load_controls(_paths(cfg), cfg.families)
    if not catalog:
        raise ValueError(f"catalog.families={cfg.families} selects no controls from {[str(p) for p in _paths(cfg)]}")
    if cfg.generate_per_category and endpoint is None:
        raise ValueError("catalog.generate_per_category needs an endpoint: pass the run config's endpoint section")
    new, rejected = generate(cfg, endpoint, catalog, store) if cfg.generate_per_category else ([], [])
    controls = sample_controls(sorted(catalog + new, key=lambda c: c.label), cfg.n_controls, cfg.seed)
    n = write_table(out.file("controls.parquet"), [c.row() for c in controls], CONTROLS)
    n_rej = write_table(out.file("generated_rejected.parquet"), rejected, REJECTED)
    families = {f: sum(c.family == f for c in controls) for f in cfg.families}
    return Made(rows={"controls.parquet": n, "generated_rejected.parquet": n_rej},
                counts={"n_controls": n, **{f"n_{f}": k for f, k in families.items()}, "n_generated": len(new),
                        "n_generated_in_sample": sum("-gen-" in c.label for c in controls), **drop_counts(rejected, "generated_rejected_")},
                summary={"catalog_files": [p.name for p in _paths(cfg)]})
