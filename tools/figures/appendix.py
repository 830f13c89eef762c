"""Concept diagrams for the PyTorch appendix (appendix_pytorch/appendix.ipynb).

The numbers in these figures are the notebook's: the bits of 0.1 are computed here with `struct`; the
shuffled indices come from a DataLoader and a DistributedSampler built exactly as the notebook and
ddp_train.py build theirs (seed 123), and are written down below so that drawing needs no torch.
"""
from __future__ import annotations

import struct

from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from . import figure
from .style import (GREEN, GREY, INK, MUTED, PURPLE, RED, TEAL, YELLOW, arrow, box, brace, canvas, cells,
                    colors, region, text)

NB = "appendix_pytorch/appendix.ipynb"
BACKWARD = RED[1]  # gradient flow, dashed

# list(DataLoader(range(800), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(123)))[0][:6]
FIRST_BATCH_INDICES = [702, 625, 684, 408, 178, 217]
# torch.randperm(1000, generator=torch.Generator().manual_seed(123))[:8]: DistributedSampler's shuffle
# of ddp_train.py's 1,000 training examples in epoch 0 (seed 123); rank r takes positions r, r + 2, ...
DDP_SHUFFLE = [382, 974, 946, 31, 512, 42, 918, 564]


def _sheets(ax, x: float, y: float, rows: int, cols: int, depth: int, *, cell: float = 0.22,
            dx: float = 0.09, dy: float = 0.07, kind: str = "embedding", back_fill: str | None = None) -> None:
    """`depth` stacked grids of rows x cols cells; the front grid's top-left corner is (x, y)."""
    f, e = colors(kind)
    for d in reversed(range(depth)):
        ox, oy = x + d * dx, y + d * dy
        fill = f if d == 0 else (back_fill or f)
        for i in range(rows):
            for j in range(cols):
                ax.add_patch(Rectangle((ox + j * cell, oy - (i + 1) * cell), cell, cell, facecolor=fill,
                                       edgecolor=e, linewidth=0.7, zorder=2 + (depth - d) * 0.01))


def _bits(value: float, fmt: str) -> tuple[str, float]:
    """The bit string of value in fp32 ('f'), fp16 ('e') or bf16 ('b'), and the number those bits store."""
    b32 = struct.unpack(">I", struct.pack(">f", value))[0]
    if fmt == "f":
        return format(b32, "032b"), struct.unpack(">f", struct.pack(">I", b32))[0]
    if fmt == "e":
        b16 = struct.unpack(">H", struct.pack(">e", value))[0]
        return format(b16, "016b"), struct.unpack(">e", struct.pack(">H", b16))[0]
    bf = (b32 + 0x7FFF + ((b32 >> 16) & 1)) >> 16  # round to nearest even, keep the top 16 bits
    return format(bf, "016b"), struct.unpack(">f", struct.pack(">I", bf << 16))[0]


@figure("appendix_tensor_ranks", NB)
def tensor_ranks() -> Figure:
    """Tensors of 0, 1, 2 and 3 dimensions, drawn with the notebook's examples and their shapes."""
    fig, ax = canvas(9.0, 3.3)
    titles = [(0.75, "ndim 0: scalar"), (2.5, "ndim 1: vector"), (4.75, "ndim 2: matrix"),
              (7.3, "ndim 3: 3-d tensor")]
    for x, t in titles:
        text(ax, x, 3.05, t, weight="bold", size=10)
    # scalar
    box(ax, 0.75, 1.95, 0.55, 0.42, "2.0", kind="embedding", mono=True, rounded=False, size=9)
    # vector: counting = torch.arange(6)
    cells(ax, 1.6, 2.12, [str(i) for i in range(6)], cell_w=0.3, cell_h=0.36, kind="id")
    arrow(ax, (1.6, 2.4), (3.4, 2.4), color=MUTED, lw=1.0)
    text(ax, 2.5, 2.55, "dim 0", size=8.5, color=MUTED)
    # matrix: from_list = torch.tensor([[1, 2, 3], [4, 5, 6]])
    left, top = 4.25, 2.3
    for i, row in enumerate([["1", "2", "3"], ["4", "5", "6"]]):
        cells(ax, left, top - i * 0.38, row, cell_w=0.42, cell_h=0.38, kind="id")
    arrow(ax, (left, top + 0.17), (left + 1.26, top + 0.17), color=MUTED, lw=1.0)
    text(ax, left + 0.63, top + 0.32, "dim 1", size=8.5, color=MUTED)
    arrow(ax, (left - 0.15, top), (left - 0.15, top - 0.76), color=MUTED, lw=1.0)
    text(ax, left - 0.25, top - 0.38, "dim 0", size=8.5, color=MUTED, ha="right")
    # 3-d: batch = torch.randn(8, 5, 3), drawn as 8 stacked (5, 3) sheets
    fx, fy = 6.7, 2.3
    _sheets(ax, fx, fy, 5, 3, 8, back_fill="#EEF8F1")
    brace(ax, fx, fx + 0.66, fy - 1.1 - 0.08, "d_in = 3", size=8)
    ax.plot([fx - 0.08, fx - 0.12, fx - 0.12, fx - 0.08], [fy, fy, fy - 1.1, fy - 1.1], color=MUTED, lw=1.0)
    text(ax, fx - 0.18, fy - 0.55, "tokens = 5", mono=True, size=8, color=MUTED, ha="right")
    text(ax, fx + 0.66 + 7 * 0.09 + 0.1, fy + 7 * 0.07 - 0.05, "batch = 8", mono=True, size=8, color=MUTED,
         ha="left")
    rows = [(0.75, "()", "torch.tensor(2.0)"), (2.5, "(6,)", "counting"), (4.75, "(2, 3)", "from_list"),
            (7.3, "(batch, tokens, d_in)", "batch: (8, 5, 3)")]
    for x, shp, name in rows:
        text(ax, x, 0.62, f"shape {shp}", mono=True, size=9)
        text(ax, x, 0.3, name, mono=True, size=8.5, color=MUTED)
    return fig


