"""The engine's start path stays free of the heavy libraries it does not use.

`python -m engine run` builds the whole CLI parser and the runner; pandas (with
pyarrow), the trainer, the backtester, lightgbm, plotly, requests and the
calendars load only where a verb or a configured feature uses them (issue 13:
start to first cycle in about a second). A fresh interpreter shows what an import
really pulls in, whatever this test process has already loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "pandas",
    "pyarrow",
    "lightgbm",
    "sklearn",
    "scipy",
    "plotly",
    "requests",
    "exchange_calendars",
    "ccxt",
    "ib_async",
    "ray",
    "engine.ml.train",
    "engine.backtest.run",
)

PROBE = """
import json, sys
import engine.__main__ as cli
cli.build_parser()
from engine.process.runner import Engine
import sqlite_utils.db
print(json.dumps({
    "loaded": [name for name in sys.argv[1:] if name in sys.modules],
    "sqlite_utils_pandas": sqlite_utils.db.pd is not None,
}))
"""


def _probe(code: str, *argv: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_engine_start_path_loads_none_of_the_heavy_libraries() -> None:
    result = _probe(PROBE, *HEAVY)
    assert result == {"loaded": [], "sqlite_utils_pandas": False}


def test_a_verb_handler_loads_its_module_when_it_runs(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    code = """
import json, sys
import engine.__main__ as cli
args = cli.build_parser().parse_args(["backtest", "--sim", "--bars", "0", "--db", sys.argv[1]])
before = "engine.backtest.cli" in sys.modules
try:
    code = args.func(args)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"before": before, "after": "engine.backtest.cli" in sys.modules, "code": code}))
"""
    result = _probe(code, str(db))
    assert result["before"] is False
    assert result["after"] is True
    assert result["code"] == 2  # no bars: one clear message, a usage exit


def test_pandas_loaded_first_keeps_sqlite_utils_pandas_support() -> None:
    result = _probe(
        "import json, pandas, store, sqlite_utils.db\n"
        "print(json.dumps({'pd': sqlite_utils.db.pd is pandas}))"
    )
    assert result == {"pd": True}
