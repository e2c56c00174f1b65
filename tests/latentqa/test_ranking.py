"""Candidates ranked from one cached prompt give the losses of scoring each full sequence (the reference path)."""

import numpy as np
import pytest
import torch

from latentqa.decoder import make_decoder, placeholder_id
from latentqa.generate import answer_losses, text_losses
from latentqa.ranking import decoder_candidate_losses, text_candidate_losses

CANDIDATES = [["A pirate who loves gold.", "A chef.", "A very grumpy old cat who hates Mondays."],
              ["A knight.", "A shy robot that apologises."],
              ["A wizard.", "A teacher.", "A detective.", "A nurse on the night shift."]]


@pytest.fixture
def decoder(tiny):
    torch.manual_seed(1)
    net = make_decoder(tiny.model, 4, 8, 0.0, ["q_proj", "v_proj"]).eval()
    for name, p in net.named_parameters():  # a random adapter, so that the patched decoder differs from the base
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return net


def test_cached_prompt_losses_equal_full_sequence_losses(decoder, tokenizer):
    rng = np.random.default_rng(0)
    d = decoder.config.hidden_size
    acts = [rng.normal(0, 3, (n, d)).astype(np.float32) for n in (3, 7, 5)]
    questions = ["What persona?", "Who is speaking here, in a few words?", "Which one?"]
    ph = placeholder_id(tokenizer, "?")
    fast = decoder_candidate_losses(decoder, tokenizer, acts, questions, CANDIDATES, ph, write_layer=1)
    for a, q, cands, got in zip(acts, questions, CANDIDATES, fast):
        slow = answer_losses(decoder, tokenizer, [a] * len(cands), [q] * len(cands), cands, ph, write_layer=1)
        assert np.allclose(got, slow, atol=1e-5), (got, slow)
    zero = decoder_candidate_losses(decoder, tokenizer, [np.zeros_like(a) for a in acts], questions, CANDIDATES, ph, 1)
    assert not np.allclose(np.concatenate(zero), np.concatenate(fast), atol=1e-3)  # the activations were patched in


def test_text_candidate_losses_equal_the_text_readers_losses(decoder, tokenizer):
    texts = ["Arr, I sailed to find gold!", "Hello.", "The stew is hearty, to start off the party."]
    questions = ["What persona?", "Who?", "Which one?"]
    with decoder.disable_adapter():
        fast = text_candidate_losses(decoder, tokenizer, texts, questions, CANDIDATES)
        for t, q, cands, got in zip(texts, questions, CANDIDATES, fast):
            slow = text_losses(decoder, tokenizer, [t] * len(cands), [q] * len(cands), cands)
            assert np.allclose(got, slow, atol=1e-5), (got, slow)


