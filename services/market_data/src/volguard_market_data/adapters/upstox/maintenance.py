"""Upstox's nightly maintenance window: when its APIs answer UDAPI100074 / UDAPI100072 instead of data.

Upstox does not publish the window on its error-code page; public clients that hit it report the APIs
reachable from 05:30 to 24:00 IST, i.e. closed 00:00-05:30 IST (error tables listing UDAPI100074 "API
accessible 5:30 AM - 12:00 AM IST", broker adapters mapping UDAPI100072/UDAPI100074 to "service hours").
The window is dated data like every market rule: a change is a new row with the date it starts, so a
replay of an older night keeps the window of its time. The setting `upstox_maintenance_window` overrides
it for every date (e.g. when Upstox announces a change before this table is updated).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from volguard_common.clock import IST


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Daily IST window [start, end) in which Upstox's APIs are closed; start > end wraps midnight."""

    valid_from: date
    start: time
    end: time
    source: str

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} IST"


UPSTOX_MAINTENANCE_WINDOWS: tuple[MaintenanceWindow, ...] = (
    MaintenanceWindow(
        # The first night it applied is not known; it is the only window on record, so every date uses it.
        valid_from=date.min,
        start=time(0, 0),
        end=time(5, 30),
        source="reported by public Upstox API clients (UDAPI100074 'API accessible 5:30 AM - 12:00 AM IST', "
        "UDAPI100072 service hours); checked 2026-12-07",
    ),
)

_WINDOW_TEXT = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_window(text: str) -> MaintenanceWindow:
    """'HH:MM-HH:MM' (IST) from the setting; raises ValueError with the expected shape."""
    match = _WINDOW_TEXT.match(text)
    if match is None:
        raise ValueError(
            f"Upstox maintenance window {text!r}: expected 'HH:MM-HH:MM' in IST, e.g. '00:00-05:30'"
        )
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError as exc:
        raise ValueError(f"Upstox maintenance window {text!r}: {exc}") from None
    if start == end:
        raise ValueError(f"Upstox maintenance window {text!r}: start and end are the same time")
    return MaintenanceWindow(
        valid_from=date.min, start=start, end=end, source="setting upstox_maintenance_window"
    )


def window_on(
    day: date, windows: Sequence[MaintenanceWindow] = UPSTOX_MAINTENANCE_WINDOWS
) -> MaintenanceWindow | None:
    """The window in force on `day`: the latest row that started on or before it (None: no window)."""
    in_force = [window for window in windows if window.valid_from <= day]
    return max(in_force, key=lambda window: window.valid_from) if in_force else None


def closed_until(
    now: datetime, windows: Sequence[MaintenanceWindow] = UPSTOX_MAINTENANCE_WINDOWS
) -> datetime | None:
    """When the window `now` falls in ends (IST), or None when Upstox is open at `now`."""
    at = now.astimezone(IST)
    moment = at.time()
    today = window_on(at.date(), windows)
    if today is not None and today.start < today.end:
        if today.start <= moment < today.end:
            return datetime.combine(at.date(), today.end, tzinfo=IST)
    elif today is not None and moment >= today.start:
        # Wraps midnight: the evening part belongs to today's window, the morning part to yesterday's.
        return datetime.combine(at.date() + timedelta(days=1), today.end, tzinfo=IST)
    yesterday = window_on(at.date() - timedelta(days=1), windows)
    if yesterday is not None and yesterday.start > yesterday.end and moment < yesterday.end:
        return datetime.combine(at.date(), yesterday.end, tzinfo=IST)
    return None
