"""Concept diagrams for the bonus notebook ch02_text_data/bpe_from_scratch.ipynb.

Every token, count, rank and id drawn here is computed when the figure is drawn, with the notebook's own
definitions (`ch02_text_data.bpe`) on texts written out below: the byte table, the regex split, the pair
counts and merges of the notebook's tiny text, and the two files `save` writes.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import regex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ch02_text_data.bpe import (GPT2_PATTERN, BPETokenizer, apply_merges, bytes_to_unicode, merge_pair,
                                pretokenize, train_bpe)

from . import figure
from .style import (BLUE, GREEN, GREY, MONO_SIZE, MUTED, ORANGE, PURPLE, SMALL, TEAL, YELLOW, arrow, box,
                    canvas, colors, region, text)

NB = "ch02_text_data/bpe_from_scratch.ipynb"
TINY = "the cat sat on the mat the cat sat"  # the notebook's tiny training text (section 4)
CHAR_W = 0.602 / 72  # width of one DejaVu Sans Mono character per point of font size, in inches
STRONG_BLUE = "#A9CBEF"  # a symbol that a merge just made, or a byte that moved


def _show(symbol: str) -> str:
    """A piece of text as the figures print it: a space is a visible '␣', a newline is '\\n'."""
    return symbol.replace(" ", "␣").replace("\n", "\\n")


def _pieces(ax, x: float, y: float, labels, *, h: float = 0.36, kind: str = "token", size: float = SMALL,
            pad: float = 0.16, min_w: float = 0.3, widths=None, fills=None, edges=None) -> list[tuple[float, float]]:
    """Touching cells whose widths fit their labels, left edge x, centre height y; returns (centre x, width)."""
    f, e = colors(kind)
    out = []
    for i, lab in enumerate(labels):
        w = widths[i] if widths else max(min_w, len(lab) * CHAR_W * size + pad)
        ax.add_patch(Rectangle((x, y - h / 2), w, h, facecolor=fills[i] if fills and fills[i] else f,
                               edgecolor=edges[i] if edges and edges[i] else e, linewidth=1.0, zorder=2))
        text(ax, x + w / 2, y, lab, mono=True, size=size)
        out.append((x + w / 2, w))
        x += w
    return out


def _swatch(ax, x: float, y: float, fill: str, edge: str, label: str, *, mono: bool = False) -> None:
    """A small legend square at (x, y) with a label to its right."""
    ax.add_patch(Rectangle((x, y - 0.09), 0.18, 0.18, facecolor=fill, edgecolor=edge, linewidth=1.0, zorder=2))
    text(ax, x + 0.27, y, label, size=SMALL, ha="left", mono=mono)


@figure("bpe_byte_table", NB)
def byte_table() -> Figure:
    """GPT-2's 256 byte stand-ins as a 16 x 16 table, and 'café ok' written with them."""
    table = bytes_to_unicode()
    moved = {b for b, ch in table.items() if ord(ch) != b}
    sample = "café ok"
    raw = sample.encode("utf-8")
    fig, ax = canvas(9.0, 5.45)
    text(ax, 0.15, 5.25, "bytes_to_unicode(): every byte value gets one printable stand-in character",
         ha="left", size=SMALL + 1.5, mono=False)
    cell, x0, top = 0.265, 0.75, 4.65
    for col in range(16):
        text(ax, x0 + (col + 0.5) * cell, top + 0.13, f"{col:X}", mono=True, size=SMALL, color=MUTED)
    text(ax, x0 - 0.08, top + 0.13, "+", mono=True, size=SMALL, color=MUTED, ha="right")
    used = set(raw)
    for row in range(16):
        text(ax, x0 - 0.08, top - (row + 0.5) * cell, f"{row:X}0", mono=True, size=SMALL, color=MUTED, ha="right")
        for col in range(16):
            b = 16 * row + col
            left, bottom = x0 + col * cell, top - (row + 1) * cell
            ax.add_patch(Rectangle((left, bottom), cell, cell, facecolor=STRONG_BLUE if b in moved else BLUE[0],
                                   edgecolor=BLUE[1], linewidth=0.5, zorder=2))
            text(ax, left + cell / 2, bottom + cell / 2, table[b], mono=True, size=SMALL)
    for b in sorted(used):  # the bytes of the example, framed
        row, col = divmod(b, 16)
        ax.add_patch(Rectangle((x0 + col * cell, top - (row + 1) * cell), cell, cell, facecolor="none",
                               edgecolor=ORANGE[1], linewidth=2.0, zorder=4))

    # right: the example, character -> UTF-8 bytes -> stand-ins
    xr, cw = 5.45, 0.42
    rows = {"text": 4.5, "bytes": 3.45, "stand": 2.4}
    widths = [len(ch.encode("utf-8")) * cw for ch in sample]
    _pieces(ax, xr, rows["text"], [_show(ch) for ch in sample], widths=widths, kind="text", size=MONO_SIZE, h=0.42)
    _pieces(ax, xr, rows["bytes"], [f"{b:02X}" for b in raw], widths=[cw] * len(raw), kind="id",
            size=MONO_SIZE, h=0.42)
    _pieces(ax, xr, rows["stand"], [table[b] for b in raw], widths=[cw] * len(raw), size=MONO_SIZE, h=0.42,
            fills=[STRONG_BLUE if b in moved else None for b in raw])
    labels = {"text": f"the text {sample!r}", "bytes": "its UTF-8 bytes (hex): é takes two",
              "stand": "one stand-in per byte"}
    for key, y in rows.items():
        text(ax, xr, y + 0.33, labels[key], size=SMALL, ha="left", color=MUTED)
    xm = xr + len(raw) * cw / 2
    arrow(ax, (xm, rows["text"] - 0.23), (xm, rows["bytes"] + 0.47), 'encode("utf-8")', size=SMALL)
    arrow(ax, (xm, rows["bytes"] - 0.23), (xm, rows["stand"] + 0.47), "byte_encoder[b]", size=SMALL)
    shown = "".join(table[b] for b in raw)
    back = bytes({ch: b for b, ch in table.items()}[c] for c in shown).decode("utf-8")
    text(ax, xr, 1.8, f"stored in GPT-2's files as {shown!r};", size=SMALL, ha="left", color=MUTED)
    text(ax, xr, 1.57, f"byte_decoder turns it back into {back!r}", size=SMALL, ha="left", color=MUTED)
    ly = 1.1
    _swatch(ax, xr, ly, BLUE[0], BLUE[1], f"{256 - len(moved)} bytes stand for themselves:")
    text(ax, xr + 0.27, ly - 0.21, "! to ~, ¡ to ¬, ® to ÿ", size=SMALL, ha="left", mono=True)
    _swatch(ax, xr, ly - 0.5, STRONG_BLUE, BLUE[1], f"{len(moved)} bytes move to U+0100, U+0101, ...")
    text(ax, xr + 0.27, ly - 0.71, f"in byte order: space 0x20 → {table[0x20]!r}", size=SMALL, ha="left")
    _swatch(ax, xr, ly - 1.0, "white", ORANGE[1], f"the bytes of {sample!r}")
    return fig


