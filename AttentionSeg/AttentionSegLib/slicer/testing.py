"""Test fakes for the Slicer modules' self-tests and the test suite (not used by the modules' work).

:class:`ReplayTrainingProcess` stands in for the trainer process behind
:class:`~AttentionSegLib.slicer.training_logic.TrainingLogic`: no PyTorch, no process, seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from AttentionSegLib.progress import ProgressLog
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.run_folder import RunFolder

__all__ = ["ReplayTrainingProcess"]


class ReplayTrainingProcess:
    """A stand-in for the trainer that writes the given progress events into the run folder, one
    per :meth:`poll`, then exits with ``returncode``.

    Like the trainer, it creates the run folder, and a ``checkpoint`` event writes
    ``checkpoints/<kind>.pt`` (a placeholder), the ``best`` one also ``model.pt`` (holding
    ``model of epoch N``).

    Args:
        run_dir: the run folder.
        events: ``(kind, fields)`` pairs, in order.
        returncode: exit code after the last event.
        honours_terminate: on :meth:`terminate_tree`, write an ``end`` event with reason
            "stopped" and exit 0 (a trainer that stops cleanly); otherwise keep going until
            :meth:`kill_tree` (a trainer that hangs).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        events: Sequence[tuple[str, dict[str, Any]]],
        returncode: int = 0,
        honours_terminate: bool = True,
    ) -> None:
        self.run_folder = RunFolder(run_dir)
        self.run_folder.checkpoints.mkdir(parents=True, exist_ok=True)
        self.progress = ProgressLog(self.run_folder.progress_file)
        self.pending = list(events)
        self.final_returncode = returncode
        self.honours_terminate = honours_terminate
        self.returncode: int | None = None
        self.command: list[str] = []
        self.last_epoch = 0
        self.terminated = self.killed = False

    @property
    def run_dir(self) -> Path:
        return self.run_folder.path

    @classmethod
    def factory(
        cls, events: Sequence[tuple[str, dict[str, Any]]], **options: Any
    ) -> Callable[..., ReplayTrainingProcess]:
        """A process factory for :class:`~AttentionSegLib.slicer.training_logic.TrainingLogic`; the run
        folder is the one of the ``--config`` file the command names. The processes it made are in
        the factory's ``processes`` list."""

        def start(command: list[str], env: dict[str, str], log_path: Path) -> ReplayTrainingProcess:
            config = TrainingConfig.load(command[command.index("--config") + 1])
            process = cls(config.run_dir, events, **options)
            process.command = command
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"replaying {len(events)} progress events\n")
            start.processes.append(process)
            return process

        start.processes = []
        return start

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.pending:
                self._replay(*self.pending.pop(0))
            else:
                self.returncode = self.final_returncode
        return self.returncode

    def _replay(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "checkpoint":
            (self.run_folder.checkpoints / f"{fields['kind']}.pt").write_bytes(b"")
            if fields["kind"] == "best":
                self.run_folder.model_file.write_text(f"model of epoch {fields['epoch']}")
        self.progress.emit(kind, **fields)
        if kind == "epoch":
            self.last_epoch = fields["epoch"]

    def terminate_tree(self) -> None:
        self.terminated = True
        if self.honours_terminate and self.returncode is None:
            self.progress.emit("end", epochs_done=self.last_epoch, reason="stopped")
            self.pending = []
            self.returncode = 0

    def kill_tree(self) -> None:
        self.killed = True
        if self.returncode is None:
            self.returncode = -9  # as a process ended by SIGKILL
