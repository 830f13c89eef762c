"""Tests for ch05_pretraining.pretraining: losses, decoding, checkpoints, LR schedule, training loop, fast path.

The training tests use a character-level tokenizer (a vocabulary of a few dozen symbols) and a two-layer
model, so every run takes a fraction of a second. The text is the short story from the data mirror
(`LLMS_DATA_MIRROR`, as CI sets it) or, without a mirror, a synthetic text: the tests never use the network.
"""
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import ch05_pretraining.pretraining as pretraining
import ch05_pretraining.train_loop as train_loop
from ch02_text_data import THE_VERDICT_SHA256, THE_VERDICT_URL, create_dataloader, download_file
from ch03_attention import MultiHeadAttention
from ch04_gpt_model import (
    GELU,
    GPTConfig,
    GPTModel,
    LayerNorm,
    generate_text_simple,
    text_to_token_ids,
    tie_weights,
    token_ids_to_text,
)
from ch05_pretraining import (
    TrainConfig,
    autocast_dtype,
    in_order,
    param_groups,
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    generate,
    generate_and_print_sample,
    load_checkpoint,
    lr_at_step,
    save_checkpoint,
    train_model,
    use_fused_kernels,
)
from ch05_pretraining.cli import exit_process

TRAIN_CHARS, VAL_CHARS = 800, 500  # 800 characters -> 24 windows of 32 -> 6 batches of 4 per epoch
BATCH, MAX_LEN = 4, 32
BF16_LOSS_RTOL = 2e-2  # bfloat16 keeps ~3 significant digits; measured: ~3e-5 relative on the loss
BF16_LOGITS_ATOL = 5e-2  # measured: max |logits diff| ~8e-3 for logits of size ~2 (tiny random model)


