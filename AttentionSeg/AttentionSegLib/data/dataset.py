"""Dataset definitions: MSD and nnU-Net v2 ``dataset.json``, cases, clinical features, validation, splits.

One :class:`DatasetDefinition` drives training, evaluation and the Slicer modules. Both
conventions users bring are read as they are:

- **MSD** (Medical Segmentation Decathlon): ``modality`` ``{"0": "MRI"}``, ``labels``
  ``{"0": "background", "1": ...}``, an explicit ``training`` list of ``{"image", "label"}`` (an
  image may be a 4D multi-channel NIfTI, or a list of per-channel files), optional ``test`` list.
- **nnU-Net v2**: ``channel_names`` ``{"0": "T1"}``, ``labels`` ``{"background": 0, ...}``,
  ``file_ending``; images ``imagesTr/CASE_XXXX<ending>`` (one file per channel) and labels
  ``labelsTr/CASE<ending>``, no case list (an optional ``dataset`` mapping
  ``{case: {"images": [...], "label": ...}}`` is honoured). A single image file without the
  ``_XXXX`` suffix may hold all channels (an RGB photograph, as in PH2).

Extensions of ours, all optional:

- ``"clinical_features": {"variables": ["age", ...], "file": "clinical.csv", "id_column": "case_id"}``
  declares the per-case clinical vector; values come from the CSV or from a ``"clinical"`` mapping
  ``{variable: number}`` in each case entry (MSD ``training`` entries or nnU-Net ``dataset``
  entries).
- ``"label_colors": {"1": [r, g, b], ...}`` (0-1 or 0-255) for segment colours in Slicer.
- ``"splits": {"name": {"train": [ids], "val": [ids], "test": [ids]}}`` named splits, and
  ``"splits_file"``: an nnU-Net ``splits_final.json`` (its folds become ``fold_0``, ...).
- ``"spatial_dims": 2 | 3`` when neither ``tensorImageSize`` nor the file ending tells.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from AttentionSegLib.errors import AttentionSegError, DatasetError
from AttentionSegLib.io.image import PHOTO_SUFFIXES, grid_differences, image_suffix, read_image, read_image_header

__all__ = [
    "Case",
    "DatasetDefinition",
    "Problem",
    "load_dataset",
    "validate_dataset",
    "k_fold_split",
    "resolve_split",
    "DEFAULT_LABEL_COLORS",
]

# Distinct, colour-blind-friendly defaults (Okabe-Ito, then Tol's muted), RGB 0-1.
DEFAULT_LABEL_COLORS = [
    (0.902, 0.624, 0.0),
    (0.337, 0.706, 0.914),
    (0.0, 0.620, 0.451),
    (0.941, 0.894, 0.259),
    (0.0, 0.447, 0.698),
    (0.835, 0.369, 0.0),
    (0.800, 0.475, 0.655),
    (0.533, 0.133, 0.333),
    (0.267, 0.667, 0.600),
    (0.600, 0.600, 0.200),
    (0.867, 0.800, 0.467),
    (0.200, 0.133, 0.533),
]

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Case:
    """One annotated (or test) case.

    Attributes:
        case_id: unique name of the case.
        images: image files; one per channel, or one file holding every channel.
        label: the label map file, ``None`` for a test case.
        clinical: clinical feature vector (in the order of the declared variables), or ``None``.
    """

    case_id: str
    images: list[Path]
    label: Path | None
    clinical: np.ndarray | None = None


@dataclass
class Problem:
    """One thing wrong with a dataset, naming the case and file concerned."""

    message: str
    case_id: str | None = None
    file: Path | None = None

    def __str__(self) -> str:
        where = []
        if self.case_id is not None:
            where.append(f"case {self.case_id}")
        if self.file is not None:
            where.append(str(self.file))
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class DatasetDefinition:
    """A dataset as described by its ``dataset.json``.

    Attributes:
        path: the ``dataset.json`` file.
        name: the dataset's name.
        convention: ``"msd"`` or ``"nnunet"``.
        spatial_dims: 2 or 3.
        channel_names: one name per input channel (MSD ``modality`` or nnU-Net ``channel_names``).
        labels: label value -> name, background (0) included.
        label_colors: label value -> RGB in 0-1, for every non-background label.
        file_ending: file ending of images and labels (nnU-Net), or that of the first image (MSD).
        cases: annotated cases, in the order of the definition (MSD) or sorted by id (nnU-Net).
        test_cases: cases without labels (MSD ``test``, nnU-Net ``imagesTs``).
        clinical_variables: names of the clinical features, empty when none are declared.
        named_splits: split name -> {"train": ids, "val": ids, "test": ids}.
        problems: problems found while reading the definition (file listing, clinical values);
            :func:`validate_dataset` adds those that need the image files.
    """

    path: Path
    name: str
    convention: str
    spatial_dims: int
    channel_names: list[str]
    labels: dict[int, str]
    label_colors: dict[int, tuple[float, float, float]]
    file_ending: str
    cases: list[Case]
    test_cases: list[Case] = field(default_factory=list)
    clinical_variables: list[str] = field(default_factory=list)
    named_splits: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def foreground_labels(self) -> dict[int, str]:
        return {value: name for value, name in self.labels.items() if value != 0}

    def undeclared_values_message(self, label_array: np.ndarray) -> str | None:
        """``"label values 7, 9 are not declared (declared: 0, 1)"`` for a label map, or None."""
        undeclared = sorted(set(np.unique(label_array).tolist()) - set(self.labels))
        if not undeclared:
            return None
        shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in undeclared[:10])
        return (
            f"label values {shown}{' ...' if len(undeclared) > 10 else ''} are not declared "
            f"(declared: {', '.join(str(v) for v in self.labels)})"
        )

    def case(self, case_id: str) -> Case:
        for case in self.cases + self.test_cases:
            if case.case_id == case_id:
                return case
        raise DatasetError(f"{self.path}: no case named {case_id!r}")

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.name,
            "convention": self.convention,
            "spatial_dims": self.spatial_dims,
            "channels": self.channel_names,
            "labels": {str(v): n for v, n in self.labels.items()},
            "n_cases": len(self.cases),
            "n_test_cases": len(self.test_cases),
            "clinical_variables": self.clinical_variables,
            "named_splits": sorted(self.named_splits),
        }


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    if path.is_dir():
        path = path / "dataset.json"
        if not path.exists():
            raise DatasetError(f"{path}: file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return content


def _strip_ending(name: str, ending: str) -> str:
    return name[: -len(ending)] if ending and name.lower().endswith(ending.lower()) else Path(name).stem


def _case_id_from_file(path: str | Path) -> str:
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def _parse_labels(raw: object, path: Path) -> dict[int, str]:
    """Both label conventions -> {value: name}. nnU-Net region labels (lists) are not supported."""
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{path}: 'labels' must be a non-empty mapping")
    labels: dict[int, str] = {}
    for key, item in raw.items():
        if isinstance(item, str) and re.fullmatch(r"-?\d+", str(key).strip()):  # MSD: {"1": "liver"}
            value, name = int(key), item
        elif isinstance(item, int) and not isinstance(item, bool):  # nnU-Net: {"liver": 1}
            value, name = item, str(key)
        elif isinstance(item, list):
            raise DatasetError(
                f"{path}: label {key!r} is an nnU-Net region (a list of values); regions are not supported"
            )
        else:
            raise DatasetError(f"{path}: label entry {key!r}: {item!r} is neither MSD nor nnU-Net style")
        if value < 0:
            raise DatasetError(f"{path}: label {name!r} has a negative value {value}")
        if value in labels:
            raise DatasetError(f"{path}: label value {value} is declared twice ({labels[value]!r}, {name!r})")
        labels[value] = name
    labels.setdefault(0, "background")
    return dict(sorted(labels.items()))


def _parse_channels(raw: object, path: Path, key: str) -> list[str]:
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f'{path}: {key!r} must be a non-empty mapping like {{"0": "CT"}}')
    try:
        indexed = sorted((int(k), str(v)) for k, v in raw.items())
    except ValueError:
        raise DatasetError(f"{path}: {key!r} keys must be channel indices 0, 1, ...") from None
    if [i for i, _ in indexed] != list(range(len(indexed))):
        raise DatasetError(f"{path}: {key!r} keys must be 0..{len(indexed) - 1}, got {[i for i, _ in indexed]}")
    return [name for _, name in indexed]


def _parse_colors(raw: object, labels: dict[int, str], path: Path) -> dict[int, tuple[float, float, float]]:
    colors = {}
    for position, value in enumerate(v for v in labels if v != 0):
        colors[value] = DEFAULT_LABEL_COLORS[position % len(DEFAULT_LABEL_COLORS)]
    if raw is None:
        return colors
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: 'label_colors' must map label values to [r, g, b]")
    for key, rgb in raw.items():
        if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(c, (int, float)) for c in rgb)):
            raise DatasetError(f"{path}: label_colors[{key!r}] must be [r, g, b]")
        scale = 255.0 if max(rgb) > 1 else 1.0
        colors[int(key)] = tuple(float(c) / scale for c in rgb)
    return colors


def _spatial_dims(content: dict, file_ending: str, path: Path) -> int:
    if "spatial_dims" in content:
        if content["spatial_dims"] not in (2, 3):
            raise DatasetError(f"{path}: 'spatial_dims' must be 2 or 3")
        return int(content["spatial_dims"])
    tensor_size = str(content.get("tensorImageSize", "")).upper()
    if tensor_size == "2D":
        return 2
    if tensor_size in ("3D", "4D"):
        return 3
    return 2 if file_ending.lower() in PHOTO_SUFFIXES else 3


def _clinical_values(
    raw: object, variables: list[str], case_id: str, source: str
) -> tuple[np.ndarray | None, list[Problem]]:
    """Parse one case's clinical values; problems name the case and the variable."""
    if isinstance(raw, list):
        if len(raw) != len(variables):
            return None, [Problem(f"{source}: {len(raw)} clinical values for {len(variables)} variables", case_id)]
        raw = dict(zip(variables, raw))
    if not isinstance(raw, dict):
        return None, [Problem(f"{source}: clinical values must be a mapping variable -> number", case_id)]
    values, problems = [], []
    for variable in variables:
        item = raw.get(variable)
        try:
            number = float(item)
            if not math.isfinite(number):
                raise ValueError
        except (TypeError, ValueError):
            problems.append(Problem(f"{source}: clinical variable {variable!r} is {item!r}, not a number", case_id))
            number = math.nan
        values.append(number)
    return (None if problems else np.asarray(values, dtype=np.float32)), problems


