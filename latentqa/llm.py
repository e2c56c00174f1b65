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
    def get_mode(self, endpoint: str, model: str) -> str | None: ...
    def put_mode(self, endpoint: str, model: str, mode: str) -> None: ...


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


class EndpointUnreachable(RuntimeError):
    """The endpoint did not answer the structured-output probe: the message names its URL."""


class BudgetExceeded(RuntimeError):
    """A stage stopped at the spend cap; it must not commit, so that a rerun with a higher cap completes it."""


def stop_if_over_budget(results: list[Result], llm: LLM, stage: str) -> None:
    stopped = sum(r.reason == "budget_exceeded" for r in results)
    if stopped:
        raise BudgetExceeded(
            f"{stage} stopped at endpoint.max_cost_usd={llm.budget.max_usd}: the run spent "
            f"${llm.budget.ledger.spent:.4f}, {stopped} requests not sent. Every reply paid for is kept in "
            "requests.sqlite; raise the cap and rerun to send only the rest")


# Structured-output modes, most constrained first. Where the server enforces the schema (the first three) it is
# not repeated in the prompt, so a small model cannot echo it back instead of answering:
#   json_schema         OpenAI's response_format {"type": "json_schema", ...}
#   json_object_schema  response_format {"type": "json_object", "schema": ...} (llama.cpp's server, others)
#   guided_json         a body field of its own (vLLM's guided decoding)
#   json_object         JSON mode without a schema: the schema goes into the prompt
#   none                the schema in the prompt alone
MODES = ("json_schema", "json_object_schema", "guided_json", "json_object", "none")
ENFORCED = {"json_schema", "json_object_schema", "guided_json"}
FALLBACK = dict(zip(MODES, MODES[1:]))
# The probe's schema cannot be guessed from its prompt: only a server that enforces it returns a match, so a
# server that accepts an unknown field and ignores it is not mistaken for one that honours it.
PROBE_SCHEMA = {"type": "object", "properties": {"latentqa_probe": {"type": "integer", "enum": [7]}},
                "required": ["latentqa_probe"], "additionalProperties": False}


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
        self._mode_lock, self._mode_known = asyncio.Lock(), False
        self._unreachable: EndpointUnreachable | None = None

    async def close(self) -> None:
        await self.client.close()

    def _request(self, messages: list[dict], schema: dict, params: dict[str, Any], mode: str | None = None
                 ) -> dict[str, Any]:
        mode = mode or self.mode
        if mode not in ENFORCED:  # the server cannot enforce the schema: describe it in the prompt
            messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"]
                                         + SCHEMA_HINT.format(schema=json.dumps(schema))}]
        body: dict[str, Any] = {"model": self.model, "messages": messages, **params}
        if mode == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        elif mode == "json_object_schema":
            body["response_format"] = {"type": "json_object", "schema": schema}
        elif mode == "guided_json":
            body["guided_json"] = schema
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    @property
    def endpoint_id(self) -> str:
        """What the remembered mode is keyed by: the URL of a remote endpoint (the project's own server moves
        between ports), never the key."""
        return self.cfg.base_url or "local"

    async def ensure_mode(self) -> str:
        """The structured-output mode this endpoint and model honour: remembered in the cache, else probed once
        (one tiny request per mode tried, from endpoint.structured_output down) and remembered. An endpoint that
        does not answer the probe fails every call at once (EndpointUnreachable), not each after its retries."""
        async with self._mode_lock:
            if self._unreachable is not None:
                raise self._unreachable
            if self._mode_known:
                return self.mode
            known = self.cache.get_mode(self.endpoint_id, self.model)
            start = MODES.index(self.cfg.structured_output)
            if known in MODES and MODES.index(known) >= start:
                self.mode = known
            else:
                try:
                    self.mode = await self._probe(MODES[start:])
                except EndpointUnreachable as err:
                    self._unreachable = err
                    raise
                self.cache.put_mode(self.endpoint_id, self.model, self.mode)
            self._mode_known = True
            return self.mode

    async def _probe(self, modes: tuple[str, ...]) -> str:
        for mode in modes:
            if mode not in ENFORCED:
                return mode  # JSON mode or the prompt alone: checked on every reply instead
            # room for a grammar that spells the reply a character at a time ('{ "latentqa_probe" : 7}' is 17
            # tokens on some servers)
            body = self._request([{"role": "user", "content": "Say hello."}], PROBE_SCHEMA,
                                 {"max_tokens": 64, "temperature": 0.0}, mode)
            text, reason, detail, _ = await self._send(body, cache=False)
            if reason in ("http_401", "http_403", "budget_exceeded"):
                raise RuntimeError(f"structured-output probe of {self.endpoint_id} ({self.model}) failed: "
                                   f"{redact(detail, self._secret)}")
            if reason in ("connection", "timeout"):  # no answer is no capability answer: remember nothing
                raise EndpointUnreachable(f"the endpoint {self.client.base_url} did not answer ({reason}: "
                                          f"{redact(detail, self._secret)[:160]}); nothing was sent to it and "
                                          "nothing was remembered: start it, or fix endpoint.base_url")
            if text is not None and (mode == "json_schema" or _matches_probe(text)):
                return mode
        return modes[-1]

    async def complete(self, messages: list[dict], reply_model: type[Reply], params: dict[str, Any]) -> Result:
        schema = json_schema(reply_model)
        result, attempt = Result(None), 0
        await self.ensure_mode()
        while attempt <= SCHEMA_RETRIES:
            used = self.mode
            body = self._request(messages, schema, params)
            key = self.key_fn(body)
            text = self.cache.get(key)
            if text is None:
                text, reason, detail, attempts = await self._send(body)
                result.sent += attempts
                if reason == "unsupported_format" and used in FALLBACK:
                    if self.mode == used:  # not already moved on by a concurrent call
                        self.mode = FALLBACK[used]  # the server refused this format: ask with less, remember
                        self.cache.put_mode(self.endpoint_id, self.model, self.mode)
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

    async def _send(self, body: dict[str, Any], cache: bool = True) -> tuple[str | None, str, str, int]:
        """(content, reason, detail, HTTP attempts); retries transient failures only. The reply is stored in the
        cache here, as soon as it arrives, with its token counts."""
        reason, detail = "unknown", ""
        worst = self.budget.cost(len(json.dumps(body["messages"])) // 3, body.get("max_tokens") or 1024)
        for attempt in range(self.cfg.max_retries + 1):
            wait = None
            async with self.semaphore:
                if not await self.budget.acquire(worst):
                    return None, "budget_exceeded", f"endpoint.max_cost_usd={self.budget.max_usd} reached", attempt
                try:  # a body field the openai client does not know travels in extra_body
                    known = {k: v for k, v in body.items() if k != "guided_json"}
                    extra = {"guided_json": body["guided_json"]} if "guided_json" in body else None
                    response = await self.client.chat.completions.create(**known, extra_body=extra)
                except openai.APITimeoutError as err:
                    reason, detail = "timeout", str(err)
                except openai.RateLimitError as err:
                    reason, detail, wait = "http_429", str(err)[:200], _retry_after(err)
                except openai.APIStatusError as err:
                    # a refusal of the format, whatever the status (some servers answer 500 naming it): not an
                    # outage to retry
                    if err.status_code in (400, 422, 500) and "response_format" in str(err):
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
                    if cache:
                        self.cache.put(self.key_fn(body), self.model, text, n_in, n_out)
                    return text, "ok", "", attempt + 1
                self.budget.settle(worst, 0.0)  # a failed attempt is not billed
            if attempt < self.cfg.max_retries:  # back off outside the slot: others may send meanwhile
                delay = wait if wait is not None else self.backoff_s * 2 ** attempt
                await asyncio.sleep(delay * (1 + 0.25 * random.random()))
        return None, reason, detail, self.cfg.max_retries + 1


_PROBE_TEXT = '{"latentqa_probe":7}'


def _matches_probe(text: str) -> bool:
    """The probe's schema enforced: its one valid reply, or a reply cut off by max_tokens that has already spelt
    the key, which only a server holding the schema can know (the prompt says "Say hello.")."""
    try:
        return json.loads(text) == {"latentqa_probe": 7}
    except ValueError:
        compact = "".join(text.split())
        return len(compact) >= len('{"latentqa_probe"') and _PROBE_TEXT.startswith(compact)


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
