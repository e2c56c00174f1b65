"""The decoder uses the activations: after a few hundred steps its held-out loss is lower with the true
activations than with activations from a dialog of another control."""

import random

import pytest

from latentqa.config import ExtractConfig, ModelConfig, TrainConfig
from latentqa.decoder import encode_example, make_decoder, placeholder_id
from latentqa.models import load_model
from latentqa.training import eval_loss, fit
from storage.parquet import SPLIT, write_table
from storage.store import Store
from tasks._data import activation_reader, load_examples
from tasks.extract import extract
from tests.tasks.helpers import make_synth

pytestmark = pytest.mark.slow
PERSONAS = {  # control, and a reply that shows it (the decoder reads the stimulus and reply, not the control)
    "pirate": ("Talk like a pirate.", "Arr matey, {} be a fine treasure on the high seas!"),
    "chef": ("Speak as a chef.", "Like a good recipe, {} needs salt, butter and patience."),
    "robot": ("Respond as a robot.", "BEEP. PROCESSING {}. RESULT: ACCEPTABLE. END OF LINE."),
    "poet": ("Answer as a poet.", "Oh {}, sweet muse of the silver morning light."),
    "knight": ("Speak as a knight.", "By my honour and my sword, {} shall be defended!"),
    "surfer": ("Talk like a surfer.", "Dude, {} is totally gnarly, like riding a huge wave."),
}
TOPICS = ["the weather", "my cat", "a new job", "dinner plans", "a long trip", "the news", "my garden", "a film",
          "the gym", "a book", "my car", "the beach", "a party", "math homework", "a museum", "the bus"]


def test_true_activations_beat_shuffled_on_held_out_dialogs(tmp_path, default_model_dir):
    # the real default model: a random tiny one has nothing to say about what it read
    model, store = ModelConfig(name="smollm2-135m-instruct"), Store(tmp_path / "s")
    dialogs, rows = [], []
    for p, (text, reply) in PERSONAS.items():
        for t, topic in enumerate(TOPICS):
            did = f"persona-x-{p}:{t}"
            dialogs.append({"dialog_id": did, "label": f"persona-x-{p}", "family": "persona", "category": "x",
                            "control_user": text, "control_model": "Sure.", "stimulus_user": f"Tell me about {topic}.",
                            "stimulus_model": reply.format(topic)})
            rows.append({"qa_id": f"{did}:q0", "dialog_id": did, "label": f"persona-x-{p}", "family": "persona",
                         "category": "x", "kind": "description", "question": "Who is the assistant?",
                         "answer": f"A {p}.", "split": "eval" if t >= 12 else "train"})  # unseen topics held out
    acts = extract.fn(ExtractConfig(read_layers=[15]), model, make_synth(store, dialogs), store)
    with store.open_stage("filter", "f" * 64) as out:
        for split in ("train", "eval"):
            write_table(out.file(f"{split}.parquet"), [r for r in rows if r["split"] == split], SPLIT)
        split_m = out.commit(version=1)

    loaded = load_model(model.name)
    ph = placeholder_id(loaded.tokenizer, "?")
    reader = activation_reader(store, acts)
    _, *train_set = load_examples(store, split_m, reader, "train", loaded.tokenizer, ph, 15)
    eval_rows, eval_ex, eval_views = load_examples(store, split_m, reader, "eval", loaded.tokenizer, ph, 15)
    cfg = TrainConfig(lr=3e-4, batch_size=4, epochs=10, max_steps=50, eval_every=1000)
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    fit(decoder, tuple(train_set), ([], []), cfg, loaded.tokenizer.pad_token_id, loaded.device)

    rng = random.Random(0)
    other = [rng.choice([j for j, s in enumerate(eval_rows) if s["label"] != r["label"]]) for r in eval_rows]
    shuffled_views = [eval_views[j] for j in other]
    shuffled_ex = [encode_example(loaded.tokenizer, len(v), r["question"], r["answer"], ph)
                   for r, v in zip(eval_rows, shuffled_views)]
    pad = loaded.tokenizer.pad_token_id
    true_loss = eval_loss(decoder, eval_ex, eval_views, pad, loaded.device, cfg)
    shuffled_loss = eval_loss(decoder, shuffled_ex, shuffled_views, pad, loaded.device, cfg)
    print(f"held-out loss: true {true_loss:.3f}, shuffled {shuffled_loss:.3f}")
    assert true_loss < shuffled_loss - 0.5, (true_loss, shuffled_loss)


def test_rerank_says_the_hidden_persona_more_often_than_greedy_when_the_prior_wins(default_model_dir):
    """A decoder trained briefly on data where one persona dominates answers that persona greedily whatever it
    reads; rerank (evaluate.decoding) keeps, among its samples, the answer its activations raise most against
    zeros, and names each item's own persona more often. The held-out items share their user turns, as hidden
    prompts over a neutral stimulus do, so only the persona tells their activations apart."""
    from latentqa.decoder import DecoderInfo
    from latentqa.dialogs import encode_dialog
    from latentqa.evals.harness import Scorer
    from latentqa.residual import read_spans

    loaded = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    tok, ph = loaded.tokenizer, placeholder_id(loaded.tokenizer, "?")
    dialogs = [(p, f"Tell me about {topic}.", reply.format(topic)) for p, (_, reply) in PERSONAS.items()
               for topic in TOPICS[:12]]
    # four reads of each persona under one neutral turn: rerank samples anew each time, greedy answers alike
    held_out = [(p, "Tell me about yourself.", reply.format("that")) for p, (_, reply) in PERSONAS.items()
                for _ in range(4)]
    encoded = [encode_dialog(tok, {"control_user": PERSONAS[p][0], "control_model": "Sure.", "stimulus_user": s,
                                   "stimulus_model": r}, "stimulus_completion") for p, s, r in dialogs + held_out]
    acts = read_spans(loaded.model, encoded, 15, tok.pad_token_id, 16)
    question = "Who is the assistant?"
    train = [i for i, (p, _, _) in enumerate(dialogs) for _ in range(20 if p == "pirate" else 1)]  # the prior
    examples = [encode_example(tok, len(acts[i]), question, f"A {dialogs[i][0]}.", ph) for i in train]
    cfg = TrainConfig(lr=3e-4, batch_size=4, epochs=10, max_steps=12, eval_every=1000, write_layer=15)
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    fit(decoder, (examples, [acts[i] for i in train]), ([], []), cfg, tok.pad_token_id, loaded.device)
    decoder.eval()
    info = DecoderInfo("smollm2-135m-instruct", 15, 15, "?", ph, "stimulus_completion")
    views = acts[len(dialogs):]
    hits = {}
    for decoding in ("greedy", "rerank"):
        read = Scorer(decoder, tok, info, 16, 8, decoding=decoding, samples=8).read(
            views, [question] * len(views), [[f"A {p}."] for p, _, _ in held_out])
        hits[decoding] = sum(p in reply.lower() for (p, _, _), (reply, _) in zip(held_out, read))
    print(f"own persona named, of {len(held_out)}: {hits}")
    assert hits["greedy"] <= 8, "greedy was not prior-bound: this test would not see rerank do better"
    assert hits["rerank"] >= hits["greedy"] + 4, hits
