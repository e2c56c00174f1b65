"""Benchmark: synthesis request throughput at concurrency 1 and 16 against a local OpenAI-compatible server with
200 ms artificial latency, and the number of requests a warm rerun sends (goal: 0).

Goal (issue 3): at least 12x the requests per second at concurrency 16 (16x is the limit). The last line is
`speedup: X.XX  warm_rerun_sent: N`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from latentqa.config import EndpointConfig
from latentqa.llm import LLM, read_api_key
from latentqa.schemas import dialog_reply
from storage.requests import RequestCache, request_key
from tests.fault_server import FaultServer

REPLY = {"control_model": "Sure.", "stimulus_user": "Hi there!", "stimulus_model": "Hello!"}


def run(url: str, cache: RequestCache, n: int, concurrency: int, tag: str) -> tuple[float, int]:
    endpoint = EndpointConfig(base_url=url, model_id="bench", concurrency=concurrency)

    async def go():
        llm = LLM(endpoint, url, read_api_key(endpoint, local=True), cache, request_key)
        try:
            msgs = [[{"role": "user", "content": f"{tag} control {i}"}] for i in range(n)]
            return await asyncio.gather(*(llm.complete(m, dialog_reply(80), {"max_tokens": 64}) for m in msgs))
        finally:
            await llm.close()

    start = time.perf_counter()
    results = asyncio.run(go())
    assert all(r.ok for r in results)
    return time.perf_counter() - start, sum(r.sent for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    with FaultServer(REPLY, latency_s=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        cache = RequestCache(Path(tmp) / "requests.sqlite")
        t1, _ = run(server.base_url, cache, args.requests, 1, "c1")
        t16, _ = run(server.base_url, cache, args.requests, 16, "c16")
        _, warm_sent = run(server.base_url, cache, args.requests, 16, "c16")
    print(f"requests {args.requests}  latency {args.latency * 1000:.0f} ms")
    print(f"concurrency  1: {args.requests / t1:6.1f} req/s")
    print(f"concurrency 16: {args.requests / t16:6.1f} req/s")
    print(f"speedup: {t1 / t16:.2f}  warm_rerun_sent: {warm_sent}")


if __name__ == "__main__":
    main()
