"""The engine's log: stderr, and a size-capped rotating file beside the database.

A marathon runs for weeks: the file rotates at `logs.max_bytes` and keeps
`logs.backups` old files, so the log can never fill the disk the database needs.
With `logs.json_lines` every line is one JSON object, for log shippers.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.config import LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(as_json: bool) -> logging.Formatter:
    return JsonLines() if as_json else logging.Formatter(TEXT_FORMAT)


def log_file(settings: LogSettings, db_file: Path) -> Path:
    folder = settings.dir if settings.dir is not None else db_file.parent / "logs"
    return folder / "engine.log"


def file_handler(settings: LogSettings, path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=settings.max_bytes, backupCount=settings.backups, encoding="utf-8"
    )
    handler.setFormatter(formatter(settings.json_lines))
    return handler


def setup(verbose: bool, settings: LogSettings | None = None, db_file: Path | None = None) -> None:
    """stderr always; the rotating file once the settings and the database are known."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    as_json = settings is not None and settings.json_lines
    if not root.handlers:
        stderr = logging.StreamHandler(sys.stderr)
        root.addHandler(stderr)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setFormatter(formatter(as_json))
    if settings is not None and db_file is not None:
        root.addHandler(file_handler(settings, log_file(settings, db_file)))
    # APScheduler logs every job run at INFO: four times a second is noise.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