@figure("appendix_float_formats", NB)
def float_formats() -> Figure:
    """The bits of fp32, fp16 and bf16 (sign, exponent, mantissa), filled in with the number 0.1."""
    fig, ax = canvas(9.4, 3.6)
    fields = [("sign", GREY), ("exponent: range", PURPLE), ("mantissa: precision", TEAL)]
    lx = 1.45
    for name, (f, e) in fields:
        ax.add_patch(Rectangle((lx, 3.22), 0.22, 0.2, facecolor=f, edgecolor=e, lw=1.0))
        text(ax, lx + 0.3, 3.32, name, size=9, ha="left")
        lx += 0.55 + 0.075 * len(name) + 0.3
    text(ax, 7.75, 3.32, "0.1 is stored as", size=9, weight="bold")
    text(ax, 8.95, 3.32, "max", size=9, weight="bold")
    formats = [("float32", "f", 8, 23, "3.4e+38"), ("float16", "e", 5, 10, "65504"),
               ("bfloat16", "b", 8, 7, "3.4e+38")]
    cw, x0 = 0.17, 1.45
    for r, (name, fmt, n_exp, n_man, biggest) in enumerate(formats):
        y = 2.65 - r * 0.95
        bits, stored = _bits(0.1, fmt)
        text(ax, 0.15, y - 0.14, name, mono=True, weight="bold", ha="left")
        text(ax, 0.15, y - 0.42, f"{len(bits)} bits, {len(bits) // 8} bytes", size=8.5, color=MUTED, ha="left")
        spans = [(0, 1, GREY), (1, 1 + n_exp, PURPLE), (1 + n_exp, len(bits), TEAL)]
        fills = [next(f for a, b, (f, _) in spans if a <= k < b) for k in range(len(bits))]
        centres = cells(ax, x0, y, list(bits), cell_w=cw, cell_h=0.3, kind="neutral", fills=fills, size=7.5)
        for a, b, (_, edge) in spans:
            left, right = centres[a][0] - cw / 2, centres[b - 1][0] + cw / 2
            ax.add_patch(Rectangle((left, y - 0.3), right - left, 0.3, fill=False, edgecolor=edge, lw=1.6,
                                   zorder=3))
            brace(ax, left + 0.02, right - 0.02, y - 0.38, str(b - a), size=8)
        text(ax, 7.75, y - 0.15, f"{stored:.12f}", mono=True, size=8.5)
        text(ax, 8.95, y - 0.15, biggest, mono=True, size=8.5)
    return fig


