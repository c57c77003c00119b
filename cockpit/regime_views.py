"""The Regime page's read model: the current call per symbol, price with the
regime called at each bar, the indicators behind a call, time in each regime,
and rules against ML."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cockpit.reader import MAX_POINTS, SPAN, PathLike, distinct, frame, json_or_empty, one, read


def regime_symbols(path: PathLike) -> list[str]:
    with read(path) as conn:
        return distinct(conn, "regimes", "symbol")


def current_regimes(path: PathLike) -> pd.DataFrame:
    """The latest call per symbol."""
    with read(path) as conn:
        return frame(
            conn,
            # One index probe per symbol (a loose scan of regimes(symbol, ts)), not a
            # pass over every call: a month of calls took 100 ms the other way.
            "WITH RECURSIVE s(x) AS (SELECT MIN(symbol) FROM regimes UNION ALL"
            " SELECT (SELECT MIN(symbol) FROM regimes WHERE symbol > s.x) FROM s"
            " WHERE s.x IS NOT NULL)"
            " SELECT r.symbol, r.ts, r.regime, r.confidence, r.source, r.rules_regime,"
            " r.model_version FROM s JOIN regimes r ON r.id = (SELECT id FROM regimes"
            " WHERE symbol = s.x ORDER BY ts DESC, id DESC LIMIT 1) ORDER BY r.symbol",
            columns=[
                "symbol",
                "ts",
                "regime",
                "confidence",
                "source",
                "rules_regime",
                "model_version",
            ],
        )


def latest_features(path: PathLike, symbol: str) -> tuple[int | None, dict[str, Any]]:
    """The indicators behind the latest call for `symbol`."""
    with read(path) as conn:
        row = one(
            conn,
            "SELECT ts, features FROM regimes WHERE symbol = ? ORDER BY ts DESC LIMIT 1",
            (symbol,),
        )
    if row is None:
        return None, {}
    return int(row["ts"]), json_or_empty(row["features"])


def regime_timeline(
    path: PathLike, symbol: str, since: int | None = None, points: int = MAX_POINTS
) -> pd.DataFrame:
    """Close price and regime call for `symbol`, at most `points` rows (last per bucket)."""
    columns = ["ts", "close", "regime", "confidence"]
    with read(path) as conn:
        span = one(
            conn, SPAN.format(col="ts", table="regimes", where="WHERE symbol = ?"), (symbol,) * 2
        )
        if span is None or span[0] is None:
            return pd.DataFrame(columns=columns)
        lo = max(int(span[0]), since or int(span[0]))
        bucket = max(1, (int(span[1]) - lo) // max(1, points - 1) + 1)
        return frame(
            conn,
            "SELECT MAX(r.ts) AS ts, b.close, r.regime, r.confidence FROM regimes r"
            " LEFT JOIN bars b ON b.symbol = r.symbol AND b.ts = r.ts"
            " WHERE r.symbol = ? AND r.ts >= ? GROUP BY (r.ts - ?) / ? ORDER BY ts",
            (symbol, lo, lo, bucket),
            columns,
        )


def _symbol_window(symbol: str | None, since: int | None) -> tuple[str, list[Any]]:
    """A WHERE clause on (symbol, ts) that the regimes(symbol, ts) index can serve."""
    if symbol:
        return "symbol = ? AND ts >= ?", [symbol, since or 0]
    return "ts >= ?", [since or 0]


def time_in_regime(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> pd.DataFrame:
    """Hours and share of time per regime; each call lasts until the symbol's next one."""
    where, params = _symbol_window(symbol, since)
    with read(path) as conn:
        df = frame(
            conn,
            "SELECT regime, SUM(span) / 3600000.0 AS hours, COUNT(*) AS calls FROM ("
            " SELECT regime, COALESCE(LEAD(ts) OVER (PARTITION BY symbol ORDER BY ts) - ts, 0)"
            f" AS span FROM regimes WHERE {where})"
            " GROUP BY regime ORDER BY hours DESC",
            params,
            ["regime", "hours", "calls"],
        )
    total = float(df["hours"].sum()) if len(df) else 0.0
    df["share"] = df["hours"] / total if total > 0 else 0.0
    return df


def rules_vs_ml(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> pd.DataFrame:
    """Where the ML model made the call: what the rules said against what ML said."""
    where, params = _symbol_window(symbol, since)
    with read(path) as conn:
        return frame(
            conn,
            "SELECT rules_regime, regime AS ml_regime, COUNT(*) AS calls FROM regimes"
            f" WHERE source = 'ml' AND {where}"
            " GROUP BY rules_regime, regime ORDER BY calls DESC",
            params,
            ["rules_regime", "ml_regime", "calls"],
        )


def regime_sources(
    path: PathLike, symbol: str | None = None, since: int | None = None
) -> pd.DataFrame:
    where, params = _symbol_window(symbol, since)
    with read(path) as conn:
        return frame(
            conn,
            "SELECT source, COUNT(*) AS calls, AVG(confidence) AS avg_confidence FROM regimes"
            f" WHERE {where} GROUP BY source",
            params,
            ["source", "calls", "avg_confidence"],
        )
