"""Concept diagrams for chapter 4 (ch04_gpt_model/ch04.ipynb): the parts of GPT-2 and how it generates.

Sizes and parameter counts come from the chapter's own `GPT_CONFIGS` and `gpt_param_count`; token ids
and the other printed values are those of the notebook's committed run.
"""
from __future__ import annotations

import math

from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon, Rectangle

from ch04_gpt_model.gpt_model import GPT_CONFIGS, gpt_param_count

from . import figure
from .style import (HEAT, INK, MUTED, ORANGE, RED, SMALL, YELLOW, arrow, box, brace, canvas, cells,
                    colors, region, shape, text)

NB = "ch04_gpt_model/ch04.ipynb"
GPT2 = GPT_CONFIGS["gpt2"]  # the notebook's cfg_124m


def _tok(s: str) -> str:
    """A token string as the course's figures write it: a leading space shown as '␣'."""
    return s.replace(" ", "␣")


def _plus(ax, x: float, y: float, r: float = 0.16) -> None:
    """The '+' of a shortcut connection: a small white circle."""
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor=INK, lw=1.3, zorder=4))
    text(ax, x, y, "+", size=13, weight="bold")


def _vbrace(ax, x: float, y0: float, y1: float, label: str) -> None:
    """A vertical square bracket from y0 to y1 at x, opening to the right, its label rotated on its left."""
    ax.plot([x + 0.08, x, x, x + 0.08], [y0, y0, y1, y1], color=MUTED, lw=1.0, zorder=3)
    text(ax, x - 0.14, (y0 + y1) / 2, label, mono=True, size=SMALL, color=MUTED, rotation=90)


def _block_params(cfg) -> dict[str, int]:
    """Parameters of one TransformerBlock by part (the formula of section 4.9.1)."""
    d = cfg.emb_dim
    return {"att": 4 * d * d + d + (3 * d if cfg.qkv_bias else 0), "ff": 8 * d * d + 5 * d, "norms": 4 * d}


def _model_params(cfg) -> dict[str, int]:
    """Parameters of GPTModel(cfg) (untied) by attribute; checked against gpt_param_count."""
    d = cfg.emb_dim
    parts = {"tok_emb": cfg.vocab_size * d, "pos_emb": cfg.context_length * d,
             "trf_blocks": cfg.n_layers * sum(_block_params(cfg).values()), "final_norm": 2 * d,
             "out_head": cfg.vocab_size * d}
    assert sum(parts.values()) == gpt_param_count(cfg)
    return parts


