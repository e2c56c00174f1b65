"""The structured LLM client against real HTTP servers: a fault-injecting one and the project's own."""

import asyncio
import json

import pytest

from latentqa.config import EndpointConfig
from latentqa.llm import LLM, Ledger, read_api_key
from latentqa.schemas import dialog_reply
from storage.requests import RequestCache, request_key
from tests.fault_server import FaultServer

REPLY = {"control_model": "Sure.", "stimulus_user": "Hi there!", "stimulus_model": "Arr, hello!"}


def _run(server_url, cache, messages_list, ledger=None, **cfg):
    endpoint = EndpointConfig(base_url=server_url, model_id="m", timeout_s=cfg.pop("timeout_s", 5), **cfg)

    async def go():
        llm = LLM(endpoint, server_url, read_api_key(endpoint, local=True), cache, request_key, backoff_s=0.01,
                  ledger=ledger)
        try:
            return await asyncio.gather(*(llm.complete(m, dialog_reply(80), {"temperature": 0}) for m in messages_list))
        finally:
            await llm.close()

    return asyncio.run(go())


def _msgs(tag):
    return [{"role": "system", "content": "s"}, {"role": "user", "content": tag}]


def test_transient_faults_are_retried_and_invalid_replies_recorded(tmp_path):
    cache = RequestCache(tmp_path / "r.sqlite")
    tags = ["fault=http429x2", "fault=http500x1", "fault=hangx1", "fault=notjsonx1", "fault=badschemax1",
            "fault=http500x99", "fault=badschemax99", "plain"]
    with FaultServer(REPLY, hang_s=1.5) as server:
        results = _run(server.base_url, cache, [_msgs(t) for t in tags], max_retries=3, timeout_s=0.5)
    by_tag = dict(zip(tags, results))
    for tag in ("fault=http429x2", "fault=http500x1", "fault=hangx1", "fault=notjsonx1", "fault=badschemax1", "plain"):
        assert by_tag[tag].ok and by_tag[tag].reply.model_dump() == REPLY, tag
    assert by_tag["fault=http500x99"].reason == "http_5xx"
    assert by_tag["fault=http500x99"].sent == 4  # max_retries=3 retries after the first attempt
    assert by_tag["fault=http429x2"].sent == 3
    assert by_tag["fault=badschemax99"].reason == "schema_invalid"
    assert "control_model" in by_tag["fault=badschemax99"].detail
    assert by_tag["fault=badschemax99"].sent == 3  # the first reply and two retries with the error appended


def test_rerun_sends_nothing_for_stored_replies(tmp_path):
    cache = RequestCache(tmp_path / "r.sqlite")
    with FaultServer(REPLY) as server:
        first = _run(server.base_url, cache, [_msgs(f"q{i}") for i in range(5)])
        sent_first = server.requests
        second = _run(server.base_url, cache, [_msgs(f"q{i}") for i in range(5)])
    assert sent_first == 5 + 1 and server.requests == 5 + 1 and server.probes == 1  # one probe, remembered
    assert [r.reply.model_dump() for r in first] == [r.reply.model_dump() for r in second]
    assert all(r.cached == 1 and r.sent == 0 for r in second)


def test_a_rejected_key_echoed_in_an_error_never_reaches_the_stored_detail(monkeypatch, tmp_path):
    key = "sk-proj-Zq81xKeyThatMustNotLeak7731"
    monkeypatch.setenv("LATENTQA_TEST_KEY", key)
    endpoint = EndpointConfig(base_url="http://x", model_id="m", api_key_env="LATENTQA_TEST_KEY", max_retries=0)

    async def go(url):
        llm = LLM(endpoint, url, read_api_key(endpoint, local=False), RequestCache(tmp_path / "r.sqlite"),
                  request_key, backoff_s=0.01)
        try:
            return await asyncio.gather(*(llm.complete(_msgs(t), dialog_reply(80), {}) for t in
                                          ("fault=http401x9", "fault=http401fullx9")))
        finally:
            await llm.close()

    with FaultServer(REPLY) as server:
        results = asyncio.run(go(server.base_url))
    assert [r.reason for r in results] == ["http_401", "http_401"]
    for r in results:
        assert "Incorrect API key" in r.detail and "[redacted]" in r.detail
        assert key not in r.detail and key[:8] not in r.detail and key[-4:] + "." not in r.detail, r.detail


def test_api_key_comes_from_the_named_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTQA_TEST_KEY", "sk-test-secret-123")
    endpoint = EndpointConfig(base_url="http://127.0.0.1:1/v1", api_key_env="LATENTQA_TEST_KEY")
    assert read_api_key(endpoint, local=False).get_secret_value() == "sk-test-secret-123"
    assert "sk-test" not in repr(read_api_key(endpoint, local=False))
    monkeypatch.delenv("LATENTQA_TEST_KEY")
    with pytest.raises(RuntimeError, match="LATENTQA_TEST_KEY"):
        read_api_key(endpoint, local=False)


