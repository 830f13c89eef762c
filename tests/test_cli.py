"""Tests of the pretraining command line `python -m ch05_pretraining` (ch05_pretraining/cli.py) and the pipeline it
calls (ch05_pretraining/pretrain_run.py).

Most runs call main() in this process (fast); one runs `python -m ch05_pretraining`, three run it under
torchrun with two CPU processes (gloo), and one starts two processes with torchrun's variables itself. All use
--smoke (a two-layer model, a few steps), a synthetic text written by the test and --out in a temporary folder:
no network, nothing written into the repository.
"""
import contextlib
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import ch05_pretraining.pretrain_run as run
from ch05_pretraining import load_gpt2
from ch05_pretraining.cli import CLI_SMOKE_OUT, DATA_DIR, DEFAULT_OUT, SMOKE_DEFAULTS, SMOKE_OUT, main, parse_args

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread", "force_cpu_device")  # tests/conftest.py: LLMS_DEVICE=cpu


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """About 1,500 words (~1,800 GPT-2 tokens): enough windows of 32 tokens for two processes' batches."""
    rng = random.Random(0)
    words = "the a painter wife picture studio gallery said his her money fame quiet brush light".split()
    text = " ".join(rng.choice(words) + rng.choice(["", "", "", ",", "."]) for _ in range(1500))
    path = tmp_path_factory.mktemp("text") / "story.txt"
    path.write_text(text, encoding="utf-8")
    return path


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in this process: (exit status, stdout, stderr); argparse errors give their SystemExit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def smoke_args(text_file: Path, out: Path, *extra: str) -> list[str]:
    return ["--smoke", "--text", str(text_file), "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def smoke_run(text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    status, stdout, stderr = run_main(smoke_args(text_file, out))
    assert status == 0, stderr
    return out, stdout


def state_step(out: Path) -> int:
    return torch.load(out / "train_state.pt", weights_only=True)["step"]


# --- a smoke run and its checkpoint ----------------------------------------------------------------------


def test_smoke_run_writes_an_hf_checkpoint_that_course_and_transformers_load_alike(smoke_run):
    out, stdout = smoke_run
    assert {"config.json", "model.safetensors", "train_state.pt", "run_args.json"} <= {p.name for p in out.iterdir()}
    assert state_step(out) == SMOKE_DEFAULTS["stop_at_step"]
    model = load_gpt2(out)
    assert (model.cfg.emb_dim, model.cfg.n_layers, model.cfg.n_heads) == (64, 2, 4)
    assert model.cfg.context_length == SMOKE_DEFAULTS["context_length"]

    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_smoke_run_trained_and_says_where_the_model_is(smoke_run):
    out, stdout = smoke_run
    init = torch.load(out / "train_state.pt", weights_only=True)
    assert init["history"]["step"] == [2, 4]  # --smoke: evaluation every 2 steps, stop at step 4
    assert all(math.isfinite(v) for v in init["history"]["train_loss"] + init["history"]["val_loss"])
    assert f"load_gpt2({str(out)!r})" in stdout
    assert "sample: Every effort moves you" in stdout
    assert "world size 1" in stdout


def test_smoke_run_learned_something(smoke_run, text_file, tmp_path):
    """The saved weights differ from the initial ones (same seed, stopped before the first step)."""
    out, _ = smoke_run
    trained = load_file(out / "model.safetensors")
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--lr", "1e-12", "--min-lr", "0", "--stop-at-step", "1"))
    assert status == 0, err
    barely = load_file(tmp_path / "model.safetensors")
    assert trained.keys() == barely.keys()
    assert not torch.equal(trained["transformer.wte.weight"], barely["transformer.wte.weight"])


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(smoke_run, text_file, tmp_path, monkeypatch):
    out, _ = smoke_run
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--stop-at-step", "2"))  # interrupted at step 2
    assert status == 0, err
    assert state_step(tmp_path) == 2

    steps_taken = []
    real_train_model = run.train_model

    def counting_train_model(model, train_loader, val_loader, optimizer, *args, **kwargs):
        optimizer.register_step_post_hook(lambda *_: steps_taken.append(1))
        return real_train_model(model, train_loader, val_loader, optimizer, *args, **kwargs)

    monkeypatch.setattr(run, "train_model", counting_train_model)
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--resume"))  # on to step 4
    assert status == 0, err
    assert "resuming from" in stdout
    assert len(steps_taken) == 2  # steps 3 and 4 only: it went on from the checkpoint
    assert state_step(tmp_path) == 4
    uninterrupted, resumed = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert uninterrupted.keys() == resumed.keys()
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], resumed[name]), name
    full = torch.load(out / "train_state.pt", weights_only=True)["history"]
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["history"] == full


