"""Interactive training on phantoms: the model file says what the network takes, the robot user's
Dice rises with clicks, and the session's undo, box and edits behave."""

import numpy as np
import pytest

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.batch import dataset_cases, load_case
from AttentionSegLib.evaluation.interactive import evaluate_cases, run_robot_user, summarize_objects
from AttentionSegLib.inference.model_file import load_model_file
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.interactive.prompts import PROMPT_CHANNELS
from AttentionSegLib.interactive.session import InteractiveSession


@pytest.fixture(scope="module")
def interactive_run(interactive_model):
    """(the dataset definition, the interactive run's summary)."""
    from AttentionSegLib.data.dataset import load_dataset

    dataset, summary = interactive_model
    return load_dataset(dataset), summary


def test_the_model_file_records_an_interactive_network_its_prompts_and_labels(interactive_run):
    definition, summary = interactive_run
    model = load_model_file(summary["model_file"])
    assert model.is_interactive and model.metadata()["format_version"] == 2
    assert model.network["in_channels"] == 1 + len(PROMPT_CHANNELS) and model.network["out_channels"] == 2
    assert model.prompt_encoding.click_radius_mm == 4.0  # two voxels of the 2 mm axis
    assert model.training["train_cases"] and model.training["val_cases"]
    assert model.object_labels == {1: "liver", 2: "spleen"}
    assert [label["name"] for label in model.labels] == ["background", "object"]
    assert set(summary["best_dice"]) == {1, 2} or set(summary["best_dice"]) == {"1", "2"}


def test_robot_clicks_raise_the_dice_of_a_short_interactive_training(interactive_run):
    definition, summary = interactive_run
    predictor = Predictor(summary["model_file"], device="cpu")
    cases = [load_case(definition, case_id) for case_id in dataset_cases(definition, "fold:0")]
    results = evaluate_cases(
        lambda case, value: InteractiveSession.for_predictor(predictor, case.images),
        cases,
        {1: "liver", 2: "spleen"},
        interactions=3,
    )
    summary = summarize_objects(results)
    dice = summary["dice_per_interaction"]
    assert summary["objects"] == 2 * len(cases)
    assert dice[2] > dice[0] and dice[2] > 0.5, dice
    assert summary["latency_p95_s"] > 0 and summary["noc90"] <= 4


def test_undo_restores_the_mask_and_edits_between_clicks_are_kept(interactive_run):
    definition, summary = interactive_run
    predictor = Predictor(summary["model_file"], device="cpu")
    case = load_case(definition, definition.cases[0].case_id)
    reference = np.asarray(case.reference.array) == 1
    session = InteractiveSession.for_predictor(predictor, case.images)
    assert session.undo() is None and not session.can_undo
    first = run_robot_user(session, reference, case.reference.spacing_array_order, 1)
    after_first = session.mask.copy()
    assert first.dice[0] > 0
    # A negative click somewhere the object is: the mask changes there; undo gives it back exactly.
    inside = tuple(int(v) for v in np.argwhere(after_first)[0])
    session.add_click(inside, positive=False)
    session.undo()
    assert np.array_equal(session.mask, after_first) and len(session.prompts.negative) == 0
    # An edit made elsewhere (the Segment Editor) is the previous mask of the next click.
    edited = after_first.copy()
    edited[0:2] = False
    session.set_mask(edited)
    assert np.array_equal(session.mask, edited)
    with pytest.raises(AttentionSegError, match="outside"):
        session.add_click((99, 0, 0))
    with pytest.raises(AttentionSegError, match="empty or outside"):
        session.set_box((3, 3, 3), (3, 8, 8))
    step = session.set_box((0, 0, 0), (16, 12, 12))
    assert all(isinstance(s, slice) for s in step.region)


def test_interactive_eval_reports_an_interactive_and_an_automatic_model(
    interactive_run, trained_models, tmp_path, capsys
):
    import json

    from AttentionSegLib.cli import main

    definition, summary = interactive_run
    report = tmp_path / "interactive.json"
    table = tmp_path / "interactive.csv"
    code = main(
        [
            "interactive-eval",
            summary["model_file"],
            str(definition.path),
            "--clicks",
            "3",
            "--device",
            "cpu",
            "--json",
            str(report),
            "--csv",
            str(table),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "(interactive)" in out and "NoC@90" in out and "p95" in out
    document = json.loads(report.read_text())
    objects = document["objects"]
    assert len(objects) == 2 * len(load_model_file(summary["model_file"]).training["val_cases"])
    assert all(len(row["dice"]) == 3 and row["kinds"][0] == "click+" for row in objects)
    assert len(table.read_text().strip().splitlines()) == 1 + 3 * len(objects)
    # The automatic model answers through one window and connected components, same report.
    dataset, (good, _) = trained_models
    code = main(["interactive-eval", str(good), str(dataset), "--clicks", "2", "--initial", "box", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "automatic" in out and "box" in out
    assert main(["interactive-eval", str(good), str(dataset), "--clicks", "0"]) == 2


def test_the_suggested_next_click_is_where_the_network_was_least_sure(interactive_run):
    from scipy import ndimage

    from AttentionSegLib.evaluation.uncertainty import boundary_voxels

    definition, summary = interactive_run
    predictor = Predictor(summary["model_file"], device="cpu")
    case = load_case(definition, definition.cases[1].case_id)
    reference = np.asarray(case.reference.array) == 1
    session = InteractiveSession.for_predictor(predictor, case.images)
    assert session.suggest_click() is None  # nothing predicted yet
    run_robot_user(session, reference, case.reference.spacing_array_order, 1)
    index, positive = session.suggest_click()
    assert all(0 <= i < n for i, n in zip(index, session.mask.shape)) and positive == (not session.mask[index])
    # The most uncertain voxel of the network's own grid, and it lies at the object's edge.
    window = session.segmenter.window
    assert session.segmenter.least_certain()[1] == pytest.approx(float(window.last_entropy.max()))
    edge = ndimage.binary_dilation(boundary_voxels(session.mask.astype(np.uint8)), iterations=2)
    assert edge[index], index
    session.undo()
    assert session.suggest_click() is None
