"""Decoder prompt, loss mask and adapter: the mechanism LatentQA's training depends on."""

import torch

from latentqa.decoder import IGNORE, batch_loss, collate, encode_example, make_decoder, placeholder_id


def test_loss_mask_covers_exactly_the_answer(tokenizer):
    ph = placeholder_id(tokenizer, "?")
    answer = "A pirate who loves treasure."
    ex = encode_example(tokenizer, 4, "What persona is the assistant adopting?", answer, ph)
    supervised = [t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE]
    assert ex.labels[: len(ex.input_ids) - len(supervised)] == [IGNORE] * (len(ex.input_ids) - len(supervised))
    assert tokenizer.decode(supervised).strip() == answer + "<|im_end|>"
    assert ex.input_ids[ex.act_start: ex.act_start + 4] == [ph] * 4


def test_placeholder_must_be_one_token(tokenizer):
    try:
        placeholder_id(tokenizer, "<acts>")
    except ValueError as err:
        assert "train.placeholder" in str(err)
    else:
        raise AssertionError("a multi-token placeholder was accepted")


def _step_batch(tiny):
    ph = placeholder_id(tiny.tokenizer, "?")
    acts = [torch.randn(3, tiny.model.config.hidden_size), torch.randn(6, tiny.model.config.hidden_size)]
    examples = [encode_example(tiny.tokenizer, len(a), "Who?", "A pirate.", ph) for a in acts]
    return collate(examples, acts, tiny.tokenizer.pad_token_id, torch.device("cpu"))


def test_one_step_changes_only_adapter_weights(tiny):
    decoder = make_decoder(tiny.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    before = {n: p.detach().clone() for n, p in decoder.named_parameters()}
    trainable = {n for n, p in decoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    opt = torch.optim.AdamW([p for p in decoder.parameters() if p.requires_grad], lr=1e-2)
    batch_loss(decoder, _step_batch(tiny), 0).backward()
    opt.step()
    changed = {n for n, p in decoder.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_A" in n for n in changed)


def test_adapter_off_restores_base_logits(tiny):
    batch = _step_batch(tiny)
    base = tiny.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    decoder = make_decoder(tiny.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    for n, p in decoder.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)  # lora_B starts at zero; make the adapter matter
    on = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    with decoder.disable_adapter():
        off = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert not torch.allclose(on, base)
    torch.testing.assert_close(off, base)


def test_loss_on_ack_adds_exactly_the_acknowledgement(tokenizer):
    from latentqa.decoder import ACK

    ph = placeholder_id(tokenizer, "?")
    plain = encode_example(tokenizer, 3, "Who?", "A pirate.", ph)
    with_ack = encode_example(tokenizer, 3, "Who?", "A pirate.", ph, loss_on_ack=True)
    assert plain.input_ids == with_ack.input_ids
    extra = [t for t, a, b in zip(with_ack.input_ids, with_ack.labels, plain.labels) if a != b]
    assert tokenizer.decode(extra).strip() == ACK + "<|im_end|>"


def test_length_grouped_batches_cover_every_example_once():
    from latentqa.training import length_grouped_batches

    lengths = [5, 50, 7, 48, 6, 52, 9, 47, 8, 51]
    batches = length_grouped_batches(lengths, 2, seed=0, epoch=0, group=5)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert batches == length_grouped_batches(lengths, 2, seed=0, epoch=0, group=5)  # a function of (seed, epoch)
    assert batches != length_grouped_batches(lengths, 2, seed=0, epoch=1, group=5)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 100  # sorted within the window: pairs of similar length


def test_a_merged_adapter_reads_like_the_adapter_and_leaves_the_base_weights_exactly_as_they_were(tiny):
    from latentqa.decoder import merged_adapter

    torch.manual_seed(1)
    net = make_decoder(tiny.model, 4, 8, 0.0, ["q_proj", "v_proj", "up_proj"]).eval()
    for name, p in net.named_parameters():  # a random adapter: merging it changes the base weights
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids = torch.randint(0, 1000, (2, 9))
    with torch.no_grad():
        plain = net(input_ids=ids).logits
        with merged_adapter(net):
            changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
            merged = net(input_ids=ids).logits
        after = net(input_ids=ids).logits
    assert changed and all("base_layer" in k for k in changed)  # the update went into the base weights
    assert torch.allclose(merged, plain, atol=1e-4) and not torch.equal(merged, plain)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert torch.equal(after, plain)


def test_labelled_loss_is_the_full_vocabulary_loss_and_its_gradient(tiny):
    """The stage's loss projects only the answer columns onto the vocabulary; loss and adapter gradients must be
    the model's own full-logits loss, for left-padded decoder batches (patched) and right-padded lessons."""
    from latentqa.decoder import labelled_loss, write_block
    from latentqa.padding import right_pad
    from latentqa.patching import patched_block

    torch.manual_seed(0)
    decoder = make_decoder(tiny.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    for n, p in decoder.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)  # lora_B starts at zero, which would leave its gradient trivial
    ph = placeholder_id(tiny.tokenizer, "?")
    acts = [torch.randn(n, tiny.model.config.hidden_size) for n in (3, 6, 2)]
    answers = ["A pirate.", "A retired lighthouse keeper who speaks in short sentences.", "Yes."]
    left = collate([encode_example(tiny.tokenizer, len(a), "Who?", s, ph) for a, s in zip(acts, answers)], acts,
                   tiny.tokenizer.pad_token_id, torch.device("cpu"))
    ids, mask = right_pad([e.input_ids for e in (encode_example(tiny.tokenizer, 2, "Who?", s, ph) for s in answers)],
                          tiny.tokenizer.pad_token_id)
    labels, _ = right_pad([e.labels for e in (encode_example(tiny.tokenizer, 2, "Who?", s, ph) for s in answers)],
                          IGNORE)
    cases = [(left.labels, dict(input_ids=left.input_ids, attention_mask=left.attention_mask,
                                position_ids=left.position_ids), left.patch),
             (labels, dict(input_ids=ids, attention_mask=mask), None)]
    for labels, inputs, patch in cases:
        results = []
        for loss_of in (lambda: decoder(**inputs, labels=labels).loss, lambda: labelled_loss(decoder, labels, **inputs)):
            decoder.zero_grad()
            if patch is None:
                loss = loss_of()
            else:
                with patched_block(write_block(decoder, 1), patch):
                    loss = loss_of()
            loss.backward()
            results.append((loss.detach(), {n: p.grad.clone() for n, p in decoder.named_parameters() if p.requires_grad}))
        (full, full_grads), (ours, our_grads) = results
        torch.testing.assert_close(ours, full)
        for n in full_grads:
            torch.testing.assert_close(our_grads[n], full_grads[n], rtol=1e-4, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in our_grads.values())
