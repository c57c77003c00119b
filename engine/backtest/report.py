"""The self-contained HTML report of a backtest: plotly figures with plotly.js
inlined once, so the file opens offline and in the cockpit alike.

Sections: key figures; equity and drawdown against buy-and-hold of the same
symbols; monthly returns; the distribution of daily returns; rolling Sharpe;
candles with entries, exits (reasons on hover) and regime bands; the trade list;
performance per regime (the classifier's call at entry and, on simulated data,
the true regime).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import empyrical
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from engine.backtest import metrics as perf
from engine.domain import Bar

if TYPE_CHECKING:
    from engine.backtest.run import BacktestResult

CANDLES_SHOWN = 3_000  # last bars per symbol drawn as candles; more makes the file heavy
SYMBOLS_SHOWN = 4
ROLLING_DAYS = 63
REGIME_COLOURS = {
    "TREND_UP": "rgba(46, 160, 67, 0.12)",
    "TREND_DOWN": "rgba(218, 54, 51, 0.12)",
    "RANGE": "rgba(110, 118, 129, 0.10)",
    "HIGH_VOL": "rgba(210, 153, 34, 0.14)",
    "CRASH": "rgba(130, 30, 160, 0.16)",
}
FIGURE_LABELS = {
    "total_return": ("Total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "annual_volatility": ("Annual volatility", "pct"),
    "sharpe": ("Sharpe", "num"),
    "sortino": ("Sortino", "num"),
    "calmar": ("Calmar", "num"),
    "max_drawdown": ("Max drawdown", "pct"),
    "max_drawdown_days": ("Max drawdown duration (trading days)", "int"),
    "worst_day": ("Worst day", "pct"),
    "trades": ("Trades", "int"),
    "win_rate": ("Win rate", "pct"),
    "profit_factor": ("Profit factor", "num"),
    "expectancy": ("Expectancy per trade", "money"),
    "avg_win": ("Average win", "money"),
    "avg_loss": ("Average loss", "money"),
    "exposure": ("Exposure (share of bars)", "pct"),
    "avg_holding_hours": ("Average holding (hours)", "num"),
    "turnover": ("Turnover (per year, × mean equity)", "num"),
    "final_equity": ("Final equity", "money"),
    "rejected_bars": ("Bad bars rejected", "int"),
}


def fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.3f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _div(fig: go.Figure) -> str:
    fig.update_layout(template="plotly_white", margin={"l": 50, "r": 20, "t": 40, "b": 30})
    return str(fig.to_html(full_html=False, include_plotlyjs=False))


def buy_and_hold(bars: Mapping[str, list[Bar]], ts: Sequence[int], cash: float) -> np.ndarray:
    """Equal-weight buy-and-hold of the symbols, from `cash`, marked at `ts`."""
    curves = []
    for rows in bars.values():
        good = [
            (b.ts, b.close) for b in rows if b.ts > 0 and math.isfinite(b.close) and b.close > 0
        ]
        if not good:
            continue
        times = np.array([t for t, _ in good], dtype="int64")
        closes = np.array([c for _, c in good], dtype="float64")
        idx = np.clip(
            np.searchsorted(times, np.asarray(ts, dtype="int64"), side="right") - 1, 0, None
        )
        curves.append(closes[idx] / closes[0])
    if not curves:
        return np.full(len(ts), cash)
    mean: np.ndarray = np.mean(curves, axis=0)
    return cash * mean


def equity_figure(result: BacktestResult) -> go.Figure:
    ts = [e["ts"] for e in result.equity]
    when = pd.to_datetime(ts, unit="ms", utc=True)
    cash = result.settings.engine.starting_cash
    equity = np.array([e["equity"] for e in result.equity], dtype="float64")
    hold = buy_and_hold(result.bars, ts, cash)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3])
    fig.add_trace(go.Scatter(x=when, y=equity, name="strategy"), row=1, col=1)
    fig.add_trace(go.Scatter(x=when, y=hold, name="buy and hold", line={"dash": "dot"}), 1, 1)
    for curve, name in ((equity, "strategy"), (hold, "buy and hold")):
        peak = np.maximum.accumulate(curve)
        fig.add_trace(
            go.Scatter(x=when, y=curve / peak - 1, name=f"drawdown, {name}", fill="tozeroy"),
            row=2,
            col=1,
        )
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(title="Equity and drawdown against buy-and-hold", height=520)
    return fig


def monthly_figure(returns: pd.Series) -> go.Figure:
    monthly = empyrical.aggregate_returns(returns, "monthly")
    table = monthly.unstack()
    fig = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=[f"{int(m):02d}" for m in table.columns],
            y=[str(y) for y in table.index],
            colorscale="RdYlGn",
            zmid=0,
            texttemplate="%{z:.1%}",
            hovertemplate="%{y}-%{x}: %{z:.2%}<extra></extra>",
        )
    )
    fig.update_layout(title="Monthly returns", height=120 + 40 * len(table.index))
    return fig


def distribution_figure(returns: pd.Series) -> go.Figure:
    fig = go.Figure(go.Histogram(x=returns.to_numpy(), nbinsx=60, name="daily returns"))
    fig.update_xaxes(tickformat=".1%")
    fig.update_layout(title="Distribution of daily returns", height=320)
    return fig


def rolling_sharpe_figure(returns: pd.Series) -> go.Figure:
    window = min(ROLLING_DAYS, max(len(returns) // 3, 5))
    rolling = empyrical.roll_sharpe_ratio(returns, window=window)  # type: ignore[no-untyped-call]
    fig = go.Figure(go.Scatter(x=rolling.index, y=rolling.to_numpy(), name="rolling Sharpe"))
    fig.update_layout(title=f"Rolling Sharpe ({window} trading days)", height=320)
    return fig


def _bands(regimes: Sequence[tuple[int, str]]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for ts, regime in regimes:
        if out and out[-1][2] == regime:
            out[-1] = (out[-1][0], ts, regime)
        else:
            if out:
                out[-1] = (out[-1][0], ts, out[-1][2])
            out.append((ts, ts, regime))
    return out


def candles_figure(result: BacktestResult, symbol: str) -> go.Figure:
    rows = [b for b in result.bars[symbol] if b.ts > 0][-CANDLES_SHOWN:]
    first = rows[0].ts if rows else 0
    when = pd.to_datetime([b.ts for b in rows], unit="ms", utc=True)
    fig = go.Figure(
        go.Candlestick(
            x=when,
            open=[b.open for b in rows],
            high=[b.high for b in rows],
            low=[b.low for b in rows],
            close=[b.close for b in rows],
            name=symbol,
        )
    )
    trades = [t for t in result.trades if t["symbol"] == symbol and t["exit_ts"] >= first]
    for label, ts_key, price_key in (
        ("entry", "entry_ts", "entry_price"),
        ("exit", "exit_ts", "exit_price"),
    ):
        fig.add_trace(_trade_markers(trades, label, ts_key, price_key))
    series = [(ts, r) for s, ts, r in result.regimes if s == symbol and ts >= first]
    # One layout update with every band: add_vrect per band re-validates the figure.
    fig.update_layout(
        shapes=[_regime_band(start, end, regime) for start, end, regime in _bands(series)],
        title=f"{symbol}: candles, entries and exits, regime bands (classifier)",
        xaxis_rangeslider_visible=False,
        height=480,
    )
    return fig


def _trade_markers(
    trades: Sequence[dict[str, Any]], label: str, ts_key: str, price_key: str
) -> go.Scatter:
    """The trades' entries (a triangle up or down by side) or exits (a cross, with why)."""
    markers = [
        "x" if label == "exit" else "triangle-up" if t["side"] == "BUY" else "triangle-down"
        for t in trades
    ]
    return go.Scatter(
        x=pd.to_datetime([t[ts_key] for t in trades], unit="ms", utc=True),
        y=[t[price_key] for t in trades],
        mode="markers",
        marker={"symbol": markers, "size": 9},
        name=f"{label}s",
        text=[
            f"{t['side']} {t['qty']:g} @ {t[price_key]:.4f}; P&L {t['pnl']:.2f}"
            + (f"<br>exit: {html.escape(t['exit_reason'] or '')}" if label == "exit" else "")
            for t in trades
        ],
        hoverinfo="text",
    )


