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


def test_a_same_size_corruption_is_not_a_cache_hit(tmp_path):
    """Issue 32, item 4: only sizes were checked, so other bytes of the same size were served as finished."""
    store = Store(tmp_path / "store")
    manifest = _finished_stage(store)
    part = store.root / manifest.dir / "part-00000.parquet"
    part.write_bytes(b"9876543210" * 10)  # 100 bytes, as recorded
    with pytest.raises(StoreError, match=r"part-00000.parquet does not have the sha256 its manifest records"):
        store.finished("extract", "a" * 64)


def test_a_large_parquet_file_is_checked_by_its_footer_on_a_hit_and_by_its_hash_on_verify(tmp_path, monkeypatch,
                                                                                           capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import storage.store as store_module

    store = Store(tmp_path / "store")
    with store.open_stage("extract", "b" * 64) as out:
        pq.write_table(pa.table({"x": list(range(1000))}), out.file("part-00000.parquet"))
        manifest = out.commit(version=1)
    monkeypatch.setattr(store_module, "HASH_ON_HIT", 16)  # as if the part were large: no hash on a hit
    part = store.root / manifest.dir / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the data: the footer still reads
    part.write_bytes(bytes(data))
    assert store.finished("extract", "b" * 64) is not None  # a hit checks the footer only ...
    assert cli.main(["verify", "--root", str(store.root)]) == 2  # ... verify hashes every file
    assert "does not have the sha256" in capsys.readouterr().err
    part.write_bytes(bytes(data[:-8]) + b"XXXXXXXX")  # the footer's magic gone, same size
    with pytest.raises(StoreError, match="its Parquet footer cannot be read"):
        store.finished("extract", "b" * 64)


def test_run_and_lineage_refuse_a_damaged_store_before_any_stage(tmp_path, monkeypatch, capsys):
    """`latentqa run` on a store with a truncated finished file: exit 2 before Prefect, no traceback, no writer
    lock, the store as it was; lineage names the damage too; verify passes once it is repaired."""
    monkeypatch.setattr(cli, "_report_to_local_server", _started)
    root = tmp_path / "store"
    store = Store(root)
    manifest = _finished_stage(store)
    assert cli.main(["verify", "--root", str(root)]) == 0
    part = root / manifest.dir / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:37])
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  root: {root}\n")
    before = _snapshot(root)
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "holds 1 damaged stage directory" in err and "part-00000.parquet is 37 bytes" in err
    assert "Traceback" not in err and _snapshot(root) == before and not list(root.rglob("writer.lock"))
    assert cli.main(["lineage", "a" * 12, "--root", str(root)]) == 2
    assert "part-00000.parquet is 37 bytes" in capsys.readouterr().err
