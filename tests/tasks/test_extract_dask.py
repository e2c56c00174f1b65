"""extract on a 2-worker Dask LocalCluster through prefect-dask gives the activations of the single-process run."""

import numpy as np
import pytest
from prefect import flow

from latentqa.config import ExtractConfig, ModelConfig
from storage.manifest import Manifest
from storage.parquet import ActivationReader
from storage.store import Store
from tasks.extract import extract
from tests.tasks.helpers import SYNTH_FP, dialog_rows, make_synth

pytestmark = pytest.mark.slow


@flow(name="extract-only")
def extract_flow(cfg: ExtractConfig, model: ModelConfig, root: str) -> Manifest:
    store = Store(root)
    return extract(cfg, model, store.finished("synthesize", SYNTH_FP), store)


def test_dask_cluster_matches_single_process(prefect_harness, tmp_path, tiny_model_dir):
    model = ModelConfig(name=str(tiny_model_dir))
    local_cfg = ExtractConfig(read_layers=[1, 2], part_tokens=60, batch_tokens=512)
    dask_cfg = local_cfg.model_copy(update={"runner": "dask", "dask_workers": 2})
    dialogs = dialog_rows(10)
    results = {}
    for name, cfg in (("local", local_cfg), ("dask", dask_cfg)):
        make_synth(Store(tmp_path / name), dialogs)
        state = extract_flow(cfg, model, str(tmp_path / name), return_state=True)
        assert state.is_completed(), state.message
        results[name] = state.result()
    local, dask = results["local"], results["dask"]
    assert local.fingerprint == dask.fingerprint  # the runner is not part of what is computed
    assert dask.summary["runner"] == "dask" and dask.summary["parts_computed"] == dask.counts["n_parts"] > 2
    assert local.summary["processes"] == 1 and dask.summary["processes"] == 2  # both workers took parts
    assert [f.path for f in local.files] == [f.path for f in dask.files]
    readers = {n: ActivationReader(Store(tmp_path / n).path(m, f.path) for f in m.files_matching("part-"))
               for n, m in results.items()}
    for d in dialogs:
        for layer in (1, 2):
            np.testing.assert_allclose(readers["dask"].acts(d["dialog_id"], layer),
                                       readers["local"].acts(d["dialog_id"], layer), rtol=0, atol=1e-5)
            assert readers["dask"].tokens(d["dialog_id"], layer) == readers["local"].tokens(d["dialog_id"], layer)
