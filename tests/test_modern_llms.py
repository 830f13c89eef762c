"""The Llama 3 / Qwen3-style model of ch05_pretraining/modern_llms.ipynb against transformers (offline, random weights)."""
import pytest
import torch

from ch04_gpt_model import generate_text_simple
from ch05_pretraining.modern_llms import (
    LLAMA32_1B,
    QWEN3_0_6B,
    GroupedQueryAttention,
    ModernConfig,
    ModernKVCache,
    ModernModel,
    RMSNorm,
    apply_rope,
    count_parameters,
    load_hf_state_dict,
    modern_config_from_hf,
    rope_cos_sin,
    rope_inv_freq,
)

from ch07_instruction import generate_batched

transformers = pytest.importorskip("transformers")

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}

# (model type, config overrides): GQA, MQA, MHA, tied and untied heads, llama3 RoPE scaling, QK-norm
CASES = [
    ("llama", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)),
    ("llama", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                   rope_scaling=LLAMA3_SCALING, rope_theta=500_000.0)),
    ("llama", dict(num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True, head_dim=24)),
    ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)),
    ("qwen3", dict(num_attention_heads=8, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
                   rope_theta=1_000_000.0)),
]


def hf_model(kind: str, seed: int, **overrides):
    """A small random transformers model (float32, eval mode) and its config as a dict."""
    base = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, max_position_embeddings=64,
                rms_norm_eps=1e-6)
    base.update(overrides)
    config_cls = transformers.LlamaConfig if kind == "llama" else transformers.Qwen3Config
    model_cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen3ForCausalLM
    config = config_cls(**base)
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    with torch.no_grad():  # norms start at 1: make them random, so a missed or swapped norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model, config.to_dict()


def course_model(hf, hf_config: dict) -> ModernModel:
    return load_hf_state_dict(ModernModel(modern_config_from_hf(hf_config)), hf.state_dict()).eval()


@pytest.mark.parametrize("kind,overrides", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_logits_match_transformers(kind, overrides):
    hf, hf_config = hf_model(kind, seed=len(str(overrides)), **overrides)
    ours = course_model(hf, hf_config)
    idx = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max().item()


def test_config_from_hf_reads_the_features_that_matter():
    _, cfg = hf_model("llama", 0, **CASES[1][1])
    ours = modern_config_from_hf(cfg)
    assert (ours.n_kv_heads, ours.tie_embeddings, ours.qk_norm) == (1, True, False)
    assert ours.rope_scaling["rope_type"] == "llama3" and ours.rope_theta == 500_000.0
    _, cfg = hf_model("qwen3", 0, **CASES[3][1])
    ours = modern_config_from_hf(cfg, context_length=32)
    assert (ours.head_dim, ours.qk_norm, ours.context_length, ours.rope_scaling) == (16, True, 32, None)


def test_llama3_scaling_changes_only_the_slow_and_middle_frequencies():
    plain, scaled = rope_inv_freq(64, 500_000.0), rope_inv_freq(64, 500_000.0, LLAMA32_1B.rope_scaling)
    wavelen = 2 * torch.pi / plain
    fast = wavelen < 8192 / 4  # high_freq_factor 4: wavelengths under 2,048 tokens are kept
    slow = wavelen > 8192 / 1
    assert torch.equal(scaled[fast], plain[fast])
    assert torch.allclose(scaled[slow], plain[slow] / 32)
    assert ((scaled[~fast & ~slow] < plain[~fast & ~slow]) & (scaled[~fast & ~slow] > plain[~fast & ~slow] / 32)).all()


def test_rope_scores_depend_only_on_the_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = rope_cos_sin(rope_inv_freq(16, 10_000.0), 100)

    def score(m, n):
        return (apply_rope(q, cos[m], sin[m]) * apply_rope(k, cos[n], sin[n])).sum()

    assert torch.allclose(score(7, 3), score(90, 86), atol=1e-5)
    assert not torch.allclose(score(7, 3), score(30, 3), atol=1e-2)  # another distance, another score


def test_published_parameter_counts_match_transformers_on_the_meta_device():
    hf_llama = transformers.LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)
    hf_qwen = transformers.Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)
    for cfg, hf_cfg, cls, published in [(LLAMA32_1B, hf_llama, transformers.LlamaForCausalLM, 1_235_814_400),
                                        (QWEN3_0_6B, hf_qwen, transformers.Qwen3ForCausalLM, 596_049_920)]:
        with torch.device("meta"):
            hf_count = sum(p.numel() for p in cls(hf_cfg).parameters())
        assert count_parameters(cfg) == hf_count == published


def test_a_missing_or_misshapen_tensor_is_named():
    hf, cfg = hf_model("qwen3", 0, **CASES[3][1])
    state = dict(hf.state_dict())
    del state["model.layers.1.self_attn.k_norm.weight"]
    with pytest.raises(KeyError, match=r"model\.layers\.1\.self_attn\.k_norm\.weight"):
        load_hf_state_dict(ModernModel(modern_config_from_hf(cfg)), state)
    state = dict(hf.state_dict())
    state["model.layers.0.mlp.down_proj.weight"] = torch.zeros(48, 3)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.down_proj\.weight has shape \(48, 3\)"):
        load_hf_state_dict(ModernModel(modern_config_from_hf(cfg)), state)