@figure("appendix_view_vs_copy", NB)
def view_vs_copy() -> Figure:
    """base, grid = base.view(2, 3) and flipped = grid.T read one storage; reshape here and clone() copy."""
    fig, ax = canvas(9.0, 5.4)
    region(ax, 0.15, 1.75, 8.85, 5.3, "views: one storage, read with different shapes and strides",
           kind="embedding")
    cw, ch = 0.42, 0.34
    views = [  # (name, centre x, values by row, shape, stride, how an element is found)
        ("base", 1.55, [["100", "1", "2", "3", "4", "5"]], "(6,)", "(1,)", "base[j] = storage[j]"),
        ("grid = base.view(2, 3)", 4.5, [["100", "1", "2"], ["3", "4", "5"]], "(2, 3)", "(3, 1)",
         "grid[i, j] = storage[3i + j]"),
        ("flipped = grid.T", 7.35, [["100", "3"], ["1", "4"], ["2", "5"]], "(3, 2)", "(1, 3)",
         "flipped[i, j] = storage[i + 3j]"),
    ]
    top = 4.65
    for name, cx, rows, shp, stride, rule in views:
        text(ax, cx, top + 0.28, name, mono=True, size=9)
        left = cx - len(rows[0]) * cw / 2
        for i, row in enumerate(rows):
            cells(ax, left, top - i * ch, row, cell_w=cw, cell_h=ch, kind="id")
        bottom = top - len(rows) * ch
        text(ax, cx, bottom - 0.16, f"shape {shp}  stride {stride}", mono=True, size=8, color=MUTED)
        text(ax, cx, bottom - 0.38, rule, mono=True, size=8, color=MUTED)
        arrow(ax, (cx, bottom - 0.52), (4.5 + (cx - 4.5) * 0.3, 2.97), color=GREEN[1], lw=1.1)
    sx = 4.5 - 3 * cw
    text(ax, sx - 0.12, 2.53, "storage", size=9, ha="right", weight="bold")
    for k in range(6):
        text(ax, sx + (k + 0.5) * cw, 2.82, str(k), size=7.5, color=MUTED)
    cells(ax, sx, 2.7, ["100", "1", "2", "3", "4", "5"], cell_w=cw, cell_h=ch, kind="id")
    text(ax, 4.5, 2.02, "writing grid[0, 0] = 100 changed base[0]: the same memory", size=9, color=GREEN[1])
    region(ax, 0.15, 0.12, 8.85, 1.6, "copies: new storage, independent", kind="neutral")
    copies = [(2.4, "flat = flipped.reshape(6)", ["100", "3", "1", "4", "2", "5"],
               "no view can read flipped in row order"),
              (6.65, "independent = base.clone()", ["-1", "1", "2", "3", "4", "5"], "then independent[0] = -1")]
    for cx, name, vals, note in copies:
        text(ax, cx, 1.15, name, mono=True, size=9)
        cells(ax, cx - 3 * cw, 0.93, vals, cell_w=cw, cell_h=ch, kind="id")
        text(ax, cx, 0.35, note, size=8.5, color=MUTED)
    return fig


@figure("appendix_batched_matmul", NB)
def batched_matmul() -> Figure:
    """batch @ W: one (3, 4) weight matrix multiplies each of the 8 (5, 3) matrices of the batch."""
    fig, ax = canvas(8.6, 3.9)
    text(ax, 4.3, 3.65, "@ multiplies the last two dims and treats the leading dims as a batch", size=10,
         weight="bold")
    c, top = 0.26, 2.75
    _sheets(ax, 0.9, top, 5, 3, 8, cell=c, back_fill="#EEF8F1")
    text(ax, 2.85, top - 2.5 * c, "@", size=16, weight="bold")
    for i in range(3):
        cells(ax, 3.3, top - 1 * c - i * c, [""] * 4, cell_w=c, cell_h=c, kind="layer")
    text(ax, 4.75, top - 2.5 * c, "=", size=16, weight="bold")
    _sheets(ax, 5.2, top, 5, 4, 8, cell=c, back_fill="#EEF8F1")
    for x0, ncols, lab in [(0.9, 3, "batch[0]"), (5.2, 4, "batch[0] @ W")]:
        ax.add_patch(Rectangle((x0, top - 5 * c), ncols * c, 5 * c, fill=False, edgecolor=INK, lw=1.8, zorder=4))
        text(ax, x0 + ncols * c / 2, top - 5 * c - 0.17, lab, mono=True, size=8)
    labels = [(1.75, "batch", "(batch, tokens, d_in) = (8, 5, 3)"), (3.82, "W", "(d_in, 4) = (3, 4)"),
              (6.2, "batch @ W", "(batch, tokens, 4) = (8, 5, 4)")]
    for x, name, shp in labels:
        text(ax, x, 0.95, name, mono=True, size=9.5)
        text(ax, x, 0.68, shp, mono=True, size=8, color=MUTED)
    text(ax, 4.3, 0.25, "8 products (5, 3) @ (3, 4) -> (5, 4), all with the same W: "
         "torch.stack([b @ W for b in batch])", size=8.5, color=MUTED)
    return fig


