"""The champion model inside the live cycle: its calls and probabilities reach the
regimes, the strategy and the shadow log; a tampered artifact leaves rules only."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.config import load_settings
from engine.ml import registry
from engine.ml.service import ModelService
from engine.ml.train import TrainedModel
from engine.process.runner import Engine
from store.db import open_writer
from tests.conftest import FakeClock


def _engine_with_champion(
    db_file: Path, tmp_path: Path, clock: FakeClock, champion_in: Callable[[Path], TrainedModel]
) -> Engine:
    artifacts = tmp_path / "models"
    settings = load_settings(
        engine={"cycle_seconds": 1.0, "symbols": 3, "seed": 11, "warmup_bars": 120},
        ml={"artifacts_dir": str(artifacts), "override_confidence": 0.5},
    )
    trained = champion_in(artifacts)
    db = open_writer(db_file)
    registry.adopt(db, trained, now=clock())
    db.conn.commit()
    db.conn.close()
    return Engine(settings, db_file, clock=clock)


def test_the_champion_drives_regimes_and_is_recorded(
    db_file, tmp_path, clock, open_engines, champion_in
):
    eng = _engine_with_champion(db_file, tmp_path, clock, champion_in)
    eng.open()
    open_engines.append(eng)
    assert eng.trader is not None and eng.trader.model is not None
    eng.trader.model.wait_loaded(timeout=60)
    for _ in range(100):
        clock.advance(1000)
        eng.step()
    assert eng.db is not None
    conn = eng.db.conn
    (version,) = conn.execute("SELECT version FROM models WHERE status = 'champion'").fetchone()
    sources = dict(conn.execute("SELECT source, count(*) FROM regimes GROUP BY source").fetchall())
    assert sources.get("ml", 0) > 0, "calls above the override confidence come from the model"
    used = {
        v for (v,) in conn.execute("SELECT DISTINCT model_version FROM regimes WHERE source='ml'")
    }
    assert used == {version}
    assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] > 0


def test_a_tampered_champion_is_refused_and_the_engine_trades_on_rules(
    db_file, tmp_path, clock, open_engines, champion_in
):
    eng = _engine_with_champion(db_file, tmp_path, clock, champion_in)
    for path in (tmp_path / "models").rglob("model.json"):
        path.write_text(path.read_text().replace('"', "'", 1))
    eng.open()
    open_engines.append(eng)
    assert eng.trader is not None and eng.trader.model is not None
    eng.trader.model.wait_loaded(timeout=60)
    for _ in range(30):
        clock.advance(1000)
        eng.step()
    assert eng.db is not None
    conn = eng.db.conn
    assert conn.execute("SELECT count(*) FROM regimes WHERE source = 'ml'").fetchone()[0] == 0
    high = conn.execute(
        "SELECT count(*) FROM alerts WHERE severity IN ('HIGH', 'CRITICAL') AND source = 'ml'"
    ).fetchone()[0]
    assert high >= 1


def _entries(eng: Engine) -> int:
    assert eng.db is not None
    return eng.db.conn.execute("SELECT count(*) FROM orders WHERE purpose = 'ENTRY'").fetchone()[0]


def test_the_engine_cycles_but_opens_nothing_while_its_champion_loads(
    db_file, tmp_path, clock, open_engines, champion_in
):
    eng = _engine_with_champion(db_file, tmp_path, clock, champion_in)
    eng.open()
    open_engines.append(eng)
    assert eng.trader is not None and eng.trader.model is not None and eng.db is not None
    release = threading.Event()
    blocked = ThreadPoolExecutor(1)
    blocked.submit(release.wait, 60)  # the loader is busy: the champion cannot load yet
    eng.trader.model = ModelService(
        eng.db,
        eng.settings.ml,
        tmp_path / "models",
        lambda *a: None,
        clock=clock,
        loader=blocked,
    )
    cycles_before = eng.db.conn.execute("SELECT count(*) FROM cycles").fetchone()[0]
    for _ in range(150):
        clock.advance(1000)
        eng.step()
    assert eng.trader.model.loading
    assert eng.db.conn.execute("SELECT count(*) FROM cycles").fetchone()[0] >= cycles_before + 150
    assert _entries(eng) == 0
    release.set()
    eng.trader.model.wait_loaded(timeout=60)
    for _ in range(150):
        clock.advance(1000)
        eng.step()
    blocked.shutdown()
    assert not eng.trader.model.loading
    assert _entries(eng) > 0, "the same market opens positions once the champion is in"