@figure("ch04_gpt2_sizes", NB)
def gpt2_sizes() -> Figure:
    """GPT-2's four sizes drawn to scale: a stack of n_layers blocks, each emb_dim wide."""
    fig, ax = canvas(9.0, 5.55)
    inch_per_dim, pitch, base = 1.0 / 1000, 0.075, 1.6
    for x, (name, cfg) in zip([1.15, 3.3, 5.6, 7.95], GPT_CONFIGS.items()):
        w, top = cfg.emb_dim * inch_per_dim, base + cfg.n_layers * pitch
        for i in range(cfg.n_layers):
            ax.add_patch(Rectangle((x - w / 2, base + i * pitch), w, pitch * 0.72, facecolor=YELLOW[0],
                                   edgecolor=YELLOW[1], lw=0.7, zorder=2))
        _vbrace(ax, x - w / 2 - 0.1, base, top - pitch * 0.28, f"n_layers = {cfg.n_layers}")
        brace(ax, x - w / 2, x + w / 2, base - 0.1, f"emb_dim = {cfg.emb_dim}")
        text(ax, x, base - 0.5, f"n_heads = {cfg.n_heads}", mono=True, size=SMALL, color=MUTED)
        text(ax, x, base - 0.9, name, mono=True, weight="bold")
        text(ax, x, base - 1.2, f"{gpt_param_count(cfg, tied=True):,}", mono=True, size=SMALL)
        text(ax, x, base - 1.43, "parameters (tied)", size=SMALL, color=MUTED)
    (head_dim,) = {cfg.emb_dim // cfg.n_heads for cfg in GPT_CONFIGS.values()}  # the same in all four
    text(ax, 0.2, 5.35, "one bar = one TransformerBlock", size=10, ha="left")
    text(ax, 0.2, 5.08, "widths and heights to scale", size=SMALL, color=MUTED, ha="left")
    text(ax, 0.2, 4.8, f"head_dim = emb_dim // n_heads = {head_dim} in all four", mono=True, size=SMALL,
         color=MUTED, ha="left")
    return fig


@figure("ch04_next_token_logits", NB)
def next_token_logits() -> Figure:
    """Every position gets vocab_size logits: the scores for the token that follows it."""
    fig, ax = canvas(9.0, 4.0)
    tokens, ids = ["Every", " effort", " moves", " you"], [6109, 3626, 6100, 345]  # batch[0] of the notebook
    targets = tokens[1:] + ["?"]
    rows = [2.75 - i * 0.6 for i in range(4)]
    heads = [(0.95, "token"), (1.95, "id"), (5.75, "logits: a score for every token id"), (8.2, "next token")]
    for x, label in heads:
        text(ax, x, 3.65, label, weight="bold", size=10)
    col_labels = ["0", "1", "2", "…", str(GPT2.vocab_size - 2), str(GPT2.vocab_size - 1)]
    box(ax, 3.2, sum(rows) / 4, 1.05, rows[0] - rows[-1] + 0.55, "SkeletonGPT", kind="layer", mono=True)
    for i, (y, t, n, nxt) in enumerate(zip(rows, tokens, ids, targets)):
        text(ax, 0.12, y, f"{i}", size=SMALL, color=MUTED)
        box(ax, 0.95, y, 1.05, 0.4, _tok(t), kind="token", mono=True, size=9)
        box(ax, 1.95, y, 0.7, 0.4, str(n), kind="id", mono=True, size=9)
        arrow(ax, (2.32, y), (2.66, y))
        arrow(ax, (3.74, y), (4.18, y))
        cells(ax, 4.25, y + 0.19, ["", "", "", "…", "", ""], cell_w=0.5, cell_h=0.38, kind="logits")
        arrow(ax, (7.3, y), (7.65, y), dashed=True, color=MUTED)
        box(ax, 8.2, y, 1.0, 0.4, _tok(nxt), kind="token" if nxt != "?" else "neutral", mono=True, size=9)
    for j, lab in enumerate(col_labels):
        text(ax, 4.5 + j * 0.5, rows[0] + 0.33, lab, mono=True, size=7.5, color=MUTED)
    text(ax, 0.12, rows[0] + 0.45, "pos", size=SMALL, color=MUTED)
    text(ax, 1.95, 0.35, shape("batch", "tokens") + " = (2, 4)", mono=True, size=SMALL, color=MUTED)
    text(ax, 5.75, 0.35, shape("batch", "tokens", "vocab_size") + f" = {shape(2, 4, GPT2.vocab_size)}", mono=True,
         size=SMALL, color=MUTED)
    text(ax, 8.2, 0.45, "the target in\ntraining (ch. 5)", size=SMALL, color=MUTED)
    return fig


@figure("ch04_layernorm", NB)
def layernorm() -> Figure:
    """Layer norm works per token over emb_dim: subtract the mean, divide by the std, then scale and shift."""
    fig, ax = canvas(9.0, 4.3)
    # left: which numbers are normalized together
    text(ax, 1.65, 3.95, "x: " + shape("batch", "tokens", "emb_dim"), mono=True)
    gx, gy, cw, n_feat = 0.85, 3.3, 0.34, 5
    for k in (1, 0):  # a second batch element behind the first
        for r in range(4):
            cells(ax, gx + k * 0.2, gy - r * cw + k * 0.2, [""] * n_feat, cell_w=cw, cell_h=cw, kind="embedding")
    right = gx + n_feat * cw
    hl = (gx, gy - cw, right, gy)  # token 0, the vector normalized on the right
    ax.add_patch(Rectangle((hl[0], hl[1]), hl[2] - hl[0], hl[3] - hl[1], fill=False, edgecolor=ORANGE[1],
                           lw=2.2, zorder=4))
    for r in range(4):
        text(ax, gx - 0.1, gy - (r + 0.5) * cw, f"token {r}", size=SMALL, color=MUTED, ha="right")
    brace(ax, gx, right, gy - 4 * cw - 0.1, "emb_dim (dim=-1)")
    text(ax, 1.65, 1.25, "each token vector on its own:\none mean and one variance\nper token, never across\n"
         "tokens or the batch", size=SMALL, color=INK, va="top")
    arrow(ax, (right + 0.25, gy - cw / 2), (3.45, 3.35), color=ORANGE[1])

    # right: the numbers of the notebook's first vector (torch.manual_seed(123); torch.randn(2, 5) * 3 + 1)
    x = [0.6656, 1.3611, -0.1089, 0.2787, -2.5908]
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)  # unbiased=False
    x_norm = [(v - mean) / math.sqrt(var + 1e-5) for v in x]
    n_mean = sum(x_norm) / len(x_norm)
    n_var = sum((v - n_mean) ** 2 for v in x_norm) / len(x_norm)
    left, cw2 = 4.0, 0.62
    text(ax, 5.55, 3.95, "one token: the notebook's first vector (5 features)", size=SMALL, color=MUTED)
    steps = [(3.35, "x", x, f"mean {mean:.2f}\nvar  {var:.2f}"),
             (2.05, "x_norm", x_norm, f"mean {abs(n_mean):.2f}\nvar  {n_var:.2f}"),
             (0.75, "out", x_norm, "scale = 1, shift = 0\nat initialisation")]
    for y, name, vals, stats in steps:
        text(ax, left - 0.1, y, name, mono=True, ha="right")
        cells(ax, left, y + 0.19, [f"{v:.2f}" for v in vals], cell_w=cw2, cell_h=0.38, kind="embedding")
        text(ax, left + 5 * cw2 + 0.15, y, stats, mono=True, size=SMALL, ha="left")
    mid = left + 2.5 * cw2
    arrow(ax, (mid, 3.1), (mid, 2.3), "(x - mean) / sqrt(var + eps)", size=SMALL, label_offset=0.12)
    arrow(ax, (mid, 1.8), (mid, 1.0), "scale * x_norm + shift", size=SMALL, label_offset=0.12)
    text(ax, mid, 0.3, "scale, shift: learned, one of each per feature (emb_dim numbers each)", size=SMALL,
         color=YELLOW[1])
    return fig


def _trapezoid(ax, x0: float, x1: float, h0: float, h1: float, y: float, kind: str = "layer") -> None:
    """A layer drawn as a trapezoid from height h0 at x0 to h1 at x1, centred on y."""
    f, e = colors(kind)
    ax.add_patch(Polygon([(x0, y - h0 / 2), (x1, y - h1 / 2), (x1, y + h1 / 2), (x0, y + h0 / 2)],
                         closed=True, facecolor=f, edgecolor=e, lw=1.3, zorder=2))


