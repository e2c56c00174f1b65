"""The decoder: the target's weights plus a LoRA adapter, prompted with placeholders that carry activations.

Prompt (LatentQA): [user: <placeholder> x n_acts] [assistant: ACK] [user: question] [assistant: answer].
Placeholder token ids are inserted directly (never by tokenising a string of placeholders). The loss covers
the answer turn only; everything before it is masked with -100.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentqa.dialogs import encode, render
from latentqa.models import find_blocks
from latentqa.padding import left_pad
from latentqa.patching import PatchSpec, patched_block

PROMPT_FORMAT = 1  # bump when the decoder prompt changes: adapters trained on another format do not transfer
ACK = "Sure, I can answer questions about what I just read."
_MARK = "\x07latentqa-acts\x07"
IGNORE = -100


def placeholder_id(tokenizer, placeholder: str) -> int:
    ids = encode(tokenizer, placeholder)
    if len(ids) != 1:
        raise ValueError(f"train.placeholder={placeholder!r} is {len(ids)} tokens for this tokenizer; pick one token")
    return ids[0]


def _splice(tokenizer, text: str, n_acts: int, ph_id: int) -> tuple[list[int], int]:
    before, after = text.split(_MARK)
    head = encode(tokenizer, before)
    return head + [ph_id] * n_acts + encode(tokenizer, after), len(head)


@dataclass(frozen=True)
class DecoderExample:
    input_ids: list[int]
    labels: list[int]
    act_start: int  # placeholders occupy [act_start, act_start + n_acts)
    n_acts: int


def encode_example(tokenizer, n_acts: int, question: str, answer: str | None, ph_id: int,
                   loss_on_ack: bool = False) -> DecoderExample:
    """Tokens of a decoder prompt; with an answer, labels cover exactly the answer turn (and the ack if asked)."""
    msgs = [{"role": "user", "content": _MARK}, {"role": "assistant", "content": ACK},
            {"role": "user", "content": question}]
    prompt, start = _splice(tokenizer, render(tokenizer, msgs, add_generation_prompt=True), n_acts, ph_id)
    if answer is None:
        return DecoderExample(prompt, [IGNORE] * len(prompt), start, n_acts)
    full, _ = _splice(tokenizer, render(tokenizer, msgs + [{"role": "assistant", "content": answer}]), n_acts, ph_id)
    assert full[: len(prompt)] == prompt, f"{len(prompt)} prompt tokens not a prefix of {len(full)} with the answer"
    labels = [IGNORE] * len(prompt) + full[len(prompt):]
    if loss_on_ack:
        ack_start, _ = _splice(tokenizer, render(tokenizer, msgs[:1], add_generation_prompt=True), n_acts, ph_id)
        ack_end, _ = _splice(tokenizer, render(tokenizer, msgs[:2]), n_acts, ph_id)
        assert full[: len(ack_end)] == ack_end, "the acknowledgement turn is not a prefix of the full prompt"
        labels[len(ack_start): len(ack_end)] = ack_end[len(ack_start):]
    return DecoderExample(full, labels, start, n_acts)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    patch: PatchSpec


def collate(examples: list[DecoderExample], acts: list[np.ndarray | torch.Tensor], pad_id: int,
            device: torch.device, norm_match: bool = False) -> Batch:
    """Left-pad a batch (explicit pad id, positions from the mask) and gather the patch for it."""
    ids, mask = left_pad([e.input_ids for e in examples], pad_id)
    labels, _ = left_pad([e.labels for e in examples], IGNORE)
    width = ids.shape[1]
    b_idx, p_idx = [], []
    for b, ex in enumerate(examples):
        off = width - len(ex.input_ids)
        b_idx += [b] * ex.n_acts
        p_idx += range(off + ex.act_start, off + ex.act_start + ex.n_acts)
    if torch.is_tensor(acts[0]):  # live reads (steering): keep the autograd graph into the target
        vectors = torch.cat([a.float() for a in acts])
    else:  # one copy out of the (read-only) Parquet buffers into a fresh tensor
        vectors = torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.float32) for a in acts]))
    assert vectors.shape[0] == len(p_idx), f"{vectors.shape[0]} vectors for {len(p_idx)} placeholder positions"
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    spec = PatchSpec(torch.tensor(b_idx, device=device), torch.tensor(p_idx, device=device), vectors.to(device),
                     seq_len=width, norm_match=norm_match)
    return Batch(ids.to(device), mask.to(device), positions.to(device), labels.to(device), spec)


def labelled_loss(model, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """The causal LM loss over the labelled tokens (what `model(..., labels=labels).loss` returns, up to float
    rounding), projecting onto the vocabulary only the columns that predict a label. The answer is a short tail
    of each sequence, and the projection is most of a small model's cost: 262k x 640 per token for Gemma 3 270M,
    more than its 18 blocks together (bench/train.py measures the saving)."""
    predicts = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)  # column c predicts the token at c + 1
    logits = model(**inputs, logits_to_keep=predicts).logits
    targets = labels[:, predicts + 1]
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def batch_loss(decoder, batch: Batch, write_layer: int, forward=None) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens with the batch's activations patched into block W.
    `forward`: what to call instead of the decoder itself (its DDP wrapper)."""
    with patched_block(write_block(decoder, write_layer), batch.patch):
        return labelled_loss(forward or decoder, batch.labels, input_ids=batch.input_ids,
                             attention_mask=batch.attention_mask, position_ids=batch.position_ids)