def _shape_row(ax, y: float, right: float, name: str, dims: list[str], *, cw: float = 0.62,
               kind: str = "id", bold: bool = False, note_color: str = INK) -> None:
    """One shape drawn as right-aligned cells (a '' dim is missing and drawn dashed)."""
    f, e = colors(kind)
    for k, d in enumerate(reversed(dims)):
        left = right - (k + 1) * cw
        missing = d == ""
        ax.add_patch(Rectangle((left, y - 0.15), cw, 0.3, facecolor="white" if missing else f, edgecolor=e,
                               linestyle="--" if missing else "-", lw=1.4 if bold else 0.9, zorder=2))
        text(ax, left + cw / 2, y, "" if missing else d, mono=True, size=8.5, weight="bold" if bold else "normal",
             color=note_color)
    text(ax, right - 2 * cw - 0.1, y, name, mono=True, size=8.5, ha="right")


def _grid(ax, x: float, y: float, values: list[list[str]], solid: list[list[bool]], *, c: float = 0.4,
          kind: str = "id") -> None:
    """A table of cells with top-left (x, y); cells not marked solid are pale and dashed (repeated values)."""
    f, e = colors(kind)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            on = solid[i][j]
            ax.add_patch(Rectangle((x + j * c, y - (i + 1) * c), c, c, facecolor=f if on else "white",
                                   edgecolor=e if on else "#AAAAAA", linestyle="-" if on else "--",
                                   lw=1.0, zorder=2 if on else 1.9))
            text(ax, x + (j + 0.5) * c, y - (i + 0.5) * c, v, mono=True, size=8.5, color=INK if on else "#9A9A9A")


@figure("appendix_broadcasting", NB)
def broadcasting() -> Figure:
    """Broadcasting: a column and a row stretched to a table, and three shape pairs aligned from the right."""
    fig, ax = canvas(9.2, 4.85)
    c, top = 0.4, 4.15
    text(ax, 0.15, 4.65, "column * 10 + row: a size-1 dim is repeated (without copying) to match the other",
         size=10, weight="bold", ha="left", va="top")
    col, row = [0, 10, 20], [0, 1, 2, 3]
    blocks = [(0.45, "column * 10", "(3, 1) -> (3, 4)", [[str(a)] * 4 for a in col],
               [[j == 0 for j in range(4)] for _ in col], "id"),
              (2.95, "row", "(1, 4) -> (3, 4)", [[str(b) for b in row] for _ in col],
               [[i == 0] * 4 for i in range(3)], "id"),
              (5.45, "column * 10 + row", "(3, 4)", [[str(a + b) for b in row] for a in col],
               [[True] * 4 for _ in col], "embedding")]
    for x0, name, shp, values, solid, kind in blocks:
        _grid(ax, x0, top, values, solid, c=c, kind=kind)
        text(ax, x0 + 2 * c, top - 3 * c - 0.2, name, mono=True, size=9)
        text(ax, x0 + 2 * c, top - 3 * c - 0.45, shp, mono=True, size=8.5, color=MUTED)
    text(ax, 2.6, top - 1.5 * c, "+", size=15, weight="bold")
    text(ax, 5.1, top - 1.5 * c, "=", size=15, weight="bold")
    text(ax, 7.3, top - 1.5 * c, "dashed cells: the\nsame values, read\nagain, not stored", size=8.5,
         color=MUTED, ha="left")
    # the rule: shapes right-aligned, dims compared pair by pair
    text(ax, 0.15, 2.2, "the rule: align shapes from the right; each pair of sizes must be equal or contain a 1",
         size=10, weight="bold", ha="left", va="top")
    text(ax, 0.15, 1.88, "a missing dim (dashed) counts as 1; a 1 is stretched to the other size",
         size=8.5, color=MUTED, ha="left", va="top")
    examples = [
        (2.75, [("A @ W", ["2", "4"]), ("bias", ["", "4"]), ("result", ["2", "4"])], "a bias for every row"),
        (5.75, [("column", ["3", "1"]), ("row", ["1", "4"]), ("result", ["3", "4"])], "an outer table"),
        (8.75, [("predictions", ["5", "1"]), ("labels", ["", "5"]), ("result", ["5", "5"])],
         "(n, n): almost never intended"),
    ]
    for right, rows, note in examples:
        bug = note.startswith("(n")
        for r, (name, dims) in enumerate(rows):
            y = 1.3 - r * 0.4
            if r == 2:
                ax.plot([right - 2.1, right], [y + 0.2, y + 0.2], color=INK, lw=0.9)
            _shape_row(ax, y, right, name, dims, bold=r == 2, kind="mask" if r == 2 and bug else "id")
        text(ax, right - 0.62, 0.15, note, size=8.5, color=RED[1] if bug else MUTED)
    return fig


