"""The training Logic of the Slicer module, on real MRML (slicer-core): form to configuration,
configuration file to command line, progress events to curves, stop (whole process tree), resume,
model registration; and the process runner it shares with background segmentation."""

import argparse
import dataclasses
import inspect
import json
import math
import os
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is installed by the test command")

from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.slicer.mrml import StandaloneScene  # noqa: E402
from AttentionSegLib.slicer.process import (  # noqa: E402
    EngineProcess,
    EventFollower,
    engine_environment,
    engine_python,
)
from AttentionSegLib.slicer.testing import ReplayTrainingProcess  # noqa: E402
from AttentionSegLib.slicer.training_form import (  # noqa: E402
    DEVICES,
    FORM_FIELDS,
    config_from_form,
    default_run_folder,
    parse_patch_size,
)
from AttentionSegLib.slicer.training_logic import TrainingLogic  # noqa: E402
from AttentionSegLib.training.config import TrainingConfig  # noqa: E402

LABELS = {"0": "background", "1": "liver", "2": "tumour"}


@pytest.fixture
def scene():
    standalone = StandaloneScene()
    yield standalone.scene  # the fixture frame keeps the logics alive for the test


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "Dataset001_Liver" / "dataset.json"
    path.parent.mkdir()
    path.write_text("{}")
    return path


def settings_for(dataset, run_dir, **fields):
    return TrainingConfig(str(dataset), "axunet", str(run_dir), **fields)


def epoch(number, loss, epochs=3):
    return ("epoch", {"epoch": number, "epochs": epochs, "loss": loss, "lr": 1e-3, "seconds": 1.0, "elapsed_s": number})


def validation(number, dice_1, dice_2, best):
    mean = (dice_1 + dice_2) / 2
    return (
        "validation",
        {"epoch": number, "dice": {"1": dice_1, "2": dice_2}, "mean_dice": mean, "best_mean_dice": best},
    )


def start_event(epochs=3, resumed=False, start_epoch=1):
    fields = {"model": "axunet", "labels": LABELS, "n_train": 4, "n_val": 1, "epochs": epochs}
    return ("start", {**fields, "time_limit_min": None, "resumed": resumed, "start_epoch": start_epoch})


def checkpoint(number, kind):
    return ("checkpoint", {"epoch": number, "kind": kind, "path": f"checkpoints/{kind}.pt"})


def end_event(run_dir, epochs_done=3, best_epoch=2, best=0.6):
    fields = {"epochs_done": epochs_done, "best_epoch": best_epoch, "best_mean_dice": best}
    return ("end", {**fields, "model_file": str(run_dir / "model.pt"), "reason": "epochs", "elapsed_s": 3.0})


def successful_run(run_dir):
    return [
        start_event(),
        epoch(1, 0.9),
        validation(1, 0.5, 0.3, 0.4),
        checkpoint(1, "last"),
        checkpoint(1, "best"),
        epoch(2, 0.7),
        validation(2, 0.7, 0.5, 0.6),
        checkpoint(2, "last"),
        checkpoint(2, "best"),
        epoch(3, 0.5),
        validation(3, 0.6, 0.4, 0.6),
        checkpoint(3, "last"),
        end_event(run_dir),
    ]


# Form, configuration file and command line


def test_patch_size_text_accepts_spaces_x_and_commas():
    assert parse_patch_size("96 96 96") == (96, 96, 96)
    assert parse_patch_size(" 64x128 ") == (64, 128)
    assert parse_patch_size("32, 64,64") == (32, 64, 64)
    assert parse_patch_size("  ") is None
    for bad in ("96", "1 2 3 4", "0 8 8", "a b c", "8.5 8 8"):
        with pytest.raises(AttentionSegError, match="patch size"):
            parse_patch_size(bad)