@figure("ch04_feed_forward", NB)
def feed_forward() -> Figure:
    """FeedForward: each token vector goes emb_dim -> 4 * emb_dim -> GELU -> emb_dim."""
    fig, ax = canvas(8.0, 4.7)
    d, y, cell = GPT2.emb_dim, 2.45, 0.12
    small, big = 6 * cell, 24 * cell
    columns = [(0.75, 6, "x", f"emb_dim\n= {d}"), (2.85, 24, "", f"4 * emb_dim\n= {4 * d}"),
               (5.25, 24, "", f"4 * emb_dim\n= {4 * d}"), (7.35, 6, "out", f"emb_dim\n= {d}")]
    for x, n, name, size in columns:
        cells(ax, x - 0.14, y + n * cell / 2, [""] * n, cell_w=0.28, cell_h=cell, kind="embedding",
              vertical=True)
        text(ax, x, y + n * cell / 2 + 0.17, name, mono=True, size=SMALL)
        text(ax, x, y - n * cell / 2 - 0.28, size, mono=True, size=SMALL, color=MUTED)
    linears = [(1.0, 2.6, small, big, "layers[0]", f"nn.Linear({d}, {4 * d})", d * 4 * d + 4 * d),
               (5.5, 7.1, big, small, "layers[2]", f"nn.Linear({4 * d}, {d})", 4 * d * d + d)]
    for x0, x1, h0, h1, attr, cls, n in linears:
        _trapezoid(ax, x0, x1, h0, h1, y)
        text(ax, (x0 + x1) / 2, y + 0.13, attr, mono=True, size=SMALL)
        text(ax, (x0 + x1) / 2, y - 0.13, "Linear", size=10)
        text(ax, (x0 + x1) / 2, 0.3, f"{cls}\n{n:,} parameters", mono=True, size=SMALL, color=MUTED)
    box(ax, 4.05, y, 1.0, 0.9, "", kind="op")
    text(ax, 4.05, y + 0.62, "layers[1]", mono=True, size=SMALL)
    text(ax, 4.05, y - 0.3, "GELU", mono=True, size=SMALL)
    gx = [i / 10 for i in range(-30, 31)]
    gy = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))) for v in gx]
    ax.plot([4.05 + v * 0.12 for v in gx], [y - 0.12 + v * 0.12 for v in gy], color=ORANGE[1], lw=1.5, zorder=4)
    for x0, x1 in ((3.0, 3.53), (4.57, 5.1)):
        arrow(ax, (x0, y), (x1, y))
    text(ax, 4.0, 4.45, shape("batch", "tokens", "emb_dim") + "  →  " + shape("batch", "tokens", "4 * emb_dim")
         + "  →  " + shape("batch", "tokens", "emb_dim"), mono=True, size=SMALL)
    text(ax, 4.0, 4.15, "every token vector on its own, with the same weights: tokens do not interact here",
         size=SMALL, color=MUTED)
    return fig


def _elbow(ax, points: list[tuple[float, float]], *, color: str = INK, lw: float = 1.3) -> None:
    """A line through points whose last segment ends in an arrow head (a shortcut path)."""
    xs, ys = zip(*points[:-1])
    ax.plot(xs, ys, color=color, lw=lw, zorder=3, solid_capstyle="round")
    arrow(ax, points[-2], points[-1], color=color, lw=lw)


@figure("ch04_shortcut", NB)
def shortcut() -> Figure:
    """With shortcuts the gradient reaches the first layer through the identity; without, it vanishes."""
    fig, ax = canvas(9.0, 5.0)
    # layer 1, 11, 20 of the 20-layer stacks of section 4.6 and their printed mean |grad| of the weight
    layers = [(1.55, "layer 1", "8.45e-13", "1.41e+02"), (3.75, "layer 11", "1.67e-08", "1.23e+02"),
              (5.95, "layer 20", "1.51e-03", "1.55e+02")]
    panels = [(3.75, "without shortcuts:", "x = layer(x)", False), (1.35, "with shortcuts:", "x = x + layer(x)", True)]
    for y, title, code, residual in panels:
        text(ax, 0.2, y + 0.95, title, weight="bold", ha="left", size=10)
        text(ax, 1.75 if residual else 1.95, y + 0.95, code, mono=True, ha="left")
        box(ax, 0.5, y, 0.5, 0.42, "x", kind="embedding", mono=True)
        box(ax, 8.1, y, 0.9, 0.42, "loss", kind="loss")
        prev = 0.75
        for i, (x, name, g_plain, g_res) in enumerate(layers):
            box(ax, x, y, 0.95, 0.45, name, kind="layer", size=9.5)
            arrow(ax, (prev, y), (x - 0.48, y))
            out = x + 0.48
            if residual:
                _plus(ax, x + 0.8, y, r=0.14)
                _elbow(ax, [(x - 0.7, y), (x - 0.7, y + 0.5), (x + 0.8, y + 0.5), (x + 0.8, y + 0.15)])
                arrow(ax, (out, y), (x + 0.65, y))
                out = x + 0.95
            if i < 2:
                text(ax, (out + layers[i + 1][0] - 0.48) / 2 + 0.03, y, "…", size=12, color=MUTED)
                ax.plot([out, out + 0.22], [y, y], color=INK, lw=1.3, zorder=3)
                prev = (out + layers[i + 1][0] - 0.48) / 2 + 0.25
            else:
                arrow(ax, (out, y), (7.63, y))
            text(ax, x, y - 0.78, g_res if residual else g_plain, mono=True, size=9, color=RED[1])
        for x, _, g_plain, g_res in layers:  # arrow width grows with log10 of the measured gradient
            lw = 0.3 + 2.4 * (math.log10(float(g_res if residual else g_plain)) + 13) / 15
            arrow(ax, (x + 1.2, y - 0.45), (x - 0.9, y - 0.45), color=RED[1], lw=lw)
        text(ax, 8.1, y - 0.45, "gradient", size=SMALL, color=RED[1])
        text(ax, 8.1, y - 0.78, "mean |grad|", size=SMALL, color=RED[1])
    text(ax, 4.5, 0.15, "20 layers of nn.Linear(8, 8) + GELU, the same weights in both stacks; "
         "red arrows: the gradient flowing back (width on a log scale)", size=SMALL, color=MUTED)
    return fig


