"""The annotation campaign: how much reader effort the learning loop saves (``attentionseg campaign``).

A robot reader works through cases the automatic model has not seen, in an order (``random``,
seeded, or ``ranked`` by :mod:`~AttentionSegLib.inference.case_ranking`, re-ranked after every
update: between updates the model, and so its ranking, does not change). For each case it starts
from the automatic model's segmentation and corrects every label with the interactive model (its
session starts from the automatic mask): a click at the largest
error (:func:`~AttentionSegLib.interactive.robot.next_click`) until the label's Dice against the
reference reaches ``target_dice`` or ``max_clicks`` clicks, counting them. The corrected label map
is saved into the campaign's dataset (:func:`~AttentionSegLib.data.corrections.add_training_case`),
and every ``update_every`` cases the automatic model is updated from it
(:func:`~AttentionSegLib.training.update_model.update_model`: the product's own path, versions
kept). After each update the automatic model's mean Dice on fixed test cases is recorded against
the reader's cumulative clicks.

Everything goes to a work folder (a copy of the starting model, the dataset with the corrections,
the runs), never into the source dataset.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from AttentionSegLib.data.dataset import Case, DatasetDefinition, load_dataset
from AttentionSegLib.errors import AttentionSegError

__all__ = ["CampaignSettings", "CampaignPoint", "correct_case", "run_campaign", "campaign_cases", "mean_dice"]

ORDERS = ("random", "ranked")


@dataclass(frozen=True)
class CampaignSettings:
    order: str = "random"
    cases: int = 20
    update_every: int = 5
    update_minutes: float = 1.0
    max_clicks: int = 10
    target_dice: float = 0.90
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class CampaignPoint:
    """The state after ``cases`` corrected cases (and the update that followed them)."""

    cases: int
    clicks: int  # cumulative
    test_dice: float
    update_seconds: float  # cumulative


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def correct_case(automatic, interactive, image, reference: np.ndarray, settings: CampaignSettings):
    """``(clicks, corrected label map)``: the robot reader's correction of the automatic model's
    segmentation of one case, label by label, with the interactive model."""
    from AttentionSegLib.interactive.robot import next_click
    from AttentionSegLib.interactive.session import InteractiveSession

    predicted = automatic.predict(image).label_image.array
    spacing = image.spacing_array_order
    corrected = np.zeros_like(reference)
    clicks = 0
    for value in [int(v) for v in np.unique(reference) if v != 0]:
        target = reference == value
        session = InteractiveSession.for_predictor(interactive, [image], mask=predicted == value)
        while _dice(session.mask, target) < settings.target_dice and clicks_for(session) < settings.max_clicks:
            click = next_click(session.mask, target, spacing)
            if click is None:
                break
            session.add_click(click.index, click.positive)
        clicks += clicks_for(session)
        corrected[session.mask & (corrected == 0)] = value
    return clicks, corrected


def clicks_for(session) -> int:
    return len(session.prompts.positive) + len(session.prompts.negative)


def campaign_cases(definition: DatasetDefinition, model_file, test: int, seed: int) -> tuple[list[Case], list[Case]]:
    """``(pool, test cases)``: the annotated cases the automatic model has not seen, ``test`` of
    them (seeded) held out for measuring, the rest for the reader."""
    from AttentionSegLib.inference.model_file import load_model_file

    training = load_model_file(model_file).training
    seen = set(training.get("train_cases", [])) | set(training.get("val_cases", []))
    unseen = [case for case in definition.cases if case.case_id not in seen]
    if len(unseen) <= test:
        raise AttentionSegError(
            f"{definition.path}: {len(unseen)} case(s) the model has not seen; "
            f"the campaign needs more than --test {test}"
        )
    order = np.random.default_rng(seed).permutation(len(unseen))
    chosen = [unseen[i] for i in order]
    return chosen[test:], chosen[:test]


def _start_dataset(definition: DatasetDefinition, model_file, folder: Path) -> Path:
    """The dataset the model was trained on (its cases, absolute paths) in ``folder``: the
    corrections join it there."""
    from AttentionSegLib.data.dataset import write_subset
    from AttentionSegLib.inference.model_file import load_model_file

    training = load_model_file(model_file).training
    known = set(training.get("train_cases", [])) | set(training.get("val_cases", []))
    cases = [case.case_id for case in definition.cases if case.case_id in known]
    return write_subset(definition, cases, folder / "dataset.json")


def mean_dice(model, definition: DatasetDefinition, cases: list[Case], device: str = "cpu") -> float:
    """The model's mean Dice (over labels, then cases) on annotated cases of ``definition``."""
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.evaluation.metrics import dice_per_label
    from AttentionSegLib.inference.predictor import Predictor

    predictor = Predictor(model, device=device)
    values = [v for v in definition.labels if v != 0]
    scores = []
    for case in cases:
        image = read_case_image(case, definition)
        reference = read_case_label(case, definition, image.channel(0))
        labels = predictor.predict(image).label_image.array
        scores.append(np.nanmean(list(dice_per_label(labels, reference, values).values())))
    return float(np.mean(scores))


