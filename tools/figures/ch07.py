"""Concept diagrams for chapter 7 (ch07_instruction/ch07.ipynb): the prompt template, the collate function
and its -100 targets, length bucketing, batched generation with left padding and a KV cache, and the scores.

Every number is computed here with the chapter's own code (`format_prompt`, `instruction_collate`,
`LengthBucketSampler`, `rouge_tokens`, `lcs_length`) or copied from the notebook's committed outputs, named
where it is used.
"""
from __future__ import annotations

import math

import tiktoken
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ch07_instruction.instruction import (
    ALPACA_PREAMBLE, LengthBucketSampler, format_example, format_prompt, instruction_collate, lcs_length,
    rouge_l, rouge_tokens, split_data,
)
from ch07_instruction.dpo import dpo_loss

from . import figure
from .style import BLUE, GREY, INK, MONO, MUTED, ORANGE, RED, SMALL, arrow, box, brace, canvas, matrix, shape, text

NB = "ch07_instruction/ch07.ipynb"
PAD = 50256  # <|endoftext|>, the pad id
CHAR_W = 0.6 / 72  # width of one DejaVu Sans Mono character per point of font size, in inches

# data[50] of instruction-data.json (printed in the notebook's section 7.1)
RECORD_50 = {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
             "output": "The correct spelling is 'Occasion.'"}
# The two shortest training examples (train_data[70] and train_data[14]), shown in the notebook's cell
# "The same on two real examples"
SHORTEST = [{"instruction": "What is the chemical symbol for aluminum?", "input": "", "output": "Al."},
            {"instruction": "Suggest an alternate word for 'happy'.", "input": "", "output": "joyful."}]
# The notebook's toy batch: (ids, prompt length)
TOY = [([0, 1, 2, 3, 4], 2), ([5, 6], 1), ([7, 8, 9], 2)]
# len(ids) + 1 of the first 64 training examples (InstructionDataset(train_data, tokenizer), "alpaca"),
# the notebook's train_lengths[:64]
TRAIN_LENGTHS_64 = [75, 60, 45, 62, 59, 54, 62, 56, 62, 54, 52, 63, 45, 52, 42, 50, 62, 57, 62, 46, 72, 61,
                    59, 49, 60, 52, 50, 47, 52, 52, 62, 56, 47, 55, 47, 58, 57, 51, 64, 67, 54, 47, 58, 63,
                    53, 52, 64, 53, 56, 56, 58, 58, 66, 69, 50, 45, 71, 53, 62, 52, 51, 64, 60, 43]
ANSWER = ORANGE  # the answer (entry["output"] and its end-of-text): what the model learns to write


def _tokenizer():
    """GPT-2's tokenizer (offline with $TIKTOKEN_CACHE_DIR, as for the notebooks)."""
    return tiktoken.get_encoding("gpt2")


def _show(token: str) -> str:
    """A token string as the figures print it: newline as \\n, a leading space as a visible mark."""
    return token.replace("\n", "\\n").replace(" ", "␣")


def _cell(ax, x: float, y: float, w: float, h: float, label: str = "", *, fill: str = GREY[0],
          edge: str = GREY[1], hatch: str | None = None, size: float = SMALL, color: str = INK) -> None:
    """One square cell with its bottom-left corner at (x, y), optionally hatched."""
    ax.add_patch(Rectangle((x, y), w, h, facecolor=fill, edgecolor=edge, hatch=hatch, linewidth=0.9, zorder=2))
    if label != "":  # on a white patch where the cell is hatched, so the label stays readable
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", family=MONO, fontsize=size, color=color,
                zorder=5, bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none") if hatch else None)


# Cell looks shared by the grid figures: name -> (fill, edge, hatch, text colour)
LOOK = {
    "id": (GREY[0], GREY[1], None, INK),
    "prompt": (BLUE[0], BLUE[1], None, INK),
    "answer": (ANSWER[0], ANSWER[1], None, INK),
    "eot": (ANSWER[0], ANSWER[1], None, INK),
    "pad": ("#FFFFFF", GREY[1], None, MUTED),
    "pad-100": (RED[0], RED[1], "///", RED[1]),
    "prompt-100": (RED[0], RED[1], None, RED[1]),
    "dropped": ("#F4F4F4", "#BBBBBB", "....", MUTED),
}


def _grid(ax, x: float, top: float, rows: list[list[tuple[str, str]]], cw: float = 0.56, ch: float = 0.3,
          size: float = SMALL) -> tuple[float, float]:
    """Rows of (label, look) cells, top-left at (x, top); returns the grid's right and bottom edges."""
    for r, row in enumerate(rows):
        for c, (label, look) in enumerate(row):
            fill, edge, hatch, color = LOOK[look]
            _cell(ax, x + c * cw, top - (r + 1) * ch, cw, ch, label, fill=fill, edge=edge, hatch=hatch,
                  size=size, color=color)
    return x + len(rows[0]) * cw, top - len(rows) * ch


def _legend(ax, x: float, y: float, items: list[tuple[str, str]], gap: float = 0.35) -> None:
    """A one-line legend of cell looks: [(look, description)], starting at (x, y)."""
    for look, label in items:
        fill, edge, hatch, _ = LOOK[look]
        _cell(ax, x, y - 0.09, 0.26, 0.18, fill=fill, edge=edge, hatch=hatch)
        text(ax, x + 0.34, y, label, size=SMALL, ha="left")
        x += 0.34 + len(label) * 0.068 + gap