@figure("ch04_transformer_block", NB)
def transformer_block() -> Figure:
    """TransformerBlock, pre-LN: norm -> sub-layer -> dropout -> add the shortcut, twice."""
    fig, ax = canvas(7.8, 7.8)
    bp, d = _block_params(GPT2), GPT2.emb_dim
    cx, w, h, sx = 3.0, 2.7, 0.46, 1.0  # main column, box size, x of the shortcut lines
    flow = shape("batch", "tokens", "emb_dim")
    region(ax, 0.45, 0.7, 4.6, 7.05, "TransformerBlock", kind="layer")
    box(ax, cx, 7.45, 0.6, 0.36, "x", kind="embedding", mono=True)
    arrow(ax, (cx, 7.27), (cx, 6.45), flow, label_offset=0.12, head=False)
    half = [(6.45, 6.05, 5.3, 4.55, 3.95, "norm1", "att: MultiHeadAttention", "att", "tokens exchange information"),
            (3.45, 3.05, 2.3, 1.55, 0.95, "norm2", "ff: FeedForward", "ff", "each token on its own")]
    for split, y_norm, y_sub, y_drop, y_plus, norm, sub, key, role in half:
        arrow(ax, (cx, split), (cx, y_norm + h / 2))
        ax.plot([cx], [split], "o", color=INK, ms=4, zorder=4)
        _elbow(ax, [(cx, split), (sx, split), (sx, y_plus), (cx - 0.16, y_plus)])
        box(ax, cx, y_norm, w, h, f"{norm}: LayerNorm", mono=True)
        box(ax, cx, y_sub, w, h + 0.1, sub, mono=True, weight="bold")
        box(ax, cx, y_drop, w, h, "drop_shortcut: Dropout", kind="op", mono=True)
        for y0, y1 in ((y_norm, y_sub), (y_sub, y_drop)):
            arrow(ax, (cx, y0 - h / 2 - 0.02), (cx, y1 + h / 2 + 0.03))
        arrow(ax, (cx, y_drop - h / 2), (cx, y_plus + 0.16))
        _plus(ax, cx, y_plus)
        text(ax, cx + w / 2 + 0.2, y_norm, f"{2 * d:,} parameters", size=SMALL, color=MUTED, ha="left")
        text(ax, cx + w / 2 + 0.2, y_sub + 0.1, f"{bp[key]:,} parameters", size=SMALL, color=MUTED, ha="left")
        text(ax, cx + w / 2 + 0.2, y_sub - 0.14, role, size=SMALL, ha="left")
        text(ax, cx + w / 2 + 0.2, y_drop, "drop_rate; active in training only", size=SMALL, color=MUTED,
             ha="left")
        text(ax, sx - 0.17, (split + y_plus) / 2, "shortcut: x unchanged", size=SMALL, color=MUTED, rotation=90)
    arrow(ax, (cx, 3.79), (cx, 3.45), "", head=False)
    text(ax, cx + 0.12, 3.66, flow, mono=True, size=SMALL, color=MUTED, ha="left")
    box(ax, cx, 0.25, 0.6, 0.36, "x", kind="embedding", mono=True)
    arrow(ax, (cx, 0.79), (cx, 0.43), flow, label_offset=0.12)
    text(ax, cx + w / 2 + 0.2, 7.45, f"gpt2: {sum(bp.values()):,} parameters per block", size=SMALL,
         ha="left", weight="bold")
    text(ax, 4.85, 3.95, "pre-LN: each LayerNorm sits inside\nits branch; the shortcut path is\nnever normalized",
         size=SMALL, ha="left", color=MUTED)
    return fig