# The six alternatives of GPT2_PATTERN, in order, with what each one is for.
ALTERNATIVES = [
    ("'s|'t|'re|'ve|'m|'ll|'d", "a contraction", PURPLE),
    (" ?\\p{L}+", "letters, one space before", BLUE),
    (" ?\\p{N}+", "digits, one space before", GREEN),
    (" ?[^\\s\\p{L}\\p{N}]+", "anything else, one space before", YELLOW),
    ("\\s+(?!\\S)", "spaces, leaving the last one to a word", TEAL),
    ("\\s+", "the whitespace that is left", GREY),
]


@figure("bpe_pretokenize", NB)
def pretokenize_figure() -> Figure:
    """A sentence cut into pre-tokens by GPT2_PATTERN, each coloured by the alternative that matched it."""
    assert "|".join(alt for alt, _, _ in ALTERNATIVES) == GPT2_PATTERN
    grouped = regex.compile("|".join(f"({alt})" for alt, _, _ in ALTERNATIVES))  # same matches, numbered
    sample = "It's 2024, they're in Köln: café!!  ok\n\nbye   now "
    matches = [(m.group(), m.lastindex - 1) for m in grouped.finditer(sample)]
    assert [piece for piece, _ in matches] == pretokenize(sample)
    fig, ax = canvas(9.0, 4.0)
    text(ax, 0.2, 3.8, "pretokenize(text): the regex takes the first alternative that matches, left to right",
         ha="left", size=SMALL + 1.5)
    text(ax, 0.2, 3.4, "text = " + repr(sample), mono=True, size=MONO_SIZE, ha="left")
    x, y = 0.2, 2.75
    labels = [_show(piece) for piece, _ in matches]
    fills = [ALTERNATIVES[k][2][0] for _, k in matches]
    edges = [ALTERNATIVES[k][2][1] for _, k in matches]
    pcs = _pieces(ax, x, y, labels, fills=fills, edges=edges, size=MONO_SIZE, pad=0.14, min_w=0.28, h=0.42)
    for (cx, _), (_, k) in zip(pcs, matches):
        text(ax, cx, y - 0.38, str(k + 1), size=SMALL, color=ALTERNATIVES[k][2][1], weight="bold")
    text(ax, pcs[-1][0] + pcs[-1][1] / 2 + 0.1, y, f"{len(matches)} pre-tokens", size=SMALL, ha="left",
         color=MUTED)
    top = 1.75
    for k, (alt, meaning, (fill, edge)) in enumerate(ALTERNATIVES):
        col, row = divmod(k, 3)
        lx, ly = 0.2 + col * 4.45, top - row * 0.5
        ax.add_patch(Rectangle((lx, ly - 0.15), 0.3, 0.3, facecolor=fill, edgecolor=edge, linewidth=1.0, zorder=2))
        text(ax, lx + 0.15, ly, str(k + 1), size=SMALL, color=edge, weight="bold")
        text(ax, lx + 0.42, ly + 0.08, _show(alt), mono=True, size=SMALL, ha="left")
        text(ax, lx + 0.42, ly - 0.12, meaning, size=SMALL - 1, ha="left", color=MUTED)
    text(ax, 0.2, 0.2, "␣ is a space; BPE merges never cross the border between two pre-tokens",
         size=SMALL, ha="left", color=MUTED)
    return fig


