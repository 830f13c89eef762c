"""Concept diagrams for chapter 6 (ch06_classification/ch06.ipynb): turning the GPT into a spam classifier.

The counts and token ids written in these figures are those the notebook prints (the chapter-5 substitute
model, context_length 256); the comments say where each comes from.
"""
from __future__ import annotations

import math

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import figure
from .style import (BLUE, GREY, HEAT, INK, MUTED, ORANGE, RED, SMALL, WHITE, YELLOW, arrow, box, brace, canvas,
                    cells, matrix, region, shape, text)

NB = "ch06_classification/ch06.ipynb"
PAD_ID = 50256  # <|endoftext|>, END_OF_TEXT_ID
HAM, SPAM = BLUE, RED  # the notebook's length histogram draws ham blue and spam red


def _bar(ax, x: float, y: float, w: float, h: float, colours: tuple[str, str], *, hatch: str | None = None,
         label: str = "", size: float = SMALL, mono: bool = True) -> None:
    """A plain rectangle from (x, y - h/2) to (x + w, y + h/2), with an optional centred label."""
    ax.add_patch(Rectangle((x, y - h / 2), w, h, facecolor=colours[0], edgecolor=colours[1], linewidth=1.0,
                           hatch=hatch, zorder=2))
    if label:
        text(ax, x + w / 2, y, label, size=size, mono=mono)


def _cross(ax, x0: float, y0: float, x1: float, y1: float) -> None:
    """A red X over the rectangle (x0, y0)-(x1, y1): this part is removed."""
    for ys in ((y0, y1), (y1, y0)):
        ax.plot([x0, x1], list(ys), color=RED[1], lw=2.0, zorder=6)


@figure("ch06_two_finetunings", NB)
def two_finetunings() -> Figure:
    """Instruction fine-tuning keeps generating text; classification fine-tuning maps a text to a label."""
    fig, ax = canvas(9.0, 4.6)
    panels = [  # x centre, title, input text, head, output shape
        (2.3, "instruction fine-tuning (chapter 7)",
         '"Is this SMS spam? Answer yes\nor no. URGENT! Your mobile\nnumber has won a prize..."',
         "out_head: Linear(emb_dim, vocab_size)",
         shape("batch", "tokens", "vocab_size") + "\nscores of the next token"),
        (6.75, "classification fine-tuning (chapter 6)",
         '"URGENT! Your mobile number\nhas won a 2,000 pound prize.\nCall 09061701461 ..."',
         "out_head: Linear(emb_dim, num_classes)",
         shape("batch", "num_classes") + "\nscores at the last token"),
    ]
    for x, title, message, head, out_shape in panels:
        region(ax, x - 2.15, 0.15, x + 2.15, 4.45, title, kind="neutral")
        box(ax, x, 3.55, 3.3, 0.82, message, kind="text", mono=True, size=8.5)
        box(ax, x, 2.45, 3.7, 0.62, f"GPTModel\n{head}", kind="layer", mono=True, size=8.5)
        arrow(ax, (x, 3.13), (x, 2.77))
        arrow(ax, (x, 2.13), (x, 1.65), out_shape, label_side="right", label_offset=0.1)
    # left: the model keeps writing, one token at a time
    box(ax, 2.3, 1.12, 3.3, 0.72, '"Yes. It promises a prize and\nasks you to call a number."',
        kind="text", mono=True, size=8.5)
    text(ax, 2.3, 0.42, "output: any text, generated token by token\nlearns from: instructions with answers",
         size=SMALL, color=MUTED)
    # right: one score per class for the whole message
    for i, (label, kind) in enumerate([("ham", "neutral"), ("spam", "logits")]):
        box(ax, 6.15 + i * 1.2, 1.12, 1.0, 0.5, label, kind=kind, mono=True, size=9.5,
            weight="bold" if label == "spam" else "normal")
    text(ax, 6.75, 0.42, "output: always one of LABELS = (\"ham\", \"spam\")\nlearns from: texts with a label each",
         size=SMALL, color=MUTED)
    return fig


