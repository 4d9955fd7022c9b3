"""Progress as JSON lines: one event per line, the one protocol between the engine's long jobs
(training, ``attentionseg segment --progress``) and whoever follows them (the terminal, the Slicer
modules' process runner, tests).

Every event has ``"event"`` (its kind) and ``"time"`` (UTC, ISO 8601). Kinds and their fields:

- ``start``: ``run_dir``, ``model``, ``dataset``, ``labels`` ({value: name}), ``n_train``, ``n_val``,
  ``epochs``, ``time_limit_min`` (or null), ``device``, ``resumed`` (bool), ``start_epoch``.
- ``epoch``: ``epoch`` (1-based), ``epochs``, ``loss``, ``lr``, ``seconds`` (this epoch), ``elapsed_s``.
- ``validation``: ``epoch``, ``dice`` ({label value: Dice}), ``mean_dice``, ``best_mean_dice``, ``is_best``.
- ``checkpoint``: ``epoch``, ``kind`` ("last" or "best"), ``path``.
- ``end``: ``epochs_done``, ``best_epoch``, ``best_mean_dice``, ``model_file``, ``reason``
  ("epochs", "time_limit" or "stopped"), ``elapsed_s``.
- ``error``: ``message``.
- ``progress``: ``fraction`` (0 to 1) of a job without epochs (a segmentation's windows).

Keys of ``labels`` and ``dice`` are label values as strings (JSON object keys).
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["EVENT_KINDS", "ProgressLog", "event_line", "read_events", "parse_events"]

EVENT_KINDS = ("start", "epoch", "validation", "checkpoint", "end", "error", "progress")


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
        event = make_event(kind, **fields)
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(event) + "\n")
            stream.flush()
        if self.echo is not None:
            self.echo(event)
        return event


def make_event(kind: str, /, **fields: Any) -> dict:
    """An event dict: its kind, the time and JSON-safe fields."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown progress event {kind!r}; known: {', '.join(EVENT_KINDS)}")
    return {"event": kind, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_plain(fields)}


def event_line(kind: str, /, **fields: Any) -> str:
    """One event as the line a program prints (without the newline)."""
    return json.dumps(make_event(kind, **fields))


def parse_events(lines) -> list[dict]:
    """The events among text or bytes lines; lines that are not events (other output) are skipped."""
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


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
    return parse_events(complete.splitlines()), offset + len(complete)
