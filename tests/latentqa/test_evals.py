"""Reading evaluations: scorers at their extremes, identification against same-split distractors, controls."""

import numpy as np
import pytest

from latentqa.evals.harness import (Scorer, first_strictly_lowest, margins, score_items, shuffled_sources, summarize,
                                    verdicts)
from latentqa.evals.items import hidden_persona_items, load_facts, relational_items, sample_per_task
from latentqa.evals.probe import Probe
from latentqa.evals.report import markdown
from latentqa.evals.stats import Interval, bootstrap, paired, reads
from latentqa.metrics import contains_answer, rouge_l, token_f1


@pytest.mark.parametrize("score", [rouge_l, token_f1, contains_answer])
def test_scorers_give_one_for_identical_and_zero_for_disjoint(score):
    assert score("The capital is Paris.", "The capital is Paris.") == 1.0
    assert score("blue whales swim", "Paris France Euro") == 0.0


def test_a_classification_answer_listing_every_option_is_not_exact():
    from latentqa.metrics import exclusive_choice

    choices = ["persona", "goal", "scenario"]
    assert exclusive_choice("It follows a goal.", "goal", choices) == 1.0
    assert exclusive_choice("It follows a persona, a goal or a scenario.", "goal", choices) == 0.0
    assert exclusive_choice("A persona.", "goal", choices) == 0.0


def test_exact_match_finds_the_object_inside_a_sentence():
    assert contains_answer("I think they pay with the Swiss franc these days.", "Swiss franc") == 1.0
    assert contains_answer("They use the franc.", "Swiss franc") == 0.0


def test_relational_table_has_at_least_100_facts_over_three_relations(tokenizer):
    relations, facts = load_facts()
    assert len(facts) >= 100 and set(relations) == {"capital", "currency", "language"}
    items = relational_items(tokenizer, 5, seed=0)
    assert len(items) == 5 and all(it.n_prefix == 0 for it in items)  # the target reads the whole prompt
    assert all("Tell me about" in tokenizer.decode(it.token_ids) for it in items)


PERSONAS = [{"label": f"persona-x-{i}", "text": text, "stimulus_user": "How was your day?"}
            for i, text in enumerate(["Speak as a pirate.", "Be a grumpy cat.", "Act as a cheerful chef.",
                                      "Respond as a tired knight.", "Answer as a shy robot.", "Talk like a wizard."])]


def test_identification_candidates_are_the_descriptions_of_a_block_of_k_personas(tokenizer):
    from latentqa.describe import describe

    by_label = {p["label"]: p for p in PERSONAS}
    items = hidden_persona_items(PERSONAS, tokenizer, k=3, seed=0)
    assert len(items) == 6  # two blocks of three
    peers = {it.item_id: it.peers for it in items}
    for item in items:
        persona = by_label[item.item_id]
        truth = describe("persona", persona["text"])[1]
        assert item.candidates[0] == truth == item.reference and item.source == persona["label"]
        assert item.peers[0] == item.item_id and len(set(item.peers)) == 3
        assert item.candidates == [describe("persona", by_label[p]["text"])[1] for p in item.peers]
        assert all(set(peers[p]) == set(item.peers) for p in item.peers)  # a block: each member names the others
        assert persona["text"] not in tokenizer.decode(item.token_ids[item.n_prefix:])  # the system turn is masked
    five = hidden_persona_items(PERSONAS, tokenizer, k=5, seed=0)
    assert len(five) == 5 and all(len(set(it.candidates)) == 5 for it in five)  # the sixth fills no block
    assert [it.item_id for it in five] != [it.item_id for it in hidden_persona_items(PERSONAS, tokenizer, 5, seed=1)]
    assert hidden_persona_items(PERSONAS[:1], tokenizer, k=5, seed=0) == []  # nothing to tell apart
    assert len(hidden_persona_items(PERSONAS[:2], tokenizer, k=5, seed=0)) == 2  # one block of what there is