def _read_clinical_csv(spec: dict, root: Path, variables: list[str]) -> tuple[dict[str, dict], list[Problem]]:
    csv_path = root / spec["file"]
    id_column = spec.get("id_column", "case_id")
    if not csv_path.exists():
        return {}, [Problem("clinical features file not found", file=csv_path)]
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in [id_column, *variables] if c not in columns]
        if missing:
            return {}, [Problem(f"missing columns {missing} (has {columns})", file=csv_path)]
        return {row[id_column]: row for row in reader}, []


def _msd_cases(content: dict, root: Path, path: Path) -> tuple[list[Case], list[Case], list[dict]]:
    training = content.get("training")
    if not isinstance(training, list):
        raise DatasetError(f"{path}: MSD-style definition needs a 'training' list of {{image, label}}")
    cases, entries = [], []
    for position, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DatasetError(f"{path}: training[{position}] must be an object with 'image' and 'label'")
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        case_id = str(entry.get("case_id") or _case_id_from_file(entry["label"]))
        cases.append(Case(case_id, [root / p for p in images], root / entry["label"]))
        entries.append(entry)
    tests = []
    for item in content.get("test", []) or []:
        images = item if isinstance(item, list) else [item["image"] if isinstance(item, dict) else item]
        tests.append(Case(_case_id_from_file(images[0]), [root / p for p in images], None))
    return cases, tests, entries


