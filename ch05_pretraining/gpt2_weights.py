"""OpenAI's GPT-2 weights in the course GPTModel: load them from the Hugging Face Hub, save models the same way.

Hand-written infrastructure (not generated from a notebook). The checkpoints are the safetensors files
of `openai-community/gpt2` (-medium, -large, -xl) on the Hugging Face Hub, fetched with `huggingface_hub`
(which caches them, and honours `HF_ENDPOINT` mirrors and `HF_HUB_OFFLINE`). No TensorFlow is needed.

How the Hugging Face GPT-2 names map onto GPTModel (per block i; `d` = emb_dim):

    wte.weight (vocab, d)            -> tok_emb.weight
    wpe.weight (context, d)          -> pos_emb.weight
    h.i.ln_1.weight / .bias          -> trf_blocks.i.norm1.scale / .shift
    h.i.attn.c_attn.weight (d, 3d)   -> att.W_query, W_key, W_value .weight, each (d, d), transposed
    h.i.attn.c_attn.bias (3d,)       -> att.W_query, W_key, W_value .bias
    h.i.attn.c_proj.weight (d, d)    -> att.out_proj.weight, transposed
    h.i.ln_2.weight / .bias          -> trf_blocks.i.norm2.scale / .shift
    h.i.mlp.c_fc.weight (d, 4d)      -> ff.layers.0.weight, transposed
    h.i.mlp.c_proj.weight (4d, d)    -> ff.layers.2.weight, transposed
    ln_f.weight / .bias              -> final_norm.scale / .shift
    lm_head.weight (vocab, d)        -> out_head.weight (absent when tied to wte, as in OpenAI's files)

Hugging Face's GPT-2 uses `Conv1D` layers, which store weights as (in, out); `nn.Linear` stores
(out, in), hence the transposes. Saved names may carry a `transformer.` prefix (transformers 5 writes
it; the files on the Hub do not) and old files hold the causal masks `h.i.attn.bias` / `masked_bias`,
which are buffers, not weights.

`load_gpt2` holds one copy of the weights, never two: it builds GPTModel on the "meta" device (shapes, no
memory, no random initialisation), reads the file one tensor at a time, transposes and converts each into
memory of its own, makes those tensors the parameters (`load_state_dict(..., assign=True)`), then rebuilds
the causal masks, which are buffers no checkpoint holds. `benchmarks/load_memory.py` measures the saving.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ch03_attention import CausalAttention, MultiHeadAttention, causal_mask
from ch04_gpt_model import GPT_CONFIGS, GPTConfig, GPTModel, tie_weights

__all__ = [
    "GPT2_REPOS",
    "GPT2_ALIASES",
    "WeightsUnavailableError",
    "gpt2_config",
    "download_gpt2",
    "read_safetensors",
    "config_from_hf",
    "hf_to_course_state_dict",
    "course_to_hf_state_dict",
    "load_hf_weights",
    "load_gpt2",
    "save_hf_checkpoint",
    "END_OF_TEXT_ID",
]

GPT2_REPOS: dict[str, str] = {  # model name -> Hugging Face Hub repository
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
GPT2_ALIASES: dict[str, str] = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"  # sharded checkpoints (save_pretrained splits large models)
END_OF_TEXT_ID = 50256  # GPT-2's <|endoftext|>, also its bos/eos token
_HF_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal masks in old checkpoints, not weights
_HF_BLOCK = re.compile(r"h\.(\d+)\.(.+)")  # "h.3.mlp.c_fc.weight" -> block 3, "mlp.c_fc.weight"


# Hugging Face name -> GPTModel name, for the tensors outside the blocks (lm_head is handled apart)
_TOP_NAMES = [
    ("wte.weight", "tok_emb.weight"),
    ("wpe.weight", "pos_emb.weight"),
    ("ln_f.weight", "final_norm.scale"),
    ("ln_f.bias", "final_norm.shift"),
]
# Inside block i: name after "h.i.", name after "trf_blocks.i.", transpose? (Conv1D (in, out) <-> Linear (out, in));
# attn.c_attn (queries, keys and values in one matrix) is split into, and joined from, the three _QKV layers.
_BLOCK_NAMES = [
    ("ln_1.weight", "norm1.scale", False),
    ("ln_1.bias", "norm1.shift", False),
    ("attn.c_proj.weight", "att.out_proj.weight", True),
    ("attn.c_proj.bias", "att.out_proj.bias", False),
    ("ln_2.weight", "norm2.scale", False),
    ("ln_2.bias", "norm2.shift", False),
    ("mlp.c_fc.weight", "ff.layers.0.weight", True),
    ("mlp.c_fc.bias", "ff.layers.0.bias", False),
    ("mlp.c_proj.weight", "ff.layers.2.weight", True),
    ("mlp.c_proj.bias", "ff.layers.2.bias", False),
]
_QKV = ("W_query", "W_key", "W_value")  # in c_attn's order
_TOP = dict(_TOP_NAMES) | {"lm_head.weight": "out_head.weight"}
_BLOCK = {hf_name: (name, transpose) for hf_name, name, transpose in _BLOCK_NAMES}


class WeightsUnavailableError(RuntimeError):
    """GPT-2 weights could not be downloaded or found in the cache; the message says how to get them."""


def _resolve_name(name: str) -> str:
    """'gpt2' or its alias '124M' -> 'gpt2'; anything else is a ValueError listing the valid names."""
    resolved = GPT2_ALIASES.get(name, name)
    if resolved not in GPT2_REPOS:
        aliases = ", ".join(f"{alias!r} ({model})" for alias, model in GPT2_ALIASES.items())
        raise ValueError(
            f"unknown GPT-2 model {name!r}: use one of {', '.join(map(repr, GPT2_REPOS))} or an alias {aliases}"
        )
    return resolved


def gpt2_config(name: str) -> GPTConfig:
    """The GPTConfig of an OpenAI GPT-2 size ('gpt2' ... 'gpt2-xl', or '124M' ... '1558M'); a fresh copy."""
    return dataclasses.replace(GPT_CONFIGS[_resolve_name(name)])


def _unavailable_message(repo: str, filename: str, err: Exception) -> str:
    steps = []
    if hf_constants.HF_HUB_OFFLINE:
        steps.append("HF_HUB_OFFLINE is set, so nothing is downloaded: unset it (then restart Python/the kernel)")
    steps += [
        "if huggingface.co is blocked or slow, set HF_ENDPOINT to a mirror before starting Python, "
        "e.g. HF_ENDPOINT=https://hf-mirror.com",
        f"or download {CONFIG_NAME} and {WEIGHTS_NAME} by hand from https://huggingface.co/{repo}/tree/main "
        "into one folder and pass that folder: load_gpt2('path/to/folder')",
    ]
    return (
        f"could not get {filename} of {repo} from {hf_constants.ENDPOINT} or the local cache "
        f"({type(err).__name__}: {err}).\nTo get the GPT-2 weights:\n" + "\n".join(f"  * {s}" for s in steps)
    )


def download_gpt2(name: str = "gpt2", cache_dir: str | Path | None = None) -> Path:
    """Fetch config.json and model.safetensors of a GPT-2 size from the Hub (or its cache); return their folder."""
    repo = GPT2_REPOS[_resolve_name(name)]
    paths = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:  # huggingface_hub skips files it has cached, resumes partial downloads and shows a progress bar
            paths.append(Path(hf_hub_download(repo, filename, cache_dir=cache_dir)))
        except Exception as err:  # offline mode, DNS, SSL, HTTP, disk full: all mean "no weights", say how to fix
            raise WeightsUnavailableError(_unavailable_message(repo, filename, err)) from err
    return paths[1].parent  # both files lie in the same snapshot folder of the cache


def read_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file by name; a clear error for a missing, truncated or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    try:
        return load_file(path, device=str(device))
    except SafetensorError as err:
        raise _invalid_file_error(path, err) from err


def _invalid_file_error(path: Path, err: Exception) -> ValueError:
    """The ValueError for a file safetensors cannot read: a Git LFS pointer, or a corrupt or truncated file."""
    with open(path, "rb") as f:
        lfs = f.read(64).startswith(b"version https://git-lfs")
    hint = (
        "it is a Git LFS pointer, not the weights: download the file itself (or run `git lfs pull`)"
        if lfs
        else "it is corrupt or truncated (an interrupted download?): delete it and download it again"
    )
    return ValueError(f"{path} is not a valid safetensors file ({err}); {hint}")


def config_from_hf(hf_config: dict) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 config.json (as a dict); ValueError for options GPTModel lacks."""
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"expected a GPT-2 config (model_type 'gpt2'), got model_type {hf_config['model_type']!r}")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer") if k not in hf_config]
    if missing:
        raise ValueError(f"the GPT-2 config lacks {missing}; is this a Hugging Face GPT-2 config.json?")
    d = hf_config["n_embd"]
    checks = [  # option, its default, the values GPTModel computes
        ("activation_function", "gelu_new", ("gelu_new", "gelu_pytorch_tanh")),  # tanh-approximate GELU
        ("n_inner", None, (None, 4 * d)),  # feed-forward width 4 * emb_dim
        ("scale_attn_weights", True, (True,)),
        ("scale_attn_by_inverse_layer_idx", False, (False,)),
    ]
    for key, default, allowed in checks:
        if hf_config.get(key, default) not in allowed:
            raise ValueError(f"GPTModel supports {key} in {list(allowed)}, but the config has {hf_config[key]!r}")
    eps = hf_config.get("layer_norm_epsilon", 1e-5)
    if not math.isclose(eps, 1e-5):
        raise ValueError(f"GPTModel's LayerNorm uses eps=1e-5, but the config has layer_norm_epsilon={eps}")
    return GPTConfig(
        vocab_size=hf_config["vocab_size"],
        context_length=hf_config["n_positions"],
        emb_dim=d,
        n_heads=hf_config["n_head"],
        n_layers=hf_config["n_layer"],
        drop_rate=hf_config.get("resid_pdrop") or 0.0,
        qkv_bias=True,  # GPT-2 has biases on queries, keys and values
    )