def _pair_counts(word_counts: Counter, symbols: dict[str, list[str]]) -> Counter:
    """How often each pair of neighbouring symbols occurs, each pre-token counted as often as it occurs."""
    pairs: Counter = Counter()
    for word, count in word_counts.items():
        for pair in zip(symbols[word], symbols[word][1:]):
            pairs[pair] += count
    return pairs


@figure("bpe_merge_step", NB)
def merge_step() -> Figure:
    """One training round on the tiny text: pre-token counts, pair counts, the best pair merged everywhere."""
    table = bytes_to_unicode()
    word_counts = Counter(pretokenize(TINY))
    symbols = {w: [table[b] for b in w.encode("utf-8")] for w in word_counts}
    pairs = _pair_counts(word_counts, symbols)
    ranked = sorted(pairs, key=lambda p: (-pairs[p], p))  # the trainer's order: count, then the pair itself
    best = ranked[0]
    assert [best] == train_bpe(TINY, 1)
    merged = {w: merge_pair(s, best) for w, s in symbols.items()}
    fig, ax = canvas(9.0, 4.7)
    text(ax, 0.15, 4.5, f'One round of train_bpe on "{TINY}"', ha="left", size=SMALL + 1.5)
    heads = [(0.25, "1. pre-tokens, with counts"), (3.35, "2. count neighbouring pairs"),
             (6.45, "3. merge the best pair")]
    for x, head in heads:
        text(ax, x, 4.1, head, ha="left", weight="bold", size=SMALL + 1)
    cw, rh, y0 = 0.34, 0.5, 3.55
    for i, word in enumerate(word_counts):
        y = y0 - i * rh
        s = symbols[word]
        _pieces(ax, 0.25, y, s, widths=[cw] * len(s), h=0.36)
        text(ax, 0.25 + 4 * cw + 0.15, y, f"× {word_counts[word]}", size=SMALL + 0.5, ha="left")
        m = merged[word]
        _pieces(ax, 6.45, y, m, widths=[cw * len(p) for p in m], h=0.36,
                fills=[STRONG_BLUE if p == "".join(best) else None for p in m])
        text(ax, 6.45 + 4 * cw + 0.15, y, f"× {word_counts[word]}", size=SMALL + 0.5, ha="left")
    text(ax, 0.25, y0 - len(word_counts) * rh + 0.05, f"{sum(word_counts.values())} pre-tokens, "
         f"{len(word_counts)} distinct; {table[32]} is the space", size=SMALL, ha="left", color=MUTED)
    # bars
    bh, by0, bx, unit = 0.25, 3.65, 3.95, 0.38
    for i, pair in enumerate(ranked):
        y = by0 - i * bh
        is_best = pair == best
        fill, edge = ORANGE if is_best else GREY
        ax.add_patch(Rectangle((bx, y - bh * 0.4), pairs[pair] * unit, bh * 0.8, facecolor=fill, edgecolor=edge,
                               linewidth=0.8, zorder=2))
        text(ax, bx - 0.1, y, f"{pair[0]} {pair[1]}", mono=True, size=SMALL, ha="right")
        text(ax, bx + pairs[pair] * unit + 0.07, y, str(pairs[pair]), mono=True, size=SMALL, ha="left",
             weight="bold" if is_best else "normal")
    sources = [f"{word_counts[w]} ({''.join(symbols[w])})" for w in word_counts
               if best in zip(symbols[w], symbols[w][1:])]
    yb = by0 - len(ranked) * bh - 0.05
    text(ax, 3.35, yb, f"{best[0]} {best[1]}: {pairs[best]} = " + " + ".join(sources), size=SMALL, ha="left",
         color=ORANGE[1], mono=True)
    arrow(ax, (2.3, 2.3), (3.15, 2.3))
    arrow(ax, (5.95, 2.3), (6.35, 2.3))
    text(ax, 6.45, y0 - len(word_counts) * rh + 0.05, f"merge 0: '{best[0]}' + '{best[1]}' → '{''.join(best)}'",
         size=SMALL, ha="left", color=MUTED, mono=True)
    text(ax, 6.45, y0 - len(word_counts) * rh - 0.22, "then count again and repeat", size=SMALL, ha="left",
         color=MUTED)
    return fig


