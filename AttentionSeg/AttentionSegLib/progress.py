"""Training progress as JSON lines: one event per line, the same stream for the terminal, the
Slicer module and tests.

Every event has ``"event"`` (its kind) and ``"time"`` (UTC, ISO 8601). Kinds and their fields:

- ``start``: ``run_dir``, ``model``, ``dataset``, ``labels`` ({value: name}), ``n_train``, ``n_val``,
  ``epochs``, ``time_limit_min`` (or null), ``device``, ``resumed`` (bool), ``start_epoch``.
- ``epoch``: ``epoch`` (1-based), ``epochs``, ``loss``, ``lr``, ``seconds`` (this epoch), ``elapsed_s``.
- ``validation``: ``epoch``, ``dice`` ({label value: Dice}), ``mean_dice``, ``best_mean_dice``, ``is_best``.
- ``checkpoint``: ``epoch``, ``kind`` ("last" or "best"), ``path``.
- ``end``: ``epochs_done``, ``best_epoch``, ``best_mean_dice``, ``model_file``, ``reason``
  ("epochs", "time_limit" or "stopped"), ``elapsed_s``.
- ``error``: ``message``.

Keys of ``labels`` and ``dice`` are label values as strings (JSON object keys).
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["EVENT_KINDS", "ProgressLog", "read_events"]

EVENT_KINDS = ("start", "epoch", "validation", "checkpoint", "end", "error")


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats become null, tuples lists, paths strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy and torch scalars
        return _plain(value.item())
    return value


class ProgressLog:
    """Appends events to ``path`` (created if missing), one flushed line each, and passes each event
    to ``echo`` (for example a terminal progress bar) when given."""

    def __init__(self, path: str | os.PathLike, echo=None) -> None:
        self.path = Path(path)
        self.echo = echo

    def emit(self, kind: str, /, **fields: Any) -> dict:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown progress event {kind!r}; known: {', '.join(EVENT_KINDS)}")
        event = {"event": kind, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_plain(fields)}
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(event) + "\n")
            stream.flush()
        if self.echo is not None:
            self.echo(event)
        return event


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Events written after byte ``offset``, and the offset to continue from.

    A last line without its newline (still being written) is left for the next call; a line that
    is not JSON is skipped. A missing file gives no events.
    """
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    events = []
    for line in complete.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events, offset + len(complete)