@figure("ch06_data_pipeline", NB)
def data_pipeline() -> Figure:
    """The SMS file, the balanced 747 + 747 messages and the 70/10/20 split, drawn to scale."""
    fig, ax = canvas(9.0, 5.0)
    x0, scale = 2.55, 6.1 / 5574  # inches per message: the whole collection spans 6.1 inches
    names = [(4.35, "SMSSpamCollection"), (3.25, "df"), (2.15, "balanced"), (0.85, "train_df\nval_df\ntest_df")]
    for y, name in names:
        text(ax, 0.2, y, name, mono=True, size=9.5, ha="left", weight="bold")
    steps = [(4.35, 3.25, "load_sms_spam"), (3.25, 2.15, "balance_classes"), (2.15, 0.85, "random_split")]
    for y_from, y_to, fn in steps:
        arrow(ax, (0.55, y_from - 0.3), (0.55, y_to + (0.42 if fn == "random_split" else 0.22)), fn,
              label_side="right", label_offset=0.06, size=8.5, label_color=INK)
    # the raw file: one label<TAB>message per line
    raw = "ham\\tGo until jurong point, crazy.. Available only ...\nham\\tOk lar... Joking wif u oni...\n" \
          "spam\\tFree entry in 2 a wkly comp to win FA Cup fina..."
    box(ax, x0 + 3.05, 4.35, 6.1, 0.72, kind="text")
    text(ax, x0 + 0.15, 4.35, raw, mono=True, size=8, ha="left")
    text(ax, x0 + 6.1, 4.8, "5,574 lines", size=SMALL, color=MUTED, ha="right")
    # df: 4,827 ham and 747 spam (the value_counts of section 6.2)
    counts = {"ham": 4827, "spam": 747}
    _bar(ax, x0, 3.25, counts["ham"] * scale, 0.42, HAM, label="ham 4,827")
    _bar(ax, x0 + counts["ham"] * scale, 3.25, counts["spam"] * scale, 0.42, SPAM, label="spam 747", size=8)
    text(ax, x0 + 6.1, 3.6, "5,574 rows, 13% spam", size=SMALL, color=MUTED, ha="right")
    # balanced: 747 of each, same scale
    _bar(ax, x0, 2.15, 747 * scale, 0.42, HAM, label="ham 747", size=8)
    _bar(ax, x0 + 747 * scale, 2.15, 747 * scale, 0.42, SPAM, label="spam 747", size=8)
    text(ax, x0 + 1494 * scale + 0.12, 2.15, "1,494 rows: a random 747 of the ham messages (seed 123)",
         size=SMALL, color=MUTED, ha="left")
    # the split, magnified: 1,494 rows now span the full 6.1 inches (counts as section 6.2 prints them)
    zoom = 6.1 / 1494
    for xb in (x0, x0 + 1494 * scale):  # dashed guides from the balanced bar to the magnified split
        ax.plot([xb, x0 + (xb - x0) / scale * zoom], [1.94, 1.27], color=MUTED, lw=0.8, ls="--", zorder=1)
    text(ax, x0 + 3.6, 1.5, "magnified", size=8, color=MUTED)
    parts = [("train", 1045, 517, "70%"), ("validation", 149, 79, "10%"), ("test", 300, 151, "20%")]
    x = x0
    for name, n, spam, frac in parts:
        w = n * zoom
        _bar(ax, x, 1.12, w * (n - spam) / n, 0.26, HAM)  # left: the ham share, right: the spam share
        _bar(ax, x + w * (n - spam) / n, 1.12, w * spam / n, 0.26, SPAM)
        ax.add_patch(Rectangle((x, 0.99), w, 0.26, fill=False, edgecolor=INK, linewidth=1.4, zorder=3))
        text(ax, x + w / 2, 0.88, name, size=8.5, mono=True, va="top", weight="bold")
        text(ax, x + w / 2, 0.62, f"{n:,} ({frac})\n{spam / n:.1%} spam", size=8, mono=True, color=MUTED,
             va="top")
        x += w
    return fig