def test_the_form_becomes_the_config_file_and_the_command_names_it(scene, dataset, tmp_path):
    run_dir = tmp_path / "run"
    config = config_from_form(
        dataset, "axunet", run_dir, epochs=5, time_limit_min=1.5, patch_size="16x32x32", batch_size=2,
        learning_rate=3e-4, fold=1, n_folds=3, seed=7, device="cpu", extra_options="--val-every 2",
    )  # fmt: skip
    factory = ReplayTrainingProcess.factory([start_event(), checkpoint(1, "last")])
    logic = TrainingLogic(scene, factory, python="python")
    logic.start(config)
    config_file = run_dir / "config.json"
    assert factory.processes[0].command == ["python", "-m", "AttentionSegLib", "train", "--config", str(config_file)]
    saved = TrainingConfig.load(config_file)
    assert saved == config
    assert (saved.dataset, saved.model, saved.run_dir) == (str(dataset), "axunet", str(run_dir))
    assert (saved.epochs, saved.time_limit_min, saved.patch_size, saved.batch_size) == (5, 1.5, [16, 32, 32], 2)
    assert (saved.learning_rate, saved.fold, saved.n_folds, saved.seed) == (3e-4, 1, 3, 7)
    assert (saved.device, saved.val_every) == ("cpu", 2)
    logic.wait(poll_interval_s=0)
    logic.resume()
    resume_command = ["python", "-m", "AttentionSegLib", "train", "--config", str(config_file), "--resume"]
    assert factory.processes[1].command == resume_command
    logic.wait(poll_interval_s=0)

    minimal = TrainingLogic(scene, ReplayTrainingProcess.factory([start_event()]))
    minimal.start(settings_for(dataset, tmp_path / "minimal"))
    saved = TrainingConfig.load(tmp_path / "minimal" / "config.json")
    assert (saved.fold, saved.n_folds, saved.seed, saved.device) == (0, 5, 0, "auto")
    assert (saved.epochs, saved.time_limit_min, saved.patch_size, saved.batch_size, saved.learning_rate) == (None,) * 5


def test_the_command_line_is_what_the_train_parser_accepts(scene, dataset, tmp_path):
    from AttentionSegLib.cli import build_parser

    if not _has_train_command():
        pytest.skip("`attentionseg train` is not there yet")
    run_dir = tmp_path / "run"
    config = settings_for(dataset, run_dir, epochs=2, patch_size=[8, 8], batch_size=1, learning_rate=0.01)
    factory = ReplayTrainingProcess.factory([start_event(), checkpoint(1, "last")])
    logic = TrainingLogic(scene, factory, python="python")
    logic.start(config)
    logic.wait(poll_interval_s=0)
    logic.resume()
    for process, resume in zip(factory.processes, (False, True), strict=True):
        args = build_parser().parse_args(process.command[3:])
        assert args.resume is resume
        parsed = TrainingConfig.from_arguments(args)
        assert parsed == config
        assert (parsed.dataset, parsed.run_dir, parsed.epochs, parsed.patch_size) == (
            str(dataset), str(run_dir), 2, [8, 8],
        )  # fmt: skip
        assert (parsed.batch_size, parsed.learning_rate, parsed.fold, parsed.n_folds, parsed.seed, parsed.device) == (
            1, 0.01, 0, 5, 0, "auto",
        )  # fmt: skip


def test_a_resumed_run_takes_a_larger_budget_from_the_command_line(scene, dataset, tmp_path):
    from AttentionSegLib.cli import build_parser

    run_dir = tmp_path / "run"
    factory = ReplayTrainingProcess.factory([start_event(), checkpoint(1, "last")])
    logic = TrainingLogic(scene, factory, python="python")
    logic.start(settings_for(dataset, run_dir, epochs=3))
    logic.wait(poll_interval_s=0)
    logic.resume(settings_for(dataset, run_dir, epochs=3))  # the same budget: nothing to add
    assert factory.processes[1].command[4:] == ["--config", str(run_dir / "config.json"), "--resume"]
    logic.wait(poll_interval_s=0)
    logic.resume(settings_for(dataset, run_dir, epochs=8, time_limit_min=2.5, device="cpu", seed=9))
    command = factory.processes[2].command
    assert command[4:] == ["--config", str(run_dir / "config.json")] + [
        "--epochs", "8", "--time-limit", "2.5", "--device", "cpu", "--resume",
    ]  # fmt: skip
    args = build_parser().parse_args(command[3:])
    assert (args.epochs, args.time_limit_min, args.device, args.resume) == (8, 2.5, "cpu", True)
    assert TrainingConfig.load(run_dir / "config.json").epochs == 3  # the run's configuration is as it started


