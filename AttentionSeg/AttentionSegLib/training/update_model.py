"""Update a model from the reader's corrections: a fine-tune of its current version on the dataset
the corrections were saved into, kept as its next version (``attentionseg update-model``, "Update
model" in the module and the web page).

The cases added are those of the dataset that the current version neither trained nor validated on
(the corrections saved since). The fine-tune (:mod:`~AttentionSegLib.training.fine_tune`) trains on
every annotated case of the dataset, old and new alike: the older cases are replayed in every
epoch, so the update does not forget what the model knew (the forgetting is measured in
``bench/bench_fine_tune.py``). Its validation fold is drawn from all of them too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError

__all__ = ["new_cases", "update_config", "finish_update", "update_model"]


def new_cases(model: str | Path, dataset_json: str | Path) -> list[str]:
    """The annotated cases of the dataset that the model's current version has not seen."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.inference.model_file import load_model_file

    training = load_model_file(model).training
    seen = set(training.get("train_cases", [])) | set(training.get("val_cases", []))
    return [case.case_id for case in load_dataset(dataset_json).cases if case.case_id not in seen]


def update_config(model: str | Path, dataset_json: str | Path, run_dir: str | Path | None, minutes: float, device: str):
    """The fine-tune's configuration; refuses an update with no new case (one line)."""
    from AttentionSegLib.training.config import TrainingConfig

    added = new_cases(model, dataset_json)
    if not added:
        raise AttentionSegError(
            f"{dataset_json}: no case the model {Path(model).name} has not trained on; save corrections first"
        )
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path.home() / ".attentionseg" / "runs" / f"{Path(model).stem}-update-{stamp}"
    config = TrainingConfig(
        dataset=str(Path(dataset_json).resolve()),
        model="",
        run_dir=str(Path(run_dir).resolve()),
        init=str(Path(model).resolve()),
        time_limit_min=minutes,
        device=device,
    )
    return config, added


def finish_update(model: str | Path, run_model_file: str | Path, added: list[str], dataset_json, minutes: float):
    """Keep the fine-tuned model file as the model's next version (now current)."""
    from AttentionSegLib.inference.model_versions import add_version

    command = f"attentionseg update-model {Path(model).name} {Path(dataset_json).name} --minutes {minutes:g}"
    return add_version(model, run_model_file, added, dataset=str(dataset_json), command=command)


def update_model(
    model: str | Path,
    dataset_json: str | Path,
    minutes: float = 5.0,
    device: str = "auto",
    run_dir: str | Path | None = None,
    echo: Callable[[dict], None] | None = None,
):
    """Fine-tune the model's current version on the dataset and keep it as the next version;
    returns the new :class:`~AttentionSegLib.inference.model_versions.ModelVersion`."""
    from AttentionSegLib.training.trainer import train

    config, added = update_config(model, dataset_json, run_dir, minutes, device)
    summary = train(config, echo=echo)
    if not summary.get("model_file"):
        raise AttentionSegError(f"{config.run_dir}: the fine-tune wrote no model file ({summary.get('reason')})")
    return finish_update(model, summary["model_file"], added, dataset_json, minutes)