def _nnunet_folder_cases(folder: Path, labels_folder: Path | None, ending: str) -> tuple[list[Case], list[Problem]]:
    """Group ``CASE_XXXX<ending>`` files by case; a file without the channel suffix is a case of its own."""
    images: dict[str, list[tuple[int, Path]]] = {}
    if folder.is_dir():
        for file in sorted(folder.iterdir()):
            if not file.name.lower().endswith(ending.lower()) or file.name.startswith("."):
                continue
            stem = _strip_ending(file.name, ending)
            match = _CHANNEL_SUFFIX.match(stem)
            case_id, channel = (match["case"], int(match["channel"])) if match else (stem, -1)
            images.setdefault(case_id, []).append((channel, file))
    label_ids = set()
    if labels_folder is not None and labels_folder.is_dir():
        label_ids = {
            _strip_ending(f.name, ending)
            for f in labels_folder.iterdir()
            if f.name.lower().endswith(ending.lower()) and not f.name.startswith(".")
        }
    cases, problems = [], []
    for case_id in sorted(set(images) | label_ids):
        channel_files = sorted(images.get(case_id, []))
        label = labels_folder / f"{case_id}{ending}" if labels_folder is not None else None
        if not channel_files:
            problems.append(Problem("label without image files", case_id, label))
        cases.append(Case(case_id, [file for _, file in channel_files], label))
    return cases, problems


