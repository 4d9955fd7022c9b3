#!/usr/bin/env python3
"""Write the extension's descriptions for the Slicer Extensions Index from CMakeLists.txt:
``AttentionSeg.s4ext`` (the classic key-value description) and ``AttentionSeg.json`` (the
Extensions Index catalog entry). Run after changing the EXTENSION_* metadata:

    python3 scripts/extension_description.py [--check]

With --check, only compares and exits 1 when a file is out of date (the tests do that).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCM_URL = "https://github.com/attentionseg/SlicerAttentionSeg.git"
CATALOG_SCHEMA = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json"
)


def cmake_metadata() -> dict[str, str]:
    text = (ROOT / "CMakeLists.txt").read_text()
    found = re.findall(r'set\(EXTENSION_(\w+) (?:"([^"]*)"|([^)"]*))\)', text)
    return {key: quoted or bare for key, quoted, bare in found}


def s4ext(meta: dict[str, str]) -> str:
    fields = [
        ("scm", "git"),
        ("scmurl", SCM_URL),
        ("scmrevision", "main"),
        ("depends", meta["DEPENDS"].replace(";", " ") or "NA"),
        ("build_subdirectory", "."),
        ("homepage", meta["HOMEPAGE"]),
        ("contributors", meta["CONTRIBUTORS"]),
        ("category", meta["CATEGORY"]),
        ("iconurl", meta["ICONURL"]),
        ("status", "Beta"),
        ("description", meta["DESCRIPTION"]),
        ("screenshoturls", meta["SCREENSHOTURLS"]),
        ("enabled", "1"),
    ]
    header = "# Written by scripts/extension_description.py from CMakeLists.txt; do not edit.\n"
    return header + "".join(f"{key} {value}\n" for key, value in fields)


def catalog_entry(meta: dict[str, str]) -> str:
    entry = {
        "$schema": CATALOG_SCHEMA,
        "build_dependencies": meta["DEPENDS"].split(),
        "build_subdirectory": ".",
        "category": meta["CATEGORY"],
        "scm_revision": "main",
        "scm_url": SCM_URL,
        "tier": 1,
    }
    return json.dumps(entry, indent=2) + "\n"


def main() -> int:
    meta = cmake_metadata()
    outputs = {ROOT / "AttentionSeg.s4ext": s4ext(meta), ROOT / "AttentionSeg.json": catalog_entry(meta)}
    if "--check" in sys.argv:
        stale = [path.name for path, text in outputs.items() if not path.exists() or path.read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)}; run python3 scripts/extension_description.py", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
