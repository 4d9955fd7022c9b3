"""Qt-free logic behind the AttentionSegTraining module: run ``attentionseg train`` as a separate
process, follow its progress events into MRML curves, stop it, resume it, register its model.

A run is described by one :class:`~AttentionSegLib.training.config.TrainingConfig`: the logic
validates it, writes it to the run folder's ``config.json`` and starts
``python -m AttentionSegLib train --config <run folder>/config.json`` (``--resume`` to continue).
The process runs in its own process group (:mod:`~AttentionSegLib.slicer.process`), so Slicer
stays responsive and Stop ends the trainer together with its data-loading workers. The logic never
blocks: :meth:`TrainingLogic.poll` is called by a timer (the module's widget) or by
:meth:`TrainingLogic.wait` (tests, scripts).

The process is injected: ``process_factory(command, env, log_path)`` returns an object with
``poll()`` (exit code or None), ``terminate_tree()`` and ``kill_tree()``. The default,
:meth:`~AttentionSegLib.slicer.process.EngineProcess.start`, starts a real process;
:class:`~AttentionSegLib.slicer.testing.ReplayTrainingProcess` replays progress events without one.

Example:
    >>> logic = TrainingLogic(scene)  # doctest: +SKIP
    >>> logic.start(TrainingConfig("Task01/dataset.json", "axunet", "runs/liver", epochs=50))  # doctest: +SKIP
    >>> logic.wait()  # doctest: +SKIP
    'finished'
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import register_model
from AttentionSegLib.slicer.charts import number_or_nan
from AttentionSegLib.slicer.process import (
    EngineProcess,
    EventFollower,
    ProcessFactory,
    ProcessLike,
    engine_command,
    engine_environment,
)
from AttentionSegLib.slicer.training_curves import TrainingCurves
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.run_folder import RunFolder

__all__ = ["TrainingLogic", "RESUME_BUDGET_FIELDS"]

# What a resumed run takes from the command line over its saved configuration (the trainer keeps
# everything else as the run started): a run may be given more epochs or time, or another device.
RESUME_BUDGET_FIELDS = ("epochs", "time_limit_min", "device")


@dataclass
class _Run:
    """What the logic knows of the current (or last) run."""

    config: TrainingConfig
    curves: TrainingCurves
    events: EventFollower = field(init=False)
    process: ProcessLike | None = None
    first_event: int = 0  # index in TrainingLogic.events of this launch's first event
    stop_deadline: float | None = None

    def __post_init__(self) -> None:
        self.events = EventFollower(self.folder.progress_file)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.config.run_dir)


class TrainingLogic:
    """Runs, follows, stops and resumes training runs on an MRML scene; no Qt.

    Args:
        scene: the MRML scene that receives the curves (table, plot series and chart nodes).
        process_factory: ``(command, env, log_path) -> process``; default :meth:`EngineProcess.start`.
        models_folder: where finished models are registered; default
            :func:`AttentionSegLib.inference.model_store.default_models_folder`.
        python: the interpreter that runs the trainer; default
            :func:`~AttentionSegLib.slicer.process.engine_python`.
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
        self.process_factory = process_factory or EngineProcess.start
        self.models_folder = models_folder
        self.python = python
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self.state = self.IDLE
        self.message = ""
        self.events: list[dict] = []
        self.registered_model: Path | None = None
        self.run: _Run | None = None
        self._update: dict | None = None  # a model update (start_update): kept as a version, not registered

    # Commands

    def start(self, config: TrainingConfig) -> None:
        """Start a new run of ``config`` in ``config.run_dir``, a missing or empty folder: the
        configuration is checked, written to the folder's ``config.json`` and the trainer started on it.

        Raises:
            AttentionSegError: a bad value (named), a run is active, the dataset definition is
                missing, the run folder is not empty (resume the run in it, or choose another),
                or the trainer cannot be started.
        """
        self._check_idle()
        self._update = None
        config = _with_absolute_paths(config).validate()
        if config.init:  # a fine-tune: the model file's network (refused here if it contradicts)
            from AttentionSegLib.training.fine_tune import settings_from_model

            config = settings_from_model(config)
        config.resolved()  # an unknown network or recipe value is refused here, not in the process
        folder = RunFolder(config.run_dir)
        if not Path(config.dataset).is_file():
            raise AttentionSegError(f"{config.dataset}: dataset definition not found")
        folder.check_can_create()
        if folder.holds_files_other_than(folder.config_file):
            raise AttentionSegError(f"{folder.path} is not empty: resume the run in it, or choose another folder")
        folder.path.mkdir(parents=True, exist_ok=True)
        config.save(folder.config_file)
        self._launch(config, resume=False)

    def start_update(self, model: str | os.PathLike, dataset_json: str | os.PathLike, minutes: float, device: str):
        """Update ``model`` from the corrections saved into ``dataset_json``
        (:mod:`~AttentionSegLib.training.update_model`): the fine-tune runs as any run (progress,
        stop), and when it finishes its model becomes ``model``'s next version instead of a new
        registered model. Raises :class:`AttentionSegError` when there is no new case."""
        from AttentionSegLib.training.update_model import update_config

        config, added = update_config(model, dataset_json, None, minutes, device)
        self.start(config)
        self._update = {"model": Path(model), "added": added, "dataset": str(dataset_json), "minutes": minutes}

    def resume(self, config: TrainingConfig | None = None) -> None:
        """Continue the run in ``config.run_dir`` (default: the last run) from its last checkpoint,
        with the configuration saved in its ``config.json``; ``config``'s epochs, time limit and
        device, when set and different, extend the run (:data:`RESUME_BUDGET_FIELDS`). The curves
        show the whole run, earlier epochs included.

        Raises:
            AttentionSegError: a run is active, no run is given, or the run folder has no
                checkpoint or no configuration.
        """
        self._check_idle()
        config = _with_absolute_paths(config) if config is not None else (self.run.config if self.run else None)
        if config is None:
            raise AttentionSegError("nothing to resume: choose the folder of an earlier run")
        folder = RunFolder(config.run_dir)
        if not folder.can_resume():
            last = folder.last_checkpoint.relative_to(folder.path).as_posix()
            raise AttentionSegError(f"{folder.path}: no checkpoint to resume from ({last})")
        if not folder.config_file.is_file():
            raise AttentionSegError(f"{folder.path}: no {folder.config_file.name} to resume from")
        saved = TrainingConfig.load(folder.config_file)
        self._launch(saved, resume=True, budget=_budget_arguments(config.validate(), saved))

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
        return self.run.folder.log_file if self.run else None

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
        text = f"Epoch {epoch['epoch']}/{epoch.get('epochs') or '?'}, loss {number_or_nan(epoch.get('loss')):.4f}"
        if validation is not None:
            text += (
                f", mean Dice {number_or_nan(validation.get('mean_dice')):.4f}"
                f" (best {number_or_nan(validation.get('best_mean_dice')):.4f})"
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

    def _launch(self, config: TrainingConfig, resume: bool, budget: tuple[str, ...] = ()) -> None:
        folder = RunFolder(config.run_dir)
        command = engine_command("train", "--config", str(folder.config_file), *budget, python=self.python)
        command += ["--resume"] if resume else []
        with open(folder.log_file, "a", encoding="utf-8") as log:
            log.write(f"{'Resuming' if resume else 'Starting'}: {shlex.join(command)}\n")
        self.events, self.registered_model = [], None
        self.run = _Run(config, self._curves_for(folder, resume))
        if resume:
            self._read_events()  # the epochs before the checkpoint, for the curves
            self.run.first_event = len(self.events)
        try:
            self.run.process = self.process_factory(command, engine_environment(), folder.log_file)
        except OSError as error:
            self.state, self.message = self.FAILED, f"Cannot start the trainer: {error}"
            raise AttentionSegError(f"cannot start the trainer ({command[0]}): {error}") from error
        self.state = self.RUNNING
        self.message = f"{'Resuming' if resume else 'Starting'} {config.model} in {folder.path}"

    def _curves_for(self, folder: RunFolder, resume: bool) -> TrainingCurves:
        """The same run goes on in the same chart; a new run gets its own."""
        previous = self.run
        if resume and previous is not None and previous.folder == folder:
            if self.scene.IsNodePresent(previous.curves.table_node):
                return previous.curves
        return TrainingCurves(self.scene, folder.path.name)

    def _read_events(self) -> list[dict]:
        events = self.run.events.read()
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
            if self.run.folder.can_resume():
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
        folder = self.run.folder
        reported = Path(end["model_file"]) if end.get("model_file") else None
        model_file = reported if reported is not None and reported.is_file() else folder.model_file
        if self._update is not None:
            self._keep_version(model_file)
            return
        try:
            self.registered_model = register_model(model_file, self.models_folder, folder.path.name)
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

    def _keep_version(self, model_file: Path) -> None:
        from AttentionSegLib.training.update_model import finish_update

        update, self._update = self._update, None
        try:
            version = finish_update(update["model"], model_file, update["added"], update["dataset"], update["minutes"])
        except AttentionSegError as error:
            self.state, self.message = self.FAILED, f"The update finished but was not kept: {error}"
            return
        self.registered_model = update["model"]
        self.state = self.FINISHED
        self.message = (
            f"Model updated: {update['model'].name} version {version.version} is current "
            f"({len(version.cases_added)} case(s) added)."
        )

    def _last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_text(4000).splitlines() if line.strip()]
        return lines[-1] if lines else ""


def _with_absolute_paths(config: TrainingConfig) -> TrainingConfig:
    """The trainer runs in the engine's folder: its dataset and run folder must be absolute."""
    return replace(
        config,
        dataset=str(Path(config.dataset).expanduser().resolve()) if str(config.dataset).strip() else config.dataset,
        run_dir=str(Path(config.run_dir).expanduser().resolve()) if str(config.run_dir).strip() else config.run_dir,
    )


def _budget_arguments(requested: TrainingConfig, saved: TrainingConfig) -> tuple[str, ...]:
    """``train`` flags for the budget fields that ``requested`` sets to other values than ``saved``
    (unset: None, or the default device), named by the schema's flags."""
    arguments: list[str] = []
    for item in fields(TrainingConfig):
        if item.name not in RESUME_BUDGET_FIELDS:
            continue
        value = getattr(requested, item.name)
        if value in (None, item.default) or value == getattr(saved, item.name):
            continue
        arguments += [item.metadata["flag"], f"{value:g}" if isinstance(value, float) else str(value)]
    return tuple(arguments)