def test_resume_refuses_a_run_with_other_settings(smoke_run, text_file):
    out, _ = smoke_run
    before = (out / "train_state.pt").stat().st_mtime_ns
    status, _, err = run_main(smoke_args(text_file, out, "--resume", "--lr", "1e-3"))
    assert status == 2
    assert "other settings" in err and "lr: 0.0005 then, 0.001 now" in err
    assert (out / "train_state.pt").stat().st_mtime_ns == before  # nothing overwritten


def test_plain_float32_tied_run_without_validation(text_file, tmp_path):
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--no-fast", "--tie-weights", "--val-fraction", "0",
                                              "--stop-at-step", "2"))
    assert status == 0, err
    assert ("fast path: off (autocast None, fused AdamW False, reuse_freed_memory False, chunked loss False, "
            "master weights False)") in stdout
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    model = load_gpt2(tmp_path)
    assert model.out_head.weight is model.tok_emb.weight
    history = torch.load(tmp_path / "train_state.pt", weights_only=True)["history"]
    assert math.isnan(history["val_loss"][0]) and math.isfinite(history["train_loss"][0])


def capture_training(monkeypatch) -> dict:
    """Replace run.train_model by a wrapper that records its optimizer and loss_fn, then trains as before."""
    seen = {}
    real_train_model = run.train_model

    def recording_train_model(model, train_loader, val_loader, optimizer, *args, **kwargs):
        seen.update(model=model, optimizer=optimizer, loss_fn=kwargs.get("loss_fn"))
        return real_train_model(model, train_loader, val_loader, optimizer, *args, **kwargs)

    monkeypatch.setattr(run, "train_model", recording_train_model)
    return seen


def test_chunked_loss_option_trains_through_chunked_loss_to_the_same_weights(text_file, tmp_path, monkeypatch):
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    status, _, err = run_main(smoke_args(text_file, plain, "--no-fast"))  # float32: the two losses agree closely
    assert status == 0, err
    seen = capture_training(monkeypatch)
    status, stdout, err = run_main(smoke_args(text_file, chunked, "--no-fast", "--chunked-loss"))
    assert status == 0, err
    assert seen["loss_fn"] is run.chunked_loss  # the switch took effect
    assert "chunked loss True" in stdout
    history = {out: torch.load(out / "train_state.pt", weights_only=True)["history"] for out in (plain, chunked)}
    for key in ("train_loss", "val_loss"):
        assert history[plain][key] == pytest.approx(history[chunked][key], rel=1e-5)
    # The weights agree to 1e-4 (AdamW moves each by about lr = 5e-4 a step). Not closer: the key biases get a
    # gradient that is exactly zero in exact arithmetic (softmax ignores a constant added to every score), so
    # theirs is rounding noise, which AdamW normalises into steps of full size (differences up to ~1e-5).
    a, b = load_file(plain / "model.safetensors"), load_file(chunked / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4, msg=name)


def test_master_weights_option_is_refused_without_native_bfloat16(text_file, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "autocast_dtype", lambda device: None)  # as on an AVX2-only CPU, whatever this one is
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--master-weights"))
    assert status == 2 and "--master-weights needs --fast and native bfloat16" in err
    assert not (tmp_path / "model.safetensors").exists()


def test_master_weights_option_saves_the_float32_masters(text_file, tmp_path, monkeypatch):
    # Forced to bfloat16, so that the test checks the same thing on every CPU (bfloat16 runs everywhere, slowly
    # where the CPU has no native support).
    monkeypatch.setattr(run, "autocast_dtype", lambda device: torch.bfloat16)
    seen = capture_training(monkeypatch)
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--master-weights", "--chunked-loss"))
    assert status == 0, err
    assert "master weights True" in stdout
    optimizer = seen["optimizer"]
    assert isinstance(optimizer, run.MasterWeightAdamW)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved["transformer.wte.weight"].dtype == torch.float32
    # the saved weights are the float32 masters, not their bfloat16 roundings
    index = [id(p) for p in optimizer.model_params].index(id(seen["model"].tok_emb.weight))
    master = optimizer.masters[index]
    assert torch.equal(saved["transformer.wte.weight"], master)
    assert not torch.equal(master, master.bfloat16().float())


