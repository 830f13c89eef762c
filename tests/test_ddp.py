"""End-to-end tests of appendix_pytorch/ddp_train.py: two gloo processes under torchrun, and one plain process."""
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