def test_local_server_returns_schema_valid_json(tiny_model_dir, tmp_path):
    from latentqa.server import local_server

    with local_server(str(tiny_model_dir), max_batch=4, startup_timeout_s=120) as url:
        endpoint = EndpointConfig(base_url=url, model_id=str(tiny_model_dir))

        async def go():
            llm = LLM(endpoint, url, read_api_key(endpoint, local=True), RequestCache(tmp_path / "r.sqlite"), request_key)
            try:
                return await asyncio.gather(*(llm.complete(_msgs(f"control {i}"), dialog_reply(24),
                                                           {"temperature": 0, "max_tokens": 96}) for i in range(4)))
            finally:
                await llm.close()

        results = asyncio.run(go())
    # a random 4-block model, constrained by the grammar, still writes JSON that parses against the schema
    assert all(r.reason in ("ok", "schema_invalid") for r in results)
    assert sum(r.ok for r in results) >= 3, [r.detail for r in results]


def _complete(server, cache, tag, mode="json_schema"):
    endpoint = EndpointConfig(base_url=server.base_url, model_id="m", structured_output=mode, max_retries=1)

    async def go():
        llm = LLM(endpoint, server.base_url, read_api_key(endpoint, local=True), cache, request_key, backoff_s=0.01)
        try:
            return await llm.complete(_msgs(tag), dialog_reply(80), {}), llm.mode
        finally:
            await llm.close()

    return asyncio.run(go())


def test_unsupported_response_format_falls_back_and_is_remembered(tmp_path):
    cache = RequestCache(tmp_path / "r.sqlite")
    with FaultServer(REPLY, formats=()) as server:  # a server with no structured outputs at all
        result, mode = _complete(server, cache, "plain")
        assert result.ok and mode == "none" and result.sent == 2  # json_object refused, then the prompt alone
        assert cache.get_mode(server.base_url, "m") == "none"
        probes = server.probes
        again, mode = _complete(server, cache, "plain again")  # a later run: no probe, no refused request
    assert again.ok and mode == "none" and again.sent == 1 and server.probes == probes


def _enforcing(field: str):
    """A server that enforces a schema given in `field` of the body: its replies match it (the probe's too)."""
    def reply(body):
        schema = (body.get("response_format") or {}).get("schema") if field == "response_format" else body.get(field)
        return {"latentqa_probe": 7} if schema and "latentqa_probe" in json.dumps(schema) else REPLY
    return reply


@pytest.mark.parametrize("server_kind", ["llama.cpp-like", "vllm-like"])
def test_the_probe_finds_where_each_server_takes_its_schema(server_kind, tmp_path):
    if server_kind == "llama.cpp-like":  # json_schema refused with a 422 that never says "response_format";
        server = FaultServer(_enforcing("response_format"), formats=("json_object",), probe_reply=None,  # schema in
                             refuse=lambda b: (422, "unknown type") if (b.get("response_format") or {}).get(
                                 "type") == "json_schema" else None)  # response_format {type: json_object}
        expected = "json_object_schema"
    else:  # any response_format is a 500; the schema goes in a guided_json field of the body
        server = FaultServer(_enforcing("guided_json"), probe_reply=None,
                             refuse=lambda b: (500, "internal error") if b.get("response_format") else None)
        expected = "guided_json"
    cache = RequestCache(tmp_path / "r.sqlite")
    with server:
        result, mode = _complete(server, cache, "hello")
        real = [b for b in server.bodies if b["messages"][-1]["content"] != "Say hello."]
        assert result.ok and mode == expected and cache.get_mode(server.base_url, "m") == expected
        assert len(real) == 1 and "must match this schema" not in real[0]["messages"][-1]["content"]
        probes = server.probes
        again, _ = _complete(server, cache, "hello again")
    assert again.ok and again.sent == 1 and server.probes == probes  # remembered: the rerun probes nothing


def test_budget_stops_new_spend_and_keeps_what_was_paid(tmp_path):
    cache = RequestCache(tmp_path / "r.sqlite")
    # each reply costs (100 * 10 + 50 * 20) / 1e6 = $0.002; a request reserves its worst case (1024 completion
    # tokens, ~$0.021) when it is about to be sent, so the cap of $0.05 pays for 14 or 15 replies, not the 2
    # that fit when all 20 queued requests reserved at once
    prices = {"price_prompt_per_mtok": 10.0, "price_completion_per_mtok": 20.0}
    with FaultServer(REPLY) as server:
        results = _run(server.base_url, cache, [_msgs(f"q{i}") for i in range(20)], concurrency=4,
                       max_cost_usd=0.05, **prices)
        paid = [r for r in results if r.ok]
        assert 13 <= len(paid) <= 15 and server.requests - server.probes == len(paid)
        assert {r.reason for r in results if not r.ok} == {"budget_exceeded"}
        again = _run(server.base_url, cache, [_msgs(f"q{i}") for i in range(20)], concurrency=1, **prices)
    assert all(r.ok for r in again) and server.requests - server.probes == 20  # the rerun sent only the rest


