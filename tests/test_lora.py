"""Tests of the LoRA bonus module (ch06_classification/lora.py)."""
import pytest
import torch
import torch.nn as nn

from ch04_gpt_model import GPTConfig, GPTModel
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
