"""The Training panel: the Training module's logic (:class:`~AttentionSegLib.slicer.training_logic.TrainingLogic`)
on a dataset definition: start, stop, resume, and the loss and validation Dice of each epoch."""

from __future__ import annotations

import math
import time

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.report import format_value
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["TrainingPanel", "FROM_SCRATCH", "run_config"]

FROM_SCRATCH = "(from scratch)"


def run_config(dataset: str, model: str, out: str, minutes, interactive: bool, device: str, init: str | None):
    """The run the panel describes; ``init`` (a model file) makes it a fine-tune of that model,
    whose network then replaces ``model`` and ``interactive`` (as the Training module's form)."""
    from AttentionSegLib.training.config import TrainingConfig

    if not dataset:
        raise AttentionSegError("give the dataset definition (dataset.json) to train on")
    return TrainingConfig(
        dataset=dataset,
        model="" if init else model,
        run_dir=out,
        time_limit_min=float(minutes) if minutes else None,
        interactive=False if init else bool(interactive),
        device=device,
        init=init,
    )


class TrainingPanel(Panel):
    title = "Training"

    def __init__(self, page) -> None:
        super().__init__(page)
        self.training = None  # the TrainingLogic, made on the first Start

    def initial_state(self) -> dict:
        return {
            "as_train_dataset": "",
            "as_train_model": "unet",
            "as_train_interactive": False,
            "as_train_init": FROM_SCRATCH,
            "as_train_minutes": 10.0,
            "as_train_out": "",
            "as_train_status": "",
            "as_train_progress": 0.0,
            "as_train_running": False,
            "as_train_curve": [],
        }

    def build(self) -> None:
        from AttentionSegLib.models.registry import list_models

        v3.VTextField(label="Dataset definition (dataset.json)", v_model=("as_train_dataset",), density="compact")
        v3.VSelect(
            label="Network", items=("as_networks", list(list_models())), v_model=("as_train_model",), density="compact"
        )
        v3.VCheckbox(label="Interactive (click-conditioned)", v_model=("as_train_interactive",), density="compact")
        v3.VSelect(
            label="Start from model (fine-tune: its network, spacing and normalisation are kept)",
            items=(f"['{FROM_SCRATCH}'].concat(as_models)",),
            v_model=("as_train_init",),
            density="compact",
            classes="as-train-init",
        )
        v3.VTextField(
            label="Time limit (minutes)", v_model_number=("as_train_minutes",), type="number", density="compact"
        )
        v3.VTextField(label="Run folder", v_model=("as_train_out",), density="compact")
        with html.Div(classes="d-flex ga-2"):
            v3.VBtn("Start", click=self._start, disabled=("as_train_running",), classes="as-train-start")
            v3.VBtn("Stop", click=self._stop, disabled=("!as_train_running",), classes="as-train-stop")
            v3.VBtn("Resume", click=self._resume, disabled=("as_train_running",), classes="as-train-resume")
        v3.VProgressLinear(model_value=("as_train_progress * 100",), height=6, classes="my-2")
        html.Div("{{ as_train_status }}", classes="text-caption as-train-status")
        html.Div(
            "epoch {{ p.epoch }}: loss {{ p.loss }}, Dice {{ p.dice }}",
            v_for="p in as_train_curve.slice(-8)",
            classes="text-caption",
        )

    def _logic(self):
        if self.training is None:
            from AttentionSegLib.slicer.training_logic import TrainingLogic

            self.training = TrainingLogic(self.page.slicer_app.scene, models_folder=self.workspace.models_folder)
        return self.training

    @guarded
    def _start(self) -> None:
        state = self.state
        init = None
        if state.as_train_init and state.as_train_init != FROM_SCRATCH:
            init = str(self.workspace.model_file(state.as_train_init))
        name = f"{state.as_train_init}-tuned" if init else state.as_train_model
        out = state.as_train_out or str(self.workspace.folder / "runs" / f"{name}-{int(time.time())}")
        config = run_config(
            state.as_train_dataset,
            state.as_train_model,
            out,
            state.as_train_minutes,
            state.as_train_interactive,
            state.as_device,
            init,
        )
        self._logic().start(config)
        with state:
            state.as_train_running, state.as_train_curve = True, []
            state.as_train_out = out
            state.as_train_status = "starting ..."

    @guarded
    def _stop(self) -> None:
        if self.training is not None:
            self.training.stop()

    @guarded
    def _resume(self) -> None:
        self._logic().resume()
        with self.state:
            self.state.as_train_running = True

    def poll(self) -> None:
        if self.training is None:
            return
        self.training.poll()
        running = self.training.is_running
        with self.state:
            self.state.as_train_status = self.training.status_text()
            self.state.as_train_progress = self.training.progress()
            self.state.as_train_curve = _curve_points(self.training.curves)
            finished = self.state.as_train_running and not running
            if finished:
                self.state.as_train_running = False
        if finished:  # the new model file is in the models folder
            self.page.models_changed()


def _curve_points(curves) -> list[dict]:
    """The run's epochs with their loss and mean validation Dice, as the page prints them."""
    if curves is None:
        return []
    columns = curves.column_names
    loss = curves.column(curves.LOSS) if curves.LOSS in columns else [math.nan] * len(curves.epochs)
    dice = curves.column(curves.MEAN_DICE) if curves.MEAN_DICE in columns else [math.nan] * len(curves.epochs)
    return [
        {"epoch": epoch, "loss": format_value(float(lo), "{:.4f}"), "dice": format_value(float(di), "{:.4f}")}
        for epoch, lo, di in zip(curves.epochs, loss, dice)
    ]
