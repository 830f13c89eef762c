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
"""
from __future__ import annotations

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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

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
        with open(path, "rb") as f:
            lfs = f.read(64).startswith(b"version https://git-lfs")
        hint = (
            "it is a Git LFS pointer, not the weights: download the file itself (or run `git lfs pull`)"
            if lfs
            else "it is corrupt or truncated (an interrupted download?): delete it and download it again"
        )
        raise ValueError(f"{path} is not a valid safetensors file ({err}); {hint}") from err


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


def hf_to_course_state_dict(hf_state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Rename and reshape a Hugging Face GPT-2 state dict into GPTModel's (tensors may be views of hf_state)."""
    hf = {}
    for name, tensor in hf_state.items():
        name = name.removeprefix("transformer.")
        if not _HF_BUFFER.fullmatch(name):
            hf[name] = tensor
    expected = _hf_shapes(cfg)
    if "lm_head.weight" in hf:
        expected["lm_head.weight"] = (cfg.vocab_size, cfg.emb_dim)
    for name, shape in expected.items():
        if name in hf and tuple(hf[name].shape) != shape:
            raise ValueError(
                f"checkpoint tensor {name} has shape {tuple(hf[name].shape)}, but the config needs {shape}: "
                "the checkpoint is for a different model size; build the config from its config.json "
                "(config_from_hf, or load_gpt2 on the folder)"
            )
    missing = [name for name in expected if name not in hf]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensor(s) the config needs, first {missing[:3]}")
    unexpected = sorted(set(hf) - set(expected))
    if unexpected:
        raise ValueError(
            f"checkpoint has {len(unexpected)} tensor(s) the config has no place for, first {unexpected[:3]}: "
            "is it a different model size (more layers)?"
        )

    d = cfg.emb_dim
    state = {name: hf[hf_name] for hf_name, name in _TOP_NAMES}
    state["out_head.weight"] = hf["wte.weight"] if _head_is_tied(hf) else hf["lm_head.weight"]  # tied: one tensor
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        qkv = hf[h + "attn.c_attn.weight"].t().split(d, dim=0)  # (d, 3d) -> (3d, d) -> three (d, d)
        state |= {f"{b}att.{w}.weight": t for w, t in zip(_QKV, qkv)}
        qkv_bias = hf[h + "attn.c_attn.bias"]  # (3d,)
        if cfg.qkv_bias:
            state |= {f"{b}att.{w}.bias": t for w, t in zip(_QKV, qkv_bias.split(d))}  # three (d,)
        elif qkv_bias.any():
            raise ValueError(
                f"checkpoint tensor {h}attn.c_attn.bias is not zero but the config has qkv_bias=False: "
                "use qkv_bias=True, as GPT_CONFIGS and config_from_hf do"
            )
        for hf_name, name, transpose in _BLOCK_NAMES:
            tensor = hf[h + hf_name]
            state[b + name] = tensor.t() if transpose else tensor
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


def _read_checkpoint(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json as a dict, all tensors) of a Hugging Face checkpoint folder, sharded or not."""
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
        return hf_config, {k: v for shard in shards for k, v in read_safetensors(folder / shard).items()}
    return hf_config, read_safetensors(folder / WEIGHTS_NAME)


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
    hf_config, hf_state = _read_checkpoint(folder)
    model = GPTModel(config_from_hf(hf_config))
    if dtype is not None:
        model.to(dtype)  # before loading, so the float32 file is converted while it is copied in
    load_hf_weights(model, hf_state)
    if device is not None:
        model.to(device)
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


def save_hf_checkpoint(model: GPTModel, out_dir: str | Path) -> Path:
    """Write model as a Hugging Face GPT-2 checkpoint (config.json + model.safetensors); returns out_dir."""
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
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f"{WEIGHTS_NAME}.partial"
    save_file(course_to_hf_state_dict(model), str(partial), metadata={"format": "pt"})  # transformers wants "format"
    os.replace(partial, out_dir / WEIGHTS_NAME)  # write, then rename: never a half-written file under the real name
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir
