"""What the engine needs installed, checked before first use, and installed after a confirmation.

Slicer's Python comes without PyTorch, MONAI or highdicom. As SlicerTotalSegmentator and
SlicerNNUNet do, each module checks on first use and offers to install what is missing:
PyTorch through the PyTorch extension (its ``PyTorchUtils`` logic picks a CUDA build matching
the driver), the other packages with pip at the versions pinned in ``requirements.lock``. The
list lives in ``Resources/dependencies.json`` (written by ``scripts/slicer_dependencies.py`` from
pyproject.toml and requirements.lock; a test keeps them in step).

This module has no Qt and no Slicer (it sits in the Slicer glue package because only the Slicer
modules use it; that package imports nothing of Slicer on its own): the check and the install plan
are plain functions, and the installers are passed in (:mod:`AttentionSegLib.slicer.dependencies_ui`
passes Slicer's), so the whole flow is tested without Slicer.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError

__all__ = [
    "DependencyError",
    "Requirement",
    "DependencyCheck",
    "default_requirements_file",
    "load_requirements",
    "check_dependencies",
    "confirmation_text",
    "install_dependencies",
]


class DependencyError(AttentionSegError):
    """A dependency cannot be installed (the PyTorch extension is missing, pip failed ...)."""


@dataclass(frozen=True)
class Requirement:
    """One package: its distribution name, the versions that work, the pin to install, its size."""

    name: str
    specifier: str  # e.g. ">=1.6,<1.7"; empty: any version
    pin: str  # e.g. "monai==1.6.1"
    size_mb: float  # installed size, for the confirmation dialog


@dataclass
class DependencyCheck:
    """What is missing: ``torch`` (None when fine, else why), and the packages to pip-install with why."""

    torch: str | None
    torch_specifier: str
    packages: list[tuple[Requirement, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.torch is None and not self.packages

    @property
    def size_mb(self) -> float:
        return sum(requirement.size_mb for requirement, _ in self.packages)


def default_requirements_file() -> Path:
    """``Resources/dependencies.json`` of the AttentionSeg module."""
    return Path(__file__).resolve().parents[2] / "Resources" / "dependencies.json"


def load_requirements(path: str | Path | None = None) -> tuple[Requirement, list[Requirement]]:
    """(torch requirement, other requirements) from the dependencies file."""
    path = Path(path) if path is not None else default_requirements_file()
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        torch = content["torch"]
        packages = content["packages"]
        return (
            Requirement("torch", torch["specifier"], torch["pin"], float(torch["size_mb"])),
            [Requirement(p["name"], p["specifier"], p["pin"], float(p["size_mb"])) for p in packages],
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DependencyError(f"{path}: cannot read the dependency list ({error})") from None


def _specifier_set(specifier: str):
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # Slicer's Python always has pip, which vendors packaging
        from pip._vendor.packaging.specifiers import SpecifierSet
    return SpecifierSet(specifier)


def _problem(requirement: Requirement, version_of: Callable[[str], str]) -> str | None:
    """Why ``requirement`` is not satisfied ("not installed", "1.2 installed, >=1.6 needed"), or None."""
    try:
        version = version_of(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    if requirement.specifier and not _specifier_set(requirement.specifier).contains(version, prereleases=True):
        return f"{version} installed, {requirement.specifier} needed"
    return None


def check_dependencies(
    requirements: tuple[Requirement, list[Requirement]] | None = None,
    version_of: Callable[[str], str] = importlib.metadata.version,
) -> DependencyCheck:
    """Which requirements the running Python lacks (missing or at a version outside the range).

    Args:
        requirements: as :func:`load_requirements` returns them (default: the module's file).
        version_of: installed version of a distribution; raises PackageNotFoundError when absent.
    """
    torch, packages = requirements if requirements is not None else load_requirements()
    check = DependencyCheck(_problem(torch, version_of), torch.specifier)
    for requirement in packages:
        problem = _problem(requirement, version_of)
        if problem:
            check.packages.append((requirement, problem))
    return check


def confirmation_text(check: DependencyCheck) -> str:
    """What the confirmation dialog says: what will be installed, why, and how large it is."""
    lines = ["AttentionSeg needs these Python packages, which this Slicer does not have yet:", ""]
    if check.torch is not None:
        lines.append(f"- PyTorch {check.torch_specifier} ({check.torch}), through the PyTorch extension, which picks")
        lines.append("  the build for your GPU (about 1-3 GB to download for CUDA, 200 MB for CPU)")
    for requirement, problem in check.packages:
        lines.append(f"- {requirement.pin} ({problem}), about {requirement.size_mb:.0f} MB")
    if check.packages:
        lines += ["", f"pip packages in total: about {check.size_mb:.0f} MB installed, plus what they need."]
    lines += ["", "Install now? Slicer may need a restart afterwards."]
    return "\n".join(lines)


def install_dependencies(
    check: DependencyCheck,
    pip_install: Callable[[list[str]], None],
    install_torch: Callable[[str], None] | None,
    progress: Callable[[str, float], None] = lambda message, fraction: None,
) -> None:
    """Install what ``check`` found missing: PyTorch first (its build decides the others' wheels),
    then the pinned packages one by one, reporting each step.

    Args:
        pip_install: installs a list of requirement strings (``slicer.util.pip_install``).
        install_torch: installs PyTorch within a version specifier (the PyTorch extension's
            logic); None when the extension is not installed.
        progress: (message, fraction done) after each step.

    Raises:
        DependencyError: one line: the PyTorch extension is missing, or an install failed (which
            package, and the installer's last line).
    """
    steps = (1 if check.torch is not None else 0) + len(check.packages)
    done = 0
    if check.torch is not None:
        if install_torch is None:
            raise DependencyError(
                "PyTorch is needed and the PyTorch extension is not installed: install 'PyTorch' from the "
                "Extensions Manager, restart Slicer, then open AttentionSeg again"
            )
        progress(f"Installing PyTorch {check.torch_specifier} ...", done / steps)
        try:
            install_torch(check.torch_specifier)
        except Exception as error:  # the installer's own errors vary; all mean "not installed"
            raise DependencyError(f"installing PyTorch failed: {_last_line(error)}") from None
        done += 1
    for requirement, _ in check.packages:
        progress(f"Installing {requirement.pin} ...", done / steps)
        try:
            pip_install([requirement.pin])
        except Exception as error:
            raise DependencyError(f"installing {requirement.pin} failed: {_last_line(error)}") from None
        done += 1
    progress("Dependencies installed.", 1.0)


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__
