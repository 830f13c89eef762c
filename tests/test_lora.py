"""Tests of the LoRA bonus module (ch06_classification/lora.py)."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import load_gpt2
from ch06_classification import LinearWithLoRA, LoRALayer, add_classification_head, apply_lora, merge_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_classifier(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True)
    return add_classification_head(GPTModel(cfg)).eval()


def randomise_adapters(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALayer):
                m.B.normal_()


IDS = torch.tensor([[1, 5, 9, 2, 7], [3, 3, 8, 0, 4]])


def test_lora_layer_shapes_scaling_and_zero_start():
    layer = LoRALayer(6, 4, rank=2, alpha=8)
    assert layer.A.shape == (6, 2) and layer.B.shape == (2, 4) and layer.scaling == 4.0
    assert torch.count_nonzero(layer(torch.randn(3, 6))) == 0
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(6, 4, rank=0, alpha=1)


def test_lora_layer_a_is_initialised_like_a_linear_weight():
    torch.manual_seed(0)
    layer = LoRALayer(768, 8, rank=8, alpha=8)
    bound = 1 / 768**0.5  # nn.Linear(768, 8): kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.9 * bound


def test_linear_with_lora_computes_linear_plus_scaled_update():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    wrapped = LinearWithLoRA(linear, rank=2, alpha=3)
    with torch.no_grad():
        wrapped.lora.B.normal_()
    x = torch.randn(5, 6)
    expected = linear(x) + 1.5 * (x @ wrapped.lora.A @ wrapped.lora.B)
    torch.testing.assert_close(wrapped(x), expected)


def test_zero_initialised_b_leaves_the_model_outputs_unchanged():
    model = tiny_classifier()
    with torch.no_grad():
        before = model(IDS)
    apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        assert torch.equal(model(IDS), before)


def test_apply_lora_wraps_every_linear_except_skipped_and_counts_adapters():
    model = tiny_classifier()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    n = apply_lora(model, rank=4, alpha=4, skip=("out_head",))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LinearWithLoRA)]
    assert sorted(wrapped) == sorted(x for x in linears if x != "out_head") and len(wrapped) == 6 * 2
    assert isinstance(model.out_head, nn.Linear)
    # each block: 4 attention projections 32->32, feed-forward 32->128 and 128->32
    assert n == 2 * 4 * (4 * (32 + 32) + (32 + 128) + (128 + 32))
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_only_the_adapters_and_an_unfrozen_head_receive_gradients():
    model = tiny_classifier()
    apply_lora(model, rank=4, alpha=4, skip=("out_head",))
    model.out_head.requires_grad_(True)
    model(IDS)[:, -1].sum().backward()
    for name, p in model.named_parameters():
        gets_grad = ".lora." in name or name.startswith("out_head.")
        assert (p.grad is not None) == gets_grad, name


def test_merged_and_unmerged_models_give_the_same_logits():
    model = tiny_classifier()
    apply_lora(model, rank=4, alpha=8, skip=("out_head",))
    randomise_adapters(model)
    with torch.no_grad():
        unmerged = model(IDS)
        assert not torch.allclose(unmerged, tiny_classifier()(IDS), atol=1e-3)  # the adapters do change the model
        merge_lora(model)
        merged = model(IDS)
    assert not any(isinstance(m, (LinearWithLoRA, LoRALayer)) for m in model.modules())
    assert (merged - unmerged).abs().max() <= 1e-5


def test_merged_layer_keeps_bias_absence_dtype_and_values():
    linear = nn.Linear(5, 3, bias=False).to(torch.float64)
    wrapped = LinearWithLoRA(linear, rank=2, alpha=2).to(torch.float64)
    with torch.no_grad():
        wrapped.lora.B.normal_()
    merged = wrapped.merged()
    assert merged.bias is None and merged.weight.dtype == torch.float64
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(merged(x), wrapped(x))


# --- peft as the oracle: the course's LoRA on GPT-2 against Hugging Face's ------------------------------
#
# A tiny random transformers GPT-2 is saved and loaded into GPTModel with chapter 5's load_gpt2; the course
# wraps its nn.Linear layers with apply_lora, peft wraps GPT-2's Conv1D layers, and the course's A and B are
# copied into peft's lora_A / lora_B. Per block, the layers correspond as chapter 5 maps their weights:
#
#     att.out_proj -> attn.c_proj       ff.layers.0 -> mlp.c_fc       ff.layers.2 -> mlp.c_proj
#     att.W_query, W_key, W_value -> attn.c_attn (one fused (d, 3d) layer)
#
# Orientation: the course's update is scaling * x @ A @ B with A (in, r) and B (r, out); peft's is
# scaling * lora_B(lora_A(x)) with nn.Linear weights lora_A (r, in) and lora_B (out, r), so lora_A = A^T and
# lora_B = B^T, also on Conv1D layers (fan_in_fan_out=True only transposes the merged update for them).
#
# The fused c_attn: three independent rank-r adapters on W_query, W_key, W_value are not one rank-r adapter
# on c_attn, but they are exactly one rank-3r adapter. Stack the three A's side by side, A = [A_q A_k A_v]
# (d, 3r), and put the three B's on the diagonal of B = diag(B_q, B_k, B_v) (3r, 3d), zero elsewhere: then
# x @ A @ B = [x A_q B_q | x A_k B_k | x A_v B_v], the queries', keys' and values' updates side by side, in
# c_attn's order. The zero blocks keep the query adapter from leaking into the keys and values. The scaling
# must stay alpha / r, so c_attn gets rank 3r and alpha 3 * alpha (peft's rank_pattern and alpha_pattern).

RANK, ALPHA = 4, 8  # alpha != rank: alpha / rank = 2, alpha alone = 8, rsLoRA's alpha / sqrt(rank) = 4
HF_LORA_TINY = dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=97, bos_token_id=None, eos_token_id=None)
GPT2_IDS = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
LORA_ATOL = 1e-5  # float32
# peft calls a transformers method that transformers 5 deprecates: not ours to fix
quiet_peft = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def gpt2_with_course_lora(folder):
    """A tiny random transformers GPT-2, and the same model in GPTModel (via load_gpt2) with random adapters."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_LORA_TINY))
    with torch.no_grad():  # non-zero biases and non-unit LayerNorms, so every mapped tensor matters
        for p in hf.parameters():
            p.add_(0.02 * torch.randn_like(p))
    hf.save_pretrained(folder)
    course = load_gpt2(folder).eval()
    apply_lora(course, rank=RANK, alpha=ALPHA, skip=("out_head",))
    with torch.no_grad():
        for m in course.modules():
            if isinstance(m, LoRALayer):
                m.A.normal_(std=0.2)  # both drawn afresh: B starts at zero (no update at all)
                m.B.normal_(std=0.2)
    return hf.eval(), course