def test_form_zeros_mean_recipe_defaults_and_an_empty_run_folder_a_new_one(dataset):
    config = config_from_form(dataset, "unet", "", epochs=0, patch_size="", learning_rate=0.0)
    assert (config.epochs, config.patch_size, config.learning_rate, config.batch_size) == (None,) * 4
    assert Path(config.run_dir).parent == Path.home() / ".attentionseg" / "runs"
    assert Path(config.run_dir).name.startswith("Dataset001_Liver-unet-")
    assert config_from_form(dataset, "unet", ".", patch_size="8 8").patch_size == [8, 8]
    extra = config_from_form(dataset, "unet", "", extra_options="--val-every 5  --loss 'dice_ce'")
    assert (extra.val_every, extra.loss) == (5, "dice_ce")
    with pytest.raises(AttentionSegError, match="dataset definition"):
        config_from_form("", "unet", "")
    with pytest.raises(AttentionSegError, match="extra options"):
        config_from_form(dataset, "unet", "", extra_options="--loss 'dice")


@pytest.mark.parametrize(
    "extra, message",
    [
        ("--out=/elsewhere", "extra options repeat what the form sets: --out"),
        ("--epochs 3 --lr 0.1", "extra options repeat what the form sets: --epochs, --lr"),
        ("--folds 3", "extra options repeat what the form sets: --folds"),
        ("other/dataset.json", "extra options repeat what the form sets: DATASET_JSON"),
        ("--resume", "extra options: unrecognized arguments: --resume"),
        ("--val-every many", "extra options: argument --val-every: invalid int value"),
    ],
)
def test_extra_options_are_read_by_the_train_flags_and_may_not_repeat_the_form(dataset, extra, message):
    with pytest.raises(AttentionSegError, match=message):
        config_from_form(dataset, "unet", "", extra_options=extra)


def test_the_form_fields_are_the_schema_fields_the_form_sets():
    schema = {field.name for field in dataclasses.fields(TrainingConfig)}
    parameters = set(inspect.signature(config_from_form).parameters) - {"extra_options"}
    assert set(FORM_FIELDS) == parameters | {"split_seed"} and set(FORM_FIELDS) <= schema


def test_start_from_model_makes_a_fine_tune_whose_network_is_the_model_files(dataset, tmp_path):
    model_file = tmp_path / "models" / "liver.pt"
    config = config_from_form(dataset, "axunet", "", interactive=True, init=model_file)
    assert (config.init, config.model, config.interactive) == (str(model_file.resolve()), "", False)
    assert Path(config.run_dir).name.startswith("Dataset001_Liver-liver-tuned-")
    assert config_from_form(dataset, "unet", "", init=".").init is None  # an empty path field
    assert "--init" in config.arguments() and "--model" not in config.arguments()


def test_the_form_seed_also_seeds_the_split_so_the_folds_shown_are_the_folds_trained(dataset):
    config = config_from_form(dataset, "unet", "", seed=7)
    assert (config.seed, config.split_seed) == (7, 7)


