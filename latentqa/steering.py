"""Control by reading (LatentQA section 5): steer the target by backpropagating the decoder's loss.

A steering LoRA is trained on the target's blocks up to the read layer, with the decoder frozen: the target
reads neutral prompts, its activations at the read layer are patched into the decoder, and the loss is the
decoder's cross-entropy on the desired answers ("How does the assistant feel?" -> "Happy and cheerful.").
Minimising it changes the target until the decoder reads the desired control off its activations. With
`per_layer`, every block up to the read layer is read out and each adds its own decoder loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from latentqa.decoder import batch_loss, collate, encode_example
from latentqa.dialogs import encode_turns, pad_id_of
from latentqa.residual import read_layers_with_grad
from latentqa.padding import right_pad


@dataclass(frozen=True)
class SteerSettings:
    steps: int = 40
    lr: float = 1e-4
    batch_size: int = 4
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    per_layer: bool = False
    seed: int = 0


def prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    return [encode_turns(tokenizer, [], [{"role": "user", "content": p}], True).token_ids for p in prompts]


def add_steering_lora(model, read_layer: int, s: SteerSettings):
    """The target with a trainable LoRA on blocks 0..read_layer only (later blocks cannot change the read)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(s.seed)
    config = LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, target_modules=list(s.target_modules),
                        layers_to_transform=list(range(read_layer + 1)), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def train_steering(target, decoder, tokenizer, info, pairs: list[tuple[str, str]], prompts: list[str],
                   s: SteerSettings, on_step=None) -> list[dict]:
    """Adam on the steering LoRA; returns the loss curve. The decoder's weights never change."""
    params = [p for p in target.parameters() if p.requires_grad]
    assert params and not any(p.requires_grad for p in decoder.parameters()), "train the target's LoRA only"
    opt = torch.optim.Adam(params, lr=s.lr)
    rng = random.Random(s.seed)
    ids_all = prompt_ids(tokenizer, prompts)
    pad_id = pad_id_of(tokenizer)
    device = next(target.parameters()).device
    layers = list(range(info.read_layer + 1)) if s.per_layer else [info.read_layer]
    curve = []
    target.train()
    for step in range(s.steps):
        picks = [rng.randrange(len(ids_all)) for _ in range(s.batch_size)]
        qa = [pairs[rng.randrange(len(pairs))] for _ in picks]
        seqs = [ids_all[i] for i in picks]
        ids, mask = right_pad(seqs, pad_id)
        reads = read_layers_with_grad(target, ids.to(device), mask.to(device), layers)
        loss = torch.zeros((), device=device)
        for layer in layers:
            acts = [reads[layer][b, : len(seq)] for b, seq in enumerate(seqs)]
            examples = [encode_example(tokenizer, len(a), q, ans, info.placeholder_id) for a, (q, ans) in zip(acts, qa)]
            loss = loss + batch_loss(decoder, collate(examples, acts, pad_id, device, info.norm_match), info.write_layer)
        loss = loss / len(layers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append({"step": step + 1, "loss": loss.item()})
        if on_step:
            on_step(step + 1, loss.item())
    target.eval()
    return curve


@torch.no_grad()
def randomize_like(target, seed: int) -> None:
    """Replace every LoRA weight by Gaussian noise of the same norm: a random LoRA of the same size, the
    baseline a steering run must beat."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in target.named_parameters():
        if "lora_" in name:
            noise = torch.randn(p.shape, generator=gen).to(p)
            p.copy_(noise * (p.norm() / noise.norm().clamp_min(1e-12)))
