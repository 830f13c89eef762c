#!/usr/bin/env python3
"""Write the table of bad inputs in docs/command-lines.md from the test rows that check them.

Every row of the table is one case of `tests/test_bad_inputs.py` (chapters 5 and 7) or
`tests/test_classification_cli.py` (chapter 6): the test runs the command on that input and checks the exit
status, the one line it prints, and that the folder is byte for byte as it was. The table sits in
docs/command-lines.md between two marker lines.

    python tools/bad_input_table.py           # rewrite the table in docs/command-lines.md
    python tools/bad_input_table.py --check   # exit 1 if the table there differs from the tests
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "command-lines.md"
BEGIN = "<!-- bad-input table: written by tools/bad_input_table.py from the tests; do not edit by hand -->"
END = "<!-- end of the bad-input table -->"
SOURCES = ("tests/test_bad_inputs.py", "tests/test_classification_cli.py")
SUBCOMMANDS = ("train", "predict", "finetune", "generate", "evaluate", "chat")


def _cases(relative: str) -> list:
    """The CASES list of one test file, imported by path under a private name (pytest's own import is left alone)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"_table_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(ROOT))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT))
        del sys.modules[spec.name]
    return module.CASES


def rows() -> list[tuple[str, str, str, int]]:
    """(command, bad input, message, exit status) of every case, by chapter."""
    out = []
    for source in SOURCES:
        for case in _cases(source):
            cli, name, argv, message = (case.cli, case.name, case.argv, case.message) if hasattr(case, "cli") else case
            status = getattr(case, "status", 2)
            command = f"python -m {cli}" + (f" {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "")
            out.append((command, name, message.replace("{tmp}/", ""), status))
    return sorted(out, key=lambda row: row[0].split()[2][:4])  # by chapter, each in its test file's order


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The markdown table, markers included."""
    lines = [BEGIN, "", "| command | bad input | what it prints (a part of its one line) | exit | files |",
             "|---|---|---|---|---|"]
    for command, name, message, status in rows():
        lines.append(f"| `{command}` | {_cell(name)} | `{_cell(message)}` | {status} | unchanged |")
    return "\n".join([*lines, "", END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the table in docs/command-lines.md is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"{DOC.relative_to(ROOT)} has no bad-input table (the line {BEGIN!r}): add the two marker lines",
              file=sys.stderr)
        return 1
    new = pattern.sub(lambda _: render(), text)
    if args.check:
        if new != text:
            print(f"the bad-input table in {DOC.relative_to(ROOT)} differs from the tests: "
                  "run python tools/bad_input_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote {len(rows())} rows to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