def test_shuffled_activations_never_come_from_a_dialog_of_the_same_label():
    # gist items: several QA pairs per dialog, so "another item" is often the same dialog's activations
    sources = ["persona-a"] * 4 + ["goal-b"] * 3 + ["persona-c"]
    for seed in range(20):
        picks = shuffled_sources(sources, seed)
        assert len(picks) == len(sources) and all(sources[j] != s for j, s in zip(picks, sources))
    assert shuffled_sources(["same"] * 3, 0) == []  # no honest shuffle: the control is left out
    assert shuffled_sources(sources, 1) == shuffled_sources(sources, 1)  # seeded


def test_score_task_shuffles_across_labels(tiny, tokenizer):
    """Every shuffled row's activations are those of an item with another label (checked on the patch)."""
    from latentqa.evals import harness
    from latentqa.evals.items import Item

    items = [Item("gist", f"q{i}", "Q?", "A", [1, 2, 3], 1, source=src, acts=np.full((2, 4), i, np.float32))
             for i, src in enumerate(["a", "a", "a", "b", "b", "c"])]
    seen = {}

    class Recorder:
        def read(self, acts, questions, continuations, trained=True):
            seen.setdefault("gen", []).append([float(a[0, 0]) for a in acts])
            return [("x", [1.0])] * len(acts)

    harness.score_items(Recorder(), items, ["shuffled"], seed=3)
    (both,) = seen["gen"]  # the decoder's rows, then the shuffled ones: one model state, one pass
    decoder, shuffled = both[:len(items)], both[len(items):]
    assert decoder == [float(i) for i in range(len(items))]
    for own, used in zip(decoder, shuffled):
        assert items[int(own)].source != items[int(used)].source


def test_identification_counts_a_tie_as_a_miss():
    assert first_strictly_lowest([1.0, 2.0, 3.0])
    assert not first_strictly_lowest([2.0, 2.0, 3.0])  # a tie with a distractor is not a hit
    assert not first_strictly_lowest([5.0, 5.0, 5.0])  # a condition that cannot tell candidates apart
    assert not first_strictly_lowest([3.0, 1.0, 2.0])
    assert not first_strictly_lowest([1.0])  # no distractor: nothing identified


def test_bootstrap_interval_is_seeded_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(20) > 0.5, rng.random(2000) > 0.5
    a, b = bootstrap(small, seed=1), bootstrap(small, seed=1)
    assert a == b and a.lo <= a.mean <= a.hi and a.n == 20
    wide, narrow = a.hi - a.lo, bootstrap(large, seed=1).hi - bootstrap(large, seed=1).lo
    assert narrow < wide / 4
    flat = bootstrap([0.25] * 10, seed=0)
    assert (flat.mean, flat.lo, flat.hi, flat.n) == (0.25, 0.25, 0.25, 10)  # no spread, no width
    with pytest.raises(ValueError, match="no values"):
        bootstrap([], seed=0)


def test_paired_margin_is_narrower_than_unpaired_when_items_vary_together():
    rng = np.random.default_rng(0)
    difficulty = rng.random(100)
    control = difficulty
    decoder = difficulty + 0.05  # better on every item by a little
    m = paired(decoder, control, seed=0)
    assert m.lo > 0 and abs(m.mean - 0.05) < 1e-9
    d, c = bootstrap(decoder, 0), bootstrap(control, 0)
    assert d.lo < c.hi  # the unpaired intervals overlap although every pair favours the decoder
    assert reads(Interval(0.6, 0.5, 0.7, 100), [Interval(0.2, 0.1, 0.3, 100), Interval(0.4, 0.3, 0.45, 100)])
    assert not reads(Interval(0.6, 0.5, 0.7, 100), [Interval(0.45, 0.3, 0.55, 100)])  # overlapping intervals
    assert not reads(Interval(0.6, 0.5, 0.7, 100), [])


def test_descriptions_share_one_style_whatever_the_opener():
    from latentqa.describe import describe

    for text, who in [("Please adopt the persona of a retired circus performer. Be nostalgic.",
                       "a retired circus performer"),
                      ("I'd like you to take on the role of a night watchman who observes the world.",
                       "a night watchman who observes the world"),
                      ("Speak as a retired sea captain.", "a retired sea captain"),
                      ("Be a grumpy cat!", "a grumpy cat"),
                      ("A lighthouse keeper, always.", "A lighthouse keeper, always")]:
        question, answer = describe("persona", text)
        assert answer == f"The assistant will adopt the persona of {who}." and question.endswith("adopt?")
    assert describe("goal", "Use analogies. Always.")[1] == "The assistant was asked: Use analogies."


