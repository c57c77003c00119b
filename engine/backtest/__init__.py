"""Backtests on the engine's own code path.

A backtest builds a `Trader` on an in-memory state store, hands it a clock that
reads the time of the bar being processed, and steps its cycle and monitor over
history as fast as the machine allows. Nothing here decides a trade: strategies,
sizing, the risk gate, the monitor, the OMS, the paper broker and the portfolio
are the live ones.

- `strategies`: the reference SMA cross and the loader for a trader's own file;
- `costs`: commission and slippage specs mapped onto the paper broker's settings;
- `data`: bars from CSV files or the simulator, date ranges, stress scenarios;
- `run`: one backtest, its outputs and its record in the state store;
- `metrics`: performance figures on daily returns (empyrical's definitions);
- `report`: the self-contained HTML report;
- `sweep`: grids, random search and walk-forward, on processes or Ray;
- `cli`: `python -m engine backtest` and `python -m engine sweep`.
"""