@figure("ch07_prompt_template", NB)
def prompt_template() -> Figure:
    """One record laid out by format_example: the fixed Alpaca text, the record's fields, the answer; then Phi-3."""
    fig, ax = canvas(9.5, 5.45)
    size, line_h, x0 = 7.6, 0.27, 0.85
    fields = {RECORD_50["instruction"]: ('entry["instruction"]', BLUE), RECORD_50["input"]: ('entry["input"]', BLUE),
              RECORD_50["output"]: ('entry["output"]', ANSWER), ALPACA_PREAMBLE: ("ALPACA_PREAMBLE", GREY)}

    def layout(top: float, style: str) -> list[float]:
        """Draw format_example(RECORD_50, style) line by line; returns the centre y of each line."""
        ys = []
        for i, line in enumerate(format_example(RECORD_50, style).split("\n")):
            y = top - i * line_h
            ys.append(y)
            if not line:
                continue
            name, (fill, edge) = fields.get(line, ("", GREY))
            end = x0 + len(line) * CHAR_W * size
            ax.add_patch(Rectangle((x0 - 0.06, y - 0.11), end - x0 + 0.12, 0.22, facecolor=fill, edgecolor=edge,
                                   linewidth=0.8, zorder=2))
            text(ax, x0, y, line, mono=True, size=size, ha="left")
            if name:
                text(ax, end + 0.2, y, "← " + name, mono=True, size=SMALL, color=edge, ha="left")
        return ys

    text(ax, 0.2, 5.25, 'format_example(data[50])   (style="alpaca", the default)', mono=True, size=9.5,
         weight="bold", ha="left")
    ys = layout(4.85, "alpaca")
    # brackets on the left: what format_prompt returns, and what format_example adds
    for x, (y_top, y_bot), label in [(0.58, (ys[0], ys[-2]), "format_prompt(entry)"),
                                     (0.33, (ys[0], ys[-1]), "format_example(entry)")]:
        ax.plot([x + 0.1, x, x, x + 0.1], [y_top + 0.12, y_top + 0.12, y_bot - 0.12, y_bot - 0.12], color=MUTED,
                lw=1.0, zorder=3)
        text(ax, x - 0.1, (y_top + y_bot) / 2, label, mono=True, size=SMALL, color=MUTED, rotation=90)
    notes = {"### Input:": '(only when entry["input"] is not empty)',
             "### Response:": "the prompt ends here, with the newline after this header"}
    for i, line in enumerate(format_example(RECORD_50).split("\n")):
        if line in notes:
            text(ax, x0 + len(line) * CHAR_W * size + 0.25, ys[i], notes[line], size=SMALL, color=MUTED, ha="left")

    text(ax, 0.2, 1.78, 'format_example(data[50], style="phi3")', mono=True, size=9.5, weight="bold", ha="left")
    layout(1.4, "phi3")

    for i, ((fill, edge), label) in enumerate([(GREY, "fixed text of the template"),
                                               (BLUE, "the record's instruction and input"),
                                               (ANSWER, "the answer the model learns to write")]):
        x, y = 6.4, 1.1 - i * 0.3
        ax.add_patch(Rectangle((x, y - 0.09), 0.3, 0.18, facecolor=fill, edgecolor=edge, lw=0.8, zorder=2))
        text(ax, x + 0.4, y, label, size=SMALL, ha="left")
    return fig


@figure("ch07_data_split", NB)
def data_split() -> Figure:
    """split_data cuts the file in order: the first 85% train, the next 10% test, the last 5% validation."""
    fig, ax = canvas(8.6, 2.4)
    train, val, test = split_data(list(range(1100)))
    x0, scale = 0.3, 7.9 / 1100
    text(ax, 0.3, 2.15, "split_data(data): the 1,100 records in file order (the file is already shuffled)",
         size=SMALL + 1, ha="left")
    parts = [("train_data", train, "trainable", 2.6, "center", "train_model learns from these"),
             ("test_data", test, "text", 5.3, "center", "answered and scored (7.5 to 7.7)"),
             ("val_data", val, "neutral", 8.3, "right", "val loss while training")]
    x = x0
    for name, part, kind, tx, ha, use in parts:
        w = len(part) * scale
        box(ax, x + w / 2, 1.55, w, 0.42, str(len(part)), kind=kind, rounded=False, mono=True, size=SMALL + 0.5)
        slice_ = f"data[{part[0]}:{part[-1] + 1}]"
        ax.plot([x + w / 2, tx - (0.6 if ha == "right" else 0)], [1.32, 0.95], color=MUTED, lw=0.8, zorder=1)
        text(ax, tx, 0.8, f"{name}: {len(part)} records", mono=True, size=SMALL + 0.5, ha=ha, weight="bold")
        text(ax, tx, 0.52, slice_, mono=True, size=SMALL, ha=ha, color=MUTED)
        text(ax, tx, 0.25, use, size=SMALL, ha=ha, color=MUTED)
        x += w
    return fig


