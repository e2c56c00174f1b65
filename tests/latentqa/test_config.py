"""A bad config fails before any work, with a message that names the field."""

from pathlib import Path

import pytest

from latentqa.config import ConfigError, RunConfig, check_against_model, load_config

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, field", [
    ("train:\n  learning_rate: 0.1\n", "train.learning_rate"),          # unknown field
    ("synthesize:\n  n_description: -1\n", "synthesize.n_description"),  # negative size
    ("catalog:\n  paths: [missing.yaml]\n", "catalog.paths"),              # missing file
    ("extract:\n  variant: bogus\n", "extract.variant"),
    ("endpoint:\n  concurrency: 0\n", "endpoint.concurrency"),
    ("extract:\n  read_layers: [3, 3]\n", "extract.read_layers"),
    ("extract:\n  read_layers: [10]\ntrain:\n  read_layer: 12\n", "train.read_layer=12"),
])
def test_bad_field_is_named(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert field in str(err.value)


def test_layer_beyond_depth_is_named():
    cfg = RunConfig.model_validate({"extract": {"read_layers": [15, 30]}})
    with pytest.raises(ConfigError, match=r"extract.read_layers=30 is beyond the model's depth.*30 blocks"):
        check_against_model(cfg, n_layers=30)
    check_against_model(RunConfig(), n_layers=30)


@pytest.mark.parametrize("text, where", [
    ("name: x\nmodel:\n  name: [unclosed\n", "run.yaml:4:1"),
    ("train:\n  lr: 1\n lr2: 2\n", "run.yaml:3:2"),
    ("train: {lr: 1\n", "run.yaml:2:1"),
])
def test_yaml_syntax_error_names_file_line_and_column(tmp_path, text, where):
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(_write(tmp_path, text))
    assert str(err.value).split(": not valid YAML")[0].endswith(where)


def test_cli_rejects_a_layer_beyond_the_model_with_exit_2_and_no_flow_run(tmp_path, capsys):
    from app.cli import main

    assert main(["run", "--config", str(_write(tmp_path, "extract:\n  read_layers: [99]\n"))]) == 2
    captured = capsys.readouterr()
    assert "extract.read_layers=99 is beyond the model's depth" in captured.err
    assert "Beginning flow run" not in captured.out + captured.err  # refused before any flow (or Prefect server)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["demo.yaml", "llama3-8b.yaml",
                                  pytest.param("release.yaml", marks=pytest.mark.skipif(
                                      not (ROOT.parent / "shared" / "latentqa_data").is_dir(),
                                      reason="the LatentQA release is not beside the repository"))])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.extract.read_layers == [15]
    # the embedded model's configs write where they read (at block 0 the release run's decoder ignored the
    # activations); llama3-8b.yaml keeps the paper's block 0
    assert cfg.train.write_layer == (0 if name == "llama3-8b.yaml" else 15)


def test_config_is_frozen():
    cfg = RunConfig()
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.lr = 1.0


def test_remote_endpoint_without_key_fails_before_work(monkeypatch, tiny_model_dir):
    from latentqa.preflight import check_run

    monkeypatch.delenv("LATENTQA_MISSING_KEY", raising=False)
    cfg = RunConfig.model_validate({"model": {"name": str(tiny_model_dir)}, "extract": {"read_layers": [2]},
                                    "endpoint": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "LATENTQA_MISSING_KEY"}})
    with pytest.raises(ConfigError, match="endpoint.api_key_env names 'LATENTQA_MISSING_KEY'"):
        check_run(cfg)
    with pytest.raises(ConfigError, match="extract.read_layers=15 is beyond"):
        check_run(cfg.model_copy(update={"extract": cfg.extract.model_copy(update={"read_layers": [15]})}))


def test_overrides_keep_the_config_files_relative_paths(tmp_path):
    from app.cli import load_run_config

    (tmp_path / "cat.yaml").write_text("family: persona\ncategories:\n  sea:\n    pirate: Talk like a pirate.\n")
    (tmp_path / "run.yaml").write_text("catalog:\n  paths: [cat.yaml]\n")
    plain = load_run_config(tmp_path / "run.yaml", [])
    overridden = load_run_config(tmp_path / "run.yaml", ["train.lr=2e-4"])  # was: paths left relative to the cwd
    assert overridden.catalog.paths == plain.catalog.paths == [tmp_path / "cat.yaml"] and overridden.train.lr == 2e-4


def test_a_steering_control_file_is_found_beside_the_config_that_names_it(tmp_path, monkeypatch):
    """Issue 32: steer.control in a config file resolved against the working directory, unlike catalog.paths and
    release.source; builtin names and persona:<label> are left alone."""
    from latentqa.config import raw_config

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "ctl.yaml").write_text("pairs: [[q, a]]\n")
    (tmp_path / "cfg" / "run.yaml").write_text("steer:\n  control: ctl.yaml\n")
    (tmp_path / "cfg" / "builtin.yaml").write_text("steer:\n  control: positive\n")
    monkeypatch.chdir(tmp_path)  # elsewhere: the file is not in the working directory
    assert raw_config(tmp_path / "cfg" / "run.yaml")["steer"]["control"] == str(tmp_path / "cfg" / "ctl.yaml")
    assert raw_config(tmp_path / "cfg" / "builtin.yaml")["steer"]["control"] == "positive"
