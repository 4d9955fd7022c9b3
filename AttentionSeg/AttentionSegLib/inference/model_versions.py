"""Versions of a model in the models folder: every update kept, one current, rollback in one step.

Layout, beside the model file ``MODELS/NAME.pt`` (the current version, the file every front end
lists and runs)::

    MODELS/NAME.pt                       the current version (a copy of one below)
    MODELS/NAME.md                       its card
    MODELS/versions/NAME/v1.pt, v1.md    every version with its card
    MODELS/versions/NAME/history.json    [{version, file, base_version, cases_added, dataset, date, sha256}]

The ``versions`` folder is not listed as models (the lists read the models folder's own ``.pt``
files). Each version's model file also says what it is (``training["version"]``: name, version,
base version, the cases added). Which version is current is read from the model file itself (its
SHA-256 against the history), so an interrupted update or rollback never leaves the two saying
different things. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.atomic import write_text_atomic

__all__ = ["ModelVersion", "VERSIONS_FOLDER", "list_versions", "add_version", "rollback", "current_version"]

VERSIONS_FOLDER = "versions"


@dataclass
class ModelVersion:
    version: int
    file: str  # relative to the model's versions folder
    base_version: int | None
    cases_added: list[str] = field(default_factory=list)
    dataset: str | None = None
    date: str = ""
    sha256: str = ""
    current: bool = False


def versions_folder(model: Path) -> Path:
    return Path(model).parent / VERSIONS_FOLDER / Path(model).stem


def _history_file(model: Path) -> Path:
    return versions_folder(model) / "history.json"


def _digest(path: Path) -> str:
    from AttentionSegLib.inference.model_file import file_digest

    return file_digest(path)


def _read_history(model: Path) -> list[ModelVersion]:
    path = _history_file(model)
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
        return [ModelVersion(**{k: v for k, v in row.items() if k != "current"}) for row in rows]
    except (ValueError, TypeError) as error:
        raise AttentionSegError(f"{path}: not a version history ({error})") from None


def _write_history(model: Path, versions: list[ModelVersion]) -> None:
    from AttentionSegLib.io.atomic import write_json_atomic

    _history_file(model).parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in asdict(version).items() if k != "current"} for version in versions]
    write_json_atomic(_history_file(model), rows, indent=2)


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def list_versions(model: str | os.PathLike) -> list[ModelVersion]:
    """The versions of ``model`` (oldest first), the current one marked; a model never updated is
    its own version 1 (not yet copied into the versions folder)."""
    model = Path(model)
    if not model.is_file():
        raise AttentionSegError(f"{model}: model file not found")
    versions = _read_history(model)
    digest = _digest(model)
    if not versions:
        return [ModelVersion(1, model.name, None, [], None, "", digest, True)]
    for version in versions:
        version.current = version.sha256 == digest
    return versions


def current_version(model: str | os.PathLike) -> ModelVersion:
    return _current(model, list_versions(model))


def _current(model, versions: list[ModelVersion]) -> ModelVersion:
    current = [v for v in versions if v.current]
    if not current:
        raise AttentionSegError(
            f"{model}: the model file is none of its {len(versions)} recorded versions (changed by hand?); "
            "roll back to one of them"
        )
    return current[-1]


def _card(model_name: str, version: ModelVersion, base_sha: str | None, command: str | None) -> str:
    lines = [
        f"# {model_name}, version {version.version}",
        "",
        f"- Date: {version.date}",
        (f"- Based on: version {version.base_version} (SHA-256 {base_sha})" if version.base_version else "- Original"),
        f"- Dataset: {version.dataset or '-'}",
        f"- Cases added ({len(version.cases_added)}): {', '.join(version.cases_added) or '-'}",
        f"- SHA-256: {version.sha256}",
    ]
    if command:
        lines.append(f"- Reproduce: `{command}`")
    return "\n".join(lines) + "\n"


def add_version(
    model: str | os.PathLike,
    new_model_file: str | os.PathLike,
    cases_added: list[str],
    dataset: str | None = None,
    command: str | None = None,
) -> ModelVersion:
    """Keep ``new_model_file`` (a fine-tune of the current version) as the next version of
    ``model`` and make it current; the first update also keeps the original as version 1."""
    from AttentionSegLib.inference.model_file import load_model_file

    model = Path(model)
    versions = list_versions(model)
    folder = versions_folder(model)
    if not _history_file(model).is_file():  # keep the original as version 1 first
        original = versions[0]
        original.file = "v1.pt"
        _copy_atomic(model, folder / "v1.pt")
        write_text_atomic(folder / "v1.md", _card(model.stem, original, None, None))
        _write_history(model, [original])
    base = _current(model, versions)
    number = max(v.version for v in versions) + 1
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = load_model_file(new_model_file)
    new.training["version"] = {
        "name": model.stem,
        "version": number,
        "base_version": base.version,
        "base_sha256": base.sha256,
        "cases_added": list(cases_added),
    }
    target = folder / f"v{number}.pt"
    new.save(target)
    version = ModelVersion(number, target.name, base.version, list(cases_added), dataset, date, _digest(target))
    card = _card(model.stem, version, base.sha256, command)
    write_text_atomic(folder / f"v{number}.md", card)
    _write_history(model, [*versions, version])
    _copy_atomic(target, model)
    write_text_atomic(model.with_suffix(".md"), card)
    version.current = True
    return version


def rollback(model: str | os.PathLike, version: int | None = None) -> ModelVersion:
    """Make ``version`` (default: the one before the current) the current version again."""
    model = Path(model)
    versions = _read_history(model)
    if not versions:
        raise AttentionSegError(f"{model}: no earlier version to roll back to (never updated)")
    if version is None:
        base = current_version(model).base_version
        if base is None:
            raise AttentionSegError(f"{model}: the current version is the first; nothing to roll back to")
        version = base
    chosen = next((v for v in versions if v.version == version), None)
    if chosen is None:
        raise AttentionSegError(f"{model}: no version {version} (versions {[v.version for v in versions]})")
    folder = versions_folder(model)
    _copy_atomic(folder / chosen.file, model)
    card = folder / Path(chosen.file).with_suffix(".md").name
    if card.is_file():
        write_text_atomic(model.with_suffix(".md"), card.read_text())
    chosen.current = True
    return chosen
