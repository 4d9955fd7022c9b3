"""A dataset collection: several datasets, and the labels to use from each, for one class-agnostic
promptable model (the generalist that ships with the extension).

A collection is a JSON file; dataset paths are relative to a data root given on the command line
(the collection names data, it never holds it)::

    {
      "name": "generalist",
      "datasets": [
        {"name": "hippocampus", "dataset": "hippocampus/dataset.json", "labels": "all",
         "licence": "CC BY-SA 4.0", "held_out": 20},
        {"name": "totalseg-example", "licence": "Apache-2.0", "labels": "all",
         "cases": [{"id": "example", "image": "totalseg-example/example_ct_sm.nii.gz",
                    "label": "totalseg-example/example_seg.nii.gz"}]}
      ]
    }

Each dataset is either an MSD or nnU-Net v2 ``dataset.json`` (``"dataset"``) or a list of cases
(``"cases"``: an image file or DICOM folder and a label map, for data without a dataset.json).
``labels``: ``"all"`` (every non-zero value of the label maps) or ``{"value": "name"}``: only these
structures become objects; other values count as background. ``held_out``: that many cases of the
dataset (a seeded choice, the same on every machine) are kept out of training for evaluation.
``weight`` (default 1): the dataset's share of the training samples, relative to the others.
``licence`` is required: the model card lists it, and the weights may only be published when
every dataset's licence allows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from AttentionSegLib.errors import DatasetError

__all__ = ["CollectionCase", "CollectionDataset", "Collection", "load_collection"]

_HOLD_OUT_SEED = 20261206


@dataclass(frozen=True)
class CollectionCase:
    """One image and its label map. ``image``: a file or a DICOM folder."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class CollectionDataset:
    """One dataset of a collection: its cases, the labels used (None: all), its licence and the
    cases held out of training."""

    name: str
    licence: str
    cases: tuple[CollectionCase, ...]
    labels: dict[int, str] | None
    held_out: tuple[str, ...] = ()
    weight: float = 1.0

    @property
    def training_cases(self) -> list[CollectionCase]:
        return [case for case in self.cases if case.case_id not in self.held_out]

    @property
    def held_out_cases(self) -> list[CollectionCase]:
        return [case for case in self.cases if case.case_id in self.held_out]


@dataclass(frozen=True)
class Collection:
    """A collection read by :func:`load_collection`."""

    name: str
    path: Path
    data_root: Path
    datasets: tuple[CollectionDataset, ...] = field(default_factory=tuple)

    def without(self, names) -> Collection:
        """The collection without the datasets ``names`` (a leave-one-dataset-out run).

        Raises:
            DatasetError: a name that is not a dataset of the collection.
        """
        names = set(names)
        unknown = names - {dataset.name for dataset in self.datasets}
        if unknown:
            known = ", ".join(dataset.name for dataset in self.datasets)
            raise DatasetError(f"{self.path}: no dataset {sorted(unknown)[0]!r} to leave out (it has {known})")
        kept = tuple(dataset for dataset in self.datasets if dataset.name not in names)
        return Collection(self.name, self.path, self.data_root, kept)


def load_collection(path: str | os.PathLike, data_root: str | os.PathLike) -> Collection:
    """Read a collection and check that every file it names exists under ``data_root``.

    Raises:
        DatasetError: one line naming the file and the problem (unreadable JSON, a missing key or
            file, a dataset without licence, an unknown label value, too many cases held out).
    """
    from AttentionSegLib.data.dataset import load_dataset

    path, root = Path(path), Path(data_root)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: collection file not found") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable JSON collection ({error})") from None
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found (the folder the collection's paths start from)")
    entries = content.get("datasets") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path}: a collection needs a non-empty list 'datasets'")
    datasets = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: dataset {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise DatasetError(f"{where}: needs a 'name'")
        name = entry["name"].strip()
        where = f"{path}: dataset {name!r}"
        if not isinstance(entry.get("licence"), str) or not entry["licence"].strip():
            raise DatasetError(f"{where}: needs a 'licence' (the model card lists it)")
        if ("dataset" in entry) == ("cases" in entry):
            raise DatasetError(f"{where}: give either 'dataset' (a dataset.json) or 'cases', not both or neither")
        if "dataset" in entry:
            definition = load_dataset(root / str(entry["dataset"]))
            cases = tuple(
                CollectionCase(case.case_id, Path(case.images[0]), Path(case.label))
                for case in definition.cases
                if case.label is not None
            )
            known_labels = {value for value in definition.labels if value != 0}
        else:
            cases = tuple(_listed_case(item, root, where) for item in entry["cases"])
            known_labels = None
        if not cases:
            raise DatasetError(f"{where}: no labelled case")
        labels = _labels(entry.get("labels", "all"), known_labels, where)
        held_out = _held_out(entry.get("held_out", 0), cases, name, where)
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise DatasetError(f"{where}: 'weight' must be a positive number, got {weight!r}")
        datasets.append(CollectionDataset(name, entry["licence"].strip(), cases, labels, held_out, float(weight)))
    names = [dataset.name for dataset in datasets]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: dataset names repeat ({', '.join(names)})")
    return Collection(str(content.get("name", path.stem)), path, root, tuple(datasets))


def _listed_case(item, root: Path, where: str) -> CollectionCase:
    if not isinstance(item, dict) or not {"image", "label"} <= set(item):
        raise DatasetError(f"{where}: each case needs 'image' and 'label'")
    image, label = root / str(item["image"]), root / str(item["label"])
    for file in (image, label):
        if not file.exists():
            raise DatasetError(f"{file}: not found ({where})")
    return CollectionCase(str(item.get("id", Path(str(item["image"])).name)), image, label)


def _labels(raw, known: set[int] | None, where: str) -> dict[int, str] | None:
    if raw == "all":
        return None
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f'{where}: \'labels\' must be "all" or {{"value": "name"}}')
    try:
        labels = {int(value): str(name) for value, name in raw.items()}
    except ValueError:
        raise DatasetError(f"{where}: label values must be integers, got {sorted(raw)}") from None
    if any(value <= 0 for value in labels):
        raise DatasetError(f"{where}: label values must be positive (0 is background)")
    if known is not None and set(labels) - known:
        raise DatasetError(f"{where}: label {sorted(set(labels) - known)[0]} is not in the dataset's labels")
    return labels


def _held_out(raw, cases, name: str, where: str) -> tuple[str, ...]:
    if not isinstance(raw, int) or raw < 0 or raw >= len(cases):
        raise DatasetError(f"{where}: 'held_out' must be a whole number below its {len(cases)} cases, got {raw!r}")
    if raw == 0:
        return ()
    # Seeded by the dataset's name: the same cases are held out on every machine and in every run.
    seed = _HOLD_OUT_SEED + sum(name.encode())
    chosen = np.random.default_rng(seed).choice(len(cases), raw, replace=False)
    return tuple(sorted(cases[int(index)].case_id for index in chosen))
