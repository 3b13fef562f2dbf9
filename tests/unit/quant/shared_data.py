"""Where the real market-data files for tests live: `../shared/data` next to the project root."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def shared_data(name: str) -> Path:
    """Path of one file in the shared data folder; fails loudly if it is missing."""
    path = (PROJECT_ROOT / ".." / "shared" / "data" / name).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"shared test data file missing: {path}")
    return path