@figure("ch07_collate_steps", NB)
def collate_steps() -> Figure:
    """instruction_collate on the toy batch: pad with end-of-text, shift by one, -100 on padding and the prompt."""
    fig, ax = canvas(9.5, 5.85)
    seqs = [ids + [PAD] for ids, _ in TOY]
    width = max(len(s) for s in seqs)
    padded = [s + [PAD] * (width - len(s)) for s in seqs]

    def look(row: int, pos: int) -> str:
        """How a cell of the padded sequence looks: a token, the end-of-text to learn, or padding."""
        n = len(TOY[row][0])
        return "id" if pos < n else ("eot" if pos == n else "pad")

    def target_rows(targets: list[list[int]], mask_prompt: bool) -> list[list[tuple[str, str]]]:
        rows = []
        for r, row in enumerate(targets):
            cells = []
            for p, v in enumerate(row):
                if v == -100:
                    prompt = mask_prompt and p < TOY[r][1] - 1
                    cells.append(("-100", "prompt-100" if prompt else "pad-100"))
                else:
                    cells.append((str(v), look(r, p + 1)))
            rows.append(cells)
        return rows

    row_names = [f"toy[{r}]" for r in range(len(TOY))]

    def names(x: float, top: float) -> None:
        for r, name in enumerate(row_names):
            text(ax, x, top - (r + 0.5) * 0.3, name, mono=True, size=SMALL, color=MUTED, ha="right")

    def title(x: float, y: float, s: str) -> None:
        text(ax, x, y, s, size=SMALL + 1, weight="bold", ha="left")

    # step 1
    title(0.2, 5.65, "1. append <|endoftext|> (50256) to each example, pad with 50256 to the longest")
    names(1.05, 5.35)
    right, _ = _grid(ax, 1.15, 5.35, [[(str(v), look(r, p)) for p, v in enumerate(row)]
                                     for r, row in enumerate(padded)])
    ids_text = ", ".join(f"({ids}, {n})" for ids, n in TOY)
    text(ax, right + 0.3, 5.05, "TOY = [(ids, prompt length), ...]", size=SMALL, ha="left", color=MUTED)
    text(ax, right + 0.3, 4.75, ids_text, mono=True, size=SMALL - 0.5, ha="left", color=MUTED)
    text(ax, right + 0.3, 4.45, shape("batch", "longest + 1") + " = " + shape(len(padded), width), mono=True,
         size=SMALL, ha="left", color=MUTED)

    # step 2
    inputs = [row[:-1] for row in padded]
    targets = [row[1:] for row in padded]
    title(0.2, 4.1, "2. shift by one: inputs = padded[:, :-1], targets = padded[:, 1:]")
    text(ax, 1.15, 3.83, "inputs", mono=True, size=SMALL, ha="left")
    names(1.05, 3.7)
    right, _ = _grid(ax, 1.15, 3.7, [[(str(v), look(r, p)) for p, v in enumerate(row)]
                                      for r, row in enumerate(inputs)])
    x_t = right + 1.4
    text(ax, x_t, 3.83, "targets", mono=True, size=SMALL, ha="left")
    _grid(ax, x_t, 3.7, [[(str(v), look(r, p + 1)) for p, v in enumerate(row)] for r, row in enumerate(targets)])
    arrow(ax, (right + 0.2, 3.25), (x_t - 0.2, 3.25), "", color=MUTED)
    text(ax, (right + x_t) / 2, 3, "targets[i] =\ntoken after\ninputs[i]", size=SMALL, color=MUTED, va="top")
    text(ax, x_t, 2.63, shape("batch", "longest") + " each", mono=True, size=SMALL, color=MUTED, ha="left",
         va="top")

    # steps 3 and 4: the final instruction_collate
    _, t3 = instruction_collate(TOY)
    _, t4 = instruction_collate(TOY, mask_prompt=True)
    title(0.2, 2.2, "3. -100 after the first end-of-text")
    title(x_t - 0.3, 2.2, "4. and with mask_prompt=True, on the prompt too")
    text(ax, 1.15, 1.93, "targets", mono=True, size=SMALL, ha="left")
    names(1.05, 1.8)
    _grid(ax, 1.15, 1.8, target_rows(t3.tolist(), False))
    text(ax, x_t, 1.93, "targets", mono=True, size=SMALL, ha="left")
    _, bottom = _grid(ax, x_t, 1.8, target_rows(t4.tolist(), True))
    text(ax, x_t + 0.28, bottom - 0.08, "↑ targets[:prompt_len - 1]", mono=True, size=SMALL, color=RED[1],
         ha="left", va="top")

    _legend(ax, 0.3, 0.3, [("id", "token id"), ("eot", "end-of-text to learn"), ("pad", "padding"),
                            ("pad-100", "-100 on padding"), ("prompt-100", "-100 on the prompt")])
    return fig


@figure("ch07_target_mask", NB)
def target_mask() -> Figure:
    """Real targets: -100 on the prompt (mask_prompt=True) and after the end-of-text; the loss skips them."""
    fig, ax = canvas(9.5, 5.3)
    tok = _tokenizer()
    batch = []
    for entry in SHORTEST:
        prompt = tok.encode(format_prompt(entry), disallowed_special=())
        batch.append((prompt + tok.encode(entry["output"], disallowed_special=()), len(prompt)))
    inputs, targets = (t[0].tolist() for t in instruction_collate(batch))
    masked = instruction_collate(batch, mask_prompt=True)[1][0].tolist()
    n_ids, prompt_len = len(batch[0][0]), batch[0][1]
    width = len(inputs)

    def target_look(pos: int, value: int) -> str:
        if value == -100:
            return "pad-100" if pos >= n_ids else "prompt-100"
        return "prompt" if pos + 1 < prompt_len else "answer"

    def decoded(value: int) -> str:
        return "-100" if value == -100 else _show(tok.decode([value]))

    text(ax, 0.2, 5.1, f'train_data[70]: "{SHORTEST[0]["instruction"]}" → "{SHORTEST[0]["output"]}"', size=SMALL + 1,
         weight="bold", ha="left")
    text(ax, 0.2, 4.82, "batched with train_data[14] by instruction_collate(batch, mask_prompt=True): "
         f"{width} positions, prompt_len = {prompt_len}", size=SMALL, ha="left", color=MUTED)

    # the whole row of targets, small
    x0, cw, top = 1.3, 0.185, 4.25
    text(ax, x0 - 0.1, top - 0.13, "targets[0]", mono=True, size=SMALL, ha="right")
    for p, v in enumerate(masked):
        fill, edge, hatch, _ = LOOK[target_look(p, v)]
        _cell(ax, x0 + p * cw, top - 0.26, cw, 0.26, fill=fill, edge=edge, hatch=hatch)
    for p in (0, prompt_len - 1):
        text(ax, x0 + (p + 0.5) * cw, top - 0.36, str(p), mono=True, size=SMALL - 0.5, color=MUTED, va="top")
    brace(ax, x0, x0 + (prompt_len - 1) * cw, top + 0.08,
          f"prompt: targets[:prompt_len - 1] = -100 ({prompt_len - 1} positions)", below=False, color=RED[1])

    # the zoom: the end of the prompt, the answer and the padding
    first = prompt_len - 4
    zx, zw, zh, ztop = 2.05, 1.0, 0.36, 3.05
    ax.add_patch(Rectangle((x0 + first * cw - 0.03, top - 0.3), (width - first) * cw + 0.06, 0.34, fill=False,
                           edgecolor=INK, lw=1.0, ls="--", zorder=4))
    for x_strip, x_zoom in [(x0 + first * cw - 0.03, zx), (x0 + width * cw + 0.03, zx + (width - first) * zw)]:
        ax.plot([x_strip, x_zoom], [top - 0.3, ztop + 0.3], color=MUTED, lw=0.8, ls=":", zorder=1)
    rows = [("inputs[0]", [(_show(tok.decode([v])), "prompt" if p < prompt_len else ("pad" if p >= n_ids else "answer"))
                           for p, v in enumerate(inputs)]),
            ("targets[0]", [(decoded(v), target_look(p, v)) for p, v in enumerate(targets)]),
            ("targets[0] with\nmask_prompt=True", [(decoded(v), target_look(p, v)) for p, v in enumerate(masked)])]
    for p in range(first, width):
        text(ax, zx + (p - first + 0.5) * zw, ztop + 0.14, str(p), mono=True, size=SMALL, color=MUTED)
    for r, (name, row) in enumerate(rows):
        y = ztop - r * (zh + 0.12) - (0.15 if r else 0)
        text(ax, zx - 0.1, y - zh / 2, name, mono=True, size=SMALL, ha="right")
        for p in range(first, width):
            label, look = row[p]
            fill, edge, hatch, color = LOOK[look]
            _cell(ax, zx + (p - first) * zw, y - zh, zw, zh, label, fill=fill, edge=edge, hatch=hatch,
                  size=SMALL - (1 if len(label) > 8 else 0), color=color)

    # what the loss does with them
    counted, counted_masked = sum(v != -100 for v in targets), sum(v != -100 for v in masked)
    box(ax, 4.75, 0.85, 9.1, 1.1, "", kind="op")
    text(ax, 0.4, 1.2, "F.cross_entropy(logits.flatten(0, 1), targets.flatten())", mono=True, size=SMALL + 0.5,
         ha="left", weight="bold")
    text(ax, 0.4, 0.9, "averages −log p(target) over the targets that are not -100 (its ignore_index): "
         f"this row counts {counted} of its {width} positions, or {counted_masked} with mask_prompt=True",
         size=SMALL, ha="left")
    text(ax, 0.4, 0.6, "The check above: loss over 3 targets 1.2489; over the first 2, 1.5692; over 3 with the "
         "last = -100, 1.5692", size=SMALL, ha="left", color=MUTED)
    return fig


