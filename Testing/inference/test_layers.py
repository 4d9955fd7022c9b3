"""Layering: inference imports nothing from training (training uses inference, not the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

INFERENCE = Path(__file__).resolve().parents[2] / "AttentionSeg" / "AttentionSegLib" / "inference"


def imported_modules(path: Path, inference: Path = INFERENCE) -> list[str]:
    """Every module ``path`` (a file under the ``inference`` folder) imports, anywhere in the file,
    relative imports resolved against its package."""
    package = ["AttentionSegLib", *path.relative_to(inference.parent).parent.parts]
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # ``from .. import training`` names the module in the imported names.
            modules += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return modules


def test_inference_imports_nothing_from_training():
    files = sorted(INFERENCE.rglob("*.py"))
    assert files
    offending = {
        path.name: module
        for path in files
        for module in imported_modules(path)
        if module == "AttentionSegLib.training" or module.startswith("AttentionSegLib.training.")
    }
    assert not offending, f"inference must not import training: {offending}"


def test_the_check_sees_absolute_relative_and_nested_imports(tmp_path):
    package = tmp_path / "AttentionSegLib" / "inference"
    package.mkdir(parents=True)
    sources = {
        "a.py": "from AttentionSegLib.training.run_folder import MODEL_FILE_NAME\n",
        "b.py": "def f():\n    import AttentionSegLib.training.memory\n",
        "c.py": "from ..training import memory\n",
        "d.py": "from .. import training\n",
    }
    for name, source in sources.items():
        (package / name).write_text(source)
        modules = imported_modules(package / name, package)
        assert any(m.startswith("AttentionSegLib.training") for m in modules), (name, modules)
    (package / "e.py").write_text("from . import window\nfrom ..models.memory import estimate_step\n")
    assert not any("training" in m for m in imported_modules(package / "e.py", package))