def test_master_weights_without_the_fast_path_is_refused(text_file, tmp_path):
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--no-fast", "--master-weights"))
    assert status == 2 and "--master-weights needs --fast" in err


def test_resume_of_a_run_recorded_before_the_lever_options_existed(smoke_run, text_file, tmp_path):
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--stop-at-step", "2"))
    assert status == 0, err
    record = json.loads((tmp_path / "run_args.json").read_text())
    del record["chunked_loss"], record["master_weights"]  # as an older version wrote it
    (tmp_path / "run_args.json").write_text(json.dumps(record))
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--resume"))
    assert status == 0, err
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--resume", "--chunked-loss"))
    assert status == 2 and "chunked_loss: False then, True now" in err


def test_init_from_a_checkpoint_folder_continues_pretraining(smoke_run, text_file, tmp_path):
    out, _ = smoke_run
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--init-from", str(out), "--stop-at-step", "2"))
    assert status == 0, err
    assert f"model: {out}" in stdout
    start, continued = load_gpt2(out), load_gpt2(tmp_path)
    assert continued.cfg == start.cfg
    assert not torch.equal(continued.tok_emb.weight, start.tok_emb.weight)


def test_default_text_is_the_verdict_in_the_package_data_folder(text_file, tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dest, **kwargs):
        calls.append((url, Path(dest), kwargs.get("sha256")))
        return text_file

    monkeypatch.setattr(run, "download_file", fake_download)
    status, _, err = run_main(["--smoke", "--out", str(tmp_path), "--no-progress", "--stop-at-step", "1"])
    assert status == 0, err
    assert calls == [(run.THE_VERDICT_URL, DATA_DIR, run.THE_VERDICT_SHA256)]
    assert DATA_DIR == ROOT / "ch05_pretraining" / "data"