def test_default_run_folder_names_dataset_model_and_time(dataset):
    from datetime import datetime

    folder = default_run_folder(dataset, "axunet", datetime(2025, 3, 4, 5, 6, 7))
    assert folder.name == "Dataset001_Liver-axunet-20250304-050607"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch size"),
        ({"learning_rate": -1.0}, "learning rate"),
        ({"time_limit_min": 0.0}, "time limit"),
        ({"fold": -1}, "fold"),
        ({"fold": 5}, "fold must be in 0..4"),
        ({"device": "tpu"}, "device"),
        ({"patch_size": [8]}, "patch size"),
    ],
)
def test_start_refuses_bad_values_with_the_field_named(scene, dataset, tmp_path, fields, message):
    factory = ReplayTrainingProcess.factory([start_event()])
    logic = TrainingLogic(scene, factory)
    with pytest.raises(AttentionSegError, match=message):
        logic.start(settings_for(dataset, tmp_path / "run", **fields))
    assert logic.state == "idle" and not factory.processes and not (tmp_path / "run").exists()


def test_devices_are_the_trainers():
    from AttentionSegLib.devices import DEVICE_CHOICES

    assert DEVICES == DEVICE_CHOICES


def test_engine_python_is_this_interpreter_outside_slicer_and_pythonslicer_inside(monkeypatch, tmp_path):
    assert engine_python() == sys.executable
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=object()))
    monkeypatch.setattr(sys, "executable", str(bin_folder / "SlicerApp-real"))
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AttentionSegError, match="PythonSlicer not found"):
        engine_python()
    python_slicer = bin_folder / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    python_slicer.write_text("")
    python_slicer.chmod(0o755)
    assert Path(engine_python()) == python_slicer


def test_engine_environment_puts_the_engine_first_on_pythonpath():
    environment = engine_environment({"PYTHONPATH": "/elsewhere", "HOME": "/h"})
    engine_root = Path(__file__).resolve().parents[2] / "AttentionSeg"
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(engine_root), "/elsewhere"]
    assert environment["PYTHONUNBUFFERED"] == "1" and environment["HOME"] == "/h"


def test_event_follower_reads_complete_new_events_and_restarts_with_a_new_file(tmp_path):
    path = tmp_path / "log.txt"
    follower = EventFollower(path)
    assert follower.read() == []  # no file yet
    path.write_text('some output\n{"event": "progress", "fraction": 0.25}\n{"event": "progress", "fr')
    assert [e["fraction"] for e in follower.read()] == [0.25]  # the half-written line waits
    with open(path, "a") as stream:
        stream.write('action": 0.5}\n')
    assert [e["fraction"] for e in follower.read()] == [0.5]
    path.write_text('{"event": "start"}\n')  # written anew, shorter
    assert [e["event"] for e in follower.read()] == ["start"]


# The Logic with a replayed trainer


def test_a_finished_run_fills_the_curves_and_registers_the_model(scene, dataset, tmp_path):
    run_dir = tmp_path / "runs" / "liver-axunet"
    factory = ReplayTrainingProcess.factory(successful_run(run_dir))
    logic = TrainingLogic(scene, factory, models_folder=tmp_path / "models", python="python")
    logic.start(settings_for(dataset, run_dir, epochs=3))
    assert logic.state == "running" and logic.progress() == 0.0

    assert logic.wait(timeout_s=10, poll_interval_s=0) == "finished"
    process = factory.processes[0]
    assert process.command[:4] == ["python", "-m", "AttentionSegLib", "train"] and "--resume" not in process.command
    kinds = [event["event"] for event in logic.events]
    assert kinds == [kind for kind, _ in successful_run(run_dir)]
    assert logic.registered_model == tmp_path / "models" / "liver-axunet.pt"
    assert logic.registered_model.read_text() == "model of epoch 2"
    assert logic.progress() == 1.0
    assert "best mean Dice 0.6000 at epoch 2" in logic.status_text() and "liver-axunet.pt" in logic.message

    curves = logic.curves
    assert curves.column_names == ["epoch", "loss", "lr", "Dice liver", "Dice tumour", "mean Dice"]
    assert curves.epochs == [1, 2, 3]
    assert curves.column("loss") == [0.9, 0.7, 0.5]
    assert curves.column("Dice tumour") == [0.3, 0.5, 0.4]
    np.testing.assert_allclose(curves.column("mean Dice"), [0.4, 0.6, 0.5])
    table = curves.table_node.GetTable()
    assert (table.GetNumberOfRows(), table.GetNumberOfColumns()) == (3, 6)
    assert table.GetValue(2, 1).ToDouble() == 0.5
    chart = curves.chart_node
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == ["loss", "Dice liver", "Dice tumour", "mean Dice"]
    assert all(s.GetXColumnName() == "epoch" and s.GetTableNode() is curves.table_node for s in series)
    assert logic.log_path == tmp_path / "runs" / "liver-axunet.log"
    assert "Starting:" in logic.log_text() and "replaying" in logic.log_text()


