"""Strategies by name: `regime` (the engine's default), `sma_cross` (the reference
for comparing with other backtesters) and a trader's own class named as
`path/to/file.py:ClassName`.

A strategy is any class with a `name` and `decide(StrategyInput) -> list[Intent]`
(the `Strategy` protocol). Its parameters come from the configuration or
`--param KEY=VALUE`; they are passed to the constructor as keyword arguments, so an
unknown one is refused before the first bar.

Errors, each naming the file and, where there is one, the line:

    StrategyError
     ├── a file that is missing, does not import, or lacks the class
     ├── a class without `decide`, or parameters it does not take
     └── an exception raised inside `decide` (GuardedStrategy), with the symbol
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import sys
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.config import Settings
from engine.decide.strategy import RegimeStrategy, Strategy, StrategyInput, StrategyParams
from engine.domain import Intent, OrderType, Purpose, Side

log = logging.getLogger(__name__)

BUILT_IN = ("regime", "sma_cross")


class StrategyError(Exception):
    """A strategy could not be loaded or failed in a decision; says where."""


class SmaCross:
    """Long while the fast SMA of closes is above the slow one, short while below:
    always in the market once both averages exist. A cross is one exit and one
    entry on the same bar, so the reversal fills at that bar's close.

    `size` is the share of equity each entry buys; `stop_pct` / `target_pct` put a
    stop-loss / take-profit that far from the entry (0 = none)."""

    name = "sma_cross"

    def __init__(
        self,
        fast: int = 10,
        slow: int = 30,
        size: float = 0.2,
        stop_pct: float = 0.0,
        target_pct: float = 0.0,
    ) -> None:
        fast, slow = int(fast), int(slow)
        if not 1 <= fast < slow:
            raise ValueError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
        if not 0 < size <= 1:
            raise ValueError(f"size must be within (0, 1], got {size}")
        if stop_pct < 0 or target_pct < 0:
            raise ValueError("stop_pct and target_pct must not be negative")
        self.fast, self.slow, self.size = fast, slow, float(size)
        self.stop_pct, self.target_pct = float(stop_pct), float(target_pct)
        self._closes: dict[str, deque[float]] = {}

    def _averages(self, symbol: str, close: float) -> tuple[float, float] | None:
        closes = self._closes.setdefault(symbol, deque(maxlen=self.slow))
        closes.append(close)
        if len(closes) < self.slow:
            return None
        slow = math.fsum(closes) / self.slow
        fast = math.fsum(list(closes)[-self.fast :]) / self.fast
        return fast, slow

    def decide(self, ctx: StrategyInput) -> list[Intent]:
        close = ctx.snap.close
        averages = self._averages(ctx.symbol, close)
        if averages is None or not math.isfinite(close):
            return []
        fast, slow = averages
        if fast == slow:
            return []
        want = Side.BUY if fast > slow else Side.SELL
        held = ctx.position.qty if ctx.position is not None else 0.0
        if held * want.sign > 0:
            return []
        out: list[Intent] = []
        word = "above" if want is Side.BUY else "below"
        reason = f"SMA{self.fast} {fast:.4f} {word} SMA{self.slow} {slow:.4f}"
        if held != 0:
            out.append(
                Intent(
                    ctx.symbol,
                    want,
                    abs(held),
                    Purpose.EXIT,
                    OrderType.MARKET,
                    strength=1.0,
                    reason=f"cross: {reason}",
                )
            )
        qty = math.floor(ctx.equity * self.size / close)
        if qty >= 1:
            sign = want.sign
            out.append(
                Intent(
                    ctx.symbol,
                    want,
                    float(qty),
                    Purpose.ENTRY,
                    OrderType.MARKET,
                    stop_loss=close * (1 - sign * self.stop_pct) if self.stop_pct else None,
                    take_profit=close * (1 + sign * self.target_pct) if self.target_pct else None,
                    strength=1.0,
                    reason=reason,
                    sizing={"method": "share_of_equity", "size": self.size},
                )
            )
        return out


def _regime(settings: Settings, params: Mapping[str, Any]) -> Strategy:
    from engine.cycle import default_strategy

    base = default_strategy(settings)
    if not params:
        return base
    assert isinstance(base, RegimeStrategy)
    known = {f.name for f in fields(StrategyParams)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise StrategyError(
            f"regime: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {f.name: getattr(base.params, f.name) for f in fields(StrategyParams)}
    values.update(params)
    try:
        return RegimeStrategy(StrategyParams(**values))
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"regime: {exc}") from None


def _construct(cls: type[Any], params: Mapping[str, Any], where: str) -> Any:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = sorted(set(params) - set(signature.parameters))
        if unknown and not takes_any:
            known = ", ".join(signature.parameters) or "none"
            raise StrategyError(
                f"{where}: unknown parameter(s) {', '.join(unknown)}; it takes: {known}"
            )
    try:
        return cls(**params)
    except Exception as exc:
        raise StrategyError(f"{where}: {_located(exc)}") from None


def _located(exc: BaseException) -> str:
    """`file:line: Type: message`, at the innermost frame of the raising code."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    if not frames:
        return f"{type(exc).__name__}: {exc}"
    last = frames[-1]
    return f"{last.filename}:{last.lineno}: {type(exc).__name__}: {exc}"


