"""Concept diagrams for chapter 2 (ch02_text_data/ch02.ipynb).

Every token, id and value drawn here is the one the notebook prints (GPT-2 ids from tiktoken, ids of the
word-level `vocab` built from "The Verdict", the seeded toy embedding); the data sit in constants at the
top of each function so a reader can check them against the notebook. The one illustration with made-up
values (`ch02_word_embeddings`) says so in the figure.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import figure
from .style import (BLUE, GREEN, GREY, MONO_SIZE, MUTED, RED, SMALL, arrow, box, brace, canvas, cells,
                    colors, region, shape, text)

NB = "ch02_text_data/ch02.ipynb"
CHAR_W = 0.602 / 72  # width of one DejaVu Sans Mono character per point of font size, in inches
STRONG_BLUE = "#A9CBEF"  # a token that just changed (a new merge, a repeated word)


def _show(token: str) -> str:
    """A token as the figures print it: a leading space becomes a visible '␣'."""
    return token.replace(" ", "␣")


def _pieces(ax, x: float, y: float, labels, *, h: float = 0.36, kind: str = "token", size: float = SMALL,
            pad: float = 0.16, min_w: float = 0.3, widths=None, fills=None) -> list[tuple[float, float]]:
    """Touching cells whose widths fit their labels, left edge x, centre height y; returns (centre x, width)."""
    f, e = colors(kind)
    out = []
    for i, lab in enumerate(labels):
        w = widths[i] if widths else max(min_w, len(lab) * CHAR_W * size + pad)
        ax.add_patch(Rectangle((x, y - h / 2), w, h, facecolor=fills[i] if fills and fills[i] else f,
                               edgecolor=e, linewidth=1.0, zorder=2))
        text(ax, x + w / 2, y, lab, mono=True, size=size)
        out.append((x + w / 2, w))
        x += w
    return out


def _code_note(ax, x: float, y: float, code: str, note: str) -> None:
    """A line of code followed by a plain-text remark, left-aligned at (x, y)."""
    text(ax, x, y, code, mono=True, ha="left", size=MONO_SIZE)
    text(ax, x + len(code) * CHAR_W * MONO_SIZE + 0.02, y, note, ha="left", size=SMALL + 0.5, color=MUTED)


@figure("ch02_text_to_embeddings", NB)
def text_to_embeddings() -> Figure:
    """Text -> tokens -> token ids -> embedding vectors, with the section of each step and the shapes."""
    tokens = ["I", " H", "AD", " always"]  # gpt2.encode("I HAD always"): the story's first 4 tokens
    ids = [40, 367, 2885, 1464]
    fig, ax = canvas(9.3, 3.9)
    cols = [(0.95, "raw text", "2.1"), (3.2, "tokens", "2.2, 2.6-2.7"), (5.35, "token ids", "2.3-2.5, 2.7"),
            (7.85, "token embeddings", "2.10-2.12")]
    for x, label, sec in cols:
        text(ax, x, 3.65, label, weight="bold")
        text(ax, x, 3.35, "section " + sec, size=SMALL, color=MUTED, style="italic")
    rows = [2.75 - i * 0.52 for i in range(len(tokens))]
    mid = sum(rows) / len(rows)
    box(ax, 0.95, mid, 1.4, 0.6, '"I HAD always"', kind="text", mono=True, size=MONO_SIZE)
    for y, tok, i in zip(rows, tokens, ids):
        arrow(ax, (1.68, mid), (2.6, y))
        box(ax, 3.2, y, 1.1, 0.38, _show(tok), kind="token", mono=True, size=MONO_SIZE)
        arrow(ax, (3.78, y), (4.92, y))
        box(ax, 5.35, y, 0.8, 0.38, str(i), kind="id", mono=True, size=MONO_SIZE)
        arrow(ax, (5.78, y), (6.82, y))
        cells(ax, 6.87, y + 0.18, [""] * 7, cell_w=0.28, cell_h=0.36, kind="embedding")
    brace(ax, 6.87, 8.83, rows[-1] - 0.3, "emb_dim numbers per token", mono=False)
    text(ax, 5.35, rows[-1] - 0.42, "(tokens,)", mono=True, size=SMALL, color=MUTED)
    text(ax, 7.85, 0.3, shape("tokens", "emb_dim"), mono=True, size=SMALL, color=MUTED)
    for x, note in [(2.1, "split into pieces"), (4.35, "vocabulary lookup"), (6.33, "nn.Embedding")]:
        text(ax, x, 0.3, note, size=SMALL, color=MUTED, mono=note.startswith("nn."))
    return fig


@figure("ch02_build_vocab", NB)
def build_vocab_figure() -> Figure:
    """The token stream, its distinct tokens in sorted order, and their ids in the story's vocabulary."""
    stream = ["I", "HAD", "always", "thought", "Jack", "Gisburn", "rather", "a", "cheap", "genius", "--",
              "though", "a", "good", "fellow", "enough", "--"]  # split_text(raw_text)[:17]
    vocab_ids = {"--": 7, "Gisburn": 39, "HAD": 47, "I": 57, "Jack": 65, "a": 128, "always": 162,
                 "cheap": 271, "enough": 409, "fellow": 452, "genius": 504, "good": 518, "rather": 841,
                 "though": 1027, "thought": 1028}  # vocab[token] for vocab = build_vocab(tokens)
    repeated = {t for t in stream if stream.count(t) > 1}
    fig, ax = canvas(9.4, 3.6)
    _code_note(ax, 0.3, 3.3, "tokens = split_text(raw_text)", ": the first 17 of 4,608 tokens")
    _pieces(ax, 0.3, 2.85, stream + ["…"], fills=[STRONG_BLUE if t in repeated else None for t in stream] + [None])
    arrow(ax, (4.7, 2.6), (4.7, 1.95), "sorted(set(tokens))")
    words = sorted(vocab_ids)
    pcs = _pieces(ax, 0.55, 1.7, words, min_w=0.44, fills=[STRONG_BLUE if t in repeated else None for t in words])
    _pieces(ax, 0.55, 1.34, [str(vocab_ids[t]) for t in words], kind="id", widths=[w for _, w in pcs])
    text(ax, 0.45, 1.7, "token", ha="right", size=SMALL, color=MUTED)
    text(ax, 0.45, 1.34, "id", ha="right", size=SMALL, color=MUTED)
    left = [cx - w / 2 for cx, w in pcs]
    right = [cx + w / 2 for cx, w in pcs]
    for lo, hi, label in [(0, 0, "punctuation"), (1, 4, "capitalised"), (5, 14, "lower case")]:
        brace(ax, left[lo] + 0.03, right[hi] - 0.03, 1.05, label, mono=False)
    _code_note(ax, 0.3, 0.5, "vocab = build_vocab(tokens)", ": the 1,157 distinct tokens of the whole story, "
               "sorted and numbered 0 to 1,156;")
    text(ax, 0.3, 0.2, "the gaps between the ids above hold the story's other tokens", ha="left",
         size=SMALL + 0.5, color=MUTED)
    box(ax, 7.55, 3.3, 0.3, 0.22, fill=STRONG_BLUE, rounded=False, kind="token")
    text(ax, 7.78, 3.3, "repeated, kept once", ha="left", size=SMALL, color=MUTED)
    return fig


@figure("ch02_encode_decode", NB)
def encode_decode() -> Figure:
    """SimpleTokenizer: encode goes text -> tokens -> ids, decode comes back the other way."""
    sentence = "She wanted him vindicated--and by me!"
    tokens = ["She", "wanted", "him", "vindicated", "--", "and", "by", "me", "!"]
    ids = [97, 1100, 562, 1092, 7, 170, 254, 682, 0]  # tokenizer.encode(sentence), as in the notebook
    fig, ax = canvas(9.0, 3.9)
    x0 = 2.35
    pcs = _pieces(ax, x0, 1.95, tokens, h=0.4, size=MONO_SIZE, pad=0.22, min_w=0.4)
    _pieces(ax, x0, 0.85, [str(i) for i in ids], kind="id", h=0.4, size=MONO_SIZE, widths=[w for _, w in pcs])
    x1 = pcs[-1][0] + pcs[-1][1] / 2
    box(ax, (x0 + x1) / 2, 3.1, x1 - x0, 0.48, f'"{sentence}"', kind="text", mono=True, size=MONO_SIZE)
    for y, label in [(3.1, "text"), (1.95, "tokens"), (0.85, "ids")]:
        text(ax, x0 - 0.12, y, label, ha="right", size=SMALL + 0.5, color=MUTED)
    xl, xr = 1.55, x1 + 0.45
    text(ax, xl, 3.65, "encode(text)", mono=True, weight="bold")
    text(ax, xr, 3.65, "decode(ids)", mono=True, weight="bold")
    steps = [(2.83, 2.2, "split_text", "spaces dropped", "_join_tokens", "spaces put back\nby rule"),
             (1.7, 1.1, "str_to_id", "dict lookup", "id_to_str", "dict lookup")]
    for top, bottom, down, down_note, up, up_note in steps:
        mid = (top + bottom) / 2
        arrow(ax, (xl, top), (xl, bottom))
        arrow(ax, (xr, bottom), (xr, top))
        for x, ha, name, note in [(xl - 0.1, "right", down, down_note), (xr + 0.1, "left", up, up_note)]:
            text(ax, x, mid + 0.1, name, mono=True, size=MONO_SIZE, ha=ha)
            text(ax, x, mid - 0.02, note, size=SMALL, color=MUTED, ha=ha, va="top")
    text(ax, (x0 + x1) / 2, 0.3, "decode(encode(text)) == text for standard spacing", mono=True, size=SMALL,
         color=MUTED)
    return fig


@figure("ch02_special_tokens", NB)
def special_tokens() -> Figure:
    """Two texts joined by <|endoftext|>; words outside the vocabulary become <|unk|> and are lost."""
    words = ["Hello", ",", "do", "you", "paint", "?", "<|endoftext|>", "Gisburn", "sold", "his", "brushes",
             "and", "bought", "a", "yacht", "."]
    ids = [1158, 5, 373, 1151, 765, 11, 1157, 39, 1158, 565, 1158, 170, 1158, 128, 1158, 8]  # as printed
    unk = [i == 1158 for i in ids]
    shown = ["<|unk|>" if u else w for w, u in zip(words, unk)]
    fills = [RED[0] if u else GREY[0] if w == "<|endoftext|>" else None for w, u in zip(shown, unk)]
    fig, ax = canvas(9.5, 3.6)
    x0 = 0.85
    text(ax, 0.15, 3.35, "vocab ends with  … 1156 'yourself' | 1157 '<|endoftext|>' | 1158 '<|unk|>'",
         mono=True, size=SMALL, ha="left", color=MUTED)
    widths = [max(0.34, max(len(t), len(str(i))) * CHAR_W * SMALL + 0.14) for t, i in zip(shown, ids)]
    pcs = _pieces(ax, x0, 2.2, shown, fills=fills, widths=widths)
    _pieces(ax, x0, 1.84, [str(i) for i in ids], kind="id", widths=widths)
    text(ax, x0 - 0.1, 2.2, "tokens", ha="right", size=SMALL, color=MUTED)
    text(ax, x0 - 0.1, 1.84, "ids", ha="right", size=SMALL, color=MUTED)
    for (cx, _), word, u in zip(pcs, words, unk):
        if u:
            text(ax, cx, 2.82, word, mono=True, size=SMALL, color=RED[1])
            arrow(ax, (cx, 2.7), (cx, 2.41), color=RED[1], lw=1.0)
    text(ax, x0 - 0.1, 2.82, "unknown", ha="right", size=SMALL, color=RED[1])
    edges = [(cx - w / 2, cx + w / 2) for cx, w in pcs]
    brace(ax, edges[0][0] + 0.03, edges[5][1] - 0.03, 1.55, "text1", mono=True)
    brace(ax, edges[7][0] + 0.03, edges[15][1] - 0.03, 1.55, "text2", mono=True)
    text(ax, pcs[6][0], 1.47, "separates\nthe documents", size=SMALL, color=MUTED, va="top")
    text(ax, 0.15, 0.65, "decode(ids):", mono=True, size=SMALL, ha="left", color=MUTED)
    decoded = "<|unk|>, do you paint? <|endoftext|> Gisburn <|unk|> his <|unk|> and <|unk|> a <|unk|>."
    text(ax, 1.15, 0.65, decoded, mono=True, size=SMALL, ha="left")
    text(ax, 1.15, 0.3, "the five unknown words cannot come back", size=SMALL, ha="left", color=RED[1])
    return fig


def _bpe_steps(word: str, merges: list[tuple[str, int]]) -> list[list[str]]:
    """Apply the given merges (new piece, id) in order to the characters of word; one list per step."""
    parts = list(word)
    steps = [parts]
    for piece, _ in merges:
        for i in range(len(parts) - 1):
            if parts[i] + parts[i + 1] == piece:
                parts = parts[:i] + [piece] + parts[i + 2:]
                break
        else:
            raise ValueError(f"no adjacent pair forms {piece!r}")
        steps.append(parts)
    return steps


@figure("ch02_bpe_merges", NB)
def bpe_merges() -> Figure:
    """GPT-2's merges turning the bytes of ' unpaintable' into three tokens, lowest merge id first."""
    word = " unpaintable"
    # The merges tiktoken's GPT-2 encoding applies, lowest id (earliest learned) first; the ids are the
    # new token's id, gpt2.encode(" unpaintable") == [8593, 2913, 540].
    merges = [("in", 259), ("le", 293), (" u", 334), ("ain", 391), ("ab", 397), ("able", 540), (" un", 555),
              ("aint", 2913), (" unp", 8593)]
    steps = _bpe_steps(word, merges)
    fig, ax = canvas(9.0, 4.7)
    cw, rh, x0, top = 0.42, 0.36, 1.0, 3.9
    text(ax, 0.15, 4.5, "Start from the bytes; repeat: merge the adjacent pair whose merge GPT-2 learned "
         "first (the lowest id)", ha="left", size=SMALL + 1)
    for j, ch in enumerate(word):
        text(ax, x0 + (j + 0.5) * cw, top + 0.33, str(ord(ch)), mono=True, size=SMALL - 0.5, color=MUTED)
    text(ax, x0 - 0.1, top + 0.33, "UTF-8", ha="right", size=SMALL, color=MUTED)
    for r, parts in enumerate(steps):
        y = top - r * rh
        new = merges[r - 1][0] if r else None
        fills = [STRONG_BLUE if p == new else None for p in parts]
        _pieces(ax, x0, y, [_show(p) for p in parts], h=rh, widths=[len(p) * cw for p in parts], fills=fills)
        text(ax, x0 - 0.1, y, "bytes" if r == 0 else f"merge {r}", ha="right", size=SMALL, color=MUTED)
        if r:
            a, b = _split_merge(steps[r - 1], parts, new)
            label = f"'{_show(a)}' + '{_show(b)}' → '{_show(new)}'   id {merges[r - 1][1]}"
            text(ax, x0 + len(word) * cw + 0.25, y, label, mono=True, size=SMALL, ha="left")
    y_end = top - (len(steps) - 1) * rh - rh / 2
    final = steps[-1]
    x = x0
    for piece, tid in zip(final, [8593, 2913, 540]):
        text(ax, x + len(piece) * cw / 2, y_end - 0.2, str(tid), mono=True, size=SMALL, color=GREY[1],
             weight="bold")
        x += len(piece) * cw
    text(ax, x0 - 0.1, y_end - 0.2, "token ids", ha="right", size=SMALL, color=MUTED)
    text(ax, x0 + len(word) * cw + 0.25, y_end - 0.2, "no learned merge joins these three: done",
         size=SMALL, ha="left", color=MUTED)
    return fig


def _split_merge(before: list[str], after: list[str], new: str) -> tuple[str, str]:
    """The two pieces of `before` that became `new` in `after`."""
    i = after.index(new)
    return before[i], before[i + 1]


@figure("ch02_gpt2_vocab", NB)
def gpt2_vocab() -> Figure:
    """The layout of GPT-2's 50,257 ids: 256 bytes, 50,000 merges in the order learned, <|endoftext|>."""
    fig, ax = canvas(9.2, 2.7)
    y, h = 1.75, 0.42
    xb, xm, xe, xz = 0.4, 1.9, 8.05, 8.7  # bytes | merges | <|endoftext|> (widths not to scale)
    for left, right, label, kind in [(xb, xm, "256 single bytes", "token"),
                                     (xm, xe, "50,000 merges, in the order they were learned", "token"),
                                     (xe, xz, "", "neutral")]:
        box(ax, (left + right) / 2, y, right - left, h, label, kind=kind, rounded=False, size=SMALL + 0.5)
    for x, lab, ha in [(xb, "0", "left"), (xm - 0.04, "255", "right"), (xm + 0.04, "256", "left"),
                       (xe - 0.04, "50255", "right"), ((xe + xz) / 2, "50256", "center")]:
        text(ax, x, y + h / 2 + 0.05, lab, mono=True, size=SMALL - 0.5, color=MUTED, va="bottom", ha=ha)
    brace(ax, xb, xz, 2.35, "gpt2.n_vocab = 50,257 ids", below=False)
    # (id, token): ids 0-255 are the single bytes (printable ones first), then the merges in learned order.
    examples = [(0, "!"), (220, " "), (256, " t"), (262, " the"), (1988, " value"), (4286, " picture"),
                (40304, " café"), (50255, " gazed"), (50256, "<|endoftext|>")]
    for k, (tid, tok) in enumerate(examples):
        sx = 0.5 + k * 0.97
        if tid < 256:
            px = xb + (xm - xb) * tid / 255
        elif tid < 50256:
            px = xm + (xe - xm) * (tid - 256) / (50255 - 256)
        else:
            px = (xe + xz) / 2
        ax.plot([px, px, sx], [y - h / 2, y - h / 2 - 0.15, 0.9], color=MUTED, lw=0.8, zorder=3)
        text(ax, sx, 0.76, str(tid), mono=True, size=SMALL, color=GREY[1], weight="bold")
        text(ax, sx, 0.48, repr(_show(tok)), mono=True, size=SMALL)
    text(ax, 0.4, 0.14, "widths not to scale; a merge's id tells how early it was learned ('␣t' first, "
         "'␣gazed' last)", size=SMALL, color=MUTED, ha="left")
    return fig


@figure("ch02_input_target", NB)
def input_target() -> Figure:
    """One window of inputs and its targets shifted by one, and the four prediction tasks it holds."""
    tokens = [" the", " value", " of", " my", " picture"]  # enc_text[126:131]
    ids = [262, 1988, 286, 616, 4286]
    fig, ax = canvas(8.6, 4.3)
    cw, x0 = 0.95, 1.55
    xs = [x0 + (i + 0.5) * cw for i in range(5)]
    _pieces(ax, x0, 3.55, [_show(t) for t in tokens], widths=[cw] * 5, size=MONO_SIZE, h=0.38)
    _pieces(ax, x0, 3.17, [str(i) for i in ids], widths=[cw] * 5, kind="id", size=MONO_SIZE, h=0.38)
    text(ax, x0 - 0.12, 3.36, "enc_text\n[126:131]", mono=True, size=SMALL, ha="right", color=MUTED)
    brace(ax, x0 + 0.04, x0 + 4 * cw - 0.04, 3.88, "x: inputs", below=False)
    ax.plot([x0 + cw + 0.04, x0 + cw + 0.04, x0 + 5 * cw - 0.04, x0 + 5 * cw - 0.04],
            [2.9, 2.82, 2.82, 2.9], color=RED[1], lw=1.0)
    text(ax, x0 + 3 * cw, 2.7, "y: targets (shifted by one)", mono=True, size=SMALL, color=RED[1], va="top")
    text(ax, 6.55, 3.55, f"x = {ids[:4]}", mono=True, size=SMALL, ha="left", color=BLUE[1])
    text(ax, 6.55, 3.17, f"y = {ids[1:]}", mono=True, size=SMALL, ha="left", color=RED[1])
    text(ax, 0.15, 2.1, "the four tasks in this window", size=SMALL + 0.5, weight="bold", ha="left")
    for i in range(1, 5):
        y = 2.1 - i * 0.42
        _pieces(ax, x0, y, [_show(t) for t in tokens[:i]], widths=[cw] * i, size=SMALL, h=0.32)
        _pieces(ax, x0 + i * cw, y, [_show(tokens[i])], widths=[cw], size=SMALL, h=0.32, kind="loss")
        text(ax, x0 - 0.12, y, f"x[:{i}] → y[{i - 1}]", mono=True, size=SMALL, ha="right", color=MUTED)
    text(ax, xs[4] + cw / 2 + 0.15, 1.05, "context (blue)\npredicts the\nnext token (red)", size=SMALL,
         ha="left", color=MUTED)
    return fig


@figure("ch02_windows_to_batch", NB)
def windows_to_batch() -> Figure:
    """Windows of max_length=4 with stride=4 over the token ids become the rows of inputs and targets."""
    stream = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632]  # enc_text[:13]
    inputs = [[40, 367, 2885, 1464], [1807, 3619, 402, 271], [10899, 2138, 257, 7026],
              [15632, 438, 2016, 257], [922, 5891, 1576, 438], [568, 340, 373, 645],
              [1049, 5975, 284, 502], [284, 3285, 326, 11]]  # the first batch, as the notebook prints it
    targets = [row[1:] + [nxt[0]] for row, nxt in zip(inputs, inputs[1:])] + [[3285, 326, 11, 287]]
    max_length, stride, shown = 4, 4, 3
    fig, ax = canvas(9.3, 5.2)
    cw, x0, ys = 0.56, 1.15, 4.55
    text(ax, x0 - 0.12, ys, "token ids", size=SMALL, ha="right", color=MUTED)
    _pieces(ax, x0, ys, [str(t) for t in stream] + ["…"], kind="id", widths=[cw] * 14)
    for pos in range(13):
        text(ax, x0 + (pos + 0.5) * cw, ys + 0.3, str(pos), mono=True, size=SMALL - 0.5, color=MUTED)
    text(ax, x0 - 0.12, ys + 0.3, "position", size=SMALL - 0.5, ha="right", color=MUTED)
    for k in range(shown):
        s = k * stride
        brace(ax, x0 + s * cw + 0.04, x0 + (s + max_length) * cw - 0.04, 4.2, f"inputs[{k}]", color=BLUE[1])
        brace(ax, x0 + (s + 1) * cw + 0.04, x0 + (s + 1 + max_length) * cw - 0.04, 3.62, f"targets[{k}]",
              color=RED[1])
    arrow(ax, (x0 + 0.05, 3.05), (x0 + stride * cw + 0.05, 3.05), f"stride={stride}", label_side="below",
          color=MUTED, lw=1.0)
    text(ax, x0 + stride * cw + 0.3, 3.05, "window k starts at position k * stride and holds max_length=4 "
         "tokens", size=SMALL, color=MUTED, ha="left")
    for name, mat, mx, kind in [("inputs", inputs, x0, "token"), ("targets", targets, 5.3, "loss")]:
        f, _ = colors(kind)
        text(ax, mx + 2 * cw, 2.55, name, mono=True, weight="bold", size=MONO_SIZE)
        for r, row in enumerate(mat):
            cells(ax, mx, 2.4 - r * 0.24, [str(v) for v in row], cell_w=cw, cell_h=0.24, kind=kind,
                  fills=[f if r < shown else "#FFFFFF"] * 4, size=SMALL - 0.5)
        text(ax, mx + 2 * cw, 0.22, shape("batch_size", "max_length") + " = (8, 4)", mono=True, size=SMALL,
             color=MUTED)
    for r in range(8):
        text(ax, x0 - 0.1, 2.28 - r * 0.24, f"window {r}", size=SMALL - 0.5, ha="right", color=MUTED)
    text(ax, 5.3 + 4 * cw + 0.2, 1.56, "each target row is its\ninput row shifted by one:\nthe next token "
         "at every\nposition", size=SMALL, color=MUTED, ha="left")
    return fig


@figure("ch02_word_embeddings", NB)
def word_embeddings() -> Figure:
    """Ids put unrelated words next to each other; learned vectors place related words close (illustration)."""
    # (token, GPT-2 id, group); the ids are gpt2.encode(token)[0]
    words = [(" red", 2266, "colour"), (" dog", 3290, "animal"), (" London", 3576, "city"),
             (" cat", 3797, "animal"), (" green", 4077, "colour"), (" blue", 4171, "colour"),
             (" Paris", 6342, "city"), (" Berlin", 11307, "city"), (" puppy", 26188, "animal"),
             (" kitten", 42143, "animal")]
    # made-up 2-D positions for the illustration
    where = {" dog": (5.9, 2.3), " puppy": (6.55, 2.8), " cat": (6.75, 1.95), " kitten": (7.4, 2.45),
             " red": (5.55, 0.85), " green": (6.0, 0.55), " blue": (6.45, 0.95),
             " London": (8.05, 1.15), " Paris": (8.5, 1.55), " Berlin": (8.55, 0.85)}
    markers = {"animal": "o", "colour": "s", "city": "^"}
    fig, ax = canvas(9.2, 3.9)
    text(ax, 1.25, 3.6, "token ids, in id order", weight="bold")
    for r, (tok, tid, group) in enumerate(words):
        y = 3.15 - r * 0.3
        box(ax, 0.75, y, 0.7, 0.26, str(tid), kind="id", mono=True, size=SMALL, rounded=False)
        box(ax, 1.6, y, 0.95, 0.26, repr(_show(tok)), kind="token", mono=True, size=SMALL, rounded=False)
        ax.plot([2.25], [y], marker=markers[group], color=GREEN[1], ms=6, zorder=4)
    text(ax, 1.25, 0.12, "neighbouring ids, unrelated words", size=SMALL, color=MUTED)
    arrow(ax, (2.75, 1.85), (4.35, 1.85), "nn.Embedding", label_side="above", size=SMALL)
    text(ax, 3.55, 1.7, "id → vector of\nemb_dim numbers", size=SMALL, color=MUTED, va="top")
    region(ax, 4.6, 0.25, 9.05, 3.6, "embedding space: an illustration", kind="embedding", size=SMALL + 0.5)
    text(ax, 4.7, 3.23, "made-up 2-D positions; real vectors have emb_dim numbers", size=SMALL,
         color=MUTED, ha="left")
    for tok, tid, group in words:
        px, py = where[tok]
        ax.plot([px], [py], marker=markers[group], color=GREEN[1], ms=7, zorder=4)
        if tok in (" puppy", " kitten"):  # to the right, clear of the arrows that end at these points
            text(ax, px + 0.12, py, _show(tok), mono=True, size=SMALL, ha="left")
        else:
            text(ax, px, py - 0.2, _show(tok), mono=True, size=SMALL)
    for a, b in [(" dog", " puppy"), (" cat", " kitten")]:
        arrow(ax, where[a], where[b], color=MUTED, lw=0.9, dashed=True)
    text(ax, 7.75, 2.85, "same offset:\n'young'", size=SMALL, color=MUTED, ha="left")
    for label, (gx, gy) in [("animals", (5.25, 2.75)), ("colours", (4.95, 1.3)), ("cities", (8.3, 2.05))]:
        text(ax, gx, gy, label, size=SMALL, color=GREEN[1], style="italic")
    return fig


@figure("ch02_embedding_lookup", NB)
def embedding_lookup() -> Figure:
    """nn.Embedding as row selection: token_ids [4, 0, 6, 4] pick rows of the (7, 3) weight."""
    weight = [[0.3374, -0.1778, -0.3035], [-0.5880, 0.3486, 1.3010], [1.2753, -0.2010, -0.1606],
              [-0.4015, 0.6957, -1.8061], [1.8960, 0.3255, -0.6315], [-2.8400, -0.7849, -1.4096],
              [-0.4076, 0.7953, 0.9985]]  # toy_embedding.weight after torch.manual_seed(123)
    token_ids = [4, 0, 6, 4]
    fig, ax = canvas(9.0, 4.1)
    cw, ch, wx, wy = 0.68, 0.36, 0.9, 3.35
    ox, oy = 5.9, wy - 1.5 * ch
    text(ax, wx + 1.5 * cw, 3.75, "toy_embedding.weight", mono=True, weight="bold", size=MONO_SIZE)
    for r, row in enumerate(weight):
        fill = GREEN[0] if r in token_ids else "#FFFFFF"
        cells(ax, wx, wy - r * ch, [f"{v:.4f}" for v in row], cell_w=cw, cell_h=ch, kind="embedding",
              fills=[fill] * 3)
        text(ax, wx - 0.1, wy - (r + 0.5) * ch, str(r), mono=True, size=SMALL, ha="right", color=MUTED)
    text(ax, wx - 0.1, wy + 0.15, "row", size=SMALL - 0.5, ha="right", color=MUTED)
    text(ax, wx + 1.5 * cw, wy - 7 * ch - 0.22, shape("vocab_size", "emb_dim") + " = (7, 3)", mono=True,
         size=SMALL, color=MUTED)
    text(ax, ox + 0.2, oy + 0.25, "token_ids", mono=True, weight="bold", size=MONO_SIZE)
    text(ax, ox + 0.5 + 1.5 * cw, oy + 0.25, "looked_up", mono=True, weight="bold", size=MONO_SIZE)
    for i, tid in enumerate(token_ids):
        y = oy - i * ch
        cells(ax, ox, y, [str(tid)], cell_w=0.4, cell_h=ch, kind="id")
        cells(ax, ox + 0.5, y, [f"{v:.4f}" for v in weight[tid]], cell_w=cw, cell_h=ch, kind="embedding")
        arrow(ax, (wx + 3 * cw + 0.05, wy - (tid + 0.5) * ch), (ox - 0.05, y - ch / 2), color=GREEN[1], lw=1.0)
    text(ax, ox + 0.2, oy - 4 * ch - 0.22, "(4,)", mono=True, size=SMALL, color=MUTED)
    text(ax, ox + 0.5 + 1.5 * cw, oy - 4 * ch - 0.22, "(4, 3)", mono=True, size=SMALL, color=MUTED)
    text(ax, ox + 0.5 + 1.5 * cw, oy - 4 * ch - 0.6, "row i of looked_up =\nrow token_ids[i] of weight",
         size=SMALL, color=MUTED, va="top")
    text(ax, 0.3, 0.22, "the same as one_hot(token_ids, 7) @ weight:  (4, 7) @ (7, 3) → (4, 3)", mono=True,
         size=SMALL, color=MUTED, ha="left")
    return fig


def _stack(ax, x: float, y: float, depth: int, w: float = 0.8, h: float = 0.7, step: float = 0.06) -> float:
    """`depth` green slabs (one per window), each a (tokens, emb_dim) grid, from bottom-left (x, y).

    Returns the right edge of the drawing."""
    f, e = colors("embedding")
    for k in reversed(range(depth)):
        ax.add_patch(Rectangle((x + k * step, y + k * step), w, h, facecolor=f, edgecolor=e, lw=0.9,
                               zorder=2 + (depth - k) * 0.01))
    for r in range(1, 4):  # 4 token rows on the front slab
        ax.plot([x, x + w], [y + r * h / 4] * 2, color=e, lw=0.5, zorder=2.5)
    return x + w + (depth - 1) * step


@figure("ch02_token_plus_position", NB)
def token_plus_position() -> Figure:
    """inputs -> token embeddings (8, 4, 256) plus position embeddings (4, 256), broadcast over the batch."""
    fig, ax = canvas(9.4, 4.4)
    lanes = [(3.2, "inputs", "(batch, tokens)\n= (8, 4)", "token_embedding_layer", "nn.Embedding(50257, 256)",
              shape("vocab_size", "emb_dim"), "token_embeddings", "(8, 4, 256)", 8),
             (1.0, "positions", "torch.arange(4)\n= [0, 1, 2, 3]", "pos_embedding_layer", "nn.Embedding(4, 256)",
              shape("context_length", "emb_dim"), "pos_embeddings", "(4, 256)", 1)]
    ends = []
    for y, name, detail, layer, call, table, out, out_shape, depth in lanes:
        box(ax, 0.8, y, 1.3, 0.75, "", kind="id")
        text(ax, 0.8, y + 0.17, name, mono=True, size=MONO_SIZE, weight="bold")
        text(ax, 0.8, y - 0.15, detail, mono=True, size=SMALL - 0.5)
        arrow(ax, (1.48, y), (1.95, y))
        box(ax, 3.0, y, 2.0, 0.75, "", kind="layer")
        text(ax, 3.0, y + 0.15, layer, mono=True, size=SMALL, weight="bold")
        text(ax, 3.0, y - 0.16, call, mono=True, size=SMALL)
        text(ax, 3.0, y - 0.52, table + " table", mono=True, size=SMALL, color=MUTED)
        arrow(ax, (4.03, y), (4.55, y))
        right = _stack(ax, 4.62, y - 0.35, depth)
        text(ax, 5.02, y - 0.5, out, mono=True, size=SMALL, va="top")
        text(ax, 5.02, y - 0.75, out_shape, mono=True, size=SMALL, va="top", color=MUTED)
        ends.append((right, y))
    px, py = 7.0, 2.15
    box(ax, px, py, 0.5, 0.5, "+", kind="op", size=16)
    arrow(ax, (ends[0][0] + 0.06, ends[0][1] - 0.1), (px - 0.2, py + 0.27))
    ax.plot([ends[1][0] + 0.06, px], [ends[1][1]] * 2, color="#222222", lw=1.3, zorder=3)
    arrow(ax, (px, ends[1][1]), (px, py - 0.27))
    text(ax, px + 0.15, ends[1][1] - 0.1, "the same (4, 256) is added\nto each of the 8 windows\n(broadcast)",
         size=SMALL, color=MUTED, ha="left", va="top")
    arrow(ax, (px + 0.27, py), (7.6, py))
    _stack(ax, 7.68, py - 0.35, 8)
    text(ax, 8.4, 3.15, "input_embeddings", mono=True, size=SMALL, weight="bold")
    text(ax, 8.4, py - 0.5, "(batch, tokens, emb_dim)\n= (8, 4, 256)", mono=True, size=SMALL, va="top")
    return fig
