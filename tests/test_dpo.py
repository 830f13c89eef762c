"""Tests of the DPO bonus module (ch07_instruction/dpo.py)."""
import json
import math
import os

import pytest
import tiktoken
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import END_OF_TEXT_ID, TrainConfig, train_model
from ch07_instruction import (
    PreferenceDataset,
    download_preference_data,
    dpo_loss,
    dpo_metrics,
    format_prompt,
    load_preference_data,
    make_dpo_eval,
    make_dpo_loss,
    preference_collate,
    sequence_logprobs,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50257, context_length=96, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)
P = END_OF_TEXT_ID
PAIRS = [{"instruction": "Say hi.", "chosen": "Hello, nice to meet you.", "rejected": "What do you want?"},
         {"instruction": "Add 2 and 2.", "input": "", "chosen": "2 + 2 is 4.", "rejected": "4, obviously, duh."}] * 4


def tiny_model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(**TINY)).eval()


def test_download_and_load_the_preference_data(tmp_path):
    if not os.environ.get("LLMS_DATA_MIRROR"):
        pytest.skip("needs LLMS_DATA_MIRROR (the offline data mirror)")
    data = load_preference_data(download_preference_data(tmp_path))
    assert len(data) == 1100 and sum(e["chosen"] == e["rejected"] for e in data) == 6  # 6 pairs carry no preference
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "chosen": "y"}]))
    with pytest.raises(ValueError, match="no 'rejected'"):
        load_preference_data(bad)


def test_collate_pads_each_side_and_masks_the_answers():
    toy = [(2, [0, 1, 2, 3], [0, 1, 4]), (1, [5, 6], [5, 7, 8, 9])]
    batch = preference_collate(toy)
    assert batch["chosen"].tolist() == [[0, 1, 2, 3, P], [5, 6, P, P, P]]
    assert batch["chosen_mask"].int().tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch["rejected"].tolist() == [[0, 1, 4, P, P], [5, 7, 8, 9, P]]
    assert batch["rejected_mask"].int().tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]]
    cut = preference_collate(toy, max_length=3)
    assert cut["chosen"].tolist() == [[0, 1, 2], [5, 6, P]] and cut["chosen_mask"].int().tolist() == [[0, 0, 1], [0, 1, 1]]
    with pytest.raises(ValueError, match="empty batch"):
        preference_collate([])


def test_dataset_shares_the_prompt():
    tok = tiktoken.get_encoding("gpt2")
    ds = PreferenceDataset(PAIRS[:2], tok)
    prompt_len, chosen, rejected = ds[0]
    prompt = tok.encode(format_prompt(PAIRS[0]))
    assert prompt_len == len(prompt) and chosen[:prompt_len] == prompt == rejected[:prompt_len]
    assert tok.decode(chosen[prompt_len:]) == PAIRS[0]["chosen"]


def test_sequence_logprobs_sums_the_answer_tokens_only():
    model = tiny_model()
    batch = preference_collate([(2, [10, 11, 12, 13], [10, 11, 14])])
    ids, mask = batch["chosen"], batch["chosen_mask"]  # answer: 12, 13 and the end-of-text
    with torch.no_grad():
        got = sequence_logprobs(model, ids, mask)
        logp = torch.log_softmax(model(ids[:, :-1]), dim=-1)[0]
    expected = logp[1, 12] + logp[2, 13] + logp[3, P]
    assert got.shape == (1,) and torch.allclose(got[0], expected)
    with torch.no_grad():  # padding after the end-of-text changes nothing
        padded = preference_collate([(2, [10, 11, 12, 13], [10, 11, 14]), (1, [1, 2, 3, 4, 5, 6, 7], [1, 2])])
        assert torch.allclose(sequence_logprobs(model, padded["chosen"], padded["chosen_mask"])[0], got[0], atol=1e-5)