def _hf_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor a GPT-2 checkpoint for cfg holds (without prefix and lm_head)."""
    d = cfg.emb_dim
    shapes = {"wte.weight": (cfg.vocab_size, d), "wpe.weight": (cfg.context_length, d)}
    for i in range(cfg.n_layers):
        h = f"h.{i}."
        shapes |= {
            h + "ln_1.weight": (d,), h + "ln_1.bias": (d,),
            h + "attn.c_attn.weight": (d, 3 * d), h + "attn.c_attn.bias": (3 * d,),
            h + "attn.c_proj.weight": (d, d), h + "attn.c_proj.bias": (d,),
            h + "ln_2.weight": (d,), h + "ln_2.bias": (d,),
            h + "mlp.c_fc.weight": (d, 4 * d), h + "mlp.c_fc.bias": (4 * d,),
            h + "mlp.c_proj.weight": (4 * d, d), h + "mlp.c_proj.bias": (d,),
        }  # fmt: skip
    return shapes | {"ln_f.weight": (d,), "ln_f.bias": (d,)}


def _head_is_tied(hf: dict[str, torch.Tensor]) -> bool:
    """True if the checkpoint has no lm_head.weight (GPT-2's files) or one sharing wte's memory (a live model)."""
    head, wte = hf.get("lm_head.weight"), hf["wte.weight"]
    return head is None or (head.data_ptr() == wte.data_ptr() and head.shape == wte.shape)


def _hf_name(name: str) -> str | None:
    """A checkpoint tensor's name without the "transformer." prefix; None for the causal-mask buffers."""
    name = name.removeprefix("transformer.")
    return None if _HF_BUFFER.fullmatch(name) else name


def _check_hf_shapes(shapes: dict[str, tuple[int, ...]], cfg: GPTConfig) -> None:
    """Raise a ValueError naming the first wrong, missing or unexpected tensor of a checkpoint for cfg."""
    expected = _hf_shapes(cfg)
    if "lm_head.weight" in shapes:
        expected["lm_head.weight"] = (cfg.vocab_size, cfg.emb_dim)
    for name, shape in expected.items():
        if name in shapes and tuple(shapes[name]) != shape:
            raise ValueError(
                f"checkpoint tensor {name} has shape {tuple(shapes[name])}, but the config needs {shape}: "
                "the checkpoint is for a different model size; build the config from its config.json "
                "(config_from_hf, or load_gpt2 on the folder)"
            )
    missing = [name for name in expected if name not in shapes]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensor(s) the config needs, first {missing[:3]}")
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        raise ValueError(
            f"checkpoint has {len(unexpected)} tensor(s) the config has no place for, first {unexpected[:3]}: "
            "is it a different model size (more layers)?"
        )


def _course_tensors(name: str, tensor: torch.Tensor, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """GPTModel name(s) and tensor(s), views of tensor, for one checked tensor of a Hugging Face checkpoint."""
    if name in _TOP:
        return {_TOP[name]: tensor}
    i, rest = _HF_BLOCK.fullmatch(name).groups()
    b, d = f"trf_blocks.{i}.", cfg.emb_dim
    if rest == "attn.c_attn.weight":
        qkv = tensor.t().split(d, dim=0)  # (d, 3d) -> (3d, d) -> three (d, d)
        return {f"{b}att.{w}.weight": t for w, t in zip(_QKV, qkv)}
    if rest == "attn.c_attn.bias":  # (3d,)
        if cfg.qkv_bias:
            return {f"{b}att.{w}.bias": t for w, t in zip(_QKV, tensor.split(d))}  # three (d,)
        if tensor.any():
            raise ValueError(
                f"checkpoint tensor {name} is not zero but the config has qkv_bias=False: "
                "use qkv_bias=True, as GPT_CONFIGS and config_from_hf do"
            )
        return {}
    course_name, transpose = _BLOCK[rest]
    return {b + course_name: tensor.t() if transpose else tensor}


def hf_to_course_state_dict(hf_state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Rename and reshape a Hugging Face GPT-2 state dict into GPTModel's (tensors may be views of hf_state)."""
    hf = {hf_name: tensor for name, tensor in hf_state.items() if (hf_name := _hf_name(name)) is not None}
    _check_hf_shapes({name: tuple(tensor.shape) for name, tensor in hf.items()}, cfg)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in hf.items():
        state |= _course_tensors(name, tensor, cfg)
    if _head_is_tied(hf):
        state["out_head.weight"] = state["tok_emb.weight"]  # tied: one tensor
    return state


def load_hf_weights(model: GPTModel, hf_state: dict[str, torch.Tensor]) -> GPTModel:
    """Copy a Hugging Face GPT-2 state dict into model (strictly: every weight set); ties the head if it is tied."""
    state = hf_to_course_state_dict(hf_state, model.cfg)
    if state["out_head.weight"] is state["tok_emb.weight"]:  # no lm_head in the file: GPT-2 shares the matrix
        tie_weights(model)
    elif model.out_head.weight is model.tok_emb.weight:  # a tied model, an untied file: give the head its own
        model.out_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())
    model.load_state_dict(state, strict=True)
    return model


def _checkpoint_files(folder: Path) -> tuple[dict, list[Path]]:
    """(config.json as a dict, the safetensors file(s)) of a Hugging Face checkpoint folder, sharded or not."""
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: a GPT-2 checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
            "(from https://huggingface.co/openai-community/gpt2/tree/main, or written by save_hf_checkpoint)"
        )
    hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    index = folder / INDEX_NAME
    if not (folder / WEIGHTS_NAME).exists() and index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [folder / shard for shard in shards]
    else:
        files = [folder / WEIGHTS_NAME]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"no safetensors file at {path}")
    return hf_config, files