@figure("ch06_padding", NB)
def padding() -> Figure:
    """Every message padded with id 50256 to max_length = 120, and a longer one truncated to it."""
    fig, ax = canvas(9.2, 5.3)
    # zoom on train_dataset[0]: 'Dude how do you like the buff wind.' (section 6.3 prints these ids)
    toks = ["D", "ude", "␣how", "␣do", "␣you", "␣like", "␣the", "␣buff", "␣wind", "."]
    ids = [35, 2507, 703, 466, 345, 588, 262, 6940, 2344, 13]
    cw, x0 = 0.54, 0.5
    text(ax, 0.2, 5.05, "train_dataset[0]: a 10-token ham message, padded to max_length",
         size=10, ha="left", weight="bold")
    labels = [str(i) for i in ids] + [str(PAD_ID)] * 2 + ["…"] + [str(PAD_ID)] * 2
    fills = [GREY[0]] * 10 + [RED[0]] * 5
    centres = cells(ax, x0, 4.4, labels, cell_w=cw, cell_h=0.38, kind="id", fills=fills, size=8)
    for (cx, cy), tok in zip(centres, toks):
        text(ax, cx, cy + 0.34, tok, mono=True, size=8, color=BLUE[1])
    for (cx, cy), pos in zip(centres, list(range(12)) + [""] + [118, 119]):
        text(ax, cx, cy - 0.3, str(pos), mono=True, size=7.5, color=MUTED)
    text(ax, centres[11][0] + cw * 1.5, 4.62, "<|endoftext|> × 110", mono=True, size=8, color=RED[1])
    brace(ax, x0, x0 + 15 * cw, 3.7, "train_dataset.input_ids[0]: (max_length,) = (120,)")
    # to scale: one strip per message, 0.055 inches per token
    per_tok, sx = 0.055, 1.75
    text(ax, 0.2, 2.95, "tokens per message, to scale", size=10, ha="left", va="bottom", weight="bold")
    rows = [("train", 10), ("train", 34), ("train", 87), ("train (longest)", 120), ("test", 132)]
    for i, (name, n) in enumerate(rows):
        y = 2.55 - i * 0.42
        text(ax, 0.2, y, name, size=8.5, ha="left")
        text(ax, sx - 0.08, y, f"{n:3d}", mono=True, size=8.5, ha="right")
        kept = min(n, 120)
        _bar(ax, sx, y, kept * per_tok, 0.28, GREY)
        if kept < 120:
            _bar(ax, sx + kept * per_tok, y, (120 - kept) * per_tok, 0.28, RED, hatch="////")
        if n > 120:
            _bar(ax, sx + 120 * per_tok, y, (n - 120) * per_tok, 0.28, ("#FFFFFF", MUTED), hatch="xx")
    xl = sx + 120 * per_tok
    ax.plot([xl, xl], [0.72, 2.85], color=INK, lw=1.2, ls="--", zorder=4)
    text(ax, xl, 2.95, "max_length = 120 (the longest training message)", mono=True, size=8.5, ha="right",
         va="bottom")
    text(ax, sx, 0.52, "input_ids: (1045, 120) train, (149, 120) validation, (300, 120) test;"
         "  a batch: (batch, max_length) = (8, 120)", mono=True, size=8, ha="left", color=MUTED)
    legend = [(GREY, None, "token ids of the message"), (RED, "////", f"pad: {PAD_ID} (<|endoftext|>)"),
              (("#FFFFFF", MUTED), "xx", "cut off (truncated)")]
    for j, (colours, hatch, label) in enumerate(legend):
        _bar(ax, 0.2 + j * 3.0, 0.2, 0.32, 0.2, colours, hatch=hatch)
        text(ax, 0.6 + j * 3.0, 0.2, label, size=8.5, ha="left")
    return fig


# Parameters of the committed run's model: GPT-2 124M shapes with context_length 256 and qkv_bias=True.
VOCAB, CONTEXT, EMB, LAYERS, HIDDEN = 50257, 256, 768, 12, 4 * 768
BLOCK = 3 * (EMB * EMB + EMB) + (EMB * EMB + EMB) + 2 * 2 * EMB + (EMB * HIDDEN + HIDDEN) + (HIDDEN * EMB + EMB)
NORM, CLASS_HEAD = 2 * EMB, EMB * 2 + 2
TOTAL = VOCAB * EMB + CONTEXT * EMB + LAYERS * BLOCK + NORM + CLASS_HEAD
assert TOTAL == 123_851_522 and BLOCK + NORM + CLASS_HEAD == 7_090_946  # the notebook's printout (section 6.5)


@figure("ch06_class_head", NB)
def class_head() -> Figure:
    """out_head: Linear(emb_dim, vocab_size) is swapped for a fresh Linear(emb_dim, num_classes)."""
    fig, ax = canvas(9.0, 5.4)
    text(ax, 0.2, 5.15, "add_classification_head(model, num_classes=2)", mono=True, size=10, ha="left",
         weight="bold")
    box(ax, 4.5, 0.4, 1.2, 0.44, "input_ids", kind="id", mono=True, size=9)
    text(ax, 5.2, 0.4, shape("batch", "tokens"), mono=True, size=SMALL, color=MUTED, ha="left")
    # the pretrained body, kept as it is
    names = ["tok_emb + pos_emb", f"trf_blocks × {LAYERS}", "final_norm"]
    for i, name in enumerate(names):
        box(ax, 4.5, 1.2 + i * 0.68, 2.0, 0.42, name, kind="layer", mono=True, size=8.5)
    for y0, y1 in [(0.62, 0.99), (1.41, 1.67), (2.09, 2.35)]:
        arrow(ax, (4.5, y0), (4.5, y1))
    region(ax, 3.3, 0.88, 5.7, 2.77, kind="layer")
    text(ax, 3.15, 1.85, "pretrained,\nkept as they are", size=8.5, color=YELLOW[1], ha="right")
    # final_norm's output forks to the old head (removed) and the new one
    arrow(ax, (4.5, 2.77), (4.5, 3.1), head=False)
    text(ax, 4.62, 3.0, shape("batch", "tokens", "emb_dim"), mono=True, size=SMALL, color=MUTED, ha="left")
    ax.plot([2.2, 6.2], [3.1, 3.1], color=INK, lw=1.3, zorder=3)
    for x in (2.2, 6.2):
        arrow(ax, (x, 3.1), (x, 3.4), dashed=x < 4)
    left, bottom, right, top = box(ax, 2.2, 3.72, 2.1, 0.62, "out_head\nLinear(768, 50257)", kind="frozen",
                                   mono=True, size=8.5, dashed=True, text_color=MUTED)
    _cross(ax, left + 0.15, bottom + 0.06, right - 0.15, top - 0.06)
    text(ax, 0.2, 3.1, f"{VOCAB * EMB:,}\nweights, removed", size=SMALL, color=RED[1], ha="left")
    box(ax, 6.2, 3.72, 2.1, 0.62, "out_head\nLinear(768, 2)", kind="trainable", mono=True, size=8.5)
    text(ax, 7.4, 3.72, f"new, random:\n{CLASS_HEAD:,} parameters\n(768 × 2 + 2 biases)", size=SMALL,
         color=ORANGE[1], ha="left")
    # what each head gives: scores for every position
    arrow(ax, (2.2, 4.04), (2.2, 4.36), dashed=True, color=MUTED)
    cells(ax, 1.39, 4.72, ["", "", "", "…", "", ""], cell_w=0.27, cell_h=0.34, kind="logits")
    text(ax, 3.2, 4.55, shape("batch", "tokens", "vocab_size") + "\nscores of the next token", mono=True,
         size=8, color=MUTED, ha="left")
    arrow(ax, (6.2, 4.04), (6.2, 4.36))
    for j, label in enumerate(["ham", "spam"]):
        box(ax, 5.85 + j * 0.7, 4.55, 0.62, 0.36, label, kind="logits", mono=True, size=8.5)
    text(ax, 7.0, 4.55, "(batch, tokens,\n num_classes)\ne.g. (8, 120, 2)", mono=True, size=8,
         color=MUTED, ha="left")
    return fig


@figure("ch06_frozen_layers", NB)
def frozen_layers() -> Figure:
    """Which modules freeze_for_finetuning leaves trainable for trainable="head", "last_block" and "all"."""
    fig, ax = canvas(9.0, 5.0)
    modules = [("out_head", CLASS_HEAD), ("final_norm", NORM), ("trf_blocks[11]", BLOCK),
               ("trf_blocks[10]", BLOCK), ("trf_blocks[1:10]", 9 * BLOCK), ("trf_blocks[0]", BLOCK),
               ("pos_emb", CONTEXT * EMB), ("tok_emb", VOCAB * EMB)]
    trains = {"head": 1, "last_block": 3, "all": len(modules)}  # how many modules from the top train
    top, row_h = 4.05, 0.41
    text(ax, 0.2, 4.78, "freeze_for_finetuning(model, trainable=...)", mono=True, size=10, ha="left",
         weight="bold")
    text(ax, 2.95, 4.4, "parameters", size=SMALL, color=MUTED, ha="right")
    for i, (name, n) in enumerate(modules):
        y = top - i * row_h
        text(ax, 0.2, y, name, mono=True, size=9, ha="left")
        text(ax, 2.95, y, f"{n:,}", mono=True, size=9, ha="right")
    for c, (option, k) in enumerate(trains.items()):
        x = 4.3 + c * 1.75
        text(ax, x, 4.4, f'"{option}"', mono=True, size=9.5, weight="bold" if option == "last_block" else "normal")
        for i in range(len(modules)):
            kind = "trainable" if i < k else "frozen"
            box(ax, x, top - i * row_h, 1.45, row_h - 0.08, "trains" if i < k else "frozen", kind=kind,
                size=8, rounded=False, text_color=ORANGE[1] if i < k else MUTED)
        n_train = sum(n for _, n in modules[:k])
        y_sum = top - len(modules) * row_h + 0.05
        text(ax, x, y_sum, f"{n_train:,}", mono=True, size=9, weight="bold", color=ORANGE[1])
        text(ax, x, y_sum - 0.27, f"{n_train / TOTAL:.3%}" if n_train < 1e5 else f"{n_train / TOTAL:.1%}",
             mono=True, size=8.5, color=MUTED)
    text(ax, 0.2, top - len(modules) * row_h + 0.05, "trainable", size=9, ha="left", weight="bold",
         color=ORANGE[1])
    text(ax, 2.95, top - len(modules) * row_h + 0.05, f"of {TOTAL:,}", mono=True, size=8.5, ha="right",
         color=MUTED)
    text(ax, 6.05, 4.62, "the default", size=8, color=MUTED)
    text(ax, 0.2, 0.2, f"Counts of this run's model: pos_emb is context_length × emb_dim = {CONTEXT} × {EMB} "
         "(OpenAI's GPT-2: 1,024 × 768).", size=8, color=MUTED, ha="left")
    return fig


@figure("ch06_last_token", NB)
def last_token() -> Figure:
    """Under the causal mask only the last positions have seen the whole message; pads come after it."""
    fig, ax = canvas(9.0, 5.2)
    toks = ["Where", "␣r", "␣we", "␣meeting", "?", "<|endoftext|>", "<|endoftext|>"]  # a 5-token training message
    n_real, n = 5, len(toks)
    values = [[0.6 if j < n_real else 0.2 for j in range(n)] for _ in range(n)]
    masked = [[j > i for j in range(n)] for i in range(n)]
    cell, x0, y0 = 0.42, 1.95, 3.8
    text(ax, 0.2, 5.0, "What the output at each position has seen (causal attention)", size=10.5, ha="left",
         weight="bold")
    matrix(ax, x0, y0, values, cell=cell, fmt=None, masked=masked, row_labels=[f"{i} {t}" for i, t in enumerate(toks)],
           col_labels=toks, col_label_rotation=50, size=8)
    text(ax, x0 + n * cell / 2, y0 - n * cell - 0.22, "tokens it can attend to", size=8.5, color=MUTED)
    text(ax, 0.2, y0 - n * cell / 2, "output at\nposition", size=8.5, color=MUTED, ha="left")
    notes = [(0, 'pool="first"', "has seen one token: a control"),
             (4, 'pool="last_real"',
              "has seen exactly the message: padding\ncannot change it (max diff 0.0e+00 above)"),
             (6, 'pool="last"', "has seen the message and every pad:\npadding changes it (max diff 0.86 above)")]
    xr = x0 + n * cell
    for row, name, note in notes:
        y = y0 - (row + 0.5) * cell
        arrow(ax, (xr + 0.08, y), (xr + 0.5, y), color=ORANGE[1])
        text(ax, xr + 0.6, y, name, mono=True, size=9, ha="left", weight="bold")
        text(ax, xr + 0.6, y - 0.15, note, size=8.5, ha="left", va="top")
    legend = [(HEAT(0.6), "a message token"), (HEAT(0.2), "a pad (50256)")]
    for k, (colour, label) in enumerate(legend):
        ax.add_patch(Rectangle((0.2 + k * 2.2, 0.12), 0.3, 0.22, facecolor=colour, edgecolor="#BBBBBB", zorder=2))
        text(ax, 0.6 + k * 2.2, 0.23, label, size=8.5, ha="left")
    ax.add_patch(Rectangle((4.6, 0.12), 0.3, 0.22, facecolor=RED[0], edgecolor=RED[1], hatch="///", zorder=2))
    text(ax, 5.0, 0.23, "a later position: masked", size=8.5, ha="left")
    return fig


def _pool(ids: list[int], logits: list[list[float]], pool: str) -> tuple[list[float], list[int]]:
    """pool_logits for one text in plain Python: the pooled scores and the positions they come from."""
    real = [t for t, i in enumerate(ids) if i != PAD_ID]
    used = {"last": [len(ids) - 1], "first": [0], "last_real": [max(len(real) - 1, 0)], "mean": real}[pool]
    return [sum(logits[t][c] for t in used) / len(used) for c in range(len(logits[0]))], used


@figure("ch06_pooling", NB)
def pooling() -> Figure:
    """pool_logits on the notebook's toy batch: which positions each of the four POOLING options reads."""
    fig, ax = canvas(9.2, 5.0)
    toy = [[5, 6, 7, PAD_ID], [8, 9, PAD_ID, PAD_ID]]  # section 6.6's toy batch, (2, 4)
    toy_logits = [[[2.0 * (4 * b + t), 2.0 * (4 * b + t) + 1] for t in range(4)]
                  for b in range(2)]  # torch.arange(16.0).view(2, 4, 2)
    printed = {"last": [[6, 7], [14, 15]], "last_real": [[4, 5], [10, 11]], "first": [[0, 1], [8, 9]],
               "mean": [[2, 3], [9, 10]]}  # the notebook's output
    text(ax, 0.2, 4.8, "pool_logits(toy_logits, toy, pool):  (batch, tokens, num_classes) = (2, 4, 2)  →  "
         "(batch, num_classes) = (2, 2)", mono=True, size=8.5, ha="left")
    notes = {"last": "the last position", "last_real": "the last non-pad token", "first": "the first token",
             "mean": "the average over real tokens"}
    cw, ch = 0.68, 0.52
    for k, pool in enumerate(printed):
        px, py = 0.2 + (k % 2) * 4.5, 4.3 - (k // 2) * 2.0  # top-left corner of the panel
        text(ax, px, py, f'pool="{pool}"', mono=True, size=9.5, ha="left", weight="bold")
        text(ax, px + 1.95, py, notes[pool], size=8.5, ha="left", color=MUTED)
        for b in range(2):
            scores, used = _pool(toy[b], toy_logits[b], pool)
            assert scores == printed[pool][b]
            y = py - 0.55 - b * (ch + 0.12)
            for t in range(4):
                is_pad, is_used = toy[b][t] == PAD_ID, t in used
                colours = ORANGE if is_used else WHITE
                _bar(ax, px + t * cw, y, cw - 0.06, ch, colours)
                text(ax, px + t * cw + cw / 2 - 0.03, y + 0.11, str(toy[b][t]), mono=True, size=7.5,
                     color=RED[1] if is_pad else BLUE[1])
                logit = toy_logits[b][t]
                text(ax, px + t * cw + cw / 2 - 0.03, y - 0.1, f"{logit[0]:.0f}, {logit[1]:.0f}", mono=True, size=8)
            arrow(ax, (px + 4 * cw + 0.05, y), (px + 4 * cw + 0.45, y))
            box(ax, px + 4 * cw + 1.02, y, 1.1, ch - 0.1, f"[{scores[0]:.1f}, {scores[1]:.1f}]", kind="logits",
                mono=True, size=8.5, weight="bold")
    text(ax, 0.2, 0.35, "each cell: the token id (red: the pad 50256) over its two class scores;"
         " orange: the positions that pool reads", size=8.5, ha="left", color=MUTED)
    return fig


@figure("ch06_logits_to_label", NB)
def logits_to_label() -> Figure:
    """Class scores (batch, num_classes) -> softmax probabilities, argmax labels, accuracy and cross-entropy."""
    fig, ax = canvas(9.2, 4.3)
    logits = [[1.5, -0.5], [-0.2, 1.3], [0.8, 0.4]]  # illustrative scores for a batch of 3 texts
    labels = [0, 1, 1]
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits]
    preds = [max(range(2), key=row.__getitem__) for row in logits]
    nll = [-math.log(p[y]) for p, y in zip(probs, labels)]
    names = ("ham", "spam")
    top, cell = 3.2, 0.55
    ys = [top - (i + 0.5) * cell for i in range(3)]
    heads = [(1.5, "logits", shape("batch", "num_classes")), (3.85, "probabilities", shape("batch", "num_classes")),
             (5.6, "predicted", shape("batch")), (6.6, "labels", shape("batch")), (8.2, "−log p[label]", "")]
    for x, name, shp in heads:
        text(ax, x, 4.05, name, size=9.5, weight="bold")
        text(ax, x, 3.8, shp, mono=True, size=8, color=MUTED)
    for i, y in enumerate(ys):
        text(ax, 0.2, y, f"text {i}", size=8.5, ha="left", color=MUTED)
        cells(ax, 0.9, y + cell / 2, [f"{v:+.1f}" for v in logits[i]], cell_w=0.6, cell_h=cell, kind="logits",
              size=8.5)
        box(ax, 5.6, y, 0.8, cell - 0.1, f"{preds[i]} {names[preds[i]]}", kind="id", mono=True, size=8.5)
        box(ax, 6.6, y, 0.8, cell - 0.1, f"{labels[i]} {names[labels[i]]}", kind="id", mono=True, size=8.5)
        right = preds[i] == labels[i]
        text(ax, 7.25, y, "✓" if right else "✗", size=13, color=INK if right else RED[1], weight="bold")
        box(ax, 8.2, y, 0.8, cell - 0.1, f"{nll[i]:.3f}", kind="loss", mono=True, size=8.5)
    for j, name in enumerate(names):
        text(ax, 0.9 + (j + 0.5) * 0.6, top + 0.08, name, mono=True, size=8, va="bottom")
    matrix(ax, 3.25, top, probs, cell=cell, fmt="{:.3f}", col_labels=names, size=8)
    arrow(ax, (2.2, ys[1]), (3.15, ys[1]), "softmax\n(dim=-1)", label_side="above", label_offset=0.3)
    arrow(ax, (4.45, ys[1]), (5.15, ys[1]), "argmax\n(dim=-1)", label_side="above", label_offset=0.3)
    n_right = sum(p == y for p, y in zip(preds, labels))
    lines = [(f"accuracy: (logits.argmax(dim=-1) == labels) is right for {n_right} of {len(labels)} texts: "
              f"accuracy {n_right / len(labels):.1%}", INK),
             (f"loss: F.cross_entropy(logits, labels) = mean of −log p[label] = {sum(nll) / len(nll):.3f}", RED[1]),
             (f"classify_text: the predicted label and its probability, e.g. (\"{names[preds[0]]}\", "
              f"{max(probs[0]):.3f}) for text 0", INK)]
    for k, (line, colour) in enumerate(lines):
        text(ax, 0.2, 1.2 - k * 0.36, line, mono=True, size=8.5, ha="left", color=colour)
    text(ax, 0.2, 0.12, "Illustrative scores; argmax of the logits equals argmax of the probabilities "
         "(softmax keeps the order).", size=8, ha="left", va="bottom", color=MUTED)
    return fig


@figure("ch06_train_model_reuse", NB)
def train_model_reuse() -> Figure:
    """Chapter 5's train_model runs unchanged; the classifier plugs in its own loss_fn and eval_fn."""
    fig, ax = canvas(9.2, 5.0)
    text(ax, 0.2, 4.8, "train_model(model, train_loader, val_loader, optimizer, device, cfg, loss_fn=..., eval_fn=...)",
         mono=True, size=8.5, ha="left", weight="bold")
    region(ax, 0.2, 0.95, 5.25, 4.45, "chapter 5's loop, unchanged", kind="op")
    steps = [(3.75, "batch = next(train_loader)", "input_ids (8, 120), labels (8,)"),
             (2.95, "loss = loss_fn(batch, model, device, amp_dtype)", "a single number"),
             (2.15, "loss.backward(); optimizer.step()", "AdamW (lr 5e-5) on the requires_grad parameters"),
             (1.35, "every eval_freq = 26 steps:", "metrics = eval_fn(model, train_loader, val_loader, ...)")]
    for y, code, note in steps:
        box(ax, 2.95, y, 4.4, 0.6, kind="op")
        text(ax, 0.9, y + 0.12, code, mono=True, size=8.5, ha="left")
        text(ax, 0.9, y - 0.14, note, mono=True, size=8, ha="left", color=MUTED)
    for y0, y1 in [(3.45, 3.25), (2.65, 2.45), (1.85, 1.65)]:
        arrow(ax, (2.95, y0), (2.95, y1))
    arrow(ax, (0.75, 2.15), (0.75, 3.75), curve=-0.6, color=MUTED)  # back to the next batch
    # what chapter 6 passes in, and what chapter 5 used there
    plugins = [(2.95, "loss_fn=classification_loss", "cross-entropy of the pooled class scores",
                "chapter 5: next-token cross-entropy"),
               (1.35, "eval_fn=evaluate_classifier", "train_loss, val_loss, train_acc, val_acc",
                "chapter 5: train_loss, val_loss")]
    for y, name, what, before in plugins:
        box(ax, 7.4, y, 3.2, 0.95, kind="loss")
        text(ax, 7.4, y + 0.25, name, mono=True, size=8.5, weight="bold")
        text(ax, 7.4, y - 0.01, what, size=8.2)
        text(ax, 7.4, y - 0.27, before, size=8, color=MUTED)
        arrow(ax, (5.78, y), (5.22, y), dashed=True)
    steps_per_epoch = 1045 // 8  # 1,045 training messages, batches of 8, drop_last=True; the notebook trains 5 epochs
    text(ax, 0.2, 0.62, f"{steps_per_epoch} steps in one epoch, an evaluation every {steps_per_epoch // 5}; "
         "train_model returns history,",
         size=8.5, ha="left", color=MUTED)
    text(ax, 0.2, 0.3, "a dict of lists: step, tokens_seen, examples_seen, lr, "
         "train_loss, val_loss, train_acc, val_acc",
         mono=True, size=8, ha="left")
    return fig


LORA_NB = "ch06_classification/lora.ipynb"


@figure("ch06_lora_layer", LORA_NB)
def lora_layer() -> Figure:
    """LinearWithLoRA: the frozen linear(x) plus the trainable (alpha / rank) * x @ A @ B beside it."""
    fig, ax = canvas(9.0, 4.7)
    rank = 16
    text(ax, 0.2, 4.5, "LinearWithLoRA(linear, rank, alpha):  linear(x) + lora(x)", mono=True, size=10,
         ha="left", weight="bold")
    box(ax, 0.6, 2.35, 0.7, 0.5, "x", kind="embedding", mono=True, size=10)
    text(ax, 0.6, 1.9, shape("...", "in_dim"), mono=True, size=8, color=MUTED)
    ax.plot([0.95, 1.35, 1.35], [2.35, 2.35, 3.55], color=INK, lw=1.3, zorder=3)
    arrow(ax, (1.35, 3.55), (3.58, 3.55))
    arrow(ax, (1.35, 2.35), (1.35, 1.3), head=False)
    # the frozen path
    region(ax, 2.4, 2.65, 5.4, 4.2, "linear (frozen)", kind="frozen")
    box(ax, 3.9, 3.55, 0.6, 0.6, "W", kind="frozen", mono=True, size=11, rounded=False)
    text(ax, 3.9, 2.95, "weight (out_dim, in_dim), bias", mono=True, size=8, color=MUTED)
    arrow(ax, (1.35, 1.3), (2.7, 1.3))
    # the low-rank path, drawn with A tall and thin and B short and wide
    region(ax, 2.2, 0.5, 6.55, 2.35, "lora: LoRALayer (trains)", kind="trainable")
    box(ax, 2.85, 1.3, 0.28, 1.0, "A", kind="trainable", mono=True, size=10, rounded=False)
    text(ax, 2.85, 0.68, shape("in_dim", "rank"), mono=True, size=8, color=MUTED)
    arrow(ax, (3.05, 1.3), (3.85, 1.3), shape("...", "rank"), label_side="above", size=7.5)
    box(ax, 4.45, 1.3, 1.0, 0.28, "B", kind="trainable", mono=True, size=10, rounded=False)
    text(ax, 4.45, 0.95, shape("rank", "out_dim") + "\nstarts at zero", mono=True, size=8, color=MUTED, va="top")
    arrow(ax, (5.0, 1.3), (5.45, 1.3))
    box(ax, 5.95, 1.3, 0.9, 0.5, "× alpha\n/ rank", kind="op", mono=True, size=8.5)
    # the sum
    box(ax, 7.15, 2.35, 0.45, 0.45, "+", kind="op", size=13)
    arrow(ax, (4.22, 3.55), (7.0, 2.55))
    arrow(ax, (6.4, 1.3), (7.0, 2.15))
    arrow(ax, (7.4, 2.35), (7.95, 2.35))
    text(ax, 8.45, 2.35, shape("...", "out_dim"), mono=True, size=8.5)
    w_numbers, ab_numbers = EMB * EMB, 2 * rank * EMB
    text(ax, 0.2, 0.22, f"A 768 × 768 layer at rank {rank}: W holds {w_numbers:,} numbers, A and B together "
         f"{ab_numbers:,} ({ab_numbers / w_numbers:.1%} of W).  merged(): W + (alpha / rank) · (A @ B).T",
         size=8, ha="left", color=MUTED)
    return fig


