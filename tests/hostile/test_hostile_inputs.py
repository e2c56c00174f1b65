"""Every bad input of the corpus (tests/hostile/cases.py) stops `latentqa run` before any stage: exit code 2, a
message naming the problem, no traceback, and a store that is byte-for-byte what it was. Plus damaged stores."""

import contextlib
import hashlib
import io
import json

import pytest

import app.cli as cli
from storage.store import Store, StoreError
from tests.hostile.cases import CASES, materialize


def _snapshot(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _started():  # reached only once every check has passed: the run would start Prefect and the stages
    raise AssertionError("the bad input passed every check: the run would have started")


def test_the_corpus_is_large_and_names_are_unique():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_before_any_stage_and_leaves_the_store_alone(case, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_report_to_local_server", _started)
    monkeypatch.delenv("LATENTQA_HOSTILE_UNSET_KEY", raising=False)
    argv = materialize(case, tmp_path)
    store = tmp_path / "store"
    (store / "extract" / "0123456789ab").mkdir(parents=True)  # an earlier run's output, which must survive
    (store / "extract" / "0123456789ab" / "part-00000.parquet").write_bytes(b"earlier bytes")
    before = _snapshot(store)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # the real exit code: a SystemExit with a message exits 1, not 2
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            err.write(str(exit_.code))
    text = err.getvalue()
    assert code == 2, text
    assert case.expect in text, f"{case.name}: {text!r}"
    assert "Traceback" not in text
    assert _snapshot(store) == before


REAL_COMMAND = ["--set malformed value", "--set a field of the name", "config not utf-8", "spend cap without prices"]


@pytest.mark.parametrize("name", REAL_COMMAND)
def test_the_real_command_exits_2_without_a_traceback(name, tmp_path):
    """The same as above through the installed `latentqa` process: its real exit code and stderr."""
    import subprocess
    import sys

    case = next(c for c in CASES if c.name == name)
    argv = materialize(case, tmp_path)
    done = subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert case.expect in done.stderr and "Traceback" not in done.stderr, done.stderr


def _finished_stage(store: Store):
    with store.open_stage("extract", "a" * 64) as out:
        out.file("part-00000.parquet").write_bytes(b"0123456789" * 10)
        return out.commit(version=1)


def test_a_truncated_part_is_an_error_naming_it_not_a_cache_hit(tmp_path):
    store = Store(tmp_path / "store")
    manifest = _finished_stage(store)
    part = store.root / manifest.dir / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:37])
    with pytest.raises(StoreError, match=r"part-00000.parquet is 37 bytes, its manifest says 100 bytes"):
        store.finished("extract", "a" * 64)
    part.unlink()
    with pytest.raises(StoreError, match=r"part-00000.parquet is missing"):
        store.finished("extract", "a" * 64)


@pytest.mark.parametrize("damage", ["{not json", json.dumps({"stage": "extract"}), ""])
def test_a_damaged_manifest_is_an_error_naming_it(tmp_path, damage, capsys):
    store = Store(tmp_path / "store")
    manifest = _finished_stage(store)
    (store.root / manifest.dir / "manifest.json").write_text(damage)
    with pytest.raises(StoreError, match="manifest.json is damaged"):
        store.finished("extract", "a" * 64)
    assert cli.main(["lineage", "a" * 12, "--root", str(store.root)]) == 2
    assert "manifest.json is damaged" in capsys.readouterr().err
