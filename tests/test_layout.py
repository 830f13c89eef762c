"""Course layout rules: chapters import only earlier chapters and never redefine their names."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The import order of the course: the PyTorch appendix is the prerequisite, so it comes first.
ORDER = ["appendix_pytorch", "ch02_text_data", "ch03_attention", "ch04_gpt_model",
         "ch05_pretraining", "ch06_classification", "ch07_instruction"]
CHAPTERS = [c for c in ORDER if (ROOT / c / "__init__.py").exists()]


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
