"""Llama 3 and Qwen3 weights in the course ModernModel: from the Hugging Face Hub or a checkpoint folder.

Hand-written infrastructure (not generated from a notebook), the sibling of `gpt2_weights.py`. A Hub
repository such as `Qwen/Qwen3-0.6B` holds `config.json` (the shape of the model), the weights as
`model.safetensors`, or, for big models, `model.safetensors.index.json` plus the shard files it names,
and `tokenizer.json`. `download_modern` fetches them with `huggingface_hub` (which caches, resumes,
shows progress, and honours `HF_ENDPOINT` mirrors, `HF_HUB_OFFLINE` and `HF_TOKEN`); `load_modern`
turns such a folder into a ModernModel.

The Hugging Face names are those of transformers' LlamaForCausalLM and Qwen3ForCausalLM; `_hf_names`
in modern_llms.py maps ours onto them, one tensor for one tensor, with no transposes:

    model.embed_tokens.weight                  -> tok_emb.weight
    model.layers.i.input_layernorm.weight      -> trf_blocks.i.norm1.weight
    model.layers.i.self_attn.q_proj.weight     -> trf_blocks.i.att.W_query.weight   (k_proj, v_proj, o_proj alike)
    model.layers.i.self_attn.q_norm.weight     -> trf_blocks.i.att.q_norm.weight    (Qwen3's QK-norm; k_norm alike)
    model.layers.i.mlp.gate_proj.weight        -> trf_blocks.i.ff.fc1.weight        (up_proj -> fc2, down_proj -> fc3)
    model.norm.weight                          -> final_norm.weight
    lm_head.weight                             -> out_head.weight (when the head is not tied to the embedding)

As in `load_gpt2`, the weights are held once: ModernModel is built on the "meta" device (shapes only,
no memory, no random initialisation), each tensor is read from the file into memory of its own and
becomes the parameter (`load_state_dict(..., assign=True)`), the tied head is tied again, and the
RoPE tables `cos` / `sin`, buffers that no checkpoint holds, are computed afresh.
"""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from safetensors import SafetensorError

from ch05_pretraining.gpt2_weights import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    WeightsUnavailableError,
    _checkpoint_files,
    _invalid_file_error,
    _open_safetensors,
    _own_memory,
)
from ch05_pretraining.modern_llms import ModernModel, _hf_names, modern_config_from_hf, rope_cos_sin, rope_inv_freq

__all__ = ["MODERN_MODELS", "SUPPORTED_MODEL_TYPES", "is_hub_name", "hub_config", "download_modern", "load_modern"]

MODERN_MODELS: dict[str, str] = {  # the Hub names the course knows and tests with; any other "owner/name" works too
    "Qwen/Qwen3-0.6B": "Qwen3 0.6B (2025): 28 layers, GQA 16/8 heads, QK-norm, tied head; open, about 1.5 GB",
    "meta-llama/Llama-3.2-1B-Instruct": (
        "Llama 3.2 1B Instruct (2024): 16 layers, GQA 32/8 heads, llama3 RoPE scaling, tied head; gated "
        "(accept the licence on its Hub page, then log in with a token), about 2.5 GB"
    ),
}
SUPPORTED_MODEL_TYPES = ("llama", "qwen3")  # config.json's model_type
TOKENIZER_NAME = "tokenizer.json"
HUB_PAGE = "https://huggingface.co"  # licences are accepted and files browsed here, whatever HF_ENDPOINT says
_FILES = f"{CONFIG_NAME}, {WEIGHTS_NAME} (or {INDEX_NAME} and every shard it names) and {TOKENIZER_NAME}"
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")  # "owner/name"
# Tensors a checkpoint may hold that ModernModel computes itself: old files keep RoPE's inverse frequencies
_HARMLESS = re.compile(r"(model\.)?(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq")
# (config key, its default, the values ModernModel computes): anything else would load but compute something else
_FIXED_OPTIONS = [
    ("hidden_act", "silu", ("silu",)),
    ("attention_bias", False, (False, None)),
    ("mlp_bias", False, (False, None)),
    ("use_sliding_window", False, (False, None)),
]


