"""Concept diagrams for chapter 3 (ch03_attention/ch03.ipynb): from dot products to multi-head attention.

Every number in these figures is computed here from the notebook's own inputs, seeds and formulas
(the six 3-d word vectors of "Cats chase small mice at night", `torch.manual_seed(123)`), so it is
the number the notebook prints. Two exceptions: the line widths in the history figure are
illustrative, and the sqrt(d_k) figure shows its own seeded draw of one query and eight keys.
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import figure
from .style import (DIVERGING, GREEN, GREY, HEAT, INK, MONO, MUTED, ORANGE, RED, SMALL, arrow, box, brace, canvas,
                    cells, matrix, region, shape, text)

NB = "ch03_attention/ch03.ipynb"
WORDS = ["Cats", "chase", "small", "mice", "at", "night"]
INPUTS = [
    [0.72, 0.10, 0.55],  # Cats
    [0.20, 0.85, 0.30],  # chase
    [0.15, 0.30, 0.90],  # small
    [0.80, 0.15, 0.60],  # mice
    [0.05, 0.40, 0.10],  # at
    [0.35, 0.60, 0.70],  # night
]
QUERY_IDX = 3  # 'mice', the query of sections 3.2 and 3.3.1


# ---------------------------------------------------------------------------------------------
# The notebook's computations, repeated here so the figures show the numbers it prints
# ---------------------------------------------------------------------------------------------

def _inputs() -> torch.Tensor:
    """The notebook's `inputs`, (tokens, 3)."""
    return torch.tensor(INPUTS)


def _toy_projections() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of section 3.4: the weights of `sa_param` (seed 123, randn / sqrt(d_in)) applied to `inputs`."""
    x = _inputs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        w_q, w_k, w_v = (torch.randn(3, 2) / 3**0.5 for _ in range(3))
    return x @ w_q, x @ w_k, x @ w_v


def _causal_scores() -> torch.Tensor:
    """`scores = q @ k.T / d_out**0.5` of section 3.4, (tokens, tokens)."""
    q, k, _ = _toy_projections()
    return q @ k.T / 2**0.5


def _allowed(n: int) -> torch.Tensor:
    """True on and below the diagonal, like the notebook's `allowed`."""
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


def _fmt_rows(t: torch.Tensor) -> list[list[float]]:
    """A 2-d tensor as nested Python floats, for `matrix`."""
    return [[float(v) for v in row] for row in t]


# ---------------------------------------------------------------------------------------------
# Small private drawing helpers
# ---------------------------------------------------------------------------------------------

def _outline(ax, left: float, bottom: float, right: float, top: float, color: str = ORANGE[1],
             lw: float = 2.0) -> None:
    """A coloured frame (no fill) that highlights part of a grid."""
    ax.add_patch(Rectangle((left, bottom), right - left, top - bottom, fill=False, edgecolor=color,
                           linewidth=lw, zorder=4))


def _grid(ax, x: float, y: float, values, *, kind: str = "embedding", cell_w: float = 0.42,
          cell_h: float = 0.3, fmt: str = "{:.2f}", fills=None) -> tuple[float, float, float, float]:
    """A 2-d grid of labelled cells of one kind (rows of `cells`); returns (left, bottom, right, top)."""
    for i, row in enumerate(values):
        cells(ax, x, y - i * cell_h, [fmt.format(v) if fmt else "" for v in row], cell_w=cell_w,
              cell_h=cell_h, kind=kind, size=SMALL - 1, fills=fills[i] if fills else None)
    return x, y - len(values) * cell_h, x + len(values[0]) * cell_w, y


def _bars(ax, x: float, base: float, values, *, scale: float, width: float = 0.34, gap: float = 0.08,
          color: str = ORANGE[1], fill: str = ORANGE[0], fmt: str = "{:.2f}") -> None:
    """Vertical bars from a baseline at height `base` (value * scale inches), each with its value."""
    step = width + gap
    ax.plot([x - gap, x + len(values) * step], [base, base], color=MUTED, lw=0.8, zorder=3)
    for i, v in enumerate(values):
        left = x + i * step
        ax.add_patch(Rectangle((left, min(base, base + v * scale)), width, abs(v) * scale,
                               facecolor=fill, edgecolor=color, linewidth=1.0, zorder=2))
        y_lab = base + v * scale + (0.05 if v >= 0 else -0.05)
        text(ax, left + width / 2, y_lab, fmt.format(v), mono=True, size=SMALL - 1,
             va="bottom" if v >= 0 else "top")


# ---------------------------------------------------------------------------------------------
# 3.1 Why attention
# ---------------------------------------------------------------------------------------------