def load_dataset(path: str | Path) -> DatasetDefinition:
    """Read a ``dataset.json`` (MSD or nnU-Net v2 style) and list its cases.

    Only the definition and folder listings are read; :func:`validate_dataset` opens the images.

    Raises:
        DatasetError: the file is missing, not JSON, or lacks what both conventions require.
    """
    path = Path(path)
    content = _read_json(path)
    if path.is_dir():
        path = path / "dataset.json"
    root = path.parent
    if "labels" not in content:
        raise DatasetError(f"{path}: no 'labels' mapping; not a dataset definition")
    labels = _parse_labels(content["labels"], path)
    problems: list[Problem] = []
    entries: list[dict] = []
    if "training" in content and "modality" in content:
        convention = "msd"
        channel_names = _parse_channels(content["modality"], path, "modality")
        cases, test_cases, entries = _msd_cases(content, root, path)
        file_ending = image_suffix(cases[0].images[0]) if cases else ".nii.gz"
    elif "channel_names" in content or "modality" in content:
        convention = "nnunet"
        key = "channel_names" if "channel_names" in content else "modality"
        channel_names = _parse_channels(content[key], path, key)
        file_ending = str(content.get("file_ending", ".nii.gz"))
        if isinstance(content.get("dataset"), dict):
            cases = []
            for case_id, entry in content["dataset"].items():
                cases.append(Case(str(case_id), [root / p for p in entry.get("images", [])], root / entry["label"]))
                entries.append({**entry, "case_id": case_id})
        else:
            cases, problems = _nnunet_folder_cases(root / "imagesTr", root / "labelsTr", file_ending)
        test_cases, _ = _nnunet_folder_cases(root / "imagesTs", None, file_ending)
    else:
        raise DatasetError(f"{path}: neither MSD ('modality' + 'training') nor nnU-Net v2 ('channel_names')")

    definition = DatasetDefinition(
        path=path,
        name=str(content.get("name", root.name)),
        convention=convention,
        spatial_dims=_spatial_dims(content, file_ending, path),
        channel_names=channel_names,
        labels=labels,
        label_colors=_parse_colors(content.get("label_colors"), labels, path),
        file_ending=file_ending,
        cases=cases,
        test_cases=test_cases,
        problems=problems,
    )
    _attach_clinical(definition, content, entries)
    _attach_splits(definition, content)
    return definition


