"""A real HTTP receiver on 127.0.0.1 for the alert tests (webhooks, the Telegram Bot
API): it keeps every POST's JSON body and answers with the replies a test scripts.

    with receiving("/hook") as receiver:
        receiver.replies = [(500, None), (200, {"ok": True})]
        ...  # send to receiver.url
        assert receiver.bodies == [...]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """What arrived, and what to answer next: each POST takes the first of `replies`
    (a status and a JSON answer, or None for an empty body), then `otherwise`."""

    replies: list[tuple[int, Any]] = field(default_factory=list)
    otherwise: tuple[int, Any] = (200, None)
    requests: list[tuple[str, Any, float]] = field(default_factory=list)  # path, body, monotonic
    hold: threading.Event | None = None  # when set up, each request waits for it (2 s at most)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    @property
    def bodies(self) -> list[Any]:
        return [body for _, body, _ in self.requests]


@contextmanager
def receiving(path: str = "/hook", otherwise: tuple[int, Any] = (200, None)) -> Iterator[Receiver]:
    """A receiver listening until the block ends; its `url` ends with `path`."""
    state = Receiver(otherwise=otherwise)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, body, time.monotonic()))
            state.arrived.set()
            if state.hold is not None:
                state.hold.wait(2)
            status, answer = state.replies.pop(0) if state.replies else state.otherwise
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if answer is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # shutdown() waits out one poll of serve_forever: 0.5 s by default, a test each.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(2)
