"""A fault-injecting OpenAI-compatible server on 127.0.0.1 for client tests.

The last user message picks the behaviour: it may contain `fault=<kind>x<n>`, and the first n requests with
that message get the fault (429 with Retry-After, 500, a hang past the client's timeout, text that is not
JSON, JSON that fails the schema); later ones get `reply` (a dict, or a function of the request body returning
a dict, or raw content and a finish reason).
Every reply reports 100 prompt and 50 completion tokens; `latency_s` delays each answer; a response_format
type not in `formats` gets the 400 that servers without structured outputs send; `refuse` answers other
refusals (another status, another wording), as servers differ.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 refuses bursts of concurrent clients
    daemon_threads = True


class FaultServer:
    def __init__(self, reply: dict | Callable[[dict], dict], hang_s: float = 2.0, latency_s: float = 0.0,
                 formats: tuple[str, ...] = ("json_schema", "json_object"),
                 refuse: Callable[[dict], tuple[int, str] | None] | None = None,
                 probe_reply: dict | None = {"greeting": "hello"},  # noqa: B006 (never mutated)
                 port: int = 0):
        self.reply, self.hang_s, self.latency_s, self.formats = reply, hang_s, latency_s, formats
        self.refuse = refuse  # body -> (status, message) to answer instead, as servers refuse what they lack
        self.probes = 0  # structured-output capability probes among `requests` (latentqa/llm.py)
        self.probe_reply = probe_reply  # what a probe gets (None: `reply` answers probes too)
        self.seen: dict[str, int] = {}
        self.requests = 0
        self.bodies: list[dict] = []  # every request body, in arrival order
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", port), self._handler())
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.latency_s:
                    time.sleep(server.latency_s)
                if server.refuse and (refusal := server.refuse(body)):
                    return self._send(refusal[0], {"error": {"message": refusal[1]}})
                fmt = (body.get("response_format") or {}).get("type")
                if fmt and fmt not in server.formats:  # as servers without structured outputs answer
                    return self._send(400, {"error": {"message": f"response_format {fmt} is not supported"}})
                message = body["messages"][-1]["content"]
                with server._lock:
                    server.requests += 1
                    server.probes += message == "Say hello."
                    server.bodies.append(body)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    key = json.dumps(body["messages"][:2])
                    n = server.seen[key] = server.seen.get(key, 0) + 1
                first = body["messages"][1]["content"] if len(body["messages"]) > 1 else message
                match = re.search(r"fault=(\w+)x(\d+)", first)
                kind = match[1] if match and n <= int(match[2]) else "ok"
                if kind == "http429":
                    return self._send(429, {"error": {"message": "slow down"}}, [("Retry-After", "0")])
                if kind in ("http401", "http401full"):  # as providers answer a wrong key: part of it echoed back
                    auth = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    shown = auth if kind == "http401full" else f"{auth[:8]}{'*' * 12}{auth[-4:]}"
                    return self._send(401, {"error": {"message": f"Incorrect API key provided: {shown}. You can "
                                                                 "find your API key at the dashboard."}})
                if kind == "http500":
                    return self._send(500, {"error": {"message": "boom"}})
                if kind == "hang":
                    time.sleep(server.hang_s)
                if message == "Say hello." and server.probe_reply is not None:
                    reply = server.probe_reply
                else:
                    reply = server.reply(body) if callable(server.reply) else server.reply
                finish = "stop"
                if isinstance(reply, tuple):  # (raw content, finish reason): a reply cut off by max_tokens
                    reply, finish = reply
                content = {"notjson": "this is not json {", "badschema": json.dumps({"wrong": 1})}.get(
                    kind, reply if isinstance(reply, str) else json.dumps(reply))
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": finish,
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}})

        return Handler