def _generate(decoder, tokenizer, acts, questions, ph, eos, steps):
    """The reference decoding: transformers' generate over the patched prompt, cut after each row's eos."""
    from latentqa.decoder import collate, encode_example, write_block
    from latentqa.dialogs import pad_id_of
    from latentqa.patching import patched_block

    examples = [encode_example(tokenizer, len(a), q, None, ph) for a, q in zip(acts, questions)]
    batch = collate(examples, acts, pad_id_of(tokenizer), torch.device("cpu"))
    with torch.no_grad(), patched_block(write_block(decoder, 1), batch.patch):
        out = decoder.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=steps,
                               do_sample=False, pad_token_id=pad_id_of(tokenizer), eos_token_id=eos)
    rows = []
    for row in out[:, batch.input_ids.shape[1]:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def test_one_prefill_gives_the_references_replies_and_losses_with_rows_ending_apart(decoder, tokenizer):
    from latentqa.dialogs import pad_id_of
    from latentqa.ranking import decoder_prompts, greedy, prefill, score_continuations

    rng = np.random.default_rng(2)
    d = decoder.config.hidden_size
    acts = [rng.normal(0, 3, (n, d)).astype(np.float32) for n in (3, 7, 5)]
    questions = ["What persona?", "Who is speaking here, in a few words?", "Which one?"]
    ph, pad, steps = placeholder_id(tokenizer, "?"), pad_id_of(tokenizer), 8
    prompts, conts, patch = decoder_prompts(decoder, tokenizer, acts, questions, CANDIDATES, ph, 1, False)
    endless = greedy(decoder, prefill(decoder, prompts, pad, patch), steps, eos_id=-1)
    eos = endless[0][2]  # a token row 0 writes third: as end-of-sequence, rows stop at different steps
    assert any(eos not in row[:steps - 1] for row in endless), "no row runs on after row 0 stops"
    pre = prefill(decoder, prompts, pad, patch)
    losses = score_continuations(decoder, pre, conts, pad, max_rows=4)  # chunks split an item's candidates
    got = greedy(decoder, pre, steps, eos_id=eos)
    assert got == _generate(decoder, tokenizer, acts, questions, ph, eos, steps)
    assert got[0] == endless[0][:endless[0].index(eos) + 1]
    for a, q, cands, row in zip(acts, questions, CANDIDATES, losses):
        slow = answer_losses(decoder, tokenizer, [a] * len(cands), [q] * len(cands), cands, ph, write_layer=1)
        assert np.allclose(row, slow, atol=1e-5), (row, slow)


def test_rows_with_one_prompt_are_read_once_and_score_as_if_read_alone(decoder, tokenizer):
    """The zero control under one question and length, or the text reader of dialogs that differ only in the
    masked control, read identical prompts: the scorer prefills each distinct prompt once."""
    from latentqa.decoder import DecoderInfo
    from latentqa.evals.harness import Scorer

    ph = placeholder_id(tokenizer, "?")
    info = DecoderInfo("tiny", read_layer=1, write_layer=1, placeholder="?", placeholder_id=ph, variant="system")
    d = decoder.config.hidden_size
    a, b = (np.random.default_rng(s).normal(0, 3, (4, d)).astype(np.float32) for s in (0, 1))
    acts = [a, b, a.copy(), np.zeros_like(a), np.zeros_like(a)]
    questions = ["What persona?", "What persona?", "What persona?", "Which one?", "Which one?"]
    conts = [CANDIDATES[0], CANDIDATES[0][:2], ["A knight."], CANDIDATES[2], CANDIDATES[1]]
    together = Scorer(decoder, tokenizer, info, batch_size=2, max_new_tokens=3)
    read = together.read(acts, questions, conts)
    assert together.prompts == 3  # a and its copy; the two zero rows
    for row in range(len(acts)):
        alone = Scorer(decoder, tokenizer, info, batch_size=2, max_new_tokens=3)
        (reply, losses), = alone.read([acts[row]], [questions[row]], [conts[row]])
        assert read[row][0] == reply and np.allclose(read[row][1], losses, atol=1e-5), row
    texts = ["Arr, I sailed to find gold!", "Hello.", "Arr, I sailed to find gold!"]
    text_reader = Scorer(decoder, tokenizer, info, batch_size=4, max_new_tokens=3)
    read = text_reader.read_text(texts, ["Who?"] * 3, [CANDIDATES[0], ["A knight."], CANDIDATES[1]])
    assert text_reader.prompts == 2
    with decoder.disable_adapter():
        slow = text_losses(decoder, tokenizer, [texts[2]] * 2, ["Who?"] * 2, CANDIDATES[1])
    assert np.allclose(read[2][1], slow, atol=1e-5) and read[0][0] == read[2][0]


def _contrastive_alone(decoder, prompt, patch, null_patch, steps, eos, a, plausible):
    """The reference: one row, its own two prefills, each token chosen from the formula written out."""
    import math

    from latentqa.ranking import prefill

    own, null = (prefill(decoder, [prompt], -1, p) for p in (patch, null_patch))
    logits, null_logits, out = own.last_logits[0], null.last_logits[0], []
    for _ in range(steps):
        logp, null_logp = logits.log_softmax(-1), null_logits.log_softmax(-1)
        score = (1 + a) * logp - a * null_logp
        score[logp < logp.max() + math.log(plausible)] = -math.inf
        token = int(score.argmax())
        out.append(token)
        if token == eos:
            break
        step = torch.tensor([[token]])
        for pre in (own, null):
            pre.mask = torch.cat([pre.mask, torch.ones_like(pre.mask[:, :1])], dim=1)
            pre.positions = pre.positions[:, -1:] + 1
        logits = decoder(input_ids=step, attention_mask=own.mask, position_ids=own.positions,
                         cache=own.cache).logits[0, -1].float()
        null_logits = decoder(input_ids=step, attention_mask=null.mask, position_ids=null.positions,
                              cache=null.cache).logits[0, -1].float()
    return out


def test_contrastive_decoding_follows_its_formula_row_by_row_and_is_greedy_without_contrast(decoder, tokenizer):
    """Each reply token maximises (1 + a) log p(own) - a log p(zero activations) among plausible tokens, the two
    caches stay aligned while rows of a batch end apart, and a = 0 (or a null equal to the prompt) is greedy."""
    from latentqa.dialogs import pad_id_of
    from latentqa.ranking import decoder_prompts, greedy, prefill

    rng = np.random.default_rng(3)
    d = decoder.config.hidden_size
    acts = [rng.normal(0, 3, (n, d)).astype(np.float32) for n in (3, 7, 5)]
    zeros = [np.zeros_like(x) for x in acts]
    questions = ["What persona?", "Who is speaking here, in a few words?", "Which one?"]
    ph, pad, steps, a, floor = placeholder_id(tokenizer, "?"), pad_id_of(tokenizer), 8, 3.0, 0.3

    def both(shown):
        prompts, _, patch = decoder_prompts(decoder, tokenizer, shown, questions, [[]] * 3, ph, 1, False)
        return prompts, patch

    prompts, patch = both(acts)
    _, null_patch = both(zeros)
    endless = greedy(decoder, prefill(decoder, prompts, pad, patch), steps, -1,
                     prefill(decoder, prompts, pad, null_patch), a, floor)
    plain = greedy(decoder, prefill(decoder, prompts, pad, patch), steps, -1)
    assert endless != plain, "the contrast changed nothing: this test would not see it broken"
    eos = endless[1][2]
    got = greedy(decoder, prefill(decoder, prompts, pad, patch), steps, eos, prefill(decoder, prompts, pad, null_patch), a, floor)
    assert len({len(row) for row in got}) > 1, "rows should end at different steps"
    for k in range(3):
        one_prompt, one_patch = decoder_prompts(decoder, tokenizer, [acts[k]], [questions[k]], [[]], ph, 1, False)[::2]
        one_null = decoder_prompts(decoder, tokenizer, [zeros[k]], [questions[k]], [[]], ph, 1, False)[2]
        assert got[k] == _contrastive_alone(decoder, one_prompt[0], one_patch, one_null, steps, eos, a, floor), k
    same = greedy(decoder, prefill(decoder, prompts, pad, patch), steps, eos, prefill(decoder, prompts, pad, patch), a, floor)
    assert same == greedy(decoder, prefill(decoder, prompts, pad, patch), steps, eos)
    off = greedy(decoder, prefill(decoder, prompts, pad, patch), steps, eos, prefill(decoder, prompts, pad, null_patch), 0.0, floor)
    assert off == greedy(decoder, prefill(decoder, prompts, pad, patch), steps, eos)


def test_contrast_prefers_what_the_activations_raised_but_never_an_implausible_token():
    from latentqa.ranking import _choose

    own = torch.tensor([[0.60, 0.30, 0.05, 0.05]]).log()
    null = torch.tensor([[0.90, 0.09, 0.0001, 0.0099]]).log()
    assert _choose(own, None, 0.0, 0.1).tolist() == [0]       # greedy
    assert _choose(own, null, 1.0, 0.1).tolist() == [1]       # raised 0.09 -> 0.30; token 2 is below 0.1 x 0.60
    assert _choose(own, null, 1.0, 0.05).tolist() == [2]      # with a lower floor, the most raised token wins


def _prefills(decoder, tokenizer, acts, questions):
    from latentqa.dialogs import pad_id_of
    from latentqa.ranking import decoder_prompts, prefill

    ph = placeholder_id(tokenizer, "?")
    prompts, _, patch = decoder_prompts(decoder, tokenizer, acts, questions, [[] for _ in acts], ph, 1, False)
    null = decoder_prompts(decoder, tokenizer, [np.zeros_like(a) for a in acts], questions, [[] for _ in acts], ph, 1,
                           False)[2]
    pad = pad_id_of(tokenizer)
    return prefill(decoder, prompts, pad, patch), prefill(decoder, prompts, pad, null), pad


def test_rerank_keeps_the_plausible_answer_the_activations_raise_most(decoder, tokenizer, monkeypatch):
    """Rerank's choice is, among the greedy answer and its samples, the one with the largest loss drop from the
    zero-activation prompt to the item's own, among those within log(1/plausible) of the lowest loss; under
    zeros against zeros every drop is 0 and the greedy answer stays. Samples are the same on every run."""
    import math

    from latentqa import ranking

    rng = np.random.default_rng(0)
    acts = [rng.normal(0, 3, (n, decoder.config.hidden_size)).astype(np.float32) for n in (3, 5, 4)]
    questions = ["What persona?", "Who is it?", "Which one?"]
    pre, null, pad = _prefills(decoder, tokenizer, acts, questions)
    eos = tokenizer.eos_token_id
    seen = []
    real = ranking.score_continuations

    def spy(model, p, conts, pad_id, max_rows=32):
        out = real(model, p, conts, pad_id, max_rows)
        seen.append((conts, out))
        return out

    monkeypatch.setattr(ranking, "score_continuations", spy)
    chosen = ranking.rerank(decoder, pre, null, 4, eos, pad, 6, 1.0, torch.Generator().manual_seed(0), max_rows=64)
    (options, own), (_, base) = seen
    for j, pick in enumerate(chosen):
        floor = min(own[j]) - math.log(0.1)
        gains = [b - o if o <= floor else -math.inf for o, b in zip(own[j], base[j])]
        assert pick == options[j][int(np.argmax(gains))]
        assert len(options[j]) > 1, "no sample differed from greedy: this test would not see a wrong choice"
    again = ranking.rerank(decoder, pre, null, 4, eos, pad, 6, 1.0, torch.Generator().manual_seed(0), max_rows=64)
    assert again == chosen
    greedy_ids = ranking.greedy(decoder, ranking.repeated(null, [0, 1, 2]), 4, eos)
    assert ranking.rerank(decoder, null, null, 4, eos, pad, 6, 1.0, torch.Generator().manual_seed(0)) == greedy_ids
