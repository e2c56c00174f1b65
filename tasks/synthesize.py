"""synthesize: controls -> dialogs -> description QA pairs, written by an LLM through the openai client.

Reads   catalog/<fp>/controls.parquet
Writes  synthesize/<fp>/{dialogs,qa,rejected}.parquet + manifest.json   (storage/PROTOCOL.md, "synthesize")
        qa rows are `description` (fixed questions answered by the LLM) or `implication` (LLM-written pairs).
Resume  every reply is kept in <root>/requests.sqlite as it arrives; a rerun after a kill sends only the
        requests without a stored reply. With no endpoint.base_url the project's own server is started.
"""

from __future__ import annotations

import asyncio
from typing import Any

from latentqa.config import EndpointConfig, SynthesizeConfig
from latentqa.llm import LLM, Result, run_all, stop_if_over_budget
from latentqa.prompts import answers_messages, description_questions, dialog_messages, implications_messages
from latentqa.rejections import drop_counts, reject
from latentqa.schemas import answers_reply, dialog_reply, implications_reply
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import DIALOGS, QA, REJECTED, write_table
from storage import outputs
from storage.store import StageDir, Store
from tasks._llm import endpoint_client
from tasks._stage import Made, stage_task
from tasks._ui import Progress, logger

FAILED = "failed_{step}_"  # a count per step that failed (generate, validate) and reason
STAGE, VERSION = "synthesize", 2  # 2: dialogs.parquet has a variant column (null here)


def fingerprint_of(p: dict[str, Any]) -> str:
    endpoint: EndpointConfig = p["endpoint"]
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], endpoint], inputs=[p["controls"].fingerprint])


async def _expand(llm: LLM, control: dict, cfg: SynthesizeConfig, params: dict) -> tuple[dict[str, Result], list[str]]:
    """Up to three calls per control: the dialog, answers to the family's description questions, and
    LLM-written implication pairs ("If the user ..., how will the assistant respond?")."""
    text, n, family = control["text"], cfg.max_chars, control["family"]
    questions = description_questions(family, cfg.n_description)
    calls = {"dialog": llm.complete(dialog_messages(text, n, family), dialog_reply(n), params),
             "answers": llm.complete(answers_messages(text, questions, n, family), answers_reply(len(questions), n),
                                     params)}
    if cfg.n_implication:
        calls["implications"] = llm.complete(implications_messages(text, cfg.n_implication, n, family),
                                             implications_reply(cfg.n_implication, n), params)
    results = await asyncio.gather(*calls.values())
    return dict(zip(calls, results)), questions


def _rows(control: dict, results: dict[str, Result], questions: list[str]) -> tuple[list, list, list]:
    """A control is kept whole or rejected whole: a dialog without its QA pairs teaches nothing."""
    label = control["label"]
    rejected = [reject(label, step, r.reason, r.detail) for step, r in results.items() if not r.ok]
    if rejected:
        return [], [], rejected
    dialog_id = f"{label}:d0"
    meta = {"label": label, "family": control["family"], "category": control["category"]}
    dialog = {"dialog_id": dialog_id, **meta, "control_user": control["text"], **results["dialog"].reply.model_dump()}
    pairs = [("description", q, a) for q, a in zip(questions, results["answers"].reply.answers)]
    if "implications" in results:
        pairs += [("implication", p.question, p.answer) for p in results["implications"].reply.pairs]
    qa = [{"qa_id": f"{dialog_id}:q{i}", "dialog_id": dialog_id, **meta, "kind": kind, "question": q.strip(),
           "answer": a.strip()} for i, (kind, q, a) in enumerate(pairs)]
    return [dialog], qa, []


def _run_all(llm: LLM, controls: list[dict], cfg: SynthesizeConfig, progress: Progress):
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if cfg.frequency_penalty:
        params["frequency_penalty"] = cfg.frequency_penalty

    async def one(control):
        out = await _expand(llm, control, cfg, params)
        progress.advance()
        return out

    return run_all(llm, [one(c) for c in controls])


@stage_task(STAGE, VERSION, fingerprint_of)
def synthesize(out: StageDir, cfg: SynthesizeConfig, endpoint: EndpointConfig, controls: Manifest, store: Store) -> Made:
    """Expand every control into one dialog and its QA pairs; failures are kept with their reason."""
    rows = outputs.controls(store, controls)
    with endpoint_client(endpoint, store) as llm:
        results = _run_all(llm, rows, cfg, Progress(len(rows), "synthesize: controls expanded"))
        stop_if_over_budget([r for calls, _ in results for r in calls.values()], llm, STAGE)
    dialogs, qa, rejected = [], [], []
    for control, (calls, questions) in zip(rows, results):
        for acc, new in zip((dialogs, qa, rejected), _rows(control, calls, questions)):
            acc.extend(new)
    _check_failures(len(rows), rejected, cfg.max_fail_fraction)
    n = {name: write_table(out.file(name), data, schema) for name, data, schema in
         (("dialogs.parquet", dialogs, DIALOGS), ("qa.parquet", qa, QA), ("rejected.parquet", rejected, REJECTED))}
    sent = sum(r.sent for calls, _ in results for r in calls.values())
    cached = sum(r.cached for calls, _ in results for r in calls.values())
    logger().info("synthesize: %d dialogs, %d QA pairs, %d failed controls (%d sent, %d cached)",
                  n["dialogs.parquet"], n["qa.parquet"], len({r["label"] for r in rejected}), sent, cached)
    return Made(rows=n, counts={"n_controls": len(rows), "n_dialogs": n["dialogs.parquet"], "n_qa": n["qa.parquet"],
                                "requests_sent": sent, "requests_cached": cached, **drop_counts(rejected, FAILED)},
                summary={"model_id": endpoint.served_model, "local_endpoint": not endpoint.base_url,
                         "structured_output": llm.mode, "spent_usd": round(llm.budget.spent, 6)})


def _check_failures(n_controls: int, rejected: list[dict], limit: float) -> None:
    failed = len({r["label"] for r in rejected})
    if n_controls and failed / n_controls > limit:
        reasons = drop_counts(rejected, FAILED)
        raise RuntimeError(f"synthesize: {failed}/{n_controls} controls failed ({reasons}), above "
                           f"synthesize.max_fail_fraction={limit}; replies so far are kept in requests.sqlite")
