"""Tests for ch05_pretraining.gpt2_weights: GPT-2 checkpoints in Hugging Face format <-> GPTModel, offline.

The checkpoints are tiny, randomly initialised `transformers.GPT2LMHeadModel`s written with
`save_pretrained`: the very format of `openai-community/gpt2` on the Hub, without the download.
"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from ch03_attention import causal_mask
from ch04_gpt_model import GPT_CONFIGS, GPTConfig, GPTModel, generate_text_simple, gpt_param_count, tie_weights
from ch05_pretraining import gpt2_weights
from ch05_pretraining import (
    GPT2_ALIASES,
    GPT2_REPOS,
    WeightsUnavailableError,
    config_from_hf,
    course_to_hf_state_dict,
    download_gpt2,
    gpt2_config,
    hf_to_course_state_dict,
    load_gpt2,
    load_hf_weights,
    read_safetensors,
    save_hf_checkpoint,
)

# No bos/eos token in the tiny vocabulary (GPT2Config's default 50256 lies outside it), so generate() runs all steps.
HF_TINY = dict(n_embd=48, n_layer=2, n_head=4, n_positions=64, vocab_size=101, bos_token_id=None, eos_token_id=None)
COURSE_TINY = dict(vocab_size=101, context_length=64, emb_dim=48, n_heads=4, n_layers=2, drop_rate=0.0)
# float32, eval mode: the two implementations differ only by rounding, which grows with the logits' size (with
# logits up to 43, both lie about 1.2e-5 and 1.8e-5 from a float64 reference), so the bound scales with them.
TOL = 1e-5  # times max(1, largest |logit|)
PUBLISHED = {  # OpenAI's GPT-2 sizes: (n_layers, emb_dim, n_heads, parameters with the head tied to wte)
    "gpt2": (12, 768, 12, 124_439_808),
    "gpt2-medium": (24, 1024, 16, 354_823_168),
    "gpt2-large": (36, 1280, 20, 774_030_080),
    "gpt2-xl": (48, 1600, 25, 1_557_611_200),
}


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Add noise to every parameter, so zero biases and unit LayerNorm scales also test the mapping."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def make_hf_model(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**{**HF_TINY, **overrides}))
    perturb_(model, seed)
    return model.eval()


def make_hf_checkpoint(folder: Path, seed: int = 0, **overrides) -> GPT2LMHeadModel:
    """A tiny GPT-2 saved with save_pretrained (config.json + model.safetensors); returns the model."""
    model = make_hf_model(seed, **overrides)
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    return model


def make_course_model(seed: int = 0, tied: bool = False, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(GPTConfig(**{**COURSE_TINY, **overrides}))
    if tied:
        tie_weights(model)
    perturb_(model, seed)
    return model.eval()


def token_ids(n: int = 12, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, HF_TINY["vocab_size"], (batch, n), generator=torch.Generator().manual_seed(seed))


def hf_greedy(model: GPT2LMHeadModel, idx: torch.Tensor, steps: int) -> torch.Tensor:
    mask = torch.ones_like(idx)
    out = model.generate(idx, attention_mask=mask, max_new_tokens=steps, do_sample=False, pad_token_id=0)
    assert out.shape == (idx.shape[0], idx.shape[1] + steps)
    return out


def assert_same_model(course: GPTModel, hf: GPT2LMHeadModel) -> None:
    """Same logits (to TOL, relative to the largest logit) and the same 10 greedy tokens."""
    idx = token_ids()
    with torch.no_grad():
        ours, theirs = course(idx), hf(idx).logits  # (batch, tokens, vocab_size)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= TOL * max(1.0, theirs.abs().max().item())
    prompt = idx[:, :4]
    assert torch.equal(generate_text_simple(course, prompt, 10, course.cfg.context_length), hf_greedy(hf, prompt, 10))


def hf_from_pretrained(folder: Path) -> GPT2LMHeadModel:
    """transformers' own loader; fails on any missing, unexpected or mis-shaped key."""
    model, info = GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    assert all(not keys for keys in info.values()), info
    return model.eval()


