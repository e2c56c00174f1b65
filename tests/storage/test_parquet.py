"""Activation tables round-trip exactly and are read as views into the Arrow buffers (no per-row copy)."""

import numpy as np
import pytest

from storage.parquet import ActivationReader, activation_rows, write_table


@pytest.mark.parametrize("act_dtype", ["float32", "float16"])
def test_roundtrip_zero_copy(tmp_path, act_dtype):
    rng = np.random.default_rng(0)
    acts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (3, 1, 5)]
    table = activation_rows(["d0", "d1", "d2"], ["l0", "l1", "l2"], 7, [[1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11, 12]],
                            [1, 1, 1], acts, act_dtype, 8)
    write_table(tmp_path / "part-00000.parquet", table, table.schema)
    reader = ActivationReader([tmp_path / "part-00000.parquet"])
    for i, a in enumerate(acts):
        view = reader.acts(f"d{i}", 7)
        assert view.shape == a.shape and not view.flags.owndata
        np.testing.assert_array_equal(view, a.astype(act_dtype))
    assert reader.tokens("d1", 7) == ([5, 6], 1)
    assert ("d0", 8) not in reader


def test_schema_mismatch_is_refused(tmp_path):
    import pyarrow as pa

    from storage.parquet import QA

    with pytest.raises(ValueError, match="does not match PROTOCOL schema"):
        write_table(tmp_path / "qa.parquet", pa.table({"qa_id": ["x"]}), QA)
    assert not (tmp_path / "qa.parquet").exists()
