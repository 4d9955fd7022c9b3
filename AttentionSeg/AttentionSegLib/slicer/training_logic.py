"""Qt-free logic behind the AttentionSegTraining module: run ``attentionseg train`` as a separate
process, follow its progress events into MRML curves, stop it, resume it, register its model.

The trainer runs in its own process (``python -m AttentionSegLib train ...``; PythonSlicer inside
Slicer) and its own process group, so Slicer stays responsive and Stop ends the trainer together
with its data-loading workers. The Logic never blocks: :meth:`TrainingLogic.poll` is called by a
timer (the module's widget) or by :meth:`TrainingLogic.wait` (tests, scripts).

The process is injected: ``process_factory(command, env, log_path)`` returns an object with
``poll()`` (exit code or None), ``terminate_tree()`` and ``kill_tree()``. The default,
:meth:`TrainingProcess.start`, starts a real process; :class:`ReplayTrainingProcess` replays
progress events without one.

Example:
    >>> logic = TrainingLogic(scene)  # doctest: +SKIP
    >>> logic.start(TrainingSettings("Task01/dataset.json", "axunet", "runs/liver", epochs=50))  # doctest: +SKIP
    >>> logic.wait()  # doctest: +SKIP
    'finished'
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import vtk

from AttentionSegLib.devices import DEVICE_CHOICES
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import register_model
from AttentionSegLib.progress import ProgressLog, read_events

__all__ = [
    "DEVICES",
    "ReplayTrainingProcess",
    "TrainingCurves",
    "TrainingLogic",
    "TrainingProcess",
    "TrainingSettings",
    "default_run_folder",
    "parse_patch_size",
    "signal_process_tree",
    "trainer_environment",
    "trainer_python",
]

DEVICES = DEVICE_CHOICES
PROGRESS_FILE = "progress.jsonl"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
MODEL_FILE = "model.pt"
ENGINE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the AttentionSegLib package
# Options that the settings themselves set; extra arguments may not repeat them.
_MANAGED_OPTIONS = frozenset(
    "--model --out --epochs --time-limit --patch --batch --lr --fold --folds --seed --device --resume".split()
)


def parse_patch_size(text: str) -> tuple[int, ...] | None:
    """``"96 96 96"``, ``"96x96x96"`` or ``"96,96,96"`` (array order, 2 or 3 sizes) -> a tuple;
    empty text -> None (the network's default patch).

    Raises:
        AttentionSegError: not 2 or 3 positive integers.
    """
    parts = [part for part in re.split(r"[\s,x×]+", text.strip().lower()) if part]
    if not parts:
        return None
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        sizes = ()
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise AttentionSegError(f"patch size {text!r}: expected 2 or 3 positive integers, like 96 96 96")
    return sizes


def default_run_folder(dataset: str | os.PathLike, model: str, now: datetime | None = None) -> Path:
    """``~/.attentionseg/runs/<dataset folder>-<model>-<YYYYmmdd-HHMMSS>``: a new folder per run."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path.home() / ".attentionseg" / "runs" / f"{Path(dataset).resolve().parent.name}-{model}-{stamp}"


@dataclass(frozen=True)
class TrainingSettings:
    """One training run, as ``attentionseg train`` takes it. ``None``: the network's recipe default.

    Args:
        dataset: the dataset definition (MSD or nnU-Net v2 ``dataset.json``).
        model: a registry name (``attentionseg models``).
        run_dir: the run folder: model file, checkpoints, progress events, config, log.
        epochs: number of epochs.
        time_limit_min: stop after this many minutes (and keep the best model so far).
        patch_size: training patch, array order, 2 or 3 sizes.
        batch_size: patches per step.
        learning_rate: initial learning rate.
        fold: cross-validation fold used for validation.
        n_folds: number of cross-validation folds.
        seed: seed of the run (initialisation, sampling, augmentation).
        device: ``auto``, ``cuda`` or ``cpu``.
        extra_arguments: more ``attentionseg train`` options, for example ``("--val-every", "5")``.
    """

    dataset: Path
    model: str
    run_dir: Path
    epochs: int | None = None
    time_limit_min: float | None = None
    patch_size: tuple[int, ...] | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    fold: int = 0
    n_folds: int = 5
    seed: int = 0
    device: str = "auto"
    extra_arguments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", Path(self.dataset).expanduser().resolve())
        object.__setattr__(self, "run_dir", Path(self.run_dir).expanduser().resolve())
        if not self.model:
            raise AttentionSegError("choose a network")
        for name, value in (("epochs", self.epochs), ("batch size", self.batch_size)):
            if value is not None and value < 1:
                raise AttentionSegError(f"{name} must be at least 1, got {value}")
        for name, value in (("time limit", self.time_limit_min), ("learning rate", self.learning_rate)):
            if value is not None and not value > 0:
                raise AttentionSegError(f"{name} must be positive, got {value}")
        if self.patch_size is not None and (len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1):
            raise AttentionSegError(f"patch size must be 2 or 3 positive integers, got {self.patch_size}")
        if self.n_folds < 2 or not 0 <= self.fold < self.n_folds:
            raise AttentionSegError(f"fold must be in 0..{self.n_folds - 1} with {self.n_folds} folds, got {self.fold}")
        if self.device not in DEVICES:
            raise AttentionSegError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        object.__setattr__(self, "extra_arguments", tuple(self.extra_arguments))
        managed = sorted(_MANAGED_OPTIONS.intersection(a.split("=", 1)[0] for a in self.extra_arguments))
        if managed:
            raise AttentionSegError(f"extra options repeat what the settings set: {', '.join(managed)}")

    @classmethod
    def from_form(
        cls,
        dataset: str | os.PathLike,
        model: str,
        run_dir: str | os.PathLike | None,
        epochs: int = 0,
        time_limit_min: float = 0,
        patch_size: str = "",
        batch_size: int = 0,
        learning_rate: float = 0.0,
        fold: int = 0,
        n_folds: int = 5,
        seed: int = 0,
        device: str = "auto",
        extra_arguments: str = "",
    ) -> TrainingSettings:
        """Settings from form fields, where 0 (or empty text) means the recipe default, an empty
        run folder (or ``.``) a new folder from :func:`default_run_folder`, and the extra
        arguments are one line split like a shell does."""
        if not str(dataset).strip() or str(dataset) == ".":
            raise AttentionSegError("choose a dataset definition (dataset.json)")
        run_folder = Path(run_dir) if run_dir is not None and str(run_dir).strip() not in ("", ".") else None
        try:
            extra = tuple(shlex.split(extra_arguments))
        except ValueError as error:
            raise AttentionSegError(f"extra options {extra_arguments!r}: {error}") from None
        return cls(
            dataset=Path(dataset),
            model=model,
            run_dir=run_folder or default_run_folder(dataset, model),
            epochs=epochs or None,
            time_limit_min=time_limit_min or None,
            patch_size=parse_patch_size(patch_size),
            batch_size=batch_size or None,
            learning_rate=learning_rate or None,
            fold=fold,
            n_folds=n_folds,
            seed=seed,
            device=device,
            extra_arguments=extra,
        )

    def arguments(self, resume: bool = False) -> list[str]:
        """The ``attentionseg`` arguments (after the program name) for this run."""
        arguments = ["train", str(self.dataset), "--model", self.model, "--out", str(self.run_dir)]
        if self.epochs is not None:
            arguments += ["--epochs", str(self.epochs)]
        if self.time_limit_min is not None:
            arguments += ["--time-limit", f"{self.time_limit_min:g}"]
        if self.patch_size is not None:
            arguments += ["--patch", *(str(size) for size in self.patch_size)]
        if self.batch_size is not None:
            arguments += ["--batch", str(self.batch_size)]
        if self.learning_rate is not None:
            arguments += ["--lr", f"{self.learning_rate:g}"]
        arguments += ["--fold", str(self.fold), "--folds", str(self.n_folds), "--seed", str(self.seed)]
        arguments += ["--device", self.device, *self.extra_arguments]
        return arguments + (["--resume"] if resume else [])

    @property
    def log_path(self) -> Path:
        """The trainer's output (standard output and error): beside the run folder, because the
        trainer starts a new run only in a missing or empty folder."""
        return self.run_dir.with_name(f"{self.run_dir.name}.log")


def trainer_python() -> str:
    """The Python that runs the trainer: inside the Slicer application PythonSlicer (Slicer's
    Python with the environment its launcher sets up; ``sys.executable`` there is not meant to be
    run directly), found next to ``sys.executable`` or on PATH; elsewhere this interpreter.

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


def trainer_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The trainer's environment: ``base`` (default: this process's) with the engine package first
    on PYTHONPATH (inside Slicer the module folders are on ``sys.path`` but not on PYTHONPATH) and
    unbuffered output, so the log follows the run."""
    environment = dict(os.environ if base is None else base)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(ENGINE_ROOT) + (os.pathsep + existing if existing else "")
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


class TrainingProcessLike(Protocol):
    """What the Logic needs of a training process."""

    def poll(self) -> int | None: ...

    def terminate_tree(self) -> None: ...

    def kill_tree(self) -> None: ...


ProcessFactory = Callable[[list[str], dict[str, str], Path], TrainingProcessLike]


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


class TrainingProcess:
    """A real trainer process, leader of its own process group; output goes to a log file."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    @classmethod
    def start(cls, command: list[str], env: dict[str, str], log_path: Path) -> TrainingProcess:
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


class ReplayTrainingProcess:
    """A stand-in for the trainer that writes the given progress events into the run folder, one
    per :meth:`poll`, then exits with ``returncode``. For tests and the module's self-test.

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
        self.run_dir = Path(run_dir)
        (self.run_dir / LAST_CHECKPOINT.parent).mkdir(parents=True, exist_ok=True)
        self.progress = ProgressLog(self.run_dir / PROGRESS_FILE)
        self.pending = list(events)
        self.final_returncode = returncode
        self.honours_terminate = honours_terminate
        self.returncode: int | None = None
        self.command: list[str] = []
        self.last_epoch = 0
        self.terminated = self.killed = False

    @classmethod
    def factory(
        cls, events: Sequence[tuple[str, dict[str, Any]]], **options: Any
    ) -> Callable[..., ReplayTrainingProcess]:
        """A process factory for :class:`TrainingLogic`; the run folder is taken from ``--out``.
        The processes it made are in the factory's ``processes`` list."""

        def start(command: list[str], env: dict[str, str], log_path: Path) -> ReplayTrainingProcess:
            process = cls(command[command.index("--out") + 1], events, **options)
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
                kind, fields = self.pending.pop(0)
                if kind == "checkpoint":
                    (self.run_dir / LAST_CHECKPOINT.parent / f"{fields['kind']}.pt").write_bytes(b"")
                    if fields["kind"] == "best":
                        (self.run_dir / MODEL_FILE).write_text(f"model of epoch {fields['epoch']}")
                self.progress.emit(kind, **fields)
                if kind == "epoch":
                    self.last_epoch = fields["epoch"]
            else:
                self.returncode = self.final_returncode
        return self.returncode

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


# Series colours (RGB 0-1): loss in black, mean Dice in red, labels from a qualitative palette.
_LOSS_COLOR = (0.1, 0.1, 0.1)
_MEAN_DICE_COLOR = (0.84, 0.15, 0.16)
_LABEL_COLORS = (
    (0.12, 0.47, 0.71),
    (0.17, 0.63, 0.17),
    (1.0, 0.5, 0.05),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81),
)


