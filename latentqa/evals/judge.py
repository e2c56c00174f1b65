"""The optional LLM judge (evaluate.judge): 1 when an answer states what its reference states, else 0; and, on
identification items, which of the block's K candidates an answer describes (generative identification judged,
beside latentqa.metrics.matched_candidate). The candidates are shown in a seeded order of each item's own, so
the true one is not always first and a judge's preference for a position cannot pass for reading.

It goes through the same structured, cached, retried client as synthesis (latentqa/llm.py), so a rerun asks
nothing twice; a reply that fails its schema after the retries counts as missing, not as 0.
"""

from __future__ import annotations

import random

from latentqa.llm import LLM, run_all, stop_if_over_budget
from latentqa.prompts import judge_messages, judge_pick_messages
from latentqa.schemas import judge_choice, judge_reply


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


def judge_picks(llm: LLM, rows: list[dict], candidates: dict[tuple[str, str], list[str]], seed: int = 0
                ) -> list[bool | None]:
    """Per metric row: True when the judge names the row's true candidate (candidates[(task, item_id)][0]) as
    the one its answer describes, False for another or none; None for rows without candidates (and replies
    that fail their schema)."""
    params = {"temperature": 0.0, "max_tokens": 16}

    def order(r) -> list[int]:
        idx = list(range(len(candidates[(r["task"], r["item_id"])])))
        random.Random(f"{seed}:{r['task']}:{r['item_id']}").shuffle(idx)
        return idx

    async def one(r):
        cands = candidates.get((r["task"], r["item_id"]))
        if not cands or r["condition"] == "probe":
            return None
        shown = [cands[i] for i in order(r)]
        return await llm.complete(judge_pick_messages(r["question"], shown, r["generated"]),
                                  judge_choice(len(shown)), params)

    results = run_all(llm, [one(r) for r in rows])
    stop_if_over_budget([r for r in results if r is not None], llm, "judge")
    out: list[bool | None] = []
    for r, res in zip(rows, results):
        if res is None or not res.ok:
            out.append(None)
            continue
        choice = res.reply.choice
        out.append(choice > 0 and order(r)[choice - 1] == 0)
    return out