def is_hub_name(value: str) -> bool:
    """True for a Hugging Face Hub id shaped "owner/name" that is not an existing local folder."""
    return (
        isinstance(value, str)
        and _HUB_NAME.fullmatch(value) is not None
        and ".." not in value
        and "--" not in value
        and not Path(value).is_dir()
    )


def _first_line(err: Exception) -> str:
    """The error's type and the first line of its message, short: the detail for a one-line message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _unavailable_message(repo: str, filename: str, cache_dir: str | Path | None, err: Exception) -> str:
    """One line: why filename of repo could not be had, and what to do about it."""
    page, endpoint = f"{HUB_PAGE}/{repo}", hf_constants.ENDPOINT
    cache = Path(cache_dir) if cache_dir is not None else Path(hf_constants.HF_HUB_CACHE)
    if cache.is_relative_to(Path.home()):  # ~/.cache/huggingface/hub: the same words on every machine
        cache = "~" / cache.relative_to(Path.home())
    by_hand = (
        f"download {_FILES} from {page}/tree/main into a folder (e.g. models/{repo.split('/')[-1]}) "
        "and pass that folder"
    )
    if repo.startswith("meta-llama/"):  # Meta's repositories are gated: files only after accepting the licence
        by_hand = f"accept its licence at {page}, then " + by_hand
    if isinstance(err, GatedRepoError) or (
        isinstance(err, HfHubHTTPError)
        and not isinstance(err, RepositoryNotFoundError)
        and getattr(err.response, "status_code", None) in (401, 403)
    ):
        return (
            f"{repo} is gated: accept its licence at {page} (logged in to Hugging Face), then give a token of "
            f"that account: run `hf auth login` or set HF_TOKEN (tokens: {HUB_PAGE}/settings/tokens); "
            f"{filename} was refused ({_first_line(err)})"
        )
    if isinstance(err, RepositoryNotFoundError):
        return (
            f"there is no repository {repo} on {endpoint} (or it is private and needs a token: `hf auth login` "
            f"or HF_TOKEN): check the name, e.g. {' or '.join(MODERN_MODELS)}"
        )
    if isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError):
        return (
            f"{repo} on {endpoint} has no {filename}: load_modern needs {_FILES}, as the Llama 3 and Qwen3 "
            f"repositories have (see {page}/tree/main)"
        )
    if hf_constants.HF_HUB_OFFLINE or isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if hf_constants.HF_HUB_OFFLINE:
            why = "HF_HUB_OFFLINE is set, so nothing is downloaded: unset HF_HUB_OFFLINE (then restart Python), or"
        else:
            why = f"{endpoint} cannot be reached:"
        return (
            f"{repo} ({filename}) is not in the Hugging Face cache ({cache}) and {why} {by_hand}, "
            "or set HF_ENDPOINT to a mirror (e.g. HF_ENDPOINT=https://hf-mirror.com) before starting Python"
        )
    return (
        f"could not download {filename} of {repo} from {endpoint} into {cache} ({_first_line(err)}): try again "
        f"(downloads resume), set HF_ENDPOINT to a mirror, or {by_hand}"
    )


def _hub_file(repo: str, filename: str, cache_dir: str | Path | None) -> Path:
    """One file of repo via huggingface_hub (from its cache when there); any failure is a WeightsUnavailableError."""
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir))
    except Exception as err:  # offline, DNS, gated, 404, disk full: all mean "no weights"; say how to fix it
        raise WeightsUnavailableError(_unavailable_message(repo, filename, cache_dir, err)) from err


def _is_absent(err: WeightsUnavailableError) -> bool:
    """True if the file behind err does not exist (on the Hub, or in the cache when offline)."""
    return isinstance(err.__cause__, EntryNotFoundError)


def hub_config(repo: str, cache_dir: str | Path | None = None) -> dict:
    """config.json of a Hub repository, fetched alone (small): to check a model before its weights come."""
    return json.loads(_hub_file(repo, CONFIG_NAME, cache_dir).read_text(encoding="utf-8"))


def download_modern(repo: str, cache_dir: str | Path | None = None) -> Path:
    """Fetch config.json, the safetensors weights (sharded or not) and tokenizer.json of repo; return their folder."""
    config = _hub_file(repo, CONFIG_NAME, cache_dir)  # first and small: a wrong name, a gate or no network fail here
    try:
        _hub_file(repo, WEIGHTS_NAME, cache_dir)
    except WeightsUnavailableError as err:  # no single file: a sharded checkpoint has an index instead
        if not _is_absent(err):
            raise
        try:
            index = _hub_file(repo, INDEX_NAME, cache_dir)
        except WeightsUnavailableError as index_err:
            if _is_absent(index_err):
                raise err from err.__cause__  # neither exists: report the usual file, model.safetensors
            raise
        for shard in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())):
            _hub_file(repo, shard, cache_dir)
    _hub_file(repo, TOKENIZER_NAME, cache_dir)
    return config.parent  # every file lies in the same snapshot folder of the cache


def _checkpoint_folder(name_or_dir: str | Path) -> Path:
    """The folder holding a checkpoint: name_or_dir itself, or the Hub name's snapshot after download_modern."""
    if isinstance(name_or_dir, str) and is_hub_name(name_or_dir):  # an existing folder of that name wins
        return download_modern(name_or_dir)
    folder = Path(name_or_dir)
    if folder.is_dir():
        return folder
    if isinstance(name_or_dir, Path) or "/" in str(name_or_dir) or "\\" in str(name_or_dir):
        raise FileNotFoundError(f"no folder {folder}: pass a checkpoint folder or a Hub name such as Qwen/Qwen3-0.6B")
    raise ValueError(
        f"{str(name_or_dir)!r} is neither a checkpoint folder nor a Hugging Face Hub name 'owner/name' "
        f"such as {' or '.join(map(repr, MODERN_MODELS))}"
    )