@figure("ch07_length_bucketing", NB)
def length_bucketing() -> Figure:
    """64 real training lengths in batches of 8: as they come, and sorted by LengthBucketSampler; padding hatched."""
    fig, ax = canvas(9.5, 5.4)
    as_they_come = [list(range(i, i + 8)) for i in range(0, 64, 8)]
    bucketed = list(LengthBucketSampler(TRAIN_LENGTHS_64, batch_size=8, pool_batches=8, shuffle=False))
    x0, bw, gap, scale = 0.85, 0.105, 0.2, 1.5 / 80

    def pad_share(batches: list[list[int]]) -> float:
        real = sum(TRAIN_LENGTHS_64[i] for b in batches for i in b)
        return 1 - real / sum(max(TRAIN_LENGTHS_64[i] for i in b) * len(b) for b in batches)

    def panel(base: float, batches: list[list[int]], title: str) -> None:
        text(ax, 0.2, base + 1.7, f"{title}: {pad_share(batches):.1%} of the positions are padding",
             size=SMALL + 1, weight="bold", ha="left")
        for tick in (20, 40, 60):
            y = base + tick * scale
            ax.plot([x0 - 0.08, 9.35], [y, y], color="#DDDDDD", lw=0.6, zorder=1)
            text(ax, x0 - 0.12, y, str(tick), size=SMALL - 0.5, color=MUTED, ha="right")
        for b, batch in enumerate(batches):
            left = x0 + b * (8 * bw + gap)
            longest = max(TRAIN_LENGTHS_64[i] for i in batch)
            for k, i in enumerate(batch):
                x, n = left + k * bw, TRAIN_LENGTHS_64[i]
                ax.add_patch(Rectangle((x, base), bw, n * scale, facecolor=BLUE[0], edgecolor=BLUE[1], lw=0.6,
                                       zorder=2))
                ax.add_patch(Rectangle((x, base + n * scale), bw, (longest - n) * scale, facecolor=RED[0],
                                       edgecolor=RED[1], hatch="////", lw=0.6, zorder=2))
            ax.plot([left, left + 8 * bw], [base + longest * scale] * 2, color=INK, lw=1.0, zorder=3)
            text(ax, left + 4 * bw, base - 0.12, f"batch {b + 1}", size=SMALL - 0.5, color=MUTED, va="top")
        text(ax, 0.2, base + 0.75, "tokens", size=SMALL, color=MUTED, rotation=90)

    panel(3.45, as_they_come, "train_data[:64] in batches of 8, in file order (a random order)")
    panel(1.2, bucketed, "the same 64 examples, sorted by length, cut into batches of 8")
    for x, (fill, edge), hatch, label in [(0.3, BLUE, None, "an example's tokens, len(ids) + 1"),
                                          (3.3, RED, "////", "padding up to the batch's longest example")]:
        ax.add_patch(Rectangle((x, 0.66), 0.26, 0.18, facecolor=fill, edgecolor=edge, hatch=hatch, lw=0.6))
        text(ax, x + 0.34, 0.75, label, size=SMALL, ha="left")
    text(ax, 0.3, 0.42, "LengthBucketSampler sorts each pool of pool_batches × batch_size = 64 shuffled examples like "
         "this, then shuffles the order of the batches.", size=SMALL, color=MUTED, ha="left")
    text(ax, 0.3, 0.17, "On the whole training set (measured below): 19.3% padding in shuffled batches, 4.5% in "
         "bucketed ones.", size=SMALL, color=MUTED, ha="left")
    return fig


# Two prompts of 2 and 4 tokens, as in the notebook's cell on positions and the mask
TWO_PROMPTS = [["a1", "a2"], ["b1", "b2", "b3", "b4"]]


def _token_grid(ax, x: float, top: float, rows: list[list[str]], looks: list[list[str]], cw: float = 0.55,
                ch: float = 0.32) -> None:
    """A grid of token cells; looks name a LOOK entry per cell."""
    _grid(ax, x, top, [list(zip(r, lk)) for r, lk in zip(rows, looks)], cw=cw, ch=ch)


@figure("ch07_left_padding", NB)
def left_padding() -> Figure:
    """Why generate_batched pads on the left: every row's next token lands in the same new column; per-row positions."""
    fig, ax = canvas(9.5, 4.0)
    width = max(len(p) for p in TWO_PROMPTS)
    nxt = ["a3", "b5"]

    # right padding: what goes wrong
    text(ax, 0.2, 3.75, "right padding", size=SMALL + 1.5, weight="bold", ha="left")
    rows = [p + ["pad"] * (width - len(p)) + [n] for p, n in zip(TWO_PROMPTS, nxt)]
    rows[0][-1] = "?"
    looks = [["prompt"] * len(p) + ["pad"] * (width - len(p)) + ["answer"] for p in TWO_PROMPTS]
    looks[0][-1] = "pad-100"
    _token_grid(ax, 0.6, 3.2, rows, looks, cw=0.5)
    brace(ax, 0.6, 0.6 + width * 0.5, 3.28, "prompts", below=False)
    text(ax, 0.6 + (width + 0.5) * 0.5, 3.36, "new", size=SMALL, color=MUTED, va="bottom")
    for i, line in enumerate(["Row 0 ends in pads: its last logits come from a",
                              "pad, and its next token would follow the padding.",
                              "The rows end in different columns, so one new",
                              "column per step cannot serve both."]):
        text(ax, 0.3, 2.25 - i * 0.27, line, size=SMALL, ha="left", color=RED[1] if i < 2 else INK)

    # left padding: generate_batched
    x, cw = 4.75, 0.5
    text(ax, 3.9, 3.75, "left padding (generate_batched)", size=SMALL + 1.5, weight="bold", ha="left")
    real = [[False] * (width - len(p)) + [True] * (len(p) + 1) for p in TWO_PROMPTS]
    positions = []
    for r in real:  # (real.long().cumsum(dim=1) - 1).clamp(min=0)
        count, row = 0, []
        for is_real in r:
            count += is_real
            row.append(max(count - 1, 0))
        positions.append(row)
    grids = [("tokens", [["pad"] * (width - len(p)) + p + [n] for p, n in zip(TWO_PROMPTS, nxt)],
              [["pad"] * (width - len(p)) + ["prompt"] * len(p) + ["answer"] for p in TWO_PROMPTS]),
             ("real", [["T" if v else "F" for v in r] for r in real],
              [["id" if v else "pad" for v in r] for r in real]),
             ("positions", [[str(v) for v in r] for r in positions], [["id" if v else "pad" for v in r] for r in real])]
    for g, (name, rows, looks) in enumerate(grids):
        top = 3.2 - g * 0.95
        text(ax, x - 0.12, top - 0.32, name, mono=True, size=SMALL + 0.5, ha="right")
        _token_grid(ax, x, top, rows, looks, cw=cw)
        ax.plot([x + width * cw] * 2, [top + 0.05, top - 0.69], color=INK, lw=1.6, zorder=4)
    brace(ax, x, x + width * cw, 3.28, "prompts, right-aligned", below=False)
    text(ax, x + (width + 0.5) * cw, 3.36, "new", size=SMALL, color=MUTED, va="bottom")
    notes = [(2.88, "each row's next token goes\ninto the same new column"),
             (1.93, "True on real tokens;\nthe new column is real"),
             (0.98, "(real.cumsum(dim=1) - 1)\n.clamp(min=0): each row\ncounts from its first\nreal token")]
    for y, note in notes:
        text(ax, x + (width + 1) * cw + 0.15, y, note, size=SMALL, ha="left", color=MUTED)
    text(ax, 3.9, 0.3, f"real: (batch, width + 1) = {shape(len(TWO_PROMPTS), width + 1)} after the first new token;"
         " pad_id = 50256", mono=True, size=SMALL - 0.5, ha="left", color=MUTED)
    return fig


@figure("ch07_padded_attention_mask", NB)
def padded_attention_mask() -> Figure:
    """forward_padded's mask for the left-padded row 0: causal AND key is real, OR the query itself."""
    fig, ax = canvas(9.5, 3.6)
    real = [False, False, True, True]  # row 0 of the notebook's example: a prompt of 2 tokens after 2 pads
    n = len(real)
    names = ["pad", "pad", "a1", "a2"]
    causal = [[k <= q for k in range(n)] for q in range(n)]
    key_real = [[real[k] for k in range(n)] for _ in range(n)]
    itself = [[k == q for k in range(n)] for q in range(n)]
    allowed = [[(causal[q][k] and key_real[q][k]) or itself[q][k] for k in range(n)] for q in range(n)]
    assert allowed == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]  # the notebook's printout
    parts = [("keys <= queries", "causal", causal), ("real[:, None, :]", "key is real", key_real),
             ("keys == queries", "itself", itself), ("allowed", "may attend", allowed)]
    cell, x, top = 0.36, 0.95, 2.75
    for i, (code, title, m) in enumerate(parts):
        matrix(ax, x, top, [[1.0 if v else 0.0 for v in row] for row in m], cell=cell, vmax=2.0, fmt=None,
               masked=[[not v for v in row] for row in m], col_labels=names, col_label_rotation=0,
               row_labels=names if i == 0 else None, size=SMALL - 1)
        text(ax, x + n * cell / 2, top + 0.5, title, size=SMALL + 0.5, weight="bold")
        text(ax, x + n * cell / 2, top - n * cell - 0.15, code, mono=True, size=SMALL, va="top")
        if i < len(parts) - 1:
            text(ax, x + n * cell + 0.36, top - n * cell / 2, ["&", "|", "="][i], mono=True, size=14, weight="bold")
        x += n * cell + 0.72
    text(ax, 0.15, top - n * cell / 2, "queries", size=SMALL, color=MUTED, rotation=90)
    text(ax, 0.85, top + 0.2, "keys", size=SMALL, color=MUTED, ha="right")
    text(ax, 0.3, 0.55, "Hatched: not allowed. The real tokens a1, a2 never attend to a pad; each pad attends to "
         "itself only, so no softmax row is empty.", size=SMALL, ha="left")
    text(ax, 0.3, 0.25, "In forward_padded, allowed has shape (batch, t, end), then [:, None] makes it "
         "(batch, 1, t, end) for every head.", size=SMALL, ha="left", color=MUTED)
    return fig