def _open_safetensors(path: Path, stack: contextlib.ExitStack) -> safe_open:
    """Open a file to read one tensor at a time, each into memory of its own; closed with stack; clear errors."""
    try:  # pread: no memory-mapped copy of the file stays resident beside the tensors read from it
        handle = safe_open(path, framework="pt", backend="pread")
    except Exception:  # an older safetensors without backend=, or no pread here: memory-mapped reads
        try:  # (a corrupt file fails again here, with the error that names it)
            handle = safe_open(path, framework="pt")
        except SafetensorError as err:
            raise _invalid_file_error(path, err) from err
    return stack.enter_context(handle)


def _own_memory(tensor: torch.Tensor) -> torch.Tensor:
    """tensor itself if it fills its memory contiguously, else a compact copy (not a view that pins a bigger one)."""
    if tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.nbytes:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _read_course_state(
    files: list[Path], cfg: GPTConfig, device: str | torch.device | None, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """GPTModel's state dict from checkpoint files, read tensor by tensor: never a second copy of the weights."""
    dtype = dtype if dtype is not None else torch.get_default_dtype()  # as GPTModel(cfg) has: a bf16 file -> fp32
    with contextlib.ExitStack() as stack:
        where = {}  # Hugging Face name -> (file, its open handle, the name in the file)
        for path in files:
            f = _open_safetensors(path, stack)
            where |= {hf_name: (path, f, key) for key in f.keys() if (hf_name := _hf_name(key)) is not None}
        _check_hf_shapes({name: tuple(f.get_slice(key).get_shape()) for name, (_, f, key) in where.items()}, cfg)
        state = {}
        for name, (path, f, key) in where.items():
            try:
                tensor = f.get_tensor(key)
            except (SafetensorError, OSError) as err:
                raise _invalid_file_error(path, err) from err
            tensor = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
            state |= {k: _own_memory(t) for k, t in _course_tensors(name, tensor, cfg).items()}
            del tensor  # the views of a transposed tensor were copied: its memory is free again
    if "lm_head.weight" not in where:  # GPT-2's files: the head is the token embedding
        state["out_head.weight"] = state["tok_emb.weight"]
    return state


def _materialise_buffers(model: GPTModel, device: torch.device) -> None:
    """Rebuild the causal masks (non-persistent buffers, not in any checkpoint) of a model built on "meta"."""
    for module in model.modules():
        if isinstance(module, (MultiHeadAttention, CausalAttention)) and module.mask.is_meta:
            module.register_buffer("mask", causal_mask(module.context_length).to(device), persistent=False)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"load_gpt2 left {left[:3]} on the meta device: teach _materialise_buffers to build them")


