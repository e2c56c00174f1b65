"""Dataset versions on a real store: `latest` moves only to complete new versions; gc keeps N, leased, latest."""

import hashlib
import multiprocessing as mp

import pytest

from storage import datasets
from storage.store import Store, StoreError


def _stage(store, stage, seed, inputs=()):
    fp = hashlib.sha256(f"{stage}-{seed}".encode()).hexdigest()
    if done := store.finished(stage, fp):  # as a cached stage would
        return done
    with store.open_stage(stage, fp) as out:
        out.file("data.bin").write_bytes(seed.encode())
        return out.commit(version=1, inputs=list(inputs))


def _version(store, seed, catalog=None):
    catalog = catalog or _stage(store, "catalog", "shared")
    synth = _stage(store, "synthesize", seed, [catalog])
    acts = _stage(store, "extract", seed, [synth])
    split = _stage(store, "filter", seed, [synth, acts])
    chain = {"catalog": catalog, "synthesize": synth, "extract": acts, "filter": split}
    record, is_new = datasets.record_version(store, "demo", chain)
    return chain, record, is_new


def _exists(store, manifest):
    return (store.root / manifest.dir / "manifest.json").is_file()


def test_latest_moves_to_new_versions_only(tmp_store):
    first, rec1, new1 = _version(tmp_store, "v1")
    assert new1 and datasets.resolve_version(tmp_store, "demo")["version"] == rec1["version"]
    _, rec2, new2 = _version(tmp_store, "v2")
    assert new2 and datasets.resolve_version(tmp_store, "demo")["version"] == rec2["version"]
    _, again, new_again = _version(tmp_store, "v1")  # a cached rerun of the older config
    assert not new_again and again == rec1
    assert datasets.resolve_version(tmp_store, "demo")["version"] == rec2["version"]
    assert datasets.resolve_version(tmp_store, "demo", rec1["version"][:8]) == rec1
    assert [r["version"] for r in datasets.versions(tmp_store, "demo")] == [rec2["version"], rec1["version"]]


def test_an_incomplete_chain_is_never_recorded(tmp_store):
    chain, _, _ = _version(tmp_store, "v1")
    with pytest.raises(ValueError, match="missing \\['filter'\\]"):
        datasets.record_version(tmp_store, "other", {k: v for k, v in chain.items() if k != "filter"})
    with pytest.raises(LookupError, match="no complete version"):
        datasets.resolve_version(tmp_store, "other")


def test_gc_keeps_n_newest_and_removes_what_only_old_versions_reach(tmp_store):
    old, rec_old, _ = _version(tmp_store, "old")
    decoder = _stage(tmp_store, "train", "on-old", [old["filter"], old["extract"]])  # derived from the old version
    mid, rec_mid, _ = _version(tmp_store, "mid", old["catalog"])
    new, rec_new, _ = _version(tmp_store, "new", old["catalog"])
    stray = _stage(tmp_store, "train", "no-version")  # reached by no version: not gc's to judge

    plan = datasets.gc(tmp_store, keep=2)
    assert plan.removed_versions == [f"demo/{rec_old['version'][:12]}"]
    assert not any(_exists(tmp_store, m) for s, m in old.items() if s != "catalog") and not _exists(tmp_store, decoder)
    assert _exists(tmp_store, old["catalog"])  # shared with kept versions
    assert all(_exists(tmp_store, m) for m in [*mid.values(), *new.values(), stray])
    assert [r["version"] for r in datasets.versions(tmp_store, "demo")] == [rec_new["version"], rec_mid["version"]]


def _hold(root, version, ready, release):
    with datasets.lease(Store(root), "demo", version):
        ready.set()
        release.wait(30)


def test_gc_never_removes_a_version_in_use_or_latest(tmp_store):
    old, rec_old, _ = _version(tmp_store, "old")
    _, rec_new, _ = _version(tmp_store, "new")
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    reader = ctx.Process(target=_hold, args=(str(tmp_store.root), rec_old["version"], ready, release))
    reader.start()
    try:
        assert ready.wait(60)
        plan = datasets.gc(tmp_store, keep=1)
        assert plan.leased_versions == [f"demo/{rec_old['version'][:12]}"] and not plan.removed_dirs
        assert all(_exists(tmp_store, m) for m in old.values())
    finally:
        release.set()
        reader.join(30)
    plan = datasets.gc(tmp_store, keep=1)  # released: now it goes
    assert plan.removed_versions == [f"demo/{rec_old['version'][:12]}"]
    assert datasets.resolve_version(tmp_store, "demo")["version"] == rec_new["version"]
    with pytest.raises(ValueError, match="at least 1"):
        datasets.gc(tmp_store, keep=0)


def test_reading_a_version_whose_directory_is_gone_names_it(tmp_store):
    chain, _, _ = _version(tmp_store, "v1")
    (tmp_store.root / chain["extract"].dir / "manifest.json").unlink()
    with pytest.raises(StoreError, match="extract directory .* is gone"):
        with datasets.open_version(tmp_store, "demo"):
            pass
