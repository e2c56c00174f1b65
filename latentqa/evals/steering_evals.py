"""How a steered target behaves, before and after (and for a random LoRA of the same size).

  sentiment  greedy continuations of open prompts, scored by VADER (an offline lexicon): the share with a
             positive compound score (>= 0.05) and the mean compound score
  debias     the target's mean per-token log-likelihood margin of stereotypical over anti-stereotypical
             sentences; fairness is its distance from zero (`stereotype_abs_margin`, lower is fairer): a
             margin pushed from +0.08 to -0.08 is a reversed bias, not a removed one
  persona    the decoder reads the target on held-out neutral prompts (never steered on); the share on which the persona's
             description has the lowest answer loss among K candidates (identification, as in reading)

`measure` runs the evals a steer config asks for under one condition; `report` writes the stage's report.md.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import yaml

from latentqa.catalog import builtin_paths, load_controls
from latentqa.config import SteerConfig
from latentqa.dialogs import encode, encode_turns, pad_id_of
from latentqa.describe import PERSONA_QUESTION
from latentqa.generate import answer, answer_losses, greedy_continuations, per_example_ce
from latentqa.padding import left_pad
from latentqa.residual import read_spans

POSITIVE = 0.05  # VADER's conventional threshold


@lru_cache(maxsize=1)
def steering_data() -> dict:
    return yaml.safe_load((resources.files("latentqa") / "evals" / "steering.yaml").read_text())


def replies(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The model's greedy replies to user prompts."""
    seqs = [encode_turns(tokenizer, [], [{"role": "user", "content": p}], True).token_ids for p in prompts]
    return greedy_continuations(model, tokenizer, seqs, max_new_tokens)


def sentiment(texts: list[str]) -> dict[str, float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    scores = [analyzer.polarity_scores(t)["compound"] for t in texts]
    return {"positive_share": float(np.mean([s >= POSITIVE for s in scores])), "mean_compound": float(np.mean(scores))}


@torch.no_grad()
def bias_margin(model, tokenizer, pairs: list[list[str]]) -> float:
    """Mean over pairs of (mean log-prob of the stereotypical sentence - of the anti-stereotypical one)."""
    sentences = [s for pair in pairs for s in pair]
    seqs = [[tokenizer.eos_token_id] + encode(tokenizer, s) for s in sentences]  # a start token to condition on
    device = next(model.parameters()).device
    ids, mask = left_pad(seqs, tokenizer.eos_token_id, device)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :1] = -100
    for b, s in enumerate(seqs):
        labels[b, ids.shape[1] - len(s)] = -100  # the start token is context, not scored
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    nll = per_example_ce(logits, labels)
    return float(np.mean([nll[2 * i + 1] - nll[2 * i] for i in range(len(pairs))]))  # -nll(stereo) + nll(anti)


@torch.no_grad()
def read_prompts(target, tokenizer, layer: int, prompts: list[str], system: str | None = None) -> list[np.ndarray]:
    """The target's activations at `layer` for each prompt (after the masked system prompt, if any)."""
    pad_id = pad_id_of(tokenizer)
    prefix = [{"role": "system", "content": system}] if system else []
    encs = [encode_turns(tokenizer, prefix, [*prefix, {"role": "user", "content": p}], True) for p in prompts]
    return read_spans(target, encs, layer, pad_id, batch_size=len(encs))


def pairs_by_reading(decoder, target, tokenizer, info, persona: str, prompts: list[str], questions: list[str],
                     max_new_tokens: int = 32) -> list[tuple[str, str]]:
    """Desired QA pairs for a persona: the decoder's answers about the target running with it as system prompt."""
    acts = read_prompts(target, tokenizer, info.read_layer, prompts, system=persona)
    pairs = []
    for q in questions:
        answers = answer(decoder, tokenizer, acts, [q] * len(acts), info.placeholder_id, info.write_layer,
                         max_new_tokens, info.norm_match)
        pairs += [(q, a) for a in answers if a]
    return pairs


def persona_identification(decoder, target, tokenizer, info, persona: str, distractors: list[str],
                           prompts: list[str]) -> float:
    """Share of prompts on which the decoder, reading the target, finds `persona` the likeliest description."""
    acts = read_prompts(target, tokenizer, info.read_layer, prompts)
    candidates = [persona, *distractors]
    hits = []
    for a in acts:
        losses = answer_losses(decoder, tokenizer, [a] * len(candidates), [PERSONA_QUESTION] * len(candidates),
                               candidates, info.placeholder_id, info.write_layer, info.norm_match)
        hits.append(int(np.argmin(losses)) == 0)
    return float(np.mean(hits))


def distractor_personas(persona: str, k: int) -> list[str]:
    """K - 1 builtin personas other than `persona`, spread over the catalog (the candidates beside it)."""
    others = sorted(c.text for c in load_controls(builtin_paths(), ["persona"]) if c.text != persona)
    return others[:: max(1, len(others) // (k - 1))][: k - 1]


def measure(cfg: SteerConfig, target, decoder, tok, info, persona: str | None, distractors: list[str], condition: str
            ) -> tuple[list[dict], list[dict]]:
    """The target's results on each of steer.evals under `condition` (eval, condition, metric, value), and its
    replies to the sentiment prompts (condition, prompt, reply)."""
    data, results, samples = steering_data(), [], []
    if "sentiment" in cfg.evals:
        texts = replies(target, tok, data["sentiment_prompts"], cfg.max_new_tokens)
        results += [{"eval": "sentiment", "condition": condition, "metric": m, "value": v}
                    for m, v in sentiment(texts).items()]
        samples += [{"condition": condition, "prompt": p, "reply": t} for p, t in zip(data["sentiment_prompts"], texts)]
    if "debias" in cfg.evals:
        margin = bias_margin(target, tok, data["bias_pairs"])
        results += [{"eval": "debias", "condition": condition, "metric": "stereotype_abs_margin", "value": abs(margin)},
                    {"eval": "debias", "condition": condition, "metric": "stereotype_margin", "value": margin}]
    if "persona" in cfg.evals and persona:
        results.append({"eval": "persona", "condition": condition, "metric": "identification",
                        "value": persona_identification(decoder, target, tok, info, persona, distractors,
                                                           data["heldout_prompts"])})
    return results, samples


def report(cfg: SteerConfig, results: list[dict], samples: list[dict], curve: list[dict]) -> str:
    """report.md of the steer stage: the loss it reached, each eval before, steered and under a random LoRA, and a
    few replies under each."""
    lines = [f"# Steering: `{cfg.control}`", "",
             f"{cfg.steps} steps, decoder loss on the desired answers {curve[0]['loss']:.3f} -> {curve[-1]['loss']:.3f}",
             "", "| eval | metric | before | steered | random LoRA |", "|---|---|---|---|---|"]
    table: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        table.setdefault((r["eval"], r["metric"]), {})[r["condition"]] = r["value"]
    for (e, m), v in table.items():
        lines.append(f"| {e} | {m} | " + " | ".join(f"{v.get(c, float('nan')):.3f}"
                                                    for c in ("before", "steered", "random_lora")) + " |")
    if samples:
        lines += ["", "## Replies to the sentiment prompts", ""]
    for condition in ("before", "steered", "random_lora"):
        lines += [f"- ({condition}) {s['prompt']} -> {s['reply']}" for s in samples if s["condition"] == condition][:3]
    return "\n".join(lines) + "\n"