def make_decoder(model, r: int, alpha: int, dropout: float, target_modules: list[str], seed: int = 0):
    """Wrap the (frozen) target in a trainable LoRA adapter; only adapter weights require grad."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def merged_adapter(decoder):
    """A context in which the adapter is folded into the base weights, where that is safe and pays: a float32
    model on CPU, whose LoRA forward costs ~20% more than a plain one (bench/evaluate.py). Outputs change by float
    rounding only. Elsewhere a no-op: in bf16 the adapter's small update would mostly round away, and on a GPU the
    copy of the base weights it keeps could exhaust memory."""
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in decoder.parameters()):
        return nullcontext()
    return _merged(decoder)


@contextmanager
def _merged(decoder):
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in decoder.modules() if isinstance(m, BaseTunerLayer)]
    # unmerging subtracts the update again, leaving rounding residue: restore the exact weights instead
    saved = [m.get_base_layer().weight.detach().clone() for m in layers]
    for m in layers:
        m.merge()
    try:
        yield decoder
    finally:
        with torch.no_grad():
            for m, weight in zip(layers, saved):
                m.unmerge()
                m.get_base_layer().weight.copy_(weight)


def write_block(decoder, layer: int):
    """The decoder block whose output receives the activations (located through the peft wrapper)."""
    return find_blocks(decoder)[layer]


@dataclass(frozen=True)
class DecoderInfo:
    """What a reader needs to use a trained adapter without the training config (decoder.json)."""

    base_model: str
    read_layer: int
    write_layer: int
    placeholder: str
    placeholder_id: int
    variant: str
    norm_match: bool = False
    prompt_format: int = PROMPT_FORMAT

    def to_json(self) -> dict:
        """decoder.json's content (the train stage writes it through storage/)."""
        return dict(self.__dict__)

    @classmethod
    def load(cls, path: Path) -> DecoderInfo:
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from None
        fields = {f for f in cls.__dataclass_fields__}
        if not isinstance(raw, dict) or not {"base_model", "read_layer", "write_layer"} <= set(raw) or set(raw) - fields:
            raise ValueError(f"{path}: not a decoder.json (expected the fields {sorted(fields)})")
        if not all(isinstance(raw[k], int) and not isinstance(raw[k], bool) for k in ("read_layer", "write_layer")):
            raise ValueError(f"{path}: read_layer and write_layer must be whole numbers")
        info = cls(**raw)
        if info.prompt_format != PROMPT_FORMAT:
            raise ValueError(f"{path}: prompt_format {info.prompt_format} != supported {PROMPT_FORMAT}")
        return info


@dataclass
class TrainedDecoder:
    net: object  # the peft model: adapter on = the decoder, adapter off = the target (the untrained model)
    tokenizer: object
    info: DecoderInfo


def load_decoder(decoder_dir: Path, name: str | None = None, revision: str | None = None, dtype: str = "auto",
                 device: str = "auto") -> TrainedDecoder:
    """A trained decoder from a train/<fp12> directory or an exported one (`latentqa export decoder`): its base
    model (or `name`) with the adapter, eval mode."""
    from peft import PeftModel

    from latentqa.models import load_model

    decoder_dir = Path(decoder_dir)
    if not (decoder_dir / "decoder.json").is_file():
        raise FileNotFoundError(f"{decoder_dir} is not a trained decoder (no decoder.json); pass a train/<fp12> "
                                "directory of a store")
    info = DecoderInfo.load(decoder_dir / "decoder.json")
    loaded = load_model(name or info.base_model, revision, dtype, device)
    adapter = decoder_dir / "adapter" if (decoder_dir / "adapter").is_dir() else decoder_dir  # a store's or an export's
    return TrainedDecoder(PeftModel.from_pretrained(loaded.model, adapter).eval(), loaded.tokenizer, info)

