"""import: the LatentQA release's behaviours and QA pairs -> a dataset in the synthesize stage's schema.

Reads   the files release.files and release.qa name under release.source (../shared/latentqa_data)
Writes  import/<fp>/{controls,dialogs,qa}.parquet + manifest.json   (storage/PROTOCOL.md, "import")
Resume  one pass over a few MB of JSON; nothing to resume.

The paper's data instead of synthesis: each behaviour (a control with its stimulus, or a system prompt) is one
dialog, rendered by the variant of its file, and the label's qa.json pairs are its questions; a label without
pairs gets a description pair derived from its control text. The fingerprint is the content of the files read,
so the same bytes anywhere give the same dataset, and a changed byte a new one. This stage stands where catalog
and synthesize stand in the chain (flows/dataset.py): extract, filter, train and evaluate read it unchanged.
"""

from __future__ import annotations

from typing import Any

from latentqa.config import ReleaseConfig
from latentqa.release import release_dataset
from storage.fingerprint import file_sha256, fingerprint
from storage.parquet import CONTROLS, DIALOGS, QA, write_table
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import logger

STAGE, VERSION = "import", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    cfg: ReleaseConfig = p["cfg"]
    files = {f: file_sha256(cfg.source / f) for f in [*(r.path for r in cfg.files), *cfg.qa]}
    return fingerprint(STAGE, VERSION, sections=[cfg, files])


@stage_task(STAGE, VERSION, fingerprint_of, section="release")
def import_release(out: StageDir, cfg: ReleaseConfig, store: Store) -> Made:
    """Read and check every release file, then write controls, dialogs and QA pairs."""
    data = release_dataset(cfg.source, [(f.path, f.heldout) for f in cfg.files], cfg.qa, cfg.stimulus,
                           cfg.max_labels, cfg.seed)
    n = {name: write_table(out.file(name), rows, schema) for name, rows, schema in
         (("controls.parquet", data.controls, CONTROLS), ("dialogs.parquet", data.dialogs, DIALOGS),
          ("qa.parquet", data.qa, QA))}
    logger().info("import: %d labels, %d dialogs, %d QA pairs (%d derived)", data.counts["n_labels"],
                  n["dialogs.parquet"], n["qa.parquet"], data.counts.get("n_qa_derived", 0))
    return Made(counts=data.counts, rows=n, summary={
        "source": "LatentQA release (Pan, Chen, Steinhardt 2024)",
        "files": {f.path: file_sha256(cfg.source / f.path) for f in cfg.files}})
