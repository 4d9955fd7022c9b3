"""The first-use dependency check of the Slicer modules, without Slicer: missing packages, wrong
versions, the confirmation text, the install order, and failures reported in one line."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest

from AttentionSegLib.slicer.dependencies import (
    DependencyError,
    Requirement,
    check_dependencies,
    confirmation_text,
    default_requirements_file,
    install_dependencies,
    load_requirements,
)

ROOT = Path(__file__).resolve().parents[1]
TORCH = Requirement("torch", ">=2.4", "torch==2.13.0", 750.0)
PACKAGES = [
    Requirement("monai", ">=1.6,<1.7", "monai==1.6.1", 14.2),
    Requirement("einops", ">=0.7", "einops==0.8.2", 0.6),
    Requirement("highdicom", ">=0.28,<0.29", "highdicom==0.28.2", 27.4),
]


def versions(**installed):
    def version_of(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    return version_of


def test_nothing_to_do_when_every_version_is_in_range():
    check = check_dependencies(
        (TORCH, PACKAGES), versions(torch="2.5.1+cu121", monai="1.6.0", einops="0.8.0", highdicom="0.28.0")
    )
    assert check.ok and check.torch is None and check.packages == []


def test_missing_and_out_of_range_packages_are_found_with_the_reason():
    check = check_dependencies((TORCH, PACKAGES), versions(monai="1.5.2", einops="0.8.2"))
    assert check.torch == "not installed"
    assert [(r.name, why) for r, why in check.packages] == [
        ("monai", "1.5.2 installed, >=1.6,<1.7 needed"),
        ("highdicom", "not installed"),
    ]
    assert check.size_mb == pytest.approx(14.2 + 27.4)
    text = confirmation_text(check)
    assert "PyTorch >=2.4 (not installed), through the PyTorch extension" in text
    assert "- monai==1.6.1 (1.5.2 installed, >=1.6,<1.7 needed), about 14 MB" in text
    assert "- highdicom==0.28.2 (not installed), about 27 MB" in text and "about 42 MB installed" in text


def test_install_puts_torch_first_then_each_pin_and_reports_progress():
    calls, steps = [], []
    check = check_dependencies((TORCH, PACKAGES), versions(einops="0.8.2"))
    install_dependencies(
        check,
        pip_install=lambda requirements: calls.append(("pip", requirements)),
        install_torch=lambda specifier: calls.append(("torch", specifier)),
        progress=lambda message, fraction: steps.append((message, round(fraction, 3))),
    )
    assert calls == [("torch", ">=2.4"), ("pip", ["monai==1.6.1"]), ("pip", ["highdicom==0.28.2"])]
    assert [f for _, f in steps] == [0.0, 0.333, 0.667, 1.0] and steps[-1][0] == "Dependencies installed."


def test_a_missing_pytorch_extension_or_a_failed_install_is_one_line_naming_what():
    check = check_dependencies((TORCH, PACKAGES), versions(monai="1.6.1", einops="0.8.2", highdicom="0.28.2"))
    with pytest.raises(
        DependencyError, match="the PyTorch extension is not installed: install 'PyTorch' from the Extensions Manager"
    ):
        install_dependencies(check, pip_install=lambda r: None, install_torch=None)

    def failing_pip(requirements):
        raise RuntimeError("Collecting highdicom==0.28.2\nERROR: No matching distribution found for highdicom==0.28.2")

    check = check_dependencies((TORCH, PACKAGES), versions(torch="2.13.0", monai="1.6.1", einops="0.8.2"))
    with pytest.raises(DependencyError) as error:
        install_dependencies(check, pip_install=failing_pip, install_torch=None)
    assert str(error.value) == (
        "installing highdicom==0.28.2 failed: ERROR: No matching distribution found for highdicom==0.28.2"
    )

    def failing_torch(specifier):
        raise RuntimeError("download interrupted")

    check = check_dependencies((TORCH, []), versions())
    with pytest.raises(DependencyError, match="^installing PyTorch failed: download interrupted$"):
        install_dependencies(check, pip_install=lambda r: None, install_torch=failing_torch)


def test_the_modules_dependency_list_matches_pyproject_and_the_lock_file():
    torch, packages = load_requirements(default_requirements_file())
    locked = dict(
        line.split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    locked = {name.lower(): version for name, version in locked.items()}
    for requirement in packages:
        name, version = requirement.pin.split("==")
        assert locked[name.lower()] == version, (
            f"{requirement.pin} is not the locked version; run scripts/slicer_dependencies.py"
        )
        assert requirement.size_mb > 0
    block = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    declared = {re.match(r"[A-Za-z0-9_.\-]+", entry).group(0) for entry in re.findall(r'"([^"]+)"', block)}
    assert {r.name for r in packages} | {"torch"} == declared
    # and this environment, installed from the lock file, passes its own check
    assert check_dependencies((torch, packages)).ok


def test_an_unreadable_dependency_list_is_one_line(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"torch": {}}))
    with pytest.raises(DependencyError, match="d.json: cannot read the dependency list"):
        load_requirements(tmp_path / "d.json")