@figure("ch03_bottleneck_vs_attention", NB)
def bottleneck_vs_attention() -> Figure:
    """An RNN encoder-decoder squeezes the sentence into one vector; attention looks back at every position."""
    fig, ax = canvas(9.0, 6.0)
    german = ["Katzen", "jagen", "nachts", "kleine", "Mäuse"]
    enc_x = [0.5 + 0.68 * i for i in range(6)]

    # Top: the bottleneck.
    text(ax, 0.15, 5.8, "Before attention: an RNN encoder-decoder", ha="left", weight="bold")
    for i, (x, w) in enumerate(zip(enc_x, WORDS)):
        box(ax, x, 3.55, 0.62, 0.32, w, kind="token", mono=True, size=SMALL)
        arrow(ax, (x, 3.72), (x, 4.08))
        box(ax, x, 4.3, 0.5, 0.4, "RNN", kind="layer", size=SMALL)
        if i:
            arrow(ax, (enc_x[i - 1] + 0.25, 4.3), (x - 0.25, 4.3))
    cells(ax, 4.42, 4.75, [""] * 4, cell_w=0.26, cell_h=0.22, kind="embedding", vertical=True)
    _outline(ax, 4.4, 3.85, 4.7, 4.77, color=RED[1])
    arrow(ax, (enc_x[-1] + 0.25, 4.3), (4.4, 4.3))
    text(ax, 4.4, 3.62, "one fixed-size vector\ncarries the whole sentence", size=SMALL, color=RED[1],
         ha="left", va="top")
    dec_x = [5.3 + 0.72 * j for j in range(5)]
    arrow(ax, (4.7, 4.3), (dec_x[0] - 0.25, 4.3))
    for j, (x, w) in enumerate(zip(dec_x, german)):
        box(ax, x, 4.3, 0.5, 0.4, "RNN", kind="layer", size=SMALL)
        arrow(ax, (x, 4.5), (x, 4.86))
        box(ax, x, 5.05, 0.66, 0.32, w, kind="token", mono=True, size=SMALL)
        if j:
            arrow(ax, (dec_x[j - 1] + 0.25, 4.3), (x - 0.25, 4.3))
    text(ax, enc_x[0] - 0.3, 3.15, "encoder: reads the input, one word at a time", size=SMALL, color=MUTED,
         ha="left")
    text(ax, dec_x[0] - 0.33, 5.5, "decoder: writes the translation from that vector", size=SMALL,
         color=MUTED, ha="left")
    ax.plot([0.15, 8.85], [2.85, 2.85], color="#CCCCCC", lw=1.0)

    # Bottom left: the decoder attends to every encoder state (Bahdanau et al. 2014).
    text(ax, 0.15, 2.62, "Attention (2014): look back at every input", ha="left", weight="bold")
    weights = [0.06, 0.04, 0.22, 0.58, 0.03, 0.07]  # illustrative; they sum to 1
    query = (2.2, 1.95)
    for x, w, a in zip(enc_x, WORDS, weights):
        box(ax, x, 0.35, 0.62, 0.32, w, kind="token", mono=True, size=SMALL)
        arrow(ax, (x, 0.52), (x, 0.8))
        box(ax, x, 0.98, 0.36, 0.32, "", kind="embedding")
        arrow(ax, (x, 1.16), (query[0] + (x - query[0]) * 0.25, query[1] - 0.2), color=ORANGE[1],
              lw=0.6 + 7 * a, head=False)
    box(ax, *query, 1.9, 0.4, "decoder step: 'Mäuse'", kind="query", size=SMALL)
    text(ax, 4.15, 1.45, "one state per input word;\nline width = attention\nweight (illustrative)",
         size=SMALL, color=MUTED, ha="left")

    # Bottom right: self-attention, every position looks at every position of the same sentence.
    text(ax, 6.0, 2.62, "Self-attention (2017)", ha="left", weight="bold")
    text(ax, 6.0, 2.3, "every token looks at every token\nof the same sequence, in one step", size=SMALL,
         color=MUTED, ha="left", va="top")
    sx = [6.1 + 0.5 * i for i in range(6)]
    for i, x0 in enumerate(sx):
        for x1 in sx:
            mine = i == QUERY_IDX
            arrow(ax, (x0, 0.6), (x1, 1.45), color=ORANGE[1] if mine else "#C8C8C8", lw=1.2 if mine else 0.6,
                  head=False)
    for i, (x, w) in enumerate(zip(sx, WORDS)):
        for y in (0.45, 1.6):
            box(ax, x, y, 0.46, 0.3, w, kind="query" if (i == QUERY_IDX and y < 1) else "token", mono=True,
                size=SMALL)
    return fig


# ---------------------------------------------------------------------------------------------
# 3.2 Attention without trainable weights
# ---------------------------------------------------------------------------------------------