def test_dpo_loss_equals_a_hand_computation():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-13.0, -2.0])
    rc, rr = torch.tensor([-12.0, -4.0]), torch.tensor([-12.0, -4.0])
    loss, r_c, r_r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    margins = [0.5 * ((-10 + 12) - (-13 + 12)), 0.5 * ((-3 + 4) - (-2 + 4))]  # 1.5 and -0.5
    expected = sum(-math.log(1 / (1 + math.exp(-m))) for m in margins) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert r_c.tolist() == pytest.approx([1.0, 0.5]) and r_r.tolist() == pytest.approx([-0.5, 1.0])
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0)


def test_dpo_loss_is_log2_when_the_policy_is_the_reference():
    policy, reference = tiny_model(), tiny_model()
    batch = preference_collate(PreferenceDataset(PAIRS[:2], tiktoken.get_encoding("gpt2")))
    with torch.no_grad():
        loss = make_dpo_loss(reference)(batch, policy, "cpu")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    other = tiny_model(seed=1)
    with torch.no_grad():
        assert abs(make_dpo_loss(reference)(batch, other, "cpu").item() - math.log(2)) > 1e-3


def test_gradient_flows_only_to_the_policy():
    policy, reference = tiny_model(), tiny_model()
    batch = preference_collate(PreferenceDataset(PAIRS[:2], tiktoken.get_encoding("gpt2")))
    with torch.no_grad():  # make them differ, so the loss has a gradient at all
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    make_dpo_loss(reference)(batch, policy, "cpu").backward()
    assert all(p.grad is None for p in reference.parameters())
    assert sum(float(p.grad.abs().sum()) for p in policy.parameters() if p.grad is not None) > 0


def test_training_with_train_model_prefers_the_chosen_answers():
    tok = tiktoken.get_encoding("gpt2")
    policy, reference = tiny_model(), tiny_model()
    reference.requires_grad_(False)
    loader = DataLoader(PreferenceDataset(PAIRS, tok), batch_size=4, shuffle=False, collate_fn=preference_collate)
    before = dpo_metrics(policy, reference, loader, "cpu")
    assert before["accuracy"] == 0.0 and before["loss"] == pytest.approx(math.log(2), abs=1e-6)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    cfg = TrainConfig(num_epochs=5, peak_lr=1e-3, min_lr=1e-3, warmup_steps=0, eval_freq=5, eval_iter=2)
    history = train_model(policy, loader, loader, optimizer, "cpu", cfg, loss_fn=make_dpo_loss(reference),
                          eval_fn=make_dpo_eval(reference), progress=False)
    assert set(history) >= {"train_loss", "val_loss", "val_margin", "val_accuracy"}
    after = dpo_metrics(policy, reference, loader, "cpu")
    assert after["loss"] < math.log(2) - 0.1 and after["margin"] > 0 and after["accuracy"] == 1.0
    assert dpo_metrics(policy, reference, [], "cpu")["accuracy"] != dpo_metrics(policy, reference, [], "cpu")["accuracy"]  # nan


def linear_output_dtypes(model: torch.nn.Module) -> tuple[set, list]:
    """(a set that collects the dtypes of every nn.Linear output while the model runs, the hooks to remove)."""
    seen = set()
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def test_a_non_default_beta_reaches_the_loss_the_metrics_and_the_evaluation():
    # Every other test uses beta=0.1, the default: a beta dropped on the way to dpo_loss would go unnoticed.
    policy, reference, beta = tiny_model(seed=1), tiny_model(), 0.7
    batch = preference_collate(PreferenceDataset(PAIRS[:2], tiktoken.get_encoding("gpt2")))
    with torch.no_grad():
        pc, pr = (sequence_logprobs(policy, batch[k], batch[f"{k}_mask"]) for k in ("chosen", "rejected"))
        rc, rr = (sequence_logprobs(reference, batch[k], batch[f"{k}_mask"]) for k in ("chosen", "rejected"))
        margins = beta * ((pc - rc) - (pr - rr))
        by_hand = torch.log1p(torch.exp(-margins)).mean().item()  # -log sigmoid(m) = log(1 + e^-m)
        assert by_hand != pytest.approx(make_dpo_loss(reference)(batch, policy, "cpu").item(), rel=1e-3)
        assert make_dpo_loss(reference, beta=beta)(batch, policy, "cpu").item() == pytest.approx(by_hand, rel=1e-5)
        metrics = dpo_metrics(policy, reference, [batch], "cpu", beta=beta)
        evaluated = make_dpo_eval(reference, beta=beta)(policy, [batch], [batch], "cpu", 1)
    assert metrics["loss"] == pytest.approx(by_hand, rel=1e-5)
    assert metrics["margin"] == pytest.approx(margins.mean().item(), rel=1e-5)
    assert evaluated["val_loss"] == evaluated["train_loss"] == pytest.approx(by_hand, rel=1e-5)
    assert evaluated["val_margin"] == pytest.approx(margins.mean().item(), rel=1e-5)


