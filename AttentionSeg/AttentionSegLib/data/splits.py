"""Splits of a dataset's cases: deterministic k-fold cross-validation and named splits.

Named splits come from the definition (``"splits"``, or an nnU-Net ``splits_final.json`` named by
``"splits_file"``) and are read with it; :func:`resolve_split` turns a split's name (``all``,
``test``, ``fold:K`` or a named split) into case ids.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from AttentionSegLib.data.validation import Problem
from AttentionSegLib.errors import DatasetError

if TYPE_CHECKING:
    from AttentionSegLib.data.dataset import DatasetDefinition

__all__ = ["k_fold_split", "resolve_split", "split_case_ids", "attach_named_splits"]


def attach_named_splits(definition: DatasetDefinition, content: dict) -> None:
    """Read the definition's named splits into ``definition.named_splits``; cases a split names
    that the definition does not list become problems of the definition.

    Raises:
        DatasetError: malformed ``"splits"`` or an unreadable ``"splits_file"``.
    """
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


def split_case_ids(definition: DatasetDefinition, split: str, n_folds: int = 5, seed: int = 0) -> list[str]:
    """The case ids a split names for running a model on (evaluation, segmenting a cohort): its
    test cases for ``"test"``, else its validation cases (its test cases when it has none).

    Raises:
        DatasetError: unknown split name or fold index.
    """
    selected = resolve_split(definition, split, n_folds, seed)
    return list(selected.get("test", []) if split == "test" else (selected.get("val") or selected.get("test") or []))