def run_campaign(
    model_file,
    interactive_model_file,
    dataset_json,
    work: Path,
    settings: CampaignSettings,
    test: int = 20,
    log: Callable[[str], None] = print,
) -> list[CampaignPoint]:
    """Run one campaign (one order) in ``work`` (a new folder); returns its points, the first
    before any correction."""
    from AttentionSegLib.data.corrections import add_training_case
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.inference.case_ranking import rank_cases
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.training.update_model import update_model

    if settings.order not in ORDERS:
        raise AttentionSegError(f"campaign order {settings.order!r}: choose {' or '.join(ORDERS)}")
    work = Path(work)
    if work.exists() and any(work.iterdir()):
        raise AttentionSegError(f"{work}: the work folder is not empty; choose a new one")
    definition = load_dataset(dataset_json)
    pool, test_cases = campaign_cases(definition, model_file, test, settings.seed)
    if len(pool) < settings.cases:
        raise AttentionSegError(
            f"{definition.path}: {len(pool)} case(s) for the reader, --cases {settings.cases} asked"
        )
    model = work / "models" / "automatic.pt"
    model.parent.mkdir(parents=True)
    shutil.copyfile(model_file, model)
    dataset = _start_dataset(definition, model_file, work / "dataset")
    interactive = Predictor(interactive_model_file, device=settings.device)
    random_order = [pool[i] for i in np.random.default_rng(settings.seed + 1).permutation(len(pool))]
    points = [CampaignPoint(0, 0, mean_dice(model, definition, test_cases, settings.device), 0.0)]
    log(f"{settings.order}: start, test Dice {points[0].test_dice:.4f}")
    clicks, update_seconds, remaining = 0, 0.0, list(pool)
    automatic = Predictor(model, device=settings.device)
    ranking: list[str] = []  # the current version's order of the remaining cases (re-ranked after each update)
    for number in range(1, settings.cases + 1):
        if settings.order == "ranked":
            if not ranking:
                ranking = [row.case_id for row in rank_cases(automatic, definition, remaining, settings.seed)]
            top = ranking.pop(0)
            case = next(c for c in remaining if c.case_id == top)
        else:
            case = next(c for c in random_order if c in remaining)
        remaining.remove(case)
        image = read_case_image(case, definition)
        reference = read_case_label(case, definition, image.channel(0))
        case_clicks, corrected = correct_case(automatic, interactive, image, reference, settings)
        clicks += case_clicks
        add_training_case(dataset, image, image.channel(0).with_array(corrected, has_channels=False))
        if number % settings.update_every == 0 or number == settings.cases:
            started = time.perf_counter()
            update_model(model, dataset, settings.update_minutes, settings.device, work / "runs" / f"update-{number}")
            update_seconds += time.perf_counter() - started
            automatic, ranking = Predictor(model, device=settings.device), []
            points.append(
                CampaignPoint(number, clicks, mean_dice(model, definition, test_cases, settings.device), update_seconds)
            )
            log(f"{settings.order}: {number} cases, {clicks} clicks, test Dice {points[-1].test_dice:.4f}")
    (work / "campaign.json").write_text(
        json.dumps({"settings": asdict(settings), "points": [asdict(p) for p in points]}, indent=2)
    )
    return points
