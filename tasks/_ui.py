"""What a stage shows in the Prefect UI and the terminal: the run logger, artifacts, progress."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError

from storage.manifest import Manifest
from storage.store import Store


def logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run, the `latentqa` logger outside (CLI, tests calling .fn)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("latentqa")


def in_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


# what each stage's artifacts are called in the UI: `<noun>-<dataset>`, one key per stage and dataset, so the
# Artifacts page lists a stage's versions over time
ARTIFACT_NOUNS = {"catalog": "controls", "import": "release", "synthesize": "synthesis", "extract": "activations",
                  "filter": "dataset", "train": "decoder", "evaluate": "evaluation", "steer": "steering",
                  "sweep": "sweep"}


def artifact_key(stage: str, store: Store) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", store.dataset.lower()).strip("-") or "default"
    return f"{ARTIFACT_NOUNS.get(stage, stage.replace('_', '-'))}-{name}"


def publish(manifest: Manifest, store: Store, figures: dict[str, Any] | None = None) -> None:
    """One markdown and one table artifact per stage, both views of the manifest."""
    if not in_run():
        return
    key = artifact_key(manifest.stage, store)
    inputs = "\n".join(f"- {i.stage} `{i.fingerprint[:12]}`: [{i.dir}]({(store.root / i.dir).as_uri()})"
                       f" (artifact `{artifact_key(i.stage, store)}`)" for i in manifest.inputs) or "- none"
    counts = "\n".join(f"| {k} | {v} |" for k, v in sorted(manifest.counts.items()))
    files = "\n".join(f"| {f.path} | {f.bytes} | {f.rows if f.rows is not None else ''} |" for f in manifest.files)
    md = (f"# {manifest.stage} `{manifest.fp12}`\n\n"
          f"Dataset: `{store.dataset}`  \nDirectory: [{store.root / manifest.dir}]({(store.root / manifest.dir).as_uri()})  \n"
          f"Fingerprint: `{manifest.fingerprint}`  \n"
          f"Created: {manifest.created_at} in {manifest.elapsed_s:.1f} s\n\n## Inputs\n{inputs}\n\n"
          f"## Counts\n| count | value |\n|---|---|\n{counts}\n\n## Files\n| file | bytes | rows |\n|---|---|---|\n{files}\n\n"
          f"## Config\n```json\n{json.dumps(manifest.config, indent=2, sort_keys=True)}\n```\n")
    create_markdown_artifact(markdown=md, key=key, description=f"{manifest.stage} {manifest.fp12}")
    table = figures if figures is not None else {**manifest.counts, "elapsed_s": manifest.elapsed_s}
    create_table_artifact(table=[{"name": k, "value": v} for k, v in table.items()], key=f"{key}-table")


def publish_report(report: str, rows: list[dict], store: Store) -> None:
    """The scaling sweep's results under one stable key per dataset, `scaling-sweep-<dataset>`: its report as
    markdown and its rows (one per cell, task and condition, with n and interval) as a table."""
    if not in_run():
        return
    key = f"scaling-{artifact_key('sweep', store)}"
    create_markdown_artifact(markdown=report, key=key, description="scaling sweep: every cell, with intervals")
    create_table_artifact(table=rows, key=f"{key}-table", description="scaling sweep rows")


def publish_image(manifest: Manifest, store: Store, name: str, title: str) -> None:
    """A markdown artifact pointing at a PNG of the stage directory (the open-source UI shows links, not files)."""
    if not in_run():
        return
    path = store.path(manifest, name)
    create_markdown_artifact(markdown=f"# {title}\n\n[{path.name}]({path.as_uri()})  \n`{path}`\n",
                             key=f"{artifact_key(manifest.stage, store)}-{path.stem}", description=title)


class Progress:
    """Progress of a long stage: a terminal bar (when stderr is a terminal), a Prefect progress artifact inside
    a run, and a log line every 10%."""

    def __init__(self, total: int, description: str):
        from tqdm import tqdm

        self.total, self.done, self.description, self._logged = max(total, 1), 0, description, 0
        self.id = create_progress_artifact(0.0, description=description) if in_run() else None
        self.bar = tqdm(total=total, desc=description, disable=None, leave=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        percent = 100.0 * min(self.done, self.total) / self.total
        if self.id is not None:
            update_progress_artifact(self.id, progress=percent)
        if percent >= self._logged + 10 or self.done >= self.total:
            self._logged = int(percent // 10 * 10)
            logger().info("%s: %d/%d", self.description, self.done, self.total)
        if self.done >= self.total:
            self.bar.close()