def test_one_budget_for_every_client_of_a_run(tmp_path):
    cache, ledger = RequestCache(tmp_path / "r.sqlite"), Ledger()
    prices = {"price_prompt_per_mtok": 10.0, "price_completion_per_mtok": 20.0, "max_cost_usd": 0.05}
    with FaultServer(REPLY) as server:
        first = _run(server.base_url, cache, [_msgs(f"a{i}") for i in range(20)], ledger=ledger, **prices)
        second = _run(server.base_url, cache, [_msgs(f"b{i}") for i in range(20)], ledger=ledger, **prices)
    n_first, n_second = sum(r.ok for r in first), sum(r.ok for r in second)
    assert n_first >= 13 and n_second <= 5  # the second client (say, the judge) finds the run's cap mostly spent
    assert ledger.spent == pytest.approx(0.002 * (n_first + n_second + server.probes)) and ledger.spent <= 0.05
    assert ledger.reserved == pytest.approx(0.0)


def test_an_endpoint_that_does_not_answer_stops_the_calls_and_is_not_taken_for_a_capability(tmp_path):
    """Issue 32, item 2: an outage during the probe used to be stored as `json_object` for good, and every
    request was still sent at the dead endpoint. Now the calls stop at the probe, with the URL named, and
    nothing is remembered: once the endpoint is up, the same store probes again and finds json_schema."""
    import socket

    from latentqa.llm import EndpointUnreachable

    with socket.socket() as s:  # a port nothing listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, cache = f"http://127.0.0.1:{port}/v1", RequestCache(tmp_path / "r.sqlite")
    with pytest.raises(EndpointUnreachable, match=f"127.0.0.1:{port}"):
        _run(url, cache, [_msgs(f"q{i}") for i in range(30)], max_retries=1, timeout_s=1)
    assert cache.get_mode(url, "m") is None
    with FaultServer(lambda b: {"latentqa_probe": 7} if "latentqa_probe" in json.dumps(b) else REPLY, port=port,
                     probe_reply=None) as server:
        results = _run(url, cache, [_msgs("q0")], max_retries=1)
    assert results[0].ok and cache.get_mode(url, "m") == "json_schema" and server.probes == 1


def _spelling_server():
    """As seen (issue 32, item 9): json_schema refused with a 500 that names response_format; a schema given as
    {"type": "json_object", "schema": ...} enforced by a grammar that spells the probe's reply a character at a
    time, so that max_tokens cuts it off (finish reason `length`)."""
    spelt = '{ "latentqa_probe" : 7}'

    def reply(body):
        fmt = body.get("response_format") or {}
        if "latentqa_probe" in json.dumps(fmt.get("schema", {})):
            n = body.get("max_tokens") or 1024
            return (spelt, "stop") if n >= len(spelt) else (spelt[:n], "length")
        return REPLY if fmt.get("schema") else {"echo": "the schema is in the prompt"}

    refused = []

    def refuse(body):
        if (body.get("response_format") or {}).get("type") == "json_schema":
            refused.append(body)
            return 500, "response_format json_schema is not supported by this server"
        return None

    server = FaultServer(reply, formats=("json_object",), probe_reply=None, refuse=refuse)
    server.refused = refused
    return server


def test_a_server_that_spells_its_schema_and_refuses_json_schema_with_a_500_is_used_with_its_schema(tmp_path):
    cache = RequestCache(tmp_path / "r.sqlite")
    with _spelling_server() as server:
        result, mode = _complete(server, cache, "hello")
        refused = server.refused
    assert result.ok and result.reply.model_dump() == REPLY
    assert mode == "json_object_schema" and cache.get_mode(server.base_url, "m") == "json_object_schema"
    assert len(refused) == 1, "the 500 naming response_format was retried as an outage"


def test_a_probe_reply_cut_off_after_the_key_counts_as_the_schema_enforced():
    from latentqa.llm import _matches_probe

    assert _matches_probe('{ "latentqa_probe" : 7}') and _matches_probe('{ "latentqa_probe" :')
    assert not _matches_probe('{ "latentq') and not _matches_probe('{"hello": "world"}')
    assert not _matches_probe("Hello! How can I help?")