@figure("ch03_one_query_context", NB)
def one_query_context() -> Figure:
    """For the query 'mice': dot-product scores, softmax weights, and the weighted sum that is its context vector."""
    x = _inputs()
    query = x[QUERY_IDX]
    scores = x @ query
    weights = torch.softmax(scores, dim=0)
    context = weights @ x

    fig, ax = canvas(9.4, 4.9)
    cw, top, step = 0.46, 3.55, 0.5
    ys = [top - i * step for i in range(len(WORDS))]
    text(ax, 1.55, 4.62, "inputs[i]", mono=True, weight="bold")
    text(ax, 3.55, 4.62, "scores[i]", mono=True, weight="bold")
    text(ax, 3.55, 4.35, "= query · inputs[i]", mono=True, size=SMALL, color=MUTED)
    text(ax, 5.35, 4.62, "weights[i]", mono=True, weight="bold")
    text(ax, 5.35, 4.35, "softmax over all 6", size=SMALL, color=MUTED)
    text(ax, 8.24, 4.62, "context", mono=True, weight="bold")
    text(ax, 8.24, 4.35, "= Σ weights[i] · inputs[i]", mono=True, size=SMALL, color=MUTED)

    cells(ax, 0.85, 4.5, [f"{v:.2f}" for v in query], cell_w=cw, cell_h=0.3, kind="query", size=SMALL - 1)
    text(ax, 0.75, 4.35, "query", mono=True, size=SMALL, ha="right", color=ORANGE[1], weight="bold")
    for i, (w, y) in enumerate(zip(WORDS, ys)):
        text(ax, 0.75, y, w, mono=True, size=SMALL, ha="right")
        cells(ax, 0.85, y + 0.15, [f"{v:.2f}" for v in x[i]], cell_w=cw, cell_h=0.3, kind="embedding",
              size=SMALL - 1)
        arrow(ax, (2.3, y), (3.0, y))
        box(ax, 3.55, y, 0.95, 0.32, f"{scores[i]:.4f}", kind="op", mono=True, size=SMALL)
        box(ax, 5.35, y, 0.95, 0.32, f"{weights[i]:.4f}", mono=True, size=SMALL, kind="op")
        ax.add_patch(Rectangle((5.9, y - 0.09), float(weights[i]) * 3, 0.18, facecolor=HEAT(0.45),
                               edgecolor=ORANGE[1], lw=0.8, zorder=2))
        arrow(ax, (6.68, y), (6.83, ys[2] - step / 2), color=MUTED, lw=0.8, head=False)
    _outline(ax, 0.85, ys[QUERY_IDX] - 0.15, 0.85 + 3 * cw, ys[QUERY_IDX] + 0.15)
    brace(ax, 5.9, 6.5, 0.45, "bar length = weight", below=True, mono=False)
    arrow(ax, (4.1, ys[2] - step / 2), (4.8, ys[2] - step / 2), "softmax", label_side="above")
    box(ax, 7.0, ys[2] - step / 2, 0.34, 0.34, "Σ", kind="op", weight="bold")
    arrow(ax, (7.18, ys[2] - step / 2), (7.38, ys[2] - step / 2))
    cells(ax, 7.4, ys[2] - step / 2 + 0.15, [f"{v:.4f}" for v in context], cell_w=0.56, cell_h=0.3,
          kind="embedding", size=SMALL - 1)
    text(ax, 8.24, ys[2] - step / 2 - 0.35, f"the context vector of\n'{WORDS[QUERY_IDX]}', shape (3,)", mono=True,
         size=SMALL, color=MUTED, va="top")
    text(ax, 0.15, 0.2, f"weights sum to {weights.sum():.4f}; the largest goes to 'mice' itself and to 'Cats'",
         size=SMALL, color=MUTED, ha="left")
    return fig


@figure("ch03_attention_as_matrices", NB)
def attention_as_matrices() -> Figure:
    """All queries at once: scores = inputs @ inputs.T, a row-wise softmax, then weights @ inputs."""
    x = _inputs()
    scores = x @ x.T
    weights = torch.softmax(scores, dim=-1)
    contexts = weights @ x

    fig, ax = canvas(9.3, 4.3)
    c, top = 0.36, 3.2
    mats = [
        (0.75, _fmt_rows(scores), "scores_mat", "inputs @ inputs.T", shape(6, 6)),
        (3.85, _fmt_rows(weights), "weights_mat", "softmax(dim=-1)", shape(6, 6)),
    ]
    for left, vals, name, how, shp in mats:
        matrix(ax, left, top, vals, cell=c, vmax=1.1 if name == "scores_mat" else 0.3,
               row_labels=WORDS if left < 1 else None, col_labels=WORDS, col_label_rotation=45)
        mid = left + 3 * c
        text(ax, mid, 0.8, name, mono=True, weight="bold")
        text(ax, mid, 0.5, f"{how}  {shp}", mono=True, size=SMALL, color=MUTED)
        _outline(ax, left, top - 4 * c, left + 6 * c, top - 3 * c)
    arrow(ax, (3.0, top - 3 * c), (3.75, top - 3 * c), "softmax", label_side="above")
    text(ax, 3.37, top - 3 * c - 0.12, "each row", size=SMALL, color=MUTED, va="top")
    text(ax, 6.3, top - 3 * c, "@", mono=True, weight="bold", size=13)
    for left, vals, name, shp in [(6.5, x.tolist(), "inputs", shape(6, 3)),
                                  (8.0, contexts.tolist(), "contexts_mat", shape(6, 3))]:
        _grid(ax, left, top, vals, cell_w=c, cell_h=c)
        _outline(ax, left, top - 4 * c, left + 3 * c, top - 3 * c)
        text(ax, left + 1.5 * c, 0.8, name, mono=True, weight="bold")
        text(ax, left + 1.5 * c, 0.5, shp, mono=True, size=SMALL, color=MUTED)
    text(ax, 7.79, top - 3 * c, "=", mono=True, weight="bold", size=13)
    text(ax, 0.15, 4.1, "Row i of each matrix belongs to query i; the framed row is 'mice', the query "
         "of sections 3.2.1 to 3.2.3", size=SMALL, color=MUTED, ha="left", va="top")
    return fig


# ---------------------------------------------------------------------------------------------
# 3.3 Trainable weights and the sqrt(d_k) scaling
# ---------------------------------------------------------------------------------------------