def _merge_trace(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[list[str], list[int | None], int | None]]:
    """apply_merges step by step: (symbols, rank of each neighbouring pair or None, index merged or None)."""
    table = bytes_to_unicode()
    symbols = [table[b] for b in word.encode("utf-8")]
    trace = []
    while True:
        pair_ranks = [ranks.get(p) for p in zip(symbols, symbols[1:])]
        known = [r for r in pair_ranks if r is not None]
        if not known:
            trace.append((symbols, pair_ranks, None))
            return trace
        i = pair_ranks.index(min(known))
        trace.append((symbols, pair_ranks, i))
        symbols = merge_pair(symbols, (symbols[i], symbols[i + 1]))


@figure("bpe_apply_merges", NB)
def apply_merges_figure() -> Figure:
    """Encoding ' the' and ' cats' with the tiny text's 8 merges: always the neighbouring pair of lowest rank."""
    merges = train_bpe(TINY, 8)
    ranks = {pair: r for r, pair in enumerate(merges)}
    tok = BPETokenizer.train(TINY, 8)
    table = bytes_to_unicode()
    fig, ax = canvas(9.0, 4.6)
    text(ax, 0.15, 4.4, "apply_merges: merge the neighbouring pair with the lowest rank, until no pair is in the list",
         ha="left", size=SMALL + 1.5)
    text(ax, 0.25, 3.95, "the merge list", weight="bold", size=SMALL + 1, ha="left")
    for r, (a, b) in enumerate(merges):
        y = 3.55 - r * 0.36
        text(ax, 0.45, y, str(r), mono=True, size=SMALL, color=MUTED, ha="right")
        text(ax, 0.6, y, f"{a} + {b} → {a + b}", mono=True, size=SMALL + 0.5, ha="left")
    text(ax, 0.25, 3.55 - len(merges) * 0.36 + 0.05, "rank, pair → new token;\nfrom train_bpe(tiny, 8)",
         size=SMALL, ha="left", va="top", color=MUTED)
    cw, rh = 0.42, 0.78
    for word, x0 in [(" the", 3.05), (" cats", 6.0)]:
        trace = _merge_trace(word, ranks)
        assert trace[-1][0] == apply_merges([table[b] for b in word.encode("utf-8")], ranks)
        text(ax, x0, 3.95, f"encode({word!r})", weight="bold", size=SMALL + 1, ha="left", mono=True)
        for step, (symbols, pair_ranks, i) in enumerate(trace):
            y = 3.45 - step * rh
            prev, k = trace[step - 1][0], trace[step - 1][2]  # the symbols before and the pair merged
            new = prev[k] + prev[k + 1] if step else None
            pcs = _pieces(ax, x0, y, symbols, widths=[cw * len(s) for s in symbols], h=0.36,
                          fills=[STRONG_BLUE if s == new else None for s in symbols])
            for j, r in enumerate(pair_ranks):  # the rank of each neighbouring pair, under the boundary
                bx = pcs[j][0] + pcs[j][1] / 2
                chosen = j == i
                text(ax, bx, y - 0.3, "–" if r is None else str(r), mono=True, size=SMALL,
                     color=ORANGE[1] if chosen else MUTED, weight="bold" if chosen else "normal")
        ids = tok.encode(word)
        y_end = 3.45 - (len(trace) - 1) * rh - 0.55
        done = "one token left" if len(trace[-1][0]) == 1 else "no pair in the list"
        text(ax, x0, y_end, f"{done}: ids {ids}", size=SMALL, ha="left", color=MUTED)
    text(ax, 3.05, 0.3, "under each border between two symbols: the rank of that pair, or – if it was "
         "never learned;", size=SMALL, ha="left", color=MUTED)
    text(ax, 3.05, 0.1, "the lowest rank (orange) is merged next", size=SMALL, ha="left", color=MUTED)
    return fig


