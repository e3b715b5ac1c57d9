"""The shape of the code: sibling steps over one contract, packages by concern in layers, GDAL in two places,
short functions."""
from __future__ import annotations

import ast

import pytest

import pipeline.core.errors
from builders import PROJECT
from pipeline.core.errors import InputFileError, PipelineError

STEPS = sorted(PROJECT.glob("Step[0-9]_*.py"))
MODULES = sorted((PROJECT / "pipeline").rglob("*.py"))
PROJECT_FILES = [*STEPS, PROJECT / "gdal_tif2rgb.py", *MODULES, *sorted((PROJECT / "tests").rglob("*.py")),
                 *sorted((PROJECT / "benchmarks").glob("*.py"))]
#: The packages of tutorial science: they meet only through core, run and handoffs, never import each other.
SCIENCE = {"inputs", "segmentation", "model", "assessment"}
#: What each package may import of the pipeline (besides itself).
MAY_IMPORT = {"core": set(), "run": {"core"}, "handoffs": {"core", "run"},
              **{package: {"core", "run", "handoffs"} for package in SCIENCE},
              "tiling": {"core", "run", "handoffs", *SCIENCE},
              "workflow": {"core", "run", "handoffs", *SCIENCE, "tiling"}}


def imported_modules(path) -> set[str]:
    """Top-level names of every module ``path`` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_there_are_four_steps():
    assert [p.name[:5] for p in STEPS] == ["Step0", "Step1", "Step2", "Step3"]


@pytest.mark.parametrize("step", STEPS, ids=lambda p: p.stem)
def test_no_step_imports_another_step(step):
    others = {p.stem for p in STEPS} - {step.stem}
    assert not imported_modules(step) & others


def test_shared_modules_import_no_step_and_io_module_imports_only_the_core():
    steps = {p.stem for p in STEPS}
    for module in MODULES:
        assert not imported_modules(module) & steps, module.name
    ours = {m for m in imported_modules(PROJECT / "gdal_tif2rgb.py") if m.split(".")[0] in {"pipeline", *steps}}
    assert ours and all(m.startswith("pipeline.core.") for m in ours), ours


def test_every_module_lives_in_a_package_of_a_known_layer():
    assert [p.name for p in (PROJECT / "pipeline").glob("*.py")] == ["__init__.py"]
    packages = {p.parent.name for p in MODULES if p.parent != PROJECT / "pipeline"}
    assert packages == set(MAY_IMPORT)
    for package in packages:
        assert ast.get_docstring(ast.parse((PROJECT / "pipeline" / package / "__init__.py").read_text())), package


@pytest.mark.parametrize("module", [p for p in MODULES if p.parent.name in MAY_IMPORT],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_packages_import_only_the_layers_below_them(module):
    package = module.parent.name
    ours = {name.split(".")[1] for name in imported_modules(module) if name.startswith("pipeline.")}
    assert ours - {package} <= MAY_IMPORT[package]
    if package == "core":
        assert "gdal_tif2rgb" not in imported_modules(module)


@pytest.mark.parametrize("path", [*STEPS, *MODULES, PROJECT / "gdal_tif2rgb.py"], ids=lambda p: p.name)
def test_only_gdal_tif2rgb_and_the_inputs_package_import_osgeo(path):
    if path.name == "gdal_tif2rgb.py" or path.parent.name == "inputs":
        return
    assert not any(name.split(".")[0] == "osgeo" for name in imported_modules(path))


@pytest.mark.parametrize("path", PROJECT_FILES, ids=lambda p: p.name)
def test_no_module_is_aliased_as_io(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert all(alias.asname != "io" for alias in node.names), f"{path.name}:{node.lineno}"


@pytest.mark.parametrize("path", PROJECT_FILES, ids=lambda p: p.name)
def test_no_function_is_longer_than_60_lines(path):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long


def test_errors_have_one_root_and_the_io_module_defines_none():
    errors = [value for value in vars(pipeline.core.errors).values()
              if isinstance(value, type) and issubclass(value, Exception)]
    assert len(errors) > 1 and all(issubclass(error, PipelineError) for error in errors)
    assert issubclass(InputFileError, OSError)
    tree = ast.parse((PROJECT / "gdal_tif2rgb.py").read_text())
    assert not [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                and any("Error" in ast.unparse(base) or "Exception" in ast.unparse(base) for base in node.bases)]


def test_io_module_has_no_figure_code_and_no_side_effects_at_import():
    tree = ast.parse((PROJECT / "gdal_tif2rgb.py").read_text())
    text = (PROJECT / "gdal_tif2rgb.py").read_text()
    assert "subplots" not in text and "imshow" not in text
    calls_at_import = [node.lineno for node in tree.body if isinstance(node, (ast.Expr, ast.Assign))
                       and any(isinstance(child, ast.Call) for child in ast.walk(node))]
    assert not calls_at_import  # no side effects at import


@pytest.mark.parametrize("step", STEPS, ids=lambda p: p.stem)
def test_step_scripts_are_short_drivers_without_machinery(step):
    tree = ast.parse(step.read_text())
    assert len(step.read_text().splitlines()) <= 150
    assert ast.get_docstring(tree) and "main" in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    machinery = {"concurrent.futures", "threading", "dask", "distributed", "multiprocessing"}
    assert not {name.split(".")[0] for name in imported_modules(step)} & {m.split(".")[0] for m in machinery}
    assert "ThreadPoolExecutor" not in step.read_text()
    targets = [target for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AugAssign))
               for target in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    edits = [target.lineno for target in targets if isinstance(target, ast.Subscript)]
    calls = {ast.unparse(node.func).rsplit(".", 1)[-1] for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not edits and not calls & {"new_run", "provenance_of", "step0_provenance"}  # no provenance editing


@pytest.mark.parametrize("path", [*MODULES, PROJECT / "gdal_tif2rgb.py"], ids=lambda p: p.name)
def test_every_module_is_at_most_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450