def _read_config(folder: Path) -> tuple[dict, list[Path]]:
    """(config.json as a dict, the safetensors file(s)) of a Llama 3 / Qwen3 folder; one-line errors."""
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder / CONFIG_NAME} not found: a Llama 3 / Qwen3 checkpoint folder holds {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} (or {INDEX_NAME} and its shards), as {HUB_PAGE}/Qwen/Qwen3-0.6B/tree/main does"
        )
    if not (folder / WEIGHTS_NAME).is_file() and not (folder / INDEX_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} has {CONFIG_NAME} but neither {WEIGHTS_NAME} nor {INDEX_NAME}: download the weights "
            "into it from the model's Hub page (its 'Files' tab)"
        )
    hf_config, files = _checkpoint_files(folder)
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{folder / CONFIG_NAME} has model_type {model_type!r}, but load_modern supports "
            f"{' and '.join(map(repr, SUPPORTED_MODEL_TYPES))} (Llama 3 and Qwen3 checkpoints)"
        )
    for key, default, allowed in _FIXED_OPTIONS:
        if hf_config.get(key, default) not in allowed:
            raise ValueError(
                f"{folder / CONFIG_NAME} sets {key}={hf_config[key]!r}, but ModernModel computes "
                f"{key}={allowed[0]!r}: this checkpoint needs a model the course does not build"
            )
    return hf_config, files