@figure("bpe_save_load", NB)
def save_load() -> Figure:
    """save(folder) writes encoder.json and vocab.bpe in GPT-2's format; load(folder) reads them back."""
    tok = BPETokenizer.train(TINY, 8)
    with tempfile.TemporaryDirectory() as folder:
        tok.save(folder)
        encoder_text = (Path(folder) / "encoder.json").read_text(encoding="utf-8")
        vocab_lines = (Path(folder) / "vocab.bpe").read_text(encoding="utf-8").splitlines()
        loaded = BPETokenizer.load(folder)
    assert (loaded.encoder, loaded.merges, loaded.special_tokens) == (tok.encoder, tok.merges, tok.special_tokens)
    entries = list(json.loads(encoder_text).items())
    chunks = [json.dumps(dict([e]))[1:-1] for e in entries]  # each entry exactly as the file writes it
    assert encoder_text == "{" + ", ".join(chunks) + "}"
    n_merges = len(tok.merges)
    fig, ax = canvas(9.0, 4.5)
    text(ax, 0.15, 4.3, f"tok = BPETokenizer.train(tiny, {n_merges}), saved to a folder and loaded back", ha="left",
         size=SMALL + 1.5)
    fields = [("encoder", f"{len(tok.encoder)} tokens → ids"), ("merges", f"{n_merges} pairs, best first"),
              ("special_tokens", str(tok.special_tokens))]
    for x, name in [(1.1, "tok"), (7.9, "loaded")]:
        box(ax, x, 2.3, 1.95, 1.9, "", kind="op")
        text(ax, x, 3.0, name, mono=True, weight="bold", size=MONO_SIZE)
        for k, (field, value) in enumerate(fields):
            text(ax, x - 0.85, 2.6 - k * 0.45, field, mono=True, size=SMALL, ha="left")
            text(ax, x - 0.75, 2.41 - k * 0.45, value, mono=True, size=SMALL - 1, ha="left", color=MUTED)
    arrow(ax, (2.12, 2.3), (2.98, 2.3), "save(folder)", label_side="above", label_offset=0.1, size=SMALL - 1)
    arrow(ax, (6.02, 2.3), (6.88, 2.3), "load(folder)", label_side="above", label_offset=0.1, size=SMALL - 1)
    region(ax, 3.05, 0.5, 5.95, 3.95, "folder/", kind="neutral")
    # encoder.json: its first two entries, the first two merges' tokens, and the last two entries
    lines = ["{" + ", ".join(chunks[:2]) + ", ...",
             ", ".join(chunks[256:258]) + ", ...",
             ", ".join(chunks[-2:]) + "}"]
    box(ax, 4.5, 2.95, 2.75, 1.2, "", kind="text", rounded=False)
    text(ax, 3.22, 3.37, "encoder.json", weight="bold", size=SMALL, ha="left")
    for k, line in enumerate(lines):
        text(ax, 3.22, 3.13 - k * 0.2, line, mono=True, size=SMALL - 1, ha="left")
    text(ax, 3.22, 2.5, "every token → id, ordered by id; \\u0120 is Ġ", size=SMALL - 1, ha="left", color=MUTED)
    box(ax, 4.5, 1.4, 2.75, 1.55, "", kind="text", rounded=False)
    text(ax, 3.22, 2.0, "vocab.bpe", weight="bold", size=SMALL, ha="left")
    shown = vocab_lines[:4] + ["..."] + vocab_lines[-1:]
    for k, line in enumerate(shown):
        text(ax, 3.22, 1.76 - k * 0.2, line, mono=True, size=SMALL - 1, ha="left")
    text(ax, 4.3, 1.76, "a version line,", size=SMALL - 1, ha="left", color=MUTED)
    text(ax, 4.3, 1.56, "then one merge", size=SMALL - 1, ha="left", color=MUTED)
    text(ax, 4.3, 1.36, "per line, best first", size=SMALL - 1, ha="left", color=MUTED)
    text(ax, 7.9, 1.15, "from_gpt2_files: an entry that\nis neither a byte nor a merge\nresult is a special token",
         size=SMALL - 1, color=MUTED, va="top")
    same = all(loaded.encode(t, allowed_special="all") == tok.encode(t, allowed_special="all")
               for t in [TINY, "the cats<|endoftext|>"])
    text(ax, 4.5, 0.2, f"loaded.encode(text) == tok.encode(text): {same}", mono=True, size=SMALL)
    return fig