@figure("appendix_autograd_graph", NB)
def autograd_graph() -> Figure:
    """The logistic regression's graph: forward ops and the grad_fn nodes backward() walks from loss_lr."""
    fig, ax = canvas(9.4, 6.1)
    ys = [4.85, 4.0, 3.15, 2.3, 1.45, 0.6]  # leaves, @, +, sigmoid, BCE, loss
    ox, gx, sx = 2.45, 6.0, 8.5  # columns: forward ops, grad_fn nodes, their other next_functions
    text(ax, ox, 5.8, "forward: the code computes and records", weight="bold", size=10)
    text(ax, 7.0, 5.8, "backward(): follows grad_fn.next_functions", weight="bold", size=10)
    text(ax, ox, 5.5, "n = 16, d_in = 3", mono=True, size=8.5, color=MUTED)
    box(ax, 1.55, ys[0], 1.3, 0.5, "x_lr\n(n, d_in)", kind="neutral", mono=True, size=8.5)
    box(ax, 3.35, ys[0], 1.3, 0.5, "w_lr\n(d_in,)", kind="trainable", mono=True, size=8.5)
    box(ax, 0.75, ys[2], 0.95, 0.5, "b_lr\n()", kind="trainable", mono=True, size=8.5)
    box(ax, 0.75, ys[4], 0.95, 0.5, "y_lr\n(n,)", kind="loss", mono=True, size=8.5)
    ops = ["x_lr @ w_lr", "+ b_lr", "torch.sigmoid", "F.binary_cross_entropy"]
    for y, label in zip(ys[1:5], ops):
        box(ax, ox, y, 2.0, 0.42, label, kind="op", mono=True, size=8.5)
    box(ax, ox, ys[5], 1.2, 0.5, "loss_lr\n()", kind="loss", mono=True, size=8.5)
    arrow(ax, (1.55, ys[0] - 0.25), (ox - 0.35, ys[1] + 0.21))
    arrow(ax, (3.35, ys[0] - 0.25), (ox + 0.35, ys[1] + 0.21))
    arrow(ax, (1.23, ys[2]), (ox - 1.0, ys[2]))
    arrow(ax, (1.23, ys[4]), (ox - 1.0, ys[4]))
    for k, label in enumerate(["(n,)", "(n,)", "p_lr (n,)", "()"]):
        arrow(ax, (ox, ys[k + 1] - 0.21), (ox, ys[k + 2] + (0.25 if k == 3 else 0.21)), label)
    # one grad_fn node per recorded operation (the .grad_fn of the operation's result)
    grad_fns = ["MvBackward0", "AddBackward0", "SigmoidBackward0", "BinaryCrossEntropyBackward0"]
    for y, name in zip(ys[1:5], grad_fns):
        box(ax, gx, y, 2.35, 0.42, name, kind="logits", mono=True, size=8.5)
        ax.plot([ox + 1.0, gx - 1.175], [y, y], color=MUTED, lw=1.0, ls=":", zorder=1)
    # backward: from loss_lr up the chain, ending in AccumulateGrad for the leaves that require grad
    ax.plot([ox + 0.6, gx], [ys[5], ys[5]], color=BACKWARD, lw=1.3, ls="--", zorder=3)
    text(ax, (ox + 0.6 + gx) / 2, ys[5] + 0.14, "loss_lr.backward()", mono=True, size=8.5, color=BACKWARD)
    for k in range(5, 0, -1):
        arrow(ax, (gx, ys[k] + (0 if k == 5 else 0.21)), (gx, ys[k - 1] - 0.21), "dL/dw" if k == 1 else "",
              color=BACKWARD, dashed=True, label_color=BACKWARD)
    box(ax, gx, ys[0], 1.7, 0.42, "AccumulateGrad", kind="trainable", mono=True, size=8.5)
    text(ax, gx, ys[0] + 0.4, "writes w_lr.grad (d_in,)", mono=True, size=8.5, color=BACKWARD)
    box(ax, sx, ys[2], 1.6, 0.42, "AccumulateGrad", kind="trainable", mono=True, size=8.5)
    arrow(ax, (gx + 1.175, ys[2]), (sx - 0.8, ys[2]), "dL/db", color=BACKWARD, dashed=True, label_side="above",
          label_color=BACKWARD)
    text(ax, sx, ys[2] - 0.36, "writes b_lr.grad ()", mono=True, size=8.5, color=BACKWARD)
    for y, who in [(ys[1], "x_lr"), (ys[4], "y_lr")]:
        box(ax, sx, y, 0.8, 0.36, "None", kind="neutral", mono=True, size=8.5, dashed=True)
        arrow(ax, (gx + 1.175, y), (sx - 0.4, y), color=MUTED, dashed=True)
        text(ax, sx, y - 0.34, f"{who}: no gradient", size=8, color=MUTED)
    legend = [(0.15, "-", INK, "forward"), (2.2, "--", BACKWARD, "backward: gradients"),
              (5.0, ":", MUTED, "the node each operation records")]
    for x, ls, color, label in legend:
        ax.plot([x, x + 0.45], [0.12, 0.12], color=color, ls=ls, lw=1.3)
        text(ax, x + 0.55, 0.12, label, size=8.5, color=MUTED, ha="left")
    return fig


