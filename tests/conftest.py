"""Shared fixtures: a tiny random Llama with a real chat tokenizer, a temporary store, a Prefect harness.

Nothing is downloaded: the tokenizer comes from the embedded default (SmolLM2, converted once per machine into
the model cache), and the tiny model's weights are random.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded SmolLM2 converted to safetensors (done once per machine, reused from the cache)."""
    from latentqa.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 4-block Llama saved with the SmolLM2 tokenizer: a loadable local model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny(tiny_model_dir):
    from latentqa.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture
def tmp_store(tmp_path):
    from storage.store import Store

    return Store(tmp_path / "store")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


DIALOGS = [
    {"control_user": "Talk like a pirate who loves treasure.", "control_model": "Arr, I will.",
     "stimulus_user": "How was your weekend?", "stimulus_model": "Arr, I sailed to find gold!"},
    {"control_user": "Answer every message in rhyming couplets.", "control_model": "I shall rhyme all the time.",
     "stimulus_user": "What should I cook tonight?", "stimulus_model": "A stew that is hearty, to start off the party."},
    {"control_user": "Be a grumpy assistant who complains about everything.", "control_model": "Fine. Whatever.",
     "stimulus_user": "Can you help me plan a trip?", "stimulus_model": "Ugh, trips. Crowds and delays. Fine, where to?"},
]


def pytest_addoption(parser):
    parser.addoption("--screenshots", default=None, help="folder for the UI test's screenshots (default: tmp)")
