"""Control by reading on the default model: a decoder that reads sentiment steers the target's replies.

A small decoder is trained here to answer "How does the assistant feel?" from the activations of replies that
are cheerful or gloomy. The steer stage then trains a LoRA on the target through that frozen decoder, towards
"happy", and scores greedy replies to open prompts with VADER: the steered target must move further towards
positive than a random LoRA of the same size does. Measured here (2-core CPU, 30 steps, lr 1e-4): mean VADER
compound of the replies 0.369 before, 0.557 steered, 0.329 with the random LoRA.
"""

import json

import pytest
import torch
import yaml

from latentqa.config import ModelConfig, SteerConfig, TrainConfig
from latentqa.decoder import DecoderInfo, encode_example, make_decoder, placeholder_id
from latentqa.dialogs import encode_turns
from latentqa.models import load_model
from latentqa.residual import read_layers
from latentqa.training import fit
from storage.store import Store
from tasks.steer import steer
from tests.protocol_files import assert_files_match_protocol

pytestmark = pytest.mark.slow
LAYER = 15
HAPPY = "The assistant feels happy, cheerful and full of joy."
SAD = "The assistant feels sad, gloomy and miserable."
TOPICS = ["the weather", "my job", "the city", "dinner", "the weekend", "my neighbours", "the news", "school",
          "the traffic", "winter", "the garden", "a long trip"]
REPLIES = {HAPPY: "Oh, {} is wonderful! I love it, it makes me so happy and grateful.",
           SAD: "Ugh, {} is awful. I hate it, it makes me so sad and miserable."}


def _sentiment_decoder(store: Store, loaded) -> object:
    tok = loaded.tokenizer
    ph = placeholder_id(tok, "?")
    examples, views = [], []
    for topic in TOPICS:
        for feeling, reply in REPLIES.items():
            msgs = [{"role": "user", "content": f"Tell me about {topic}."},
                    {"role": "assistant", "content": reply.format(topic)}]
            enc = encode_turns(tok, [], msgs, False)
            acts = read_layers(loaded.model, torch.tensor([enc.token_ids]), torch.ones(1, len(enc.token_ids),
                                                                                       dtype=torch.long), [LAYER])
            views.append(acts[LAYER][0].numpy())
            examples.append(encode_example(tok, len(views[-1]), "How does the assistant feel?", feeling, ph))
    cfg = TrainConfig(lr=5e-4, batch_size=4, epochs=10, max_steps=30, eval_every=1000)
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    fit(decoder, (examples, views), ([], []), cfg, tok.pad_token_id, loaded.device)
    with store.open_stage("train", "d" * 64) as out:
        decoder.save_pretrained(out.file("adapter"))
        out.write_json("decoder.json", DecoderInfo("smollm2-135m-instruct", LAYER, 0, "?", ph, "stimulus_completion").to_json())
        return out.commit(version=2)


def test_steering_moves_replies_towards_the_requested_sentiment_more_than_a_random_lora(tmp_path, default_model_dir):
    store, model = Store(tmp_path / "s"), ModelConfig(name="smollm2-135m-instruct")
    train_manifest = _sentiment_decoder(store, load_model(model.name))
    control = tmp_path / "happy.yaml"
    control.write_text(yaml.safe_dump({"pairs": [["How does the assistant feel?", HAPPY]]}))
    cfg = SteerConfig(control=str(control), evals=["sentiment"], steps=30, lr=1e-4)
    manifest = steer.fn(cfg, model, train_manifest, store)
    values = {(r["condition"], r["metric"]): r["value"] for r in manifest.summary["results"]}
    before, steered = values[("before", "mean_compound")], values[("steered", "mean_compound")]
    random_lora = values[("random_lora", "mean_compound")]
    print(f"mean VADER compound: before {before:.3f}, steered {steered:.3f}, random LoRA {random_lora:.3f}; "
          f"decoder loss {manifest.summary['first_loss']:.3f} -> {manifest.summary['last_loss']:.3f}")
    assert manifest.summary["last_loss"] < manifest.summary["first_loss"]
    assert steered - before > 0 and steered - before > random_lora - before, (before, steered, random_lora)
    assert (store.path(manifest, "adapter") / "adapter_model.safetensors").is_file()
    assert "| sentiment | positive_share |" in store.path(manifest, "report.md").read_text()
    assert_files_match_protocol(manifest)


def test_persona_control_gets_its_pairs_by_reading_and_every_eval_runs(tmp_path, tiny_model_dir, tokenizer):
    """The persona path on the tiny random model (mechanics only): pairs come from the decoder's reading,
    and sentiment, debias and persona identification are measured before, after and for the random LoRA."""
    from latentqa.decoder import make_decoder

    store, model = Store(tmp_path / "s"), ModelConfig(name=str(tiny_model_dir))
    loaded = load_model(model.name)
    decoder = make_decoder(loaded.model, 4, 8, 0.0, ["q_proj", "v_proj"])
    with store.open_stage("train", "e" * 64) as out:
        decoder.save_pretrained(out.file("adapter"))
        out.write_json("decoder.json", DecoderInfo(str(tiny_model_dir), 1, 0, "?", placeholder_id(tokenizer, "?"),
                                                    "system").to_json())
        train_manifest = out.commit(version=2)
    cfg = SteerConfig(control="persona:persona-fantasy-pirate", evals=["sentiment", "debias", "persona"], steps=2,
                      max_new_tokens=3, identification_k=3)
    manifest = steer.fn(cfg, model, train_manifest, store)
    results = {(r["eval"], r["condition"], r["metric"]) for r in manifest.summary["results"]}
    for condition in ("before", "steered", "random_lora"):
        assert {("sentiment", condition, "mean_compound"), ("debias", condition, "stereotype_margin"),
                ("debias", condition, "stereotype_abs_margin"), ("persona", condition, "identification")} <= results
    values = {(r["condition"], r["metric"]): r["value"] for r in manifest.summary["results"] if r["eval"] == "debias"}
    for condition in ("before", "steered", "random_lora"):  # fairness is the distance from zero, whatever the sign
        assert values[condition, "stereotype_abs_margin"] == abs(values[condition, "stereotype_margin"])
    written = json.loads(store.path(manifest, "steer.json").read_text())
    assert written["persona"].startswith("Talk like a pirate") and written["pairs"]
    assert all(q.endswith("?") for q, _ in written["pairs"])  # the persona description questions
    measured, trained = set(written["persona_measured_on"]), set(written["trained_on"])
    assert len(measured) >= 8 and trained and not measured & trained  # identification on prompts never steered on
