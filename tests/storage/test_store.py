"""Store: the completion rule of PROTOCOL.md, and manifest fields that match the document exactly."""

import json
import re
from pathlib import Path

import pytest

from storage.manifest import Manifest
from storage.store import StoreError, is_stage_dir

PROTOCOL = Path(__file__).resolve().parents[2] / "storage" / "PROTOCOL.md"


def _commit(store, fp="a" * 64, payload=b"data"):
    with store.open_stage("extract", fp) as out:
        out.file("part-00000.parquet").write_bytes(payload)
        return out.commit(version=1, counts={"n": 1})


def test_commit_renames_partial_and_lists_files(tmp_store):
    manifest = _commit(tmp_store)
    final = tmp_store.root / "extract" / ("a" * 12)
    assert is_stage_dir(final) and not final.with_name(final.name + ".partial").exists()
    assert [f.path for f in manifest.files] == ["part-00000.parquet"]
    assert manifest.files[0].bytes == 4
    assert tmp_store.finished("extract", "a" * 64) == manifest


def test_directory_without_manifest_is_not_finished(tmp_store):
    with pytest.raises(RuntimeError):
        with tmp_store.open_stage("extract", "b" * 64) as out:
            out.file("part-00000.parquet").write_bytes(b"x")
            raise RuntimeError("killed")
    assert tmp_store.finished("extract", "b" * 64) is None
    partial = tmp_store.root / "extract" / ("b" * 12 + ".partial")
    assert partial.is_dir() and not (partial / "manifest.json").exists()


def test_a_stage_that_fails_before_writing_a_file_leaves_nothing(tmp_store):
    """Bad input found after the directory was opened (a malformed release, a missing endpoint) writes nothing;
    a failure after a file was written keeps the .partial directory for the rerun (the test above)."""
    with pytest.raises(ValueError):
        with tmp_store.open_stage("import", "e" * 64) as out:
            out.file("sub/dir")  # folders alone are nothing a rerun could reuse
            raise ValueError("malformed input")
    assert not (tmp_store.root / "import").exists()
    _commit(tmp_store)
    with pytest.raises(ValueError):
        with tmp_store.open_stage("extract", "f" * 64):
            raise ValueError("malformed input")
    assert sorted(p.name for p in (tmp_store.root / "extract").iterdir()) == ["a" * 12]


def test_tmp_files_never_count(tmp_store):
    partial = tmp_store.root / "extract" / ("c" * 12 + ".partial")
    partial.mkdir(parents=True)
    (partial / "part-00001.parquet.tmp").write_bytes(b"half")
    with tmp_store.open_stage("extract", "c" * 64) as out:
        assert out.finished_files("part-*") == []
        manifest = out.commit(version=1)
    assert manifest.files == []


def test_half_written_directories_are_removed_on_reopen(tmp_store):
    """A kill while a checkpoint directory was being written (train's step-N.tmp/) must not block the rerun."""
    half = tmp_store.root / "train" / ("d" * 12 + ".partial") / "checkpoints" / "step-000003.tmp"
    half.mkdir(parents=True)
    (half / "state.json").write_text("{")
    whole = half.with_name("step-000002")
    whole.mkdir()
    with tmp_store.open_stage("train", "d" * 64) as out:
        assert sorted(p.name for p in (out.dir / "checkpoints").iterdir()) == ["step-000002"]


def test_second_writer_is_refused(tmp_store):
    with tmp_store.open_stage("train", "d" * 64):
        with pytest.raises(StoreError, match="another process"):
            with tmp_store.open_stage("train", "d" * 64):
                pass


def test_reading_an_unfinished_directory_fails_loudly(tmp_store):
    manifest = _commit(tmp_store)
    (tmp_store.root / manifest.dir / "manifest.json").unlink()
    with pytest.raises(StoreError, match="not a finished stage directory"):
        tmp_store.path(manifest, "part-00000.parquet")


def test_manifest_fields_match_protocol(tmp_store):
    table = PROTOCOL.read_text().split("## Manifest", 1)[1].split("##", 1)[0]
    documented = re.findall(r"^\| (\w+) \|", table, flags=re.M)
    documented = [f for f in documented if f != "field"]
    written = json.loads((tmp_store.root / _commit(tmp_store).dir / "manifest.json").read_text())
    assert sorted(written) == sorted(documented), "manifest.json keys differ from storage/PROTOCOL.md, 'Manifest'"
    assert sorted(Manifest.model_fields) == sorted(documented)


def test_stage_writers_rename_into_place_and_a_killed_model_save_leaves_nothing_behind(tmp_store):
    class Killed(Exception):
        pass

    class HalfSaved:  # save_pretrained that dies after its first file, as a SIGKILL mid-save would leave it
        def save_pretrained(self, path, safe_serialization=True):
            Path(path).mkdir(parents=True)
            (Path(path) / "adapter_config.json").write_text("{}")
            raise Killed

    class Saved:
        def save_pretrained(self, path, safe_serialization=True):
            Path(path).mkdir(parents=True)
            (Path(path) / "adapter_model.safetensors").write_bytes(b"weights")

    with pytest.raises(Killed):
        with tmp_store.open_stage("steer", "e" * 64) as out:
            out.write_text("report.md", "# report\n")
            out.write_json("steer.json", {"b": 1, "a": [2]})
            out.save_model("adapter", HalfSaved())
    partial = tmp_store.root / "steer" / ("e" * 12 + ".partial")
    assert not (partial / "adapter").exists() and (partial / "adapter.tmp").is_dir()
    assert (partial / "report.md").read_text() == "# report\n"
    assert json.loads((partial / "steer.json").read_text()) == {"a": [2], "b": 1}
    with tmp_store.open_stage("steer", "e" * 64) as out:
        assert not (out.dir / "adapter.tmp").exists()  # the killed save's leftovers never count
        out.save_model("adapter", Saved())
        out.write_text("scratch.txt", "x")
        out.remove("scratch.txt")
        manifest = out.commit(version=1)
    assert sorted(f.path for f in manifest.files) == ["adapter/adapter_model.safetensors", "report.md", "steer.json"]
