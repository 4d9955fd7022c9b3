"""A run's configuration, settled before any work, and the experiment plan it came from.

A resumed run takes its saved configuration back (with a new budget and device if given). A new
run is refused in a folder that holds another run and on a dataset whose files will not do (headers
only), then takes the settings it leaves at their default from the dataset's experiment plan
(:mod:`~AttentionSegLib.training.experiment_planner`). The plan, the settings it gave and the
fingerprint it came from go to the run folder (``plan.json``, ``fingerprint.json``) and the model
file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from AttentionSegLib.data.dataset import DatasetDefinition, load_dataset
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.run_folder import RunFolder

if TYPE_CHECKING:
    from AttentionSegLib.data.fingerprint import DatasetFingerprint
    from AttentionSegLib.training.experiment_planner import ExperimentPlan, PlannedValue

__all__ = ["RunConfig", "settle_run_config", "saved_config_is_interactive"]


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of a run and, for a new planned run, its experiment plan, the
    fingerprint the plan came from and the settings it gave (name -> planned value)."""

    config: TrainingConfig
    experiment_plan: ExperimentPlan | None = None
    fingerprint: DatasetFingerprint | None = None
    planned_settings: dict[str, PlannedValue] = field(default_factory=dict)

    def plan_document(self, folder: RunFolder) -> dict | None:
        """The run's experiment plan as plan.json holds it, for the model file: the plan made now,
        or, for a resumed run, plan.json read back."""
        if self.experiment_plan is not None:
            document = self.experiment_plan.to_dict()
            document["applied"] = sorted(self.planned_settings)
            return document
        if folder.plan_file.is_file():
            return json.loads(folder.plan_file.read_text())
        return None

    def save_plan(self, folder: RunFolder, document: dict | None) -> None:
        """Write plan.json (``document``) and fingerprint.json of a run planned now."""
        if self.experiment_plan is None:
            return
        from AttentionSegLib.io.atomic import write_json_atomic

        write_json_atomic(folder.plan_file, document, indent=2)
        write_json_atomic(folder.fingerprint_file, self.fingerprint.to_dict())


def settle_run_config(folder: RunFolder, config: TrainingConfig, resume: bool, is_main: bool) -> RunConfig:
    """The resolved configuration: the saved one when resuming (with a new budget and device if
    given), else ``config``, refused in a folder that holds another run and completed from the
    experiment plan unless ``config.use_plan`` is off. ``is_main``: this process is rank 0. Writes
    nothing: the trainer makes the folder once the run is set up, so a refused run leaves nothing.

    Raises:
        AttentionSegError: nothing to resume, a busy folder, bad values or an unknown network.
        DatasetError: a dataset whose files will not do.
    """
    if resume:
        if not folder.can_resume():
            relative = folder.last_checkpoint.relative_to(folder.path).as_posix()
            raise AttentionSegError(f"{folder.path}: nothing to resume (no {relative})")
        if is_main:
            for leftover in folder.path.rglob(".*.tmp"):  # half-written by a killed run
                leftover.unlink()
        saved = TrainingConfig.load(folder.config_file)
        # A resumed run may extend its budget; everything else stays as it was.
        saved.epochs = config.epochs or saved.epochs
        saved.time_limit_min = config.time_limit_min or saved.time_limit_min
        saved.device = config.device if config.device != "auto" else saved.device
        return RunConfig(saved.resolved())
    config.validate()
    if config.init:
        from AttentionSegLib.training.fine_tune import settings_from_model

        config = settings_from_model(config)
    config.resolved()  # refuse an unknown network or bad values before reading the dataset
    # A new run needs an empty folder; a config.json there is the one it was started from
    # (``attentionseg train --config RUN_DIR/config.json``, as the Training module does).
    started_from = [folder.config_file] if _holds_config(folder, config) else []
    if folder.holds_files_other_than(*started_from):
        raise AttentionSegError(
            f"{folder.path}: the folder is not empty; use --resume to continue the run in it, or choose another --out"
        )
    definition = load_dataset(config.dataset)
    _refuse_dataset_problems(definition)
    if not config.use_plan:
        return RunConfig(config.resolved())
    return _planned(config, definition)


def _planned(config: TrainingConfig, definition: DatasetDefinition) -> RunConfig:
    """Fill the settings left at their default from the dataset's experiment plan (fingerprint
    cached per dataset)."""
    from AttentionSegLib.data.fingerprint import load_or_compute_fingerprint
    from AttentionSegLib.training.experiment_planner import apply_plan, plan_for_config

    fingerprint = load_or_compute_fingerprint(definition)
    experiment_plan = plan_for_config(config, fingerprint)
    config, planned_settings = apply_plan(config, experiment_plan)
    return RunConfig(config.resolved(), experiment_plan, fingerprint, planned_settings)


def _refuse_dataset_problems(definition: DatasetDefinition) -> None:
    """Refuse a dataset whose files are missing, unreadable, of the wrong dimensionality or channel
    count, off one grid, or whose case ids repeat, before any work (headers only, no voxels)."""
    from AttentionSegLib.data.validation import validate_dataset
    from AttentionSegLib.errors import DatasetError

    problems = validate_dataset(definition, check_label_values=False)
    if problems:
        more = f" (and {len(problems) - 1} more; attentionseg dataset validate lists them)" if len(problems) > 1 else ""
        raise DatasetError(f"{definition.path}: {problems[0]}{more}")


def _holds_config(folder: RunFolder, config: TrainingConfig) -> bool:
    """Whether the folder's configuration file describes ``config`` (as given, before planning)."""
    try:
        return folder.config_file.is_file() and TrainingConfig.load(folder.config_file) == config
    except AttentionSegError:
        return False


def saved_config_is_interactive(config: TrainingConfig) -> bool:
    """Whether the run being resumed in ``config.run_dir`` trains an interactive network."""
    folder = RunFolder(config.run_dir)
    try:
        return folder.config_file.is_file() and TrainingConfig.load(folder.config_file).interactive
    except AttentionSegError:
        return False
