"""The mutant generator of tools/mutation_pass.py (the pass itself runs test suites: it is not run here)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = '''"""Docstring with 1 < 2 and a + b."""


def f(x: int, pool: str = "last", n: int = 3) -> int | None:
    """Say 1 + 1."""
    if x < n and not pool:  # a comment with 5 - 2
        raise ValueError(f"bad {x + 1} < {n}")
    y = g(x, pool=pool) * 2
    y += h(x, n)
    print(f"{y - 1}")
    return y is None
'''


def load_tool():
    spec = importlib.util.spec_from_file_location("mutation_pass", ROOT / "tools" / "mutation_pass.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutants_are_one_line_changes_outside_strings_comments_annotations_and_raise(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    source = SAMPLE.encode()
    got = []
    for m in load_tool().find_mutants(path):
        mutated = (source[: m.start] + m.new + source[m.end :]).decode()
        compile(mutated, "mutant", "exec")  # every mutant is valid Python
        changed = [(a, b) for a, b in zip(SAMPLE.splitlines(), mutated.splitlines()) if a != b]
        assert len(changed) == 1 and len(mutated.splitlines()) == len(SAMPLE.splitlines())
        got.append((m.line, changed[0][1].strip()))
    assert got == [
        (4, 'def f(x: int, pool: str = "last", n: int = 4) -> int | None:'),  # a default value, not the annotation
        (6, "if x <= n and not pool:  # a comment with 5 - 2"),
        (6, "if x < n or not pool:  # a comment with 5 - 2"),
        (6, "if x < n and pool:  # a comment with 5 - 2"),
        (8, "y = g(x) * 2"),  # a parameter passed on, dropped
        (8, "y = g(x, pool=pool) / 2"),
        (8, "y = g(x, pool=pool) * 3"),
        (9, "y -= h(x, n)"),
        (9, "y += h(x)"),
        (11, "return None"),
        (11, "return y is not None"),
    ]  # nothing in the docstrings, the comment, the raise statement's message or the f-string
