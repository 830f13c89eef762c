"""One look for every concept diagram in the course: colours, fonts and a few drawing primitives.

Coordinates are inches: `canvas(8, 3)` gives an axes that spans x in [0, 8] and y in [0, 3], with y
pointing up, so a layout can be reasoned about on paper. Positions of boxes are their centres.

Colours stand for concepts, the same in every chapter (pass `kind=` to the primitives):

    text, token   blue     raw text, token strings
    id            grey     integer token ids, indices, labels
    embedding     green    vectors: embeddings, hidden states, context vectors
    query         orange   queries (and "the current token")
    key           purple   keys
    value         teal     values
    layer         yellow   a module with weights (Linear, LayerNorm, a block)
    op            white    an operation without weights (softmax, +, matmul, mask)
    logits        purple   scores over the vocabulary or the classes
    loss          red      losses, targets, masked-out positions
    mask          red      masked-out (future, padding) positions
    frozen        grey     weights that do not train
    trainable     orange   weights that train
    neutral       grey     anything else

Names written in the figures are the code's names (`emb_dim`, `context_length`, `n_heads`), in the
monospace font; shapes are written where tensors flow: `shape("batch", "tokens", "emb_dim")`.
"""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

DPI = 130
INK = "#222222"
MUTED = "#6B6B6B"
SANS = "DejaVu Sans"
MONO = "DejaVu Sans Mono"
FONT_SIZE = 11
MONO_SIZE = 9.5
SMALL = 8.5

# (fill, edge) pairs
BLUE = ("#DCEBFA", "#2C6DB5")
GREEN = ("#DDF3E4", "#2E8B57")
ORANGE = ("#FDE7D2", "#D9731A")
PURPLE = ("#ECE3F7", "#7B4FB8")
TEAL = ("#D6F1F1", "#1F8A8A")
YELLOW = ("#FFF3CF", "#B8860B")
RED = ("#FBE0E0", "#C53030")
GREY = ("#EEEEEE", "#6B6B6B")
WHITE = ("#FFFFFF", "#444444")

KINDS: dict[str, tuple[str, str]] = {
    "text": BLUE, "token": BLUE, "id": GREY, "embedding": GREEN,
    "query": ORANGE, "key": PURPLE, "value": TEAL,
    "layer": YELLOW, "op": WHITE, "logits": PURPLE,
    "loss": RED, "mask": RED, "frozen": GREY, "trainable": ORANGE, "neutral": GREY,
}

# Heat maps (attention weights, probabilities): white to the "query" orange, and a diverging map.
HEAT = LinearSegmentedColormap.from_list("course_heat", ["#FFFFFF", "#F6B27A", "#C2560F"])
DIVERGING = LinearSegmentedColormap.from_list("course_div", [BLUE[1], "#FFFFFF", ORANGE[1]])