def test_probe_learns_a_separable_class():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(2, 1, (20, 8)), rng.normal(-2, 1, (20, 8))]).astype(np.float32)
    labels = ["goal"] * 20 + ["persona"] * 20
    assert Probe(x, labels).predict(np.array([[2.0] * 8, [-2.0] * 8], dtype=np.float32)) == ["goal", "persona"]


def test_every_condition_is_scored_and_identification_uses_the_losses(tiny, tokenizer):
    """On the tiny random decoder: all controls produce rows; identification is a per-item boolean."""
    from latentqa.decoder import DecoderInfo, make_decoder, placeholder_id
    from latentqa.evals.harness import block_hits
    from latentqa.evals.items import read_text
    from latentqa.evals.items import read_fresh

    model = tiny.model
    net = make_decoder(model, 4, 8, 0.0, ["q_proj", "v_proj"]).eval()
    ph = placeholder_id(tokenizer, "?")
    info = DecoderInfo("tiny", read_layer=1, write_layer=0, placeholder="?", placeholder_id=ph, variant="system")
    items = hidden_persona_items(PERSONAS, tokenizer, k=3, seed=0)
    with net.disable_adapter():
        read_fresh(net, items, 1, tokenizer.eos_token_id, batch_size=4)
    assert all(it.acts.shape == (len(it.token_ids) - it.n_prefix, model.config.hidden_size) for it in items)
    rows = score_items(Scorer(net, tokenizer, info, 4, 3), items, ["shuffled", "zero", "text_only", "untrained_patch"],
                      seed=0)
    conditions = {r["condition"] for r in rows}
    assert conditions == {"decoder", "shuffled", "zero", "text_only", "untrained_patch"}
    assert all(isinstance(r["identified"], bool) and r["k"] == 3 for r in rows)
    from latentqa.generate import answer_losses  # the plain path: one full forward per candidate, no cache

    decoder_rows = {r["item_id"]: r for r in rows if r["condition"] == "decoder"}
    plains = []
    for it in items:
        plain = answer_losses(net, tokenizer, [it.acts] * 3, [it.question] * 3, it.candidates, ph, 0)
        plains.append(plain)
        assert decoder_rows[it.item_id]["identified"] == first_strictly_lowest(plain)
        assert decoder_rows[it.item_id]["loss"] == pytest.approx(plain[0], abs=1e-4)  # the reference is candidate 0
    calibrated, attributed = block_hits(items, plains)
    assert [decoder_rows[it.item_id]["calibrated"] for it in items] == calibrated
    assert [decoder_rows[it.item_id]["attributed"] for it in items] == attributed
    summary = summarize(rows, seed=0)
    ident = {r["condition"]: r for r in summary if r["metric"] == "calibrated"}  # the task's primary score
    assert set(ident) == conditions and all(r["n"] == len(items) for r in ident.values())
    assert all(r["lo"] <= r["value"] <= r["hi"] for r in summary)
    margin = margins(rows, seed=0)
    assert {(m["control"], m["metric"]) for m in margin} == \
        {(c, metric) for c in conditions - {"decoder"} for metric in ("calibrated", "generative")}
    said = {r["condition"]: r for r in summary if r["metric"] == "generative"}  # what the replies name
    for m in margin:  # paired by item: the mean margin is the difference of the two means
        if m["metric"] == "generative":
            assert m["margin"] == pytest.approx(said["decoder"]["value"] - said[m["control"]]["value"], abs=1e-3)
            continue
        assert m["n"] == len(items) and m["lo"] <= m["margin"] <= m["hi"]
        assert m["margin"] == pytest.approx(ident["decoder"]["value"] - ident[m["control"]]["value"], abs=1e-3)
    report = markdown(summary, margin, verdicts(summary), rows)
    assert f"## hidden_persona (primary: calibrated, n={len(items)})" in report and "[" in report
    assert read_text(tokenizer, items[0])
    assert len(sample_per_task(items, 2, seed=0)) == 2


