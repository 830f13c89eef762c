"""The course's concept diagrams: one drawing function per figure, in one visual style.

Each chapter has a module here (`appendix.py`, `ch02.py`, ... `ch07.py`) whose functions are decorated
with `@figure(name, notebook)`. `python tools/draw_figures.py` draws every figure and embeds it as a
markdown-cell attachment in the notebook cell that shows it (`![alt](attachment:<name>.png)`), so the
images render offline in JupyterLab, on GitHub, in Colab and in an HTML export. Edit the drawing
function, never the embedded image.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from matplotlib.figure import Figure

CHAPTER_MODULES = ["appendix", "ch02", "bpe", "ch03", "ch04", "ch05", "ch06", "ch07"]


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: its attachment name, the notebook that shows it and how to draw it."""

    name: str
    notebook: str
    draw: Callable[[], Figure]


REGISTRY: dict[str, FigureSpec] = {}


def figure(name: str, notebook: str) -> Callable[[Callable[[], Figure]], Callable[[], Figure]]:
    """Register a drawing function as figure `name` (shown in `notebook`, a path from the repo root)."""
    def register(draw: Callable[[], Figure]) -> Callable[[], Figure]:
        if name in REGISTRY:
            raise ValueError(f"figure {name!r} is defined twice")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"figure name {name!r}: use letters, digits, '_' and '-' only")
        REGISTRY[name] = FigureSpec(name, notebook, draw)
        return draw
    return register


def load_all() -> dict[str, FigureSpec]:
    """Import every chapter module (which fills REGISTRY) and return the registry."""
    for module in CHAPTER_MODULES:
        try:
            importlib.import_module(f"figures.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"figures.{module}":
                raise
    return REGISTRY