# --- data and models -------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; more threads only contend with whatever else the CPU runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CharTokenizer:
    """One token per character: a tiny vocabulary keeps the training tests fast."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.ids = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        return [self.ids[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def _synthetic_text(n_chars: int = 4000) -> str:
    rng = random.Random(0)
    words = "the a painter wife picture studio gallery said his her money fame quiet brush light".split()
    out = []
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(rng.choice(words) + rng.choice(["", "", "", ",", "."]))
    return " ".join(out)


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> str:
    """The Verdict from the data mirror; a synthetic text when no mirror is set (never the network)."""
    if os.environ.get("LLMS_DATA_MIRROR", "").strip():
        path = download_file(THE_VERDICT_URL, tmp_path_factory.mktemp("verdict"), sha256=THE_VERDICT_SHA256,
                             retries=1, progress=False)
        return path.read_text(encoding="utf-8")
    return _synthetic_text()


@pytest.fixture(scope="module")
def data(text):
    train_text, val_text = text[:TRAIN_CHARS], text[TRAIN_CHARS : TRAIN_CHARS + VAL_CHARS]
    tok = CharTokenizer(train_text + val_text)
    return SimpleNamespace(train_text=train_text, val_text=val_text, tok=tok, vocab_size=len(tok.chars))


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    tiktoken = pytest.importorskip("tiktoken")
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no TIKTOKEN_CACHE_DIR and no network
        if os.environ.get("LLMS_DATA_MIRROR", "").strip():
            raise
        pytest.skip(f"tiktoken cannot load gpt2: {err}")


def tiny_cfg(vocab_size: int = 61, drop_rate: float = 0.0, **overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=vocab_size, context_length=MAX_LEN, emb_dim=64, n_heads=4, n_layers=2,
                               drop_rate=drop_rate), **overrides})


def make_model(cfg: GPTConfig, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg)


def train_loader_for(data, generator=None, shuffle=True) -> DataLoader:
    return create_dataloader(data.train_text, batch_size=BATCH, max_length=MAX_LEN, stride=MAX_LEN, shuffle=shuffle,
                             tokenizer=data.tok, generator=generator)


def val_loader_for(data) -> DataLoader:
    return create_dataloader(data.val_text, batch_size=BATCH, max_length=MAX_LEN, stride=MAX_LEN, shuffle=False,
                             drop_last=False, tokenizer=data.tok)


def empty_loader() -> DataLoader:
    empty = torch.empty(0, MAX_LEN, dtype=torch.long)
    return DataLoader(TensorDataset(empty, empty), batch_size=BATCH)


def random_batch(vocab_size: int, batch: int = 3, tokens: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab_size, (batch, tokens), generator=gen),
            torch.randint(0, vocab_size, (batch, tokens), generator=gen))


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- calc_loss_batch, calc_loss_loader, evaluate_model ---------------------------------------------


def test_calc_loss_batch_is_mean_negative_log_likelihood():
    model = make_model(tiny_cfg()).eval()
    x, y = random_batch(61)
    loss = calc_loss_batch(x, y, model, "cpu")
    with torch.no_grad():
        logits = model(x)  # (batch, tokens, vocab)
    by_hand = -torch.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).mean()
    assert loss.shape == () and loss.dtype == torch.float32 and loss.requires_grad
    torch.testing.assert_close(loss.detach(), by_hand, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss.detach(), F.cross_entropy(logits.transpose(1, 2), y), rtol=1e-6, atol=1e-6)
    assert 0.5 * torch.log(torch.tensor(61.0)) < loss < 2 * torch.log(torch.tensor(61.0))  # ~ln(vocab) at init
    loss.backward()
    assert model.tok_emb.weight.grad is not None and model.tok_emb.weight.grad.abs().sum() > 0


def test_calc_loss_batch_accepts_torch_device_and_autocast_returns_float32():
    model = make_model(tiny_cfg()).eval()
    x, y = random_batch(61)
    plain = calc_loss_batch(x, y, model, torch.device("cpu"))
    amp = calc_loss_batch(x, y, model, "cpu", amp_dtype=torch.bfloat16)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, plain, rtol=BF16_LOSS_RTOL, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast really ran: the model's logits are bf16
        assert model(x).dtype == torch.bfloat16


def test_calc_loss_loader_averages_the_first_num_batches(data):
    model = make_model(tiny_cfg(data.vocab_size)).eval()
    loader = train_loader_for(data, shuffle=False)
    with torch.no_grad():
        per_batch = [calc_loss_batch(x, y, model, "cpu").item() for x, y in loader]
        assert len(per_batch) >= 4 and len(set(per_batch)) > 1
        first_three = sum(per_batch[:3]) / 3
        assert calc_loss_loader(loader, model, "cpu", num_batches=3) == pytest.approx(first_three, rel=1e-6)
        assert calc_loss_loader(loader, model, "cpu", num_batches=1) == pytest.approx(per_batch[0], rel=1e-6)
        everything = sum(per_batch) / len(per_batch)
        assert calc_loss_loader(loader, model, "cpu") == pytest.approx(everything, rel=1e-6)
        clamped = calc_loss_loader(loader, model, "cpu", num_batches=1000)  # more than the loader has
        assert clamped == pytest.approx(everything, rel=1e-6)
        amp = calc_loss_loader(loader, model, "cpu", num_batches=2, amp_dtype=torch.bfloat16)
        assert amp == pytest.approx(sum(per_batch[:2]) / 2, rel=BF16_LOSS_RTOL)


def test_calc_loss_loader_of_an_empty_loader_is_nan():
    model = make_model(tiny_cfg())
    loss = calc_loss_loader(empty_loader(), model, "cpu")
    assert isinstance(loss, float) and loss != loss  # nan


@pytest.mark.parametrize("num_batches", [0, -1])
def test_calc_loss_loader_rejects_num_batches_below_one(data, num_batches):
    # Today: num_batches=0 raises ZeroDivisionError and num_batches=-1 silently returns -0.0.
    model = make_model(tiny_cfg(data.vocab_size)).eval()
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader(train_loader_for(data, shuffle=False), model, "cpu", num_batches=num_batches)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_model_keeps_mode_uses_no_dropout_and_no_grad(data, training):
    model = make_model(tiny_cfg(data.vocab_size, drop_rate=0.5))
    model.train(training)
    train, val = train_loader_for(data, shuffle=False), val_loader_for(data)
    grad_modes = []
    model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    train_loss, val_loss = evaluate_model(model, train, val, "cpu", eval_iter=2)
    assert grad_modes and not any(grad_modes)
    assert all(m.training == training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    model.eval()  # dropout off: the numbers must equal the eval-mode losses (with p=0.5 dropout they would not)
    with torch.no_grad():
        assert train_loss == pytest.approx(calc_loss_loader(train, model, "cpu", num_batches=2), rel=1e-6)
        assert val_loss == pytest.approx(calc_loss_loader(val, model, "cpu", num_batches=2), rel=1e-6)
    assert train_loss != val_loss


def test_evaluate_model_and_calc_loss_loader_pass_amp_dtype_on(data):
    # Their bfloat16 losses are within rounding of the float32 ones, so only the logits' dtype shows the switch
    # (train_model's autocast test evaluates no step, so it does not reach evaluate_model).
    model = make_model(tiny_cfg(data.vocab_size)).eval()
    dtypes = set()
    model.out_head.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    train, val = train_loader_for(data, shuffle=False), val_loader_for(data)
    evaluate_model(model, train, val, "cpu", eval_iter=1, amp_dtype=torch.bfloat16)
    with torch.no_grad():
        calc_loss_loader(val, model, "cpu", num_batches=1, amp_dtype=torch.bfloat16)
    assert dtypes == {torch.bfloat16}


# --- generate ---------------------------------------------------------------------------------------


class TableModel(nn.Module):
    """Stub LM: after token t the likeliest next token is table[t]; records every input it is given."""

    def __init__(self, table: list[int], context_length: int = 8):
        super().__init__()
        self.cfg = SimpleNamespace(context_length=context_length)
        self.table = torch.tensor(table)
        self.seen: list[torch.Tensor] = []

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.seen.append(idx.clone())
        logits = torch.zeros(*idx.shape, len(self.table))  # (batch, tokens, vocab)
        return logits.scatter(-1, self.table[idx].unsqueeze(-1), 10.0)


class FixedLogits(nn.Module):
    """Stub LM whose next-token logits are one fixed vector, whatever the input."""

    def __init__(self, logits: torch.Tensor, context_length: int = 8):
        super().__init__()
        self.cfg = SimpleNamespace(context_length=context_length)
        self.logits = logits

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*idx.shape, -1)  # (batch, tokens, vocab)


def test_generate_greedy_equals_ch04_generate_text_simple():
    cfg = tiny_cfg(vocab_size=97, context_length=16)
    model = make_model(cfg, seed=3).eval()
    prompt = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(1))
    expected = generate_text_simple(model, prompt, max_new_tokens=20, context_length=16)  # crops past 16 tokens
    out = generate(model, prompt, max_new_tokens=20)
    assert out.shape == (2, 25) and torch.equal(out, expected)
    assert len(set(out[0, 5:].tolist())) > 1  # not a degenerate repetition that anything would match
    for temperature in (0.5, 1.0, 3.0):  # top_k=1 leaves a single candidate: sampling is greedy
        sampled = generate(model, prompt, 20, temperature=temperature, top_k=1,
                           generator=torch.Generator().manual_seed(0))
        assert torch.equal(sampled, expected)
    assert torch.equal(generate(model, prompt, 20, top_k=5), expected)  # temperature 0 ignores top_k


def test_generate_sampling_is_reproducible_with_a_generator_and_ignores_the_global_seed():
    model = FixedLogits(torch.zeros(50))  # uniform: every draw is a coin toss over 50 tokens
    prompt = torch.zeros(2, 1, dtype=torch.long)
    torch.manual_seed(0)
    a = generate(model, prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(99)
    b = generate(model, prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(5))
    c = generate(model, prompt, 40, temperature=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[:, 1:].flatten().tolist())) > 10  # really sampled


def test_generate_top_k_samples_only_from_the_k_likeliest_tokens():
    logits = torch.randn(30, generator=torch.Generator().manual_seed(0))
    top5 = set(torch.topk(logits, 5).indices.tolist())
    model = FixedLogits(logits)
    out = generate(model, torch.zeros(200, 1, dtype=torch.long), 5, temperature=2.0, top_k=5,
                   generator=torch.Generator().manual_seed(0))
    assert set(out[:, 1:].flatten().tolist()) == top5  # all five drawn, nothing else
    out = generate(model, torch.zeros(4, 1, dtype=torch.long), 5, temperature=1.0, top_k=1000,  # k > vocab: fine
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 6)


def test_generate_samples_from_softmax_of_logits_over_temperature():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    temperature, top_k, n = 0.7, 4, 20_000
    out = generate(FixedLogits(logits), torch.zeros(n, 1, dtype=torch.long), 1, temperature=temperature,
                   top_k=top_k, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[:, 1], minlength=6).float() / n
    expected = torch.zeros(6)
    keep = torch.topk(logits, top_k).indices
    expected[keep] = torch.softmax(logits[keep] / temperature, dim=0)
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)  # ~4 standard errors


def test_generate_stops_at_eos():
    table = [1, 9, 0, 4, 6, 0, 9, 0, 0, 2]  # 0 -> 1 -> 9 (eos); 3 -> 4 -> 6 -> 9; after eos the table says 2
    model = TableModel(table)
    out = generate(model, torch.tensor([[5, 0]]), max_new_tokens=10, eos_id=9)
    assert out.tolist() == [[5, 0, 1, 9]]  # prompt + 2: stopped right after the eos
    assert len(model.seen) == 2
    out = generate(model, torch.tensor([[5, 0]]), max_new_tokens=6)  # no eos_id: all tokens
    assert out.tolist() == [[5, 0, 1, 9, 2, 0, 1, 9]]


def test_generate_pads_finished_rows_with_eos_while_others_continue():
    table = [1, 9, 0, 4, 6, 0, 9, 0, 0, 2]
    out = generate(TableModel(table), torch.tensor([[5, 0], [5, 3]]), max_new_tokens=10, eos_id=9)
    assert out.tolist() == [[5, 0, 1, 9, 9], [5, 3, 4, 6, 9]]  # row 0 done at step 2, padded; stop when all done


def test_generate_crops_the_prompt_to_the_context_length():
    model = TableModel(list(range(1, 20)) + [0], context_length=4)
    prompt = torch.arange(10).unsqueeze(0)  # (1, 10): longer than the context
    out = generate(model, prompt, max_new_tokens=3)
    assert torch.equal(out[:, :10], prompt) and out[0, 10:].tolist() == [10, 11, 12]
    assert [s.tolist() for s in model.seen] == [[[6, 7, 8, 9]], [[7, 8, 9, 10]], [[8, 9, 10, 11]]]
    model.seen.clear()
    generate(model, prompt, max_new_tokens=2, context_length=2)  # an explicit context_length wins
    assert [s.shape[1] for s in model.seen] == [2, 2]


def test_generate_max_new_tokens_zero_returns_the_input():
    model = TableModel([1, 0])
    prompt = torch.tensor([[0, 1, 0]])
    assert torch.equal(generate(model, prompt, 0), prompt) and model.seen == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(temperature=1.0, top_k=0), "top_k must be >= 1"),
        (dict(top_k=-3), "top_k must be >= 1"),
        (dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(TableModel([1, 0]), torch.tensor([[0]]), **args)


@pytest.mark.parametrize("shape", [(4,), (1, 0), (1, 2, 3)])
def test_generate_rejects_bad_idx_shapes(shape):
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\)"):
        generate(TableModel([1, 0]), torch.zeros(shape, dtype=torch.long), 3)


@pytest.mark.parametrize("training", [True, False])
def test_generate_and_print_sample_prints_the_greedy_continuation(gpt2_tokenizer, capsys, training):
    cfg = GPTConfig(vocab_size=50257, context_length=16, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.5)
    model = make_model(cfg)
    model.train(training)
    start = "Every effort\nmoves you"
    text = generate_and_print_sample(model, gpt2_tokenizer, "cpu", start, max_new_tokens=20)
    assert capsys.readouterr().out == text + "\n"
    assert all(m.training == training for m in model.modules())
    model.eval()  # the sample is greedy with dropout off (p=0.5 would change it): compare to chapter 4
    ids = generate_text_simple(model, text_to_token_ids(start, gpt2_tokenizer), 20, context_length=16)
    assert text == token_ids_to_text(ids, gpt2_tokenizer).replace("\n", " ")
    assert text.startswith("Every effort moves you") and "\n" not in text


@pytest.mark.parametrize("context_length, cached", [(64, True), (16, False)])
def test_generate_and_print_sample_uses_the_kv_cache_when_the_sample_fits(gpt2_tokenizer, capsys, monkeypatch,
                                                                         context_length, cached):
    cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=32, n_heads=2, n_layers=2)
    model = make_model(cfg)
    calls = []
    real = pretraining.generate_text_cached
    monkeypatch.setattr(pretraining, "generate_text_cached", lambda *a, **k: calls.append(1) or real(*a, **k))
    start = "Every effort moves you"  # 4 tokens: with 30 new ones they fit a context of 64, not one of 16
    text = generate_and_print_sample(model, gpt2_tokenizer, "cpu", start, max_new_tokens=30)
    assert len(calls) == int(cached)
    ids = generate(model.eval(), text_to_token_ids(start, gpt2_tokenizer), 30)  # section 5.7's uncached loop
    assert text == token_ids_to_text(ids, gpt2_tokenizer)


# --- save_checkpoint / load_checkpoint --------------------------------------------------------------


def trained_model_and_optimizer(seed: int = 0, steps: int = 2):
    model = make_model(tiny_cfg(), seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for i in range(steps):
        optimizer.zero_grad()
        calc_loss_batch(*random_batch(61, seed=i), model, "cpu").backward()
        optimizer.step()
    return model, optimizer


def optimizer_states_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa["param_groups"] != sb["param_groups"] or sa["state"].keys() != sb["state"].keys():
        return False
    return all(states_equal(sa["state"][k], sb["state"][k]) for k in sa["state"])


def test_checkpoint_round_trip_restores_model_optimizer_and_state(tmp_path):
    model, optimizer = trained_model_and_optimizer(seed=0)
    extra = {"step": 7, "tokens_seen": 896, "history": {"step": [5], "train_loss": [3.25]},
             "rng": torch.get_rng_state()}
    path = save_checkpoint(tmp_path / "nested" / "ckpt.pt", model, optimizer, extra)
    assert path == tmp_path / "nested" / "ckpt.pt" and path.is_file()

    fresh, fresh_opt = trained_model_and_optimizer(seed=1, steps=1)  # different weights and optimizer state
    assert not states_equal(fresh.state_dict(), model.state_dict())
    state = load_checkpoint(str(path), fresh, fresh_opt)
    assert states_equal(fresh.state_dict(), model.state_dict())
    assert optimizer_states_equal(fresh_opt, optimizer)
    assert state.keys() == extra.keys() and state["step"] == 7 and state["history"] == extra["history"]
    assert torch.equal(state["rng"], extra["rng"])

    only_model = make_model(tiny_cfg(), seed=2)
    load_checkpoint(path, only_model)  # without an optimizer: weights only
    assert states_equal(only_model.state_dict(), model.state_dict())

    for opt in (optimizer, fresh_opt):  # the restored optimizer continues exactly like the original
        opt.zero_grad()
    calc_loss_batch(*random_batch(61, seed=9), model, "cpu").backward()
    calc_loss_batch(*random_batch(61, seed=9), fresh, "cpu").backward()
    optimizer.step(), fresh_opt.step()
    assert states_equal(fresh.state_dict(), model.state_dict())


def test_checkpoint_is_atomic_and_weights_only_loadable(tmp_path):
    model, optimizer = trained_model_and_optimizer()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, optimizer, {"step": 1})
    save_checkpoint(path, model, optimizer, {"step": 2})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no .tmp left behind
    raw = torch.load(path, weights_only=True)  # plain tensors and containers: no code is unpickled
    assert set(raw) == {"model", "optimizer", "step"} and raw["step"] == 2
    assert states_equal(raw["model"], model.state_dict())


def test_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    model, optimizer = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, {"step": 1})

    def disk_full(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pretraining.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, optimizer, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path, make_model(tiny_cfg()))["step"] == 1  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # and no half-written ckpt.pt.tmp remains


def test_load_checkpoint_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt", make_model(tiny_cfg()))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path, make_model(tiny_cfg()))  # a directory is not a checkpoint


def test_load_checkpoint_into_a_different_shape_names_the_tensor(tmp_path):
    model, optimizer = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, {})
    with pytest.raises(RuntimeError, match=r"size mismatch for tok_emb\.weight"):
        load_checkpoint(path, make_model(tiny_cfg(vocab_size=50)))
    with pytest.raises(RuntimeError, match=r"trf_blocks\.2\."):  # one layer more than the checkpoint has
        load_checkpoint(path, make_model(tiny_cfg(n_layers=3)))


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the real model is .module."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_checkpoint_unwraps_a_ddp_style_wrapper(tmp_path):
    model, optimizer = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt.pt", Wrapper(model), optimizer, {})
    raw = torch.load(path, weights_only=True)
    assert set(raw["model"]) == set(model.state_dict())  # no "module." prefix
    plain = make_model(tiny_cfg(), seed=5)
    load_checkpoint(path, plain)
    wrapped = Wrapper(make_model(tiny_cfg(), seed=6))
    load_checkpoint(path, wrapped)
    assert states_equal(plain.state_dict(), model.state_dict())
    assert states_equal(wrapped.module.state_dict(), model.state_dict())


# --- lr_at_step ---------------------------------------------------------------------------------------


def test_lr_schedule_warm_up_then_cosine_to_min_lr():
    peak, low, total, warmup = 1e-3, 1e-4, 100, 10
    lrs = [lr_at_step(s, peak_lr=peak, total_steps=total, warmup_steps=warmup, min_lr=low) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(peak / warmup) and lrs[warmup - 1] == pytest.approx(peak)
    steps = [b - a for a, b in zip(lrs[:warmup], lrs[1:warmup])]
    assert steps == pytest.approx([peak / warmup] * (warmup - 1))  # linear
    assert lrs[warmup] == pytest.approx(peak)  # decay starts from the peak
    assert all(b <= a for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))  # non-increasing after warm-up
    assert lrs[warmup + (total - warmup) // 2] == pytest.approx((peak + low) / 2)  # cosine: half-way at mid-decay
    assert lrs[total] == pytest.approx(low) and min(lrs) >= low - 1e-15
    late = lr_at_step(total + 50, peak_lr=peak, total_steps=total, warmup_steps=warmup, min_lr=low)
    assert late == pytest.approx(low)  # past the end: stays at min_lr
    assert lr_at_step(0, peak_lr=peak, total_steps=total) == pytest.approx(peak)  # no warm-up, min_lr 0
    assert lr_at_step(total, peak_lr=peak, total_steps=total) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    "step, kwargs",
    [
        (0, dict(total_steps=0)),
        (0, dict(total_steps=10, warmup_steps=11)),
        (0, dict(total_steps=10, warmup_steps=-1)),
        (0, dict(total_steps=10, min_lr=2e-3)),  # min_lr > peak_lr
        (0, dict(total_steps=10, min_lr=-1e-5)),
        (-1, dict(total_steps=10, warmup_steps=5)),  # today: returns 0.0 (and -2e-4 for step -2)
    ],
)
def test_lr_at_step_rejects_bad_arguments(step, kwargs):
    with pytest.raises(ValueError):
        lr_at_step(step, peak_lr=1e-3, **kwargs)


# --- train_model --------------------------------------------------------------------------------------

TRAIN = dict(num_epochs=2, peak_lr=1e-3, min_lr=1e-4, warmup_steps=2, eval_freq=3, eval_iter=2)


def run_training(data, ckpt=None, *, generator: bool = True, drop_rate: float = 0.1, resume: bool = False,
                 stop_at_step=None, model_seed: int = 123, **train_overrides):
    """Build everything from seeds (as a fresh process would), then train; returns (model, history, optimizer)."""
    torch.manual_seed(model_seed)
    gen = torch.Generator().manual_seed(7) if generator else None
    loader = train_loader_for(data, generator=gen)
    model = GPTModel(tiny_cfg(data.vocab_size, drop_rate=drop_rate))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    cfg = TrainConfig(**{**TRAIN, **train_overrides})
    history = train_model(model, loader, val_loader_for(data), optimizer, "cpu", cfg, checkpoint_path=ckpt,
                          resume=resume, stop_at_step=stop_at_step, progress=False)
    return model, history, optimizer


def steps_per_epoch(data) -> int:
    return len(train_loader_for(data))


@pytest.mark.parametrize("generator", [True, False], ids=["loader-generator", "global-rng"])
@pytest.mark.parametrize("where", ["inside-epoch", "epoch-boundary", "twice"])
def test_resume_continues_bit_identically(data, tmp_path, generator, where):
    # Dropout is on, the loader shuffles, and evaluation (every 3 steps) also iterates the shuffling loader.
    # epoch-boundary with a loader generator: RandomSampler draws once more from the loader's generator when
    # the epoch's iterator is exhausted; a checkpoint written after the epoch's last step precedes that draw,
    # so the resumed run shuffles the next epoch differently unless train_model finishes the iterator first.
    spe = steps_per_epoch(data)
    assert spe == 6
    stops = {"inside-epoch": [spe // 2 + 1], "epoch-boundary": [spe], "twice": [2, spe + 1]}[where]
    full_model, full_history, full_opt = run_training(data, generator=generator)
    ckpt = tmp_path / "run.pt"
    for stop in stops:  # interrupted runs: each resumes from the last checkpoint and stops again
        _, history, _ = run_training(data, ckpt, generator=generator, stop_at_step=stop, resume=stop != stops[0])
        assert load_checkpoint(ckpt, make_model(tiny_cfg(data.vocab_size)))["step"] == stop
    model, history, opt = run_training(data, ckpt, generator=generator, resume=True)
    assert history == full_history and len(history["step"]) == 2 * spe // TRAIN["eval_freq"]
    assert states_equal(model.state_dict(), full_model.state_dict())
    assert optimizer_states_equal(opt, full_opt)
    again, _, _ = run_training(data, generator=generator)  # sanity: the seeds make whole runs repeatable
    assert states_equal(again.state_dict(), full_model.state_dict())


def test_runs_from_different_seeds_differ(data):
    # Control for the test above: equal weights there are not an accident of the data or of the comparison.
    a, _, _ = run_training(data, model_seed=123, stop_at_step=3)
    b, _, _ = run_training(data, model_seed=124, stop_at_step=3)
    assert not states_equal(a.state_dict(), b.state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda(data, tmp_path):
    # load_checkpoint(..., map_location=device) moves the saved RNG states to the GPU, and
    # torch.set_rng_state / Generator.set_state accept only CPU ByteTensors.
    def run(**kwargs):
        torch.manual_seed(123)
        loader = train_loader_for(data, generator=torch.Generator().manual_seed(7))
        model = GPTModel(tiny_cfg(data.vocab_size, drop_rate=0.1)).to("cuda")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        history = train_model(model, loader, val_loader_for(data), optimizer, "cuda", TrainConfig(**TRAIN),
                              checkpoint_path=tmp_path / "cuda.pt", progress=False, **kwargs)
        return model, history

    full_model, full_history = run()
    run(stop_at_step=4)
    model, history = run(resume=True)
    # CUDA kernels (embedding backward) add in a varying order: close, not bit-identical.
    assert history["step"] == full_history["step"]
    assert history["train_loss"] == pytest.approx(full_history["train_loss"], rel=1e-3)
    for a, b in zip(model.parameters(), full_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=5e-3)


def test_train_model_history_checkpoints_and_stop_at_step(data, tmp_path, monkeypatch):
    spe = steps_per_epoch(data)
    saved_at = []
    real_save = pretraining.save_checkpoint

    def spy_save(path, model, optimizer, state):
        saved_at.append(state["step"])
        return real_save(path, model, optimizer, state)

    monkeypatch.setattr(train_loop, "save_checkpoint", spy_save)
    ckpt = tmp_path / "ckpts" / "run.pt"
    _, history, _ = run_training(data, ckpt, checkpoint_every=4)
    assert saved_at == [4, 8, 12]  # every 4 steps, and at the end: the final checkpoint is written once
    assert history["step"] == [3, 6, 9, 12]
    assert history["tokens_seen"] == [s * BATCH * MAX_LEN for s in history["step"]]
    assert all(loss == loss and loss > 0 for loss in history["train_loss"] + history["val_loss"])
    assert history["train_loss"][-1] < history["train_loss"][0]  # it learns
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["run.pt"]
    assert load_checkpoint(ckpt, make_model(tiny_cfg(data.vocab_size)))["step"] == 2 * spe

    saved_at.clear()
    _, history, _ = run_training(data, ckpt, stop_at_step=5)
    state = load_checkpoint(ckpt, make_model(tiny_cfg(data.vocab_size)))
    assert saved_at == [5] and state["step"] == 5 and state["tokens_seen"] == 5 * BATCH * MAX_LEN
    assert history["step"] == [3]

    saved_at.clear()
    run_training(data, None, checkpoint_every=2)  # no path: nothing is written
    assert saved_at == []


def test_train_model_sets_the_scheduled_lr_and_clips_gradients(data, monkeypatch):
    clip, clip_calls, step_log = 0.05, [], []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        total = real_clip(parameters, max_norm, *args, **kwargs)
        clip_calls.append((len(parameters), max_norm, total.item()))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy_clip)
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg(data.vocab_size))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}])
    real_step = optimizer.step

    def logged_step(*args, **kwargs):
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
        step_log.append(([g["lr"] for g in optimizer.param_groups], grad_norm))
        return real_step(*args, **kwargs)

    optimizer.step = logged_step
    cfg = TrainConfig(**{**TRAIN, "grad_clip": clip, "eval_freq": 1})
    history = train_model(model, train_loader_for(data), val_loader_for(data), optimizer, "cpu", cfg, progress=False)

    total = cfg.num_epochs * steps_per_epoch(data)
    schedule = dict(peak_lr=cfg.peak_lr, total_steps=total, warmup_steps=cfg.warmup_steps, min_lr=cfg.min_lr)
    expected = [lr_at_step(s, **schedule) for s in range(total)]
    assert len(step_log) == total
    assert [lrs for lrs, _ in step_log] == [[lr, lr] for lr in expected]  # every param group, every step
    assert history["lr"] == expected and history["step"] == list(range(1, total + 1))
    n_params = len(list(model.parameters()))
    assert [(n, m) for n, m, _ in clip_calls] == [(n_params, clip)] * total
    assert max(norm for *_, norm in clip_calls) > clip  # clipping had work to do
    assert all(norm <= clip * (1 + 1e-4) for _, norm in step_log)  # the optimizer saw clipped gradients


def test_train_model_without_grad_clip_does_not_clip(data, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    run_training(data, stop_at_step=2, grad_clip=None)
    assert calls == []


def test_train_model_prints_a_sample_after_each_epoch(data, capsys):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg(data.vocab_size))
    optimizer = torch.optim.AdamW(model.parameters())
    start = data.train_text[:10]
    train_model(model, train_loader_for(data), val_loader_for(data), optimizer, "cpu", TrainConfig(**TRAIN),
                tokenizer=data.tok, start_context=start, progress=False)
    lines = capsys.readouterr().out.splitlines()
    samples = [line for line in lines if line.startswith(start.replace("\n", " "))]
    assert len(samples) == TRAIN["num_epochs"]
    assert model.training  # still in training mode after sampling


def test_train_model_rejects_an_empty_loader_and_resume_without_a_path(data, tmp_path):
    model = make_model(tiny_cfg(data.vocab_size))
    args = (val_loader_for(data), torch.optim.AdamW(model.parameters()), "cpu", TrainConfig(**TRAIN))
    with pytest.raises(ValueError, match="has 0 batches"):
        train_model(model, empty_loader(), *args, progress=False)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        train_model(model, train_loader_for(data), *args, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_model(model, train_loader_for(data), *args, checkpoint_path=tmp_path / "none.pt", resume=True,
                    progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_epochs=0), "num_epochs"), (dict(grad_accum_steps=0), "grad_accum_steps"), (dict(eval_iter=1.5), "eval_iter"),
    (dict(checkpoint_every=0), "checkpoint_every"), (dict(grad_clip=0.0), "grad_clip"), (dict(amp_dtype=torch.int8), "amp_dtype"),
])
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


# --- fast path ------------------------------------------------------------------------------------------


def test_use_fused_kernels_flips_every_attention_norm_and_gelu():
    model = make_model(tiny_cfg(n_layers=3))
    attention = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    fusable = [m for m in model.modules() if isinstance(m, (LayerNorm, GELU))]
    assert len(attention) == 3 and not any(m.use_sdpa for m in attention)
    assert len(fusable) == 3 * 3 + 1 and not any(m.fused for m in fusable)  # 2 norms + 1 GELU per block, final norm
    assert use_fused_kernels(model) is model and all(m.use_sdpa for m in attention)
    assert all(m.fused for m in fusable)
    assert use_fused_kernels(Wrapper(model), enabled=False).module is model  # reaches inside wrappers
    assert not any(m.use_sdpa for m in attention) and not any(m.fused for m in fusable)


def test_fused_kernels_in_float32_match_the_plain_path():
    model = make_model(tiny_cfg()).eval()
    x, y = random_batch(61, batch=4, tokens=32)
    with torch.no_grad():
        plain_logits, plain_loss = model(x), calc_loss_batch(x, y, model, "cpu")
        use_fused_kernels(model)
        torch.testing.assert_close(model(x), plain_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(calc_loss_batch(x, y, model, "cpu"), plain_loss, rtol=1e-5, atol=1e-5)


def test_fast_path_matches_float32_within_bfloat16_rounding():
    model = make_model(tiny_cfg()).eval()
    x, y = random_batch(61, batch=4, tokens=32)
    with torch.no_grad():
        plain_logits, plain_loss = model(x), calc_loss_batch(x, y, model, "cpu")
        use_fused_kernels(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_logits = model(x)
        fast_loss = calc_loss_batch(x, y, model, "cpu", amp_dtype=torch.bfloat16)
    assert fast_logits.dtype == torch.bfloat16 and fast_loss.dtype == torch.float32
    assert not torch.equal(fast_logits.float(), plain_logits)  # really a different computation
    torch.testing.assert_close(fast_logits.float(), plain_logits, rtol=0, atol=BF16_LOGITS_ATOL)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=BF16_LOSS_RTOL, atol=0)


def test_training_on_the_fast_path_tracks_the_plain_path(data):
    def run(fast: bool):
        torch.manual_seed(0)
        model = use_fused_kernels(GPTModel(tiny_cfg(data.vocab_size)), enabled=fast)
        optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
        cfg = TrainConfig(**{**TRAIN, "eval_freq": 1, "amp_dtype": torch.bfloat16 if fast else None})
        loader = train_loader_for(data, shuffle=False)
        history = train_model(model, loader, val_loader_for(data), optimizer, "cpu", cfg, stop_at_step=5,
                              progress=False)
        return model, history

    plain_model, plain = run(False)
    fast_model, fast = run(True)
    assert plain["train_loss"][-1] < plain["train_loss"][0]
    assert fast["train_loss"] == pytest.approx(plain["train_loss"], rel=BF16_LOSS_RTOL)
    assert fast["val_loss"] == pytest.approx(plain["val_loss"], rel=BF16_LOSS_RTOL)
    init = make_model(tiny_cfg(data.vocab_size), seed=0).state_dict()
    fast_weights = fast_model.state_dict()
    for name, p in plain_model.state_dict().items():  # both paths moved every tensor alike (measured: <= 5%)
        moved = (p - init[name]).norm()
        assert moved > 0 and (fast_weights[name] - p).norm() < 0.2 * moved, name


def test_autocast_dtype_on_cpu_follows_the_cpu_features(monkeypatch):
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert autocast_dtype("cpu") == (torch.bfloat16 if native else None)
    assert autocast_dtype(torch.device("cpu")) == autocast_dtype("cpu")
    for amx, avx512_bf16 in [(False, False), (True, False), (False, True), (True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert autocast_dtype("cpu") == (torch.bfloat16 if amx or avx512_bf16 else None)


def test_autocast_dtype_on_other_devices(monkeypatch):
    assert autocast_dtype("meta") is None and autocast_dtype("mps") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("cuda") == torch.bfloat16 and autocast_dtype("cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(torch.device("cuda")) == torch.float16  # e.g. Colab's T4: train_model adds a grad scaler


# --- the fast path really runs ------------------------------------------------------------------------


def test_train_model_runs_the_fused_kernels_and_autocast_when_switched_on(data, monkeypatch):
    # The switches must take effect inside train_model: spy on the fused kernels and on the logits' dtype.
    calls = {"sdpa": 0, "layer_norm": 0, "gelu": 0}
    for name, key in [("scaled_dot_product_attention", "sdpa"), ("layer_norm", "layer_norm"), ("gelu", "gelu")]:
        real = getattr(F, name)
        monkeypatch.setattr(F, name, lambda *a, _real=real, _key=key, **k: calls.__setitem__(_key, calls[_key] + 1)
                            or _real(*a, **k))

    def run(fast: bool) -> set:
        torch.manual_seed(0)
        model = use_fused_kernels(GPTModel(tiny_cfg(data.vocab_size)), enabled=fast)
        dtypes = set()
        model.out_head.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
        cfg = TrainConfig(**{**TRAIN, "amp_dtype": torch.bfloat16 if fast else None})
        train_model(model, train_loader_for(data), val_loader_for(data), torch.optim.AdamW(model.parameters()), "cpu",
                    cfg, stop_at_step=2, progress=False)
        return dtypes

    assert run(False) == {torch.float32} and calls == {"sdpa": 0, "layer_norm": 0, "gelu": 0}
    assert run(True) == {torch.bfloat16}
    assert min(calls.values()) > 0, calls


# --- one loop for every chapter: evaluation, accumulation, parameter groups, custom losses, float16 ---------


@pytest.mark.parametrize("generator", [True, False], ids=["loader-generator", "global-rng"])
def test_how_often_we_evaluate_does_not_change_the_trained_weights(data, generator):
    # Before: evaluation iterated the shuffling training loader, which drew from the global RNG (or the loader's
    # generator) and so changed the dropout masks and batch order of every later step.
    often, often_history, _ = run_training(data, generator=generator, eval_freq=1, eval_iter=3)
    never, never_history, _ = run_training(data, generator=generator, eval_freq=10_000)
    assert len(often_history["step"]) == 2 * steps_per_epoch(data) and never_history["step"] == []
    assert states_equal(often.state_dict(), never.state_dict())


def test_evaluate_model_reads_fixed_batches_and_draws_no_random_numbers(data):
    model = make_model(tiny_cfg(data.vocab_size))
    shuffled = train_loader_for(data)  # shuffles with the global RNG
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = evaluate_model(model, shuffled, val_loader_for(data), "cpu", eval_iter=2)
    second = evaluate_model(model, shuffled, val_loader_for(data), "cpu", eval_iter=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert first == second  # the same (first) batches each time, not a new random sample
    with torch.no_grad():
        expected = calc_loss_loader(train_loader_for(data, shuffle=False), model.eval(), "cpu", num_batches=2)
    assert first[0] == pytest.approx(expected, rel=1e-6)
    assert in_order([1, 2]) == [1, 2]  # a plain list of batches is used as it is


@pytest.mark.parametrize("stop", [5, 7])
def test_resuming_at_or_past_stop_at_step_trains_no_extra_step(data, tmp_path, stop):
    ckpt = tmp_path / "run.pt"
    stopped, _, _ = run_training(data, ckpt, stop_at_step=5)
    again, _, _ = run_training(data, ckpt, resume=True, stop_at_step=stop)
    if stop == 5:  # already there: nothing to train, nothing to write
        assert states_equal(again.state_dict(), stopped.state_dict())
    reference, _, _ = run_training(data, stop_at_step=stop)
    assert states_equal(again.state_dict(), reference.state_dict())
    assert load_checkpoint(ckpt, make_model(tiny_cfg(data.vocab_size)))["step"] == stop


def test_gradient_accumulation_equals_one_big_batch(data):
    # Two batches of 2 accumulated = one batch of 4 (same windows, no dropout): the same update up to rounding.
    def run(batch_size: int, accum: int):
        torch.manual_seed(0)
        loader = create_dataloader(data.train_text, batch_size=batch_size, max_length=MAX_LEN, stride=MAX_LEN,
                                   shuffle=False, tokenizer=data.tok)
        model = GPTModel(tiny_cfg(data.vocab_size))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        cfg = TrainConfig(**{**TRAIN, "grad_accum_steps": accum, "eval_freq": 2})
        history = train_model(model, loader, val_loader_for(data), optimizer, "cpu", cfg, progress=False)
        return model, history

    big, big_history = run(4, 1)
    small, small_history = run(2, 2)
    assert small_history["step"] == big_history["step"] and small_history["tokens_seen"] == big_history["tokens_seen"]
    for (name, a), b in zip(big.state_dict().items(), small.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    single, _ = run(2, 1)  # control: without accumulation, batches of 2 train differently
    assert not states_equal(single.state_dict(), big.state_dict())


@pytest.mark.parametrize("accum", [1, 2, 4])
def test_one_accumulated_sgd_step_is_the_mean_gradient_step(data, accum):
    # AdamW and clipping hide a gradient's size (a loss not divided by accum would still pass the test above);
    # plain SGD without clipping makes the step lr * gradient, so the update must be that of the mean loss.
    lr = 0.5
    loader = create_dataloader(data.train_text, batch_size=BATCH // accum, max_length=MAX_LEN, stride=MAX_LEN,
                               shuffle=False, tokenizer=data.tok)
    model = make_model(tiny_cfg(data.vocab_size))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(num_epochs=1, peak_lr=lr, min_lr=lr, warmup_steps=0, grad_clip=None, grad_accum_steps=accum,
                      eval_freq=10_000)
    train_model(model, loader, val_loader_for(data), torch.optim.SGD(model.parameters(), lr=lr), "cpu", cfg,
                stop_at_step=1, progress=False)
    by_hand = make_model(tiny_cfg(data.vocab_size))
    x, y = next(iter(train_loader_for(data, shuffle=False)))  # the same BATCH windows in one batch
    calc_loss_batch(x, y, by_hand, "cpu").backward()
    for name, p in by_hand.named_parameters():
        torch.testing.assert_close(model.state_dict()[name], start[name] - lr * p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert max(float((model.state_dict()[n] - start[n]).abs().max()) for n in start) > 1e-2  # a real step


def test_param_groups_decay_only_weight_matrices():
    model = make_model(tiny_cfg())
    decay, no_decay = param_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "out_head.weight" in decayed and "trf_blocks.0.att.W_query.weight" in decayed
    assert "tok_emb.weight" not in decayed and "pos_emb.weight" not in decayed
    assert not any(n.endswith((".bias", ".scale", ".shift")) for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    tied = tie_weights(make_model(tiny_cfg()))
    decay, no_decay = param_groups(tied, 0.1)
    assert all(p is not tied.tok_emb.weight for p in decay["params"])  # the tied head is an embedding: no decay
    assert sum(p is tied.tok_emb.weight for p in no_decay["params"]) == 1
    frozen = make_model(tiny_cfg())
    frozen.tok_emb.weight.requires_grad_(False)
    assert all(p is not frozen.tok_emb.weight for g in param_groups(frozen, 0.1) for p in g["params"])


def test_train_model_takes_a_loss_function_and_an_evaluation_function(data):
    # What chapter 6 does: a batch of (inputs, labels), the last position's logits over the first two tokens.
    seen = []

    def classify_loss(batch, model, device, amp_dtype):
        inputs, labels = batch
        seen.append(inputs.shape)
        return F.cross_entropy(model(inputs.to(device))[:, -1, :2], labels.to(device))

    def accuracy(model, train_loader, val_loader, device, eval_iter, amp_dtype):
        hits = [(model(x)[:, -1, :2].argmax(-1) == y).float() for x, y in in_order(val_loader)]
        return {"val_accuracy": torch.cat(hits).mean().item()}

    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 20, (16, 8), generator=gen)
    labels = (inputs[:, -1] < 10).long()  # learnable from the last token
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=4, shuffle=True)
    model = make_model(tiny_cfg(20))
    with torch.no_grad():
        before = accuracy(model, None, loader, "cpu", 1, None)["val_accuracy"]
    cfg = TrainConfig(num_epochs=15, peak_lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_freq=4, eval_iter=1)
    history = train_model(model, loader, loader, torch.optim.AdamW(model.parameters()), "cpu", cfg,
                          loss_fn=classify_loss, eval_fn=accuracy, progress=False)
    assert seen and all(shape == (4, 8) for shape in seen)
    assert set(history) == {"step", "tokens_seen", "examples_seen", "lr", "val_accuracy"}
    assert history["examples_seen"] == [4 * s for s in history["step"]]
    assert history["val_accuracy"][-1] == 1.0 > before

    losses_only = train_model(make_model(tiny_cfg(20)), loader, loader,
                              torch.optim.AdamW(model.parameters()), "cpu", cfg, loss_fn=classify_loss,
                              stop_at_step=4, progress=False)  # no eval_fn: train and val loss under loss_fn
    assert set(losses_only) >= {"train_loss", "val_loss"} and losses_only["train_loss"][0] < 2.0


def test_float16_training_uses_a_gradient_scaler(data, monkeypatch):
    scaled = []
    real_scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale",
                        lambda self, loss: scaled.append(self.is_enabled()) or real_scale(self, loss))
    model, history, _ = run_training(data, stop_at_step=3, amp_dtype=torch.float16, eval_freq=1)
    assert scaled == [True, True, True]  # off without float16: see the next assertion
    assert all(loss == loss for loss in history["train_loss"])  # finite (a nan would mean an unscaled overflow)
    scaled.clear()
    run_training(data, stop_at_step=2)
    assert scaled == [False, False]


def _ddp_worker(rank: int, world_size: int, port: int, text: str, ckpt: str, mode: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data.distributed import DistributedSampler

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    try:
        tok = CharTokenizer(text)
        data = SimpleNamespace(train_text=text[:TRAIN_CHARS], val_text=text[TRAIN_CHARS:], tok=tok,
                               vocab_size=len(tok.chars))
        dataset = train_loader_for(data).dataset
        loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, world_size, rank, seed=1))
        torch.manual_seed(123)
        model = GPTModel(tiny_cfg(data.vocab_size, drop_rate=0.3))
        torch.manual_seed(123 + rank)  # each process draws its own dropout masks
        ddp = DDP(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        kwargs = dict(stop_at_step=4) if mode == "stop" else dict(resume=mode == "resume")
        train_model(ddp, loader, val_loader_for(data), optimizer, "cpu", TrainConfig(**TRAIN), checkpoint_path=ckpt,
                    progress=False, is_main=rank == 0, **kwargs)
        torch.save(model.state_dict(), f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()
    exit_process(0)  # as the command line does after DDP: no interpreter teardown while gloo's threads run


def test_ddp_resume_restores_each_process_random_state(text, tmp_path):
    # Two gloo processes with different dropout seeds: the checkpoint must hold both processes' RNG states.
    import socket

    import torch.multiprocessing as mp

    def run(mode: str, ckpt: Path, out: Path) -> list[dict]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_ddp_worker, args=(2, port, text, str(ckpt), mode, str(out)), nprocs=2, join=True)
        return [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2)]

    full = run("full", tmp_path / "full.pt", tmp_path / "full")
    run("stop", tmp_path / "part.pt", tmp_path / "stop")
    resumed = run("resume", tmp_path / "part.pt", tmp_path / "resumed")
    assert states_equal(full[0], full[1])  # DDP keeps the processes' weights in step
    assert states_equal(resumed[0], full[0]) and states_equal(resumed[1], full[1])
    assert len(torch.load(tmp_path / "part.pt", weights_only=True)["rng"]) == 2


# --- what the mutation pass found unpinned (tools/mutation_pass.py) --------------------------------------


def test_calc_loss_batch_runs_autocast_in_the_requested_dtype():
    # Without dtype=, autocast picks the device's default (bfloat16 on CPU, float16 on CUDA), not the one asked for.
    model = make_model(tiny_cfg()).eval()
    dtypes = []
    model.out_head.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    x, y = random_batch(61)
    for amp_dtype in (torch.float16, torch.bfloat16):
        with torch.no_grad():
            loss = calc_loss_batch(x, y, model, "cpu", amp_dtype=amp_dtype)
        assert loss.dtype == torch.float32 and dtypes[-1] == amp_dtype


def test_autocast_dtype_on_a_torch_without_the_cpu_feature_probes(monkeypatch):
    # Older PyTorch releases lack torch.cpu._is_amx_tile_supported / _is_avx512_bf16_supported: assume no bfloat16.
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert autocast_dtype("cpu") is None


def test_generate_and_print_sample_writes_fifty_new_tokens_by_default(data, capsys):
    # train_model's samples rely on the default: 50 new tokens (here: characters), past the 32-token context.
    model = make_model(tiny_cfg(data.vocab_size))
    start = data.train_text[:10]
    text = generate_and_print_sample(model, data.tok, "cpu", start)
    assert len(text) == len(start) + 50 and capsys.readouterr().out == text + "\n"


def test_generate_and_print_sample_uses_the_kv_cache_when_the_sample_exactly_fills_the_context(data, monkeypatch):
    model = make_model(tiny_cfg(data.vocab_size))  # context_length MAX_LEN = 32
    calls = []
    real = pretraining.generate_text_cached
    monkeypatch.setattr(pretraining, "generate_text_cached", lambda *a, **k: calls.append(1) or real(*a, **k))
    start = data.train_text[:10]
    text = generate_and_print_sample(model, data.tok, "cpu", start, max_new_tokens=MAX_LEN - 10)  # 10 + 22 = 32
    assert calls == [1]
    ids = generate(model.eval(), text_to_token_ids(start, data.tok), MAX_LEN - 10)
    assert text == token_ids_to_text(ids, data.tok).replace("\n", " ")


def test_generate_top_k_keeps_k_tokens_for_a_batch_smaller_than_k():
    # k is capped at the vocabulary size (the last dimension of the logits), not at the batch size.
    logits = torch.randn(30, generator=torch.Generator().manual_seed(0))
    top5 = set(torch.topk(logits, 5).indices.tolist())
    out = generate(FixedLogits(logits), torch.zeros(1, 1, dtype=torch.long), 200, temperature=2.0, top_k=5,
                   generator=torch.Generator().manual_seed(0))
    assert set(out[0, 1:].tolist()) == top5


def test_cuda_rng_state_is_saved_and_restored_only_where_cuda_is_available(monkeypatch):
    # A checkpoint from a GPU machine resumes on a CPU-only one (its CUDA states are ignored), and on a GPU machine
    # the saved CUDA states are restored. Simulated: torch.cuda's RNG functions are replaced by spies.
    cuda_states = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    state = pretraining._rng_state()
    assert state["cuda"] is cuda_states
    pretraining._set_rng_state(state)
    assert restored == [cuda_states]
    restored.clear()
    pretraining._set_rng_state({"torch": torch.get_rng_state()})  # a checkpoint written without CUDA
    assert restored == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pretraining._set_rng_state(state)  # written with CUDA, resumed without
    assert restored == []


@pytest.mark.parametrize("first, then", [(False, True), (True, False)], ids=["global-then-generator",
                                                                          "generator-then-global"])
def test_resume_into_a_loader_with_or_without_its_own_generator(data, tmp_path, first, then):
    # The checkpoint holds a sampler state only when the loader had a generator; resuming (inside an epoch) with a
    # loader built the other way trains on, with whatever state there is.
    ckpt = tmp_path / "run.pt"
    run_training(data, ckpt, generator=first, stop_at_step=2)
    _, history, _ = run_training(data, ckpt, generator=then, resume=True)
    assert history["step"] == list(range(3, 2 * steps_per_epoch(data) + 1, 3))
    assert load_checkpoint(ckpt, make_model(tiny_cfg(data.vocab_size)))["step"] == 2 * steps_per_epoch(data)


def test_save_checkpoint_creates_missing_parent_folders(tmp_path):
    model, optimizer = trained_model_and_optimizer(steps=1)
    path = save_checkpoint(tmp_path / "a" / "b" / "c" / "ckpt.pt", model, optimizer, {"step": 1})
    assert path.is_file() and load_checkpoint(path, make_model(tiny_cfg()))["step"] == 1


def test_load_checkpoint_passes_map_location_on(tmp_path):
    model, optimizer = trained_model_and_optimizer(steps=1)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, {"step": 1})
    locations = []

    def to_cpu(storage, location):
        locations.append(location)
        return storage

    fresh = make_model(tiny_cfg(), seed=1)
    assert load_checkpoint(path, fresh, map_location=to_cpu)["step"] == 1
    assert locations and set(locations) == {"cpu"}
    assert states_equal(fresh.state_dict(), model.state_dict())


UNPICKLED = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)  # what a malicious checkpoint could do instead: run any code at load time
    return tag


class _Payload:
    def __reduce__(self):
        return _record_unpickling, ("code ran",)


def test_load_checkpoint_refuses_a_checkpoint_that_would_run_code(tmp_path):
    import pickle

    model, optimizer = trained_model_and_optimizer(steps=1)
    path = tmp_path / "evil.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1, "extra": _Payload()}, path)
    UNPICKLED.clear()
    fresh = make_model(tiny_cfg(), seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path, fresh)
    assert UNPICKLED == [] and states_equal(fresh.state_dict(), before)


def test_lr_schedule_at_its_boundaries():
    peak = 1e-3
    # one step in all: valid; the cosine runs from peak (step 0) to min_lr (step 1)
    assert lr_at_step(0, peak_lr=peak, total_steps=1) == pytest.approx(peak)
    assert lr_at_step(1, peak_lr=peak, total_steps=1) == pytest.approx(0.0, abs=1e-15)
    # warm-up over the whole run: valid, linear up to the peak, where it ends
    lrs = [lr_at_step(s, peak_lr=peak, total_steps=4, warmup_steps=4) for s in range(5)]
    assert lrs == pytest.approx([peak / 4, peak / 2, 3 * peak / 4, peak, peak])
    # one decay step after the warm-up: it reaches min_lr
    assert lr_at_step(5, peak_lr=peak, total_steps=5, warmup_steps=4, min_lr=1e-4) == pytest.approx(1e-4)
    # no warm-up by default: the decay starts at step 0 (half-way down at step 1 of 2)
    assert lr_at_step(1, peak_lr=peak, total_steps=2) == pytest.approx(peak / 2)


def test_train_config_defaults_are_the_chapters_run():
    # ch05.ipynb trains with TrainConfig(num_epochs=..., amp_dtype=...) and documents the schedule these give:
    # 10 epochs of 9 steps, warm-up over 9 steps from 5.56e-05 to 5e-04, cosine to 5e-05, losses every 5 steps.
    cfg = TrainConfig()
    assert (cfg.num_epochs, cfg.peak_lr, cfg.min_lr, cfg.warmup_steps) == (10, 5e-4, 5e-5, 9)
    assert (cfg.grad_clip, cfg.grad_accum_steps, cfg.eval_freq, cfg.eval_iter) == (1.0, 1, 5, 5)
    assert (cfg.amp_dtype, cfg.checkpoint_every) == (None, None)
    assert lr_at_step(0, peak_lr=cfg.peak_lr, total_steps=90, warmup_steps=cfg.warmup_steps,
                      min_lr=cfg.min_lr) == pytest.approx(5.56e-5, rel=1e-3)


def test_train_model_counts_the_tokens_of_the_inputs_not_of_the_labels():
    # Chapter 6's batches are (inputs (batch, tokens), labels (batch,)): tokens seen are the inputs' elements.
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 20, (8, 6), generator=gen)
    labels = torch.randint(0, 2, (8,), generator=gen)
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=4)

    def classify_loss(batch, model, device, amp_dtype):
        x, y = batch
        return F.cross_entropy(model(x)[:, -1, :2], y)

    model = make_model(tiny_cfg(20))
    cfg = TrainConfig(num_epochs=2, warmup_steps=0, eval_freq=1, eval_iter=1)
    history = train_model(model, loader, loader, torch.optim.AdamW(model.parameters()), "cpu", cfg,
                          loss_fn=classify_loss, progress=False)
    assert history["step"] == [1, 2, 3, 4]
    assert history["examples_seen"] == [4, 8, 12, 16] and history["tokens_seen"] == [24, 48, 72, 96]


class _SpyBar:
    """Stands in for tqdm in train_model: records how it was built and what it was told."""

    bars: list = []

    def __init__(self, *args, **kwargs):
        self.kwargs, self.updates, self.postfix, self.closed = kwargs, [], [], False
        _SpyBar.bars.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def set_postfix(self, **kwargs):
        self.postfix.append(kwargs)

    def write(self, text):
        print(text)

    def close(self):
        self.closed = True


def test_train_model_progress_bar_counts_steps_and_shows_the_step_loss(data, monkeypatch):
    monkeypatch.setattr(train_loop, "tqdm", _SpyBar)
    _SpyBar.bars = []
    micro_losses = []

    def loss_fn(batch, model, device, amp_dtype):
        loss = calc_loss_batch(*batch, model, device, amp_dtype)
        micro_losses.append(loss.item())
        return loss

    torch.manual_seed(0)
    model = GPTModel(tiny_cfg(data.vocab_size))
    cfg = TrainConfig(**{**TRAIN, "grad_accum_steps": 2, "eval_freq": 10_000})  # loss_fn sees training batches only
    train_model(model, train_loader_for(data), val_loader_for(data), torch.optim.AdamW(model.parameters()), "cpu",
                cfg, loss_fn=loss_fn, stop_at_step=3)  # progress left at its default: on
    (bar,) = _SpyBar.bars
    total = cfg.num_epochs * (steps_per_epoch(data) // 2)
    assert bar.kwargs["total"] == total and bar.kwargs["initial"] == 0 and bar.kwargs["disable"] is False
    assert bar.updates == [1, 1, 1] and bar.closed
    step_losses = [(a + b) / 2 for a, b in zip(micro_losses[0::2], micro_losses[1::2])]  # the mean of each step
    shown = [float(p["loss"]) for p in bar.postfix]
    assert len(shown) == 3 and shown == pytest.approx(step_losses, abs=1e-3) and min(shown) > 0

    for kwargs in (dict(progress=False), dict(is_main=False)):  # no bar when asked for none, nor on other ranks
        _SpyBar.bars = []
        train_model(model, train_loader_for(data), val_loader_for(data), torch.optim.AdamW(model.parameters()),
                    "cpu", cfg, stop_at_step=1, **kwargs)
        assert _SpyBar.bars[0].kwargs["disable"] is True, kwargs


class _NoSyncWrapper(nn.Module):
    """Stands in for DistributedDataParallel: records for each forward pass whether it ran inside no_sync()."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module, self.syncing, self.calls = module, True, []

    def forward(self, x):
        self.calls.append(self.syncing)
        return self.module(x)

    @__import__("contextlib").contextmanager
    def no_sync(self):
        self.syncing = False
        try:
            yield
        finally:
            self.syncing = True


