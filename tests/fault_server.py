"""A real OpenAI-compatible embedding server for the fault-injection tests.

It listens on 127.0.0.1 (a free port), serves ``POST /v1/embeddings`` with vectors computed by
the offline local model under the model name it is given, and injects faults: a seeded share of
429 / 503 answers, slow answers, dropped connections, 413 above a batch size or for a poison
text, a 503 outage switch, and a hard outage (listener stopped: connection refused). It counts
requests and faults per kind. Bounded: request bodies up to 4 MiB, socket timeouts, daemon
threads, interruptible waits."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from genai_ingest.embed.local import DEFAULT_MODEL, LocalEmbedder

MAX_BODY = 4 * 1024 * 1024


@dataclass
class Faults:
    """What the server does wrong. Shares are drawn per request from a seeded generator."""

    rate_limited: float = 0.0
    unavailable: float = 0.0
    dropped: float = 0.0
    slow: float = 0.0
    slow_s: float = 0.5
    retry_after: str | None = None
    fail_first: int = 0
    max_items: int | None = None
    poison: str | None = None
    outage: bool = False
    seed: int = 0


@dataclass
class _Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Listener
    timeout = 10

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(_Answer(413, _error("request body too large")))
            return
        body = self.rfile.read(length)
        answer = self.server.owner.answer(self.path, self.headers.get("Authorization"), body)
        if answer is None:  # dropped: close the socket without a response
            self.close_connection = True
            return
        if answer.delay_s and self.server.owner.stopping.wait(answer.delay_s):
            return
        try:
            self._send(answer)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.server.owner.count("client_gone")

    def _send(self, answer: _Answer) -> None:
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the counters tell what happened."""


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message}}


class FaultServer:
    """The embedding server. ``url`` is the base URL a ``RemoteEndpoint`` takes."""

    def __init__(
        self,
        embedder: LocalEmbedder,
        model: str = DEFAULT_MODEL,
        faults: Faults | None = None,
        *,
        dimension: int | None = None,
        api_key: str | None = None,
        echo_auth: bool = False,
    ) -> None:
        self.embedder = embedder
        self.model = model
        self.faults = faults or Faults()
        self.dimension = dimension
        self.api_key = api_key
        self.echo_auth = echo_auth
        self.counts: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.auth_headers: list[str | None] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._port = 0
        self._listener: _Listener | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> FaultServer:
        self.stopping.clear()
        self._listener = _Listener(self._port, self)
        self._port = self._listener.server_address[1]
        self._thread = threading.Thread(
            target=self._listener.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start`` again (same port)."""
        if self._listener is None:
            return
        self.stopping.set()
        self._listener.shutdown()
        self._listener.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._listener = None

    def count(self, kind: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[kind] += amount

    def answer(self, path: str, authorization: str | None, body: bytes) -> _Answer | None:
        """What to answer a request: a fault, an error, or the vectors (None: drop it)."""
        with self._lock:
            self.counts["requests"] += 1
            self.auth_headers.append(authorization)
            fault = self._draw_fault(authorization)
        if fault == "ok":
            return self._serve(path, body)
        self.count(fault)
        if fault == "slow":
            answer = self._serve(path, body)
            answer.delay_s = self.faults.slow_s
            return answer
        return self._fault_answer(fault, authorization)

    def _draw_fault(self, authorization: str | None) -> str:
        faults = self.faults
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return "unauthorized"
        if faults.outage:
            return "outage"
        if self.counts["requests"] <= faults.fail_first:
            return "unavailable"
        draw = self._rng.random()
        for kind, share in (
            ("rate_limited", faults.rate_limited),
            ("unavailable", faults.unavailable),
            ("dropped", faults.dropped),
            ("slow", faults.slow),
        ):
            if draw < share:
                return kind
            draw -= share
        return "ok"

    def _fault_answer(self, fault: str, authorization: str | None) -> _Answer | None:
        if fault == "dropped":
            return None
        retry = {"Retry-After": self.faults.retry_after} if self.faults.retry_after else {}
        echoed = f" (got Authorization: {authorization})" if self.echo_auth else ""
        if fault == "rate_limited":
            return _Answer(429, _error(f"rate limited{echoed}"), retry)
        if fault == "unauthorized":
            return _Answer(401, _error(f"invalid API key{echoed}"))
        return _Answer(503, _error(f"service unavailable{echoed}"), retry)

    def _serve(self, path: str, body: bytes) -> _Answer:
        if path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            return _Answer(404, _error(f"no route {path}"))
        try:
            request = json.loads(body)
            model, texts = request["model"], request["input"]
        except (ValueError, KeyError, TypeError):
            return _Answer(400, _error("malformed request"))
        if model != self.model:
            return _Answer(404, _error(f"model {model!r} not found"))
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _Answer(400, _error("input must be a non-empty list of strings"))
        too_large = self._too_large(texts)
        if too_large:
            self.count("too_large")
            return _Answer(413, _error(too_large))
        return _Answer(200, self._embeddings(texts))

    def _too_large(self, texts: list[str]) -> str | None:
        max_items = self.faults.max_items
        if max_items is not None and len(texts) > max_items:
            return f"batch of {len(texts)} exceeds {max_items}"
        if self.faults.poison and any(self.faults.poison in text for text in texts):
            return "input too large"
        return None

    def _embeddings(self, texts: list[str]) -> dict[str, Any]:
        vectors = self.embedder.embed(texts)
        if self.dimension is not None:
            vectors = vectors[:, : self.dimension]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
        with self._lock:
            self._rng.shuffle(data)  # clients must order by "index"
            self.counts["ok"] += 1
            self.served.update(texts)
        return {"object": "list", "model": self.model, "data": data}


class FaultServers:
    """Starts servers for one test and stops them all at the end."""

    def __init__(self, embedder: LocalEmbedder) -> None:
        self.embedder = embedder
        self.servers: list[FaultServer] = []

    def start(
        self, model: str = DEFAULT_MODEL, faults: Faults | None = None, **kw: Any
    ) -> FaultServer:
        server = FaultServer(self.embedder, model, faults, **kw).start()
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@contextmanager
def fault_servers(embedder: LocalEmbedder) -> Iterator[FaultServers]:
    """Servers computing vectors with ``embedder``, all stopped on exit (the tests' fixture)."""
    servers = FaultServers(embedder)
    try:
        yield servers
    finally:
        servers.stop_all()
