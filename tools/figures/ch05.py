"""Concept diagrams for chapter 5 (ch05_pretraining/ch05.ipynb): the loss, the data, the loop, decoding, resuming.

Numbers that a reader can find in the notebook are the notebook's: the printed outputs of seeded, deterministic
cells (probabilities, gradient norms, token counts) are copied here, and the toy decoding example
(`next_token_logits`) and the learning-rate schedule are recomputed with the same formulas. No figure quotes the
result of a training run: a re-run on other hardware changes those digits, and the notebook prints them.
"""
from __future__ import annotations

import math

from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from . import figure
from .style import (
    BLUE, GREY, INK, MUTED, ORANGE, PURPLE, RED, SMALL, TEAL, arrow, box, brace, canvas, cells, matrix, region,
    shape, text,
)

NB = "ch05_pretraining/ch05.ipynb"

# The notebook's toy next-token example (section 5.7), the same logits and vocabulary.
VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
LOGITS = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]


def _softmax(values: list[float]) -> list[float]:
    """torch.softmax of a list, in plain Python (the same numbers to float precision)."""
    top = max(v for v in values if v != -math.inf)
    exps = [0.0 if v == -math.inf else math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _bar(ax, x: float, bottom: float, w: float, h: float, kind: tuple[str, str] = ORANGE) -> None:
    """One bar of a bar chart drawn in canvas inches."""
    ax.add_patch(Rectangle((x - w / 2, bottom), w, h, facecolor=kind[0], edgecolor=kind[1], lw=1.0, zorder=2))


def _path(ax, points: list[tuple[float, float]], color: str = INK, dashed: bool = False) -> None:
    """A line through points, with an arrow head on its last segment."""
    xs, ys = zip(*points[:-1])
    ax.plot(xs, ys, color=color, lw=1.3, ls="--" if dashed else "-", zorder=3, solid_capstyle="butt")
    arrow(ax, points[-2], points[-1], color=color, dashed=dashed)


@figure("ch05_training_loop", NB)
def training_loop() -> Figure:
    """One training step as a cycle (forward, loss, backward, step, zero_grad) plus the periodic evaluation."""
    fig, ax = canvas(9.4, 4.9)
    lx, rx, w, h = 1.75, 5.25, 2.2, 0.56
    ys = [4.4, 2.85, 1.3]
    box(ax, lx, ys[0], w, h, "train_loader", kind="id", mono=True)
    box(ax, lx, ys[1], w, h, "model(input_batch)", kind="layer", mono=True)
    box(ax, lx, ys[2], w, h, "F.cross_entropy", kind="op", mono=True)
    box(ax, rx, ys[2], w, h, "loss.backward()", kind="loss", mono=True)
    box(ax, rx, ys[1], w, h, "optimizer.step()", kind="trainable", mono=True)
    box(ax, rx, ys[0], w, h, "optimizer.zero_grad()", kind="op", mono=True)
    # forward: down the left column
    arrow(ax, (lx, ys[0] - h / 2), (lx, ys[1] + h / 2), "input_batch\n" + shape("batch", "tokens"))
    arrow(ax, (lx, ys[1] - h / 2), (lx, ys[2] + h / 2), "logits\n" + shape("batch", "tokens", "vocab_size"))
    _path(ax, [(lx - w / 2, ys[0]), (0.3, ys[0]), (0.3, ys[2]), (lx - w / 2, ys[2])])
    text(ax, 0.42, (ys[0] + ys[2]) / 2, "target_batch " + shape("batch", "tokens"), mono=True, size=SMALL,
         color=MUTED, rotation=90)
    # backward and update: up the right column, then back to the loader
    arrow(ax, (lx + w / 2, ys[2]), (rx - w / 2, ys[2]), "loss: one number", label_side="above")
    arrow(ax, (rx, ys[2] + h / 2), (rx, ys[1] - h / 2), "p.grad for every\nweight p")
    arrow(ax, (rx, ys[1] + h / 2), (rx, ys[0] - h / 2), "weights updated\n(AdamW, lr)")
    arrow(ax, (rx - w / 2, ys[0]), (lx + w / 2, ys[0]), "next batch", label_side="above")
    text(ax, (lx + rx) / 2, ys[1], "one step,\nrepeated", size=SMALL + 1, color=MUTED, style="italic")
    # now and then: evaluation and a sample
    cx = 8.15
    region(ax, 6.85, 0.85, 9.3, 4.72, "now and then", kind="neutral")
    text(ax, cx, 4.2, "step % eval_freq == 0", mono=True, size=SMALL)
    box(ax, cx, 3.8, 2.2, 0.46, "evaluate_model", kind="op", mono=True, size=SMALL + 0.5)
    text(ax, cx, 3.0, "model.eval(), no_grad;\nfirst eval_iter batches\nof train and val loaders\n"
         "-> train_loss, val_loss", size=SMALL, color=INK)
    text(ax, cx, 1.85, "after each epoch", size=SMALL)
    box(ax, cx, 1.4, 2.3, 0.46, "generate_and_print_sample", kind="op", mono=True, size=SMALL)
    arrow(ax, (rx + w / 2, ys[1]), (6.85, ys[1]), dashed=True)
    text(ax, 0.2, 0.35, "In section 5.5: batch_size = 2, context_length = 256, so input_batch is (2, 256) and "
         "logits is (2, 256, 50257); 9 steps per epoch.", size=SMALL, color=MUTED, ha="left")
    return fig


# The notebook's section 5.2 example: two texts, three positions each (printed by its cells).
CE_ROWS = [  # (input token, target token, target id, probability printed, log-probability printed)
    ("␣every", "␣effort", 3626, "1.81e-05", -10.9186),
    ("␣effort", "␣moves", 6100, "3.71e-05", -10.2032),
    ("␣moves", "␣you", 345, "1.31e-05", -11.2405),
    ("␣I", "␣really", 1107, "9.92e-06", -11.5210),
    ("␣really", "␣like", 588, "4.39e-05", -10.0333),
    ("␣like", "␣chocolate", 11311, "5.35e-06", -12.1389),
]
CE_LOSS = "11.0092"  # the notebook's printed cross-entropy (by hand and with F.cross_entropy)


@figure("ch05_cross_entropy", NB)
def cross_entropy() -> Figure:
    """From logits to one loss: softmax per row, the target's probability, -log, mean (section 5.2's numbers)."""
    assert abs(-sum(r[4] for r in CE_ROWS) / len(CE_ROWS) - float(CE_LOSS)) < 1e-4
    fig, ax = canvas(9.4, 4.75)
    top, pitch, strip_x, strip_w = 3.7, 0.5, 2.55, 2.9
    heads = [(1.3, "input -> target"), (strip_x + strip_w / 2, "torch.softmax(logits, dim=-1)"),
             (6.35, "target_probas"), (7.45, "-torch.log"), (8.6, ".mean()")]
    for x, label in heads:
        text(ax, x, 4.37, label, size=SMALL + 0.5, weight="bold", mono=label.startswith(("torch", ".", "-", "target_")))
    text(ax, strip_x + strip_w / 2, 4.0, "one row of 50,257 probabilities per position", size=SMALL, color=MUTED)
    for i, (inp, tgt, tid, prob, logp) in enumerate(CE_ROWS):
        y = top - i * pitch
        text(ax, 1.3, y, f"{inp} -> {tgt}", mono=True, size=SMALL)
        ax.add_patch(Rectangle((strip_x, y - 0.14), strip_w, 0.28, facecolor=PURPLE[0], edgecolor=PURPLE[1],
                               lw=0.9, zorder=2))
        tx = strip_x + strip_w * tid / 50257
        ax.add_patch(Rectangle((tx - 0.02, y - 0.14), 0.04, 0.28, facecolor=RED[1], zorder=3))
        text(ax, tx + 0.08, y, f"target id {tid}", mono=True, size=SMALL - 0.5, ha="left")
        arrow(ax, (strip_x + strip_w + 0.05, y), (5.85, y))
        box(ax, 6.35, y, 0.9, 0.34, prob, kind="loss", mono=True, size=SMALL, rounded=False)
        arrow(ax, (6.82, y), (7.05, y))
        box(ax, 7.45, y, 0.72, 0.34, f"{-logp:.2f}", kind="loss", mono=True, size=SMALL, rounded=False)
    mid = top - 2.5 * pitch
    for i in range(len(CE_ROWS)):
        arrow(ax, (7.83, top - i * pitch), (8.05, mid), lw=0.8, color=MUTED)
    box(ax, 8.7, mid, 1.15, 0.75, f"loss\n{CE_LOSS}", kind="loss", mono=True, size=SMALL + 1, weight="bold")
    for b in range(2):  # the two texts of the batch
        y0, y1 = top - 3 * b * pitch + 0.2, top - (3 * b + 2) * pitch - 0.2
        ax.plot([0.2, 0.12, 0.12, 0.2], [y0, y0, y1, y1], color=MUTED, lw=1.0)
        text(ax, 0.06, (y0 + y1) / 2, f"batch {b}", size=SMALL - 0.5, color=MUTED, rotation=90)
    axis_y = top - 5 * pitch - 0.3
    for frac, label in [(0, "0"), (1, "50256")]:
        text(ax, strip_x + frac * strip_w, axis_y, label, mono=True, size=SMALL - 0.5, color=MUTED)
    text(ax, strip_x + strip_w / 2, axis_y, "token id", size=SMALL - 0.5, color=MUTED)
    notes = ["logits, probas: " + shape("batch", "tokens", "vocab_size") + " = (2, 3, 50257);   "
             "target_probas: " + shape("batch", "tokens") + " = (2, 3)",
             "F.cross_entropy(logits.flatten(0, 1), targets.flatten()) takes (6, 50257) and (6,) and returns the same "
             + CE_LOSS]
    for i, note in enumerate(notes):
        text(ax, 0.2, 0.62 - i * 0.3, note, mono=True, size=SMALL - 0.5, color=INK, ha="left")
    return fig


@figure("ch05_perplexity", NB)
def perplexity() -> Figure:
    """Perplexity exp(loss) as the number of equally likely tokens, with landmarks of the chapter on a log axis."""
    fig, ax = canvas(9.2, 3.7)
    # left: a fair choice among 4 tokens
    text(ax, 1.35, 3.35, "a fair pick among k = 4 tokens", size=SMALL + 0.5, weight="bold")
    for i in range(4):
        _bar(ax, 0.6 + i * 0.5, 1.75, 0.36, 1.0, ORANGE)
        text(ax, 0.6 + i * 0.5, 2.9, "1/4", mono=True, size=SMALL)
    ax.plot([0.3, 2.4], [1.75, 1.75], color=MUTED, lw=0.8)
    for i, line in enumerate(["loss = -ln(1/4) = ln 4 = 1.386", "perplexity = exp(1.386) = 4"]):
        text(ax, 1.35, 1.35 - i * 0.33, line, mono=True, size=SMALL)
    text(ax, 1.35, 0.45, "k tokens: loss ln k, perplexity k", size=SMALL, color=MUTED, style="italic")
    # right: landmarks on a log axis (no training results: the notebook prints those)
    x0, x1, ay = 3.3, 8.65, 1.75

    def xpos(p: float) -> float:  # 1 .. 100,000 on a log scale across the axis
        return x0 + (x1 - x0) * math.log10(p) / 5

    ax.plot([x0, x1], [ay, ay], color=INK, lw=1.2)
    for e in range(6):
        ax.plot([xpos(10 ** e)] * 2, [ay - 0.06, ay + 0.06], color=INK, lw=1.0)
        text(ax, xpos(10 ** e), ay - 0.2, f"{10 ** e:,}", mono=True, size=SMALL - 0.5, color=MUTED)
    text(ax, (x0 + x1) / 2, 3.35, "perplexity = exp(loss): the effective number of choices", size=SMALL + 0.5,
         weight="bold")
    marks = [  # perplexity, label, above?, ha
        (1.0, "1: certain and right\n(loss 0)", True, "left"),
        (4.0, "4: the fair pick on the\nleft (loss 1.386)", False, "left"),
        (50257, "50,257: uniform over\nvocab_size (loss 10.82)", True, "right"),
        (60429, "60,429: untrained model,\nsection 5.2 (loss 11.01)", False, "right"),
    ]
    for p, label, above, ha in marks:
        x = xpos(p)
        ax.plot([x], [ay], "o", color=ORANGE[1], ms=6, zorder=4)
        ly = ay + (0.75 if above else -0.75)
        ax.plot([x, x], [ay + (0.08 if above else -0.08), ly + (-0.22 if above else 0.22)], color=MUTED, lw=0.8)
        dx = {"left": -0.05, "center": 0, "right": 0.05}[ha]
        text(ax, x + dx, ly, label, size=SMALL, ha=ha)
    arrow(ax, (xpos(20000), 0.45), (xpos(8), 0.45), color=ORANGE[1], lw=1.8)
    text(ax, (xpos(20000) + xpos(8)) / 2, 0.62, "training lowers the loss: the model moves left", size=SMALL,
         color=ORANGE[1], style="italic")
    return fig


@figure("ch05_train_val_split", NB)
def train_val_split() -> Figure:
    """Characters split 90/10, each part cut into 256-token windows, and one window's inputs and targets."""
    fig, ax = canvas(9.3, 4.65)
    ax.set_ylim(0.35, 5.0)  # the drawing's y range, 4.65 inches tall
    x0, x1 = 0.3, 9.0
    # characters
    text(ax, x0, 4.82, "text: 20,479 characters", size=SMALL + 1, weight="bold", ha="left")
    text(ax, x1, 4.82, "val_text = text[split:]: 2,048 characters -> 534 tokens", mono=True, size=SMALL,
         ha="right")
    split_x = x0 + (x1 - x0) * 18431 / 20479
    for left, right, hatch in [(x0, split_x, None), (split_x, x1, "///")]:
        ax.add_patch(Rectangle((left, 4.05), right - left, 0.42, facecolor=BLUE[0], edgecolor=BLUE[1], lw=1.1,
                               hatch=hatch))
    text(ax, (x0 + split_x) / 2, 4.26, "train_text = text[:split]: 18,431 characters -> 4,612 tokens", mono=True,
         size=SMALL)
    text(ax, split_x - 0.05, 3.87, "split = int(0.9 * len(text)) = 18,431, inside the word 'techniq|ue'",
         mono=True, size=SMALL, ha="right", color=MUTED)
    ax.plot([split_x] * 2, [3.75, 4.55], color=INK, lw=1.4)
    # token windows: each part is tokenized on its own
    text(ax, x0, 3.32, "windows: max_length = 256 tokens, stride = 256", size=SMALL + 1, weight="bold", ha="left")
    per_token = (x1 - x0) / (4612 + 534)
    parts = [(x0, 4612, 18, None), (x0 + 4612 * per_token, 534, 2, "///")]
    for start, _, n_windows, hatch in parts:
        for k in range(n_windows):
            ax.add_patch(Rectangle((start + k * 256 * per_token, 2.6), 256 * per_token, 0.42, facecolor=BLUE[0],
                                   edgecolor=BLUE[1], lw=0.9, hatch=hatch))
    ax.plot([parts[1][0]] * 2, [2.5, 3.12], color=INK, lw=1.4)
    notes = ["train_loader: 18 windows (3 tokens left over) -> 9 batches of batch_size = 2, shuffled, "
             "drop_last=True", "val_loader:   2 windows (21 tokens left over) -> 1 batch, in order"]
    for i, note in enumerate(notes):
        text(ax, x0, 2.3 - i * 0.27, note, mono=True, size=SMALL, ha="left")
    # one window: inputs and targets
    text(ax, x0, 1.45, "one window is a chunk\nof 257 tokens", size=SMALL + 1, weight="bold", ha="left",
         va="top")
    text(ax, x0, 0.85, "each position's target\nis the next token", size=SMALL, ha="left", va="top", color=MUTED)
    toks = ["I", "␣H", "AD", "␣always", "...", "Well", "!--", "even"]  # the first training window's tokens
    cw, cx0 = 0.72, 3.2
    cells(ax, cx0, 1.2, toks, cell_w=cw, cell_h=0.38, kind="token", size=SMALL)
    brace(ax, cx0, cx0 + 7 * cw, 1.28, "", below=False)
    text(ax, cx0 + 3.5 * cw, 1.36, "inputs = chunk[:-1]  (256,)", mono=True, size=SMALL, va="bottom")
    brace(ax, cx0 + cw, cx0 + 8 * cw, 0.74, "targets = chunk[1:]  (256,)")
    return fig


@figure("ch05_top_k", NB)
def top_k() -> Figure:
    """Top-k with k = 3: keep the 3 largest logits, set the rest to -inf, softmax, then sample."""
    k = 3
    kth_best = sorted(LOGITS, reverse=True)[k - 1]
    masked = [v if v >= kth_best else -math.inf for v in LOGITS]
    probs = _softmax(masked)
    fig, ax = canvas(9.4, 4.6)
    cx0, cw = 3.0, 0.68
    xs = [cx0 + (i + 0.5) * cw for i in range(len(VOCAB))]
    for x, word in zip(xs, VOCAB):
        text(ax, x, 4.35, word, mono=True, size=SMALL)
    ys = [4.0, 2.95, 1.9]
    labels = [("next_token_logits", f"torch.topk(logits, {k}): kth_best = {kth_best:.2f}", True),
              ("logits.masked_fill(", "    logits < kth_best, float('-inf'))", True),
              ("torch.softmax(..., dim=-1)", "the -inf tokens get probability 0", False)]
    for y, (first, second, mono) in zip(ys, labels):
        text(ax, 0.2, y - 0.08, first, mono=True, size=SMALL, ha="left")
        text(ax, 0.2, y - 0.34, second, mono=mono, size=SMALL, ha="left", color=INK if mono else MUTED)
    kept = [v >= kth_best for v in LOGITS]
    cells(ax, cx0, ys[0], [f"{v:.2f}" for v in LOGITS], cell_w=cw, cell_h=0.4, kind="logits", size=SMALL)
    for x, keep in zip(xs, kept):
        if keep:
            ax.add_patch(Rectangle((x - cw / 2, ys[0] - 0.4), cw, 0.4, fill=False, edgecolor=INK, lw=2.0, zorder=4))
    cells(ax, cx0, ys[1], [f"{v:.2f}" if keep else "" for v, keep in zip(LOGITS, kept)], cell_w=cw, cell_h=0.4,
          kind="logits", size=SMALL)
    for x, keep in zip(xs, kept):
        if not keep:
            ax.add_patch(Rectangle((x - cw / 2, ys[1] - 0.4), cw, 0.4, facecolor=RED[0], edgecolor=RED[1], lw=0.9,
                                   zorder=3))
            text(ax, x, ys[1] - 0.2, "-inf", mono=True, size=SMALL, color=RED[1], weight="bold")
    matrix(ax, cx0, ys[2], [probs], cell=cw, fmt="{:.4f}", size=SMALL - 0.5)
    for y in ys[:2]:
        arrow(ax, (cx0 + len(VOCAB) * cw / 2, y - 0.44), (cx0 + len(VOCAB) * cw / 2, y - 0.61))
    picks = sorted((p, w) for p, w in zip(probs, VOCAB) if p > 0)[::-1]
    arrow(ax, (cx0 + len(VOCAB) * cw / 2, ys[2] - cw - 0.04), (cx0 + len(VOCAB) * cw / 2, 0.72))
    box(ax, cx0 + len(VOCAB) * cw / 2, 0.45, 5.2, 0.46, "torch.multinomial picks " + ", ".join(
        f"{w} {p:.0%}" for p, w in picks) + " of the time", kind="token", size=SMALL)
    text(ax, 0.2, 0.95, "generate: top-k first,\nthen logits / temperature,\nthen softmax and sampling",
         size=SMALL, ha="left", color=MUTED, style="italic")
    return fig


@figure("ch05_checkpoint_contents", NB)
def checkpoint_contents() -> Figure:
    """What save_checkpoint writes (train_model's state included) and what each entry restores on resume."""
    rows = [  # key, kind, what it holds, what resume=True does with it
        ('model', "layer", "model.state_dict(): every weight", "the same weights (load_state_dict)"),
        ('optimizer', "trainable", "AdamW state per weight: exp_avg,\nexp_avg_sq, step; the param_groups",
         "AdamW continues its running averages\ninstead of restarting them from zero"),
        ('step', "id", "optimizer steps done so far",
         "lr_at_step(step, ...) continues the schedule;\ndivmod(step, steps_per_epoch): epoch and batch"),
        ('tokens_seen,\nexamples_seen', "id", "counters for the x-axes", "the counts go on from there"),
        ('history', "id", "step, tokens_seen, examples_seen, lr\nand the losses at every evaluation",
         "the loss curves continue the same lists"),
        ('rng[r]["now"]', "op", "random state now: torch (and cuda),\nand the loader's sampler generator",
         "the next dropout masks are the ones an\nuninterrupted run would have drawn"),
        ('rng[r]["epoch"]', "op", "random state when this epoch began",
         "replays the epoch's shuffle and skips\nthe batches already done"),
        ('scaler', "op", "GradScaler state (used for float16)", "the same loss scale"),
    ]
    fig, ax = canvas(9.4, 6.0)
    heads = [(1.15, "key in the dict"), (3.55, "what it holds"), (7.3, "what train_model(..., resume=True) does")]
    for x, label in heads:
        text(ax, x, 5.42, label, size=SMALL + 1, weight="bold")
    text(ax, 0.2, 5.78, "save_checkpoint(path, model, optimizer, state): one dict, torch.save'd to path.tmp, "
         "then os.replace(tmp, path)", mono=True, size=SMALL, ha="left")
    pitch = 0.56
    for i, (key, kind, holds, resume) in enumerate(rows):
        y = 4.95 - i * pitch
        box(ax, 1.15, y, 1.8, 0.44, key, kind=kind, mono=True, size=SMALL)
        text(ax, 2.25, y, holds, size=SMALL, ha="left")
        arrow(ax, (5.0, y), (5.45, y), color=MUTED)
        text(ax, 5.55, y, resume, size=SMALL, ha="left")
    region(ax, 0.12, 4.95 - 7 * pitch - 0.32, 5.0, 4.95 + 0.32, kind="neutral")
    notes = ["r = process rank: one rng entry per process (one in the notebook, one per process under torchrun).",
             "save_checkpoint stores model and optimizer; train_model passes the other keys as its state."]
    for i, note in enumerate(notes):
        text(ax, 0.2, 0.42 - i * 0.24, note, size=SMALL, ha="left", color=MUTED)
    return fig


def _lr(step: int, peak_lr: float, total_steps: int, warmup_steps: int, min_lr: float) -> float:
    """The notebook's lr_at_step, without its argument checks."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@figure("ch05_lr_schedule", NB)
def lr_schedule() -> Figure:
    """lr_at_step: linear warm-up to peak_lr over warmup_steps, then half a cosine down to min_lr at total_steps."""
    peak_lr, min_lr, warmup_steps, total_steps = 5e-4, 5e-5, 9, 90  # TrainConfig's defaults, 90 steps
    fig, ax = canvas(9.0, 3.65)
    ax.set_ylim(0.25, 3.9)  # the drawing's y range, 3.65 inches tall
    x0, x1, y0, y1 = 1.2, 8.3, 0.75, 3.1

    def sx(step: float) -> float:  # step -> inches
        return x0 + (x1 - x0) * step / total_steps

    def sy(lr: float) -> float:  # learning rate -> inches
        return y0 + (y1 - y0) * lr / peak_lr

    ax.add_patch(Rectangle((x0, y0), sx(warmup_steps) - x0, y1 - y0 + 0.25, facecolor=ORANGE[0], alpha=0.6,
                           edgecolor="none", zorder=1))
    ax.plot([x0, x1 + 0.1], [y0, y0], color=INK, lw=1.1)
    ax.plot([x0, x0], [y0, y1 + 0.35], color=INK, lw=1.1)
    steps = list(range(total_steps))
    ax.plot([sx(s) for s in steps], [sy(_lr(s, peak_lr, total_steps, warmup_steps, min_lr)) for s in steps],
            color=ORANGE[1], lw=2.2, zorder=4)
    for lr, name in [(peak_lr, "peak_lr"), (min_lr, "min_lr")]:
        ax.plot([x0, x1], [sy(lr)] * 2, color=MUTED, lw=0.9, ls="--", zorder=2)
        text(ax, x0 - 0.08, sy(lr), f"{name}\n{lr:.0e}", mono=True, size=SMALL, ha="right")
    for s, name in [(0, "0"), (warmup_steps, "warmup_steps\n= 9"), (total_steps, "total_steps\n= 90")]:
        ax.plot([sx(s)] * 2, [y0 - 0.06, y0], color=INK, lw=1.0)
        text(ax, sx(s), y0 - 0.12, name, mono=True, size=SMALL, va="top")
    text(ax, (x0 + x1) / 2 + 0.6, y0 - 0.25, "step", size=SMALL, color=MUTED)
    text(ax, x0 - 0.9, y1 + 0.55, "learning rate", size=SMALL, color=MUTED, ha="left")
    text(ax, sx(warmup_steps) + 0.12, y1 + 0.32, "warm-up: peak_lr * (step + 1) / warmup_steps", mono=True,
         size=SMALL, ha="left")
    first = _lr(0, peak_lr, total_steps, warmup_steps, min_lr)
    ax.plot([sx(0), sx(12)], [sy(first), sy(1.35e-4)], color=MUTED, lw=0.8)
    text(ax, sx(12) + 0.05, sy(1.35e-4), f"step 0: peak_lr / warmup_steps = {first:.2e}", mono=True, size=SMALL,
         ha="left", color=MUTED)
    text(ax, sx(50), sy(3.9e-4), "cosine: min_lr + 0.5 * (peak_lr - min_lr)\n           * (1 + cos(pi * progress))",
         mono=True, size=SMALL, ha="left")
    text(ax, sx(50), sy(2.85e-4), "progress = (step - warmup_steps)\n           / (total_steps - warmup_steps), 0 -> 1",
         mono=True, size=SMALL, ha="left", color=MUTED)
    return fig


@figure("ch05_grad_clipping", NB)
def grad_clipping() -> Figure:
    """clip_grad_norm_: one norm over all gradients; above max_norm every gradient is scaled by max_norm / norm."""
    norm, max_norm = 2.24, 1.0  # the notebook's probe: norm before clipping 2.24, after 1.00
    fig, ax = canvas(9.2, 3.6)
    ox, oy, unit, angle = 1.3, 1.4, 0.95, math.radians(32)
    ax.add_patch(Circle((ox, oy), max_norm * unit, facecolor=GREY[0], edgecolor=GREY[1], lw=1.2, ls="--", zorder=1))
    tip = (ox + norm * unit * math.cos(angle), oy + norm * unit * math.sin(angle))
    clipped = (ox + max_norm * unit * math.cos(angle), oy + max_norm * unit * math.sin(angle))
    arrow(ax, (ox, oy), tip, color=RED[1], lw=2.0)
    arrow(ax, (ox, oy), clipped, color=ORANGE[1], lw=3.0)
    inside = math.radians(130)
    arrow(ax, (ox, oy), (ox + 0.6 * unit * math.cos(inside), oy + 0.6 * unit * math.sin(inside)), color=MUTED)
    text(ax, tip[0] - 0.1, tip[1] + 0.3, "g: all gradients as one\nvector, norm 2.24", size=SMALL, color=RED[1])
    text(ax, clipped[0] + 0.35, clipped[1] - 0.38, "g * (1.0 / 2.24): same\ndirection, norm 1.00", size=SMALL,
         ha="left", color=ORANGE[1])
    text(ax, ox, oy - 0.45, "a gradient inside\nthe circle: unchanged", size=SMALL, color=MUTED)
    text(ax, ox, oy - max_norm * unit - 0.12, "radius: max_norm = 1.0", mono=True, size=SMALL, va="top")
    lines = [(3.2, "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)", True, INK),
             (2.7, "1. total_norm: the length of all gradients together, every", False, INK),
             (2.45, "    p.grad joined into one vector (2.24 in the notebook's probe)", False, INK),
             (1.95, "2. if total_norm > max_norm, every p.grad is multiplied by", False, INK),
             (1.7, "    max_norm / total_norm (here 1.0 / 2.24 = 0.45)", False, INK),
             (1.2, "3. the step keeps its direction; only its size is capped", False, INK)]
    for y, line, mono, color in lines:
        text(ax, 4.35, y, line, mono=mono, size=SMALL, ha="left", color=color)
    return fig


MAP_LX, MAP_RX, MAP_BW = 1.95, 7.25, 3.4  # x of the file's column, x of GPTModel's column, box width


def _mapping_row(ax, y: float, hf: str, hf_shape: str, op: str, name: str, our_shape: str,
                 dashed: bool = False) -> None:
    """One row of the GPT-2 name mapping: the file's tensor, what the loader does, GPTModel's tensor."""
    lx, rx, bw, bh = MAP_LX, MAP_RX, MAP_BW, 0.46
    for x, label, tensor_shape, kind in [(lx, hf, hf_shape, "neutral"), (rx, name, our_shape, "layer")]:
        box(ax, x, y, bw, bh, "", kind=kind, dashed=dashed)
        text(ax, x, y + (0.09 if tensor_shape else 0), label, mono=True, size=SMALL)
        if tensor_shape:
            text(ax, x, y - 0.12, tensor_shape, mono=True, size=SMALL - 0.5, color=MUTED)
    arrow(ax, (lx + bw / 2, y), (rx - bw / 2, y), op, label_side="above", size=SMALL,
          label_color=MUTED if op == "same" else INK)



@figure("ch05_gpt2_weights", NB)
def gpt2_weights() -> Figure:
    """How the tensors of OpenAI's GPT-2 files map onto GPTModel's names: renames, transposes, the c_attn split."""
    lx, rx, bw, pitch = MAP_LX, MAP_RX, MAP_BW, 0.56
    fig, ax = canvas(9.4, 8.15)
    text(ax, lx, 7.88, "GPT-2 file (Conv1D: weight is (in, out))", size=SMALL + 1, weight="bold")
    text(ax, rx, 7.88, "GPTModel (nn.Linear: weight is (out, in))", size=SMALL + 1, weight="bold")
    y = 7.38
    for row in [("wte.weight", "(vocab_size, emb_dim)", "same", "tok_emb.weight", "(vocab_size, emb_dim)"),
                ("wpe.weight", "(context_length, emb_dim)", "same", "pos_emb.weight", "(context_length, emb_dim)")]:
        _mapping_row(ax, y, *row)
        y -= pitch
    block_top = y + pitch - 0.23 - 0.17
    y -= 0.3
    _mapping_row(ax, y, "h.i.ln_1.weight / .bias", "(emb_dim,)", "same", "trf_blocks.i.norm1.scale / .shift",
                 "(emb_dim,)")
    # c_attn: one matrix for queries, keys and values, split in three and each transposed
    y -= pitch + 0.35
    box(ax, lx, y, bw, 0.75, "", kind="neutral")
    text(ax, lx, y + 0.17, "h.i.attn.c_attn.weight", mono=True, size=SMALL)
    text(ax, lx, y - 0.05, "(emb_dim, 3*emb_dim)", mono=True, size=SMALL - 0.5, color=MUTED)
    third = (bw - 0.4) / 3
    for j, (fill, edge) in enumerate((ORANGE, PURPLE, TEAL)):  # the query, key and value columns
        ax.add_patch(Rectangle((lx - bw / 2 + 0.2 + j * third, y - 0.3), third, 0.13, facecolor=fill,
                               edgecolor=edge, lw=0.9, zorder=3))
    for j, (name, kind) in enumerate([("W_query", "query"), ("W_key", "key"), ("W_value", "value")]):
        ty = y + 0.34 - j * 0.34
        box(ax, rx, ty, bw, 0.3, f"trf_blocks.i.att.{name}.weight  (emb_dim, emb_dim)", kind=kind, mono=True,
            size=SMALL - 0.5)
        arrow(ax, (lx + bw / 2, y), (rx - bw / 2, ty), color=MUTED, lw=1.0)
    text(ax, (lx + rx) / 2, y + 0.55, "split in 3, each .T", mono=True, size=SMALL)
    y -= 0.35 + pitch
    for row in [("h.i.attn.c_attn.bias", "(3*emb_dim,)", "split in 3", "trf_blocks.i.att.W_query/W_key/W_value.bias",
                 "3 x (emb_dim,)"),
                ("h.i.attn.c_proj.weight", "(emb_dim, emb_dim)", ".T", "trf_blocks.i.att.out_proj.weight",
                 "(emb_dim, emb_dim)"),
                ("h.i.ln_2.weight / .bias", "(emb_dim,)", "same", "trf_blocks.i.norm2.scale / .shift", "(emb_dim,)"),
                ("h.i.mlp.c_fc.weight", "(emb_dim, 4*emb_dim)", ".T", "trf_blocks.i.ff.layers.0.weight",
                 "(4*emb_dim, emb_dim)"),
                ("h.i.mlp.c_proj.weight", "(4*emb_dim, emb_dim)", ".T", "trf_blocks.i.ff.layers.2.weight",
                 "(emb_dim, 4*emb_dim)")]:
        _mapping_row(ax, y, *row)
        y -= pitch
    region(ax, 0.1, y + pitch - 0.23 - 0.12, 9.3, block_top, "every block i = 0 ... n_layers - 1",
           kind="layer", label_pos="top-right")
    y -= 0.2
    _mapping_row(ax, y, "ln_f.weight / .bias", "(emb_dim,)", "same", "final_norm.scale / .shift", "(emb_dim,)")
    y -= pitch
    _mapping_row(ax, y, "(no lm_head in OpenAI's files)", "", "tied", "out_head.weight = tok_emb.weight", "",
                 dashed=True)
    text(ax, 0.15, y - 0.5, "The other .bias tensors map like their .weight, without a transpose.   "
         "GPT-2 124M: vocab_size 50257, context_length 1024, emb_dim 768, n_layers 12.", size=SMALL - 0.5, ha="left",
         color=MUTED)
    return fig