def test_status_and_progress_while_running(scene, dataset, tmp_path):
    run_dir = tmp_path / "run"
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory(successful_run(run_dir)), tmp_path / "models")
    logic.start(settings_for(dataset, run_dir))
    for _ in range(7):  # a poll reads what the replay wrote at the previous one: start ... epoch 2
        logic.poll()
    assert logic.is_running
    assert logic.status_text() == "Epoch 2/3, loss 0.7000, mean Dice 0.4000 (best 0.4000)"
    assert logic.progress() == pytest.approx(2 / 3)


def test_time_limit_progress_counts_when_it_is_further_than_the_epochs(scene, dataset, tmp_path):
    events = [("start", {"labels": LABELS, "time_limit_min": 1.0}), epoch(1, 1.0, epochs=100)]
    events[1][1]["elapsed_s"] = 45.0
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory(events), tmp_path / "models")
    logic.start(settings_for(dataset, tmp_path / "run"))
    logic.poll(), logic.poll(), logic.poll()
    assert logic.progress() == pytest.approx(0.75)


def test_an_error_event_fails_the_run_and_registers_nothing(scene, dataset, tmp_path):
    events = [start_event(), epoch(1, 0.9), ("error", {"message": "CUDA out of memory"})]
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory(events, returncode=1), tmp_path / "models")
    logic.start(settings_for(dataset, tmp_path / "run"))
    assert logic.wait(poll_interval_s=0) == "failed"
    assert logic.message == "Training failed: CUDA out of memory"
    assert logic.registered_model is None and not (tmp_path / "models").exists()


def test_a_process_that_dies_without_an_end_event_fails_with_the_log_tail(scene, dataset, tmp_path):
    run_dir = tmp_path / "run"
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory([start_event(), epoch(1, 0.9)], returncode=-11))
    logic.start(settings_for(dataset, run_dir))
    with open(logic.log_path, "a") as log:
        log.write("Traceback (most recent call last):\nSegmentation fault\n")
    assert logic.wait(poll_interval_s=0) == "failed"
    assert logic.message == "The trainer exited with code -11: Segmentation fault"
    assert logic.curves.epochs == [1] and logic.registered_model is None


def test_exit_0_without_an_end_event_is_a_failure(scene, dataset, tmp_path):
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory([start_event()]))
    logic.start(settings_for(dataset, tmp_path / "run"))
    assert logic.wait(poll_interval_s=0) == "failed" and "without reporting the end" in logic.message