def test_default_text_on_a_fresh_clone_lands_in_a_data_folder(text_file, tmp_path, monkeypatch):
    """Before the notebook ever ran, DATA_DIR does not exist: the text must go into it, not become a file named data."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(text_file, mirror / "the-verdict.txt")  # a stand-in, with its own checksum: no network needed
    monkeypatch.setenv("LLMS_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(run, "THE_VERDICT_SHA256", hashlib.sha256(text_file.read_bytes()).hexdigest())
    data_dir = tmp_path / "clone" / "ch05_pretraining" / "data"  # no such folder yet; no trailing slash
    monkeypatch.setattr(run, "DATA_DIR", data_dir)
    status, _, err = run_main(["--smoke", "--out", str(tmp_path / "out"), "--no-progress", "--stop-at-step", "1"])
    assert status == 0, err
    assert data_dir.is_dir()
    assert (data_dir / "the-verdict.txt").read_bytes() == text_file.read_bytes()


def test_a_fresh_run_into_an_earlier_runs_folder_is_refused_and_changes_nothing(text_file, tmp_path):
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--stop-at-step", "1"))  # run A leaves a checkpoint
    assert status == 0, err
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--lr", "1e-3"))  # run B: no --resume
    assert status == 2 and stdout == ""
    assert err.count("\n") == 1 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # run A is intact


def test_overwrite_deletes_the_earlier_state_so_resume_never_mixes_two_runs(text_file, tmp_path, monkeypatch):
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--stop-at-step", "1"))  # run A leaves a checkpoint
    assert status == 0, err
    assert state_step(tmp_path) == 1

    real_train_model = run.train_model

    def dies_before_its_first_checkpoint(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train_model", dies_before_its_first_checkpoint)
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--lr", "1e-3", "--overwrite"))  # run B
    assert status == 130
    assert f"deleted {tmp_path / 'train_state.pt'}" in stdout
    assert not (tmp_path / "train_state.pt").exists()
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "config.json").exists()  # run A's model
    assert json.loads((tmp_path / "run_args.json").read_text())["lr"] == 1e-3
    assert "interrupted before the first checkpoint: nothing to resume" in err

    monkeypatch.setattr(run, "train_model", real_train_model)
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--lr", "1e-3", "--resume"))  # not run A's state
    assert status == 2
    assert f"no checkpoint at {tmp_path / 'train_state.pt'}" in err
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--resume", "--overwrite"))
    assert status == 2 and "pass one of them" in err


# --- options ---------------------------------------------------------------------------------------------


def test_defaults_match_the_chapter_run_and_live_in_the_package_folder():
    args = parse_args(["--overwrite"])  # the folder may hold the notebook's model: without it, refused
    assert (args.model, args.context_length, args.batch_size, args.epochs) == ("gpt2", 256, 2, 10)
    assert (args.lr, args.min_lr, args.warmup_steps, args.grad_clip, args.val_fraction) == (5e-4, 5e-5, 9, 1.0, 0.1)
    assert args.fast and not args.resume and args.init_from == "scratch"
    assert args.out == DEFAULT_OUT == ROOT / "ch05_pretraining" / "checkpoints" / "gpt2-verdict"


def test_smoke_runs_default_to_their_own_folder_never_the_chapters_model(tmp_path):
    assert SMOKE_OUT == ROOT / "ch05_pretraining" / "checkpoints" / "gpt2-verdict-smoke"  # ch06/ch07's substitute
    assert CLI_SMOKE_OUT == ROOT / "ch05_pretraining" / "checkpoints" / "cli-smoke"  # neither's: never in its way
    assert parse_args(["--smoke", "--overwrite"]).out == CLI_SMOKE_OUT  # --overwrite: the folder may hold one already
    assert parse_args(["--smoke", "--out", str(tmp_path / "x")]).out == tmp_path / "x"


def test_smoke_sets_its_defaults_but_explicit_options_win():
    args = parse_args(["--smoke", "--batch-size", "8", "--overwrite"])
    assert (args.model, args.context_length, args.stop_at_step) == ("tiny", 32, SMOKE_DEFAULTS["stop_at_step"])
    assert args.batch_size == 8


def test_run_args_json_is_written_whole_or_not_at_all(text_file, tmp_path, monkeypatch, request):
    settings = run.check_settings(run.PretrainSettings(**SMOKE_DEFAULTS, text=text_file, out=tmp_path))
    (tmp_path / "run_args.json").write_text('{"lr": 0.0005}', encoding="utf-8")  # a run that never trained
    request.getfixturevalue("disk_full_halfway")  # half the text lands, then the disk is full
    with pytest.raises(OSError, match="No space left"):
        run._write_run_record(settings, {"lr": 1e-3, "seed": 123})
    monkeypatch.undo()
    assert (tmp_path / "run_args.json").read_text(encoding="utf-8") == '{"lr": 0.0005}'
    assert [p.name for p in tmp_path.iterdir()] == ["run_args.json"]  # no run_args.json.partial


def test_pretrain_leaves_a_process_group_it_did_not_start(text_file, tmp_path):
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # the caller's group
    try:
        status, _, err = run_main(smoke_args(text_file, tmp_path, "--stop-at-step", "1"))
        assert status == 0, err
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_device_option_wins_over_llms_device(text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMS_DEVICE", "cuda")  # absent here; where a GPU exists, --device cpu must still win
    status, stdout, err = run_main(smoke_args(text_file, tmp_path, "--device", "cpu", "--stop-at-step", "1"))
    assert status == 0, err
    assert "device cpu, world size 1" in stdout


def test_a_bad_device_exits_with_status_2_and_says_why(text_file, tmp_path):
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--device", "tpu", "--stop-at-step", "1"))
    assert status == 2
    assert "--device tpu: device 'tpu' is not a device name: use cpu, cuda, cuda:N or mps" in err
    assert "Traceback" not in err


def test_device_option_reaches_the_process_setup_under_torchrun(monkeypatch):
    """Under torchrun --device goes to ddp_train.setup (which gives rank r cuda:LOCAL_RANK), not via $LLMS_DEVICE."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    asked = []

    def fake_setup(device_type=None):
        asked.append((device_type, os.environ["LLMS_DEVICE"]))
        return 1, 2, torch.device("cpu")

    monkeypatch.setattr(run, "ddp_setup", fake_setup)
    assert run._setup("cuda:0") == (1, 2, torch.device("cpu"))
    assert run._setup(None) == (1, 2, torch.device("cpu"))
    assert asked == [("cuda:0", "cpu"), (None, "cpu")]  # the environment is left alone