@figure("ch07_kv_cache_generation", NB)
def kv_cache_generation() -> Figure:
    """generate_batched: one prefill call for all prompt tokens, then one new column per forward_padded call."""
    fig, ax = canvas(9.5, 4.1)
    prompts = [["a1", "a2", "a3"], ["b1", "b2", "b3", "b4", "b5"], ["c1", "c2", "c3", "c4"]]
    answers = [["a4", "a5", "a6", "a7"], ["b6", "eos"], ["c5", "c6", "eos"]]  # what next_token picks, per row
    max_new_tokens = 4
    width = max(len(p) for p in prompts)
    cw, ch, x0, top = 0.52, 0.34, 1.3, 3.25
    rows = []
    for p, new in zip(prompts, answers):
        cells = [("pad", "pad")] * (width - len(p)) + [(t, "prompt") for t in p]
        cells += [(t, "answer") for t in new] + [("", "dropped")] * (max_new_tokens - len(new))
        rows.append(cells)
    _, bottom = _grid(ax, x0, top, rows, cw=cw, ch=ch)
    for r in range(len(rows)):
        text(ax, x0 - 0.1, top - (r + 0.5) * ch, f"row {r}", size=SMALL, color=MUTED, ha="right")
    brace(ax, x0, x0 + width * cw, top + 0.1, f"prompts, left-padded (width = {width})", below=False)
    for s in range(max_new_tokens):
        text(ax, x0 + (width + s + 0.5) * cw, top + 0.12, f"step {s}", size=SMALL, color=MUTED, va="bottom")

    # the forward_padded calls: the prefill feeds all prompt columns, each later call one column
    lane, length = 1.8, 0
    text(ax, x0 - 0.1, lane + 0.1, "forward_padded", mono=True, size=SMALL, ha="right")
    text(ax, x0 - 0.1, lane - 0.12, "calls", size=SMALL, ha="right")
    text(ax, x0 - 0.1, lane - 0.55, "cache.length", mono=True, size=SMALL, ha="right", color=MUTED)
    calls = [(0, width, "prefill  in_idx " + shape(len(rows), width))]
    calls += [(width + s, 1, shape(len(rows), 1)) for s in range(max_new_tokens - 1)]
    for first, t, label in calls:
        left, right = x0 + first * cw + 0.04, x0 + (first + t) * cw - 0.04
        box(ax, (left + right) / 2, lane, right - left, 0.42, label, kind="op", mono=True, size=SMALL - 1)
        length += t
        text(ax, (left + right) / 2, lane - 0.55, str(length), mono=True, size=SMALL, color=MUTED)
        arrow(ax, (right - 0.02, lane + 0.21), (right + cw / 2, bottom - 0.02), color=ANSWER[1], lw=1.0)
    text(ax, x0 + (width + max_new_tokens - 0.5) * cw, lane, "not fed:\nlast step", size=SMALL - 1, color=MUTED)

    notes = ["prefill: one call with every prompt token; the",
             "cache keeps their keys and values, per block",
             f"(batch, n_heads, cache.length, head_dim).",
             "",
             "Each step: next_token(logits[:, -1]) picks",
             "next_id (batch, 1), one new column (orange",
             "arrows); the next call feeds it back and it",
             "attends to every cached position.",
             "",
             "A row that writes eos is done: eos and the rest",
             "of its row are not returned. The loop ends when",
             f"all rows are done or after max_new_tokens ({max_new_tokens})."]
    for i, line in enumerate(notes):
        text(ax, 6.2, 3.55 - i * 0.245, line, size=SMALL, ha="left")
    text(ax, 0.2, 3.88, f"generate_batched(model, prompts, max_new_tokens={max_new_tokens}) on {len(prompts)} prompts",
         mono=True, size=SMALL + 1, weight="bold", ha="left")
    _legend(ax, 0.3, 0.4, [("prompt", "prompt token"), ("pad", "pad (50256)"), ("answer", "new token"),
                            ("dropped", "dropped: row done")])
    return fig


def _lcs_table(a: list[str], b: list[str]) -> list[list[int]]:
    """The full LCS table: t[i][j] = LCS of a[:i] and b[:j]; its row i is lcs_length's `row` after i words of a."""
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, start=1):
        for j, y in enumerate(b, start=1):
            t[i][j] = t[i - 1][j - 1] + 1 if x == y else max(t[i - 1][j], t[i][j - 1])
    assert t[-1][-1] == lcs_length(a, b)
    return t


def _lcs_pairs(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) of one longest common subsequence, found by walking the table back."""
    t, pairs = _lcs_table(a, b), []
    i, j = len(a), len(b)
    while i and j:
        if a[i - 1] == b[j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif t[i - 1][j] >= t[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _alignment(ax, x: float, y_top: float, answer: str, reference: str, word_w: float = 0.78) -> None:
    """The words of an answer over those of the reference, LCS words orange and joined; the scores beside."""
    a, b = rouge_tokens(answer), rouge_tokens(reference)
    pairs = _lcs_pairs(a, b)
    y_bot = y_top - 0.95
    for words, y, used, name in [(a, y_top, {i for i, _ in pairs}, "answer"),
                                 (b, y_bot, {j for _, j in pairs}, "reference")]:
        text(ax, x - 0.1, y, name, size=SMALL, color=MUTED, ha="right")
        for k, w in enumerate(words):
            box(ax, x + (k + 0.5) * word_w, y, word_w - 0.08, 0.32, w, kind="query" if k in used else "neutral",
                mono=True, size=SMALL, rounded=False)
    for i, j in pairs:
        ax.plot([x + (i + 0.5) * word_w, x + (j + 0.5) * word_w], [y_top - 0.16, y_bot + 0.16], color=ORANGE[1],
                lw=1.4, zorder=1)
    lcs = len(pairs)
    score = rouge_l(answer, reference)
    text(ax, x, y_bot - 0.42, f"LCS {lcs}: precision {lcs}/{len(a)}, recall {lcs}/{len(b)}, ROUGE-L (F1) {score:.3f}",
         size=SMALL + 0.5, ha="left")


@figure("ch07_rouge_lcs", NB)
def rouge_lcs() -> Figure:
    """ROUGE-L of the notebook's example: the longest common subsequence of words, and lcs_length's table."""
    fig, ax = canvas(9.5, 4.4)
    answer, reference = "Paris is the capital of France.", "The capital of France is Paris."
    text(ax, 0.2, 4.2, f'answer "{answer}"  vs  reference "{reference}"', size=SMALL + 1, weight="bold", ha="left")
    _alignment(ax, 1.0, 3.3, answer, reference, word_w=0.66)
    a, b = rouge_tokens(answer), rouge_tokens(reference)
    t = _lcs_table(a, b)
    notes = ["Words are rouge_tokens: lower-cased runs of letters and",
             "digits. The common subsequence keeps the order of both",
             "texts, gaps allowed: here 4 of the 6 words.",
             "",
             "The table: row i is lcs_length's row after i answer",
             "words; an outlined cell is a match that adds one;",
             f"the bottom-right cell is the LCS, {t[-1][-1]}."]
    for i, line in enumerate(notes):
        text(ax, 0.3, 1.4 - i * 0.2, line, size=SMALL, ha="left", color=MUTED)
    cell, x, top = 0.46, 5.95, 3.6
    matrix(ax, x, top, t, cell=cell, vmax=len(b), fmt="{:.0f}", row_labels=["", *a], col_labels=["", *b],
           size=SMALL - 1)
    for i, j in _lcs_pairs(a, b):  # the cells where a match adds one
        ax.add_patch(Rectangle((x + (j + 1) * cell, top - (i + 2) * cell), cell, cell, fill=False,
                               edgecolor=INK, lw=1.8, zorder=4))
    text(ax, x + len(t[0]) * cell / 2, top + 0.38, "reference words", size=SMALL, color=MUTED)
    text(ax, x - 0.75, top - (len(t) + 1) * cell / 2, "answer words", size=SMALL, color=MUTED, rotation=90)
    return fig


@figure("ch07_rouge_blind_spot", NB)
def rouge_blind_spot() -> Figure:
    """Two answers with the same ROUGE-L of 0.667: one right in other words, one wrong with the reference's words."""
    fig, ax = canvas(9.0, 4.6)
    cases = [("a right answer in another order", "Paris is the capital of France.", "The capital of France is Paris.",
              "right"),
             ("a wrong answer that copies words (the \"best\" answers of section 7.7)", "The opposite of 'I' is 'I'.",
              "The opposite of 'deep' is 'shallow'.", "wrong")]
    for k, (title, answer, reference, verdict) in enumerate(cases):
        y = 4.4 - k * 2.2
        text(ax, 0.2, y, title, size=SMALL + 1, weight="bold", ha="left")
        _alignment(ax, 1.2, y - 0.45, answer, reference, word_w=0.9)
        text(ax, 7.9, y - 0.8, f"ROUGE-L {rouge_l(answer, reference):.3f}", size=12, weight="bold")
        text(ax, 7.9, y - 1.15, f"the answer is {verdict}", size=SMALL + 1, color=MUTED)
    return fig


@figure("ch07_evaluation", NB)
def evaluation() -> Figure:
    """What each score of sections 7.7 and 7.8 reads: the reference answers, the written answers, or both."""
    fig, ax = canvas(9.5, 4.1)
    top, low = 3.25, 1.3
    text(ax, 0.2, 3.9, "Scoring the test set (sections 7.5 to 7.8)", size=SMALL + 1, weight="bold", ha="left")
    box(ax, 1.25, top, 1.9, 0.75, "test_data\n110 records", kind="text", mono=True, size=SMALL + 0.5)
    box(ax, 4.1, top, 2.5, 0.75, "answer_instructions\n(batched, greedy)", kind="layer", mono=True, size=SMALL)
    box(ax, 6.75, top, 1.5, 0.75, "responses\n110 answers", kind="text", mono=True, size=SMALL + 0.5)
    box(ax, 8.55, top, 1.5, 0.75, "save_responses\n(JSON file)", kind="op", mono=True, size=SMALL - 0.5)
    arrow(ax, (2.2, top), (2.85, top), "prompts", label_side="above")
    arrow(ax, (5.35, top), (6.0, top))
    arrow(ax, (7.5, top), (7.8, top))

    # what each score says (its numbers are printed by the notebook's cells, not drawn here)
    scores = [(1.45, "answer_loss", "loss", False,
               ["loss and perplexity per answer token,", "base vs fine-tuned model"]),
              (5.0, "rouge_l", "op", False, ["shared words in order (LCS),", "0 to 1 per answer"]),
              (8.05, "Judge (optional)", "layer", True, ["a score from 0 to 100 per answer,", "from a local model"])]
    for x, name, kind, dashed, lines in scores:
        box(ax, x, low, 2.2, 0.55, name, kind=kind, mono=True, dashed=dashed, size=SMALL + 0.5)
        for i, line in enumerate(lines):
            text(ax, x, low - 0.52 - i * 0.24, line, size=SMALL, color=INK)
    # what each score reads
    edge_top, edge_low = top - 0.38, low + 0.28
    arrow(ax, (1.25, edge_top), (1.35, edge_low))
    text(ax, 1.45, 2.25, "reference answers\n(mask_prompt=True)", size=SMALL, color=MUTED, ha="left")
    arrow(ax, (2.0, edge_top), (4.55, edge_low))
    text(ax, 3.55, 2.0, "references", size=SMALL, color=MUTED, ha="right")
    arrow(ax, (6.55, edge_top), (5.35, edge_low), "written answers", label_side="right", label_offset=0.12,
          label_color=MUTED)
    arrow(ax, (7.1, edge_top), (7.85, edge_low), "judge_responses", label_side="right", dashed=True, label_offset=0.12)
    return fig


