"""Patching: block W's output equals the injected vectors at the placeholders and is unchanged elsewhere."""

import torch

from latentqa.decoder import collate, encode_example, placeholder_id
from latentqa.models import find_blocks
from latentqa.patching import patched_block


def _batch(tiny, n_acts=(3, 5)):
    ph = placeholder_id(tiny.tokenizer, "?")
    d = tiny.model.config.hidden_size
    torch.manual_seed(1)
    acts = [torch.randn(n, d) * 10 for n in n_acts]
    examples = [encode_example(tiny.tokenizer, n, f"Question {i}?", "An answer.", ph) for i, n in enumerate(n_acts)]
    return collate(examples, acts, tiny.tokenizer.pad_token_id, torch.device("cpu")), acts, examples


def _input_of(block, run):
    """The hidden state entering `block` during run() (== the previous block's final output)."""
    seen = {}

    def pre_hook(_module, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen["h"]


def test_patched_output_equals_injected_and_rest_unchanged(tiny):
    batch, acts, _ = _batch(tiny)
    write = 1
    blocks = find_blocks(tiny.model)

    def forward():
        tiny.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)

    plain = _input_of(blocks[write + 1], forward)
    with patched_block(blocks[write], batch.patch):
        patched = _input_of(blocks[write + 1], forward)
    at = torch.zeros(patched.shape[:2], dtype=torch.bool)
    at[batch.patch.batch_idx, batch.patch.pos_idx] = True
    assert torch.equal(patched[batch.patch.batch_idx, batch.patch.pos_idx], torch.cat(acts))
    assert torch.equal(patched[~at], plain[~at])
    assert not torch.allclose(plain[at], patched[at])


def test_placeholders_sit_where_the_patch_writes(tiny):
    batch, acts, examples = _batch(tiny)
    ph = placeholder_id(tiny.tokenizer, "?")
    assert (batch.input_ids[batch.patch.batch_idx, batch.patch.pos_idx] == ph).all()
    assert len(batch.patch.pos_idx) == sum(len(a) for a in acts)


def test_no_patch_on_cached_decoding_steps(tiny):
    batch, _, _ = _batch(tiny)
    block = find_blocks(tiny.model)[0]
    calls = []
    with patched_block(block, batch.patch):
        h = block.register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
        tiny.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=3,
                            do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id)
        h.remove()
    assert calls[0] == batch.input_ids.shape[1] and all(c == 1 for c in calls[1:])


def test_norm_matched_injection_keeps_the_residual_norm():
    from latentqa.patching import PatchSpec, apply_patch

    hidden = torch.randn(2, 5, 8) * 3
    vectors = torch.randn(3, 8) * 100
    spec = PatchSpec(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 4]), vectors, seq_len=5, norm_match=True)
    out = apply_patch(hidden, spec)
    at = out[spec.batch_idx, spec.pos_idx]
    torch.testing.assert_close(at.norm(dim=-1), hidden[spec.batch_idx, spec.pos_idx].norm(dim=-1))
    torch.testing.assert_close(at / at.norm(dim=-1, keepdim=True), vectors / vectors.norm(dim=-1, keepdim=True))