# --- bad input: a clear message and a non-zero exit, no traceback ---------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--text", "no/such/file.txt"], "--text no/such/file.txt: no such file"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
    (["--lr", "1e-4", "--min-lr", "1e-3"], "0 <= --min-lr <= --lr"),
    (["--model", "gpt2", "--init-from", "gpt2"], "exclude each other"),
    (["--model", "gpt5"], "invalid choice: 'gpt5'"),
])
def test_bad_options_exit_with_status_2_and_say_why(argv, message, tmp_path):
    status, _, err = run_main([*argv, "--out", str(tmp_path)])
    assert status == 2
    assert message in err and "Traceback" not in err


def test_resume_without_a_checkpoint_says_so(tmp_path):
    status, _, err = run_main(["--smoke", "--resume", "--out", str(tmp_path)])
    assert status == 2
    assert f"no checkpoint at {tmp_path / 'train_state.pt'}" in err


def test_text_too_short_for_one_batch(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Every effort moves you. " * 10, encoding="utf-8")  # ~50 tokens, one window of 32 at most
    status, _, err = run_main(smoke_args(short, tmp_path / "out"))
    assert status == 2
    assert "too short for one batch of --batch-size 4 windows of --context-length 32" in err
    assert not (tmp_path / "out" / "train_state.pt").exists()


def test_validation_part_too_short(text_file, tmp_path):
    status, _, err = run_main(smoke_args(text_file, tmp_path, "--val-fraction", "0.005"))
    assert status == 2
    assert "validation part" in err and "--val-fraction 0" in err


def test_empty_text_and_context_beyond_the_init_model(smoke_run, text_file, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    status, _, err = run_main(smoke_args(empty, tmp_path / "a"))
    assert status == 2 and "is empty" in err
    out, _ = smoke_run
    status, _, err = run_main(smoke_args(text_file, tmp_path / "b", "--init-from", str(out), "--context-length", "64"))
    assert status == 2 and "exceeds the 32 positions" in err


# --- as a program: python -m, and torchrun with two gloo processes ------------------------------------


# Run in each process instead of `-m ch05_pretraining`: main() as it is, with the model's initial weights (a hash)
# and its first training-time dropout mask saved to PROBE_DIR/rank{RANK}.pt.
RANK_PROBE = """
import hashlib, os, sys, torch
import ch05_pretraining.cli as cli
import ch05_pretraining.pretrain_run as run
probe_dir, argv, probe, build = sys.argv[1], sys.argv[2:], {}, run._build_model

def probed_build(args):
    model = build(args)
    weights = b"".join(t.detach().cpu().numpy().tobytes() for t in model.state_dict().values())
    probe["initial_weights"] = hashlib.sha256(weights).hexdigest()
    dropout = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0)

    def first_mask(module, inputs, output):
        if module.training and "dropout_mask" not in probe:
            probe["dropout_mask"] = (output == 0) & (inputs[0] != 0)

    dropout.register_forward_hook(first_mask)
    return model

run._build_model = probed_build
status = cli.main(argv)
torch.save(probe, os.path.join(probe_dir, "rank" + os.environ["RANK"] + ".pt"))
cli.exit_process(status)
"""
ENV = {"OMP_NUM_THREADS": "1", "LLMS_DEVICE": "cpu"}


def run_program(args: list[str], torchrun: bool = False, probe_dir: Path | None = None) -> subprocess.CompletedProcess:
    """python -m ch05_pretraining ARGS, or under torchrun with two processes (with probe_dir: via RANK_PROBE)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else [sys.executable]
    program = ["-m", "ch05_pretraining"]
    if probe_dir is not None:
        launcher, program = launcher + ["--no-python", sys.executable], ["-c", RANK_PROBE, str(probe_dir)]
    result = subprocess.run(launcher + program + args, env={**os.environ, **ENV}, cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def run_two_ranks(code: str, args: list[str], timeout: float = 90) -> list[tuple[int, str, str]]:
    """Two processes started as torchrun starts them (RANK, WORLD_SIZE, ...), but without its agent, which would
    kill the second when the first fails: [(exit status, stdout, stderr)] per rank; fails if one hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, **ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline, results = time.monotonic() + timeout, []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        outputs = [proc.communicate() for proc in procs]
        pytest.fail(f"still running after {timeout} s (waiting in a collective?): {outputs}")
    return results


def steps_per_epoch(stdout: str) -> tuple[int, int]:
    """(training windows, steps per epoch and process) from the run's summary line."""
    match = re.search(r"(\d+) training windows .* (\d+) steps per epoch", stdout)
    assert match, stdout
    return int(match[1]), int(match[2])


def test_python_dash_m_smoke_run(text_file, tmp_path):
    result = run_program(["--smoke", "--text", str(text_file), "--out", str(tmp_path / "run")])
    assert "saved the model to" in result.stdout
    if sys.platform.startswith("linux"):  # the fast path keeps freed memory for reuse (glibc), in its own process
        assert "reuse_freed_memory True," in result.stdout
    windows, steps = steps_per_epoch(result.stdout)
    assert steps == windows // SMOKE_DEFAULTS["batch_size"]
    assert load_gpt2(tmp_path / "run").cfg.n_layers == 2


@pytest.fixture(scope="module")
def ddp_run(text_file, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A 2-process smoke run under torchrun to step 4: (--out, probe folder, the finished process)."""
    out, probes = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("probes")
    result = run_program(smoke_args(text_file, out), torchrun=True, probe_dir=probes)
    return out, probes, result


def test_torchrun_two_gloo_processes(ddp_run):
    out, _, result = ddp_run
    assert result.stdout.count("world size 2, backend gloo") == 1  # only rank 0 prints
    assert result.stdout.count("saved the model to") == 1
    windows, steps = steps_per_epoch(result.stdout)
    assert steps == math.ceil(windows / 2) // SMOKE_DEFAULTS["batch_size"]  # each process trains on half
    assert state_step(out) == SMOKE_DEFAULTS["stop_at_step"]
    assert json.loads((out / "run_args.json").read_text())["world_size"] == 2
    model = load_gpt2(out)
    assert model.cfg.context_length == SMOKE_DEFAULTS["context_length"]


def test_torchrun_ranks_start_from_the_same_weights_but_draw_their_own_dropout_masks(ddp_run):
    _, probes, _ = ddp_run
    rank0, rank1 = (torch.load(probes / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert rank0["initial_weights"] == rank1["initial_weights"]
    mask0, mask1 = rank0["dropout_mask"], rank1["dropout_mask"]
    assert mask0.shape == mask1.shape and 0 < mask0.float().mean() < 0.5
    assert not torch.equal(mask0, mask1)  # the same masks on every rank would be one mask on a bigger batch


def test_torchrun_resume_continues_to_the_same_weights_as_an_uninterrupted_run(ddp_run, text_file, tmp_path):
    full, _, _ = ddp_run  # stopped at step 4 (--smoke)
    run_program(smoke_args(text_file, tmp_path, "--stop-at-step", "2"), torchrun=True)
    assert state_step(tmp_path) == 2
    result = run_program(smoke_args(text_file, tmp_path, "--resume"), torchrun=True)
    assert "resuming from" in result.stdout
    assert state_step(tmp_path) == 4
    uninterrupted, resumed = load_file(full / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], resumed[name]), name


FAIL_ON_RANK0 = """
import sys
import ch05_pretraining.cli as cli
import ch05_pretraining.pretrain_run as run

def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")

run.download_file = disk_full  # patched on every rank, but only rank 0 downloads the default text
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_failure_on_rank_0_stops_the_other_ranks_too(tmp_path):
    """Not only a DownloadError: any failure while rank 0 fetches the text reaches the ranks waiting for it."""
    (status0, _, err0), (status1, out1, err1) = run_two_ranks(FAIL_ON_RANK0, ["--smoke", "--out", str(tmp_path)])
    assert status0 == 1 and "OSError: [Errno 28] No space left on device" in err0  # with its traceback
    assert status1 == 1, err1
    assert "rank 1 stopped: rank 0 failed (OSError: [Errno 28] No space left on device)" in err1
    assert "Traceback" not in err1
