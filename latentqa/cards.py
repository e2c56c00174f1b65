"""Hugging Face cards for what the pipeline made: a dataset version and a trained decoder (`latentqa export`).

Cards are README.md files with a YAML header the Hub reads (licence, splits, base model) and a body a person
reads. They are built from manifests' contents only, so a card says nothing a manifest does not: no API key,
no endpoint address (manifests never hold either).
"""

from __future__ import annotations

import yaml

SPLITS = ("train", "eval")


def _header(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _lineage(chain: list[dict]) -> str:
    return "\n".join(f"| {c['role']} | {c['stage']} | `{c['fingerprint'][:12]}` |" for c in chain)


def dataset_card(name: str, version: str, origin: dict, chain: list[dict], counts: dict[str, dict[str, int]],
                 rows: dict[str, int], licence: str) -> str:
    """`origin`: {"kind": "synthesize"|"import", "model_id", "local_endpoint"} or the import's source files;
    `chain`: [{role, stage, fingerprint}]; `counts`: {stage: {dropped_<reason>: n}}; `rows`: {split: n}."""
    meta = {"license": licence, "pretty_name": f"LatentQA dataset {name} ({version[:12]})",
            "tags": ["latentqa", "interpretability", "activations"], "task_categories": ["question-answering"],
            "configs": [{"config_name": "default",
                         "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in SPLITS]}]}
    if origin["kind"] == "import":
        made = ("Imported from the LatentQA release (Pan, Chen, Steinhardt 2024); the files it read, by content:\n\n"
                + "\n".join(f"- `{path}` sha256 `{sha[:16]}`" for path, sha in sorted(origin["files"].items())))
    else:
        where = ("this project's local server on 127.0.0.1" if origin["local_endpoint"]
                 else "a remote OpenAI-compatible endpoint (its address and key are never recorded)")
        made = f"Synthesized by `{origin['model_id']}` through {where}, from control personas, goals and scenarios."
    dropped = [f"| {stage} | {reason.removeprefix('dropped_')} | {n} |" for stage, c in counts.items()
               for reason, n in sorted(c.items()) if n]
    return _header(meta) + f"""
# LatentQA dataset `{name}`, version `{version[:12]}`

Dialogs and question-answer pairs about the control (a persona, goal or scenario) that shaped each dialog, for
training a LatentQA decoder: the target model reads the dialog after its masked control, and the decoder answers
the questions from those activations alone. A control label is in one split only.

## Origin
{made}

## Rows
| split | rows |
|---|---|
{chr(10).join(f"| {s} | {rows[s]} |" for s in SPLITS)}

## Dropped, by reason
| stage | reason | rows |
|---|---|---|
{chr(10).join(dropped) or "| - | nothing dropped | 0 |"}

## Lineage
Every stage directory this version was made from, in the latentqa store (`latentqa lineage <fingerprint>`).

| role | stage | fingerprint |
|---|---|---|
{_lineage(chain)}

## Load it
```python
from datasets import load_dataset
ds = load_dataset("parquet", data_dir="<this folder>")  # splits: train, eval (from the file names)
```

## Licence
`{licence}`. Synthesized text is also under the terms of the model that wrote it; imported text under the
release's.
"""


def score_rows(scores: list[dict]) -> str:
    """Markdown table rows: task, condition, metric, value, 95% interval, n."""
    return "\n".join(f"| {s['task']} | {s['condition']} | {s['metric']} | {s['value']:.3f} | "
                     f"[{s['lo']:.3f}, {s['hi']:.3f}] | {s['n']} |" for s in scores)


def decoder_card(info: dict, base_model: str, dataset: dict | None, chain: list[dict], scores: list[dict],
                 evaluate_fp: str | None, licence: str) -> str:
    """`info`: decoder.json; `dataset`: {name, version} of the training data (None when no version names it);
    `scores`: summary.parquet rows of the newest evaluation of this decoder (primary metrics)."""
    meta = {"license": licence, "library_name": "peft", "base_model": base_model,
            "tags": ["latentqa", "interpretability", "lora", "activation-decoder"]}
    data = (f"dataset `{dataset['name']}`, version `{dataset['version'][:12]}`" if dataset
            else "a filter stage no recorded dataset version names")
    table = (f"From evaluate `{evaluate_fp[:12]}`: the mean over n items with its seeded 95% bootstrap interval. "
             "The decoder reads a task only where its interval lies above every control's.\n\n"
             "| task | condition | metric | value | 95% interval | n |\n|---|---|---|---|---|---|\n"
             + score_rows(scores)) if scores else "Not evaluated in this store."
    return _header(meta) + f"""
# LatentQA decoder on `{base_model}`

A LoRA adapter that turns `{base_model}` into a decoder of its own activations (LatentQA, Pan, Chen, Steinhardt
2024): the residual stream after block {info['read_layer']} of the target, for the tokens after a masked control,
is written over the output of block {info['write_layer']} at the placeholder tokens (`{info['placeholder']}`,
id {info['placeholder_id']}) of a question, and the decoder answers it. Dialog variant `{info['variant']}`;
norm matching {"on" if info['norm_match'] else "off"}.

## Training data
{data}.

## Evaluation
{table}

## Lineage
| role | stage | fingerprint |
|---|---|---|
{_lineage(chain)}

## Read with it
`decoder.json` holds the layers and placeholder. With the latentqa package:

```python
from latentqa.reader import Reader
reader = Reader("<this folder>")
reader.ask(["What persona is the assistant adopting?"], prompt="How was your day?", system="Talk like a pirate.")
```

With peft alone: `PeftModel.from_pretrained(base, "<this folder>")`; the target is the same model with the
adapter disabled.

## Licence
`{licence}`; the base model's terms apply as well.
"""