def colors(kind: str) -> tuple[str, str]:
    """The (fill, edge) colours of a concept kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(KINDS)}")
    return KINDS[kind]


def shape(*dims: object) -> str:
    """A tensor shape as the figures write it: shape('batch', 'tokens') -> '(batch, tokens)'."""
    return "(" + ", ".join(str(d) for d in dims) + ")"


def canvas(width: float, height: float, title: str | None = None) -> tuple[Figure, plt.Axes]:
    """A blank figure of width x height inches whose data coordinates are inches."""
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    if title:
        ax.text(0.15, height - 0.15, title, ha="left", va="top", fontsize=FONT_SIZE + 1,
                fontweight="bold", color=INK, family=SANS)
    return fig, ax


def text(ax: plt.Axes, x: float, y: float, s: str, *, size: float | None = None, mono: bool = False,
         color: str = INK, weight: str = "normal", ha: str = "center", va: str = "center",
         rotation: float = 0, style: str = "normal") -> None:
    """Write s at (x, y); mono=True for code names and shapes."""
    ax.text(x, y, s, ha=ha, va=va, fontsize=size or (MONO_SIZE if mono else FONT_SIZE),
            family=MONO if mono else SANS, color=color, fontweight=weight, rotation=rotation,
            fontstyle=style, zorder=5)


def box(ax: plt.Axes, x: float, y: float, w: float, h: float, label: str = "", *, kind: str = "layer",
        mono: bool = False, size: float | None = None, dashed: bool = False, rounded: bool = True,
        fill: str | None = None, edge: str | None = None, lw: float = 1.3, weight: str = "normal",
        text_color: str = INK) -> tuple[float, float, float, float]:
    """A box centred at (x, y) with a label; returns (left, bottom, right, top)."""
    f, e = colors(kind)
    pad = min(w, h) * 0.12 if rounded else 0
    style = f"round,pad=0,rounding_size={pad}" if rounded else "square,pad=0"
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=style, facecolor=fill or f,
                                edgecolor=edge or e, linewidth=lw, linestyle="--" if dashed else "-",
                                zorder=2))
    if label:
        text(ax, x, y, label, mono=mono, size=size, weight=weight, color=text_color)
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def region(ax: plt.Axes, left: float, bottom: float, right: float, top: float, label: str = "", *,
           kind: str = "neutral", label_pos: str = "top-left", size: float | None = None) -> None:
    """A dashed rounded frame that groups other shapes (a block, a repeated stack)."""
    f, e = colors(kind)
    ax.add_patch(FancyBboxPatch((left, bottom), right - left, top - bottom,
                                boxstyle="round,pad=0,rounding_size=0.12", facecolor=f, alpha=0.35,
                                edgecolor=e, linewidth=1.1, linestyle="--", zorder=1))
    if label:
        xs = {"top-left": (left + 0.1, "left"), "top-right": (right - 0.1, "right")}
        x, ha = xs.get(label_pos, (left + 0.1, "left"))
        text(ax, x, top - 0.08, label, size=size or SMALL + 0.5, color=e, ha=ha, va="top", weight="bold")


def arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], label: str = "", *,
          label_side: str = "right", color: str = INK, lw: float = 1.3, curve: float = 0.0,
          dashed: bool = False, head: bool = True, label_offset: float = 0.08,
          size: float | None = None, label_color: str = MUTED) -> None:
    """An arrow from start to end, optionally with a (monospace) label such as a tensor shape."""
    style = "-|>" if head else "-"
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=color,
                                 linewidth=lw, linestyle="--" if dashed else "-",
                                 connectionstyle=f"arc3,rad={curve}", shrinkA=1, shrinkB=1, zorder=3))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        if label_side == "right":
            text(ax, mx + label_offset, my, label, mono=True, size=size or SMALL, color=label_color, ha="left")
        elif label_side == "left":
            text(ax, mx - label_offset, my, label, mono=True, size=size or SMALL, color=label_color, ha="right")
        elif label_side == "above":
            text(ax, mx, my + label_offset, label, mono=True, size=size or SMALL, color=label_color, va="bottom")
        else:  # below
            text(ax, mx, my - label_offset, label, mono=True, size=size or SMALL, color=label_color, va="top")


def cells(ax: plt.Axes, x: float, y: float, labels: Sequence[str], *, cell_w: float = 0.5,
          cell_h: float = 0.35, kind: str = "token", mono: bool = True, size: float | None = None,
          vertical: bool = False, fills: Sequence[str] | None = None) -> list[tuple[float, float]]:
    """A row (or column) of touching cells starting at top-left (x, y); returns each cell's centre."""
    f, e = colors(kind)
    centres = []
    for i, lab in enumerate(labels):
        cx = x + (0 if vertical else i * cell_w)
        cy = y - (i * cell_h if vertical else 0)
        ax.add_patch(Rectangle((cx, cy - cell_h), cell_w, cell_h, facecolor=fills[i] if fills else f,
                               edgecolor=e, linewidth=1.0, zorder=2))
        centres.append((cx + cell_w / 2, cy - cell_h / 2))
        if lab != "":
            text(ax, cx + cell_w / 2, cy - cell_h / 2, str(lab), mono=mono, size=size or SMALL)
    return centres


def matrix(ax: plt.Axes, x: float, y: float, values: Sequence[Sequence[float]], *, cell: float = 0.4,
           cmap=HEAT, vmin: float = 0.0, vmax: float = 1.0, fmt: str | None = "{:.2f}",
           row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
           masked: Sequence[Sequence[bool]] | None = None, size: float | None = None,
           col_label_rotation: float = 0) -> tuple[float, float, float, float]:
    """A heat-map grid with top-left corner (x, y); masked cells are hatched red. Returns its extent."""
    rows, cols = len(values), len(values[0])
    for i in range(rows):
        for j in range(cols):
            v = values[i][j]
            is_masked = masked is not None and masked[i][j]
            left, bottom = x + j * cell, y - (i + 1) * cell
            if is_masked:
                ax.add_patch(Rectangle((left, bottom), cell, cell, facecolor=RED[0], edgecolor=RED[1],
                                       hatch="///", linewidth=0.6, zorder=2))
                continue
            t = 0.0 if vmax == vmin else (v - vmin) / (vmax - vmin)
            ax.add_patch(Rectangle((left, bottom), cell, cell, facecolor=cmap(min(max(t, 0.0), 1.0)),
                                   edgecolor="#BBBBBB", linewidth=0.6, zorder=2))
            if fmt:
                text(ax, left + cell / 2, bottom + cell / 2, fmt.format(v), size=size or SMALL - 1,
                     mono=True, color="white" if t > 0.72 else INK)
    if row_labels:
        for i, lab in enumerate(row_labels):
            text(ax, x - 0.08, y - (i + 0.5) * cell, lab, mono=True, size=size or SMALL, ha="right")
    if col_labels:
        for j, lab in enumerate(col_labels):
            text(ax, x + (j + 0.5) * cell, y + 0.08, lab, mono=True, size=size or SMALL,
                 va="bottom", rotation=col_label_rotation, ha="left" if col_label_rotation else "center")
    return x, y - rows * cell, x + cols * cell, y


def brace(ax: plt.Axes, x0: float, x1: float, y: float, label: str = "", *, below: bool = True,
          color: str = MUTED, mono: bool = True, size: float | None = None) -> None:
    """A square bracket spanning x0..x1 at height y with a label under (or over) it."""
    d = -0.08 if below else 0.08
    ax.plot([x0, x0, x1, x1], [y - d, y, y, y - d], color=color, lw=1.0, zorder=3)
    if label:
        text(ax, (x0 + x1) / 2, y + (-0.1 if below else 0.1) + d * 0, label, mono=mono,
             size=size or SMALL, color=color, va="top" if below else "bottom")


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes: no timestamps, palette-quantised so notebooks stay small."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    plt.close(fig)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    small = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()
