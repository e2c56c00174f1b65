"""A model enters fingerprints by its weights, not its name: new weights behind the same folder invalidate the cache."""

import shutil
from types import SimpleNamespace

import pytest
import torch

from latentqa.config import ExtractConfig, ModelConfig, TrainConfig
from latentqa.models import model_identity
from tasks import extract, train


def _fingerprints(folder) -> tuple[str, str]:
    model, up = ModelConfig(name=str(folder)), SimpleNamespace(fingerprint="0" * 64)
    return (extract.fingerprint_of({"cfg": ExtractConfig(), "model": model, "dialogs": up}),
            train.fingerprint_of({"cfg": TrainConfig(), "model": model, "split": up, "acts": up}))


def test_new_weights_behind_the_same_folder_change_the_fingerprints(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    before = _fingerprints(folder)
    assert _fingerprints(folder) == before  # stable while nothing changes
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0  # one weight of one matrix
    model.save_pretrained(folder)
    after = _fingerprints(folder)
    assert after[0] != before[0] and after[1] != before[1]
    (folder / "notes.txt").write_text("not a weight file")
    assert _fingerprints(folder) == after  # files that are not weights or config do not count


def test_a_hub_id_is_known_by_its_revision_and_refused_when_it_cannot_be_resolved(tmp_path, monkeypatch):
    assert model_identity("org/model", revision="abc123") == {"revision": "abc123"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="has no model.revision and its revision cannot be resolved"):
        model_identity("org/never-cached-model")
    ref = tmp_path / "models--org--cached" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123abcd\n")
    assert model_identity("org/cached") == {"revision": "0123abcd"}


def test_the_embedded_model_is_known_by_its_packaged_weights():
    identity = model_identity("smollm2-135m-instruct")
    assert set(identity) == {"weights_sha256"} and len(identity["weights_sha256"]) == 64