def _attach_clinical(definition: DatasetDefinition, content: dict, entries: list[dict]) -> None:
    spec = content.get("clinical_features")
    per_case = {
        str(e.get("case_id") or _case_id_from_file(e["label"])): e["clinical"] for e in entries if "clinical" in e
    }
    if spec is None:
        if per_case:
            definition.problems.append(
                Problem(
                    "cases carry 'clinical' values but 'clinical_features' declares no variables", file=definition.path
                )
            )
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("variables"), list) or not spec["variables"]:
        raise DatasetError(f"{definition.path}: 'clinical_features' needs a non-empty 'variables' list")
    variables = [str(v) for v in spec["variables"]]
    definition.clinical_variables = variables
    sources: dict[str, object] = dict(per_case)
    source_name = {case_id: "dataset.json" for case_id in per_case}
    if "file" in spec:
        rows, csv_problems = _read_clinical_csv(spec, definition.root, variables)
        definition.problems.extend(csv_problems)
        for case_id, row in rows.items():
            sources.setdefault(case_id, row)
            source_name.setdefault(case_id, str(spec["file"]))
    for case in definition.cases + definition.test_cases:
        if case.case_id not in sources:
            definition.problems.append(Problem("no clinical values", case.case_id))
            continue
        case.clinical, case_problems = _clinical_values(
            sources[case.case_id], variables, case.case_id, source_name[case.case_id]
        )
        definition.problems.extend(case_problems)