DPO_NB = "ch07_instruction/dpo.ipynb"


@figure("ch07_dpo_loss", DPO_NB)
def dpo_loss_terms() -> Figure:
    """dpo_loss on the notebook's made-up log-probabilities: log-ratios, rewards, margin, loss; and the loss curve."""
    fig, ax = canvas(9.5, 4.7)
    beta = 0.1
    logps = {"policy": {"chosen": -10.0, "rejected": -13.0}, "reference": {"chosen": -12.0, "rejected": -12.0}}
    loss, r_c, r_r = dpo_loss(*(torch.tensor([logps[m][a]]) for m in ("policy", "reference")
                                for a in ("chosen", "rejected")), beta=beta)
    rewards = {"chosen": r_c.item(), "rejected": r_r.item()}
    margin = rewards["chosen"] - rewards["rejected"]
    text(ax, 0.2, 4.5, f"dpo_loss on the made-up log-probabilities above (beta = {beta})", size=SMALL + 1,
         weight="bold", ha="left")
    heads = [(2.3, "policy", "trains"), (3.8, "reference", "frozen, no_grad"), (5.6, "log-ratio", "policy − reference"),
             (7.4, "reward", "beta × log-ratio")]
    for x, head, sub in heads:
        text(ax, x, 4.05, head, mono=head in ("policy", "reference"), size=SMALL + 0.5, weight="bold")
        text(ax, x, 3.8, sub, size=SMALL, color=MUTED)
    for y, answer in [(3.25, "chosen"), (2.4, "rejected")]:
        text(ax, 1.45, y + 0.08, answer, mono=True, size=SMALL + 0.5, ha="right")
        text(ax, 1.45, y - 0.15, "sequence_logprobs", mono=True, size=SMALL - 1, ha="right", color=MUTED)
        box(ax, 2.3, y, 1.2, 0.5, f"{logps['policy'][answer]:.1f}", kind="trainable", mono=True)
        box(ax, 3.8, y, 1.2, 0.5, f"{logps['reference'][answer]:.1f}", kind="frozen", mono=True)
        ratio = logps["policy"][answer] - logps["reference"][answer]
        arrow(ax, (4.45, y), (5.0, y))
        box(ax, 5.6, y, 1.1, 0.5, f"{ratio:+.1f}", kind="op", mono=True)
        arrow(ax, (6.2, y), (6.8, y))
        box(ax, 7.4, y, 1.1, 0.5, f"{rewards[answer]:+.2f}", kind="op", mono=True)
        arrow(ax, (7.98, y), (8.45, 2.85 if answer == "chosen" else 2.8), color=MUTED)
    box(ax, 8.95, 2.82, 0.9, 0.75, f"margin\n{margin:.2f}", kind="loss", size=SMALL + 0.5)
    text(ax, 8.95, 3.28, "chosen −\nrejected", size=SMALL - 0.5, color=MUTED, va="bottom")

    # the loss as a function of the margin
    x0, x1, y0, y1, lo, hi, top = 1.0, 5.2, 0.45, 1.75, -2.0, 3.0, 2.2

    def px(m: float) -> float:
        return x0 + (m - lo) / (hi - lo) * (x1 - x0)

    def py(v: float) -> float:
        return y0 + v / top * (y1 - y0)

    ms = [lo + i * (hi - lo) / 100 for i in range(101)]
    ax.plot([px(m) for m in ms], [py(-math.log(1 / (1 + math.exp(-m)))) for m in ms], color=RED[1], lw=1.6, zorder=3)
    ax.plot([x0, x1], [y0, y0], color=INK, lw=0.8)
    ax.plot([x0, x0], [y0, y1], color=INK, lw=0.8)
    for m in (-2, -1, 0, 1, 2, 3):
        text(ax, px(m), y0 - 0.08, str(m), size=SMALL - 1, color=MUTED, va="top")
    for v in (0, 1, 2):
        ax.plot([x0 - 0.05, x0], [py(v), py(v)], color=INK, lw=0.8)
        text(ax, x0 - 0.08, py(v), str(v), size=SMALL - 1, color=MUTED, ha="right", va="center")
    text(ax, (x0 + x1) / 2, y0 - 0.33, "margin", size=SMALL, color=MUTED)
    text(ax, x0 - 0.3, (y0 + y1) / 2, "loss", size=SMALL, color=MUTED, rotation=90, ha="right")
    for m, label in [(0.0, f"policy == reference: log 2 = {math.log(2):.4f}"), (margin, f"this example: {loss.item():.4f}")]:
        v = -math.log(1 / (1 + math.exp(-m)))
        ax.plot([px(m)], [py(v)], "o", color=INK, ms=4, zorder=4)
        above = m == 0  # the log 2 label above right of its point, the other below left (clear of the curve)
        text(ax, px(m) + (0.1 if above else -0.1), py(v) + (0.15 if above else -0.08), label, size=SMALL - 0.5,
             ha="left" if above else "right", va="bottom" if above else "top")
    box(ax, 7.3, 1.1, 3.6, 0.75, f"loss = −F.logsigmoid(margin)\n= −log σ({margin:.2f}) = {loss.item():.4f}",
        kind="loss", mono=True, size=SMALL)
    arrow(ax, (8.95, 2.42), (8.4, 1.5))
    return fig
