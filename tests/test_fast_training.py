"""The faster-training levers of ch05_pretraining/fast_training.py: each equals the plain path, and each switch takes effect."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ch04_gpt_model import GPTConfig, GPTModel, tie_weights
from ch05_pretraining import (
    MasterWeightAdamW,
    TrainConfig,
    calc_loss_batch,
    chunked_cross_entropy,
    chunked_loss,
    load_checkpoint,
    param_groups,
    reuse_freed_memory,
    save_checkpoint,
    train_model,
    use_fused_kernels,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def tiny_model(seed: int = 0, tied: bool = False) -> GPTModel:
    torch.manual_seed(seed)
    model = use_fused_kernels(GPTModel(TINY))
    return tie_weights(model) if tied else model


def random_case(n=37, d=16, vocab=101, dtype=torch.float64, ignored=(3, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(vocab, d, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[list(ignored)] = -100
    return hidden, weight, targets


# --- chunked cross-entropy -------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_rows", [1, 5, 36, 37, 1000])
def test_chunked_cross_entropy_equals_f_cross_entropy_in_float64(chunk_rows):
    hidden, weight, targets = random_case()
    reference = F.cross_entropy(hidden @ weight.T, targets)
    ref_grads = torch.autograd.grad(reference * 2.5, (hidden, weight))  # a non-unit upstream gradient
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(loss * 2.5, (hidden, weight))
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_chunked_cross_entropy_in_bfloat16_is_within_bfloat16_rounding():
    hidden, weight, targets = random_case(dtype=torch.bfloat16)
    reference = F.cross_entropy((hidden @ weight.T).float(), targets)
    ref_grads = torch.autograd.grad(reference, (hidden, weight))
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_rows=8)
    grads = torch.autograd.grad(loss, (hidden, weight))
    assert loss.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=4e-3)


def test_chunked_cross_entropy_without_gradients_and_with_every_row_ignored():
    hidden, weight, targets = random_case()
    with torch.no_grad():
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_rows=4)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.T, targets).detach())
    all_ignored = torch.full_like(targets, -100)
    assert chunked_cross_entropy(hidden, weight, all_ignored).item() == 0.0  # F.cross_entropy gives nan here


def test_chunked_cross_entropy_refuses_bad_input():
    hidden, weight, targets = random_case()
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy(hidden, weight.T, targets)
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy(hidden, weight, targets[:-1])
    with pytest.raises(ValueError, match="chunk_rows"):
        chunked_cross_entropy(hidden, weight, targets, chunk_rows=0)


def largest_saved_for_backward(loss_fn) -> int:
    """Elements of the largest tensor that autograd saves for the backward pass while loss_fn runs."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    return max(sizes)


