"""Concept diagrams for chapter 2 (ch02_text_data/ch02.ipynb)."""
from __future__ import annotations

from matplotlib.figure import Figure

from . import figure
from .style import GREEN, arrow, box, canvas, cells, shape, text

NB = "ch02_text_data/ch02.ipynb"


@figure("ch02_text_to_embeddings", NB)
def text_to_embeddings() -> Figure:
    """Text -> tokens -> ids -> embedding vectors, with the tensor shape at each step."""
    fig, ax = canvas(9.0, 3.6)
    steps = [(0.9, "raw text"), (2.9, "tokens"), (5.0, "token ids"), (7.4, "embeddings")]
    for x, label in steps:
        text(ax, x, 3.35, label, weight="bold")
    box(ax, 0.9, 1.9, 1.4, 0.9, '"Every effort\nmoves you"', kind="text", mono=True, size=9)
    toks = ["Every", " effort", " moves", " you"]
    ids = ["6109", "3626", "6100", "345"]
    for i, (t, n) in enumerate(zip(toks, ids)):
        y = 2.85 - i * 0.62
        box(ax, 2.9, y, 1.1, 0.42, repr(t)[1:-1].replace(" ", "␣"), kind="token", mono=True, size=9)
        arrow(ax, (3.5, y), (4.5, y))
        box(ax, 5.0, y, 0.8, 0.42, n, kind="id", mono=True, size=9)
        arrow(ax, (5.45, y), (6.45, y))
        cells(ax, 6.5, y + 0.18, [""] * 6, cell_w=0.3, cell_h=0.36, kind="embedding")
    arrow(ax, (1.65, 1.9), (2.3, 1.9), "")
    text(ax, 1.95, 1.55, "tokenizer", size=8.5, color=GREEN[1] if False else "#6B6B6B")
    text(ax, 4.0, 0.35, "vocabulary lookup", size=8.5, color="#6B6B6B")
    text(ax, 6.0, 0.35, "nn.Embedding", size=8.5, mono=True, color="#6B6B6B")
    text(ax, 5.0, 0.75, shape("num_tokens"), mono=True, size=8.5, color="#6B6B6B")
    text(ax, 7.4, 0.75, shape("num_tokens", "emb_dim"), mono=True, size=8.5, color="#6B6B6B")
    return fig
