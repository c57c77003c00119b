"""A local exchange for the ccxt feed: Binance's public REST API on 127.0.0.1.

It answers from recorded responses in Binance's wire format (tests/data/ccxt): the
exchange info, and one-minute klines of BTCUSDT that include a gap (three minutes
without a candle) and a candle the exchange sent twice. Klines are served the way
Binance serves them: from `startTime`, at most `limit`, up to the server's own
clock, so the newest row is the candle still forming. A test can queue HTTP
errors (e.g. 429) for the next kline requests. ccxt itself is not patched: a real
`ccxt.binance` talks HTTP to this server.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).parent / "data" / "ccxt"
KLINES = json.loads((DATA / "binance_btcusdt_1m.json").read_text())
FIRST_OPEN = KLINES[0][0]
MINUTE = 60_000


class LocalExchange:
    def __init__(self) -> None:
        self.now = FIRST_OPEN + 10 * MINUTE  # the server's clock (epoch ms)
        self.failures: deque[int] = deque()
        self.kline_requests: list[dict[str, str]] = []
        self.klines: dict[str, list[list[Any]]] = {"BTCUSDT": KLINES, "ETHUSDT": []}
        self.info = (DATA / "binance_exchange_info.json").read_bytes()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/api/v3"

    def exchange(self) -> Any:
        """A real ccxt.binance pointed at this server, rate limiter on."""
        import ccxt

        exchange = ccxt.binance(
            {
                "enableRateLimit": True,
                "timeout": 2_000,
                "options": {"fetchMarkets": {"types": ["spot"]}},
            }
        )
        exchange.urls["api"]["public"] = self.url
        return exchange

    def start(self) -> LocalExchange:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        if path.endswith("/exchangeInfo"):
            return 200, self.info
        if path.endswith("/klines"):
            self.kline_requests.append(query)
            if self.failures:
                status = self.failures.popleft()
                body = {"code": -1003, "msg": "Too many requests; current limit is 6000"}
                return status, json.dumps(body).encode()
            limit = int(query.get("limit", 500))
            rows = [r for r in self.klines[query["symbol"]] if r[0] <= self.now]
            if "startTime" not in query:
                return 200, json.dumps(rows[-limit:]).encode()  # the latest, like Binance
            start = int(query["startTime"])
            return 200, json.dumps([r for r in rows if r[0] >= start][:limit]).encode()
        return 404, b'{"code": -1121, "msg": "Invalid symbol."}'

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exchange = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, body = exchange._answer(parts.path, query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def serve() -> Iterator[LocalExchange]:
    exchange = LocalExchange().start()
    try:
        yield exchange
    finally:
        exchange.stop()