def _check_tensors(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[str, tuple[int, ...]]],
                   tied: bool) -> None:
    """Raise a ValueError naming the first missing, misshapen or unexpected Hugging Face tensor."""
    for hf_name, (name, shape) in expected.items():
        if hf_name not in found:
            missing = [n for n in expected if n not in found]
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ValueError(
                f"the checkpoint has no tensor {hf_name} (for {name}){more}: a shard is missing or incomplete, "
                f"or {CONFIG_NAME} describes another model"
            )
        if found[hf_name] != shape:
            raise ValueError(
                f"checkpoint tensor {hf_name} has shape {found[hf_name]}, but {name} needs {shape} by "
                f"{CONFIG_NAME}: the weights and {CONFIG_NAME} belong to different models"
            )
    unexpected = sorted(
        n for n in found
        if n not in expected and not _HARMLESS.fullmatch(n) and not (tied and n == "lm_head.weight")
    )  # a tied model's lm_head (Qwen3-0.6B's file holds one) is the embedding: the config's tie wins, as in transformers
    if unexpected:
        raise ValueError(
            f"the checkpoint has {len(unexpected)} tensor(s) ModernModel has no place for, first {unexpected[:3]}: "
            f"is {CONFIG_NAME} the one of these weights (more layers, biases)?"
        )


def _read_state(files: list[Path], model: ModernModel, device: str | torch.device | None,
                dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """ModernModel's state dict from checkpoint files, read tensor by tensor into memory of its own."""
    dtype = dtype if dtype is not None else torch.get_default_dtype()  # as ModernModel(cfg) has: a bf16 file -> fp32
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}  # the meta model: shapes, no memory
    expected = {hf_name: (name, shapes[name]) for name, hf_name in _hf_names(model.cfg).items()}
    with contextlib.ExitStack() as stack:
        where = {}  # Hugging Face name -> (its file, the open handle)
        for path in files:
            f = _open_safetensors(path, stack)
            where |= {key: (path, f) for key in f.keys()}
        _check_tensors({k: tuple(f.get_slice(k).get_shape()) for k, (_, f) in where.items()}, expected,
                       model.cfg.tie_embeddings)
        state = {}
        for hf_name, (name, _) in expected.items():
            path, f = where[hf_name]
            try:
                tensor = f.get_tensor(hf_name)
            except (SafetensorError, OSError) as err:
                raise _invalid_file_error(path, err) from err
            state[name] = _own_memory(tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None))
            del tensor  # a converted copy was made: the file's bytes are free again
    if model.cfg.tie_embeddings:
        state["out_head.weight"] = state["tok_emb.weight"]  # one tensor, two names
    return state


def _materialise_buffers(model: ModernModel, device: torch.device) -> None:
    """Compute the RoPE tables (non-persistent buffers, in no checkpoint) of a model built on "meta"."""
    cfg = model.cfg
    cos, sin = rope_cos_sin(rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling), cfg.context_length)
    model.register_buffer("cos", cos.to(device), persistent=False)  # (context_length, head_dim), float32
    model.register_buffer("sin", sin.to(device), persistent=False)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"load_modern left {left[:3]} on the meta device: teach _materialise_buffers to build them")


def load_modern(
    name_or_dir: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    context_length: int | None = None,
) -> ModernModel:
    """ModernModel with Llama 3 / Qwen3 weights, from a Hub name (downloaded) or a checkpoint folder; in eval mode."""
    folder = _checkpoint_folder(name_or_dir)
    hf_config, files = _read_config(folder)
    longest = hf_config.get("max_position_embeddings")
    if context_length is not None and not (0 < context_length <= (longest or context_length)):
        raise ValueError(
            f"context_length must lie between 1 and the model's max_position_embeddings ({longest}), "
            f"got {context_length}: a shorter one only keeps the RoPE tables small"
        )
    try:
        cfg = modern_config_from_hf(hf_config, context_length=context_length)
    except KeyError as err:
        raise ValueError(f"{folder / CONFIG_NAME} lacks {err}: is it a transformers config.json?") from None
    with torch.device("meta"):  # no memory: the file's tensors become the parameters, no random init to overwrite
        model = ModernModel(cfg)
    state = _read_state(files, model, device, dtype)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.out_head.weight = model.tok_emb.weight  # assign gave each name its own Parameter: share one again
    _materialise_buffers(model, model.tok_emb.weight.device)
    return model.eval()