def test_chunked_cross_entropy_never_keeps_the_logits():
    # The switch: F.cross_entropy keeps a (rows, vocab) log-softmax for backward; the chunked loss keeps
    # only its gradients, (rows, d) and (vocab, d). With rows > d the logits are the largest tensor.
    hidden, weight, targets = random_case(n=64, d=8, vocab=101, dtype=torch.float32)
    plain = largest_saved_for_backward(lambda: F.cross_entropy(hidden @ weight.T, targets))
    chunked = largest_saved_for_backward(lambda: chunked_cross_entropy(hidden, weight, targets, chunk_rows=16))
    assert plain == 64 * 101
    assert chunked == 101 * 8  # the head's gradient: nothing of size rows x vocab


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_equals_calc_loss_batch_in_the_model(tied):
    plain_model, chunked_model = tiny_model(tied=tied), tiny_model(tied=tied)
    x, y = torch.randint(0, 97, (3, 16)), torch.randint(0, 97, (3, 16))
    plain = calc_loss_batch(x, y, plain_model, "cpu")
    chunked = chunked_loss((x, y), chunked_model, "cpu", chunk_rows=7)
    plain.backward()
    chunked.backward()
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(plain_model.named_parameters(), chunked_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_chunked_loss_under_autocast_matches_calc_loss_batch():
    plain_model, chunked_model = tiny_model(), tiny_model()
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    plain = calc_loss_batch(x, y, plain_model, "cpu", amp_dtype=torch.bfloat16)
    chunked = chunked_loss((x, y), chunked_model, "cpu", amp_dtype=torch.bfloat16)
    torch.testing.assert_close(chunked, plain, rtol=1e-2, atol=1e-2)


def test_chunked_loss_passes_chunk_rows_and_amp_dtype_on(monkeypatch):
    # The loss is the same for any chunk_rows and close to float32 under bfloat16: only a spy can tell that the
    # settings arrive (a dropped chunk_rows would silently fall back to 1024 rows, a dropped amp_dtype to float32).
    import ch05_pretraining.fast_training as fast_training

    model = tiny_model()
    seen_rows, dtypes = [], set()
    real = fast_training.chunked_cross_entropy
    monkeypatch.setattr(fast_training, "chunked_cross_entropy",
                        lambda hidden, weight, targets, chunk_rows=1024: seen_rows.append(chunk_rows) or real(
                            hidden, weight, targets, chunk_rows))
    hooks = [m.register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.out_head]
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    chunked_loss((x, y), model, "cpu", torch.bfloat16, chunk_rows=7)
    for h in hooks:
        h.remove()
    assert seen_rows == [7] and dtypes == {torch.bfloat16}


# --- bfloat16 weights with float32 masters ----------------------------------------------------------------

def test_master_weight_adamw_casts_the_model_and_keeps_float32_masters():
    model = tiny_model(tied=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = MasterWeightAdamW(param_groups(model, 0.1), lr=1e-3)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.out_head.weight is model.tok_emb.weight  # still tied
    assert all(m.dtype == torch.float32 for m in opt.masters)
    assert len(opt.masters) == len(list(model.parameters()))
    masters = {id(p): m for p, m in zip(opt.model_params, opt.masters)}
    for name, p in model.named_parameters():
        torch.testing.assert_close(masters[id(p)], before[name], rtol=0, atol=0)  # exact float32 copies


def updates_that_survive(opt_factory, steps=10, lr=1e-5) -> float:
    """Fraction of the first block's query weights that changed after steps tiny AdamW steps."""
    model = tiny_model()
    start = model.trf_blocks[0].att.W_query.weight.detach().to(torch.bfloat16).clone()
    opt = opt_factory(model, lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        tokens = torch.randint(0, 97, (4, 17), generator=g)
        opt.zero_grad()
        calc_loss_batch(tokens[:, :-1], tokens[:, 1:], model, "cpu").backward()
        opt.step()
    return (model.trf_blocks[0].att.W_query.weight.detach() != start).float().mean().item()


def test_master_weights_keep_updates_that_plain_bfloat16_weights_lose():
    # The switch: with plain bfloat16 weights, AdamW steps of ~1e-5 on weights of ~0.1 round away (gap ~5e-4);
    # float32 masters accumulate them until the bfloat16 weight moves.
    plain = updates_that_survive(lambda m, lr: torch.optim.AdamW(m.to(torch.bfloat16).parameters(), lr=lr), steps=40)
    master = updates_that_survive(lambda m, lr: MasterWeightAdamW(m.parameters(), lr=lr), steps=40)
    assert plain < 0.1
    assert master > 2 * plain + 0.05


def pattern_loader() -> DataLoader:
    g = torch.Generator().manual_seed(2)
    sequences = (torch.randint(0, 97, (96, 1), generator=g) + torch.arange(17)) % 97  # t is followed by t + 1
    return DataLoader(TensorDataset(sequences[:, :-1], sequences[:, 1:]), batch_size=8, shuffle=True,
                      generator=torch.Generator().manual_seed(3))


def train_tiny(make_optimizer, loss_fn=None, **train_kwargs) -> tuple[GPTModel, torch.optim.Optimizer, dict]:
    model = tiny_model(seed=4)
    opt = make_optimizer(model)
    torch.manual_seed(5)
    loader = pattern_loader()
    cfg = TrainConfig(num_epochs=3, peak_lr=3e-3, min_lr=3e-4, warmup_steps=3, eval_freq=12, eval_iter=2)
    history = train_model(model, loader, loader, opt, "cpu", cfg, loss_fn=loss_fn, progress=False, **train_kwargs)
    return model, opt, history


def test_master_weights_train_like_float32_through_train_model(capsys):
    _, _, fp32 = train_tiny(lambda m: torch.optim.AdamW(param_groups(m, 0.1), lr=3e-3))
    _, _, master = train_tiny(lambda m: MasterWeightAdamW(param_groups(m, 0.1), lr=3e-3))
    assert fp32["train_loss"][-1] < fp32["train_loss"][0] - 0.5  # it learns the pattern
    for a, b in zip(fp32["train_loss"], master["train_loss"]):
        assert abs(a - b) < 0.1 * max(1.0, a)  # the same curve within bfloat16 arithmetic


def test_chunked_loss_trains_like_calc_loss_batch_through_train_model(capsys):
    def adamw(m):
        return torch.optim.AdamW(param_groups(m, 0.1), lr=3e-3)

    _, _, plain = train_tiny(adamw)
    _, _, chunked = train_tiny(adamw, loss_fn=lambda batch, m, d, a: chunked_loss(batch, m, d, a, chunk_rows=40))
    torch.testing.assert_close(torch.tensor(chunked["train_loss"]), torch.tensor(plain["train_loss"]),
                               rtol=1e-4, atol=1e-4)


def test_master_weights_resume_exactly_from_a_checkpoint(tmp_path, capsys):
    def make(m):
        return MasterWeightAdamW(param_groups(m, 0.1), lr=3e-3)

    full_model, full_opt, _ = train_tiny(make)
    path = tmp_path / "master.pt"
    train_tiny(make, checkpoint_path=path, stop_at_step=7)
    state = torch.load(path, weights_only=True)
    assert state["optimizer"]["masters"][0].dtype == torch.float32  # the masters are in the checkpoint
    resumed_model, resumed_opt, _ = train_tiny(make, checkpoint_path=path, resume=True)
    for a, b in zip(full_opt.masters, resumed_opt.masters):
        assert torch.equal(a, b)
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_master_weight_state_dict_round_trip_restores_model_and_masters(tmp_path):
    model = tiny_model()
    opt = MasterWeightAdamW(model.parameters(), lr=1e-3)
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    calc_loss_batch(x, y, model, "cpu").backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", model, opt, {})
    other = tiny_model(seed=9)
    other_opt = MasterWeightAdamW(other.parameters(), lr=1e-3)
    load_checkpoint(tmp_path / "c.pt", other, other_opt)
    for a, b in zip(opt.masters, other_opt.masters):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b) and b.dtype == torch.bfloat16


# --- reuse_freed_memory -------------------------------------------------------------------------------------

PROBE = """
import json, sys, torch
from ch05_pretraining.fast_training import reuse_freed_memory
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) * 1024
switched = reuse_freed_memory() if sys.argv[1] == "on" else None
a = torch.ones(64, 2**20)  # 256 MiB, written: its pages are resident
before_free = rss()
del a
print(json.dumps({"switched": switched, "returned_mib": (before_free - rss()) / 2**20}))
"""


def run_probe(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_reuse_freed_memory_keeps_freed_blocks_instead_of_returning_them():
    # The switch: by default glibc returns a freed 256 MiB block to the system at once (RSS falls);
    # with reuse_freed_memory() it keeps it for the next allocation (RSS stays).
    default, reused = run_probe("off"), run_probe("on")
    assert default["returned_mib"] > 200
    assert reused["switched"] is True
    assert reused["returned_mib"] < 50


@pytest.fixture
def train_speed(monkeypatch):
    """benchmarks/train_speed.py as a module."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_speed

    return train_speed


def test_the_benchmark_runs_paths_x_and_xc_and_their_initial_loss_matches_the_fast_path():
    # x = bt + the speed levers above, xc = x + the chunked loss; same weights and batch, so their step-0 losses
    # must equal bt's (checked by the script)
    out = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--tiny", "--steps", "1", "--warmup", "0",
                          "--paths", "bt,x,xc", "--context-length", "32", "--no-matmul-time"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "initial-loss check" in out.stdout and ": ok" in out.stdout
    assert "x / bt" in out.stdout and "xc / x" in out.stdout


@pytest.mark.parametrize("path, chunked", [("x", False), ("xc", True)])
def test_only_the_benchmarks_path_xc_trains_through_the_chunked_loss(train_speed, monkeypatch, path, chunked):
    calls = []
    real = train_speed.chunked_loss
    monkeypatch.setattr(train_speed, "chunked_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(train_speed, "reuse_freed_memory", lambda: False)  # leave this process's allocator alone
    cfg = dataclasses.replace(TINY, drop_rate=0.0)
    spec = {"cfg": dataclasses.asdict(cfg), "device": "cpu", "amp": None, "batch_size": 2, "steps": 1, "warmup": 0,
            "seed": 0, "threads": None, "matmul_time": False}
    result = train_speed.run_path(path, spec)
    assert len(result["losses"]) == 1
    assert bool(calls) == chunked  # the toy step and the timed step of xc; none for x


def test_the_benchmark_rounds_alternate_the_order_and_report_every_round():
    out = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--tiny", "--steps", "1", "--warmup", "0",
                          "--paths", "bt,x", "--context-length", "32", "--rounds", "2"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    order = [line.split()[3] for line in out.stdout.splitlines() if line.startswith("round ")]
    assert order == ["bt", "x", "x", "bt"]  # the second round runs the paths in reverse
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if "   rounds: " in line}
    assert set(rows) == {"bt", "x"}
    for row in rows.values():
        assert len(row.split("   rounds: ")[1].split()) == 2  # one s/step per round
    bad = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--rounds", "0"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--rounds must be >= 1" in bad.stderr


def test_the_benchmark_measures_matmul_time_and_prints_ceilings_unless_told_not_to():
    base = [sys.executable, "benchmarks/train_speed.py", "--tiny", "--steps", "1", "--warmup", "0", "--paths", "c,x",
            "--context-length", "32"]
    on = subprocess.run(base, capture_output=True, text=True, cwd=ROOT)
    off = subprocess.run(base + ["--no-matmul-time"], capture_output=True, text=True, cwd=ROOT)
    for out in (on, off):
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def rows(out):  # path -> (s/step, matmul s)
        return {line.split()[0]: (line.split()[2], line.split()[3]) for line in out.stdout.splitlines()
                if line.startswith(("c ", "x "))}  # table rows; the ratio lines are indented

    measured, skipped = rows(on), rows(off)
    assert set(measured) == set(skipped) == {"c", "x"}
    for _, matmul in measured.values():
        assert 0 < float(matmul)  # the profiled step found matrix products
    assert all(matmul == "n/a" for _, matmul in skipped.values())
    assert "ceiling" in on.stdout and "x's matmul s" in on.stdout
    assert "ceiling" not in off.stdout


def test_matmul_seconds_counts_only_time_inside_matrix_products(train_speed):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    events = train_speed.profile_step(model, optimizer, x, x, torch.device("cpu"), None)
    seconds = train_speed.matmul_seconds(events)
    everything = sum(e.self_cpu_time_total for e in events) / 1e6  # the same profiled step
    assert 0 < seconds < everything  # a share of the step, not all of it


# --- mutation-pass survivors ------------------------------------------------------------------------------

def test_chunked_cross_entropy_when_only_hidden_or_only_weight_needs_gradients():
    # a frozen head (only hidden trains) and a trained head on frozen features (only weight trains)
    for frozen in ("weight", "hidden"):
        hidden, weight, targets = random_case()
        (weight if frozen == "weight" else hidden).requires_grad_(False)
        trained = hidden if frozen == "weight" else weight
        (want,) = torch.autograd.grad(F.cross_entropy(hidden @ weight.T, targets), trained)
        (got,) = torch.autograd.grad(chunked_cross_entropy(hidden, weight, targets, chunk_rows=5), trained)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_chunked_cross_entropy_with_exactly_one_target_not_ignored():
    hidden, weight, targets = random_case(n=6, ignored=(0, 1, 2, 4, 5))
    reference = F.cross_entropy(hidden @ weight.T, targets)
    torch.testing.assert_close(chunked_cross_entropy(hidden, weight, targets, chunk_rows=4), reference,
                               rtol=0, atol=1e-12)


def test_chunked_cross_entropy_sums_the_bfloat16_head_gradient_over_chunks_in_float32():
    # 1024 chunks of equal contributions: a bfloat16 running sum stalls near 256 of them (8 significant bits),
    # the float32 one reaches the full sum; chunk_rows equals emb_dim here, so rows and columns must not mix up
    n, d = 2048, 2
    hidden = torch.tensor([[1.0, 0.5]]).repeat(n, 1).to(torch.bfloat16)
    weight = torch.tensor([[0.5, -0.25], [0.25, 0.5], [-0.5, 0.25]]).to(torch.bfloat16).requires_grad_()
    targets = torch.zeros(n, dtype=torch.long)
    weight64 = weight.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(F.cross_entropy(hidden.double() @ weight64.T, targets), weight64)
    (got,) = torch.autograd.grad(chunked_cross_entropy(hidden, weight, targets, chunk_rows=d), weight)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=3e-2, atol=1e-3)


def test_chunked_cross_entropy_warns_about_nothing():
    # e.g. torch.mm resizing a wrongly sliced out= tensor: a deprecation warning, an error in a future PyTorch
    import warnings

    hidden, weight, targets = random_case(dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunked_cross_entropy(hidden, weight, targets, chunk_rows=8).backward()


def test_chunked_cross_entropy_refuses_one_dimensional_inputs_with_a_clear_message():
    hidden, weight, targets = random_case()
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy(hidden, weight[0], targets)
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy(hidden[:, 0], weight, targets)


@pytest.mark.parametrize("amp_dtype", [None, torch.float16, torch.bfloat16])
def test_chunked_loss_runs_the_model_and_the_head_in_amp_dtype(monkeypatch, amp_dtype):
    import ch05_pretraining.fast_training as fast_training

    model = tiny_model()
    head_dtypes, linear_dtypes = [], set()
    real = fast_training.chunked_cross_entropy
    monkeypatch.setattr(fast_training, "chunked_cross_entropy",
                        lambda hidden, weight, targets, chunk_rows=1024: head_dtypes.append(
                            (hidden.dtype, weight.dtype)) or real(hidden, weight, targets, chunk_rows))
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m is not model.out_head:
            m.register_forward_hook(lambda mod, args, out: linear_dtypes.add(out.dtype))
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    chunked_loss((x, y), model, "cpu", amp_dtype)
    expected = amp_dtype or torch.float32
    assert head_dtypes == [(expected, expected)] and linear_dtypes == {expected}


def test_master_weight_adamw_takes_a_single_parameter_or_a_single_group():
    model = tiny_model()
    params = list(model.parameters())
    one = MasterWeightAdamW([params[0]], lr=1e-3)
    assert len(one.masters) == 1 and params[0].dtype == torch.bfloat16 and params[1].dtype == torch.float32
    group = MasterWeightAdamW([{"params": params[1:], "weight_decay": 0.0}], lr=1e-3)
    assert len(group.masters) == len(params) - 1 and group.param_groups[0]["weight_decay"] == 0.0


def test_master_weight_adamw_zero_grad_sets_none_by_default_and_zeroes_when_told():
    model = tiny_model()
    opt = MasterWeightAdamW(model.parameters(), lr=1e-3)
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    calc_loss_batch(x, y, model, "cpu").backward()
    model.pos_emb.weight.grad = None  # a parameter without a gradient must not trip set_to_none=False
    opt.zero_grad(set_to_none=False)
    assert model.pos_emb.weight.grad is None
    grads = [p.grad for p in model.parameters() if p is not model.pos_emb.weight]
    assert all(g is not None and not g.any() for g in grads)
    opt.zero_grad()  # torch's default: drop the gradients
    assert all(p.grad is None for p in model.parameters())


def test_master_weight_adamw_step_returns_the_closures_loss():
    model = tiny_model()
    opt = MasterWeightAdamW(model.parameters(), lr=1e-3)
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    losses = []
    assert opt.step(lambda: losses.append(calc_loss_batch(x, y, model, "cpu")) or losses[-1]) is losses[0]


def test_reuse_freed_memory_sets_glibcs_two_thresholds_and_fails_soft(monkeypatch):
    # A fake libc: the real one would change this test process's allocator.
    import ch05_pretraining.fast_training as fast_training

    calls, result = [], [1]

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return result[0]

    monkeypatch.setattr(fast_training.sys, "platform", "linux")
    monkeypatch.setattr(fast_training.ctypes, "CDLL", lambda name: FakeLibc())
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, INT_MAX = -1, -3, 2**31 - 1
    assert reuse_freed_memory() is True
    assert calls == [(M_MMAP_THRESHOLD, 2**30), (M_TRIM_THRESHOLD, INT_MAX)]  # default: blocks up to 1 GiB
    calls.clear()
    assert reuse_freed_memory(2**40) is True and calls == [(M_MMAP_THRESHOLD, INT_MAX), (M_TRIM_THRESHOLD, INT_MAX)]
    result[0] = 0  # mallopt refuses
    assert reuse_freed_memory() is False
    result[0] = 1
    calls.clear()
    monkeypatch.setattr(fast_training.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(name)))
    assert reuse_freed_memory() is False  # no glibc (musl, ...)
    monkeypatch.setattr(fast_training.ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(fast_training.sys, "platform", "darwin")
    assert reuse_freed_memory() is False and calls == []


def test_master_weight_adamw_step_uses_the_gradients_its_closure_computes():
    # The closure runs backward; its gradients must reach the masters in the same step, as with torch's optimizers.
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    with_closure, outside = tiny_model(), tiny_model()
    opt_a = MasterWeightAdamW(with_closure.parameters(), lr=1e-2)
    opt_b = MasterWeightAdamW(outside.parameters(), lr=1e-2)

    def closure():
        opt_a.zero_grad()
        loss = calc_loss_batch(x, y, with_closure, "cpu")
        loss.backward()
        return loss

    before = [m.clone() for m in opt_a.masters]
    opt_a.step(closure)
    opt_b.zero_grad()
    calc_loss_batch(x, y, outside, "cpu").backward()
    opt_b.step()
    assert any(not torch.equal(a, b) for a, b in zip(opt_a.masters, before))  # the weights moved
    for a, b in zip(opt_a.masters, opt_b.masters):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