def peft_twin(hf, course, scaling: float):
    """A copy of hf with peft LoRA adapters holding course's A and B; scaling as peft computes it from r, alpha."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(
        r=RANK,
        lora_alpha=scaling * RANK,
        target_modules=["c_attn", "c_proj", "c_fc"],  # "c_proj" matches attn.c_proj and mlp.c_proj
        rank_pattern={"c_attn": 3 * RANK},  # q, k and v adapters side by side (see the comment above)
        alpha_pattern={"c_attn": 3 * scaling * RANK},  # so that c_attn's alpha / r is scaling too
        lora_dropout=0.0,
        use_rslora=False,
        fan_in_fan_out=True,  # GPT-2's Conv1D stores weights (in, out)
        bias="none",
    )
    model = peft.get_peft_model(copy.deepcopy(hf), config).eval()
    with torch.no_grad():
        for i, block in enumerate(course.trf_blocks):
            h = model.base_model.model.transformer.h[i]
            pairs = [
                (block.att.out_proj, h.attn.c_proj),
                (block.ff.layers[0], h.mlp.c_fc),
                (block.ff.layers[2], h.mlp.c_proj),
            ]
            for ours, theirs in pairs:
                theirs.lora_A["default"].weight.copy_(ours.lora.A.T)
                theirs.lora_B["default"].weight.copy_(ours.lora.B.T)
            qkv = [block.att.W_query.lora, block.att.W_key.lora, block.att.W_value.lora]
            h.attn.c_attn.lora_A["default"].weight.copy_(torch.cat([m.A for m in qkv], dim=1).T)  # (3r, d)
            h.attn.c_attn.lora_B["default"].weight.copy_(torch.block_diag(*[m.B for m in qkv]).T)  # (3d, 3r)
    return model


@quiet_peft
def test_course_lora_matches_peft_on_gpt2_unmerged_and_merged(tmp_path):
    hf, course = gpt2_with_course_lora(tmp_path)
    twin = peft_twin(hf, course, scaling=ALPHA / RANK)
    with torch.no_grad():
        base = hf(GPT2_IDS).logits
        ours, theirs = course(GPT2_IDS), twin(input_ids=GPT2_IDS).logits
        assert (ours - base).abs().max().item() > 0.1  # the adapters change the logits: matching peft means something
        assert (ours - theirs).abs().max().item() <= LORA_ATOL
        merged_ours = merge_lora(course)(GPT2_IDS)
        merged_theirs = twin.merge_and_unload()(GPT2_IDS).logits
    assert not any(isinstance(m, LinearWithLoRA) for m in course.modules())
    assert (merged_ours - merged_theirs).abs().max().item() <= LORA_ATOL
    assert (merged_ours - ours).abs().max().item() <= LORA_ATOL


@quiet_peft
def test_scaling_is_peft_default_alpha_over_rank_not_alpha_alone_nor_rslora(tmp_path):
    peft = pytest.importorskip("peft")
    default = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["0"])  # peft's defaults: no rsLoRA
    layer = peft.get_peft_model(nn.Sequential(nn.Linear(6, 5)), default)
    assert layer.base_model.model[0].scaling["default"] == LoRALayer(6, 5, RANK, ALPHA).scaling == ALPHA / RANK
    # The comparison with peft is sharp enough to tell the scalings apart: peft twins scaled by alpha alone and
    # by rsLoRA's alpha / sqrt(rank) give logits far (> 1e-3) from the course's.
    hf, course = gpt2_with_course_lora(tmp_path)
    with torch.no_grad():
        ours = course(GPT2_IDS)
        for wrong in (ALPHA, ALPHA / math.sqrt(RANK)):
            theirs = peft_twin(hf, course, scaling=wrong)(input_ids=GPT2_IDS).logits
            assert (ours - theirs).abs().max().item() > 100 * LORA_ATOL


def test_lora_layer_a_draws_exactly_what_nn_linear_draws():
    # The bound test above allows a gain ~7% off (kaiming a=sqrt(6) instead of sqrt(5) passed it): the same seed
    # must give nn.Linear(in_dim, rank)'s weight values (A.T is filled in another order, so compare them sorted).
    torch.manual_seed(0)
    layer = LoRALayer(768, 8, rank=8, alpha=8)
    torch.manual_seed(0)
    linear = nn.Linear(768, 8)
    assert torch.equal(layer.A.detach().flatten().sort().values, linear.weight.detach().flatten().sort().values)