@figure("ch04_gpt_architecture", NB)
def gpt_architecture() -> Figure:
    """GPTModel end to end: token ids -> embeddings -> n_layers blocks -> final norm -> logits, with shapes."""
    fig, ax = canvas(8.4, 8.55)
    cx, w, h = 3.0, 2.9, 0.5
    ids = ["6109", "3626", "6100", "345"]  # "Every effort moves you", batch[0] of the notebook
    text(ax, cx - 1.3, 7.95, "in_idx", mono=True, ha="right")
    cells(ax, cx - 1.1, 8.13, ids, cell_w=0.55, cell_h=0.36, kind="id")
    text(ax, 6.0, 8.35, "positions = torch.arange(tokens)", mono=True, size=SMALL, color=MUTED)
    cells(ax, 5.2, 8.1, ["0", "1", "2", "3"], cell_w=0.4, cell_h=0.36, kind="id")
    arrow(ax, (cx, 7.75), (cx, 7.05), shape("batch", "tokens"), label_offset=0.12)
    arrow(ax, (6.0, 7.72), (6.0, 7.05), shape("tokens"), label_offset=0.12)
    box(ax, cx, 6.8, w, h, "", kind="layer")
    text(ax, cx, 6.9, "tok_emb", mono=True, weight="bold")
    text(ax, cx, 6.68, "nn.Embedding(vocab_size, emb_dim)", mono=True, size=7.5, color=MUTED)
    box(ax, 6.0, 6.8, 2.5, h, "", kind="layer")
    text(ax, 6.0, 6.9, "pos_emb", mono=True, weight="bold")
    text(ax, 6.0, 6.68, "nn.Embedding(context_length, emb_dim)", mono=True, size=7.5, color=MUTED)
    arrow(ax, (cx, 6.55), (cx, 6.07), shape("batch", "tokens", "emb_dim"), label_side="left", label_offset=0.12)
    _elbow(ax, [(6.0, 6.55), (6.0, 5.9), (cx + 0.17, 5.9)])
    text(ax, 4.9, 6.0, shape("tokens", "emb_dim"), mono=True, size=SMALL, color=MUTED, va="bottom")
    _plus(ax, cx, 5.9)
    steps = [(5.05, "drop_emb: Dropout(drop_rate)", "op"), (2.45, "final_norm: LayerNorm", "layer"),
             (1.55, "out_head: nn.Linear(emb_dim, vocab_size)", "layer")]
    for y, label, kind in steps:
        box(ax, cx, y, w + (0.5 if "out_head" in label else 0), 0.46, label, kind=kind, mono=True, size=9)
    flow = shape("batch", "tokens", "emb_dim")
    arrow(ax, (cx, 5.74), (cx, 5.29), flow, label_offset=0.12)
    # trf_blocks: a stack of n_layers TransformerBlocks
    for k in (2, 1, 0):
        box(ax, cx + k * 0.09, 3.75 + k * 0.09, w, 0.9, "", kind="layer")
    text(ax, cx, 3.92, "trf_blocks", mono=True, weight="bold")
    text(ax, cx, 3.6, "n_layers × TransformerBlock", mono=True, size=9)
    arrow(ax, (cx, 4.81), (cx, 4.3), flow, label_offset=0.12)
    arrow(ax, (cx, 3.29), (cx, 2.69), flow, label_offset=0.12)
    arrow(ax, (cx, 2.21), (cx, 1.79), flow, label_offset=0.12)
    arrow(ax, (cx, 1.31), (cx, 0.75), shape("batch", "tokens", "vocab_size"), label_offset=0.12)
    text(ax, cx - 1.3, 0.52, "logits", mono=True, ha="right")
    cells(ax, cx - 1.1, 0.7, ["", "", "…", "", ""], cell_w=0.44, cell_h=0.36, kind="logits")
    text(ax, cx + 1.25, 0.52, "vocab_size scores per token", size=SMALL, color=MUTED, ha="left")
    cfg_lines = [f"{k} = {getattr(GPT2, k)}" for k in
                 ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate")]
    text(ax, 6.05, 3.55, "GPT_CONFIGS[\"gpt2\"]\n" + "\n".join(cfg_lines)
         + "\n\nthe notebook's batch:\nbatch = 2, tokens = 4", mono=True, size=SMALL, ha="left", va="center")
    return fig


@figure("ch04_param_breakdown", NB)
def param_breakdown() -> Figure:
    """Where GPT-2 small's parameters are: embeddings, 12 blocks, head; tying removes the head's copy."""
    fig, ax = canvas(9.0, 4.3)
    parts, bp = _model_params(GPT2), _block_params(GPT2)
    total, tied_total = sum(parts.values()), gpt_param_count(GPT2, tied=True)
    x0, scale, y_untied, y_tied = 0.35, 8.3 / total, 3.3, 0.75

    def bar(y: float, names: list[str], title: str) -> dict[str, tuple[float, float]]:
        spans, x = {}, x0
        for n in names:
            w = parts[n] * scale
            ax.add_patch(Rectangle((x, y - 0.3), w, 0.6, facecolor=YELLOW[0], edgecolor=YELLOW[1], lw=1.0,
                                   zorder=1.5))
            spans[n] = (x, x + w)
            x += w
        text(ax, x0, y + 0.58, title, size=10, ha="left", weight="bold")
        a, b = spans["trf_blocks"]
        for i in range(1, GPT2.n_layers):
            ax.plot([a + i * (b - a) / GPT2.n_layers] * 2, [y - 0.3, y + 0.3], color=YELLOW[1], lw=0.5, zorder=1.8)
        for n in ("tok_emb", "out_head"):
            if n in spans:
                text(ax, sum(spans[n]) / 2, y + 0.1, n, mono=True, size=9)
                text(ax, sum(spans[n]) / 2, y - 0.13, f"{parts[n]:,}", mono=True, size=SMALL)
        return spans

    untied = bar(y_untied, list(parts), f"GPTModel(gpt2), untied: {total:,} parameters")
    tied = bar(y_tied, ["tok_emb", "pos_emb", "trf_blocks", "final_norm"],
               f"tie_weights(model): {tied_total:,} parameters")
    for spans, y, label in ((untied, y_untied, f"trf_blocks: {GPT2.n_layers} × {sum(bp.values()):,}"),
                            (tied, y_tied, f"trf_blocks: {parts['trf_blocks']:,}")):
        box(ax, sum(spans["trf_blocks"]) / 2 - 0.3, y, 2.9, 0.3, label, kind="op", mono=True, size=SMALL,
            fill="white", edge=YELLOW[1], lw=0.8)
    a, b = untied["out_head"]
    ax.add_patch(Rectangle((a, y_tied - 0.3), b - a, 0.6, fill=False, edgecolor=YELLOW[1], lw=1.0,
                           linestyle="--", zorder=2))
    text(ax, (a + b) / 2, y_tied, "out_head uses\ntok_emb's matrix", size=SMALL, color=MUTED)
    # the thin parts get leader lines: pos_emb below the bar, final_norm above it
    for name, up in (("pos_emb", False), ("final_norm", True)):
        xm, sign = sum(untied[name]) / 2, 1 if up else -1
        ax.plot([xm, xm], [y_untied + 0.3 * sign, y_untied + 0.55 * sign], color=MUTED, lw=0.8, zorder=3)
        text(ax, xm, y_untied + 0.66 * sign, f"{name} {parts[name]:,}", mono=True, size=7.5, color=MUTED)
    # zoom into the last block
    a, b = untied["trf_blocks"]
    zx, zw, zy, bw = 2.7, 5.0, 1.95, (b - a) / GPT2.n_layers
    for xa, xb in ((b - bw, zx), (b, zx + zw)):
        ax.plot([xa, xb], [y_untied - 0.3, zy + 0.25], color=MUTED, lw=0.8, ls=":")
    x, block_total = zx, sum(bp.values())
    for key in ("att", "ff", "norms"):
        w = bp[key] / block_total * zw
        ax.add_patch(Rectangle((x, zy - 0.25), w, 0.5, facecolor=YELLOW[0], edgecolor=YELLOW[1], lw=1.0, zorder=2))
        if key != "norms":
            text(ax, x + w / 2, zy, f"{key} {bp[key]:,} ({bp[key] / block_total:.0%})", mono=True, size=SMALL)
        x += w
    text(ax, zx - 0.12, zy, f"one block\n{block_total:,}", size=SMALL, ha="right")
    text(ax, x + 0.1, zy, f"+ norm1, norm2\n{bp['norms']:,}", mono=True, size=7.5, color=MUTED, ha="left")
    return fig


@figure("ch04_generation_loop", NB)
def generation_loop() -> Figure:
    """generate_text_simple: crop, run the model, take the last position's argmax, append, repeat."""
    fig, ax = canvas(9.2, 4.75)
    prompt, new_id, new_tok = ["15496", "11", "314", "716"], "3127", " network"  # "Hello, I am" -> step 1
    y_top, y_bot = 3.45, 1.2
    text(ax, 1.5, 4.15, "idx " + shape("batch", "tokens"), mono=True, size=9)
    cs = cells(ax, 0.15, y_top + 0.19, prompt + [""], cell_w=0.56, cell_h=0.38, kind="id")
    ax.add_patch(Rectangle((cs[-1][0] - 0.28, y_top - 0.19), 0.56, 0.38, facecolor="white", edgecolor=MUTED,
                           lw=1.0, ls="--", zorder=3))
    text(ax, cs[-1][0], y_top, new_id, mono=True, size=SMALL, color=MUTED)
    text(ax, 1.2, y_top - 0.38, '"Hello, I am"', mono=True, size=SMALL, color=MUTED)
    box(ax, 4.35, y_top, 1.95, 0.55, "idx[:, -context_length:]", kind="op", mono=True, size=8.5)
    text(ax, 4.35, y_top + 0.48, "crop", size=SMALL, color=MUTED)
    box(ax, 6.2, y_top, 1.0, 0.55, "model", kind="layer", mono=True)
    arrow(ax, (3.0, y_top), (3.36, y_top))
    arrow(ax, (5.34, y_top), (5.69, y_top))
    arrow(ax, (6.71, y_top), (7.05, y_top))
    # logits: one row per position; the last row is the prediction for the next token
    gx, gtop = 7.1, y_top + 0.72
    for r in range(4):
        cells(ax, gx, gtop - r * 0.36, [""] * 4, cell_w=0.36, cell_h=0.36, kind="logits")
    grid = (gx, gtop - 4 * 0.36)
    ax.add_patch(Rectangle(grid, 1.44, 0.36, fill=False, edgecolor=ORANGE[1], lw=2.2, zorder=4))
    text(ax, gx - 0.1, grid[1] + 0.18, "last position", size=SMALL, color=ORANGE[1], ha="right")
    text(ax, 7.82, 4.57, "logits", mono=True, size=9)
    text(ax, 7.82, 4.35, shape("batch", "tokens", "vocab_size"), mono=True, size=7.5, color=MUTED)
    # bottom: last position -> argmax -> next_id
    arrow(ax, (7.82, grid[1] - 0.02), (7.82, y_bot + 0.24), "logits[:, -1, :]", label_offset=0.1)
    labels = ["0", "…", new_id, "…", str(GPT2.vocab_size - 1)]
    fills = ["#FFFFFF"] * 5
    fills[2] = ORANGE[0]
    strip = cells(ax, 6.55, y_bot + 0.19, ["", "…", "", "…", ""], cell_w=0.5, cell_h=0.38, kind="logits",
                  fills=fills)
    for (sx, _), lab in zip(strip, labels):
        if lab != "…":
            text(ax, sx, y_bot - 0.34, lab, mono=True, size=7.5, color=MUTED)
    text(ax, 7.8, y_bot - 0.62, shape("batch", "vocab_size"), mono=True, size=7.5, color=MUTED)
    box(ax, 4.6, y_bot, 1.7, 0.5, "argmax(dim=-1)", kind="op", mono=True, size=9)
    arrow(ax, (6.5, y_bot), (5.47, y_bot))
    nx = cs[-1][0]  # next_id sits under the slot it is appended to
    box(ax, nx, y_bot, 0.75, 0.42, new_id, kind="id", mono=True, size=9)
    text(ax, nx - 0.5, y_bot, "next_id " + shape("batch", 1), mono=True, size=SMALL, ha="right")
    text(ax, nx, y_bot - 0.38, f"'{new_tok}'", mono=True, size=SMALL, color=MUTED)
    arrow(ax, (3.74, y_bot), (nx + 0.4, y_bot))
    arrow(ax, (nx, y_bot + 0.22), (nx, y_top - 0.2))
    text(ax, nx - 0.12, (y_bot + y_top) / 2, "torch.cat([idx, next_id], dim=1)", mono=True,
         size=SMALL, ha="right")
    text(ax, 4.6, 2.3, "repeat max_new_tokens times", size=SMALL, color=MUTED, style="italic")
    return fig


@figure("ch04_context_crop", NB)
def context_crop() -> Figure:
    """With context_length = 4 the model sees only the last 4 tokens; the returned sequence keeps them all."""
    fig, ax = canvas(9.0, 4.2)
    # the notebook's tiny model: "One two three four five six" + 3 greedy tokens (ids 3198 ... 476)
    toks = ["One", " two", " three", " four", " five", " six", " flashing", "nesty", " wor"]
    n_prompt, ctx, cw, x0 = 6, 4, 0.82, 1.1
    for step in range(3):
        y, n = 3.05 - step * 0.75, n_prompt + step
        fills = ["#EEEEEE" if i < n - ctx else colors("token")[0] for i in range(n)]
        cells(ax, x0, y + 0.19, [_tok(t) for t in toks[:n]], cell_w=cw, cell_h=0.38, kind="token", fills=fills)
        ax.add_patch(Rectangle((x0 + (n - ctx) * cw, y - 0.19), ctx * cw, 0.38, fill=False, edgecolor=INK,
                               lw=2.2, zorder=4))
        box(ax, x0 + (n + 0.5) * cw, y, cw, 0.38, _tok(toks[n]), kind="query", mono=True, size=SMALL,
            rounded=False)
        text(ax, x0 - 0.15, y, f"step {step + 1}", size=SMALL, ha="right")
    text(ax, x0 + 4.0 * cw, 3.47, "idx[:, -context_length:], context_length = 4", mono=True, size=SMALL)
    y = 0.8
    cells(ax, x0, y + 0.19, [_tok(t) for t in toks], cell_w=cw, cell_h=0.38, kind="token")
    text(ax, x0 - 0.15, y, "returned", size=SMALL, ha="right")
    brace(ax, x0 + 0.03, x0 + n_prompt * cw - 0.03, y - 0.36, f"prompt: {n_prompt} tokens")
    brace(ax, x0 + n_prompt * cw + 0.03, x0 + len(toks) * cw - 0.03, y - 0.36, "3 new tokens")
    legend = [("token", None, "seen by the model"), ("token", "#EEEEEE", "cropped away"),
              ("query", None, "appended (argmax)")]
    for i, (kind, fill, label) in enumerate(legend):
        box(ax, 1.2 + i * 2.4, 3.95, 0.3, 0.22, kind=kind, fill=fill, rounded=False)
        text(ax, 1.42 + i * 2.4, 3.95, label, size=SMALL, ha="left")
    return fig


@figure("ch04_kv_cache", NB)
def kv_cache() -> Figure:
    """KVCache: keys and values per layer; a new token adds its key and value and attends with one query."""
    fig, ax = canvas(9.2, 5.6)
    # top strip: what the cache holds, one keys/values pair per layer
    text(ax, 0.2, 5.4, f"KVCache: one keys and one values tensor per layer (n_layers = {GPT2.n_layers}), "
         "filled from the left up to cache.length", size=SMALL, ha="left")
    text(ax, 0.2, 5.15, "cache.keys[layer], cache.values[layer]: "
         + shape("batch", "n_heads", "context_length", "head_dim"), mono=True, size=SMALL, ha="left")
    n_slots, filled, sw = 8, 4, 0.075  # schematic: 8 of context_length slots, cache.length = 4
    for layer in range(GPT2.n_layers):
        lx = 0.35 + layer * 0.72
        for row, kind in ((0, "key"), (1, "value")):
            f, e = colors(kind)
            for j in range(n_slots):
                ax.add_patch(Rectangle((lx + j * sw, 4.75 - row * 0.2), sw, 0.16, lw=0.5, edgecolor=e,
                                       facecolor=f if j < filled else "white", zorder=2))
        text(ax, lx + n_slots * sw / 2, 4.46, f"{layer}", mono=True, size=7.5, color=MUTED)
    ax.add_patch(Rectangle((0.3, 4.34), 0.7, 0.63, fill=False, edgecolor=ORANGE[1], lw=1.5, zorder=3))
    # below: one layer, one head, at the step that adds position 4 (cache.length = 4 before it)
    text(ax, 0.2, 3.95, "one layer, one head, one step: cache.length = 4, the new token is position 4",
         size=10, ha="left", weight="bold")
    xs = [1.55 + i * 0.75 for i in range(5)]
    rows = {"keys": 3.15, "weights": 2.2, "values": 1.25}
    scores = [0.3, 1.2, -0.4, 0.5, 1.0]  # illustrative q·k scores; the weights are their softmax
    z = sum(math.exp(v) for v in scores)
    weights = [math.exp(v) / z for v in scores]
    assert abs(sum(round(w, 2) for w in weights) - 1) < 1e-9  # the printed weights sum to 1
    for i, x in enumerate(xs):
        new = i == 4
        for name, kind in (("keys", "key"), ("values", "value")):
            box(ax, x, rows[name], 0.62, 0.42, f"{name[0]}{i}", kind=kind, mono=True, size=9, rounded=False,
                lw=2.2 if new else 1.0, edge=ORANGE[1] if new else None)
        box(ax, x, rows["weights"], 0.62, 0.42, f"{weights[i]:.2f}", kind="op", mono=True, size=SMALL,
            rounded=False, fill=HEAT(weights[i] / max(weights) * 0.6), lw=1.0)
    for name, y in rows.items():
        text(ax, 1.1, y, name, size=SMALL, ha="right")
    brace(ax, xs[0] - 0.31, xs[3] + 0.31, rows["keys"] + 0.3, "read from the cache", below=False)
    text(ax, xs[4], rows["keys"] + 0.45, "new", size=SMALL, color=ORANGE[1])
    # the new token: projections on the right
    px, tx = 6.55, 8.3
    box(ax, tx, rows["weights"], 0.8, 0.5, "x", kind="embedding", mono=True)
    text(ax, tx, rows["weights"] - 0.45, "new token\n" + shape("batch", 1, "emb_dim"), mono=True, size=7.5,
         color=MUTED, va="top")
    for name, label in (("keys", "W_key"), ("weights", "W_query"), ("values", "W_value")):
        box(ax, px, rows[name], 1.0, 0.42, label, kind="layer", mono=True, size=9)
        arrow(ax, (tx - 0.41, rows["weights"]), (px + 0.51, rows[name]))
    box(ax, 5.3, rows["weights"], 0.5, 0.42, "q", kind="query", mono=True, size=9, rounded=False)
    arrow(ax, (px - 0.51, rows["weights"]), (5.56, rows["weights"]))
    arrow(ax, (5.04, rows["weights"]), (xs[4] + 0.32, rows["weights"]))
    for name in ("keys", "values"):
        arrow(ax, (px - 0.51, rows[name]), (xs[4] + 0.33, rows[name]))
    text(ax, 5.42, rows["keys"] + 0.2, "cache.update", mono=True, size=7.5, color=MUTED)
    text(ax, 5.3, rows["weights"] + 0.35, "one query", size=SMALL, color=ORANGE[1])
    # output: weighted sum of the values
    box(ax, xs[2], 0.3, 2.2, 0.4, "context = weights @ values", kind="embedding", mono=True, size=8.5)
    brace(ax, xs[0] - 0.31, xs[4] + 0.31, rows["values"] - 0.3)
    arrow(ax, (xs[2], rows["values"] - 0.3), (xs[2], 0.5))
    text(ax, xs[4] + 0.45, 0.3, shape("batch", "n_heads", 1, "head_dim") + " → out_proj", mono=True,
         size=7.5, color=MUTED, ha="left")
    return fig


@figure("ch04_kv_cache_work", NB)
def kv_cache_work() -> Figure:
    """Token positions run through the model per step: all of them without a cache, only the new one with it."""
    fig, ax = canvas(9.0, 4.0)
    prompt, new = 4, 4  # a 4-token prompt, 4 new tokens: the model runs 4 times
    cell, top = 0.42, 2.85
    panels = [(0.95, "generate_text_simple", "the whole sequence again at every step", False),
              (5.35, "generate_text_cached", "the prompt once, then only the new token", True)]
    for x0, title, subtitle, cached in panels:
        text(ax, x0, top + 0.8, title, mono=True, weight="bold", ha="left")
        text(ax, x0, top + 0.5, subtitle, size=SMALL, ha="left", color=MUTED)
        text(ax, x0 - 0.1, top + 0.14, "position", size=7.5, color=MUTED, ha="right")
        computed = 0
        for step in range(new):
            n = prompt + step  # tokens in the sequence when the model runs
            fills, labels = [], []
            for pos in range(prompt + new - 1):
                if pos >= n:
                    fills.append("white")
                elif cached and step > 0 and pos < n - 1:
                    fills.append(colors("key")[0])  # its keys/values are read from the cache
                else:
                    fills.append(colors("query")[1])
                    computed += 1
                labels.append("")
            cells(ax, x0, top - step * cell, labels, cell_w=cell, cell_h=cell, kind="neutral", fills=fills)
            label = "prefill" if cached and step == 0 else f"step {step + 1}"
            text(ax, x0 - 0.1, top - (step + 0.5) * cell, label, size=SMALL, ha="right")
        for pos in range(prompt + new - 1):
            text(ax, x0 + (pos + 0.5) * cell, top + 0.14, str(pos), mono=True, size=7.5, color=MUTED)
        text(ax, x0 + (prompt + new - 1) * cell / 2, top - new * cell - 0.3,
             f"{computed} token positions through the model", size=SMALL)
    legend = [(colors("query")[1], "runs through the model"), (colors("key")[0], "keys, values read from the cache")]
    for i, (fill, label) in enumerate(legend):
        ax.add_patch(Rectangle((1.0 + i * 3.6, 0.22), 0.3, 0.22, facecolor=fill, edgecolor=MUTED, lw=0.8))
        text(ax, 1.4 + i * 3.6, 0.33, label, size=SMALL, ha="left")
    return fig
