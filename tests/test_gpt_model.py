"""Tests for ch04_gpt_model: building blocks vs torch references, parameter counts, generation, KV cache."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from appendix_pytorch import count_parameters
from ch03_attention import MultiHeadAttention
from ch04_gpt_model import (
    GELU,
    GPT_CONFIGS,
    FeedForward,
    GPTConfig,
    GPTModel,
    KVCache,
    LayerNorm,
    TransformerBlock,
    forward_cached,
    generate_text_cached,
    generate_text_simple,
    gpt_param_count,
    text_to_token_ids,
    tie_weights,
    token_ids_to_text,
)

TINY = dict(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
CONFIGS = [  # small configurations covering the switches
    GPTConfig(**TINY),
    GPTConfig(**{**TINY, "qkv_bias": True, "n_heads": 2, "n_layers": 3}),
    GPTConfig(**{**TINY, "emb_dim": 48, "n_heads": 6, "n_layers": 1, "context_length": 24}),
]


def make_model(cfg: GPTConfig, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


# --- building blocks -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 32), (1, 1, 768)])
def test_layernorm_matches_torch(shape):
    torch.manual_seed(0)
    d = shape[-1]
    ours, ref = LayerNorm(d), nn.LayerNorm(d, eps=1e-5)
    with torch.no_grad():
        ours.scale.normal_(), ours.shift.normal_()
        ref.weight.copy_(ours.scale), ref.bias.copy_(ours.shift)
    x = torch.randn(shape) * 5 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    tiny = torch.randn(shape) * 1e-3  # variance 1e-6 < eps: the output depends on eps being GPT-2's 1e-5
    torch.testing.assert_close(ours(tiny), ref(tiny), atol=1e-5, rtol=1e-4)
    assert {n for n, _ in ours.named_parameters()} == {"scale", "shift"}  # the names weight loading expects


def test_layernorm_normalizes_each_vector():
    x = torch.randn(4, 10, 64) * 3 + 7
    y = LayerNorm(64)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, 10), atol=1e-3, rtol=0)


def test_gelu_equals_torch_tanh_approximation_and_is_close_to_exact():
    x = torch.linspace(-8, 8, 4001)
    ours = GELU()(x)
    torch.testing.assert_close(ours, F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6)
    diff = (ours - F.gelu(x)).abs().max().item()
    assert 0 < diff < 1e-3  # an approximation, and a good one


def test_feedforward_structure_and_shape():
    cfg = GPTConfig(**TINY)
    ff = FeedForward(cfg)
    first, act, last = ff.layers
    assert (first.in_features, first.out_features) == (32, 128) and isinstance(act, GELU)
    assert (last.in_features, last.out_features) == (128, 32)
    assert ff(torch.randn(2, 5, 32)).shape == (2, 5, 32)


def test_block_uses_ch03_attention_and_keeps_shape():
    cfg = GPTConfig(**TINY)
    block = TransformerBlock(cfg).eval()
    assert type(block.att) is MultiHeadAttention
    x = torch.randn(2, 7, 32)
    assert block(x).shape == x.shape


def test_block_is_pre_layernorm_with_shortcuts():
    cfg = GPTConfig(**TINY)
    torch.manual_seed(0)
    block = TransformerBlock(cfg).eval()
    x = torch.randn(2, 7, 32)
    h = x + block.att(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.ff(block.norm2(h)))


# --- the model -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS)
def test_model_output_shape(cfg):
    model = make_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length))
    assert model(idx).shape == (3, cfg.context_length, cfg.vocab_size)
    assert model(idx[:, :1]).shape == (3, 1, cfg.vocab_size)
    assert model.out_head.bias is None and isinstance(model.trf_blocks, (nn.ModuleList, nn.Sequential))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_model_is_causal(cfg):
    model = make_model(cfg)
    torch.manual_seed(1)
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=0)
    assert (a[:, 7:] - b[:, 7:]).abs().amax(dim=-1).min() > 0  # every later position does see it


def test_model_rejects_bad_input():
    cfg = GPTConfig(**TINY)
    model = make_model(cfg)
    with pytest.raises(ValueError, match="17 tokens but context_length is 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\)"):
        model(torch.zeros(5, dtype=torch.long))


def test_dropout_is_active_in_training_only():
    cfg = GPTConfig(**{**TINY, "drop_rate": 0.5})
    model = make_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), model(idx))
        model.train()
        assert not torch.allclose(model(idx), model(idx))


# --- configuration and parameter counts ------------------------------------------------------------

@pytest.mark.parametrize("bad,message", [
    (dict(emb_dim=30, n_heads=4), "divisible by n_heads"),
    (dict(drop_rate=1.0), "drop_rate"),
    (dict(drop_rate=-0.1), "drop_rate"),
    (dict(n_layers=0), "n_layers must be a positive integer"),
    (dict(n_heads=0), "GPTConfig.n_heads must be a positive integer, got 0"),
    (dict(vocab_size=-5), "vocab_size"),
    (dict(context_length=16.0), "context_length"),
    (dict(emb_dim=True), "emb_dim"),
])
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, **bad})


def test_presets_are_gpt2_hyperparameters():
    expected = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 16, 24),
                "gpt2-large": (1280, 20, 36), "gpt2-xl": (1600, 25, 48)}
    for name, (d, h, layers) in expected.items():
        cfg = GPT_CONFIGS[name]
        assert (cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (d, h, layers)
        assert (cfg.vocab_size, cfg.context_length, cfg.qkv_bias) == (50257, 1024, True)


@pytest.mark.parametrize("cfg", CONFIGS + [GPTConfig(**{**TINY, "qkv_bias": True})])
@pytest.mark.parametrize("tied", [False, True])
def test_param_count_formula_on_tiny_models(cfg, tied):
    model = GPTModel(cfg)
    if tied:
        tie_weights(model)
        assert model.out_head.weight is model.tok_emb.weight
    assert count_parameters(model) == gpt_param_count(cfg, tied=tied)


def test_param_count_of_presets():
    # Published sizes of OpenAI's checkpoints (tied head, with qkv biases), and the untied variants.
    published = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168,
                 "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, n in published.items():
        cfg = GPT_CONFIGS[name]
        assert gpt_param_count(cfg, tied=True) == n
        assert gpt_param_count(cfg) == n + cfg.vocab_size * cfg.emb_dim


@pytest.mark.parametrize("name", list(GPT_CONFIGS))
def test_param_count_formula_on_meta_presets(name):
    cfg = GPT_CONFIGS[name]
    with torch.device("meta"):  # shapes only, no memory
        model = GPTModel(cfg)
    assert count_parameters(model) == gpt_param_count(cfg)
    assert count_parameters(tie_weights(model)) == gpt_param_count(cfg, tied=True)


# --- generation ------------------------------------------------------------------------------------

def test_text_helpers_roundtrip_with_tiktoken(gpt2_tokenizer):
    tok = gpt2_tokenizer
    ids = text_to_token_ids("Hello, world<|endoftext|>", tok)
    assert ids.tolist() == [tok.encode("Hello, world<|endoftext|>", allowed_special="all")]
    assert ids.shape == (1, 4) and ids[0, -1].item() == 50256
    assert token_ids_to_text(ids, tok) == "Hello, world<|endoftext|>"
    assert token_ids_to_text(ids[0], tok) == "Hello, world<|endoftext|>"


def test_generate_simple_is_greedy_and_deterministic():
    cfg = GPTConfig(**TINY)
    model = make_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 3))
    out = generate_text_simple(model, idx, 5, cfg.context_length)
    assert out.shape == (2, 8) and torch.equal(out[:, :3], idx)
    assert torch.equal(out, generate_text_simple(model, idx, 5, cfg.context_length))
    with torch.no_grad():  # the first new token is the arg-max of the last position's logits
        assert torch.equal(out[:, 3], model(idx)[:, -1].argmax(-1))


def test_generate_simple_crops_to_the_last_context_length_tokens():
    cfg = GPTConfig(**TINY)
    model = make_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (1, 40))  # longer than the context of 16
    out = generate_text_simple(model, idx, 3, cfg.context_length)
    assert out.shape == (1, 43) and torch.equal(out[:, :40], idx)
    seq = idx
    with torch.no_grad():
        for _ in range(3):  # reference: only the last 16 tokens are seen at each step
            seq = torch.cat([seq, model(seq[:, -16:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_generate_rejects_bad_arguments():
    cfg = GPTConfig(**TINY)
    model = make_model(cfg)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        generate_text_simple(model, torch.zeros(1, 2, dtype=torch.long), -1, 16)
    with pytest.raises(ValueError, match="context_length must be a positive integer, got 0"):
        generate_text_simple(model, torch.zeros(1, 2, dtype=torch.long), 1, 0)
    with pytest.raises(ValueError, match=r"\(batch, tokens\)"):
        generate_text_simple(model, torch.zeros(3, dtype=torch.long), 1, 16)
    with pytest.raises(ValueError, match=r"\(batch, tokens\)"):
        generate_text_cached(model, torch.zeros(1, 0, dtype=torch.long), 1)


# --- KV cache --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_generation_gives_exactly_the_uncached_tokens(cfg, seed):
    model = make_model(cfg, seed)
    torch.manual_seed(100 + seed)
    prompt = torch.randint(0, cfg.vocab_size, (2, 1 + seed))
    n_new = cfg.context_length - prompt.shape[1]  # fill the context exactly
    expected = generate_text_simple(model, prompt, n_new, cfg.context_length)
    assert torch.equal(generate_text_cached(model, prompt, n_new), expected)


def test_cached_generation_also_with_sdpa_attention():
    cfg = CONFIGS[1]
    model = make_model(cfg, 5)
    for block in model.trf_blocks:
        block.att.use_sdpa = True
    prompt = torch.randint(0, cfg.vocab_size, (1, 4))
    assert torch.equal(generate_text_cached(model, prompt, 10), generate_text_simple(model, prompt, 10, 16))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cached_logits_match_plain_forward(cfg):
    model = make_model(cfg, 3)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
    cache = KVCache(cfg, batch_size=2)
    cuts = [0, 5, 6, 9, cfg.context_length]  # prefill 5, then 1, then 3, then the rest
    with torch.no_grad():
        full = model(idx)
        pieces = torch.cat([forward_cached(model, idx[:, a:b], cache) for a, b in zip(cuts, cuts[1:])], dim=1)
    assert cache.length == cfg.context_length
    torch.testing.assert_close(pieces, full, atol=1e-5, rtol=1e-5)


def test_kv_cache_structure():
    cfg = CONFIGS[1]
    cache = KVCache(cfg, batch_size=3, dtype=torch.bfloat16)
    assert len(cache.keys) == len(cache.values) == cfg.n_layers and cache.length == 0
    assert cache.keys[0].shape == (3, cfg.n_heads, cfg.context_length, cfg.emb_dim // cfg.n_heads)
    assert cache.values[-1].dtype == torch.bfloat16


def test_cache_overflow_errors_name_both_numbers():
    cfg = GPTConfig(**TINY)
    model = make_model(cfg)
    with pytest.raises(ValueError, match=r"prompt \(10 tokens\) \+ max_new_tokens \(7\) = 17 exceeds context_length \(16\)"):
        generate_text_cached(model, torch.zeros(1, 10, dtype=torch.long), 7)
    cache = KVCache(cfg, 1)
    forward_cached(model, torch.zeros(1, 12, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"holds 12 tokens and 5 more.*12 \+ 5 > 16"):
        forward_cached(model, torch.zeros(1, 5, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"batch=1.*got \(2, 1\)"):
        forward_cached(model, torch.zeros(2, 1, dtype=torch.long), KVCache(cfg, 1))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        KVCache(cfg, 0)
    # exactly filling the context is fine
    assert generate_text_cached(model, torch.zeros(1, 10, dtype=torch.long), 6).shape == (1, 16)
    assert torch.equal(generate_text_cached(model, torch.ones(1, 3, dtype=torch.long), 0), torch.ones(1, 3, dtype=torch.long))


def test_fused_layer_norm_and_gelu_match_the_hand_written_forms():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, requires_grad=True)
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.scale.normal_(), ln.shift.normal_()
    for module in (ln, GELU()):
        plain = module(x)
        (grad_plain,) = torch.autograd.grad(plain.sum(), x)
        module.fused = True
        fused = module(x)
        (grad_fused,) = torch.autograd.grad(fused.sum(), x)
        torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad_fused, grad_plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_fused_flag_decides_whether_the_torch_kernel_runs(monkeypatch, fused):
    # Both forms give the same numbers, so only a spy shows that the flag really switches the kernel.
    calls = []
    for name in ("layer_norm", "gelu"):
        kernel = getattr(F, name)
        monkeypatch.setattr(F, name, lambda *a, _k=kernel, _n=name, **kw: calls.append(_n) or _k(*a, **kw))
    x = torch.randn(2, 3, 8)
    LayerNorm(8, fused=fused)(x), GELU(fused=fused)(x)
    assert calls == (["layer_norm", "gelu"] if fused else [])


def test_default_config_is_gpt2_small_124m_without_qkv_biases():
    import dataclasses
    cfg = GPTConfig()  # documented: GPT-2 small (124M) without qkv biases
    assert cfg == dataclasses.replace(GPT_CONFIGS["gpt2"], qkv_bias=False)
    assert (cfg.emb_dim, cfg.n_heads, cfg.n_layers, cfg.qkv_bias) == (768, 12, 12, False)
    assert gpt_param_count(cfg, tied=True) == 124_439_808 - 12 * 3 * 768  # 124M less the 12 layers' qkv biases


def test_layer_norm_and_gelu_default_to_the_hand_written_forms(monkeypatch):
    # The fused kernels are chapter 5's opt-in fast path; by default chapter 4's own maths runs.
    calls = []
    for name in ("layer_norm", "gelu"):
        kernel = getattr(F, name)
        monkeypatch.setattr(F, name, lambda *a, _k=kernel, _n=name, **kw: calls.append(_n) or _k(*a, **kw))
    assert LayerNorm(8).fused is False and GELU().fused is False
    with torch.no_grad():
        make_model(GPTConfig(**TINY))(torch.zeros(1, 3, dtype=torch.long))
    assert calls == []


def test_kv_cache_tensors_follow_the_requested_device_and_dtype():
    cfg = CONFIGS[1]
    cache = KVCache(cfg, batch_size=2, device="meta", dtype=torch.bfloat16)
    for t in cache.keys + cache.values:
        assert t.device.type == "meta" and t.dtype == torch.bfloat16
    default = KVCache(cfg, batch_size=2)
    for t in default.keys + default.values:
        assert t.device.type == "cpu" and t.dtype == torch.float32


def test_cached_generation_runs_one_forward_pass_per_needed_token():
    # prefill once, then one pass per new token except the last (its logits are never used); none for 0 tokens
    cfg = GPTConfig(**TINY)
    model = make_model(cfg)
    passes = []
    model.tok_emb.register_forward_hook(lambda module, args, out: passes.append(args[0].shape[1]))
    prompt = torch.randint(0, cfg.vocab_size, (2, 4))
    for n_new, expected in [(0, []), (1, [4]), (3, [4, 1, 1]), (cfg.context_length - 4, [4] + [1] * (cfg.context_length - 5))]:
        passes.clear()
        out = generate_text_cached(model, prompt, n_new)
        assert passes == expected, n_new
        assert torch.equal(out, generate_text_simple(model, prompt, n_new, cfg.context_length))