# --- loading Hugging Face checkpoints ---------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_load_gpt2_matches_transformers(tmp_path, tied):
    hf = make_hf_checkpoint(tmp_path, tie_word_embeddings=tied)
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == tied  # the case under test
    model = load_gpt2(tmp_path)
    assert not model.training
    assert model.cfg == GPTConfig(**{**COURSE_TINY, "drop_rate": 0.1, "qkv_bias": True})
    assert (model.out_head.weight is model.tok_emb.weight) == tied  # tied file -> one shared matrix, as GPT-2
    assert_same_model(model, hf)


def test_load_hub_layout_without_prefix_and_with_mask_buffers(tmp_path):
    # The files on the Hub name tensors without "transformer." and hold each block's causal mask.
    hf = make_hf_checkpoint(tmp_path)
    state = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    for i in range(HF_TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert_same_model(load_gpt2(tmp_path), hf)


def test_load_gpt2_str_path_dtype_and_device(tmp_path):
    hf = make_hf_checkpoint(tmp_path)
    model = load_gpt2(str(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        diff = (model(token_ids()).float() - hf(token_ids()).logits).abs().max().item()
    assert diff < 0.1  # bfloat16 keeps about 3 significant digits


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_load_gpt2_leaves_nothing_on_meta_and_runs(tmp_path, dtype):
    make_hf_checkpoint(tmp_path)
    model = load_gpt2(tmp_path, dtype=dtype)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert tensors and not [name for name, t in tensors.items() if t.is_meta]
    assert {p.dtype for p in model.parameters()} == {dtype or torch.float32}
    assert all(p.requires_grad and p.is_contiguous() for p in model.parameters())
    # each parameter owns its memory (a view would pin the whole transposed or stacked tensor it came from)
    assert all(p.untyped_storage().nbytes() == p.nbytes for p in model.parameters())
    for block in model.trf_blocks:  # the causal mask is a non-persistent buffer: rebuilt, not loaded
        assert torch.equal(block.att.mask, causal_mask(COURSE_TINY["context_length"]))
        assert "mask" not in block.att.state_dict()
    assert model.out_head.weight is model.tok_emb.weight
    with torch.no_grad():
        logits = model(token_ids())
    assert logits.shape == (2, 12, COURSE_TINY["vocab_size"]) and torch.isfinite(logits.float()).all()


def test_load_gpt2_gives_float32_whatever_the_file_holds(tmp_path):
    model = make_course_model(tied=True, qkv_bias=True).to(torch.bfloat16)
    save_hf_checkpoint(model, tmp_path)
    assert {t.dtype for t in load_file(tmp_path / "model.safetensors").values()} == {torch.bfloat16}
    back = load_gpt2(tmp_path)  # as before: dtype=None means GPTModel's own dtype, float32
    assert {p.dtype for p in back.parameters()} == {torch.float32}
    assert all(torch.equal(a.float(), b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    assert {p.dtype for p in load_gpt2(tmp_path, dtype=torch.bfloat16).parameters()} == {torch.bfloat16}


def test_load_gpt2_holds_one_copy_of_the_weights(tmp_path, monkeypatch):
    # No randomly initialised model to overwrite, and no whole-file read beside it: built on "meta", read per tensor.
    hf = make_hf_checkpoint(tmp_path, tie_word_embeddings=False)
    built = []

    def recording_gpt_model(cfg):
        model = GPTModel(cfg)
        built.append({p.device.type for p in model.parameters()})
        return model

    def no_whole_file(*args, **kwargs):
        raise AssertionError("load_gpt2 read the whole file into memory")

    monkeypatch.setattr(gpt2_weights, "GPTModel", recording_gpt_model)
    monkeypatch.setattr(gpt2_weights, "load_file", no_whole_file)
    model = load_gpt2(tmp_path)
    assert built == [{"meta"}]
    assert model.out_head.weight is not model.tok_emb.weight
    assert_same_model(model, hf)


def test_load_sharded_checkpoint(tmp_path):
    hf = make_hf_model()
    hf.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    assert_same_model(load_gpt2(tmp_path), hf)


def test_hf_to_course_state_dict_splits_and_transposes(tmp_path):
    hf = make_hf_model()
    hf_state = hf.state_dict()
    cfg = GPTConfig(**{**COURSE_TINY, "qkv_bias": True})
    state = hf_to_course_state_dict(hf_state, cfg)
    assert set(state) == set(GPTModel(cfg).state_dict())
    d = cfg.emb_dim
    c_attn_w = hf_state["transformer.h.1.attn.c_attn.weight"]  # (d, 3d), (in, out): q | k | v columns
    c_attn_b = hf_state["transformer.h.1.attn.c_attn.bias"]
    assert torch.equal(state["trf_blocks.1.att.W_key.weight"], c_attn_w[:, d : 2 * d].T)
    assert torch.equal(state["trf_blocks.1.att.W_value.bias"], c_attn_b[2 * d :])
    assert torch.equal(state["trf_blocks.0.ff.layers.2.weight"], hf_state["transformer.h.0.mlp.c_proj.weight"].T)
    assert state["out_head.weight"] is state["tok_emb.weight"]  # tied checkpoint: head = wte


def test_load_hf_weights_unties_a_tied_model_for_an_untied_checkpoint():
    hf = make_hf_model(tie_word_embeddings=False)
    model = tie_weights(GPTModel(GPTConfig(**{**COURSE_TINY, "qkv_bias": True})))
    load_hf_weights(model, hf.state_dict()).eval()
    assert model.out_head.weight is not model.tok_emb.weight
    assert torch.equal(model.out_head.weight, hf.lm_head.weight)
    assert torch.equal(model.tok_emb.weight, hf.transformer.wte.weight)


def test_zero_qkv_biases_load_into_a_model_without_them():
    hf = make_hf_model()
    with torch.no_grad():
        for block in hf.transformer.h:
            block.attn.c_attn.bias.zero_()
    model = load_hf_weights(GPTModel(GPTConfig(**COURSE_TINY)), hf.state_dict()).eval()  # qkv_bias=False
    assert model.trf_blocks[0].att.W_query.bias is None
    assert_same_model(model, hf)


# --- exporting course models ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, overrides",
    [("untied", {"qkv_bias": True}), ("untied", {"qkv_bias": False}), ("tied", {"qkv_bias": True})],
)
def test_save_hf_checkpoint_loads_in_transformers(tmp_path, kind, overrides):
    model = make_course_model(tied=kind == "tied", **overrides)
    assert save_hf_checkpoint(model, tmp_path / "out") == tmp_path / "out"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_embd"], config["n_head"], config["n_layer"], config["n_ctx"]) == (48, 4, 2, 64)
    assert config["tie_word_embeddings"] == (kind == "tied")
    assert ("lm_head.weight" in load_file(tmp_path / "out" / "model.safetensors")) == (kind == "untied")

    hf = hf_from_pretrained(tmp_path / "out")
    # transformers 5 keeps a separate head when tie_word_embeddings is False (and ties when True)
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == (kind == "tied")
    assert torch.equal(hf.lm_head.weight, model.out_head.weight)
    assert_same_model(model, hf)

    back = load_gpt2(tmp_path / "out")  # round trip; qkv_bias=False comes back as zero biases
    assert (back.out_head.weight is back.tok_emb.weight) == (kind == "tied")
    with torch.no_grad():
        assert torch.equal(back(token_ids()), model(token_ids()))
    if overrides["qkv_bias"]:
        assert back.cfg == model.cfg
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))


def test_save_gpt2_size_config_writes_endoftext_ids(tmp_path):
    cfg = GPTConfig(**{**COURSE_TINY, "vocab_size": 50257, "emb_dim": 8, "n_heads": 2})
    save_hf_checkpoint(GPTModel(cfg), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["bos_token_id"] == config["eos_token_id"] == 50256
    assert config["resid_pdrop"] == config["attn_pdrop"] == config["embd_pdrop"] == 0.0


def fail_after_writing(path_arg: int):
    """A stand-in that writes half a file at its path argument, then fails as a full disk would."""

    def fail(*args, **kwargs):
        Path(args[path_arg]).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    return fail


@pytest.mark.parametrize("stage", ["weights", "config"])
def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch, stage):
    model = make_course_model()
    if stage == "weights":  # safetensors' save_file, as gpt2_weights imported it
        monkeypatch.setattr(gpt2_weights, "save_file", fail_after_writing(1))
    else:  # the weights are written; serialising config.json fails

        def unserialisable(*args, **kwargs):
            raise TypeError("Object of type Tensor is not JSON serializable")

        monkeypatch.setattr(gpt2_weights.json, "dumps", unserialisable)
    out = tmp_path / "out"
    with pytest.raises((OSError, TypeError)):
        save_hf_checkpoint(model, out)
    assert list(out.iterdir()) == []  # no .partial file, no weights without a config, no config.json


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    old = make_course_model(seed=1)
    save_hf_checkpoint(old, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(gpt2_weights, "save_file", fail_after_writing(1))
    with pytest.raises(OSError, match="No space"):
        save_hf_checkpoint(make_course_model(seed=2), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    "head",
    [
        torch.nn.Linear(COURSE_TINY["emb_dim"], 2),  # chapter 6's spam classifier
        torch.nn.Linear(COURSE_TINY["emb_dim"], COURSE_TINY["vocab_size"]),  # a bias GPT-2's lm_head has no place for
        torch.nn.Linear(COURSE_TINY["vocab_size"], COURSE_TINY["emb_dim"], bias=False),  # in and out swapped
        torch.nn.Identity(),
    ],
)
def test_save_refuses_a_head_that_is_not_a_language_model_head(tmp_path, head):
    model = make_course_model()
    model.out_head = head
    with pytest.raises(ValueError, match=r"out_head.*nn\.Linear\(48, 101, bias=False\)") as info:
        save_hf_checkpoint(model, tmp_path / "out")
    assert "torch.save" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_course_to_hf_state_dict_is_hf_state_dict():
    hf = make_hf_model(tie_word_embeddings=False)
    model = load_hf_weights(GPTModel(GPTConfig(**{**COURSE_TINY, "qkv_bias": True})), hf.state_dict())
    ours = course_to_hf_state_dict(model)
    theirs = hf.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].is_contiguous() for k in ours)


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [gpt2_config, download_gpt2, load_gpt2])
def test_unknown_name_lists_valid_names(call):
    with pytest.raises(ValueError, match="gpt2-medium") as info:
        call("gpt3")
    assert "'gpt3'" in str(info.value) and "1558M" in str(info.value)