def test_stop_asks_politely_and_the_run_can_be_resumed(scene, dataset, tmp_path):
    run_dir = tmp_path / "runs" / "liver"
    factory = ReplayTrainingProcess.factory(successful_run(run_dir)[:6])  # up to epoch 2, checkpoint of epoch 1
    logic = TrainingLogic(scene, factory, tmp_path / "models")
    logic.start(settings_for(dataset, run_dir, epochs=3))
    for _ in range(6):
        logic.poll()
    logic.stop()
    assert logic.state == "stopping" and factory.processes[0].terminated
    assert logic.wait(poll_interval_s=0) == "stopped"
    assert not factory.processes[0].killed and logic.registered_model is None
    assert logic.message == "Stopped after epoch 2; Resume continues from the last checkpoint."
    stopped_curves = logic.curves

    # The trainer resumes from the epoch-1 checkpoint: epoch 2 is done again, with other values.
    resumed_run = [start_event(resumed=True, start_epoch=2), epoch(2, 0.6), validation(2, 0.8, 0.6, 0.7)]
    resumed_run += [checkpoint(2, "best"), epoch(3, 0.4), validation(3, 0.9, 0.7, 0.8), end_event(run_dir)]
    resumed_factory = ReplayTrainingProcess.factory(resumed_run)
    logic.process_factory = resumed_factory
    logic.resume()
    assert resumed_factory.processes[0].command[-1] == "--resume"
    assert logic.curves.epochs == [1, 2]  # the earlier run is read at once
    assert logic.curves is stopped_curves and scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    assert logic.wait(poll_interval_s=0) == "finished"
    assert logic.curves.epochs == [1, 2, 3]
    assert logic.curves.column("loss") == [0.9, 0.6, 0.4]
    assert [e["event"] for e in logic.session_events()][0] == "start"
    assert logic.session_events("start")[0]["resumed"] is True
    assert logic.registered_model.name == "liver.pt" and logic.registered_model.read_text() == "model of epoch 2"
    assert "Resuming:" in logic.log_text() and "Starting:" in logic.log_text()


def test_a_run_stopped_before_its_first_checkpoint_cannot_be_resumed(scene, dataset, tmp_path):
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory([start_event(), epoch(1, 0.9)]))
    logic.start(settings_for(dataset, tmp_path / "run"))
    logic.poll()
    logic.stop()
    assert logic.wait(poll_interval_s=0) == "stopped"
    assert logic.message == "Stopped before the first checkpoint; start again to train."
    with pytest.raises(AttentionSegError, match="no checkpoint to resume from"):
        logic.resume()


def test_a_trainer_that_ignores_stop_is_killed_after_the_grace_period(scene, dataset, tmp_path):
    now = [0.0]
    factory = ReplayTrainingProcess.factory(
        [start_event()] + [epoch(i, 1.0) for i in range(1, 50)], honours_terminate=False
    )
    logic = TrainingLogic(scene, factory, stop_grace_s=10.0, clock=lambda: now[0])
    logic.start(settings_for(dataset, tmp_path / "run"))
    logic.poll()
    logic.stop()
    now[0] = 9.0
    logic.poll()
    assert logic.state == "stopping" and not factory.processes[0].killed
    now[0] = 10.0
    logic.poll()
    assert factory.processes[0].killed
    logic.poll()
    assert logic.state == "stopped"


def test_a_second_stop_kills_at_once(scene, dataset, tmp_path):
    factory = ReplayTrainingProcess.factory([start_event(), epoch(1, 1.0)], honours_terminate=False)
    logic = TrainingLogic(scene, factory, stop_grace_s=60.0)
    logic.start(settings_for(dataset, tmp_path / "run"))
    logic.stop()
    logic.stop()
    assert factory.processes[0].killed
    assert logic.wait(poll_interval_s=0) == "stopped"


def test_start_refuses_a_run_folder_that_holds_a_run_a_missing_dataset_and_a_second_run(scene, dataset, tmp_path):
    run_dir = tmp_path / "run"
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory([start_event()]))
    with pytest.raises(AttentionSegError, match="dataset definition not found"):
        logic.start(settings_for(tmp_path / "missing.json", run_dir))
    with pytest.raises(AttentionSegError, match="nothing to resume"):
        logic.resume()
    logic.start(settings_for(dataset, run_dir))
    with pytest.raises(AttentionSegError, match="stop it first"):
        logic.start(settings_for(dataset, tmp_path / "other"))
    logic.wait(poll_interval_s=0)
    with pytest.raises(AttentionSegError, match="is not empty"):
        logic.start(settings_for(dataset, run_dir))


