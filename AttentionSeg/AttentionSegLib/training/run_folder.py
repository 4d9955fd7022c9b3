"""Every path of a training run folder, in one place (no PyTorch needed).

A run folder holds ``model.pt`` (the model file, rewritten at every new best validation Dice),
``checkpoints/last.pt`` and ``checkpoints/best.pt``, ``progress.jsonl`` (progress events, see
:mod:`AttentionSegLib.progress`) and ``config.json`` (the run's
:class:`~AttentionSegLib.training.config.TrainingConfig`), ``plan.json`` and ``fingerprint.json``
(the experiment plan and the dataset fingerprint it came from). The trainer's console output goes to
``<run folder>.log`` beside it: the trainer starts a new run only in a missing or empty folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from AttentionSegLib.inference.model_store import MODEL_FILE_NAME

__all__ = ["RunFolder", "RunLock"]


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run.

    Example:
        >>> RunFolder("runs/liver").last_checkpoint.as_posix()
        'runs/liver/checkpoints/last.pt'
    """

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.jsonl"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def plan_file(self) -> Path:
        """The experiment plan the run took its unset settings from, with the reasons."""
        return self.path / "plan.json"

    @property
    def fingerprint_file(self) -> Path:
        """The dataset fingerprint the plan was made from."""
        return self.path / "fingerprint.json"

    @property
    def log_file(self) -> Path:
        """The trainer's standard output and error, beside the folder."""
        return self.path.with_name(f"{self.path.name}.log")

    def can_resume(self) -> bool:
        return self.last_checkpoint.is_file()

    def holds_files_other_than(self, *allowed: Path) -> bool:
        """Whether the folder exists and holds anything besides ``allowed`` (a new run needs an empty folder,
        except for the ``config.json`` it was started from)."""
        if not self.path.is_dir():
            return False
        keep = {Path(p).resolve() for p in allowed}
        return any(entry.resolve() not in keep for entry in self.path.iterdir())

    @property
    def lock_file(self) -> Path:
        """``.<name>.lock`` beside the folder: held (flock) by the training running in it."""
        return self.path.parent / f".{self.path.name}.lock"

    def check_can_create(self) -> None:
        """Refuse a run folder that is a file, or whose nearest existing parent is not a writable
        folder, before any work (a refused run leaves nothing behind).

        Raises:
            AttentionSegError: naming the folder and the problem.
        """
        import tempfile

        from AttentionSegLib.errors import AttentionSegError

        if self.path.exists() and not self.path.is_dir():
            raise AttentionSegError(f"{self.path}: is a file, not a run folder")
        ancestor = self.path
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise AttentionSegError(f"{self.path}: {ancestor} is a file, not a folder")
        try:  # a real write: permissions alone do not tell (root, read-only mounts, /proc)
            with tempfile.TemporaryFile(dir=ancestor):
                pass
        except OSError as error:
            raise AttentionSegError(f"{self.path}: cannot write into {ancestor} ({error.strerror})") from None


class RunLock:
    """An exclusive lock on a run folder, held while a training runs in it: a second training
    started into the same folder is refused. The lock is the kernel's (``flock``), so a run that
    is killed releases it with its process and never leaves it stale; the lock file (the holder's
    pid) is harmless when left behind, and removed on release while still locked.

    Raises (on :meth:`acquire`):
        AttentionSegError: another process holds the lock.
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self._handle = None

    def acquire(self) -> RunLock:
        import fcntl

        from AttentionSegLib.errors import AttentionSegError

        path = self.folder.lock_file
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                raise AttentionSegError(
                    f"{self.folder.path}: another training is running in this folder ({owner}); "
                    "wait for it or stop it first"
                ) from None
            # The holder removes the file when it releases: a lock taken on the file it removed
            # meanwhile is a lock on nothing. Only the file still under the name counts.
            if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        import fcntl

        try:
            self.folder.lock_file.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
