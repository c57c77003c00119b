"""IB's data farms as the feed sees them: which are lost, and what to tell.

2104/2106/2158 (a farm connected) are information; 2103/2105 (a farm lost) are a
WARNING and make every symbol stale, because IB does not say which symbols a
farm serves. The symbols stay stale until every lost farm has reported OK again,
which is an INFO event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine.domain import Severity

logger = logging.getLogger(__name__)

FeedEvent = tuple[Severity, str, str]


def farm_of(message: str) -> str:
    """The farm a 210x message names ("...connection is broken:usfarm" -> usfarm)."""
    return message.rpartition(":")[2].strip().lower() or message


class FarmWatch:
    def __init__(self, symbols: Sequence[str]) -> None:
        self._symbols = tuple(symbols)
        self._lost: set[str] = set()

    @property
    def stale_symbols(self) -> frozenset[str]:
        """Every symbol while any farm is lost: their bars cannot be trusted to come."""
        return frozenset(self._symbols) if self._lost else frozenset()

    def ok(self, code: int, message: str) -> FeedEvent | None:
        """A farm connected; an event when it was one of the lost."""
        logger.info("IB %d: %s", code, message)
        farm = farm_of(message)
        if farm not in self._lost:
            return None
        self._lost.discard(farm)
        back = (
            "every farm is back"
            if not self._lost
            else "still lost: " + (", ".join(sorted(self._lost)))
        )
        return (Severity.INFO, "IB data farm back", f"IB {code}: {message}; {back}")

    def lost(self, code: int, message: str) -> FeedEvent:
        self._lost.add(farm_of(message))
        return (
            Severity.WARNING,
            "IB data farm lost: symbols stale",
            f"IB {code}: {message}; entries blocked until it is back: {', '.join(self._symbols)}",
        )