def test_wait_gives_up_after_its_timeout_and_leaves_the_run_going(scene, dataset, tmp_path, monkeypatch):
    now = [0.0]

    def sleep_advances_the_clock(seconds):
        now[0] += seconds

    monkeypatch.setattr(time, "sleep", sleep_advances_the_clock)
    events = [start_event()] + [epoch(i, 1.0, epochs=100) for i in range(1, 100)]
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory(events), clock=lambda: now[0])
    logic.start(settings_for(dataset, tmp_path / "run"))
    with pytest.raises(TimeoutError, match="still running after 5"):
        logic.wait(timeout_s=5, poll_interval_s=1)
    assert logic.is_running and logic.curves.epochs == [1, 2, 3, 4]


def test_a_trainer_that_cannot_start_is_reported(scene, dataset, tmp_path):
    def missing_program(command, env, log_path):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    logic = TrainingLogic(scene, missing_program, python="/no/such/python")
    with pytest.raises(AttentionSegError, match="cannot start the trainer"):
        logic.start(settings_for(dataset, tmp_path / "run"))
    assert logic.state == "failed" and not logic.is_running


def test_plot_view_node_is_one_per_scene_and_shows_the_current_chart(scene, dataset, tmp_path):
    logic = TrainingLogic(scene, ReplayTrainingProcess.factory([start_event()]))
    view = logic.plot_view_node()
    assert view.GetPlotChartNodeID() is None
    logic.start(settings_for(dataset, tmp_path / "run"))
    assert logic.plot_view_node() is view
    assert view.GetPlotChartNodeID() == logic.curves.chart_node.GetID()
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1


# Real processes


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.exists():
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# A parent that starts a worker (as data loaders do), writes both process ids, and ignores SIGTERM
# when asked to, so that only SIGKILL of the whole group ends it.
FAMILY = textwrap.dedent(
    """
    import json, signal, subprocess, sys, time
    if sys.argv[2] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(sys.argv[1] + ".tmp", "w") as stream:
        json.dump({"parent": __import__("os").getpid(), "worker": worker.pid}, stream)
    __import__("os").replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(120)
    """
)


@pytest.mark.skipif(os.name == "nt", reason="process groups and signals are POSIX")
@pytest.mark.parametrize("on_sigterm", ["exit", "ignore"])
def test_stop_ends_the_whole_real_process_tree(scene, dataset, tmp_path, on_sigterm):
    pids_file = tmp_path / "pids.json"
    started = []

    def family(command, env, log_path):
        process = EngineProcess.start([sys.executable, "-c", FAMILY, str(pids_file), on_sigterm], env, log_path)
        started.append(process)
        return process

    logic = TrainingLogic(scene, family, stop_grace_s=1.0)
    logic.start(settings_for(dataset, tmp_path / "run"))
    assert _wait_for(pids_file.exists)
    pids = json.loads(pids_file.read_text())
    assert os.getpgid(pids["worker"]) == started[0].pid  # the worker is in the trainer's group
    logic.stop()
    assert logic.wait(timeout_s=20, poll_interval_s=0.1) == "stopped"
    assert started[0].popen.returncode == (-15 if on_sigterm == "exit" else -9)
    assert _wait_for(lambda: not _alive(pids["worker"])), "the worker outlived the stop"


def _has_train_command() -> bool:
    from AttentionSegLib.cli import build_parser

    subcommands = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any("train" in action.choices for action in subcommands)


def _phantom_dataset(root: Path, n_cases: int = 6, shape=(32, 32, 32)) -> Path:
    from AttentionSegLib.data.phantoms import ellipsoid_label_map, phantom_image
    from AttentionSegLib.io.image import Image, write_image

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index in range(n_cases):
        labels = ellipsoid_label_map(shape, 2, seed=index)
        write_image(Image(phantom_image(labels, seed=index)), root / "imagesTr" / f"phantom{index}_0000.nii.gz")
        write_image(Image(labels), root / "labelsTr" / f"phantom{index}.nii.gz")
    definition = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(definition))
    return root / "dataset.json"