def test_train_model_syncs_gradients_only_on_the_last_micro_batch(data):
    wrapper = _NoSyncWrapper(make_model(tiny_cfg(data.vocab_size)))
    loader = create_dataloader(data.train_text, batch_size=2, max_length=MAX_LEN, stride=MAX_LEN, shuffle=False,
                               tokenizer=data.tok)
    cfg = TrainConfig(**{**TRAIN, "grad_accum_steps": 3, "eval_freq": 10_000})
    train_model(wrapper, loader, val_loader_for(data), torch.optim.AdamW(wrapper.parameters()), "cpu", cfg,
                stop_at_step=2, progress=False)
    assert wrapper.calls == [False, False, True] * 2


def test_only_the_main_process_prints_and_samples_follow_whole_epochs(data, capsys):
    start = data.train_text[:10]
    sample_prefix = start.replace("\n", " ")

    def train(**kwargs):
        torch.manual_seed(0)
        model = GPTModel(tiny_cfg(data.vocab_size))
        train_model(model, train_loader_for(data), val_loader_for(data), torch.optim.AdamW(model.parameters()),
                    "cpu", TrainConfig(**TRAIN), tokenizer=data.tok, start_context=start, progress=False, **kwargs)
        return capsys.readouterr().out.splitlines()

    lines = train(stop_at_step=steps_per_epoch(data) // 2)  # stopped inside the first epoch: no sample
    assert not any(line.startswith(sample_prefix) for line in lines)
    assert lines[-1].startswith(f"trained {steps_per_epoch(data) // 2} steps")
    assert train(stop_at_step=steps_per_epoch(data), is_main=False) == []  # other ranks print nothing


def test_resuming_with_nothing_left_to_train_prints_no_summary(data, tmp_path, capsys):
    ckpt = tmp_path / "run.pt"
    run_training(data, ckpt, stop_at_step=2)
    assert "trained 2 steps" in capsys.readouterr().out
    run_training(data, ckpt, resume=True, stop_at_step=2)
    assert "trained" not in capsys.readouterr().out


def test_train_model_prints_the_elapsed_time(data, capsys, monkeypatch):
    clock = iter([1000.0, 1012.4])  # train_model reads the clock when it starts and when it ends
    monkeypatch.setattr(train_loop, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    run_training(data, stop_at_step=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"trained 2 steps ({2 * BATCH * MAX_LEN:,} tokens seen) in 12 s"
