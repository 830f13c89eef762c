"""Tests for ch03_attention: causal attention modules checked against torch's SDPA and each other."""
import math

import pytest
import torch
import torch.nn.functional as F

from ch03_attention import CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, causal_mask

SHAPES = [  # (batch, tokens, d_in, d_out, n_heads)
    (1, 1, 8, 8, 2),
    (2, 7, 16, 24, 3),
    (3, 33, 32, 64, 8),
    (2, 128, 768, 768, 12),
]


def sdpa_reference(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """The module's projections around torch's own causal scaled_dot_product_attention."""
    b, t, _ = x.shape
    q, k, v = (proj(x).view(b, t, mha.n_heads, mha.head_dim).transpose(1, 2)
               for proj in (mha.W_query, mha.W_key, mha.W_value))
    ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, n_heads, t, head_dim)
    return mha.out_proj(ctx.transpose(1, 2).reshape(b, t, mha.d_out))


@pytest.mark.parametrize("batch,tokens,d_in,d_out,n_heads", SHAPES)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_mha_matches_torch_sdpa(batch, tokens, d_in, d_out, n_heads, qkv_bias):
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_in, d_out, context_length=128, n_heads=n_heads, qkv_bias=qkv_bias).eval()
    x = torch.randn(batch, tokens, d_in)
    with torch.no_grad():
        out = mha(x)
        ref = sdpa_reference(mha, x)
    assert out.shape == (batch, tokens, d_out)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("batch,tokens,d_in,d_out,n_heads", SHAPES)
def test_use_sdpa_path_equals_manual_path(batch, tokens, d_in, d_out, n_heads):
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_in, d_out, 128, n_heads, drop_rate=0.0).eval()
    x = torch.randn(batch, tokens, d_in)
    with torch.no_grad():
        manual = mha(x)
        mha.use_sdpa = True
        fused = mha(x)
    torch.testing.assert_close(fused, manual, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_use_sdpa_decides_whether_torch_sdpa_runs(monkeypatch, use_sdpa):
    # Both paths give the same numbers, so only a spy shows that the switch really changes the kernel.
    calls, sdpa = [], F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    mha = MultiHeadAttention(8, 8, 16, 2, use_sdpa=use_sdpa).eval()
    with torch.no_grad():
        mha(torch.randn(1, 5, 8))  # full causal attention
        mha.attend(*(torch.randn(1, 2, n, 4) for n in (1, 5, 5)))  # one query over cached keys
    assert len(calls) == (2 if use_sdpa else 0)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_attend_with_fewer_queries_than_keys_gives_the_last_rows(use_sdpa):
    # What a key-value cache needs: the last t_q queries attending to all t_k keys must give the
    # last t_q rows of full causal attention (bottom-right alignment of the mask).
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 32, 4, use_sdpa=use_sdpa).eval()
    q, k, v = (torch.randn(2, 4, 10, 4) for _ in range(3))
    full = mha.attend(q, k, v)
    for t_q in (1, 3):
        torch.testing.assert_close(mha.attend(q[:, :, -t_q:], k, v), full[:, :, -t_q:], atol=1e-6, rtol=1e-5)


