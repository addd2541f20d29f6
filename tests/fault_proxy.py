"""An HTTP proxy in front of a real service (the OpenSearch node, the endpoint emulator)
that injects faults, slows requests down and records what passes.

Throttling (429), server errors (5xx) and a slow service cannot be provoked on
demand from a healthy one, so tests put this proxy between the client and the
service and tell it which requests to answer with which status, or to hold
for how long. It also records every request (label, method, path), the label
naming who sent it (`labelled`), for the least-privilege checks.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")
# Hop-by-hop headers and those urllib sets itself.
_NOT_FORWARDED = frozenset({"host", "content-length", "connection", "keep-alive",
                            "transfer-encoding", "proxy-connection"})


class FaultProxy:
    """Forwards HTTP to OpenSearch, answering chosen requests with an injected status.

    `faults` maps a path fragment (e.g. "_search", "_bulk") to a list of statuses
    to answer, one per matching request, before forwarding again. `delays` maps a
    path fragment to seconds to wait before forwarding a matching request.
    """

    def __init__(self, upstream: str) -> None:
        proxy = self
        self.upstream = upstream.rstrip("/")
        self.faults: dict[str, list[int]] = {}
        self.hits: dict[str, int] = {}
        self.delays: dict[str, float] = {}
        self.label: str | None = None
        self.recorded: list[tuple[str | None, str, str]] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.recorded.append((proxy.label, self.command, self.path))
                    delay = max([s for f, s in proxy.delays.items() if f in self.path],
                                default=0.0)
                    for fragment, statuses in proxy.faults.items():
                        if fragment in self.path:
                            proxy.hits[fragment] = proxy.hits.get(fragment, 0) + 1
                            if statuses:
                                status = statuses.pop(0)
                                break
                    else:
                        status = 0
                if delay:
                    time.sleep(delay)
                if status:
                    payload = json.dumps({"error": {"type": "es_rejected_execution_exception",
                                                    "reason": "injected"},
                                          "status": status}).encode()
                    self._reply(status, payload, "application/json")
                    return
                request = urllib.request.Request(proxy.upstream + self.path, data=body,
                                                 method=self.command)
                for key, value in self.headers.items():
                    if key.lower() not in _NOT_FORWARDED:
                        request.add_header(key, value)
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        self._reply(response.status, response.read(),
                                    response.headers.get("Content-Type"),
                                    response.headers.get("Content-Encoding"))
                except urllib.error.HTTPError as exc:
                    self._reply(exc.code, exc.read(), exc.headers.get("Content-Type"),
                                exc.headers.get("Content-Encoding"))

            def _reply(self, status: int, data: bytes, ctype: str | None,
                       encoding: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def labelled(self, label: str, function: Callable[..., T]) -> Callable[..., T]:
        """`function`, recording the requests made while it runs under `label`."""

        def call(*args: Any, **kwargs: Any) -> T:
            self.label = label
            try:
                return function(*args, **kwargs)
            finally:
                self.label = None

        return call

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
