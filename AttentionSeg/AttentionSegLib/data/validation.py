"""Dataset validation: every problem of a dataset definition at once, each naming its case and file.

:func:`AttentionSegLib.data.dataset.load_dataset` records the problems it meets while reading the
definition (folder listings, clinical values, named splits); :func:`validate_dataset` adds those
that need the image files (which it opens, headers first).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.dicom_seg import is_dicom_seg
from AttentionSegLib.io.image import Image, grid_differences, read_image, read_image_header
from AttentionSegLib.io.label_map import read_label_image

if TYPE_CHECKING:
    from AttentionSegLib.data.dataset import Case, DatasetDefinition

__all__ = ["Problem", "validate_dataset"]


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


def _check_case(definition: DatasetDefinition, case: Case, check_label_values: bool) -> list[Problem]:
    problems = []
    for file in case.images + ([case.label] if case.label is not None else []):
        if not file.exists():
            problems.append(Problem("file not found", case.case_id, file))
    if problems:
        return problems
    seg_label = case.label is not None and is_dicom_seg(case.label)
    try:
        headers = [read_image_header(file) for file in case.images]
        label_header = read_image_header(case.label) if case.label is not None and not seg_label else None
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
    if seg_label and check_label_values:
        # A DICOM SEG stores frames only: placed on the first image's grid, it is checked there.
        grid = headers[0]
        empty = Image(np.zeros(grid.size[::-1], dtype=np.uint8), grid.spacing, grid.origin, grid.direction)
        try:
            label_array = read_label_image(case.label, onto=empty, label_names=definition.foreground_labels).array
        except AttentionSegError as error:
            return problems + [Problem(str(error), case.case_id)]
        undeclared = definition.undeclared_values_message(label_array)
        if undeclared:
            problems.append(Problem(undeclared, case.case_id, case.label))
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
