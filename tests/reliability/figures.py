"""Figures the reliability suite measures about itself, for docs/reliability.md.

Tests call :func:`record` with a section name and one row (a dict of plain values). At the end
of the session the rows are written to ``build/reliability-figures.json``;
``python -m tests.reliability.report`` turns that file into the tables of the docs page.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES_PATH = ROOT / "build" / "reliability-figures.json"

_lock = threading.Lock()
_rows: dict[str, list[dict[str, Any]]] = {}
_counters: dict[str, int] = {}


def record(section: str, **row: Any) -> None:
    """Add one row to ``section`` (e.g. ``"endpoint_faults"``)."""
    with _lock:
        _rows.setdefault(section, []).append(row)


def count(name: str, amount: int = 1) -> None:
    """Add ``amount`` to the counter ``name`` (e.g. ``"bad_inputs_tried"``)."""
    with _lock:
        _counters[name] = _counters.get(name, 0) + amount


def maximum(name: str, value: int) -> None:
    """Keep the largest ``value`` seen for ``name`` (e.g. ``"concurrent_callers"``)."""
    with _lock:
        _counters[name] = max(_counters.get(name, 0), value)


def write() -> Path | None:
    """Write what was recorded (nothing when nothing was); return the path written."""
    with _lock:
        if not _rows and not _counters:
            return None
        FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
        FIGURES_PATH.write_text(json.dumps({"sections": _rows, "counters": _counters}, indent=2))
        return FIGURES_PATH
