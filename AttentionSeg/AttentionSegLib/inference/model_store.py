"""The folder of trained model files that the AttentionSeg module offers for segmentation.

A finished training run registers its model file here (a copy, so the run folder can be deleted);
the segmentation side lists what is here. Plain files, one ``.pt`` per model: the folder can also
be filled by hand. The models that ship with the extension (:func:`shipped_models_folder`, the
promptable generalist) come first in every list, so that a first click needs no training.

Example:
    >>> path = register_model("runs/liver-unet/model.pt", name="liver-unet")  # doctest: +SKIP
    >>> list_registered_models()  # doctest: +SKIP
    [PosixPath('/home/me/.attentionseg/models/liver-unet.pt')]
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError, OutputWriteError

__all__ = [
    "MODEL_FILE_NAME",
    "MODELS_DIR_ENV",
    "MODEL_SUFFIX",
    "default_models_folder",
    "shipped_models_folder",
    "list_registered_models",
    "models_in_folders",
    "register_model",
    "model_display_name",
    "model_display_names",
]

MODELS_DIR_ENV = "ATTENTIONSEG_MODELS_DIR"
MODEL_SUFFIX = ".pt"
# The name a training run gives its model file in its run folder (training/run_folder.py uses it).
MODEL_FILE_NAME = "model.pt"


def default_models_folder() -> Path:
    """``$ATTENTIONSEG_MODELS_DIR`` when set (and not empty), else ``~/.attentionseg/models``."""
    configured = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".attentionseg" / "models"


def shipped_models_folder() -> Path:
    """``AttentionSeg/Resources/Models``: the model files that ship with the extension, each with
    its model card (``NAME.md``)."""
    return Path(__file__).resolve().parents[2] / "Resources" / "Models"


def _file_stem(name: str) -> str:
    """A file-name stem from a user-facing model name: no folders, no ``.pt``, no odd characters."""
    stem = name[: -len(MODEL_SUFFIX)] if name.endswith(MODEL_SUFFIX) else name
    stem = re.sub(r"[^\w.+-]+", "_", stem).strip("._")
    if not stem:
        raise AttentionSegError(f"model name {name!r} has no usable characters for a file name")
    return stem


def _publish(temporary: Path, target: Path) -> bool:
    """Give ``temporary`` the name ``target`` unless a file has that name; False if one has.

    Not :func:`~AttentionSegLib.io.atomic.atomic_path`, which replaces the destination: a
    registered model is never replaced.
    """
    try:
        # A hard link fails when the name is taken: no moment at which another file is replaced.
        os.link(temporary, target)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        if target.exists():
            return False
        os.replace(temporary, target)
        return True
    temporary.unlink()
    return True


def register_model(
    model_file: str | os.PathLike, folder: str | os.PathLike | None = None, name: str | None = None
) -> Path:
    """Copy ``model_file`` into the models folder and return the new file's path.

    Args:
        model_file: the trained model file (``RUN_DIR/model.pt``).
        folder: the models folder; default :func:`default_models_folder`. Created if missing.
        name: the registered name (file stem; a trailing ``.pt`` is allowed); default the stem of
            ``model_file``. Characters other than letters, digits, ``.``, ``+``, ``-`` and ``_``
            become ``_``.

    The copy is written to a temporary file in the folder and then renamed, so a reader never
    sees a partial model. An existing file is never overwritten: ``name-2.pt``, ``name-3.pt``,
    ... are used instead.

    Raises:
        AttentionSegError: ``model_file`` is not a file, or ``name`` has no usable characters.
    """
    source = Path(model_file)
    if not source.is_file():
        raise AttentionSegError(f"{source}: model file not found")
    target_folder = Path(folder) if folder is not None else default_models_folder()
    stem = _file_stem(name if name is not None else source.stem)
    temporary = None
    try:
        target_folder.mkdir(parents=True, exist_ok=True)
        handle, temporary_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=target_folder)
        os.close(handle)
        temporary = Path(temporary_name)
        shutil.copyfile(source, temporary)
        number = 1
        while True:
            target = target_folder / f"{stem}{MODEL_SUFFIX if number == 1 else f'-{number}{MODEL_SUFFIX}'}"
            if _publish(temporary, target):
                return target
            number += 1
    except OSError as error:  # disk full, read-only folder ...: the folder keeps what it had
        raise OutputWriteError(
            f"{target_folder}: cannot register {source.name} ({error.strerror or error or type(error).__name__})"
        ) from None
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def list_registered_models(folder: str | os.PathLike | None = None) -> list[Path]:
    """The ``.pt`` files in the models folder (default :func:`default_models_folder`), sorted by
    name; an empty list when the folder does not exist."""
    models_folder = Path(folder) if folder is not None else default_models_folder()
    if not models_folder.is_dir():
        return []
    return sorted(path for path in models_folder.iterdir() if path.suffix == MODEL_SUFFIX and path.is_file())


def models_in_folders(*folders: str | os.PathLike | None) -> list[Path]:
    """The shipped model files, then those of ``folders`` (None and missing folders skipped), then
    of the default models folder, each file once: the model list of the Slicer module, the web page
    and ``attentionseg models`` (its first entry is what they select by default)."""
    seen, models = set(), []
    for folder in [shipped_models_folder(), *folders, default_models_folder()]:
        for path in list_registered_models(folder) if folder is not None and Path(folder).is_dir() else []:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                models.append(path)
    return models


def model_display_name(model_file: str | os.PathLike) -> str:
    """A short name for a model file: its run folder for a trainer's ``model.pt``, else the
    file's stem; a server's model: its name on the server and the server, "NAME (HOST:PORT)"."""
    from AttentionSegLib.inference.model_source import is_model_url, split_model_url

    if is_model_url(model_file):
        from urllib.parse import urlsplit

        base, name = split_model_url(model_file)
        return f"{name} ({urlsplit(base).netloc})"
    path = Path(model_file)
    if path.name == MODEL_FILE_NAME and path.parent.name:
        return path.parent.name
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def model_display_names(model_files) -> list[str]:
    """:func:`model_display_name` of each file, made unique with ``-2``, ``-3``, ..."""
    names: list[str] = []
    for path in model_files:
        name = candidate = model_display_name(path)
        count = 2
        while candidate in names:
            candidate, count = f"{name}-{count}", count + 1
        names.append(candidate)
    return names