def test_amp_dtype_reaches_both_models_in_the_loss_and_the_metrics():
    # The loss under bfloat16 is close to the float32 one, so only the dtype the models compute in shows the switch.
    policy, reference = tiny_model(seed=1), tiny_model()
    batch = preference_collate(PreferenceDataset(PAIRS[:2], tiktoken.get_encoding("gpt2")))
    for run in (lambda: make_dpo_loss(reference)(batch, policy, "cpu", torch.bfloat16),
                lambda: dpo_metrics(policy, reference, [batch], "cpu", amp_dtype=torch.bfloat16),
                lambda: make_dpo_eval(reference)(policy, [batch], [batch], "cpu", 1, torch.bfloat16)):
        (seen_p, hooks_p), (seen_r, hooks_r) = linear_output_dtypes(policy), linear_output_dtypes(reference)
        with torch.no_grad():
            run()
        for h in hooks_p + hooks_r:
            h.remove()
        assert seen_p == seen_r == {torch.bfloat16}


def test_float16_autocast_is_float16_not_the_default_bfloat16():
    # torch.autocast("cpu") without a dtype runs bfloat16: the bfloat16 tests cannot tell whether amp_dtype arrives.
    policy, reference = tiny_model(seed=1), tiny_model()
    batch = preference_collate(PreferenceDataset(PAIRS[:2], tiktoken.get_encoding("gpt2")))
    seen, hooks = linear_output_dtypes(policy)
    with torch.no_grad():
        make_dpo_loss(reference)(batch, policy, "cpu", torch.float16)
    for h in hooks:
        h.remove()
    assert seen == {torch.float16}


def test_dpo_metrics_reads_exactly_num_batches():
    policy, reference = tiny_model(seed=1), tiny_model()
    tok = tiktoken.get_encoding("gpt2")
    batches = [preference_collate(PreferenceDataset(pairs, tok)) for pairs in (PAIRS[:1], PAIRS[1:2], PAIRS[:2])]
    first = dpo_metrics(policy, reference, batches[:1], "cpu")
    assert dpo_metrics(policy, reference, batches, "cpu", num_batches=1) == first
    two = dpo_metrics(policy, reference, batches, "cpu", num_batches=2)
    assert two == dpo_metrics(policy, reference, batches[:2], "cpu") and two["loss"] != first["loss"]


def test_preference_data_lands_in_data_dir_and_the_dataset_uses_the_style(tmp_path):
    if not os.environ.get("LLMS_DATA_MIRROR"):
        pytest.skip("needs LLMS_DATA_MIRROR (the offline data mirror)")
    assert download_preference_data(tmp_path / "here").parent == tmp_path / "here"
    tok = tiktoken.get_encoding("gpt2")
    prompt_len, chosen, _ = PreferenceDataset(PAIRS[:1], tok, style="phi3")[0]
    assert chosen[:prompt_len] == tok.encode(format_prompt(PAIRS[0], "phi3")) != tok.encode(format_prompt(PAIRS[0]))
