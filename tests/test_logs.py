"""The engine's log file: rotated at a size cap, optionally JSON lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engine.config import LogSettings
from engine.process.logs import file_handler, log_file


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_the_log_file_sits_beside_the_database_unless_configured(tmp_path: Path):
    db = tmp_path / "var" / "cockpit.db"
    assert log_file(LogSettings(), db) == tmp_path / "var" / "logs" / "engine.log"
    assert log_file(LogSettings(dir=tmp_path / "elsewhere"), db).parent == tmp_path / "elsewhere"


def test_the_log_rotates_and_never_holds_more_than_its_cap(tmp_path: Path):
    settings = LogSettings(max_bytes=10_000, backups=2)
    path = tmp_path / "logs" / "engine.log"
    handler = file_handler(settings, path)
    logger = _logger(handler, "test.rotation")
    for i in range(2_000):
        logger.info("cycle %d done in %.2f ms", i, 1.5)
    handler.close()

    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["engine.log", "engine.log.1", "engine.log.2"]
    assert sum(f.stat().st_size for f in files) <= 3 * 10_000
    assert "cycle 1999 done" in path.read_text()


def test_json_lines_are_one_parseable_object_per_record(tmp_path: Path):
    path = tmp_path / "engine.log"
    handler = file_handler(LogSettings(json_lines=True), path)
    logger = _logger(handler, "test.json")
    logger.warning("broker %s: %s", "ib", 'quote "x"\nsecond line')
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("cycle failed")
    handler.close()

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["level"], r["logger"]) for r in lines] == [
        ("WARNING", "test.json"),
        ("ERROR", "test.json"),
    ]
    assert lines[0]["message"] == 'broker ib: quote "x"\nsecond line'
    assert "ValueError: boom" in lines[1]["exc"]
