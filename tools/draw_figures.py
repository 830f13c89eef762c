#!/usr/bin/env python3
"""Draw the course's concept diagrams and embed them in the notebooks as markdown attachments.

A markdown cell shows figure NAME with `![what it shows](attachment:NAME.png)`; the drawing function
registered as NAME in tools/figures/<chapter>.py is the figure's editable source. This tool draws each
figure and stores the PNG in the `attachments` of the cells that reference it, so a notebook needs no
image files and no network to show its figures (JupyterLab, GitHub, Colab, nbconvert --to html).

    python tools/draw_figures.py                 # draw every figure, embed it, report what changed
    python tools/draw_figures.py --module ch03   # only the figures of tools/figures/ch03.py
    python tools/draw_figures.py --out /tmp/figs # also write each PNG there, to look at
    python tools/draw_figures.py --check         # exit 1 if an embedded figure is stale or misplaced

Markdown cells are the only thing it changes; code cells and their outputs are left alone, so adding a
figure does not require re-running a notebook.
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import FigureSpec, load_all  # noqa: E402
from figures.style import to_png  # noqa: E402

ATTACHMENT_REF = re.compile(r"attachment:([A-Za-z0-9_\-]+)\.png")


def read_notebook(path: Path) -> dict:
    """Load a notebook as plain JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_notebook(path: Path, nb: dict) -> None:
    """Write a notebook the way Jupyter does (indent 1, sorted keys, trailing newline)."""
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def references(cell: dict) -> list[str]:
    """Names of the figures a markdown cell references as attachments."""
    if cell.get("cell_type") != "markdown":
        return []
    return ATTACHMENT_REF.findall("".join(cell.get("source", "")))


def embed(specs: dict[str, FigureSpec], pngs: dict[str, bytes], check: bool) -> list[str]:
    """Put each drawn PNG into the cells that reference it; returns the problems (or changes, in check mode)."""
    problems: list[str] = []
    by_notebook: dict[str, list[str]] = {}
    for spec in specs.values():
        by_notebook.setdefault(spec.notebook, []).append(spec.name)
    for notebook, names in sorted(by_notebook.items()):
        path = ROOT / notebook
        if not path.exists():
            problems.append(f"{notebook}: no such notebook (figures {', '.join(names)})")
            continue
        nb = read_notebook(path)
        placed: set[str] = set()
        changed = False
        for i, cell in enumerate(nb["cells"]):
            refs = references(cell)
            if not refs:
                continue
            attachments = cell.get("attachments", {})
            for name in refs:
                if name not in names:
                    continue  # another module's figure, or an unregistered one (the --check pass reports it)
                placed.add(name)
                data = base64.b64encode(pngs[name]).decode("ascii")
                if attachments.get(f"{name}.png", {}).get("image/png") != data:
                    changed = True
                    if check:
                        problems.append(f"{notebook} cell {i}: figure {name} is stale (run tools/draw_figures.py)")
                    attachments[f"{name}.png"] = {"image/png": data}
            cell["attachments"] = attachments
        for name in names:
            if name not in placed:
                problems.append(f"{notebook}: figure {name} is drawn but no markdown cell shows it "
                                f"(add ![...](attachment:{name}.png))")
        if changed and not check:
            write_notebook(path, nb)
            print(f"updated {notebook}")
    return problems


def unregistered_references(specs: dict[str, FigureSpec]) -> list[str]:
    """Attachment references, in any notebook, that no drawing function produces."""
    problems = []
    for path in sorted(ROOT.glob("*/*.ipynb")):
        for i, cell in enumerate(read_notebook(path)["cells"]):
            for name in references(cell):
                spec = specs.get(name)
                rel = path.relative_to(ROOT).as_posix()
                if spec is None:
                    problems.append(f"{rel} cell {i}: attachment {name}.png has no drawing function")
                elif spec.notebook != rel:
                    problems.append(f"{rel} cell {i}: figure {name} is registered for {spec.notebook}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", help="only the figures defined in tools/figures/<MODULE>.py")
    parser.add_argument("--out", type=Path, help="also write every PNG into this folder")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on stale or misplaced figures")
    args = parser.parse_args(argv)

    specs = load_all()
    if args.module:
        specs = {n: s for n, s in specs.items() if s.draw.__module__ == f"figures.{args.module}"}
        if not specs:
            parser.error(f"no figures in tools/figures/{args.module}.py")
    pngs = {name: to_png(spec.draw()) for name, spec in specs.items()}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, png in pngs.items():
            (args.out / f"{name}.png").write_bytes(png)
    problems = embed(specs, pngs, args.check)
    if not args.module:
        problems += unregistered_references(specs)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(pngs)} figures drawn, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