def test_llm_judge_scores_through_the_openai_client_and_caches(tmp_path, monkeypatch):
    import re

    from latentqa.config import EndpointConfig
    from latentqa.evals.judge import judge_rows
    from latentqa.llm import LLM, read_api_key
    from storage.requests import RequestCache, request_key
    from tests.fault_server import FaultServer

    def verdict(body):  # a judge that says 1 when the reference's first word is in the answer
        prompt = body["messages"][-1]["content"]
        ref = re.search(r'reference answer is: "([^"]*)"', prompt)[1].split()[0]
        ans = re.search(r'model answered: "([^"]*)"', prompt)[1]
        return {"score": int(ref.lower() in ans.lower())}

    rows = [{"task": "relational", "condition": "decoder", "question": "Currency?", "reference": "Euro",
             "generated": "They pay in Euro."},
            {"task": "relational", "condition": "zero", "question": "Currency?", "reference": "Euro",
             "generated": "Bananas."},
            {"task": "classification", "condition": "probe", "question": "Kind?", "reference": "goal",
             "generated": "goal"}]
    monkeypatch.setenv("JUDGE_KEY", "k")
    endpoint = EndpointConfig(base_url="http://unused", model_id="judge", api_key_env="JUDGE_KEY")
    with FaultServer(verdict) as server:
        cache = RequestCache(tmp_path / "requests.sqlite")
        llm = LLM(endpoint, server.base_url, read_api_key(endpoint, local=False), cache, request_key)
        assert judge_rows(llm, rows) == [1.0, 0.0, None]  # the probe has no free-text answer to judge
        sent = server.requests
        llm = LLM(endpoint, server.base_url, read_api_key(endpoint, local=False), cache, request_key)
        assert judge_rows(llm, rows) == [1.0, 0.0, None] and server.requests == sent  # cached
    for r, j in zip(rows, [1.0, 0.0, None]):
        r.update(judge=j, rouge_l=0.0, token_f1=0.0, exact=0.0, loss=1.0, identified=None, item_id="i")
    judged = {(r["condition"], r["metric"]): r["value"] for r in summarize(rows, 0) if r["metric"] == "judge"}
    assert judged == {("decoder", "judge"): 1.0, ("zero", "judge"): 0.0}


def test_scoring_reports_progress_per_batch(tiny, tokenizer):
    """The evaluate stage's progress: a log line every 10% per kind of work (and a bar / Prefect artifact)."""
    import logging

    from latentqa.decoder import DecoderInfo, make_decoder, placeholder_id
    from latentqa.evals.items import read_fresh
    from tasks.evaluate import scoring_progress

    net = make_decoder(tiny.model, 4, 8, 0.0, ["q_proj", "v_proj"]).eval()
    info = DecoderInfo("tiny", 1, 0, "?", placeholder_id(tokenizer, "?"), "system")
    items = hidden_persona_items(PERSONAS, tokenizer, k=3, seed=0)
    with net.disable_adapter():
        read_fresh(net, items, 1, tokenizer.eos_token_id, batch_size=4)
    controls = ["shuffled", "zero", "text_only"]
    scorer = Scorer(net, tokenizer, info, batch_size=3, max_new_tokens=2,
                    progress=scoring_progress(items, controls))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("latentqa")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)  # not `log.level = `: that leaves the logger's cached isEnabledFor(INFO) answer
    disabled, log.disabled = log.disabled, False  # a logging.config.dictConfig earlier in the session (Prefect's
    try:                                          # setup) disables loggers that existed before it
        score_items(scorer, items, controls, seed=0)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.disabled = disabled
    lines = [r.getMessage() for r in records]
    total = len(items) * 4  # decoder + three controls
    generated = [m for m in lines if m.startswith("evaluate: replies generated:")]
    ranked = [m for m in lines if m.startswith("evaluate: items ranked:")]
    assert len(generated) >= 3 and generated[-1] == f"evaluate: replies generated: {total}/{total}"
    assert len(ranked) >= 3 and ranked[-1] == f"evaluate: items ranked: {total}/{total}"


def test_calibration_cancels_a_description_prior_that_raw_identification_falls_for(tokenizer):
    from latentqa.evals.harness import block_hits

    items = hidden_persona_items(PERSONAS, tokenizer, k=3, seed=0)
    prior = {it.item_id: 0.5 * i for i, it in enumerate(items)}  # some descriptions are likelier whatever is read
    own = 0.2  # reading: a description is a little likelier under its own item's activations
    ranked = [[prior[c] - (own if c == it.item_id else 0.0) for c in it.peers] for it in items]
    raw = [first_strictly_lowest(r) for r in ranked]
    calibrated, attributed = block_hits(items, ranked)
    assert calibrated == [True] * 6 and attributed == [True] * 6
    assert not all(raw)  # the prior wins for the items whose description is not the block's likeliest
    blind = [[prior[c] for c in it.peers] for it in items]  # the activations change nothing
    assert block_hits(items, blind) == ([False] * 6, [False] * 6)  # ties everywhere: misses, not hits
    partial = block_hits(items[:4], ranked[:4])  # a block not all scored: no calibrated score for its members
    assert partial[0].count(None) >= 1 and None in partial[1]


def test_hidden_goal_items_ask_the_goal_question_of_goal_descriptions(tokenizer):
    from latentqa.describe import GOAL_QUESTION, describe

    goals = [{"label": f"goal-{i}", "text": text, "stimulus_user": "Can you help me?"}
             for i, text in enumerate(["Always answer in rhymes.", "Recommend a book in every reply.",
                                       "Keep every answer under ten words."])]
    items = hidden_persona_items(goals, tokenizer, k=3, seed=0, task="hidden_goal")
    assert {it.task for it in items} == {"hidden_goal"} and all(it.question == GOAL_QUESTION for it in items)
    by_label = {g["label"]: g["text"] for g in goals}
    assert all(it.reference == describe("goal", by_label[it.item_id])[1] for it in items)
    assert all(by_label[it.item_id] not in tokenizer.decode(it.token_ids[it.n_prefix:]) for it in items)


def test_the_judge_names_the_candidate_an_answer_describes_in_an_order_of_its_own(tmp_path, monkeypatch):
    """Generative identification judged: the judge sees the block's candidates in a seeded order per item (the
    truth is not always first) and a pick maps back to the candidate it names; none picked is a miss."""
    import re

    from latentqa.config import EndpointConfig
    from latentqa.evals.judge import judge_picks
    from latentqa.llm import LLM, read_api_key
    from storage.requests import RequestCache, request_key
    from tests.fault_server import FaultServer

    shown_first = []

    def pick(body):  # a judge that picks the listed description sharing the answer's last word, else none
        prompt = body["messages"][-1]["content"]
        answer = re.search(r'model answered: "([^"]*)"', prompt)[1]
        listed = re.findall(r"^(\d+)\. (.*)$", prompt, re.M)
        shown_first.append((answer, listed[0][1]))
        word = answer.rstrip(".").split()[-1].lower()
        return {"choice": next((int(n) for n, c in listed if word in c.lower()), 0)}

    cands = {("hidden_persona", f"p{i}"): [f"A {w}." for w in ws] for i, ws in enumerate(
        [("pirate", "chef", "nurse"), ("chef", "pirate", "nurse"), ("nurse", "chef", "pirate"),
         ("robot", "chef", "nurse"), ("poet", "knight", "surfer"), ("knight", "poet", "surfer")])}
    rows = [{"task": "hidden_persona", "item_id": f"p{i}", "condition": "decoder", "question": "Who?",
             "generated": g} for i, g in enumerate(["I am a pirate.", "A pirate.", "A nurse.", "Nothing here.",
                                                     "A poet.", "A surfer."])]
    rows.append({"task": "gist", "item_id": "g", "condition": "decoder", "question": "?", "generated": "x"})
    monkeypatch.setenv("JUDGE_KEY", "k")
    endpoint = EndpointConfig(base_url="http://unused", model_id="judge", api_key_env="JUDGE_KEY")
    with FaultServer(pick) as server:
        llm = LLM(endpoint, server.base_url, read_api_key(endpoint, local=False),
                  RequestCache(tmp_path / "requests.sqlite"), request_key)
        got = judge_picks(llm, rows, cands)
    assert got == [True, False, True, False, True, False, None]
    truth_of = {r["generated"]: cands[(r["task"], r["item_id"])][0] for r in rows[:-1]}
    assert len(shown_first) == 6 and sum(first == truth_of[a] for a, first in shown_first) < 6  # shuffled