def _attach_splits(definition: DatasetDefinition, content: dict) -> None:
    splits = content.get("splits") or {}
    if not isinstance(splits, dict):
        raise DatasetError(f"{definition.path}: 'splits' must map split names to {{train, val, test}}")
    for name, split in splits.items():
        if not isinstance(split, dict):
            raise DatasetError(f"{definition.path}: split {name!r} must be an object with train/val/test lists")
        definition.named_splits[str(name)] = {k: [str(i) for i in split.get(k, [])] for k in ("train", "val", "test")}
    if "splits_file" in content:
        splits_path = definition.root / content["splits_file"]
        try:
            folds = json.loads(splits_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DatasetError(f"{splits_path}: cannot read nnU-Net splits ({error})") from None
        if not isinstance(folds, list):
            raise DatasetError(f"{splits_path}: expected a list of {{train, val}} folds")
        for index, fold in enumerate(folds):
            definition.named_splits[f"fold_{index}"] = {
                "train": [str(i) for i in fold.get("train", [])],
                "val": [str(i) for i in fold.get("val", [])],
                "test": [],
            }
    known = {case.case_id for case in definition.cases + definition.test_cases}
    for name, split in definition.named_splits.items():
        unknown = sorted({i for ids in split.values() for i in ids} - known)
        if unknown:
            definition.problems.append(
                Problem(
                    f"split {name!r} names unknown cases {unknown[:5]}{' ...' if len(unknown) > 5 else ''}",
                    file=definition.path,
                )
            )


def _check_case(definition: DatasetDefinition, case: Case, check_label_values: bool) -> list[Problem]:
    problems = []
    for file in case.images + ([case.label] if case.label is not None else []):
        if not file.exists():
            problems.append(Problem("file not found", case.case_id, file))
    if problems:
        return problems
    try:
        headers = [read_image_header(file) for file in case.images]
        label_header = read_image_header(case.label) if case.label is not None else None
    except AttentionSegError as error:
        return [Problem(str(error), case.case_id)]  # the message names the file
    for header in headers + ([label_header] if label_header else []):
        if header.spatial_dims != definition.spatial_dims:
            problems.append(
                Problem(
                    f"{header.spatial_dims}D file in a {definition.spatial_dims}D dataset", case.case_id, header.path
                )
            )
    if problems:
        return problems
    n_channels = sum(h.n_channels for h in headers)
    if n_channels != definition.n_channels:
        problems.append(
            Problem(
                f"{n_channels} image channel(s), the definition declares {definition.n_channels} "
                f"({', '.join(definition.channel_names)})",
                case.case_id,
                case.images[0] if len(case.images) == 1 else None,
            )
        )
    for header in headers[1:] + ([label_header] if label_header else []):
        differences = grid_differences(headers[0], header)
        if differences:
            problems.append(
                Problem(
                    f"not on the grid of {headers[0].path.name}: {'; '.join(differences)}", case.case_id, header.path
                )
            )
    if label_header is not None and label_header.n_channels != 1:
        problems.append(
            Problem(f"label map has {label_header.n_channels} channels, expected 1", case.case_id, case.label)
        )
    elif label_header is not None and check_label_values:
        try:
            label_array = read_image(case.label).array
        except AttentionSegError as error:
            return problems + [Problem(str(error), case.case_id)]
        undeclared = definition.undeclared_values_message(label_array)
        if undeclared:
            problems.append(Problem(undeclared, case.case_id, case.label))
    return problems


def validate_dataset(definition: DatasetDefinition, check_label_values: bool = True) -> list[Problem]:
    """Every problem of a dataset at once, each naming the case and the file.

    Checks: problems found while reading the definition, duplicate case ids, missing files,
    unreadable files, files of the wrong dimensionality, channel count against the definition,
    channels and label on one voxel grid, label maps with values the definition does not declare
    (``check_label_values``, which reads every label map), clinical values.
    """
    problems = list(definition.problems)
    counts = Counter(case.case_id for case in definition.cases + definition.test_cases)
    for case_id, count in sorted(counts.items()):
        if count > 1:
            problems.append(Problem(f"case id appears {count} times", case_id))
    for case in definition.cases + definition.test_cases:
        if not case.images:
            continue
        problems.extend(_check_case(definition, case, check_label_values))
    return problems


def _stable_rank(seed: int, case_id: str) -> str:
    # A hash, not a random generator: identical on every machine and NumPy version.
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()


def k_fold_split(case_ids: list[str], n_folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Deterministic k-fold cross-validation.

    Cases are ordered by a SHA-256 hash of ``seed`` and their id and dealt round-robin into
    ``n_folds`` validation sets, so the folds depend only on the ids and the seed, on any machine.

    Returns:
        ``n_folds`` dicts ``{"train": ids, "val": ids}``, ids sorted.

    Raises:
        ValueError: fewer than 2 folds, or fewer cases than folds.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    unique_ids = sorted(set(case_ids))
    if len(unique_ids) < n_folds:
        raise ValueError(f"{len(unique_ids)} cases cannot make {n_folds} folds")
    ordered = sorted(unique_ids, key=lambda case_id: _stable_rank(seed, case_id))
    folds = []
    for fold in range(n_folds):
        validation = set(ordered[fold::n_folds])
        folds.append({"train": [i for i in unique_ids if i not in validation], "val": sorted(validation)})
    return folds


def resolve_split(definition: DatasetDefinition, split: str, n_folds: int = 5, seed: int = 0) -> dict[str, list[str]]:
    """Train/val/test case ids for ``"all"``, ``"test"``, ``"fold:K"`` or a named split.

    ``"all"`` puts every annotated case in ``val`` (for evaluation); ``"test"`` is the named
    split ``test`` when one exists, else the definition's test cases; ``"fold:K"`` is fold K of
    :func:`k_fold_split` over the annotated cases.

    Raises:
        DatasetError: unknown split name or fold index.
    """
    annotated = [case.case_id for case in definition.cases]
    if split == "all":
        return {"train": [], "val": annotated, "test": []}
    if split.startswith("fold:"):
        try:
            index = int(split.split(":", 1)[1])
        except ValueError:
            raise DatasetError(f"split {split!r}: expected fold:K with an integer K") from None
        if not 0 <= index < n_folds:
            raise DatasetError(f"split {split!r}: fold must be in 0..{n_folds - 1}")
        try:
            return {**k_fold_split(annotated, n_folds, seed)[index], "test": []}
        except ValueError as error:
            raise DatasetError(f"{definition.path}: {error}") from None
    if split in definition.named_splits:
        return definition.named_splits[split]
    if split == "test":
        return {"train": [], "val": [], "test": [case.case_id for case in definition.test_cases]}
    raise DatasetError(
        f"{definition.path}: unknown split {split!r} (use all, test, fold:K"
        f"{', ' + ', '.join(definition.named_splits) if definition.named_splits else ''})"
    )
