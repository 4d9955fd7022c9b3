"""The one terminal progress bar: silent off a terminal, one redrawn line on it; training steps
drawn through the trainer's ``step_progress``."""

import io

import pytest

from AttentionSegLib.cli import progress_bar
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.cli.train import TrainingDisplay, format_training_event


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """Makes stderr a terminal; call it in the test body (pytest's capture resets stderr after setup)."""

    def make() -> Terminal:
        stream = Terminal()
        monkeypatch.setattr(progress_bar.sys, "stderr", stream)
        return stream

    return make


def test_bar_is_silent_when_stderr_is_not_a_terminal(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress_bar.sys, "stderr", stream)
    bar = ProgressBar("evaluating")
    bar(0.5, "1/2 case")
    bar.close()
    assert stream.getvalue() == ""


def test_bar_redraws_one_line_and_close_wipes_it(terminal):
    terminal = terminal()
    bar = ProgressBar("evaluating")
    bar(0.5, "1/2 case_1")
    first = f"evaluating [{'#' * 15}{'.' * 15}]  50% 1/2 case_1"
    assert terminal.getvalue() == "\r" + first
    bar(1.0, "2/2 c")  # a shorter line overwrites every character of the longer one
    second = f"evaluating [{'#' * 30}] 100% 2/2 c"
    assert terminal.getvalue() == "\r" + first + "\r" + second.ljust(len(first))
    bar.close()
    assert terminal.getvalue().endswith("\r" + " " * len(second) + "\r")


def test_quiet_bar_draws_nothing_on_a_terminal(terminal):
    terminal = terminal()
    bar = ProgressBar("training", enabled=False)
    bar.draw(1.0, "done")
    bar.close()
    assert terminal.getvalue() == ""


def test_training_steps_draw_the_bar_and_event_lines_wipe_it_first(terminal):
    terminal = terminal()
    display = TrainingDisplay()
    display.step(3, 5, 10, 0.123456)
    drawn = f"  epoch 3 [{'#' * 15}{'.' * 15}] 5/10 loss 0.1235"
    assert terminal.getvalue() == "\r" + drawn
    event = {"event": "error", "message": "boom"}
    display.event(event)
    assert terminal.getvalue() == "\r" + drawn + "\r" + " " * len(drawn) + "\r" + "error: boom\n"
    display.event({"event": "checkpoint", "epoch": 3, "kind": "last", "path": "x"})  # not shown
    assert terminal.getvalue().endswith("error: boom\n")
    assert format_training_event({"event": "checkpoint"}) is None
