"""The project's own OpenAI-compatible endpoint over a transformers model (`latentqa serve`).

/v1/models and non-streaming /v1/chat/completions. Concurrent requests are batched: a worker thread takes
whatever is queued (up to max_batch requests with the same sampling settings) and generates them together
with left padding. A `json_schema` response format is enforced with xgrammar, so even a 135M model always
returns parseable JSON; strings in the schema should carry maxLength so replies finish inside max_tokens.
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from latentqa.dialogs import encode, pad_id_of, render
from latentqa.padding import left_pad


@dataclass
class _Job:
    prompt_ids: list[int]
    schema: dict | None
    json_mode: bool
    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    seed: int | None
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> tuple:
        return (self.temperature, self.top_p, self.repetition_penalty, self.schema is not None or self.json_mode)


class Generator:
    """Batches chat requests onto one model."""

    def __init__(self, loaded, max_batch: int = 16):
        import xgrammar as xgr

        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.device, self.max_batch = loaded.device, max_batch
        vocab = self.model.config.vocab_size
        self.compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab))
        self.pad_id = pad_id_of(self.tokenizer)
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self._grammars: dict[str, object] = {}
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, messages: list[dict], schema: dict | None, json_mode: bool, max_tokens: int,
               temperature: float, top_p: float, repetition_penalty: float, seed: int | None) -> Future:
        ids = encode(self.tokenizer, render(self.tokenizer, messages, add_generation_prompt=True))
        job = _Job(ids, schema, json_mode, max_tokens, temperature, top_p, repetition_penalty, seed)
        self.jobs.put(job)
        return job.future

    def _grammar(self, job: _Job):
        key = json.dumps(job.schema, sort_keys=True) if job.schema is not None else "json"
        if key not in self._grammars:
            # compact JSON only: free whitespace lets a weak model pad a reply past max_tokens
            self._grammars[key] = (self.compiler.compile_json_schema(key, any_whitespace=False)
                                   if job.schema is not None else self.compiler.compile_builtin_json_grammar())
        return self._grammars[key]

    def _loop(self) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                pending.append(self.jobs.get())
            time.sleep(0.02)  # let concurrent requests arrive so they share a batch
            while not self.jobs.empty():
                pending.append(self.jobs.get_nowait())
            group = pending[0].group
            batch = [j for j in pending if j.group == group][: self.max_batch]
            pending = [j for j in pending if j not in batch]
            try:
                for job, result in zip(batch, self._generate(batch)):
                    job.future.set_result(result)
            except Exception as err:  # report to every waiting request, keep serving
                for job in batch:
                    job.future.set_exception(err)

    @torch.no_grad()
    def _generate(self, batch: list[_Job]) -> list[tuple[str, int, int, str]]:
        from xgrammar.contrib.hf import LogitsProcessor

        ids, mask = left_pad([j.prompt_ids for j in batch], self.pad_id)
        width = ids.shape[1]
        first = batch[0]
        kwargs = dict(max_new_tokens=max(j.max_tokens for j in batch), pad_token_id=self.pad_id,
                      eos_token_id=self.tokenizer.eos_token_id)
        if first.temperature > 0:
            torch.manual_seed(first.seed if first.seed is not None else 0)
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
        else:
            kwargs.update(do_sample=False)
        if first.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = first.repetition_penalty
        if first.group[3]:
            kwargs["logits_processor"] = [LogitsProcessor([self._grammar(j) for j in batch])]
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        results = []
        for b, job in enumerate(batch):
            new = out[b, width:].tolist()[: job.max_tokens]
            ended = self.tokenizer.eos_token_id in new
            if ended:
                new = new[: new.index(self.tokenizer.eos_token_id)]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append((text, len(job.prompt_ids), len(new), "stop" if ended else "length"))
        return results


def make_app(generator: Generator, model_name: str):
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="latentqa local endpoint")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "latentqa"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        import asyncio

        if body.get("stream"):
            raise HTTPException(400, "streaming is not supported by the local endpoint")
        if body.get("model") not in (None, model_name):
            raise HTTPException(404, f"model {body.get('model')!r} is not served here (serving {model_name!r})")
        fmt = body.get("response_format") or {}
        schema = fmt.get("json_schema", {}).get("schema") if fmt.get("type") == "json_schema" else None
        future = generator.submit(
            body["messages"], schema, fmt.get("type") == "json_object", int(body.get("max_tokens") or 256),
            float(body.get("temperature", 1.0) or 0.0), float(body.get("top_p", 1.0) or 1.0),
            1.0 + float(body.get("frequency_penalty") or 0.0), body.get("seed"))
        text, n_prompt, n_new, finish = await asyncio.wrap_future(future)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
        }

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(endpoint):
    """The base URL of `endpoint` (an EndpointConfig): its own, or the project's server over its local model."""
    if endpoint.base_url:
        yield endpoint.base_url
    else:
        with local_server(endpoint.local_model, endpoint.max_batch) as url:
            yield url


@contextmanager
def local_server(model: str, max_batch: int = 16, startup_timeout_s: float = 300.0):
    """Serve `model` on 127.0.0.1 in a child process; yields its base URL and stops it on exit."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "latentqa.server", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"local endpoint exited with code {proc.returncode} before serving: {cmd}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"local endpoint did not answer within {startup_timeout_s}s: {cmd}")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve(model: str, port: int, max_batch: int = 16, host: str = "127.0.0.1", dtype: str = "auto") -> None:
    import uvicorn

    from latentqa.models import load_model

    generator = Generator(load_model(model, dtype=dtype), max_batch)
    uvicorn.run(make_app(generator, model), host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="latentqa serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)
    serve(args.model, args.port, args.max_batch, args.host, args.dtype)


if __name__ == "__main__":
    main()