def _import_file(path: Path) -> ModuleType:
    name = f"cockpit_strategy_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise StrategyError(f"{path} does not import: {_located(exc)}") from None
    return module


def load_class(spec: str) -> tuple[type[Any], Path]:
    """The class named by `path/to/file.py:ClassName`."""
    file, sep, class_name = spec.rpartition(":")
    if not sep or not file or not class_name:
        raise StrategyError(
            f"strategy {spec!r}: use regime, sma_cross or path/to/file.py:ClassName"
        )
    path = Path(file)
    if not path.is_file():
        raise StrategyError(f"{path}: no such strategy file")
    module = _import_file(path)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, type))
        raise StrategyError(
            f"{path}: no class {class_name}; classes there: {', '.join(found) or 'none'}"
        )
    decide = getattr(cls, "decide", None)
    if not callable(decide):
        line = inspect.getsourcelines(cls)[1]
        raise StrategyError(
            f"{path}:{line}: class {class_name} has no decide(self, ctx) -> list[Intent]"
        )
    return cls, path


def load_strategy(spec: str, params: Mapping[str, Any], settings: Settings) -> Strategy:
    """A strategy instance by name or file spec, its parameters checked."""
    if spec == "regime":
        return GuardedStrategy(_regime(settings, params), "regime")
    if spec == "sma_cross":
        return GuardedStrategy(_construct(SmaCross, params, "sma_cross"), "sma_cross")
    cls, path = load_class(spec)
    strategy = _construct(cls, params, f"{path}:{cls.__name__}")
    if not isinstance(getattr(strategy, "name", None), str):
        strategy.name = cls.__name__
    return GuardedStrategy(strategy, spec)


class GuardedStrategy:
    """Wraps a strategy so an exception in `decide` comes out as a StrategyError
    naming the strategy, the symbol, and the file and line that raised it."""

    def __init__(self, inner: Strategy, spec: str) -> None:
        self.inner = inner
        self.spec = spec
        self.name: str = inner.name
        self.failure: StrategyError | None = None  # the first, for a backtest to stop on

    def decide(self, ctx: StrategyInput) -> list[Intent]:
        try:
            intents = self.inner.decide(ctx)
        except Exception as exc:
            raise self._failed(
                f"strategy {self.spec} failed on {ctx.symbol}: {_located(exc)}"
            ) from exc
        if not isinstance(intents, list) or not all(isinstance(i, Intent) for i in intents):
            raise self._failed(
                f"strategy {self.spec} returned {type(intents).__name__} for {ctx.symbol};"
                " decide must return a list of Intent"
            )
        return intents

    def _failed(self, message: str) -> StrategyError:
        error = StrategyError(message)
        if self.failure is None:
            self.failure = error
        return error