@figure("ch03_qkv_self_attention", NB)
def qkv_self_attention() -> Figure:
    """Self-attention with trainable weights: x -> q, k, v through W_q, W_k, W_v, then scores, softmax, w @ v."""
    fig, ax = canvas(7.8, 6.7)
    box(ax, 3.5, 6.3, 1.1, 0.45, "x", kind="embedding", mono=True, weight="bold")
    text(ax, 4.15, 6.3, shape("tokens", "d_in"), mono=True, size=SMALL, color=MUTED, ha="left")
    cols = [(1.6, "q", "W_q", "query"), (3.5, "k", "W_k", "key"), (5.7, "v", "W_v", "value")]
    for cx, name, weight, kind in cols:
        arrow(ax, (3.5, 6.07), (cx, 5.57))
        box(ax, cx, 5.3, 1.55, 0.5, f"{weight} {shape('d_in', 'd_out')}", kind="layer", mono=True, size=SMALL)
        arrow(ax, (cx, 5.05), (cx, 4.55), shape("tokens", "d_out"))
        box(ax, cx, 4.35, 0.8, 0.38, name, kind=kind, mono=True, weight="bold")
    chain = [(3.4, "q @ k.T"), (2.5, "/ sqrt(d_k)"), (1.6, "softmax(dim=-1)"), (0.7, "w @ v")]
    for i, (y, label) in enumerate(chain):
        box(ax, 2.5, y, 1.65, 0.42, label, kind="op", mono=True, size=SMALL)
        if i:
            name = "w " if label == "w @ v" else ""
            arrow(ax, (2.5, chain[i - 1][0] - 0.21), (2.5, y + 0.21), name + shape("tokens", "tokens"))
    arrow(ax, (1.6, 4.16), (2.2, 3.61))
    arrow(ax, (3.5, 4.16), (2.8, 3.61))
    ax.plot([5.7, 5.7], [4.16, 0.7], color=INK, lw=1.3, zorder=3)
    arrow(ax, (5.7, 0.7), (3.33, 0.7))
    arrow(ax, (1.67, 0.7), (0.95, 0.7))
    box(ax, 0.55, 0.7, 0.7, 0.38, "z", kind="embedding", mono=True, weight="bold")
    text(ax, 0.2, 0.3, "context vectors " + shape("tokens", "d_out"), mono=True, size=SMALL, color=MUTED,
         ha="left")
    text(ax, 3.4, 2.5, "d_k = k.shape[-1] = d_out\n(why: section 3.3.3)", size=SMALL, color=MUTED, ha="left")
    text(ax, 3.4, 1.6, "each row (one query)\nsums to 1 over the keys", size=SMALL, color=MUTED, ha="left")
    text(ax, 3.4, 3.4, "scores[i, j] = q[i] · k[j]", size=SMALL, color=MUTED, ha="left")
    text(ax, 6.3, 6.45, "in this section:\ntokens = 6\nd_in = 3\nd_out = 2", mono=True, size=SMALL, ha="left",
         va="top", color=MUTED)
    return fig


@figure("ch03_scaled_scores", NB)
def scaled_scores() -> Figure:
    """One query and eight keys with d_k = 64: raw dot products saturate the softmax, scaled ones do not."""
    d_k = 64
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        q, k = torch.randn(d_k), torch.randn(8, d_k)
    raw, root = k @ q, d_k**0.5
    scaled = raw / root
    rows = [(2.85, raw, f"raw scores q · k_j  (std {raw.std():.1f})"),
            (0.55, scaled, f"scaled: q · k_j / sqrt(d_k), sqrt({d_k}) = {root:.0f}  (std {scaled.std():.1f})")]
    fig, ax = canvas(9.0, 4.85)
    text(ax, 2.35, 4.65, f"scores of one query with 8 keys, d_k = {d_k}", weight="bold")
    text(ax, 6.95, 4.65, "softmax weights", weight="bold")
    for (base, scores, title), top in zip(rows, (4.3, 1.7)):
        text(ax, 0.2, top, title, mono=True, size=SMALL, ha="left")
        _bars(ax, 0.6, base, scores.tolist(), scale=0.06, fmt="{:.1f}", color=GREY[1], fill=GREY[0])
        arrow(ax, (4.35, base + 0.35), (5.05, base + 0.35), "softmax", label_side="above")
        weights = torch.softmax(scores, dim=0)
        _bars(ax, 5.3, base, weights.tolist(), scale=1.1, fmt="{:.2f}", color=ORANGE[1], fill=HEAT(0.45))
    text(ax, 8.9, 4.3, "almost one-hot:\nan arg-max", size=SMALL, color=RED[1], ha="right", va="top")
    text(ax, 8.9, 1.7, "soft: every key\nkeeps some weight", size=SMALL, color=GREEN[1], ha="right",
         va="top")
    ax.plot([0.15, 8.85], [1.95, 1.95], color="#CCCCCC", lw=1.0)
    return fig


# ---------------------------------------------------------------------------------------------
# 3.4 Causal attention and dropout
# ---------------------------------------------------------------------------------------------

def _cell_marks(ax, x: float, top: float, cell: float, where, label: str, *, fill: str, edge: str,
                color: str = INK) -> None:
    """Cover the grid cells (i, j) where `where[i][j]` is True with a plain cell that shows `label`."""
    for i, row in enumerate(where):
        for j, hit in enumerate(row):
            if hit:
                left, bottom = x + j * cell, top - (i + 1) * cell
                ax.add_patch(Rectangle((left, bottom), cell, cell, facecolor=fill, edgecolor=edge,
                                       linewidth=0.6, zorder=6))
                ax.text(left + cell / 2, bottom + cell / 2, label, ha="center", va="center", family=MONO,
                        fontsize=SMALL - 1, color=color, zorder=7)


