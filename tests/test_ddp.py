"""Tests of appendix_pytorch/ddp_train.py: two gloo processes under torchrun, one plain process, the device choice."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "appendix_pytorch" / "ddp_train.py"
EPOCHS = 8


def run_script(args: list[str], torchrun: bool) -> subprocess.CompletedProcess:
    """Run the script on the CPU (one thread per process); fail with its output if it fails."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMS_DEVICE": "cpu"}
    result = subprocess.run(launcher + [str(SCRIPT)] + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def load_rank(out: Path, rank: int) -> tuple[dict, dict]:
    state = torch.load(out / f"rank{rank}.pt", weights_only=True)
    log = json.loads((out / f"rank{rank}.json").read_text(encoding="utf-8"))
    return state, log


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    result = run_script(["--epochs", str(EPOCHS), "--out", str(out)], torchrun=True)
    return out, result.stdout


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    result = run_script(["--epochs", "4", "--batch-size", "64", "--out", str(out)], torchrun=False)
    return out, result.stdout


def test_both_ranks_end_with_identical_weights(ddp_run):
    out, _ = ddp_run
    (s0, log0), (s1, log1) = load_rank(out, 0), load_rank(out, 1)
    assert (log0["rank"], log1["rank"]) == (0, 1)
    assert log0["world_size"] == log1["world_size"] == 2
    assert log0["backend"] == "gloo"
    assert s0.keys() == s1.keys() and len(s0) == 6
    for name in s0:
        assert torch.equal(s0[name], s1[name]), f"{name} differs between ranks"


def test_ranks_train_on_disjoint_halves(ddp_run):
    out, _ = ddp_run
    (_, log0), (_, log1) = load_rank(out, 0), load_rank(out, 1)
    assert log0["shard_size"] == log1["shard_size"] == log0["n_train"] // 2
    # Different shards give different local losses, while the all-reduced loss is the same on both ranks.
    assert log0["local_loss"] != log1["local_loss"]
    assert log0["loss"] == log1["loss"]
    for g, a, b in zip(log0["loss"], log0["local_loss"], log1["local_loss"]):
        assert g == pytest.approx((a + b) / 2)


def test_ddp_loss_goes_down_and_model_is_accurate(ddp_run):
    out, stdout = ddp_run
    _, log = load_rank(out, 0)
    assert len(log["loss"]) == EPOCHS
    assert log["loss"][-1] < 0.4 * log["loss"][0]
    assert log["test_accuracy"] > 0.93 and log["train_accuracy"] > 0.93


def test_only_rank_0_prints_epoch_losses(ddp_run):
    _, stdout = ddp_run
    lines = [line for line in stdout.splitlines() if line.startswith("epoch")]
    assert len(lines) == EPOCHS  # one line per epoch, not one per rank
    assert "world size 2, backend gloo" in stdout


def test_single_process_without_torchrun(single_run):
    out, stdout = single_run
    state, log = load_rank(out, 0)
    assert not (out / "rank1.pt").exists()
    assert log["world_size"] == 1 and log["shard_size"] == log["n_train"]
    assert log["loss"] == pytest.approx(log["local_loss"], rel=1e-12)  # all-reduce over a group of one
    assert log["loss"][-1] < 0.5 * log["loss"][0]
    assert log["test_accuracy"] > 0.9
    assert "world size 1" in stdout
    from appendix_pytorch import MLP
    MLP(2, 32, 2).load_state_dict(state)  # the saved weights fit the exported model


def _import_script():
    spec = importlib.util.spec_from_file_location("ddp_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only; main() runs under __name__ == "__main__"
    return module


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "-4"], "--batch-size must be >= 1"),
    (["--lr", "0"], "--lr must be > 0"),
])
def test_bad_arguments_are_rejected(argv, message, capsys):
    ddp_train = _import_script()
    with pytest.raises(SystemExit) as exc:
        ddp_train.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_parse():
    args = _import_script().parse_args([])
    assert (args.epochs, args.batch_size, args.lr, args.out) == (20, 32, 0.01, None)


# --- the device choice: no GPU needed (CUDA's presence is monkeypatched) ---------------------------------------------


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend this machine has two CUDA devices and no MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_a_requested_device_wins_over_llms_device(two_gpus, monkeypatch):
    from appendix_pytorch.ddp_train import pick_device
    monkeypatch.setenv("LLMS_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")  # nothing requested: $LLMS_DEVICE
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("CUDA:1") == torch.device("cuda", 1)
    monkeypatch.setenv("LLMS_DEVICE", "cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_each_ddp_process_gets_the_gpu_of_its_local_rank(two_gpus, monkeypatch):
    from appendix_pytorch.ddp_train import pick_device
    monkeypatch.delenv("LLMS_DEVICE", raising=False)
    for requested in (None, "cuda", "cuda:0", "cuda:1"):  # an index is ignored: one GPU per process
        assert [pick_device(requested, rank) for rank in (0, 1)] == [torch.device("cuda", 0), torch.device("cuda", 1)]
    monkeypatch.setenv("LLMS_DEVICE", "cpu")
    assert pick_device(None, 1) == torch.device("cpu")
    assert pick_device("cuda", 1) == torch.device("cuda", 1)  # the request wins over LLMS_DEVICE=cpu here too
    monkeypatch.setenv("LLMS_DEVICE", "cuda")
    assert pick_device("cpu", 1) == torch.device("cpu")


@pytest.mark.parametrize("requested, local_rank, message", [
    ("tpu", None, "device 'tpu' is not a device name: use cpu, cuda, cuda:N or mps"),
    ("cpu:0", None, "is not a device name"),
    ("mps", None, "has no mps device; use one it has: cuda, cpu"),
    ("cuda:2", None, "this machine has 2 CUDA device(s), cuda:0 to cuda:1"),
    ("cuda", 2, "LOCAL_RANK=2 has no GPU: this machine has 2"),
])
def test_a_bad_or_missing_device_says_what_to_use(two_gpus, requested, local_rank, message):
    from appendix_pytorch.ddp_train import DeviceError, pick_device
    with pytest.raises(DeviceError) as exc:
        pick_device(requested, local_rank)
    assert message in str(exc.value)


def test_setup_uses_the_device_it_is_given_over_llms_device(monkeypatch):
    from appendix_pytorch.ddp_train import setup
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMS_DEVICE", "mps")  # absent here (or not usable by DDP): the argument must win
    try:
        assert setup("cpu") == (0, 1, torch.device("cpu"))
        assert torch.distributed.get_backend() == "gloo"
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_the_script_reports_a_bad_llms_device_in_one_line(monkeypatch):
    monkeypatch.setenv("LLMS_DEVICE", "tpu")
    with pytest.raises(SystemExit) as exc:
        _import_script().main(["--epochs", "1"])
    assert "ddp_train.py: error:" in str(exc.value.code) and "'tpu'" in str(exc.value.code)