def _neurons(ax, x: float, n_shown: int, kind: str, *, gap: float, centre: float,
             dots: bool = False) -> list[tuple[float, float]]:
    """A column of neurons at x (with a vertical ellipsis in the middle when dots); returns their centres."""
    f, e = colors(kind)
    slots = n_shown + (1 if dots else 0)
    ys = [centre + (slots - 1) / 2 * gap - k * gap for k in range(slots)]
    if dots:
        mid = ys.pop(n_shown // 2)
        text(ax, x, mid, "⋮", size=13, color=MUTED)
    for y in ys:
        ax.add_patch(Circle((x, y), 0.11, facecolor=f, edgecolor=e, lw=1.1, zorder=3))
    return [(x, y) for y in ys]


@figure("appendix_mlp", NB)
def mlp() -> Figure:
    """MLP(n_inputs=2, n_hidden=32, n_outputs=2): its layers, the shape between them, and 1,218 parameters."""
    fig, ax = canvas(9.0, 5.1)
    text(ax, 4.55, 4.85, "MLP(n_inputs=2, n_hidden=32, n_outputs=2)", mono=True, weight="bold", size=10)
    xs, mid_y = [1.0, 3.4, 5.9, 8.1], 2.3
    columns = [_neurons(ax, xs[0], 2, "embedding", centre=mid_y, gap=0.32),
               _neurons(ax, xs[1], 6, "embedding", dots=True, centre=mid_y, gap=0.32),
               _neurons(ax, xs[2], 6, "embedding", dots=True, centre=mid_y, gap=0.32),
               _neurons(ax, xs[3], 2, "logits", centre=mid_y, gap=0.32)]
    for a, b in zip(columns, columns[1:]):
        for p in a:
            for q in b:
                ax.plot([p[0] + 0.11, q[0] - 0.11], [p[1], q[1]], color="#C9C9C9", lw=0.6, zorder=1)
    layers = [("layers.0", "Linear(2, 32)", "32 x 2 + 32 = 96"),
              ("layers.2", "Linear(32, 32)", "32 x 32 + 32 = 1,056"),
              ("layers.4", "Linear(32, 2)", "2 x 32 + 2 = 66")]
    for (a, b), (name, label, count) in zip(zip(xs, xs[1:]), layers):
        mid = (a + b) / 2
        text(ax, mid, 4.38, name, mono=True, size=8.5, color=MUTED)
        box(ax, mid, 4.03, 1.55, 0.4, label, kind="layer", mono=True, size=9)
        text(ax, mid, 3.65, count, mono=True, size=8.5, color=MUTED)
    for x, name in [(xs[1], "layers.1"), (xs[2], "layers.3")]:
        box(ax, x, 0.92, 1.45, 0.32, f"{name}: ReLU", kind="op", mono=True, size=8.5)
    for x, shp in zip(xs, ["points (batch, 2)", "(batch, 32)", "(batch, 32)", "logits (batch, 2)"]):
        text(ax, x, 0.47, shp, mono=True, size=8.5)
    text(ax, 4.55, 0.13, "parameters: 96 + 1,056 + 66 = 1,218", size=9, weight="bold")
    return fig


@figure("appendix_dataloader", NB)
def dataloader() -> Figure:
    """ToyDataset -> DataLoader(batch_size=32, shuffle=True) -> 25 batches; the test loader's short last batch."""
    fig, ax = canvas(9.3, 4.6)
    # the dataset: indexable examples
    text(ax, 1.05, 4.35, "train_set", mono=True, weight="bold")
    text(ax, 1.05, 4.08, "ToyDataset, len 800", size=8.5, color=MUTED)
    rows = ["0", "1", "2", "", "799"]
    for r, idx in enumerate(rows):
        y = 3.75 - r * 0.36
        if idx == "":
            text(ax, 1.05, y - 0.17, "⋮", size=12, color=MUTED)
            continue
        text(ax, 0.4, y - 0.17, idx, mono=True, size=8.5, color=MUTED, ha="right")
        cells(ax, 0.5, y, ["", ""], cell_w=0.4, cell_h=0.32, kind="embedding")
        cells(ax, 1.35, y, [""], cell_w=0.35, cell_h=0.32, kind="id")
    text(ax, 0.9, 1.72, "features[i]", mono=True, size=8, color=MUTED)
    text(ax, 1.55, 1.45, "labels[i]", mono=True, size=8, color=MUTED)
    # the loader
    box(ax, 3.85, 3.05, 2.5, 1.25, "", kind="op")
    text(ax, 3.85, 3.45, "DataLoader", mono=True, weight="bold", size=9.5)
    for k, line in enumerate(["batch_size=32", "shuffle=True", "generator: seed 123"]):
        text(ax, 3.85, 3.15 - k * 0.25, line, mono=True, size=8.5)
    arrow(ax, (1.85, 3.05), (2.55, 3.05))
    text(ax, 3.85, 2.1, "batch 1 of epoch 1 holds examples", size=8.5, color=MUTED)
    text(ax, 3.85, 1.83, ", ".join(str(i) for i in FIRST_BATCH_INDICES) + ", ...", mono=True, size=8.5)
    text(ax, 3.85, 1.56, "a new shuffle every epoch", size=8.5, color=MUTED)
    # the batches
    bx = [5.95, 6.95, 8.35]
    for k, (x, name) in enumerate(zip(bx, ["batch 1", "batch 2", "batch 25"])):
        if k == 2:
            text(ax, (bx[1] + bx[2]) / 2 + 0.05, 3.05, "...", size=13, color=MUTED)
        text(ax, x + 0.25, 4.1, name, size=8.5)
        ax.add_patch(Rectangle((x, 2.3), 0.36, 1.6, facecolor=GREEN[0], edgecolor=GREEN[1], lw=1.0))
        ax.add_patch(Rectangle((x + 0.42, 2.3), 0.18, 1.6, facecolor=GREY[0], edgecolor=GREY[1], lw=1.0))
    arrow(ax, (5.1, 3.05), (5.9, 3.05))
    text(ax, 6.3, 2.1, "xb (32, 2)", mono=True, size=8.5, ha="left")
    text(ax, 6.3, 1.83, "yb (32,)", mono=True, size=8.5, ha="left")
    text(ax, 6.3, 1.56, "800 / 32 = 25 full batches", size=8.5, color=MUTED, ha="left")
    # the test loader: no shuffle, a shorter last batch
    region(ax, 0.15, 0.15, 9.15, 1.2, "", kind="neutral")
    text(ax, 0.3, 0.88, "test_loader = DataLoader(test_set, batch_size=256)", mono=True, size=8.5, ha="left")
    text(ax, 0.3, 0.5, "400 examples in order (shuffle=False);\ndrop_last=False keeps the short last batch",
         size=8.5, color=MUTED, ha="left")
    x0, scale = 5.25, 3.7 / 400
    for n, lab in [(256, "256"), (144, "144")]:
        ax.add_patch(Rectangle((x0, 0.45), n * scale, 0.42, facecolor=GREEN[0], edgecolor=GREEN[1], lw=1.0))
        text(ax, x0 + n * scale / 2, 0.66, f"batch of {lab}", size=8.5)
        x0 += n * scale + 0.05
    return fig


@figure("appendix_training_loop", NB)
def training_loop() -> Figure:
    """One training step as a loop: batch, forward, loss, zero_grad, backward, step, next batch."""
    fig, ax = canvas(9.0, 4.1)
    top, bottom, h = 3.2, 1.2, 0.62
    steps_top = [(0.98, 1.75, "for features, labels\nin loader", "op"), (3.33, 1.15, ".to(device)", "op"),
                 (5.3, 1.4, "model(features)", "layer"), (7.65, 1.75, "F.cross_entropy(\nlogits, labels)", "loss")]
    for x, w, label, kind in steps_top:
        box(ax, x, top, w, h, label, kind=kind, mono=True, size=8.5)
    arrows = [("(batch, 2)\n(batch,)", 0, 1), ("", 1, 2), ("(batch, 2)", 2, 3)]
    for label, a, b in arrows:
        start = steps_top[a][0] + steps_top[a][1] / 2
        end = steps_top[b][0] - steps_top[b][1] / 2
        arrow(ax, (start, top), (end, top), label, label_side="above")
    steps_bottom = [(7.45, "optimizer.zero_grad()", "every p.grad = None\n(else they accumulate)"),
                    (4.55, "loss.backward()", "fills p.grad for\nevery parameter p"),
                    (1.6, "optimizer.step()", "updates every p\nfrom its p.grad (Adam)")]
    for x, label, note in steps_bottom:
        box(ax, x, bottom, 2.2, 0.48, label, kind="trainable", mono=True, size=8.5)
        text(ax, x, bottom - 0.6, note, size=8.5, color=MUTED)
    arrow(ax, (7.65, top - h / 2), (7.65, bottom + 0.24), "loss ()")
    for a, b in [(0, 1), (1, 2)]:
        arrow(ax, (steps_bottom[a][0] - 1.1, bottom), (steps_bottom[b][0] + 1.1, bottom))
    arrow(ax, (0.98, bottom + 0.24), (0.98, top - h / 2), "next batch", label_side="right")
    text(ax, 4.4, 2.2, "one step per batch: 25 steps per epoch (800 / 32)", size=9, color=MUTED)
    text(ax, 4.4, 3.9, "the five lines of train_epoch, repeated for every batch", size=10, weight="bold")
    return fig


@figure("appendix_ddp", NB)
def ddp() -> Figure:
    """DDP with two processes: one shuffle split into two shards, two replicas, gradients averaged by all-reduce."""
    fig, ax = canvas(9.2, 6.35)
    text(ax, 4.6, 6.1, "DistributedSampler, epoch 0: one shuffle of the 1,000 training examples, the same on "
         "both ranks", size=9)
    cw, shard_fill = 0.62, [YELLOW[0], TEAL[0]]
    x0 = 4.6 - (len(DDP_SHUFFLE) + 1) * cw / 2
    fills = [shard_fill[k % 2] for k in range(len(DDP_SHUFFLE))] + ["white"]
    cells(ax, x0, 5.85, [str(i) for i in DDP_SHUFFLE] + ["..."], cell_w=cw, cell_h=0.34, kind="id", fills=fills)
    for cx, r in [(2.3, 0), (6.9, 1)]:
        region(ax, cx - 2.15, 0.7, cx + 2.15, 4.95, f"rank {r}: cpu or cuda:{r}", kind="neutral")
        arrow(ax, (4.6 + (r - 0.5) * 1.6, 5.45), (cx, 4.62), f"positions {r}, {r + 2}, {r + 4}, ...",
              label_side="left" if r == 0 else "right", label_offset=0.2)
        shard = DDP_SHUFFLE[r::2]
        box(ax, cx, 4.4, 3.1, 0.4, "shard: " + ", ".join(str(i) for i in shard) + ", ... (500)", kind="id",
            mono=True, size=8.5, fill=shard_fill[r])
        arrow(ax, (cx, 4.2), (cx, 3.83), "batches of 32", size=8)
        box(ax, cx, 3.55, 3.1, 0.55, f"DDP(MLP): replica {r}\nsame weights as the other rank", kind="layer",
            size=8.5)
        arrow(ax, (cx, 3.27), (cx, 2.96), "forward, loss, backward()", size=8)
        box(ax, cx, 2.75, 2.2, 0.42, f"local gradients g{r}", kind="trainable", size=9)
        arrow(ax, (cx, 2.54), (cx, 2.2), color=BACKWARD, dashed=True)
        arrow(ax, (cx, 1.8), (cx, 1.43), "same averaged gradient", size=8, color=BACKWARD, dashed=True)
        box(ax, cx, 1.2, 2.2, 0.45, "optimizer.step()", kind="trainable", mono=True, size=8.5)
    box(ax, 4.6, 2.0, 8.2, 0.4, "all-reduce during backward(): each rank gets (g0 + g1) / 2", kind="op", size=9)
    text(ax, 4.6, 0.42, "same start, same averaged gradient, same step: the replicas stay identical", size=9)
    text(ax, 4.6, 0.13, "one process per device, started by torchrun; gloo on CPUs, NCCL on GPUs", size=8.5,
         color=MUTED)
    return fig
