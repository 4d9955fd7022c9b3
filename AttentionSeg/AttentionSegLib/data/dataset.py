"""Dataset definitions: MSD and nnU-Net v2 ``dataset.json``, cases, clinical features.

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
- ``"terminology": {"1": {"category": code, "type": code}, ...}``: coded meaning of each label
  (SNOMED CT, as in dcmqi's segment metadata), carried into model files, DICOM SEG and Slicer
  (:mod:`AttentionSegLib.io.terminology`).
- ``"splits": {"name": {"train": [ids], "val": [ids], "test": [ids]}}`` named splits, and
  ``"splits_file"``: an nnU-Net ``splits_final.json`` (its folds become ``fold_0``, ...).
- ``"spatial_dims": 2 | 3`` when neither ``tensorImageSize`` nor the file ending tells.

Validation (:func:`validate_dataset`, :class:`Problem`) lives in :mod:`AttentionSegLib.data.validation`
and splits (:func:`k_fold_split`, :func:`resolve_split`) in :mod:`AttentionSegLib.data.splits`; both
are importable from here too.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from AttentionSegLib.data.splits import attach_named_splits
from AttentionSegLib.data.validation import Problem
from AttentionSegLib.errors import AttentionSegError, DatasetError
from AttentionSegLib.io.image import PHOTO_SUFFIXES, image_suffix
from AttentionSegLib.io.terminology import SegmentTerminology, parse_terminology_block

__all__ = [
    "Case",
    "DatasetDefinition",
    "Problem",
    "load_dataset",
    "write_subset",
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
        terminology: label value -> coded terminology, for the labels the definition codes.
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
    terminology: dict[int, SegmentTerminology] = field(default_factory=dict)
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


def _parse_terminology(raw: object, labels: dict[int, str], path: Path) -> dict[int, SegmentTerminology]:
    try:
        return parse_terminology_block(raw, set(labels), str(path))
    except AttentionSegError as error:
        raise DatasetError(str(error)) from None


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
        terminology=_parse_terminology(content.get("terminology"), labels, path),
        file_ending=file_ending,
        cases=cases,
        test_cases=test_cases,
        problems=problems,
    )
    _attach_clinical(definition, content, entries)
    attach_named_splits(definition, content)
    return definition


def write_subset(definition: DatasetDefinition, case_ids, path: str | Path, name: str | None = None) -> Path:
    """Write a dataset.json of some annotated cases of ``definition`` (MSD ``training`` entries with
    absolute paths, in ``case_ids``' order), keeping its other keys (labels, channels, colours,
    terminology); corrections can be added to it in its own folder."""
    source = json.loads(Path(definition.path).read_text())
    content = {key: value for key, value in source.items() if key not in ("training", "test", "numTest")}
    entries = []
    for case in (definition.case(case_id) for case_id in case_ids):
        images = [str(Path(image).resolve()) for image in case.images]
        entries.append({"image": images[0] if len(images) == 1 else images, "label": str(Path(case.label).resolve())})
    content.update(training=entries, numTraining=len(entries))
    content.setdefault("modality", {str(i): channel for i, channel in enumerate(definition.channel_names)})
    if name is not None:
        content["name"] = name
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1))
    return path


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