@pytest.mark.skipif(not _has_train_command(), reason="`attentionseg train` is not there yet")
def test_a_real_short_training_run_through_the_logic(scene, tmp_path):
    dataset = _phantom_dataset(tmp_path / "Dataset900_Phantom")
    logic = TrainingLogic(scene, models_folder=tmp_path / "models")
    config = TrainingConfig(
        str(dataset),
        "unet",
        str(tmp_path / "runs" / "phantom-unet"),
        epochs=2,
        patch_size=[32, 32, 32],
        batch_size=2,
        device="cpu",
        compact=True,  # the small network,
        iterations_per_epoch=2,  # 2 batches per epoch
    )
    logic.start(config)
    state = logic.wait(timeout_s=300, poll_interval_s=0.2)
    assert state == "finished", f"{logic.message}\n{logic.log_text()}"
    kinds = [event["event"] for event in logic.events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert [e["epoch"] for e in logic.events if e["event"] == "epoch"] == [1, 2]
    assert "validation" in kinds
    start = logic.events[0]
    assert start["model"] == "unet" and start["epochs"] == 2 and start["resumed"] is False
    assert {str(k) for k in start["labels"]} >= {"1", "2"}
    end = logic.events[-1]
    assert end["epochs_done"] == 2 and end["reason"] == "epochs"
    assert logic.registered_model == tmp_path / "models" / "phantom-unet.pt"
    assert logic.registered_model.stat().st_size > 0
    assert logic.curves.epochs == [1, 2]
    assert all(math.isfinite(loss) for loss in logic.curves.column("loss"))
    assert "Dice organ" in logic.curves.column_names and "mean Dice" in logic.curves.column_names
    run_dir = Path(config.run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "config.json").is_file()


@pytest.mark.skipif(not _has_train_command(), reason="`attentionseg train` is not there yet")
def test_start_from_model_and_update_model_run_through_the_logic(scene, tmp_path):
    from AttentionSegLib.data.corrections import add_training_case
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.inference.model_file import load_model_file
    from AttentionSegLib.inference.model_versions import list_versions

    dataset = _phantom_dataset(tmp_path / "Dataset901_Phantom")
    models = tmp_path / "models"
    logic = TrainingLogic(scene, models_folder=models)
    base = TrainingConfig(
        str(dataset), "unet", str(tmp_path / "runs" / "base"), epochs=1, patch_size=[32, 32, 32], batch_size=2,
        device="cpu", compact=True, iterations_per_epoch=2,
    )  # fmt: skip
    logic.start(base)
    assert logic.wait(timeout_s=300, poll_interval_s=0.2) == "finished", logic.message
    model = logic.registered_model
    # The Training form's "Start from model": the network is the model file's, whatever the form's.
    tuned = config_from_form(dataset, "axunet", tmp_path / "runs" / "tuned", epochs=1, device="cpu", init=model)
    logic.start(tuned)
    assert logic.wait(timeout_s=300, poll_interval_s=0.2) == "finished", f"{logic.message}\n{logic.log_text()}"
    assert load_model_file(logic.registered_model).training["initialised_from"]["file"] == model.name
    # A correction saved into the dataset, then "Update model": the model's next version, not a new model.
    definition = load_dataset(dataset)
    case = definition.cases[0]
    image = read_case_image(case, definition)
    label = read_case_label(case, definition, image.channel(0))
    add_training_case(dataset, image, image.channel(0).with_array(label, has_channels=False))
    registered = sorted(models.glob("*.pt"))
    logic.start_update(model, dataset, minutes=0.1, device="cpu")
    assert logic.wait(timeout_s=300, poll_interval_s=0.2) == "finished", f"{logic.message}\n{logic.log_text()}"
    assert "version 2 is current" in logic.message and logic.registered_model == model
    assert sorted(models.glob("*.pt")) == registered  # no new registered model
    assert [v.current for v in list_versions(model)] == [False, True]
