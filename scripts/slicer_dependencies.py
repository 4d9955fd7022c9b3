#!/usr/bin/env python3
"""Write AttentionSeg/Resources/dependencies.json: what the Slicer modules install on first use.

Ranges from pyproject.toml's dependencies, pins from requirements.lock, installed sizes from this
environment (.venv). Run after changing either file:

    .venv/bin/python scripts/slicer_dependencies.py
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_SPECIFIER = ">=2.4"  # what the engine uses; the PyTorch extension picks the CUDA build


def pyproject_dependencies() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    result = {}
    for entry in re.findall(r'"([^"]+)"', block):
        name, specifier = re.match(r"([A-Za-z0-9_.\-]+)(.*)", entry).groups()
        result[name] = specifier.strip()
    return result


def locked_versions() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pairs = (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    return {name.strip().lower(): version.strip() for name, version in pairs}


def installed_mb(name: str) -> float:
    distribution = importlib.metadata.distribution(name)
    files = [f.locate() for f in distribution.files or []]
    return round(sum(f.stat().st_size for f in files if f.exists()) / 1e6, 1)


def main() -> None:
    locked = locked_versions()
    packages = []
    for name, specifier in pyproject_dependencies().items():
        if name == "torch":
            continue
        version = locked[name.lower()]
        packages.append(
            {"name": name, "specifier": specifier, "pin": f"{name}=={version}", "size_mb": installed_mb(name)}
        )
    content = {
        "comment": "Written by scripts/slicer_dependencies.py from pyproject.toml and requirements.lock; do not edit.",
        "torch": {"specifier": TORCH_SPECIFIER, "pin": "torch==2.13.0", "size_mb": installed_mb("torch")},
        "packages": packages,
    }
    path = ROOT / "AttentionSeg" / "Resources" / "dependencies.json"
    path.write_text(json.dumps(content, indent=1) + "\n")
    print(f"wrote {path}: torch {TORCH_SPECIFIER} and {len(packages)} packages")


if __name__ == "__main__":
    main()
