"""Train the appendix MLP on the two-moons data with DistributedDataParallel (DDP).

One process per device; the same file runs unchanged in every setting (from the repository root):

    torchrun --standalone --nproc_per_node=2 appendix_pytorch/ddp_train.py --epochs 20    # CPU, gloo
    torchrun --standalone --nproc_per_node=gpu appendix_pytorch/ddp_train.py --epochs 20  # GPUs, NCCL
    python appendix_pytorch/ddp_train.py --epochs 20                                      # one process

The backend follows the hardware: NCCL on CUDA GPUs (process r uses cuda:LOCAL_RANK), gloo on the
CPU. LLMS_DEVICE=cpu forces the CPU even where GPUs exist (DDP has no MPS backend: Macs use the CPU);
setup(device_type) and pick_device(requested) take a device that wins over LLMS_DEVICE.
Without torchrun the script forms a process group of one, so the code path is the same.
With --out DIR, rank r writes its final weights to DIR/rank{r}.pt and its history to DIR/rank{r}.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

try:
    from appendix_pytorch.pytorch_basics import MLP, ToyDataset, accuracy, get_device, make_toy_data, train_epoch
except ModuleNotFoundError:  # a checkout without `pip install -e .`: import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from appendix_pytorch.pytorch_basics import MLP, ToyDataset, accuracy, get_device, make_toy_data, train_epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes must be positive."""
    parser = argparse.ArgumentParser(description="Train the appendix MLP on two half-moons with DDP.")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training set (default 20)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="examples per step and process; the effective batch is this times the world size")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--n-train", type=int, default=1000, help="training examples (default 1000)")
    parser.add_argument("--n-test", type=int, default=500, help="test examples (default 500)")
    parser.add_argument("--hidden", type=int, default=32, help="width of the MLP's hidden layers")
    parser.add_argument("--seed", type=int, default=123, help="seed for data, weights and shuffling (same on every rank)")
    parser.add_argument("--out", type=Path, default=None, help="directory for rank{r}.pt and rank{r}.json")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "n_train", "n_test", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    return args


class DeviceError(ValueError):
    """The requested device is not a device name, or this machine has none such; the message says what to use."""


def _requested_device(name: str, check_index: bool) -> torch.device:
    """The device `name` asks for (cpu, cuda, cuda:N or mps), checked against this machine; $LLMS_DEVICE plays no part."""
    device_type, _, index = name.strip().lower().partition(":")
    if device_type not in ("cpu", "cuda", "mps") or (index and (device_type != "cuda" or not index.isdigit())):
        raise DeviceError(f"device {name!r} is not a device name: use cpu, cuda, cuda:N or mps")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if not available[device_type]:
        usable = ", ".join(t for t, ok in available.items() if ok)
        raise DeviceError(f"device {name!r}: this machine or PyTorch build has no {device_type} device; "
                          f"use one it has: {usable}")
    if check_index and index and int(index) >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(device_type if not index else f"cuda:{int(index)}")


def pick_device(requested: str | None = None, local_rank: int | None = None) -> torch.device:
    """This process's device: `requested` (it wins over $LLMS_DEVICE) or get_device()'s; under DDP cuda:LOCAL_RANK or CPU."""
    if requested is not None:
        device = _requested_device(requested, check_index=local_rank is None)
    else:
        try:
            device = get_device()  # $LLMS_DEVICE, else cuda, mps, cpu
        except (ValueError, RuntimeError) as err:
            raise DeviceError(str(err)) from err
    if local_rank is None:  # one process: the device as asked
        return device
    if device.type != "cuda":  # DDP has no MPS backend: gloo on the CPU
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():  # one GPU per process, whatever index was asked for
        raise DeviceError(
            f"process with LOCAL_RANK={local_rank} has no GPU: this machine has {torch.cuda.device_count()}. Start at "
            "most one process per GPU (--nproc_per_node=gpu), or train on the CPU (ask for device cpu, or set "
            "LLMS_DEVICE=cpu where no device is passed)."
        )
    return torch.device("cuda", local_rank)


def setup(device_type: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group on this process's device (see pick_device); returns (rank, world_size, device)."""
    launched = "RANK" in os.environ  # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_type, local_rank)  # before joining: a bad device fails alone, not in a collective
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if launched:
        dist.init_process_group(backend)  # reads the rendezvous address from torchrun's variables
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)  # a group of one
    return rank, world_size, device


def main(argv: list[str] | None = None) -> None:
    """Train with DDP; rank 0 prints the loss per epoch, each rank saves its results if --out is given."""
    args = parse_args(argv)
    try:
        rank, world_size, device = setup()
    except DeviceError as err:
        raise SystemExit(f"ddp_train.py: error: {err}") from None
    try:
        torch.manual_seed(args.seed)  # identical on every rank: same data, same initial weights
        features, labels = make_toy_data(args.n_train + args.n_test, seed=args.seed)
        train_set = ToyDataset(features[: args.n_train], labels[: args.n_train])
        test_set = ToyDataset(features[args.n_train:], labels[args.n_train:])

        # Each rank gets a disjoint shard (every world_size-th index of one shared shuffle).
        sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
        full_train_loader = DataLoader(train_set, batch_size=256)
        test_loader = DataLoader(test_set, batch_size=256)

        model = MLP(2, args.hidden, 2).to(device)
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)  # broadcasts rank 0's weights
        optimizer = torch.optim.Adam(ddp_model.parameters(), lr=args.lr)

        if rank == 0:
            print(f"world size {world_size}, backend {dist.get_backend()}, device {device.type}, "
                  f"{len(sampler)} examples per rank per epoch in batches of {args.batch_size}", flush=True)
        history, local_history = [], []
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same one on every rank
            local_loss = train_epoch(ddp_model, train_loader, optimizer, device)  # gradients all-reduced in backward()
            mean_loss = torch.tensor([local_loss], dtype=torch.float64, device=device)
            dist.all_reduce(mean_loss, op=dist.ReduceOp.SUM)  # shards have equal size: average the means
            history.append(mean_loss.item() / world_size)
            local_history.append(local_loss)
            if rank == 0:
                print(f"epoch {epoch + 1:>3}/{args.epochs}  loss {history[-1]:.4f}", flush=True)

        # Every rank holds the same weights now, so each can evaluate the full sets on its own.
        train_acc = accuracy(model, full_train_loader, device)
        test_acc = accuracy(model, test_loader, device)
        if rank == 0:
            print(f"accuracy: train {train_acc:.3f}, test {test_acc:.3f}", flush=True)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, args.out / f"rank{rank}.pt")
            log = {
                "rank": rank, "world_size": world_size, "backend": dist.get_backend(), "device": str(device),
                "n_train": args.n_train, "shard_size": len(sampler), "loss": history, "local_loss": local_history,
                "train_accuracy": train_acc, "test_accuracy": test_acc,
            }
            (args.out / f"rank{rank}.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
