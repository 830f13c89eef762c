"""Course layout rules: one list of chapters, which import only earlier chapters and never redefine their names."""
import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from export_modules import CHAPTERS as ORDER  # noqa: E402  (the course order: the one list of chapters)
from export_modules import EXPORTS  # noqa: E402

EXISTING = [c for c in ORDER if (ROOT / c).is_dir()]
CHAPTERS = [c for c in EXISTING if (ROOT / c / "__init__.py").exists()]
NOT_CHAPTERS = {"tests", "tools", "benchmarks", "build", "dist"}


def test_every_chapter_folder_is_listed_and_a_package():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    chapter_like = {f for f in folders if re.fullmatch(r"(ch\d\d|appendix)_\w+", f) or (ROOT / f / "__init__.py").exists()}
    missing = sorted(chapter_like - set(ORDER) - NOT_CHAPTERS)
    assert not missing, f"add {missing} to CHAPTERS in tools/export_modules.py (in course order)"
    assert EXISTING and CHAPTERS == EXISTING, "every chapter folder needs an __init__.py (chapters are packages)"


def test_pyproject_packages_are_exactly_the_existing_chapters():
    with open(ROOT / "pyproject.toml", "rb") as f:
        packages = tomllib.load(f)["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert packages == EXISTING, (
        "pyproject.toml [tool.hatch.build.targets.wheel] packages must list every existing chapter folder, "
        f"in the order of CHAPTERS in tools/export_modules.py: expected {EXISTING}"
    )


def test_export_table_follows_the_chapter_list():
    folders = [nb.split("/")[0] for nb, _ in EXPORTS]
    assert all(f in ORDER for f in folders), f"EXPORTS names a folder outside CHAPTERS: {folders}"
    assert folders == sorted(folders, key=ORDER.index), "keep EXPORTS in CHAPTERS order"
    assert all(module.split("/")[0] == nb.split("/")[0] for nb, module in EXPORTS), "a module lives beside its notebook"
    assert set(ORDER) <= set(folders), "every chapter has a main notebook in EXPORTS"


def imported_chapters(path: Path) -> set[str]:
    """Chapter packages a Python file imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in ORDER}
    return found


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_imports_only_earlier_chapters(chapter):
    allowed = set(ORDER[: ORDER.index(chapter)])
    for py in sorted((ROOT / chapter).glob("*.py")):
        bad = imported_chapters(py) - allowed - {chapter}
        assert not bad, f"{py.relative_to(ROOT)} imports later chapter(s) {sorted(bad)}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_package_all_names_exist(chapter):
    package = importlib.import_module(chapter)
    assert package.__all__, f"{chapter}/__init__.py exports nothing"
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing, f"{chapter}.__all__ names undefined: {missing}"


def test_no_chapter_redefines_an_earlier_export():
    packages = [importlib.import_module(c) for c in CHAPTERS]
    for i, later in enumerate(packages):
        for earlier in packages[:i]:
            for name in set(later.__all__) & set(earlier.__all__):
                assert getattr(later, name) is getattr(earlier, name), (
                    f"{later.__name__}.{name} redefines {earlier.__name__}.{name}: import it instead"
                )


def test_imported_chapters_sees_both_import_forms(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import ch03_attention.attention\nfrom ch02_text_data import x\nfrom . import y\nimport os\n")
    assert imported_chapters(src) == {"ch02_text_data", "ch03_attention"}