def test_wrapper_is_concatenation_of_causal_heads():
    torch.manual_seed(0)
    d_in, d_out, n_heads = 12, 12, 3
    wrapper = MultiHeadAttentionWrapper(d_in, d_out, 16, n_heads).eval()
    x = torch.randn(2, 9, d_in)
    assert len(wrapper.heads) == n_heads
    assert all(isinstance(h, CausalAttention) and h.d_out == d_out // n_heads for h in wrapper.heads)
    with torch.no_grad():
        out = wrapper(x)
        # Each head checked against torch's causal SDPA with a single head.
        per_head = []
        for h in wrapper.heads:
            q, k, v = h.W_query(x), h.W_key(x), h.W_value(x)
            per_head.append(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.testing.assert_close(out, torch.cat(per_head, dim=-1), atol=1e-6, rtol=1e-5)


def test_efficient_mha_equals_wrapper_with_copied_weights():
    torch.manual_seed(0)
    d_in, d_out, n_heads = 10, 12, 4
    wrapper = MultiHeadAttentionWrapper(d_in, d_out, 16, n_heads, qkv_bias=True).eval()
    mha = MultiHeadAttention(d_in, d_out, 16, n_heads, qkv_bias=True).eval()
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            getattr(mha, name).weight.copy_(torch.cat([getattr(h, name).weight for h in wrapper.heads]))
            getattr(mha, name).bias.copy_(torch.cat([getattr(h, name).bias for h in wrapper.heads]))
        mha.out_proj.weight.copy_(torch.eye(d_out))
        mha.out_proj.bias.zero_()
        x = torch.randn(3, 11, d_in)
        torch.testing.assert_close(mha(x), wrapper(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("module", ["causal", "wrapper", "mha", "mha_sdpa"])
def test_perturbing_a_token_leaves_earlier_outputs_unchanged(module):
    torch.manual_seed(0)
    make = {
        "causal": lambda: CausalAttention(8, 8, 16),
        "wrapper": lambda: MultiHeadAttentionWrapper(8, 8, 16, 2),
        "mha": lambda: MultiHeadAttention(8, 8, 16, 2),
        "mha_sdpa": lambda: MultiHeadAttention(8, 8, 16, 2, use_sdpa=True),
    }[module]
    m = make().eval()
    x = torch.randn(2, 10, 8)
    for t in (0, 4, 9):
        x2 = x.clone()
        x2[:, t] += 5 * torch.randn(8)
        with torch.no_grad():
            y, y2 = m(x), m(x2)
        assert torch.equal(y[:, :t], y2[:, :t]), f"outputs before position {t} changed"
        assert not torch.allclose(y[:, t], y2[:, t]), "the perturbed position itself should change"


def test_gradient_of_early_output_wrt_future_inputs_is_zero():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 8, 16, 2)
    x = torch.randn(1, 6, 8, requires_grad=True)
    mha(x)[0, 2].sum().backward()
    assert torch.all(x.grad[0, 3:] == 0)
    assert torch.all(x.grad[0, :3].abs().sum(dim=-1) > 0)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_dropout_only_in_train_mode(use_sdpa):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 32, 4, drop_rate=0.5, use_sdpa=use_sdpa)
    x = torch.randn(2, 12, 16)
    mha.train()
    a, b = mha(x), mha(x)
    assert not torch.allclose(a, b), "train mode with drop_rate=0.5 should be random"
    mha.eval()
    with torch.no_grad():
        c, d = mha(x), mha(x)
        mha.dropout.p = 0.0
        e = mha(x)
    assert torch.equal(c, d)
    torch.testing.assert_close(c, e)  # eval mode == no dropout at all


def test_causal_attention_dropout_rescales_survivors():
    torch.manual_seed(0)
    ca = CausalAttention(4, 4, 8, drop_rate=0.5).train()
    # With identical tokens every row of weights is uniform over the visible prefix, and the values
    # are identical, so each output is value * (sum of surviving weights * 2).
    x = torch.ones(1, 8, 4)
    out = ca(x)
    v = ca.W_value(x[:, :1])  # (1, 1, 4)
    c = v[0, 0].abs().argmax()  # the largest component, for a well-conditioned ratio
    kept_per_row = []
    for t in range(8):
        kept = (out[0, t, c] / v[0, 0, c]).item() * (t + 1) / 2  # surviving entries in row t
        assert abs(kept - round(kept)) < 1e-4 and 0 <= round(kept) <= t + 1
        kept_per_row.append(round(kept))
    assert sum(kept_per_row) < sum(range(1, 9)), "some weights should have been dropped"


def test_d_out_not_divisible_by_n_heads_raises():
    with pytest.raises(ValueError, match=r"d_out \(768\) must be divisible by n_heads \(10\)"):
        MultiHeadAttention(768, 768, 1024, n_heads=10)
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by n_heads \(4\)"):
        MultiHeadAttentionWrapper(8, 10, 16, n_heads=4)


@pytest.mark.parametrize("cls", [MultiHeadAttention, MultiHeadAttentionWrapper])
@pytest.mark.parametrize("n_heads", [0, -2, 2.0, True])
def test_n_heads_must_be_a_positive_integer(cls, n_heads):
    with pytest.raises(ValueError, match=f"n_heads must be a positive integer, got {n_heads!r}"):
        cls(8, 8, 16, n_heads=n_heads)


@pytest.mark.parametrize("make", [
    lambda: MultiHeadAttention(8, 8, 16, 2),
    lambda: MultiHeadAttention(8, 8, 16, 2, use_sdpa=True),
    lambda: CausalAttention(8, 8, 16),
    lambda: MultiHeadAttentionWrapper(8, 8, 16, 2),
])
def test_too_long_input_raises_with_both_numbers(make):
    m = make()
    m(torch.randn(1, 16, 8))  # exactly context_length is fine
    with pytest.raises(ValueError, match=r"17 tokens but context_length is 16"):
        m(torch.randn(1, 17, 8))


def test_wrong_input_shape_raises():
    mha = MultiHeadAttention(8, 8, 16, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, tokens, 8\), got \(1, 4, 7\)"):
        mha(torch.randn(1, 4, 7))
    with pytest.raises(ValueError, match=r"got \(4, 8\)"):
        mha(torch.randn(4, 8))


def test_causal_mask_shape_and_content():
    m = causal_mask(5)
    assert m.shape == (5, 5) and m.dtype == torch.bool
    assert torch.equal(m, torch.ones(5, 5).triu(1).bool())
    assert not m.diagonal().any()


def test_mask_buffer_shape_is_not_saved_and_moves_with_to():
    mha = MultiHeadAttention(8, 8, 16, 2)
    assert mha.mask.shape == (16, 16)
    assert "mask" in dict(mha.named_buffers())
    assert "mask" not in mha.state_dict()  # persistent=False
    assert "mask" not in dict(mha.named_parameters())
    mha.to(torch.float64)
    assert mha.W_query.weight.dtype == torch.float64
    assert mha.mask.dtype == torch.bool  # .to(dtype) converts floating tensors only
    mha(torch.randn(1, 5, 8, dtype=torch.float64))  # still runs
    mha.to("meta")
    assert mha.mask.device.type == "meta" and mha.W_query.weight.device.type == "meta"
    ca = CausalAttention(8, 8, 16).to("meta")
    assert ca.mask.device.type == "meta" and ca.mask.shape == (16, 16)


def test_state_dict_roundtrip_across_context_lengths():
    # The mask is not saved, so weights load into a model with a different context_length.
    torch.manual_seed(0)
    a = MultiHeadAttention(8, 8, 16, 2).eval()
    b = MultiHeadAttention(8, 8, 64, 2).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_gradient_flows_to_every_parameter(use_sdpa):
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 8, 16, 2, qkv_bias=True, use_sdpa=use_sdpa)
    x = torch.randn(2, 6, 8, requires_grad=True)
    mha(x).pow(2).sum().backward()
    for name, p in mha.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gradients_of_both_paths_agree():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 16, 4)
    x = torch.randn(2, 9, 16)
    grads = []
    for flag in (False, True):
        mha.zero_grad()
        mha.use_sdpa = flag
        mha(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in mha.parameters()])
    for g_manual, g_sdpa in zip(*grads):
        torch.testing.assert_close(g_sdpa, g_manual, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_gpt2_small_parameter_count(qkv_bias):
    emb_dim = 768
    mha = MultiHeadAttention(emb_dim, emb_dim, context_length=1024, n_heads=12, qkv_bias=qkv_bias)
    expected = 4 * emb_dim * emb_dim + emb_dim + (3 * emb_dim if qkv_bias else 0)
    assert sum(p.numel() for p in mha.parameters()) == expected
    assert mha.head_dim == 64


def test_single_head_equals_formula():
    # softmax(q k^T / sqrt(d) + causal mask) v, written out with explicit loops over positions.
    torch.manual_seed(0)
    ca = CausalAttention(5, 3, 8).eval()
    x = torch.randn(1, 4, 5)
    with torch.no_grad():
        q, k, v = ca.W_query(x)[0], ca.W_key(x)[0], ca.W_value(x)[0]
        expected = []
        for i in range(4):
            s = torch.stack([q[i] @ k[j] / math.sqrt(3) for j in range(i + 1)])
            expected.append((torch.softmax(s, dim=0)[:, None] * v[: i + 1]).sum(dim=0))
        torch.testing.assert_close(ca(x)[0], torch.stack(expected))
