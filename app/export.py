"""`latentqa export`: a dataset version or a trained decoder as a Hugging Face folder, optionally pushed to the Hub.

Facts come from the store (storage/export.py), the cards' text from latentqa/cards.py. The upload is the only
step that needs a network and a token; the token is read from HF_TOKEN here and handed only to huggingface_hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from latentqa.cards import dataset_card, decoder_card
from latentqa.models import hub_id
from storage import export
from storage.store import Store

TOKEN_ENV = "HF_TOKEN"


def export_dataset(root: Path, name: str, version: str | None, out: Path, licence: str) -> dict[str, int]:
    store = Store(root)
    record, chain = export.version_chain(store, name, version)
    facts = export.dataset_facts(store, name, record, chain)
    return export.write_dataset(store, chain, out, dataset_card(**facts, licence=licence))


def export_decoder(decoder_dir: Path, out: Path, licence: str) -> list[str]:
    facts = export.decoder_facts(decoder_dir)
    card = decoder_card(**facts, base_model=hub_id(facts["info"]["base_model"]), licence=licence)
    return export.write_decoder(decoder_dir, out, card)


class PushError(RuntimeError):
    pass


def push(folder: Path, repo_id: str, repo_type: str) -> str:
    """Upload `folder` to `repo_id` (created private if missing); the URL of the commit."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise PushError(f"--push needs a Hugging Face token in the environment variable {TOKEN_ENV}")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=True, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                               commit_message="latentqa export")
    return commit.commit_url