class TrainingCurves:
    """Loss and validation Dice per epoch in MRML: one table node (columns ``epoch``, ``loss``,
    ``lr``, then ``Dice <label>`` per label and ``mean Dice``), one plot series node per curve
    (loss, each Dice) and one chart node holding them. Epochs without validation have NaN Dice.

    An epoch reported again (a resumed run repeats the epochs after its last checkpoint) replaces
    that epoch and every later one.
    """

    EPOCH, LOSS, LEARNING_RATE, MEAN_DICE = "epoch", "loss", "lr", "mean Dice"

    def __init__(self, scene, name: str) -> None:
        self.scene = scene
        self.table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} curves")
        self.chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
        self.chart_node.SetTitle(f"Training: {name}")
        self.chart_node.SetXAxisTitle("epoch")
        self.chart_node.SetYAxisTitle("loss / Dice")
        self.series_nodes: dict[str, object] = {}
        self._columns: dict[str, vtk.vtkDoubleArray] = {}
        self._dice_columns: dict[str, str] = {}  # label value -> column name
        self._rows: dict[int, dict[str, float]] = {}
        for column in (self.EPOCH, self.LOSS, self.LEARNING_RATE):
            self._add_column(column)
        self._add_series(self.LOSS, _LOSS_COLOR, with_markers=False)

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    @property
    def epochs(self) -> list[int]:
        return sorted(self._rows)

    def column(self, name: str) -> list[float]:
        """The column's values, one per epoch in order."""
        return [self._rows[epoch].get(name, math.nan) for epoch in self.epochs]

    def set_labels(self, labels: dict[str, str]) -> None:
        """Add a Dice column and curve per foreground label (value -> name), then the mean."""
        for value, name in sorted(labels.items(), key=lambda item: _label_order(item[0])):
            if str(value) != "0":
                self._dice_column(str(value), name)
        self._mean_dice_column()

    def add_epoch(self, event: dict) -> None:
        epoch = int(event["epoch"])
        for later in [e for e in self._rows if e >= epoch]:
            del self._rows[later]
        self._rows[epoch] = {self.EPOCH: float(epoch), self.LOSS: _number(event.get("loss"))}
        self._rows[epoch][self.LEARNING_RATE] = _number(event.get("lr"))
        self._refresh()

    def add_validation(self, event: dict) -> None:
        epoch = int(event["epoch"])
        row = self._rows.setdefault(epoch, {self.EPOCH: float(epoch)})
        for value, dice in sorted((event.get("dice") or {}).items(), key=lambda item: _label_order(item[0])):
            row[self._dice_column(str(value), f"label {value}")] = _number(dice)
        row[self._mean_dice_column()] = _number(event.get("mean_dice"))
        self._refresh()

    def _dice_column(self, value: str, name: str) -> str:
        if value not in self._dice_columns:
            title = f"Dice {name}"
            if title in self._columns:
                title = f"Dice {name} ({value})"
            self._dice_columns[value] = title
            self._add_column(title)
            self._add_series(title, _LABEL_COLORS[(len(self._dice_columns) - 1) % len(_LABEL_COLORS)])
        return self._dice_columns[value]

    def _mean_dice_column(self) -> str:
        if self.MEAN_DICE not in self._columns:
            self._add_column(self.MEAN_DICE)
            self._add_series(self.MEAN_DICE, _MEAN_DICE_COLOR)
        return self.MEAN_DICE

    def _add_column(self, name: str) -> None:
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfValues(len(self._rows))
        column.Fill(math.nan)
        self.table_node.AddColumn(column)
        self._columns[name] = column

    def _add_series(self, column: str, color: tuple[float, float, float], with_markers: bool = True) -> None:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.table_node.GetName()} {column}")
        series.SetAndObserveTableNodeID(self.table_node.GetID())
        series.SetXColumnName(self.EPOCH)
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetLineStyle(series.LineStyleSolid)
        # Markers keep validation points visible when validation skips epochs (NaN between them).
        series.SetMarkerStyle(series.MarkerStyleCircle if with_markers else series.MarkerStyleNone)
        series.SetColor(*color)
        self.chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        self.series_nodes[column] = series

    def _refresh(self) -> None:
        epochs = self.epochs
        for name, column in self._columns.items():
            column.SetNumberOfValues(len(epochs))
            for row, epoch in enumerate(epochs):
                column.SetValue(row, self._rows[epoch].get(name, math.nan))
            column.Modified()
        self.table_node.GetTable().Modified()
        self.table_node.Modified()


