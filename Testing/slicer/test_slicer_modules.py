"""What can be checked of the Slicer modules without the desktop app, and the engine's import rules."""

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["AttentionSeg", "AttentionSegTraining"]


@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_and_has_every_widget_the_module_uses(module):
    ui = ElementTree.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    source = (ROOT / module / f"{module}.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the module uses no widgets from its .ui"
    assert used <= names, f"missing in {module}.ui: {sorted(used - names)}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_node_fields_are_bound_in_ui(module):
    ui = ElementTree.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    bound = {p.findtext("string") for p in ui.iter("property") if p.get("name") == "SlicerParameterName"}
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name.endswith("ParameterNode"):
            fields = {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
            assert fields == bound, (fields, bound)


# The parameter types each widget can be bound to, after the connectors of Slicer's
# parameterNodeWrapper (slicer/parameterNodeWrapper/guiConnectors.py): a path line edit takes a
# pathlib path only, a combo box needs a Choice annotation.
BINDABLE = {
    "ctkPathLineEdit": lambda annotation: re.fullmatch(r"(pathlib\.)?Path", annotation),
    "QComboBox": lambda annotation: "Choice(" in annotation,
    "QSpinBox": lambda annotation: re.fullmatch(r"int|Annotated\[int, .*\]", annotation),
    "QDoubleSpinBox": lambda annotation: re.fullmatch(r"float|Annotated\[float, .*\]", annotation),
    "QLineEdit": lambda annotation: annotation == "str",
    "QCheckBox": lambda annotation: annotation == "bool",
    "qMRMLNodeComboBox": lambda annotation: annotation.startswith("slicer.vtkMRML"),
}


@pytest.mark.parametrize("module", MODULES)
def test_parameter_node_fields_have_types_their_widgets_can_bind(module):
    ui = ElementTree.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    widget_class = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                widget_class[prop.findtext("string")] = widget.get("class")
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name.endswith("ParameterNode"):
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    name, annotation = item.target.id, ast.unparse(item.annotation)
                    check = BINDABLE.get(widget_class[name])
                    assert check is not None, f"{name}: no known binding for a {widget_class[name]}"
                    assert check(annotation), f"{name}: a {widget_class[name]} cannot bind {annotation}"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_has_the_four_slicer_classes(module):
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {module, f"{module}Widget", f"{module}Logic", f"{module}Test"} <= classes


def test_cmake_lists_every_engine_file_and_resource():
    cmake = (ROOT / "AttentionSeg" / "CMakeLists.txt").read_text()
    engine = sorted(
        p.relative_to(ROOT / "AttentionSeg").as_posix()
        for p in (ROOT / "AttentionSeg" / "AttentionSegLib").rglob("*.py")
    )
    missing = [path for path in engine if path not in cmake]
    assert not missing, f"add to AttentionSeg/CMakeLists.txt: {missing}"
    # Every resource is installed with the module, the shipped model and its card among them.
    resources = sorted(
        p.relative_to(ROOT / "AttentionSeg").as_posix()
        for p in (ROOT / "AttentionSeg" / "Resources").rglob("*")
        if p.is_file()
    )
    listed = cmake.replace("${MODULE_NAME}", "AttentionSeg")
    assert "Resources/Models/promptable-generalist.pt" in resources
    missing = [path for path in resources if path not in listed]
    assert not missing, f"add to MODULE_PYTHON_RESOURCES of AttentionSeg/CMakeLists.txt: {missing}"
    top = (ROOT / "CMakeLists.txt").read_text()
    assert "EXTENSION_DEPENDS PyTorch" in top
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', top), f"EXTENSION_{key} is empty"
    # the icon and screenshots the Extensions Index shows are files of this repository
    urls = re.findall(r"https://raw\.githubusercontent\.com/\S+?/main/([^\s\"]+)", top)
    assert len(urls) >= 3 and all((ROOT / path).is_file() for path in urls), urls
    for module in MODULES:
        assert (ROOT / module / "Resources" / "Icons" / f"{module}.png").is_file()
    # the index descriptions are generated from this metadata and up to date
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "extension_description.py"), "--check"])
    assert check.returncode == 0
    for module in MODULES:
        assert f"add_subdirectory({module})" in top
        module_cmake = (ROOT / module / "CMakeLists.txt").read_text()
        assert "slicerMacroBuildScriptedModule" in module_cmake and "slicer_add_python_unittest" in module_cmake
        for resource in re.findall(r"Resources/\S+", module_cmake):
            assert (ROOT / module / resource.replace("${MODULE_NAME}", module)).exists(), resource


GUI_PACKAGES = ("qt", "slicer", "vtk", "ctk", "PythonQt")
# The packages that work on MRML: the Slicer glue and the web page over it (trame-slicer).
MRML_PACKAGES = ("slicer", "web")


def _engine_modules_outside_slicer_glue() -> list[str]:
    engine = ROOT / "AttentionSeg" / "AttentionSegLib"
    modules = []
    for path in sorted(engine.rglob("*.py")):
        parts = path.relative_to(engine).with_suffix("").parts
        if parts[0] in (*MRML_PACKAGES, "__main__"):
            continue
        modules.append(".".join(("AttentionSegLib", *parts[: -1 if parts[-1] == "__init__" else None])))
    return modules


def test_only_the_slicer_package_imports_slicer_vtk_or_qt():
    """No import statement outside AttentionSegLib/slicer (and web/, the page over the same MRML)
    names qt, slicer, vtk or ctk ..."""
    engine = ROOT / "AttentionSeg" / "AttentionSegLib"
    offenders = []
    for path in engine.rglob("*.py"):
        if path.relative_to(engine).parts[0] in MRML_PACKAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.relative_to(engine)}: {n}" for n in names if n.split(".")[0] in GUI_PACKAGES]
    assert not offenders, offenders


def test_importing_the_engine_outside_the_slicer_package_loads_no_slicer_vtk_or_qt():
    """... and importing every engine module outside it loads none of them (no indirect import)."""
    modules = _engine_modules_outside_slicer_glue()
    assert "AttentionSegLib.training.trainer" in modules and "AttentionSegLib.cli" in modules
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {GUI_PACKAGES!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "AttentionSeg")
    assert result.returncode == 0, result.stdout + result.stderr