def _regime_band(start: int, end: int, regime: str) -> dict[str, Any]:
    """A shaded band behind the candles for the time one regime was called."""
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": pd.Timestamp(start, unit="ms", tz="UTC"),
        "x1": pd.Timestamp(end, unit="ms", tz="UTC"),
        "y0": 0,
        "y1": 1,
        "fillcolor": REGIME_COLOURS.get(regime, "rgba(0,0,0,0.05)"),
        "line": {"width": 0},
        "layer": "below",
    }


def regime_at(series: Sequence[tuple[int, str]], ts: int) -> str | None:
    times = [t for t, _ in series]
    i = int(np.searchsorted(times, ts, side="right")) - 1
    return series[i][1] if i >= 0 else None


def per_regime(result: BacktestResult) -> list[tuple[str, str, int, str, str, str]]:
    """(source, regime, trades, win rate, total P&L, average P&L) per regime at entry."""
    called: dict[str, list[tuple[int, str]]] = {}
    for symbol, ts, regime in result.regimes:
        called.setdefault(symbol, []).append((ts, regime))
    truth = {
        s: [(b.ts, b.true_regime.value) for b in rows if b.true_regime is not None]
        for s, rows in result.bars.items()
    }
    out = []
    for source, series in (("classifier", called), ("simulator (true)", truth)):
        groups: dict[str, list[float]] = {}
        for t in result.trades:
            at_entry = regime_at(series.get(t["symbol"], []), t["entry_ts"])
            if at_entry is not None:
                groups.setdefault(at_entry, []).append(t["pnl"])
        for regime, pnls in sorted(groups.items()):
            wins = sum(p > 0 for p in pnls)
            out.append(
                (
                    source,
                    regime,
                    len(pnls),
                    f"{wins / len(pnls):.0%}",
                    f"{sum(pnls):,.2f}",
                    f"{sum(pnls) / len(pnls):,.2f}",
                )
            )
    return out