@figure("ch06_lora_targets", LORA_NB)
def lora_targets() -> Figure:
    """Which layers apply_lora wraps in GPT-2 124M, and the adapter parameters each adds at rank 16."""
    fig, ax = canvas(9.0, 4.9)
    rank = 16
    layers = [("att.W_query", EMB, EMB), ("att.W_key", EMB, EMB), ("att.W_value", EMB, EMB),
              ("att.out_proj", EMB, EMB), ("ff.layers[0]", EMB, HIDDEN), ("ff.layers[2]", HIDDEN, EMB)]
    text(ax, 0.2, 4.7, f"apply_lora(model, rank={rank}, alpha={rank}, skip=(\"out_head\",))", mono=True, size=10,
         ha="left", weight="bold")
    heads = [(0.2, "left", "nn.Linear in each trf_blocks[i]"), (4.5, "right", "frozen weight"),
             (6.6, "right", "rank × (in_dim + out_dim)")]
    for x, ha, head in heads:
        text(ax, x, 4.3, head, size=8.5, ha=ha, color=MUTED)
    per_block = 0
    for i, (name, d_in, d_out) in enumerate(layers):
        y = 3.9 - i * 0.38
        adapter = rank * (d_in + d_out)
        per_block += adapter
        text(ax, 0.2, y, name, mono=True, size=8.5, ha="left")
        text(ax, 1.45, y, f"Linear({d_in}, {d_out})", mono=True, size=8.5, ha="left")
        box(ax, 3.85, y, 1.3, 0.3, f"{d_in * d_out:,}", kind="frozen", mono=True, size=8, rounded=False,
            text_color=MUTED)
        box(ax, 5.95, y, 1.3, 0.3, f"{adapter:,}", kind="trainable", mono=True, size=8, rounded=False)
    n_lora = LAYERS * per_block
    assert n_lora == 2_654_208  # the notebook's printout for rank 16
    summary = [(f"one block: {len(layers)} wrapped layers", f"{per_block:,}"),
               (f"× {LAYERS} blocks: {LAYERS * len(layers)} wrapped layers", f"{n_lora:,}"),
               ("out_head Linear(768, 2): skipped, trained in full", f"{CLASS_HEAD:,}")]
    for k, (what, n) in enumerate(summary):
        y = 1.45 - k * 0.33
        text(ax, 0.2, y, what, size=8.5, ha="left")
        text(ax, 6.6, y, n, mono=True, size=8.5, ha="right")
    ax.plot([0.2, 6.6], [0.42, 0.42], color=MUTED, lw=0.8)
    total = n_lora + CLASS_HEAD
    text(ax, 0.2, 0.22, "trainable", size=9, ha="left", weight="bold", color=ORANGE[1])
    text(ax, 6.6, 0.22, f"{total:,}", mono=True, size=9, ha="right", weight="bold", color=ORANGE[1])
    text(ax, 6.85, 0.22, f"{total / TOTAL:.1%} of {TOTAL:,}", size=8.5, ha="left", color=MUTED)
    text(ax, 6.85, 2.95, "Everything else\n(tok_emb, pos_emb,\nthe norms, the biases\nof the wrapped layers)\n"
         "stays frozen.", size=8.5, ha="left", color=MUTED)
    return fig
