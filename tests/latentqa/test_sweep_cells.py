"""The scaling sweep's domain: nested shares, the relative-depth layer rule, the run per model, the table."""

import hashlib
import math

import pytest

from latentqa.config import ConfigError, RunConfig, SweepConfig, TrainConfig, parse_config
from latentqa.splits import assign_splits, nested_share
from latentqa.sweep import cell_rows, cell_train, layer_at, markdown, model_runs
from storage.fingerprint import semantic_fields

LABELS = [f"persona-x-c{i:03d}" for i in range(37)]


def test_shares_are_nested_and_sized_by_ceiling():
    shares = {f: nested_share(LABELS * 2, f, seed=0) for f in (0.125, 0.25, 0.5, 1.0)}  # rows repeat labels
    assert [len(s) for s in shares.values()] == [math.ceil(f * 37) for f in shares]
    assert shares[0.125] < shares[0.25] < shares[0.5] < shares[1.0] == set(LABELS)
    assert nested_share(reversed(LABELS), 0.25, seed=0) == shares[0.25]  # a function of the labels, not their order
    assert nested_share(LABELS, 0.25, seed=1) != shares[0.25]


def test_a_share_is_not_the_order_the_eval_labels_were_drawn_in():
    split = assign_splits({label: "persona" for label in LABELS}, eval_fraction=0.25, seed=0)
    train = [l for l in sorted(LABELS, key=lambda l: hashlib.sha256(f"0:{l}".encode()).hexdigest()) if split[l] == "train"]
    assert nested_share(train, 5 / len(train), seed=0) != set(train[:5])  # else a share would be the labels
                                                                          # next in line for eval


def test_the_read_layer_is_the_same_relative_depth():
    assert layer_at(0.5, 30) == 15  # SmolLM2-135M, as the release config reads it
    assert layer_at(0.5, 18) == 9   # Gemma-3-270m
    assert layer_at(1.0, 18) == 17 and layer_at(0.0, 18) == 0


def run_config(**sweep) -> RunConfig:
    return RunConfig.model_validate({"model": {"name": "a"}, "extract": {"read_layers": [15]},
                                     "train": {"write_layer": 15}, "sweep": sweep})


def test_each_model_gets_its_layer_and_the_write_layer_follows_the_read_layer():
    depths = {"a": 30, "b": 18}
    runs = model_runs(run_config(models=["a", "b"], relative_depth=0.5), depths.__getitem__)
    assert [(r.model.name, r.extract.read_layers, r.train.write_layer) for r in runs] == [("a", [15], 15), ("b", [9], 9)]
    assert runs[1].model.revision is None and runs[1].evaluate == runs[0].evaluate  # only the model and layers change


def test_a_write_layer_apart_from_the_read_layer_stays_where_it_is():
    cfg = RunConfig.model_validate({"model": {"name": "a"}, "extract": {"read_layers": [15]},
                                    "train": {"write_layer": 0}, "sweep": {"models": ["b"], "relative_depth": 0.5}})
    (run,) = model_runs(cfg, lambda name: 18)
    assert run.extract.read_layers == [9] and run.train.write_layer == 0


def test_without_a_rule_every_model_keeps_the_configs_layers():
    runs = model_runs(run_config(), lambda name: pytest.fail("depth asked without relative_depth"))
    assert [r.model.name for r in runs] == ["a"] and runs[0].extract.read_layers == [15]


def test_bad_fractions_are_named():
    with pytest.raises(ConfigError, match=r"sweep.fractions must each be in \(0, 1\], got \[1.5\]"):
        parse_config({"sweep": {"fractions": [0.5, 1.5]}})
    assert SweepConfig(fractions=[1.0, 0.25, 0.25]).fractions == [0.25, 1.0]


def test_a_model_too_shallow_for_the_configs_layer_is_refused_before_any_work(tiny_model_dir):
    from latentqa.preflight import check_sweep

    cfg = RunConfig.model_validate({"model": {"name": str(tiny_model_dir)}, "extract": {"read_layers": [9]},
                                    "sweep": {"models": [str(tiny_model_dir)]}})
    with pytest.raises(ConfigError, match="9"):
        check_sweep(cfg)
    runs = check_sweep(cfg.model_copy(update={"sweep": SweepConfig(relative_depth=0.5)}))
    assert runs[0].extract.read_layers == [2]  # 4 blocks


def test_label_fraction_enters_the_fingerprint_only_away_from_its_default():
    assert "label_fraction" not in semantic_fields(TrainConfig())  # stores made before it keep their fingerprints
    assert semantic_fields(cell_train(RunConfig(), 1.0)) == semantic_fields(TrainConfig())
    assert semantic_fields(cell_train(RunConfig(), 0.25))["label_fraction"] == 0.25


def test_the_table_carries_every_condition_with_n_and_interval():
    summary = [{"task": "gist", "condition": c, "metric": m, "value": v, "lo": v - 0.1, "hi": v + 0.1, "n": 100}
               for c, v in (("decoder", 0.5), ("zero", 0.3)) for m in ("token_f1", "rouge_l")]
    rows = cell_rows("a", 0.25, 400, summary) + cell_rows("b", 0.25, 400, summary)
    assert len(rows) == 4 and {r["metric"] for r in rows} == {"token_f1"}  # primary metric only
    text = markdown(rows, ["b", "a"])
    assert "## gist (token_f1, n = 100)" in text
    lines = [l for l in text.splitlines() if l.startswith("| b") or l.startswith("| a")]
    assert lines == ["| b | 0.25 | 400 | 0.500 [0.400, 0.600] | 0.300 [0.200, 0.400] |",
                     "| a | 0.25 | 400 | 0.500 [0.400, 0.600] | 0.300 [0.200, 0.400] |"]


def test_identification_cells_carry_what_the_decoder_says_beside_what_it_ranks(tmp_path):
    from storage.plots import plot_scaling

    summary = [{"task": "hidden_persona", "condition": c, "metric": m, "value": v, "lo": v - 0.1, "hi": v + 0.1,
                "n": 100} for c, v in (("decoder", 0.8), ("shuffled", 0.2))
               for m in ("calibrated", "generative", "identification", "rouge_l")]
    rows = cell_rows("a", 1.0, 6400, summary) + cell_rows("b", 1.0, 6400, summary)
    assert {r["metric"] for r in rows} == {"calibrated", "generative"}
    text = markdown(rows, ["a", "b"])
    assert "## hidden_persona (calibrated, n = 100)" in text and "## hidden_persona (generative, n = 100)" in text
    plot_scaling(rows, ["a", "b"], tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 0