def _label_order(value: str) -> tuple[int, str]:
    return (int(value), "") if str(value).isdigit() else (sys.maxsize, str(value))


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass
class _Run:
    """What the Logic knows of the current (or last) run."""

    settings: TrainingSettings
    curves: TrainingCurves
    process: TrainingProcessLike | None = None
    first_event: int = 0  # index in TrainingLogic.events of this launch's first event
    offset: int = 0  # bytes of the progress file read so far
    stop_deadline: float | None = None


class TrainingLogic:
    """Runs, follows, stops and resumes training runs on an MRML scene; no Qt.

    Args:
        scene: the MRML scene that receives the curves (table, plot series and chart nodes).
        process_factory: ``(command, env, log_path) -> process``; default :meth:`TrainingProcess.start`.
        models_folder: where finished models are registered; default
            :func:`AttentionSegLib.inference.model_store.default_models_folder`.
        python: the interpreter that runs the trainer; default :func:`trainer_python`.
        stop_grace_s: seconds between the polite stop (SIGTERM) and the forced one (SIGKILL).
        clock: monotonic clock in seconds (tests pass their own).

    States: ``idle`` (nothing started), ``running``, ``stopping``, then ``finished``, ``stopped``
    or ``failed``; :attr:`message` says why, in one line.
    """

    IDLE, RUNNING, STOPPING, FINISHED, STOPPED, FAILED = "idle", "running", "stopping", "finished", "stopped", "failed"

    def __init__(
        self,
        scene,
        process_factory: ProcessFactory | None = None,
        models_folder: str | os.PathLike | None = None,
        python: str | None = None,
        stop_grace_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scene = scene
        self.process_factory = process_factory or TrainingProcess.start
        self.models_folder = models_folder
        self.python = python
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self.state = self.IDLE
        self.message = ""
        self.events: list[dict] = []
        self.registered_model: Path | None = None
        self.run: _Run | None = None

    # Commands

    def start(self, settings: TrainingSettings) -> None:
        """Start a new run in ``settings.run_dir``, a missing or empty folder (the trainer creates it).

        Raises:
            AttentionSegError: a run is active, the dataset definition is missing, the run folder
                is not empty (resume the run in it, or choose another), or the trainer cannot be
                started.
        """
        self._check_idle()
        if not settings.dataset.is_file():
            raise AttentionSegError(f"{settings.dataset}: dataset definition not found")
        if settings.run_dir.is_dir() and any(settings.run_dir.iterdir()):
            raise AttentionSegError(f"{settings.run_dir} is not empty: resume the run in it, or choose another folder")
        self._launch(settings, resume=False)

    def resume(self, settings: TrainingSettings | None = None) -> None:
        """Continue the run in ``settings.run_dir`` (default: the last run) from its last checkpoint.
        The curves show the whole run, earlier epochs included.

        Raises:
            AttentionSegError: a run is active, no run is given, or the run folder has no checkpoint.
        """
        self._check_idle()
        settings = settings or (self.run.settings if self.run else None)
        if settings is None:
            raise AttentionSegError("nothing to resume: choose the folder of an earlier run")
        if not (settings.run_dir / LAST_CHECKPOINT).is_file():
            raise AttentionSegError(f"{settings.run_dir}: no checkpoint to resume from ({LAST_CHECKPOINT.as_posix()})")
        self._launch(settings, resume=True)

    def stop(self) -> None:
        """Ask the trainer to stop (it saves its last checkpoint); :meth:`poll` kills the whole
        process tree if it is still running ``stop_grace_s`` later, and a second stop kills it at
        once. Nothing to do when no run is active."""
        if self.state == self.STOPPING:
            self.run.process.kill_tree()
            return
        if self.state != self.RUNNING:
            return
        self.run.process.terminate_tree()
        self.run.stop_deadline = self.clock() + self.stop_grace_s
        self.state = self.STOPPING
        self.message = "Stopping: the trainer saves its last checkpoint."

    def poll(self) -> list[dict]:
        """Read new progress events into the curves; notice the end of the process (then register
        the model of a finished run). Returns the new events."""
        if self.run is None or self.state not in (self.RUNNING, self.STOPPING):
            return []
        new_events = self._read_events()
        returncode = self.run.process.poll()
        if returncode is None:
            if self.state == self.STOPPING and self.clock() >= self.run.stop_deadline:
                self.run.process.kill_tree()
            return new_events
        new_events += self._read_events()  # what the trainer wrote just before it exited
        self._conclude(returncode)
        return new_events

    def wait(self, timeout_s: float | None = None, poll_interval_s: float = 0.5) -> str:
        """Poll until the run ends; return the final state.

        Raises:
            TimeoutError: still running after ``timeout_s`` seconds (the run is left running).
        """
        deadline = None if timeout_s is None else self.clock() + timeout_s
        while True:
            self.poll()
            if not self.is_running:
                return self.state
            if deadline is not None and self.clock() >= deadline:
                raise TimeoutError(f"training still running after {timeout_s} s")
            time.sleep(poll_interval_s)

    # What the widget shows

    @property
    def is_running(self) -> bool:
        return self.state in (self.RUNNING, self.STOPPING)

    @property
    def curves(self) -> TrainingCurves | None:
        return self.run.curves if self.run else None

    @property
    def log_path(self) -> Path | None:
        return self.run.settings.log_path if self.run else None

    def session_events(self, kind: str | None = None) -> list[dict]:
        """Events of the current launch (a resumed run also shows its earlier events in :attr:`events`)."""
        if self.run is None:
            return []
        return [e for e in self.events[self.run.first_event :] if kind is None or e["event"] == kind]

    def progress(self) -> float:
        """Fraction done, 0 to 1: epochs done of the planned epochs, or time used of the time
        limit, whichever is further."""
        if self.state == self.FINISHED:
            return 1.0
        # The whole run counts: a resumed run starts where its checkpoint left it.
        start = self._last("start", whole_run=True)
        epoch = self._last("epoch", whole_run=True)
        if epoch is None:
            return 0.0
        fractions = [epoch["epoch"] / epoch["epochs"]] if epoch.get("epochs") else []
        limit_min = (start or {}).get("time_limit_min")
        if limit_min:
            fractions.append(epoch.get("elapsed_s", 0.0) / (60.0 * limit_min))
        return min(1.0, max(fractions, default=0.0))

    def status_text(self) -> str:
        """One line: the state's message, or the latest epoch, loss and validation Dice."""
        if self.state != self.RUNNING:
            return self.message
        epoch, validation = self._last("epoch"), self._last("validation")
        if epoch is None:
            return self.message
        text = f"Epoch {epoch['epoch']}/{epoch.get('epochs') or '?'}, loss {_number(epoch.get('loss')):.4f}"
        if validation is not None:
            text += (
                f", mean Dice {_number(validation.get('mean_dice')):.4f}"
                f" (best {_number(validation.get('best_mean_dice')):.4f})"
            )
        return text

    def log_text(self, max_chars: int = 20000) -> str:
        """The end of the trainer's log (its standard output and error)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with open(self.log_path, "rb") as stream:
            stream.seek(max(0, self.log_path.stat().st_size - max_chars))
            return stream.read().decode("utf-8", errors="replace")

    def plot_view_node(self, singleton_tag: str = "AttentionSegTraining"):
        """The module's plot view node (created once per scene), showing the current run's chart."""
        view_node = self.scene.GetSingletonNode(singleton_tag, "vtkMRMLPlotViewNode")
        if view_node is None:
            view_node = self.scene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"{singleton_tag} plot view")
            view_node.SetSingletonTag(singleton_tag)
        if self.curves is not None:
            view_node.SetPlotChartNodeID(self.curves.chart_node.GetID())
        return view_node

    # Internals

    def _check_idle(self) -> None:
        if self.is_running:
            raise AttentionSegError("a training run is active: stop it first")

    def _launch(self, settings: TrainingSettings, resume: bool) -> None:
        python = self.python or trainer_python()
        command = [python, "-m", "AttentionSegLib", *settings.arguments(resume=resume)]
        settings.run_dir.parent.mkdir(parents=True, exist_ok=True)
        log_path = settings.log_path
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"{'Resuming' if resume else 'Starting'}: {shlex.join(command)}\n")
        previous = self.run
        if (
            resume
            and previous is not None
            and previous.settings.run_dir == settings.run_dir
            and self.scene.IsNodePresent(previous.curves.table_node)
        ):
            curves = previous.curves  # the same run goes on in the same chart
        else:
            curves = TrainingCurves(self.scene, settings.run_dir.name)
        self.events = []
        self.registered_model = None
        self.run = _Run(settings, curves)
        if resume:
            self._read_events()  # the epochs before the checkpoint, for the curves
            self.run.first_event = len(self.events)
        try:
            self.run.process = self.process_factory(command, trainer_environment(), log_path)
        except OSError as error:
            self.state, self.message = self.FAILED, f"Cannot start the trainer: {error}"
            raise AttentionSegError(f"cannot start the trainer ({command[0]}): {error}") from error
        self.state = self.RUNNING
        self.message = f"{'Resuming' if resume else 'Starting'} {settings.model} in {settings.run_dir}"

    def _read_events(self) -> list[dict]:
        path = self.run.settings.run_dir / PROGRESS_FILE
        if path.exists() and path.stat().st_size < self.run.offset:
            self.run.offset = 0  # the trainer started the file anew
        events, self.run.offset = read_events(path, self.run.offset)
        for event in events:
            kind = event["event"]
            if kind == "start" and event.get("labels"):
                self.run.curves.set_labels(event["labels"])
            elif kind == "epoch" and event.get("epoch") is not None:
                self.run.curves.add_epoch(event)
            elif kind == "validation" and event.get("epoch") is not None:
                self.run.curves.add_validation(event)
        self.events += events
        return events

    def _last(self, kind: str, whole_run: bool = False) -> dict | None:
        events = self.events if whole_run else self.session_events()
        return next((event for event in reversed(events) if event["event"] == kind), None)

    def _conclude(self, returncode: int) -> None:
        end, error = self._last("end"), self._last("error")
        stop_requested = self.state == self.STOPPING
        if error is not None:
            self.state, self.message = self.FAILED, f"Training failed: {error.get('message', 'no message')}"
        elif end is not None and returncode == 0 and end.get("reason") != "stopped":
            self._register(end)
        elif stop_requested or (end is not None and end.get("reason") == "stopped"):
            self.state = self.STOPPED
            if (self.run.settings.run_dir / LAST_CHECKPOINT).is_file():
                done = f" after epoch {end['epochs_done']}" if end and end.get("epochs_done") is not None else ""
                self.message = f"Stopped{done}; Resume continues from the last checkpoint."
            else:
                self.message = "Stopped before the first checkpoint; start again to train."
        elif returncode != 0:
            detail = self._last_log_line()
            self.state = self.FAILED
            self.message = f"The trainer exited with code {returncode}" + (f": {detail}" if detail else "")
        else:
            self.state, self.message = self.FAILED, "The trainer exited without reporting the end of training."

    def _register(self, end: dict) -> None:
        reported = Path(end["model_file"]) if end.get("model_file") else None
        model_file = reported if reported is not None and reported.is_file() else self.run.settings.run_dir / MODEL_FILE
        try:
            self.registered_model = register_model(model_file, self.models_folder, self.run.settings.run_dir.name)
        except AttentionSegError as error:
            self.state, self.message = self.FAILED, f"Training finished but the model was not registered: {error}"
            return
        best = end.get("best_mean_dice")
        best_text = f", best mean Dice {best:.4f} at epoch {end.get('best_epoch')}" if best is not None else ""
        self.state = self.FINISHED
        self.message = (
            f"Finished ({end.get('reason', 'done')}): {end.get('epochs_done', '?')} epochs{best_text}. "
            f"Model registered as {self.registered_model.name}."
        )

    def _last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_text(4000).splitlines() if line.strip()]
        return lines[-1] if lines else ""
