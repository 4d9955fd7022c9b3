"""Atomic writes: a file appears under its name complete or not at all.

Every file the engine writes (images, label maps, model files, checkpoints, reports, charts,
dataset definitions, configurations) goes through :func:`atomic_path`: the content is written to
a hidden temporary file in the destination's folder, flushed to disk, then renamed over the
destination. A reader, a crash or a kill never sees half a file, and a failed write leaves
nothing behind. A killed writer's temporary (named ``.<name>.<pid>.<random>``) is removed by the
next write to the same file once that pid is gone.

Two writers build on the same idea for a different contract: a corrected case
(:mod:`AttentionSegLib.data.corrections`) writes all its files atomically under hidden names and
then renames them together, label last; the model store
(:mod:`AttentionSegLib.inference.model_store`) publishes a copy by hard link, so that it never
replaces a model already there. Progress logs (``progress.jsonl``) are appended to, one flushed
line per event, and readers skip an unfinished last line.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from AttentionSegLib.errors import OutputWriteError

__all__ = ["atomic_path", "write_text_atomic", "write_json_atomic", "atomic_torch_save"]

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is flushed to disk and
    renamed to ``path`` (replacing a file there), on any error removed.

    Args:
        path: the destination.
        suffix: the temporary file's ending (writers that pick the format by ending need the real one).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    _remove_stale_temporaries(folder, path.name)
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=folder)
    except OSError as error:
        raise OutputWriteError(f"{path}: cannot write here ({_reason(error)})") from None
    os.close(handle)
    temporary = Path(name)
    try:
        try:
            yield temporary
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; our files are meant to be shared
            os.replace(temporary, path)
        except OSError as error:  # disk full, quota, the folder removed or made read-only meanwhile
            raise OutputWriteError(f"{path}: cannot write ({_reason(error)}); nothing was changed") from None
    finally:
        temporary.unlink(missing_ok=True)


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Temporaries of ``name`` left by a writer that was killed (its pid, in the temporary's name,
    is gone): removed, so that a kill leaves nothing behind for long. A live writer's are kept."""
    prefix = f".{name}."
    try:
        candidates = [entry for entry in folder.iterdir() if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry in candidates:
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
        except OSError:  # alive under another user: keep it
            continue


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, content: Any, indent: int = 1) -> Path:
    """Write ``content`` as JSON to ``path`` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=indent)
    return Path(path)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (model files and checkpoints)."""
    import torch

    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)
