"""The control catalog: shipped size and families, and LLM-written controls deduplicated against it."""

import pyarrow.parquet as pq
import pytest

from latentqa.catalog import Control, accept_new, builtin_paths, load_controls
from latentqa.config import CatalogConfig, EndpointConfig
from latentqa.prompts import description_questions
from tasks.catalog import load_catalog
from tests.fault_server import FaultServer


def test_builtin_catalog_has_three_families_120_controls_in_10_categories():
    controls = load_controls(builtin_paths(), ["persona", "goal", "scenario"])
    assert len(controls) >= 120 and len({(c.family, c.category) for c in controls}) >= 10
    assert {c.family for c in controls} == {"persona", "goal", "scenario"}
    assert all(c.label.startswith(f"{c.family}-{c.category}-") for c in controls)
    assert len({c.label for c in controls}) == len(controls)
    scenarios = [c for c in controls if c.family == "scenario"]
    assert all(1 <= c.text.count(". ") + 1 <= 3 for c in scenarios)  # 2-3 sentence stories
    assert any("Where" in q for q in description_questions("scenario", 5))  # extractive questions


def test_near_duplicates_of_the_catalog_and_of_each_other_are_dropped():
    catalog = [Control("persona-animals-cat", "persona", "animals", "Speak as a house cat who loves naps.")]
    candidates = [
        Control("persona-animals-gen-cat2", "persona", "animals", "Speak as a house cat who loves naps."),  # same text
        Control("persona-animals-gen-cat3", "persona", "animals", "Speak as a house cat who loves long naps."),  # near
        Control("persona-animals-gen-horse", "persona", "animals", "Respond as a racehorse who wants to gallop."),
        Control("persona-animals-gen-horse", "persona", "animals", "Act as a sleepy owl at noon."),  # label taken
        Control("persona-animals-gen-pony", "persona", "animals", "Respond as a racehorse who wants to gallop!"),
    ]
    accepted, rejected = accept_new(catalog, candidates)
    assert [c.label for c in accepted] == ["persona-animals-gen-horse"]
    assert [(c.label, reason) for c, reason, _ in rejected] == [
        ("persona-animals-gen-cat2", "duplicate_text"), ("persona-animals-gen-cat3", "near_duplicate"),
        ("persona-animals-gen-horse", "duplicate_label"), ("persona-animals-gen-pony", "duplicate_text")]


def _generated(body: dict) -> dict:
    """Two new controls per category: one fresh, one copying the first seed example of the prompt."""
    prompt = body["messages"][-1]["content"]
    category = prompt.split('category "', 1)[1].split('"', 1)[0]
    first_seed = prompt.split("\n- ", 1)[1].split("\n", 1)[0]
    return {"controls": [{"slug": "fresh", "text": f"A brand new {category} control number {len(prompt)} with unique words."},
                         {"slug": "copy", "text": first_seed}]}


@pytest.mark.slow
def test_generation_adds_new_controls_and_records_the_duplicates(tmp_store, monkeypatch):
    cfg = CatalogConfig(families=["scenario"], generate_per_category=2)
    with FaultServer(_generated) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model_id="m", api_key_env="LATENTQA_TEST_KEY",
                                  structured_output="json_schema")
        monkeypatch.setenv("LATENTQA_TEST_KEY", "k")
        manifest = load_catalog.fn(cfg, tmp_store, endpoint)
        sent = server.requests - server.probes
        again = load_catalog.fn(cfg, tmp_store, endpoint)  # finished: no request at all
        assert again == manifest and server.requests - server.probes == sent
    n_categories = len({c.category for c in load_controls(builtin_paths(), ["scenario"])})
    assert sent == n_categories
    rows = pq.read_table(tmp_store.path(manifest, "controls.parquet")).to_pylist()
    generated = [r for r in rows if "-gen-" in r["label"]]
    assert len(generated) == n_categories and all(r["label"].endswith("-gen-fresh") for r in generated)
    rejected = pq.read_table(tmp_store.path(manifest, "generated_rejected.parquet")).to_pylist()
    assert len(rejected) == n_categories and {r["reason"] for r in rejected} == {"duplicate_text"}
    assert manifest.counts["n_generated"] == n_categories and manifest.counts["generated_rejected_duplicate_text"] == n_categories
    with pytest.raises(ValueError, match="needs an endpoint"):
        load_catalog.fn(CatalogConfig(families=["goal"], generate_per_category=1), tmp_store)


@pytest.mark.slow
def test_generation_stopped_by_the_cap_commits_nothing_and_a_higher_cap_completes_it(tmp_store, monkeypatch):
    from latentqa.llm import BudgetExceeded
    from tasks.catalog import fingerprint_of

    cfg = CatalogConfig(families=["scenario"], generate_per_category=2)
    n_categories = len({c.category for c in load_controls(builtin_paths(), ["scenario"])})
    # a reply costs 50 completion tokens = $0.05; a request's worst case (its max_tokens) is several times that,
    # so a $0.4 cap pays for a few categories, not all
    prices = {"price_prompt_per_mtok": 0.0, "price_completion_per_mtok": 1000.0}
    monkeypatch.setenv("LATENTQA_TEST_KEY", "k")
    with FaultServer(_generated) as server:
        def endpoint(cap):
            return EndpointConfig(base_url=server.base_url, model_id="m", api_key_env="LATENTQA_TEST_KEY",
                                  structured_output="json_schema", max_cost_usd=cap, **prices)

        with pytest.raises(BudgetExceeded, match="catalog generation stopped at endpoint.max_cost_usd=0.4"):
            load_catalog.fn(cfg, tmp_store, endpoint(0.4))
        paid = server.requests - server.probes
        assert 0 < paid < n_categories
        assert tmp_store.finished("catalog", fingerprint_of({"cfg": cfg, "endpoint": endpoint(0.4)})) is None
        manifest = load_catalog.fn(cfg, tmp_store, endpoint(100.0))
    assert server.requests - server.probes == n_categories  # the rerun sent only the categories not paid for
    assert manifest.counts["n_generated"] == n_categories
