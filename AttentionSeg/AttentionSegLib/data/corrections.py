"""Corrected segmentations become new training cases of a dataset definition.

:func:`add_training_case` writes the image(s) and the corrected label map in the dataset's own
convention (nnU-Net: ``imagesTr/CASE_XXXX<ending>`` and ``labelsTr/CASE<ending>``; MSD: a
``training`` entry), keeps the model's original label map in ``originalsTr/CASE<ending>``, and
returns the per-label Dice between original and corrected maps (how much the reader changed).

Safety: an existing case or file is never overwritten (a fresh case id is chosen); files are
written under hidden temporary names and renamed; ``dataset.json`` is replaced atomically, so a
kill at any moment leaves it valid JSON describing complete cases only (an nnU-Net case folder
may, at worst, hold an image without its label, which ``attentionseg dataset validate`` names).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from AttentionSegLib.data.dataset import DatasetDefinition, load_dataset
from AttentionSegLib.errors import AttentionSegError, DatasetError, OutputWriteError
from AttentionSegLib.evaluation.metrics import dice_per_label
from AttentionSegLib.io.atomic import write_json_atomic
from AttentionSegLib.io.image import Image, check_same_grid, write_image

__all__ = ["add_training_case", "ORIGINALS_FOLDER"]

ORIGINALS_FOLDER = "originalsTr"


def _fresh_case_id(definition: DatasetDefinition, prefix: str) -> str:
    taken = {case.case_id for case in definition.cases + definition.test_cases}
    folders = [definition.root / name for name in ("imagesTr", "labelsTr", ORIGINALS_FOLDER)]
    existing = {path.name for folder in folders if folder.is_dir() for path in folder.iterdir()}
    index = 1
    while True:
        case_id = f"{prefix}_{index:03d}"
        if case_id not in taken and not any(name.startswith(case_id) for name in existing):
            return case_id
        index += 1


def _check_fits(definition: DatasetDefinition, image: Image, corrected: Image, original: Image | None) -> None:
    """Raise :class:`AttentionSegError` unless the image and label maps fit the dataset and each other."""
    if image.n_channels != definition.n_channels:
        raise AttentionSegError(
            f"{definition.path}: the dataset has {definition.n_channels} channel(s) "
            f"({', '.join(definition.channel_names)}), the image {image.n_channels}"
        )
    if image.spatial_dims != definition.spatial_dims:
        raise AttentionSegError(
            f"{definition.path}: a {definition.spatial_dims}D dataset, the image is {image.spatial_dims}D"
        )
    check_same_grid(image, corrected, "the image", "the corrected segmentation")
    for what, labels in (("corrected", corrected), ("original", original)):
        if labels is None:
            continue
        problem = definition.undeclared_values_message(labels.array)
        if problem:
            raise AttentionSegError(f"the {what} segmentation: {problem} in {definition.path}")
    if original is not None:
        check_same_grid(corrected, original, "the corrected segmentation", "the original segmentation")


def _image_targets(definition: DatasetDefinition, image: Image, case_id: str, ending: str) -> list[tuple[Image, Path]]:
    """The image file(s) of the new case in the dataset's convention: one per channel, or one
    holding every channel (MSD, or an nnU-Net dataset whose cases are single multi-channel files)."""
    root = definition.root
    one_file = definition.convention == "msd" or (
        definition.n_channels > 1 and bool(definition.cases) and len(definition.cases[0].images) == 1
    )
    if one_file:
        return [(image, root / "imagesTr" / f"{case_id}{'' if definition.convention == 'msd' else '_0000'}{ending}")]
    return [(image.channel(c), root / "imagesTr" / f"{case_id}_{c:04d}{ending}") for c in range(image.n_channels)]


def _write_all_or_nothing(targets: list[tuple[Image, Path]]) -> list[Path]:
    """Write every image under a hidden name (folder listings skip dot files), then rename them
    all, the last target last; returns the files written. A failure takes back what was renamed
    (the dataset is as it was); a kill leaves either nothing visible or, within the few
    microseconds between renames, a case without its label, which dataset validation names."""
    hidden, renamed = [], []
    try:
        for part, path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                raise AttentionSegError(f"{path}: exists; refusing to overwrite it")
            hidden.append(write_image(part, path.with_name(f".{path.name}"), overwrite=False))
        for (_, path), temporary in zip(targets, hidden):
            os.replace(temporary, path)
            renamed.append(path)
        return renamed
    except OSError as error:
        _remove(renamed)
        raise OutputWriteError(f"{targets[-1][1]}: cannot write the case ({error.strerror or error})") from None
    except BaseException:
        _remove(renamed)
        raise
    finally:
        for temporary in hidden:
            if temporary.exists():
                temporary.unlink()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _list_case(definition: DatasetDefinition, case_id: str, image_files: list[Path], label_file: Path) -> None:
    """Add the new case to ``dataset.json`` (replaced atomically) and check that it is listed."""
    content = json.loads(definition.path.read_text())
    relative = [f"./{path.relative_to(definition.root).as_posix()}" for path in image_files]
    if definition.convention == "msd":
        content.setdefault("training", []).append({"image": relative[0], "label": f"./labelsTr/{label_file.name}"})
    elif isinstance(content.get("dataset"), dict):
        content["dataset"][case_id] = {
            "images": [p[2:] for p in relative],
            "label": f"labelsTr/{label_file.name}",
        }
    if "numTraining" in content:
        content["numTraining"] = int(content["numTraining"]) + 1
    write_json_atomic(definition.path, content)
    try:
        load_dataset(definition.path).case(case_id)
    except DatasetError as error:  # should not happen: say so rather than leave a silent gap
        raise AttentionSegError(f"{definition.path}: the new case {case_id} is not listed: {error}") from None


def add_training_case(
    dataset_json: str | os.PathLike,
    image: Image,
    corrected: Image,
    original: Image | None = None,
    prefix: str = "correction",
) -> dict:
    """Add ``image`` (all channels, in the dataset's channel order) with its ``corrected`` label
    map as a new annotated case of the dataset definition.

    Returns ``{"case_id", "image_files", "label_file", "original_file", "dice"}`` with ``dice`` the
    per-label Dice of ``original`` against ``corrected`` (empty without an original).

    Raises:
        AttentionSegError: channel count or grids that do not match, label values the dataset
            does not declare, or a prefix that is not a plain name.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", prefix):
        raise AttentionSegError(f"case prefix {prefix!r}: use letters, digits and '-' only")
    definition = load_dataset(dataset_json)
    _check_fits(definition, image, corrected, original)

    case_id = _fresh_case_id(definition, prefix)
    ending = definition.file_ending if definition.convention == "nnunet" else ".nii.gz"
    image_targets = _image_targets(definition, image, case_id, ending)
    label_file = definition.root / "labelsTr" / f"{case_id}{ending}"
    original_file = definition.root / ORIGINALS_FOLDER / f"{case_id}{ending}" if original is not None else None
    labels_dtype = np.uint8 if int(corrected.array.max(initial=0)) < 256 else np.uint16
    targets = list(image_targets)
    if original_file is not None:
        targets.append((original.with_array(original.array.astype(labels_dtype)), original_file))
    targets.append((corrected.with_array(corrected.array.astype(labels_dtype)), label_file))  # label last
    written = _write_all_or_nothing(targets)
    try:
        _list_case(definition, case_id, [path for _, path in image_targets], label_file)
    except BaseException:  # dataset.json kept its old content: the case's files go too
        _remove(written)
        raise

    foreground = [value for value in definition.labels if value != 0]
    dice = dice_per_label(original.array, corrected.array, foreground) if original is not None else {}
    return {
        "case_id": case_id,
        "image_files": [path for _, path in image_targets],
        "label_file": label_file,
        "original_file": original_file,
        "dice": dice,
    }
