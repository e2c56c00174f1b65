"""Structured LLM calls through the `openai` client against any OpenAI-compatible endpoint.

Each call: look the request up in the response cache; otherwise send it (bounded concurrency), retrying only
transient failures (timeouts, connection errors, 429, 5xx) with exponential backoff, jitter and Retry-After;
store the raw reply as soon as it arrives; validate it against the pydantic schema, and on an invalid reply
ask again with the validation error appended. A call never raises for a per-item failure: it returns a
Result with a reason (`timeout`, `http_429`, `http_5xx`, `connection`, `schema_invalid`, ...).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from pydantic import SecretStr, ValidationError

from latentqa.config import EndpointConfig
from latentqa.prompts import RETRY, SCHEMA_HINT
from latentqa.schemas import Reply, json_schema, validate_reply

SCHEMA_RETRIES = 2


class ResponseCache(Protocol):
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, model: str, content: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None: ...


def read_api_key(cfg: EndpointConfig, local: bool) -> SecretStr:
    """The key from the environment variable named in config; a local server needs none."""
    value = os.environ.get(cfg.api_key_env)
    if value is None:
        if local:
            return SecretStr("local")
        raise RuntimeError(f"endpoint.api_key_env names {cfg.api_key_env!r}, which is not set in the environment")
    return SecretStr(value)


def redact(text: str, secret: str) -> str:
    """`text` without the secret: the whole key, and any word sharing 6 or more consecutive characters with it
    (a provider's 401 echoes a masked key such as `sk-abc1****wxyz`), become `[redacted]`."""
    if len(secret) < 6 or not text:
        return text
    parts = {secret[i: i + 6] for i in range(len(secret) - 5)}
    words = text.replace(secret, "[redacted]").split(" ")
    return " ".join("[redacted]" if any(p in w for p in parts) else w for w in words)


@dataclass
class Result:
    reply: Reply | None
    reason: str = "ok"
    detail: str = ""
    sent: int = 0  # HTTP requests actually sent, retries included (cache hits send none)
    cached: int = 0

    @property
    def ok(self) -> bool:
        return self.reply is not None


class Ledger:
    """New spend of one run, shared by every client the run opens (catalog generation, synthesis, the judge),
    so that endpoint.max_cost_usd caps the run, not each stage. Thread-safe: stages may share a process."""

    def __init__(self):
        self.spent = 0.0
        self.reserved = 0.0
        self.lock = threading.Lock()


@dataclass
class Budget:
    """Spend control of one client: a request is sent only if its worst case (prompt estimate plus max_tokens)
    still fits under the cap on top of what the run has spent and reserved. Reservation happens when a request
    is about to be sent (inside the concurrency slot), not when it is queued, so queued requests block nothing."""

    max_usd: float | None = None
    prompt_per_mtok: float = 0.0
    completion_per_mtok: float = 0.0
    ledger: Ledger = field(default_factory=Ledger)
    spent: float = 0.0  # by this client

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6

    def reserve(self, usd: float) -> bool | None:
        """True: reserved. False: it cannot fit even when everything in flight settles. None: wait and ask again
        (requests in flight reserved their worst case; most will settle for less)."""
        with self.ledger.lock:
            if self.max_usd is not None and self.ledger.spent + self.ledger.reserved + usd > self.max_usd:
                return None if self.ledger.reserved > 0 and self.ledger.spent + usd <= self.max_usd else False
            self.ledger.reserved += usd
            return True

    async def acquire(self, usd: float) -> bool:
        while (verdict := self.reserve(usd)) is None:
            await asyncio.sleep(0.005)
        return verdict

    def settle(self, reserved: float, actual: float) -> None:
        with self.ledger.lock:
            self.ledger.reserved -= reserved
            self.ledger.spent += actual
        self.spent += actual


class BudgetExceeded(RuntimeError):
    """A stage stopped at the spend cap; it must not commit, so that a rerun with a higher cap completes it."""


def stop_if_over_budget(results: list[Result], llm: LLM, stage: str) -> None:
    stopped = sum(r.reason == "budget_exceeded" for r in results)
    if stopped:
        raise BudgetExceeded(
            f"{stage} stopped at endpoint.max_cost_usd={llm.budget.max_usd}: the run spent "
            f"${llm.budget.ledger.spent:.4f}, {stopped} requests not sent. Every reply paid for is kept in "
            "requests.sqlite; raise the cap and rerun to send only the rest")


FALLBACK = {"json_schema": "json_object", "json_object": "none"}


class LLM:
    """An async structured-output client bound to one endpoint and model."""

    def __init__(self, cfg: EndpointConfig, base_url: str, api_key: SecretStr, cache: ResponseCache,
                 key_fn, backoff_s: float = 1.0, ledger: Ledger | None = None):
        self.cfg, self.cache, self.key_fn, self.backoff_s = cfg, cache, key_fn, backoff_s
        self.model, self.mode = cfg.served_model, cfg.structured_output
        self.budget = Budget(cfg.max_cost_usd, cfg.price_prompt_per_mtok, cfg.price_completion_per_mtok,
                             ledger or Ledger())
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key.get_secret_value(),
                                         timeout=cfg.timeout_s, max_retries=0)
        self._secret = api_key.get_secret_value() if api_key.get_secret_value() != "local" else ""
        self.semaphore = asyncio.Semaphore(cfg.concurrency)

    async def close(self) -> None:
        await self.client.close()

    def _request(self, messages: list[dict], schema: dict, params: dict[str, Any]) -> dict[str, Any]:
        mode = self.mode
        if mode != "json_schema":  # the server cannot enforce the schema: describe it in the prompt
            messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"]
                                         + SCHEMA_HINT.format(schema=json.dumps(schema))}]
        body: dict[str, Any] = {"model": self.model, "messages": messages, **params}
        if mode == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(self, messages: list[dict], reply_model: type[Reply], params: dict[str, Any]) -> Result:
        schema = json_schema(reply_model)
        result, attempt = Result(None), 0
        while attempt <= SCHEMA_RETRIES:
            body = self._request(messages, schema, params)
            key = self.key_fn(body)
            text = self.cache.get(key)
            if text is None:
                text, reason, detail, attempts = await self._send(body)
                result.sent += attempts
                if reason == "unsupported_format" and self.mode in FALLBACK:
                    self.mode = FALLBACK[self.mode]  # the server refused this response_format: ask with less
                    continue
                if text is None:  # the detail is stored (rejected.parquet): never with the key in it
                    result.reason, result.detail = reason, redact(detail, self._secret)
                    return result
            else:
                result.cached += 1
            attempt += 1
            try:
                result.reply = validate_reply(reply_model, text)
                result.reason, result.detail = "ok", ""
                return result
            except (ValidationError, ValueError) as err:
                error = _short(err) if isinstance(err, ValidationError) else str(err).splitlines()[0]
                result.reason, result.detail = "schema_invalid", redact(f"{error} | reply: {text[:200]}", self._secret)
                messages = [*messages, {"role": "assistant", "content": text},
                            {"role": "user", "content": RETRY.format(error=error)}]
        return result

    async def _send(self, body: dict[str, Any]) -> tuple[str | None, str, str, int]:
        """(content, reason, detail, HTTP attempts); retries transient failures only. The reply is stored in the
        cache here, as soon as it arrives, with its token counts."""
        reason, detail = "unknown", ""
        worst = self.budget.cost(len(json.dumps(body["messages"])) // 3, body.get("max_tokens") or 1024)
        for attempt in range(self.cfg.max_retries + 1):
            wait = None
            async with self.semaphore:
                if not await self.budget.acquire(worst):
                    return None, "budget_exceeded", f"endpoint.max_cost_usd={self.budget.max_usd} reached", attempt
                try:
                    response = await self.client.chat.completions.create(**body)
                except openai.APITimeoutError as err:
                    reason, detail = "timeout", str(err)
                except openai.RateLimitError as err:
                    reason, detail, wait = "http_429", str(err)[:200], _retry_after(err)
                except openai.APIStatusError as err:
                    if err.status_code == 400 and "response_format" in str(err):
                        self.budget.settle(worst, 0.0)
                        return None, "unsupported_format", str(err)[:200], attempt + 1
                    if err.status_code < 500:
                        self.budget.settle(worst, 0.0)
                        return None, f"http_{err.status_code}", str(err)[:200], attempt + 1
                    reason, detail, wait = "http_5xx", str(err)[:200], _retry_after(err)
                except openai.APIConnectionError as err:
                    reason, detail = "connection", str(err)[:200]
                else:
                    text, usage = response.choices[0].message.content or "", response.usage
                    n_in, n_out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                    self.budget.settle(worst, self.budget.cost(n_in, n_out))
                    self.cache.put(self.key_fn(body), self.model, text, n_in, n_out)
                    return text, "ok", "", attempt + 1
                self.budget.settle(worst, 0.0)  # a failed attempt is not billed
            if attempt < self.cfg.max_retries:  # back off outside the slot: others may send meanwhile
                delay = wait if wait is not None else self.backoff_s * 2 ** attempt
                await asyncio.sleep(delay * (1 + 0.25 * random.random()))
        return None, reason, detail, self.cfg.max_retries + 1


def _retry_after(err: openai.APIStatusError) -> float | None:
    value = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def _short(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "reply"
    return f"{loc}: {first['msg']}"


def run_all(llm: LLM, requests) -> list:
    """Run the client's requests (awaitables) concurrently, bounded by its semaphore, then close it."""
    async def main():
        try:
            return await asyncio.gather(*requests)
        finally:
            await llm.close()

    return asyncio.run(main())