def test_qk_norm_is_used_and_n_heads_must_divide():
    att = GroupedQueryAttention(32, 4, 2, 8, qk_norm=True)
    x = torch.randn(1, 5, 32)
    cos, sin = rope_cos_sin(rope_inv_freq(8, 10_000.0), 5)
    before = att(x, cos, sin)
    with torch.no_grad():
        att.k_norm.weight.mul_(2.0)
    assert not torch.allclose(att(x, cos, sin), before)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        GroupedQueryAttention(32, 4, 3, 8)


def test_rmsnorm_matches_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    theirs, ours = LlamaRMSNorm(24, eps=1e-5), RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        ours.weight.copy_(theirs.weight)
    x = torch.randn(3, 7, 24) * 4 + 2
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    assert torch.allclose(ours(x.bfloat16()).float(), theirs(x.bfloat16()).float(), atol=1e-2)


def test_too_long_input_is_refused():
    model = ModernModel(ModernConfig(vocab_size=10, emb_dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8,
                                     hidden_dim=24, context_length=4))
    with pytest.raises(ValueError, match="0 cached \\+ 5 new tokens exceed the 4 positions"):
        model(torch.zeros(1, 5, dtype=torch.long))
    cache = ModernKVCache(model.cfg, 1, max_length=3)
    model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="2 cached \\+ 2 new tokens exceed the 3 positions"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("kind,overrides", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_greedy_tokens_are_the_same_with_and_without_the_kv_cache(kind, overrides):
    hf, hf_config = hf_model(kind, seed=len(str(overrides)), **overrides)
    ours = course_model(hf, hf_config)
    idx = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    plain = generate_text_simple(ours, idx, max_new_tokens=20, context_length=64)[:, 9:]  # no cache
    cached = generate_batched(ours, idx.tolist(), max_new_tokens=20, eos_id=None)  # chapter 7's cached loop
    assert cached == plain.tolist()
    with torch.no_grad():  # and transformers' own greedy search on the same weights
        theirs = hf.generate(idx, max_new_tokens=20, do_sample=False, min_new_tokens=20, pad_token_id=0)[:, 9:]
    assert cached == theirs.tolist()


def test_several_new_tokens_after_cached_ones_see_the_right_keys():
    hf, hf_config = hf_model("qwen3", 3, **CASES[3][1])
    ours = course_model(hf, hf_config)
    idx = torch.randint(0, 97, (2, 15), generator=torch.Generator().manual_seed(3))
    cache = ModernKVCache(ours.cfg, batch_size=2, max_length=15)
    with torch.no_grad():
        full = ours(idx)
        parts = [ours(idx[:, :6], cache=cache), ours(idx[:, 6:7], cache=cache), ours(idx[:, 7:], cache=cache)]
    assert cache.length == 15
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_the_cache_holds_only_the_shared_key_value_heads():
    cfg = modern_config_from_hf(hf_model("llama", 0, **CASES[0][1])[1])
    cache = ModernKVCache(cfg, batch_size=3, max_length=11, dtype=torch.bfloat16)
    assert cache.keys[0].shape == (3, cfg.n_kv_heads, 11, cfg.head_dim) and len(cache.values) == cfg.n_layers
    assert cache.nbytes == cfg.n_layers * 2 * 3 * cfg.n_kv_heads * 11 * cfg.head_dim * 2
    assert ModernKVCache(cfg, 1).max_length == cfg.context_length


@pytest.mark.parametrize("kind,overrides", [CASES[1], CASES[4]], ids=["llama-mqa-llama3", "qwen3-untied"])
def test_left_padded_batches_give_each_prompt_its_own_answer(kind, overrides):
    hf, hf_config = hf_model(kind, seed=5, **overrides)
    ours = course_model(hf, hf_config)
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(1, 97, (n,), generator=gen).tolist() for n in (3, 11, 7, 1)]
    together = generate_batched(ours, prompts, max_new_tokens=12, eos_id=None, pad_id=0)
    alone = [generate_batched(ours, [p], max_new_tokens=12, eos_id=None)[0] for p in prompts]
    assert together == alone
    sampled = [generate_batched(ours, prompts, 12, eos_id=None, pad_id=0, temperature=1.0,
                                generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0] != together  # seeded sampling: repeatable, not greedy


@pytest.mark.parametrize("weights,amp", [(torch.bfloat16, None), (torch.float32, torch.bfloat16), (torch.float32, None)])
def test_generate_batched_keeps_the_cache_in_the_compute_dtype(monkeypatch, weights, amp):
    import ch07_instruction.instruction as instruction

    made = []

    class Recording(ModernKVCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(instruction, "ModernKVCache", Recording)
    hf, hf_config = hf_model("qwen3", 0, **CASES[3][1])
    ours = course_model(hf, hf_config).to(weights)
    new = generate_batched(ours, [[1, 2, 3], [4, 5]], max_new_tokens=4, eos_id=None, pad_id=0, amp_dtype=amp)
    assert [len(ids) for ids in new] == [4, 4]
    assert made[0].keys[0].dtype == (amp or weights) and made[0].max_length == 3 + 4  # prompt width + new tokens