def test_missing_tensor_is_named(tmp_path):
    make_hf_checkpoint(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["transformer.h.1.mlp.c_fc.bias"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.bias"):
        load_gpt2(tmp_path)


def test_checkpoint_of_another_size_names_tensor_and_shapes(tmp_path):
    make_hf_checkpoint(tmp_path, n_embd=64)  # a bigger model, loaded with the tiny config
    state = read_safetensors(tmp_path / "model.safetensors")
    cfg = GPTConfig(**{**COURSE_TINY, "qkv_bias": True})
    with pytest.raises(ValueError, match=r"wte\.weight has shape \(101, 64\).*needs \(101, 48\)"):
        hf_to_course_state_dict(state, cfg)
    with pytest.raises(ValueError, match=r"wte\.weight"):
        load_hf_weights(GPTModel(cfg), state)


def test_checkpoint_with_more_layers_is_refused(tmp_path):
    state = make_hf_model(n_layer=3).state_dict()
    with pytest.raises(ValueError, match=r"h\.2\."):
        hf_to_course_state_dict(state, GPTConfig(**{**COURSE_TINY, "qkv_bias": True}))


def test_nonzero_qkv_biases_need_qkv_bias_true():
    state = make_hf_model().state_dict()
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn\.bias.*qkv_bias=True"):
        load_hf_weights(GPTModel(GPTConfig(**COURSE_TINY)), state)


@pytest.mark.parametrize("damage", ["cut_end", "cut_header", "empty", "garbage"])
def test_corrupt_safetensors_file(tmp_path, damage):
    make_hf_checkpoint(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    damaged = {"cut_end": data[:-100], "cut_header": data[:40], "empty": b"", "garbage": bytes(range(256)) * 40}
    path.write_bytes(damaged[damage])
    with pytest.raises(ValueError, match="corrupt or truncated.*delete it and download it again") as info:
        read_safetensors(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_gpt2(tmp_path)


def test_git_lfs_pointer_gets_its_own_hint(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 548105171\n")
    with pytest.raises(ValueError, match="Git LFS pointer"):
        read_safetensors(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(GPT2Config(**HF_TINY).to_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2(tmp_path)


@pytest.mark.parametrize("name, repo", [("124M", "openai-community/gpt2"), ("gpt2-xl", "openai-community/gpt2-xl")])
def test_offline_download_says_how_to_get_the_weights(hub_offline, name, repo):
    with pytest.raises(WeightsUnavailableError) as info:
        download_gpt2(name)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and info.value.__cause__ is not None
    assert "config.json" in message and repo in message
    assert "HF_HUB_OFFLINE" in message and "HF_ENDPOINT" in message and "https://hf-mirror.com" in message
    assert f"https://huggingface.co/{repo}/tree/main" in message and "load_gpt2(" in message
    with pytest.raises(WeightsUnavailableError):
        load_gpt2(name)


def test_offline_download_finds_cached_files(hub_offline, tmp_path):
    # Lay out a Hub cache by hand, as huggingface_hub leaves it after a download, with a tiny "gpt2".
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = hub_offline / "models--openai-community--gpt2" / "snapshots" / commit
    hf = make_hf_checkpoint(snapshot)
    (hub_offline / "models--openai-community--gpt2" / "refs").mkdir()
    (hub_offline / "models--openai-community--gpt2" / "refs" / "main").write_text(commit)
    assert download_gpt2("gpt2") == snapshot
    assert_same_model(load_gpt2("124M"), hf)  # the name path, end to end
    with pytest.raises(WeightsUnavailableError, match="gpt2-medium"):  # other sizes are not cached
        download_gpt2("355M", cache_dir=hub_offline)


# --- configurations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_gpt2_configs_match_published_sizes(name):
    alias = {v: k for k, v in GPT2_ALIASES.items()}[name]
    n_layers, emb_dim, n_heads, n_params = PUBLISHED[name]
    cfg = gpt2_config(alias)
    assert cfg == gpt2_config(name) == GPT_CONFIGS[name]
    assert (cfg.n_layers, cfg.emb_dim, cfg.n_heads, cfg.vocab_size, cfg.context_length) == (
        n_layers, emb_dim, n_heads, 50257, 1024
    )  # fmt: skip
    assert cfg.qkv_bias and gpt_param_count(cfg, tied=True) == n_params
    assert GPT2_REPOS[name] == f"openai-community/{name}"
    # transformers' GPT2Config of the same size maps to the same GPTConfig
    hf_config = GPT2Config(n_embd=emb_dim, n_layer=n_layers, n_head=n_heads).to_dict()
    assert config_from_hf(hf_config) == cfg


def test_gpt2_config_returns_a_copy():
    cfg = gpt2_config("gpt2")
    cfg.drop_rate = 0.0
    assert GPT_CONFIGS["gpt2"].drop_rate == 0.1


def test_config_from_hub_config_json():
    hub_config = {  # the fields of openai-community/gpt2's config.json that matter
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "embd_pdrop": 0.1, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
        "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "vocab_size": 50257,
    }  # fmt: skip
    assert config_from_hf(hub_config) == GPT_CONFIGS["gpt2"]
    assert config_from_hf({**hub_config, "resid_pdrop": None}).drop_rate == 0.0


DELETE = object()  # marks a key to drop from the config


@pytest.mark.parametrize(
    "change, match",
    [
        ({"activation_function": "relu"}, "activation_function"),
        ({"n_inner": 100}, "n_inner"),
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"model_type": "llama"}, "model_type"),
        ({"n_embd": DELETE}, "n_embd"),
    ],
)
def test_config_from_hf_refuses_what_gptmodel_cannot_compute(change, match):
    hf_config = {k: v for k, v in {**GPT2Config(**HF_TINY).to_dict(), **change}.items() if v is not DELETE}
    with pytest.raises(ValueError, match=match):
        config_from_hf(hf_config)