@figure("ch03_causal_mask", NB)
def causal_mask_grid() -> Figure:
    """Which entries causal attention masks: query i may look at keys 0..i, never at a later token."""
    n, c, x0, top = len(WORDS), 0.45, 1.3, 3.55
    future = (~_allowed(n)).tolist()
    fig, ax = canvas(9.0, 4.5)
    matrix(ax, x0, top, [[0.18] * n] * n, cell=c, fmt=None, masked=future, row_labels=WORDS,
           col_labels=WORDS, size=SMALL)
    for i in range(n):
        for j in range(i + 1):
            text(ax, x0 + (j + 0.5) * c, top - (i + 0.5) * c, "1", mono=True, size=SMALL)
    text(ax, x0 + 3 * c, 4.05, "keys j: the tokens looked at", size=SMALL, color=MUTED)
    text(ax, 0.4, top - 3 * c, "queries i: the tokens looking", size=SMALL, color=MUTED, rotation=90)
    _outline(ax, x0, top - 4 * c, x0 + 4 * c, top - 3 * c)
    text(ax, x0 + 3 * c, top - n * c - 0.25, "'mice' (i = 3) sees Cats, chase, small and itself",
         size=SMALL, color=ORANGE[1], va="top")

    lx = 4.6
    ax.add_patch(Rectangle((lx, 3.3), 0.3, 0.3, facecolor=HEAT(0.18), edgecolor="#BBBBBB", lw=0.6))
    text(ax, lx + 0.45, 3.45, "key j ≤ query i: allowed (1)", size=SMALL, ha="left")
    ax.add_patch(Rectangle((lx, 2.8), 0.3, 0.3, facecolor=RED[0], edgecolor=RED[1], hatch="///", lw=0.6))
    text(ax, lx + 0.45, 2.95, "key j > query i: the future, masked (0)", size=SMALL, ha="left")
    code = [
        (2.3, "allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))", INK),
        (2.05, "True on and below the diagonal (section 3.4)", MUTED),
        (1.55, "causal_mask(context_length)  # torch.triu(..., diagonal=1)", INK),
        (1.2, "True above the diagonal: the entries that\nmasked_fill sets to -inf (section 3.5)", MUTED),
    ]
    for y, s, col in code:
        text(ax, lx, y, s, mono=col == INK, size=SMALL, color=col, ha="left")
    return fig


@figure("ch03_mask_two_ways", NB)
def mask_two_ways() -> Figure:
    """Way B (-inf, then softmax) and Way A (softmax, zero, renormalise) give the same causal weights."""
    scores = _causal_scores()
    allowed = _allowed(len(WORDS))
    future = (~allowed).tolist()
    zeroed = torch.softmax(scores, dim=-1) * allowed
    w_a = zeroed / zeroed.sum(dim=-1, keepdim=True)
    w_b = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    assert torch.allclose(w_a, w_b)

    fig, ax = canvas(9.5, 7.0)
    c = 0.36
    side = 6 * c
    col2, col3 = 3.55, 7.22
    s_top = 4.5
    matrix(ax, 0.7, s_top, _fmt_rows(scores), cell=c, cmap=DIVERGING, vmin=-0.2, vmax=0.2, row_labels=WORDS)
    text(ax, 0.7 + side / 2, s_top + 0.2, "scores", mono=True, weight="bold")
    text(ax, 0.7 + side / 2, s_top - side - 0.2, shape("tokens", "tokens"), mono=True, size=SMALL,
         color=MUTED)

    # Way B, top row.
    b_top = 6.1
    text(ax, col2, 6.75, "Way B: -inf before the softmax (what the modules do)", ha="left", weight="bold")
    matrix(ax, col2, b_top, _fmt_rows(scores), cell=c, cmap=DIVERGING, vmin=-0.2, vmax=0.2, masked=future)
    _cell_marks(ax, col2, b_top, c, future, "-inf", fill=RED[0], edge=RED[1], color=RED[1])
    text(ax, col2 + side / 2, b_top + 0.2, "scores.masked_fill(~allowed, -inf)", mono=True, size=SMALL)
    arrow(ax, (col2 + side + 0.1, b_top - 3 * c), (col3 - 0.1, b_top - 3 * c), "softmax(dim=-1)",
          label_side="above")
    text(ax, (col2 + side + col3) / 2, b_top - 3 * c - 0.12, "exp(-inf) = 0", size=SMALL, color=MUTED,
         va="top")
    matrix(ax, col3, b_top, _fmt_rows(w_b), cell=c, masked=future)
    text(ax, col3 + side / 2, b_top + 0.2, "w_b", mono=True, weight="bold")

    # Way A, bottom row.
    a_top = 2.9
    text(ax, col2, 3.55, "Way A: softmax, zero the future, renormalise", ha="left", weight="bold")
    matrix(ax, col2, a_top, _fmt_rows(zeroed), cell=c, masked=future)
    text(ax, col2 + side / 2, a_top + 0.2, "softmax(scores) * allowed", mono=True, size=SMALL)
    sums = zeroed.sum(dim=-1)
    cells(ax, col2 + side + 0.1, a_top, [f"{v:.2f}" for v in sums], cell_w=0.44, cell_h=c, kind="op",
          vertical=True, size=SMALL - 1)
    text(ax, col2 + side + 0.32, a_top + 0.2, "row sum", size=SMALL, color=MUTED)
    arrow(ax, (col2 + side + 0.6, a_top - 3 * c), (col3 - 0.1, a_top - 3 * c), "/ row sum",
          label_side="above")
    matrix(ax, col3, a_top, _fmt_rows(w_a), cell=c, masked=future)
    text(ax, col3 + side / 2, a_top + 0.2, "w_a", mono=True, weight="bold")

    for y_from, y_to in [(s_top - 2 * c, b_top - 3 * c), (s_top - 4 * c, a_top - 3 * c)]:
        arrow(ax, (0.7 + side + 0.08, y_from), (col2 - 0.1, y_to))
    text(ax, col3 + side / 2, 0.4, f"w_a == w_b  (up to {(w_a - w_b).abs().max():.0e})", mono=True,
         size=SMALL, color=GREEN[1])
    return fig


@figure("ch03_dropout_weights", NB)
def dropout_weights() -> Figure:
    """Dropout on the causal weights: dropped entries become 0, survivors are scaled by 1 / (1 - p) = 2."""
    allowed = _allowed(len(WORDS))
    future = (~allowed).tolist()
    w_b = torch.softmax(_causal_scores().masked_fill(~allowed, float("-inf")), dim=-1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        dropped = torch.nn.Dropout(p=0.5)(w_b)
    was_dropped = ((dropped == 0) & allowed).tolist()

    fig, ax = canvas(9.2, 3.6)
    c, top = 0.36, 3.05
    side = 6 * c
    left2 = 4.35
    matrix(ax, 0.75, top, _fmt_rows(w_b), cell=c, vmax=2.0, masked=future, row_labels=WORDS)
    text(ax, 0.75 + side / 2, top + 0.25, "w_b", mono=True, weight="bold")
    arrow(ax, (0.75 + side + 0.15, top - 3 * c), (left2 - 0.15, top - 3 * c), "dropout(w_b)",
          label_side="above")
    text(ax, (0.75 + side + left2) / 2, top - 3 * c - 0.12, "p = 0.5, seed 123,\ntraining mode", size=SMALL,
         color=MUTED, va="top")
    matrix(ax, left2, top, _fmt_rows(dropped), cell=c, vmax=2.0, masked=future)
    _cell_marks(ax, left2, top, c, was_dropped, "0", fill=GREY[0], edge=GREY[1], color=MUTED)
    text(ax, left2 + side / 2, top + 0.25, "dropped", mono=True, weight="bold")
    cells(ax, left2 + side + 0.12, top, [f"{v:.2f}" for v in dropped.sum(dim=-1)], cell_w=0.48, cell_h=c,
          kind="op", vertical=True, size=SMALL - 1)
    text(ax, left2 + side + 0.36, top + 0.25, "row sum", size=SMALL, color=MUTED)

    lx, items = 7.35, [("", HEAT(0.5), "#BBBBBB", "kept: w / (1 - p)"),
                       ("0", GREY[0], GREY[1], "dropped: set to 0"),
                       ("", RED[0], RED[1], "future: already 0")]
    for k, (lab, fill, edge, desc) in enumerate(items):
        y = top - 0.35 - k * 0.5
        ax.add_patch(Rectangle((lx, y - 0.15), 0.3, 0.3, facecolor=fill, edgecolor=edge, lw=0.6,
                               hatch="///" if k == 2 else None))
        text(ax, lx + 0.15, y, lab, mono=True, size=SMALL - 1, color=MUTED)
        text(ax, lx + 0.42, y, desc, size=SMALL, ha="left")
    text(ax, 0.2, 0.3, "Rows no longer sum to 1, but the average over many draws is w_b again; "
         "after .eval(), dropout returns w_b unchanged.", size=SMALL, color=MUTED, ha="left")
    return fig


# ---------------------------------------------------------------------------------------------
# 3.6 Multi-head attention
# ---------------------------------------------------------------------------------------------

HEAD_FILLS = [ORANGE[0], HEAT(0.45)]  # head 0, head 1 of the demo (n_heads = 2)


def _head_rows(ax, x: float, top: float, features: list[int], *, cw: float, ch: float, row_gap: float = 0.0,
               gap_after: int | None = None, frame: str | None = None) -> float:
    """Six token rows of feature cells (labelled by feature index, coloured by head); returns the right edge.

    row_gap separates the rows and frame="rows" outlines each one (tokens as the outer axis);
    frame="block" outlines the whole block (one head as the outer axis).
    """
    head_dim = 2
    width = len(features) * cw + (0.12 if gap_after is not None else 0)
    for i in range(len(WORDS)):
        y = top - i * (ch + row_gap)
        for k, f in enumerate(features):
            left = x + k * cw + (0.12 if gap_after is not None and k > gap_after else 0)
            cells(ax, left, y, [str(f)], cell_w=cw, cell_h=ch, kind="query", fills=[HEAD_FILLS[f // head_dim]],
                  size=SMALL - 0.5)
        if frame == "rows":
            _outline(ax, x - 0.04, y - ch - 0.025, x + width + 0.04, y + 0.025, color=MUTED, lw=1.0)
    if frame == "block":
        _outline(ax, x - 0.05, top - len(WORDS) * ch - 0.05, x + width + 0.05, top + 0.05, color=ORANGE[1],
                 lw=1.6)
    return x + width


@figure("ch03_split_merge_heads", NB)
def split_merge_heads() -> Figure:
    """split_heads: view the last dim as (n_heads, head_dim), move heads in front; merge_heads undoes it."""
    fig, ax = canvas(9.3, 4.9)
    cw, ch, top = 0.36, 0.3, 3.55
    bottom = top - len(WORDS) * ch - 0.3
    text(ax, 0.15, 4.7, "One sequence of the batch, with the demo's d_out = 4, n_heads = 2, head_dim = 2. "
         "Numbers are feature indices, colour = head.", size=SMALL, color=MUTED, ha="left")
    for i, w in enumerate(WORDS):
        text(ax, 0.85, top - (i + 0.5) * ch, w, mono=True, size=SMALL, ha="right")
        text(ax, 4.0, top - i * (ch + 0.06) - ch / 2, w, mono=True, size=SMALL, ha="right")
    p1, p2, heads_x = 0.95, 4.1, [7.0, 8.15]
    right1 = _head_rows(ax, p1, top, [0, 1, 2, 3], cw=cw, ch=ch)
    right2 = _head_rows(ax, p2, top, [0, 1, 2, 3], cw=cw, ch=ch, gap_after=1, row_gap=0.06, frame="rows")
    for h, hx in enumerate(heads_x):
        _head_rows(ax, hx, top, [2 * h, 2 * h + 1], cw=cw, ch=ch, frame="block")
        text(ax, hx + cw, top + 0.22, f"head {h}", size=SMALL, weight="bold")
    for h in range(2):
        text(ax, p2 + (2 * h + 1) * cw + h * 0.12, top + 0.2, f"head {h}", size=SMALL, color=MUTED)
    brace(ax, p1, heads_x[1] + 2 * cw, 4.2, "split_heads", below=False, color=ORANGE[1])
    labels = [((p1 + right1) / 2, shape("batch", "tokens", "d_out"), "(2, 6, 4)"),
              ((p2 + right2) / 2, shape("batch", "tokens", "n_heads", "head_dim"), "(2, 6, 2, 2)"),
              ((heads_x[0] + heads_x[1] + 2 * cw) / 2, shape("batch", "n_heads", "tokens", "head_dim"),
               "(2, 2, 6, 2)")]
    for cx, shp, nums in labels:
        text(ax, cx, bottom - 0.22, shp, mono=True, size=SMALL, color=MUTED)
        text(ax, cx, bottom - 0.45, "= " + nums, mono=True, size=SMALL, color=MUTED)
    steps = [(right1 + 0.12, p2 - 0.55, ".view()", "split d_out"),
             (right2 + 0.12, heads_x[0] - 0.12, ".transpose(1, 2)", "heads to the front")]
    for x0, x1, op, note in steps:
        arrow(ax, (x0, top - 2.5 * ch), (x1, top - 2.5 * ch), op, label_side="above")
        text(ax, (x0 + x1) / 2, top - 2.5 * ch - 0.1, note, size=SMALL,
             color=MUTED, va="top")
    back_x, front_x = heads_x[1] + cw, p1 + 2 * cw
    ax.plot([back_x, back_x, front_x], [0.8, 0.45, 0.45], color=INK, lw=1.3, zorder=3)
    arrow(ax, (front_x, 0.45), (front_x, 0.8))
    text(ax, (back_x + front_x) / 2, 0.28, "merge_heads: .transpose(1, 2).contiguous().view(b, t, d_out)",
         mono=True, size=SMALL, va="top")
    return fig


@figure("ch03_heads_stacked", NB)
def heads_stacked() -> Figure:
    """The wrapper's per-head W_query weights, stacked, are the one W_query.weight of MultiHeadAttention."""
    fig, ax = canvas(9.0, 4.3)
    text(ax, 0.15, 4.1, "MultiHeadAttentionWrapper: a module per head", ha="left", weight="bold")
    box(ax, 0.45, 2.2, 0.5, 0.42, "x", kind="embedding", mono=True, weight="bold")
    for h, y in enumerate((3.05, 1.35)):
        arrow(ax, (0.7, 2.2), (1.05, y))
        box(ax, 1.95, y, 1.75, 0.6, f"heads[{h}]\nCausalAttention", kind="layer", mono=True, size=SMALL,
            fill=HEAD_FILLS[h], edge=ORANGE[1])
        arrow(ax, (2.83, y), (3.35, 2.2 + (0.12 if h == 0 else -0.12)))
    text(ax, 1.95, 2.2, "each: d_in -> head_dim", mono=True, size=SMALL, color=MUTED)
    box(ax, 3.8, 2.2, 0.95, 0.45, "torch.cat", kind="op", mono=True, size=SMALL)
    text(ax, 3.8, 1.82, "dim=-1", mono=True, size=SMALL, color=MUTED)
    text(ax, 2.3, 0.5, "outputs " + shape("batch", "tokens", "head_dim") + " each,\nconcatenated to "
         + shape("batch", "tokens", "d_out"), mono=True, size=SMALL, color=MUTED)
    ax.plot([4.6, 4.6], [0.25, 4.15], color="#CCCCCC", lw=1.0)

    text(ax, 4.8, 4.1, "MultiHeadAttention: one stacked weight", ha="left", weight="bold")
    c, gx, sx = 0.3, 5.3, 7.65
    for h, top in enumerate((3.45, 2.3)):
        _grid(ax, gx, top, [[0] * 3] * 2, cell_w=c, cell_h=c, kind="query", fmt="",
              fills=[[HEAD_FILLS[h]] * 3] * 2)
        text(ax, gx + 1.5 * c, top + 0.15, f"heads[{h}].W_query.weight", mono=True, size=SMALL)
        text(ax, gx + 1.5 * c, top - 2 * c - 0.15, shape("head_dim", "d_in"), mono=True, size=SMALL,
             color=MUTED)
    arrow(ax, (6.75, 2.45), (7.5, 2.45), "stack", label_side="above")
    fills = [[HEAD_FILLS[i // 2]] * 3 for i in range(4)]
    _grid(ax, sx, 3.05, [[0] * 3] * 4, cell_w=c, cell_h=c, kind="query", fmt="", fills=fills)
    _outline(ax, sx, 3.05 - 4 * c, sx + 3 * c, 3.05, color=ORANGE[1], lw=1.6)
    text(ax, sx + 1.5 * c, 3.25, "W_query.weight", mono=True, size=SMALL, weight="bold")
    text(ax, sx + 1.5 * c, 3.05 - 4 * c - 0.17, shape("d_out", "d_in"), mono=True, size=SMALL, color=MUTED)
    text(ax, 6.8, 0.5, "one projection for all heads; split_heads then\ncuts d_out back into heads "
         "(W_key, W_value alike)", size=SMALL, color=MUTED)
    return fig

def _stack(ax, x: float, y: float, w: float, h: float, label: str, kind: str, n: int = 3) -> None:
    """A box with n - 1 copies peeking out behind it: one tensor slice per head."""
    for k in reversed(range(n)):
        box(ax, x + 0.07 * k, y + 0.07 * k, w, h, label if k == 0 else "", kind=kind, mono=True, size=SMALL)


@figure("ch03_multihead_attention", NB)
def multihead_attention() -> Figure:
    """MultiHeadAttention.forward: project, split_heads, attend with every head at once, merge_heads, out_proj."""
    fig, ax = canvas(9.5, 9.2)
    cx = 3.0  # the column of the attention chain
    box(ax, 3.6, 8.8, 1.1, 0.42, "x", kind="embedding", mono=True, weight="bold")
    text(ax, 4.25, 8.8, shape("batch", "tokens", "d_in"), mono=True, size=SMALL, color=MUTED, ha="left")
    cols = [(1.3, "W_query", "queries", "query"), (3.6, "W_key", "keys", "key"), (6.5, "W_value", "values", "value")]
    for x, layer, name, kind in cols:
        arrow(ax, (3.6, 8.58), (x, 8.24))
        box(ax, x, 7.95, 1.9, 0.55, f"{layer}\nLinear(d_in, d_out)", kind="layer", mono=True, size=SMALL)
        arrow(ax, (x, 7.67), (x, 7.17), shape("batch", "tokens", "d_out"))
        box(ax, x, 6.95, 1.3, 0.4, "split_heads", kind="op", mono=True, size=SMALL)
        arrow(ax, (x, 6.75), (x, 6.42), shape("batch", "n_heads", "tokens", "head_dim") if kind == "value" else "")
        _stack(ax, x, 6.05, 1.1, 0.42, name, kind)
    region(ax, 0.75, 2.55, 6.2, 5.6, "attend: all heads at once", kind="op", label_pos="top-right")
    chain = [(5.0, "(queries / sqrt(head_dim)) @ keys.transpose(-2, -1)", "scores"),
             (3.95, "softmax(scores.masked_fill(mask, -inf), dim=-1)", "weights"),
             (2.9, "dropout(weights) @ values", "")]
    for i, (y, label, out) in enumerate(chain):
        box(ax, cx, y, 4.0 if i < 2 else 2.5, 0.45, label, kind="op", mono=True, size=SMALL)
        if out:
            arrow(ax, (cx, y - 0.23), (cx, chain[i + 1][0] + 0.23),
                  f"{out} " + shape("batch", "n_heads", "tokens", "tokens"))
    arrow(ax, (1.3, 5.82), (2.0, 5.23))
    arrow(ax, (3.6, 5.82), (3.4, 5.23))
    ax.plot([6.5, 6.5], [5.82, 2.9], color=INK, lw=1.3, zorder=3)
    arrow(ax, (6.5, 2.9), (cx + 1.26, 2.9))
    arrow(ax, (cx, 2.67), (cx, 2.12), "context " + shape("batch", "n_heads", "tokens", "head_dim"))
    box(ax, cx, 1.9, 1.3, 0.4, "merge_heads", kind="op", mono=True, size=SMALL)
    arrow(ax, (cx, 1.7), (cx, 1.3), shape("batch", "tokens", "d_out"))
    box(ax, cx, 1.05, 2.6, 0.45, "out_proj: Linear(d_out, d_out)", kind="layer", mono=True, size=SMALL)
    arrow(ax, (cx, 0.82), (cx, 0.4), shape("batch", "tokens", "d_out"))
    text(ax, cx, 0.22, "output", size=SMALL, weight="bold")
    notes = [(2.05, "head_dim = d_out // n_heads", True),
             (1.72, "(batch, n_heads) act as batch dimensions,\nso one matmul serves every head", False),
             (1.22, "mask = self.mask[:t, :t], from causal_mask()", True),
             (0.82, "use_sdpa=True: F.scaled_dot_product_attention", True),
             (0.57, "computes the whole 'attend' box in one call", False)]
    for y, line, mono in notes:
        text(ax, 5.0, y, line, mono=mono, size=SMALL, color=MUTED, ha="left", va="top")
    return fig
