"""The one way the Slicer modules run the engine's command line in the background: a process of
its own (``python -m AttentionSegLib ...``, PythonSlicer inside Slicer) leading its own process
group, output appended to a log file, polled by a timer, stopped with its whole tree; and the
reading of the progress events it writes (:mod:`AttentionSegLib.progress`).

Used by training (:mod:`~AttentionSegLib.slicer.training_logic`) and by background segmentation
(:mod:`~AttentionSegLib.slicer.background`). Both take a ``process_factory(command, env, log_path)``
returning a :class:`ProcessLike`, so tests inject a fake (see :mod:`~AttentionSegLib.slicer.testing`).

Example:
    >>> command = engine_command("models")  # doctest: +SKIP
    >>> process = EngineProcess.start(command, engine_environment(), Path("models.log"))  # doctest: +SKIP
    >>> process.poll()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.progress import read_events

__all__ = [
    "ENGINE_ROOT",
    "EngineProcess",
    "EventFollower",
    "ProcessFactory",
    "ProcessLike",
    "engine_command",
    "engine_environment",
    "engine_python",
    "signal_process_tree",
]

ENGINE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the AttentionSegLib package


def engine_python() -> str:
    """The Python that runs the engine's command line: inside the Slicer application PythonSlicer
    (Slicer's Python with the environment its launcher sets up; ``sys.executable`` there is not
    meant to be run directly), found next to ``sys.executable`` or on PATH; elsewhere this
    interpreter.

    Raises:
        AttentionSegError: inside Slicer, no PythonSlicer next to the application or on PATH.
    """
    if getattr(sys.modules.get("slicer"), "app", None) is None:
        return sys.executable
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    python_slicer = shutil.which("PythonSlicer", path=search_path)
    if python_slicer is None:
        raise AttentionSegError(f"PythonSlicer not found next to {sys.executable} or on PATH")
    return python_slicer


def engine_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The engine process's environment: ``base`` (default: this process's) with the engine package
    first on PYTHONPATH (inside Slicer the module folders are on ``sys.path`` but not on
    PYTHONPATH) and unbuffered output, so the log follows the job."""
    environment = dict(os.environ if base is None else base)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(ENGINE_ROOT) + (os.pathsep + existing if existing else "")
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def engine_command(*arguments: str, python: str | None = None) -> list[str]:
    """``[python, "-m", "AttentionSegLib", *arguments]``; ``python`` defaults to :func:`engine_python`."""
    return [python or engine_python(), "-m", "AttentionSegLib", *arguments]


class ProcessLike(Protocol):
    """What the logics need of a background process."""

    def poll(self) -> int | None: ...

    def terminate_tree(self) -> None: ...

    def kill_tree(self) -> None: ...


ProcessFactory = Callable[[list[str], dict[str, str], Path], ProcessLike]


def signal_process_tree(pid: int, graceful: bool) -> None:
    """Stop the process group led by ``pid`` (a process started with ``start_new_session``):
    SIGTERM when ``graceful`` (the trainer saves its last checkpoint), else SIGKILL. Windows has
    no graceful signal for a tree: ``taskkill /T /F`` either way. A group that is gone is fine."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True, check=False)
        return
    try:
        os.killpg(pid, signal.SIGTERM if graceful else signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # gone (macOS answers EPERM for a group of zombies)
        pass


class EngineProcess:
    """A real process, leader of its own process group (so a stop reaches its workers too); its
    output goes to a log file. :meth:`start` is the default ``process_factory``."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    @classmethod
    def start(cls, command: list[str], env: dict[str, str], log_path: Path) -> EngineProcess:
        """Start ``command`` with stdout and stderr appended to ``log_path``, in the engine's folder:
        ``python -m`` puts the working folder on ``sys.path``, so the engine is found even where a
        launcher rewrites PYTHONPATH (the command's paths are absolute)."""
        group = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        )
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ENGINE_ROOT,
                **group,
            )
        return cls(popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate_tree(self) -> None:
        signal_process_tree(self.pid, graceful=True)

    def kill_tree(self) -> None:
        signal_process_tree(self.pid, graceful=False)


class EventFollower:
    """Follows a file of progress events as a process appends to it: each :meth:`read` returns the
    events completed since the last one. Lines that are not events (other output in a log) are
    skipped; a file that shrank (written anew) is read again from its start."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = 0  # bytes read so far

    def read(self) -> list[dict]:
        if self.path.exists() and self.path.stat().st_size < self.offset:
            self.offset = 0
        events, self.offset = read_events(self.path, self.offset)
        return events
