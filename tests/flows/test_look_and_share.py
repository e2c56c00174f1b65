"""What a person does with a finished store: export it for the Hugging Face libraries, and look at a decoder in
the playground (latentqa/playground.py in Python, `latentqa ui` in headless Chromium). One tiny pipeline run
under a Prefect test server makes the store they all use."""

import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.store import Store
from tests.flows.helpers import tiny_config
from tests.flows.test_pipeline import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(prefect_harness, tiny_model_dir, tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("store"), tiny_model_dir)
    state, states = run(cfg)
    return cfg, state, states


def test_an_exported_dataset_loads_with_datasets_into_its_splits(first_run, tmp_path, monkeypatch, capsys):
    """`latentqa export dataset`: the folder loads offline with `datasets` into train and eval, row for row the
    filter stage's splits with their dialogs' turns, under a card that names the version and what was dropped."""
    from datasets import load_dataset

    from app.cli import main

    cfg = first_run[0]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-exported")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "dataset"
    assert main(["export", "dataset", "--root", str(cfg.storage.root), "--name", cfg.name, "--out", str(out)]) == 0
    store = Store(cfg.storage.root)
    split = next(m for m in store.manifests() if m.stage == "filter")
    ds = load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert set(ds) == {"train", "eval"}
    for name in ("train", "eval"):
        expected = pq.read_table(store.path(split, f"{name}.parquet")).sort_by("qa_id").to_pylist()
        rows = ds[name].to_list()
        assert [r["qa_id"] for r in rows] == [r["qa_id"] for r in expected]
        assert all(r["answer"] == e["answer"] and r["control_user"] for r, e in zip(rows, expected))
    card = (out / "README.md").read_text()
    assert split.fingerprint[:12] in card and "| train |" in card and "sk-test" not in card
    assert "split: eval" in card  # the Hub reads the splits from the card's header too
    # a second export of another name fails cleanly and leaves the first folder as it was
    assert main(["export", "dataset", "--root", str(cfg.storage.root), "--name", "nope", "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err and (out / "data" / "train-00000-of-00001.parquet").is_file()


def test_an_exported_decoder_loads_with_peft_and_reads_as_the_stored_one(first_run, tmp_path, monkeypatch, capsys):
    """`latentqa export decoder`: PeftModel.from_pretrained loads the folder onto the base model and gives the
    stored adapter's logits; the card carries the layers, the training data version and the scores with n."""
    import torch
    from peft import PeftModel

    from app.cli import main
    from latentqa.decoder import load_decoder
    from latentqa.models import load_model

    cfg = first_run[0]
    store = Store(cfg.storage.root)
    train = next(m for m in store.manifests() if m.stage == "train")
    out = tmp_path / "decoder"
    assert main(["export", "decoder", str(store.root / train.dir), "--out", str(out)]) == 0
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    stored = load_decoder(store.root / train.dir).net
    exported = PeftModel.from_pretrained(load_model(cfg.model.name).model, out).eval()
    with torch.no_grad():
        assert torch.equal(stored(input_ids=ids).logits, exported(input_ids=ids).logits)
        assert load_decoder(out).info == load_decoder(store.root / train.dir).info  # the latentqa reader loads it too
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and f"`{train.fingerprint[:12]}`" in card
    assert "| relational | decoder |" in card and "| text_only |" in card  # the scores, with their n
    # --push without a token: a clear error naming the variable, and the exported folder stays
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["export", "decoder", str(store.root / train.dir), "--out", str(out), "--push", "me/x"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err and (out / "adapter_model.safetensors").is_file()


def _decoder_dir(cfg) -> Path:
    store = Store(cfg.storage.root)
    return store.root / next(m for m in store.manifests() if m.stage == "train").dir


@pytest.fixture(scope="module")
def playground(first_run):
    from latentqa.playground import Playground

    return Playground(_decoder_dir(first_run[0]))


def test_the_playground_answers_under_every_condition_from_the_activations_it_says(playground):
    """Each condition's loss of a reference answer is the one a direct call gets from that condition's
    activations: the dialog's own (a plain read), another dialog's, zeros, the same ones with the adapter off."""
    import numpy as np

    from latentqa.dialogs import encode_dialog
    from latentqa.generate import answer_losses

    pg = playground
    other = {"dialog_id": "x:d0", "control_user": "Be a cat.", "stimulus_user": "What do you do all day?",
             "variant": "system"}
    qs, refs = ["What persona is the assistant adopting?", "What does it like?"], ["A pirate.", "The sea."]
    readings = pg.ask_all(qs, "How was your weekend?", "Talk like a pirate.", references=refs, other=other,
                          max_new_tokens=3)
    assert [r.question for r in readings] == qs
    assert all(set(r.answers) == set(r.losses) == {"decoder", "shuffled", "zero", "text_only", "untrained_patch"}
               for r in readings)
    own = pg.activations("How was your weekend?", system="Talk like a pirate.")
    shuffled = pg.read([encode_dialog(pg.tokenizer, other, "system")], pg.info.read_layer)[0]
    args = (pg.info.placeholder_id, pg.info.write_layer, pg.info.norm_match)

    def losses(acts, trained=True):
        with pg._weights(trained):
            return answer_losses(pg.net, pg.tokenizer, [acts] * 2, qs, refs, *args)

    for condition, expected in (("decoder", losses(own)), ("shuffled", losses(shuffled)),
                                ("zero", losses(np.zeros_like(own))), ("untrained_patch", losses(own, False))):
        assert [r.losses[condition] for r in readings] == pytest.approx(expected, abs=1e-5), condition
    assert readings[0].losses["decoder"] != pytest.approx(readings[0].losses["shuffled"], abs=1e-4)
    assert all(r.losses is not None for r in readings)
    no_refs = pg.ask_all(qs[:1], "How was your weekend?", max_new_tokens=3)
    assert no_refs[0].losses is None and "shuffled" not in no_refs[0].answers  # no stored dialog, no shuffle


def test_the_playground_ranks_candidates_against_zero_activations_and_can_rerank(playground):
    """Each patched condition ranks the candidates by loss minus the same candidate's loss under zeros (the
    text reader by raw loss), and rerank's answer is one the decoder itself wrote."""
    import numpy as np

    from latentqa.generate import answer_losses

    pg, q = playground, "What persona is the assistant adopting?"
    cands = ["A pirate captain.", "A cheerful gardener.", "A tired nurse."]
    readings = pg.ask_all([q], "How was your weekend?", "Talk like a pirate.", candidates=cands, max_new_tokens=3)
    ranking = readings[0].ranking
    assert set(ranking) == {"decoder", "zero", "text_only", "untrained_patch"}
    own = pg.activations("How was your weekend?", system="Talk like a pirate.")
    args = (pg.info.placeholder_id, pg.info.write_layer, pg.info.norm_match)
    loss = answer_losses(pg.net, pg.tokenizer, [own] * 3, [q] * 3, cands, *args)
    zero = answer_losses(pg.net, pg.tokenizer, [np.zeros_like(own)] * 3, [q] * 3, cands, *args)
    expected = sorted(zip(cands, [a - b for a, b in zip(loss, zero)]), key=lambda t: t[1])
    assert [c for c, _ in ranking["decoder"]] == [c for c, _ in expected]
    assert [s for _, s in ranking["decoder"]] == pytest.approx([s for _, s in expected], abs=1e-3)
    assert all(s == 0 for _, s in ranking["zero"])  # zeros against zeros: nothing read, nothing ranked
    reranked = pg.ask_all([q], "How was your weekend?", "Talk like a pirate.", max_new_tokens=3, decoding="rerank")
    assert set(reranked[0].answers) == {"decoder", "zero", "text_only", "untrained_patch"}
    assert reranked[0].ranking is None


def test_the_playground_shows_the_masked_and_the_read_tokens(playground):
    from latentqa.dialogs import encode_turns

    given = playground.given("How was your weekend?", "Talk like a pirate.")
    prefix = [{"role": "system", "content": "Talk like a pirate."}]
    enc = encode_turns(playground.tokenizer, prefix, [*prefix, {"role": "user", "content": "How was your weekend?"}],
                       gen=True)
    kinds = [k for _, k in given.spans()]
    assert kinds == ["masked"] * enc.n_prefix + ["read"] * (len(enc.token_ids) - enc.n_prefix)
    assert "pirate" in "".join(t for t, k in given.spans() if k == "masked")
    assert "weekend" in "".join(t for t, k in given.spans() if k == "read")


@pytest.mark.parametrize("call, says", [
    (dict(prompt="   "), "the dialog is empty"),
    (dict(layer=99), "read layer 99 is not in the model"),
    (dict(questions=["", " "]), "ask at least one question"),
    (dict(references=["a", "b"]), "2 reference answers for 1 questions"),
    (dict(candidates=["only one"]), "one candidate answer ranks against nothing"),
    (dict(decoding="beam"), "decoding 'beam' is not one of"),
    (dict(max_tokens=8), "longer than the model's context of 8"),
])
def test_bad_playground_input_gets_a_message_that_names_it(playground, monkeypatch, call, says):
    from latentqa.playground import PlaygroundError

    if "max_tokens" in call:
        monkeypatch.setattr(playground, "max_tokens", call.pop("max_tokens"))
    kwargs = {"questions": ["What persona?"], "prompt": "Hello there.", **call}
    with pytest.raises(PlaygroundError, match=says):
        playground.ask_all(**kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _textarea(browser, label: str):
    found = browser.find_elements("xpath", f"//*[contains(text(), {label!r})]/ancestor::label[1]//textarea")
    assert found, f"no text box labelled {label!r}"
    return found[0]


def test_the_ui_answers_a_question_beside_the_controls_offline(first_run, tmp_path, request):
    """The page loads and answers with every request to 127.0.0.1 (any other host fails to resolve in this
    browser, so a CDN asset would break the page), shows bad input as a message, and browses reports."""
    from app.ui import launch
    from tests.flows.test_deployments import _browser, _click_tab, _wait_for_text

    cfg = first_run[0]
    port = _free_port()
    page = launch(Path(cfg.storage.root), port, block=False)
    browser = _browser(tmp_path / "profile", ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"])
    shots = Path(request.config.getoption("--screenshots") or tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        _wait_for_text(browser, ["latentqa playground", "This decoder"], timeout_s=120)
        _click_tab(browser, "This decoder: layers, training data, lineage, scores")  # opens the accordion
        _wait_for_text(browser, ["reads block", "training data: dataset", "relational"])
        browser.find_element("xpath", "//button[normalize-space(.)='Ask']").click()
        body = _wait_for_text(browser, ["Answered 1 question(s) reading layer 2", "untrained_patch", "text_only", "shuffled"],
                              timeout_s=180)
        assert "What persona is the assistant adopting?" in body
        elsewhere = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(u => !u.startsWith('http://127.0.0.1') && !u.startsWith('data:') && !u.startsWith('blob:'))")
        assert elsewhere == [], f"the page asked for assets elsewhere: {elsewhere}"
        browser.execute_script("document.getElementById('message').scrollIntoView()")
        browser.save_screenshot(str(shots / "playground.png"))

        box = _textarea(browser, "User message")
        box.clear()
        box.send_keys(" ")
        browser.find_element("xpath", "//button[normalize-space(.)='Ask']").click()
        body = _wait_for_text(browser, ["Cannot read this: the dialog is empty"], timeout_s=60)
        assert "Traceback" not in body

        _click_tab(browser, "Reports")
        _wait_for_text(browser, ["decoder reads"], timeout_s=60)
    finally:
        browser.quit()
        page.close()