def load_gpt2(
    name_or_dir: str | Path = "gpt2", device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> GPTModel:
    """GPTModel with GPT-2 weights, from a size name (via the Hub) or a checkpoint folder; in eval mode."""
    # A known name wins over a folder of the same name: pass Path("gpt2") or "./gpt2" for the folder.
    if isinstance(name_or_dir, str) and (name_or_dir in GPT2_REPOS or name_or_dir in GPT2_ALIASES):
        folder = download_gpt2(name_or_dir)
    elif Path(name_or_dir).is_dir():
        folder = Path(name_or_dir)
    else:
        names = ", ".join(map(repr, [*GPT2_REPOS, *GPT2_ALIASES]))
        raise ValueError(
            f"{str(name_or_dir)!r} is neither a GPT-2 size ({names}) nor a folder holding {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}"
        )
    hf_config, files = _checkpoint_files(folder)
    cfg = config_from_hf(hf_config)
    with torch.device("meta"):  # no memory: the file's tensors become the parameters, no random init to overwrite
        model = GPTModel(cfg)
    state = _read_course_state(files, cfg, device, dtype)
    model.load_state_dict(state, strict=True, assign=True)
    if state["out_head.weight"] is state["tok_emb.weight"]:
        tie_weights(model)  # assign gave each name its own Parameter: share one again
    _materialise_buffers(model, model.tok_emb.weight.device)
    return model.eval()


def course_to_hf_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """GPTModel weights under Hugging Face GPT-2 names, in Conv1D layout, contiguous, on the CPU."""
    cfg, d = model.cfg, model.cfg.emb_dim
    state = model.state_dict()  # detached tensors, course names
    hf = {hf_name: state[name] for hf_name, name in _TOP_NAMES}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        qkv = [state[f"{b}att.{w}.weight"] for w in _QKV]  # three (d, d), (out, in)
        hf[h + "attn.c_attn.weight"] = torch.cat(qkv).t()  # (d, 3d), (in, out)
        if cfg.qkv_bias:
            hf[h + "attn.c_attn.bias"] = torch.cat([state[f"{b}att.{w}.bias"] for w in _QKV])  # (3d,)
        else:  # GPT-2 always has these biases; zeros compute the same as none
            hf[h + "attn.c_attn.bias"] = qkv[0].new_zeros(3 * d)
        for hf_name, name, transpose in _BLOCK_NAMES:
            hf[h + hf_name] = state[b + name].t() if transpose else state[b + name]
    hf = {"transformer." + k: v for k, v in hf.items()}  # the names GPT2LMHeadModel.save_pretrained writes
    if model.out_head.weight is not model.tok_emb.weight:  # safetensors refuses shared tensors: tied -> omit
        hf["lm_head.weight"] = state["out_head.weight"]
    return {k: v.cpu().contiguous() for k, v in hf.items()}


def _check_lm_head(model: GPTModel) -> None:
    """Raise a ValueError unless model.out_head is a language-model head GPT2LMHeadModel's lm_head can hold."""
    cfg, head = model.cfg, model.out_head
    if (
        isinstance(head, nn.Linear)
        and (head.in_features, head.out_features) == (cfg.emb_dim, cfg.vocab_size)
        and head.bias is None
    ):
        return
    raise ValueError(
        f"save_hf_checkpoint writes GPT-2 language models, whose out_head is nn.Linear({cfg.emb_dim}, "
        f"{cfg.vocab_size}, bias=False) (emb_dim -> vocab_size), but this model's out_head is {head!r}: "
        "a classifier head is not an lm_head; save such a model with torch.save(model.state_dict(), path) "
        "instead, or put a language-model head back first"
    )


def save_hf_checkpoint(model: GPTModel, out_dir: str | Path) -> Path:
    """Write model as a Hugging Face GPT-2 checkpoint (config.json + model.safetensors); returns out_dir."""
    _check_lm_head(model)  # before anything is written
    cfg, out_dir = model.cfg, Path(out_dir)
    tied = model.out_head.weight is model.tok_emb.weight
    eot = END_OF_TEXT_ID if cfg.vocab_size > END_OF_TEXT_ID else None  # no <|endoftext|> in a smaller vocabulary
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",  # the tanh approximation, as ch04's GELU
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": tied,
        "dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }
    hf_state = course_to_hf_state_dict(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_tmp, config_tmp = out_dir / f"{WEIGHTS_NAME}.partial", out_dir / f"{CONFIG_NAME}.partial"
    try:  # write both, then rename: never a half-written file under a real name, no leftovers on failure
        save_file(hf_state, str(weights_tmp), metadata={"format": "pt"})  # transformers wants "format"
        config_tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(weights_tmp, out_dir / WEIGHTS_NAME)
        os.replace(config_tmp, out_dir / CONFIG_NAME)
    finally:
        weights_tmp.unlink(missing_ok=True)  # gone already after a successful os.replace
        config_tmp.unlink(missing_ok=True)
    return out_dir
