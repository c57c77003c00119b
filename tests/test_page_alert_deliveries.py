"""Alerts page: deliveries outside the cockpit and dead letters, from alert_deliveries."""

from __future__ import annotations

from pathlib import Path

from engine.alerts.deliveries import record
from engine.alerts.notify import Delivery, DeliveryStatus
from store.db import now_ms, open_writer
from tests.cockpit_support import app

pytest_plugins = ["tests.cockpit_fixtures"]
PAGE = "pages/alerts.py"


def _deliveries(db: Path) -> None:
    writer = open_writer(db)
    common = {"ts": now_ms(), "attempts": 3}
    record(
        writer,
        [
            Delivery(
                channel="telegram",
                target="telegram chat 4242",
                alert_ids=(7, 8),
                title="2 alerts",
                status=DeliveryStatus.DEAD,
                error="HTTP 502",
                **common,
            ),
            Delivery(
                channel="email",
                target="smtp 127.0.0.1:25",
                alert_ids=(9,),
                title="Stop hit",
                status=DeliveryStatus.DELIVERED,
                **common,
            ),
        ],
    )
    writer.conn.commit()
    writer.conn.close()


def _table(at):  # type: ignore[no-untyped-def]
    return next(d.value for d in at.dataframe if "channel" in d.value.columns)


def test_deliveries_show_what_reached_each_channel(filled_db: Path) -> None:
    _deliveries(filled_db)
    at = app(filled_db, PAGE)
    assert not at.exception
    assert sorted(_table(at)["status"]) == ["dead", "delivered"]


def test_dead_letters_only_shows_the_failed_channel(filled_db: Path) -> None:
    _deliveries(filled_db)
    at = app(filled_db, PAGE)
    at.toggle(key="al_dead").set_value(True).run()
    table = _table(at)
    assert table[["channel", "alerts", "error"]].values.tolist() == [
        ["telegram", "#7, #8", "HTTP 502"]
    ]


def test_before_any_delivery_the_section_says_so(filled_db: Path) -> None:
    at = app(filled_db, PAGE)
    assert not at.exception
    assert any("No alert has been sent" in i.value for i in at.info)
