"""The bad-input table in docs/command-lines.md is made from the tests that check those inputs, and stays in step."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_bad_input_table_matches_the_tests():
    done = subprocess.run([sys.executable, "tools/bad_input_table.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _table_tool():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bad_input_table
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return bad_input_table


def test_every_command_line_has_rows_in_the_table():
    bad_input_table = _table_tool()
    commands = {command for command, *_ in bad_input_table.rows()}
    for expected in ("python -m ch05_pretraining", "python -m ch06_classification train",
                     "python -m ch06_classification predict", "python -m ch07_instruction finetune",
                     "python -m ch07_instruction generate", "python -m ch07_instruction evaluate",
                     "python -m ch07_instruction chat"):
        assert expected in commands


def test_the_table_tool_leaves_the_test_modules_pytest_imported_alone(monkeypatch):
    imported = {name: object() for name in ("test_bad_inputs", "test_classification_cli")}
    for name, module in imported.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert _table_tool().rows()
    assert {name: sys.modules.get(name) for name in imported} == imported


def test_the_readme_links_the_table_and_does_not_repeat_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/command-lines.md)" in readme
    assert _table_tool().BEGIN not in readme
