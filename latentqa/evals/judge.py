"""The optional LLM judge (evaluate.judge): 1 when an answer states what its reference states, else 0.

It goes through the same structured, cached, retried client as synthesis (latentqa/llm.py), so a rerun asks
nothing twice; a reply that fails its schema after the retries counts as missing, not as 0.
"""

from __future__ import annotations

from latentqa.llm import LLM, run_all, stop_if_over_budget
from latentqa.prompts import judge_messages
from latentqa.schemas import judge_reply


def judge_rows(llm: LLM, rows: list[dict]) -> list[float | None]:
    """A judge score per metric row (None for probe rows, which have no free-text answer)."""
    params = {"temperature": 0.0, "max_tokens": 16}

    async def one(r):
        if r["condition"] == "probe":
            return None
        return await llm.complete(judge_messages(r["question"], r["reference"], r["generated"]), judge_reply(), params)

    results = run_all(llm, [one(r) for r in rows])
    stop_if_over_budget([r for r in results if r is not None], llm, "judge")
    return [float(r.reply.score) if r is not None and r.ok else None for r in results]
