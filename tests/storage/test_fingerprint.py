"""Fingerprints change with every semantic field and never with a non-semantic one."""

from hypothesis import given, settings
from hypothesis import strategies as st

from latentqa.config import EndpointConfig, ExtractConfig, TrainConfig
from storage.fingerprint import fingerprint


def _fp(section, inputs=("x" * 64,)):
    return fingerprint("train", 1, sections=[section], inputs=list(inputs))


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(1e-6, 1e-2), other=st.floats(1e-6, 1e-2))
def test_semantic_field_changes_fingerprint(lr, other):
    a, b = TrainConfig(lr=lr), TrainConfig(lr=other)
    assert (_fp(a) == _fp(b)) == (lr == other)


@settings(max_examples=40, deadline=None)
@given(every=st.integers(1, 1000), batch=st.integers(1, 1 << 16), parts=st.integers(1, 1000))
def test_non_semantic_fields_never_change_it(every, batch, parts):
    assert _fp(TrainConfig(log_every=every)) == _fp(TrainConfig())
    assert _fp(ExtractConfig(batch_tokens=batch, part_tokens=parts, runner="dask", dask_workers=parts)) \
        == _fp(ExtractConfig())
    assert _fp(EndpointConfig(base_url=f"http://127.0.0.1:{batch}/v1", api_key_env="K", concurrency=parts)) \
        == _fp(EndpointConfig())


@settings(max_examples=20, deadline=None)
@given(layers=st.lists(st.integers(0, 29), min_size=1, max_size=3, unique=True))
def test_read_layers_enter_the_extract_fingerprint(layers):
    assert (_fp(ExtractConfig(read_layers=layers)) == _fp(ExtractConfig())) == (sorted(layers) == [15])


def test_inputs_and_version_enter_the_fingerprint():
    base = fingerprint("train", 1, [TrainConfig()], ["a" * 64, "b" * 64])
    assert base == fingerprint("train", 1, [TrainConfig()], ["b" * 64, "a" * 64])  # order-free
    assert base != fingerprint("train", 2, [TrainConfig()], ["a" * 64, "b" * 64])
    assert base != fingerprint("train", 1, [TrainConfig()], ["a" * 64, "c" * 64])
    assert base != fingerprint("evaluate", 1, [TrainConfig()], ["a" * 64, "b" * 64])
