"""How a file import reports the lines it rejected (daily history, events calendars).

Every data row of an imported file either lands or is reported with its line number and the reason:
nothing is dropped silently, because a gap the reader cannot see becomes a wrong number later.
"""

from __future__ import annotations

from typing import NamedTuple


class BadRow(NamedTuple):
    """One rejected line: 1-based line number in the file (the header is line 1) and why."""

    line: int
    reason: str