def stress_row(result: BacktestResult) -> list[str]:
    """Scenario, what it is, when it struck, max drawdown, kill switch, worst day,
    recovery: the figures a stress test is judged by."""
    from engine.backtest.run import iso
    from engine.backtest.scenarios import scenario

    name = result.config.scenario or "baseline"
    description = scenario(name).description if result.config.scenario else "the data as it is"
    s = result.stress
    if s is None:
        return [name, description, "", "", "", "", "", str(result.rejected_bars)]
    if not result.strike:
        recovery = ""
    elif s.recovery_days is None:
        recovery = "not recovered"
    else:
        recovery = f"{s.recovery_days:.1f} days"
    return [
        name,
        description,
        iso(result.strike) if result.strike else "",
        fmt(s.max_drawdown, "pct"),
        f"fired {iso(s.kill_switch_at)}" if s.kill_switch_at else "no",
        f"{fmt(s.worst_day, 'pct')} ({iso(s.worst_day_at)[:10]})" if s.worst_day_at else "–",
        recovery,
        str(result.rejected_bars),
    ]


STRESS_HEADERS = [
    "scenario", "what", "struck", "max drawdown", "kill switch", "worst day", "recovery",
    "bars rejected",
]  # fmt: skip


def stress_section(result: BacktestResult) -> str:
    if not result.config.scenario:
        return ""
    return "<h2>Stress scenario</h2>" + _table(STRESS_HEADERS, [stress_row(result)])


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1f2328; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 24px; }
th, td { border-bottom: 1px solid #d0d7de; padding: 4px 10px; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
.trades { max-height: 420px; overflow: auto; }
"""


def render(result: BacktestResult, extra_sections: Sequence[str] = ()) -> str:
    returns = perf.daily_returns(
        [e["ts"] for e in result.equity],
        [e["equity"] for e in result.equity],
        result.settings.engine.starting_cash,
    )
    figures = [
        (label, fmt(result.metrics.get(key), kind)) for key, (label, kind) in FIGURE_LABELS.items()
    ]
    parts = [
        _heading(result),
        _table(["figure", "value"], figures),
        stress_section(result),
        *extra_sections,
        _div(equity_figure(result)),
    ]
    if len(returns.dropna()) >= 2:
        parts += [
            _div(monthly_figure(returns)),
            _div(distribution_figure(returns)),
            _div(rolling_sharpe_figure(returns)),
        ]
    for symbol in list(result.bars)[:SYMBOLS_SHOWN]:
        parts.append(_div(candles_figure(result, symbol)))
    parts.append("<h2>Performance per regime at entry</h2>")
    parts.append(
        _table(["source", "regime", "trades", "win rate", "P&L", "average"], per_regime(result))
    )
    parts.append("<h2>Trades</h2><div class='trades'>")
    parts.append(_trades_table(result))
    parts.append("</div>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Backtest {html.escape(result.run_id)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def _heading(result: BacktestResult) -> str:
    """The run's title and what it ran: strategy, symbols, span, risk."""
    from engine.backtest.run import iso

    cfg = result.config
    return (
        f"<h1>Backtest {html.escape(result.run_id)}</h1>\n"
        f"<p>Strategy <b>{html.escape(cfg.strategy)}</b> {html.escape(str(dict(cfg.params)))},"
        f" symbols {html.escape(', '.join(result.bars))},"
        f" {html.escape(iso(result.equity[0]['ts']) if result.equity else '')} to"
        f" {html.escape(iso(result.equity[-1]['ts']) if result.equity else '')},"
        f" risk {'off' if cfg.risk_off else 'on'}."
        f" {html.escape(str(result.metrics.get('annualisation', '')))}.</p>"
    )


def _trades_table(result: BacktestResult) -> str:
    from engine.backtest.run import iso

    return _table(
        ["symbol", "side", "qty", "entry", "price", "exit", "price", "P&L", "exit reason"],
        (
            (
                t["symbol"],
                t["side"],
                f"{t['qty']:g}",
                iso(t["entry_ts"]),
                f"{t['entry_price']:.4f}",
                iso(t["exit_ts"]),
                f"{t['exit_price']:.4f}",
                f"{t['pnl']:,.2f}",
                t["exit_reason"] or "",
            )
            for t in result.trades
        ),
    )


def write_report(result: BacktestResult, path: Path, extra_sections: Sequence[str] = ()) -> None:
    path.write_text(render(result, extra_sections), encoding="utf-8")
