"""Tests of chapter 7's summary module (ch07_instruction/instruction.py)."""
import http.server
import inspect
import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from functools import partial

import pytest
import tiktoken
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ch04_gpt_model import GPTConfig, GPTModel, KVCache
from ch05_pretraining import END_OF_TEXT_ID, TrainConfig, generate, train_model
from ch07_instruction import (
    ALPACA_PREAMBLE,
    INSTRUCTION_CONFIG,
    PROMPT_STYLES,
    InstructionDataset,
    Judge,
    JudgeError,
    LengthBucketSampler,
    answer_instructions,
    answer_loss,
    download_instruction_data,
    extract_response,
    format_example,
    format_prompt,
    forward_padded,
    generate_batched,
    instruction_collate,
    instruction_loss,
    judge_prompt,
    judge_responses,
    lcs_length,
    load_instruction_data,
    load_instruction_model,
    next_token,
    parse_score,
    rouge_l,
    rouge_tokens,
    save_instruction_model,
    save_responses,
    split_data,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50257, context_length=48, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)
ENTRY_IN = {"instruction": "Rewrite the sentence in passive voice.", "input": "The cat ate the fish.",
            "output": "The fish was eaten by the cat."}
ENTRY_NO_IN = {"instruction": "Name a primary colour.", "input": "", "output": "Red."}


@pytest.fixture(scope="module")
def tokenizer():
    return tiktoken.get_encoding("gpt2")


def tiny_model(seed: int = 0, dtype=torch.float64, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(GPTConfig(**{**TINY, **overrides})).to(dtype)
    with torch.no_grad():  # larger weights than the initialisation: greedy choices far from ties
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def random_prompts(n: int, seed: int = 0, low: int = 2, high: int = 12) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(50000) for _ in range(rng.randint(low, high))] for _ in range(n)]


# --- data -------------------------------------------------------------------------------------------


def test_download_and_load_the_data(tmp_path):
    if not os.environ.get("LLMS_DATA_MIRROR"):
        pytest.skip("needs LLMS_DATA_MIRROR (the offline data mirror)")
    path = download_instruction_data(tmp_path)
    data = load_instruction_data(path)
    assert len(data) == 1100
    assert all(set(e) >= {"instruction", "input", "output"} for e in data)
    train, val, test = split_data(data)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert train[0] == data[0] and test[0] == data[935] and val[0] == data[1045]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("[1, 2", "is not valid JSON"),
        ('{"instruction": "x", "output": "y"}', "holds a JSON dict"),
        ("[]", "holds an empty list"),
        ('["a string"]', "record 0 is a JSON str"),
        ('[{"instruction": "x", "output": "y"}, {"instruction": "x"}]', "record 1 has no 'output'"),
        ('[{"instruction": 3, "output": "y"}]', "record 0 has a non-text 'instruction'"),
        ('[{"instruction": "x", "output": "y", "input": 5}]', "'input' that is not text"),
    ],
)
def test_load_instruction_data_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_instruction_data(path)
    assert path.read_text() == text  # nothing lost


def test_load_instruction_data_required_fields(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text(json.dumps([{"instruction": "Say hi."}]))
    assert load_instruction_data(path, required=("instruction",)) == [{"instruction": "Say hi."}]
    with pytest.raises(ValueError, match="no 'output'"):
        load_instruction_data(path)


def test_format_prompt_alpaca_with_and_without_input():
    with_input = format_prompt(ENTRY_IN)
    assert with_input == (f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{ENTRY_IN['instruction']}\n\n### Input:\n"
                          f"{ENTRY_IN['input']}\n\n### Response:\n")
    without = format_prompt(ENTRY_NO_IN)
    assert "### Input:" not in without and without.endswith("\n\n### Response:\n")
    assert format_prompt({"instruction": "x", "output": "y"}) == format_prompt({"instruction": "x", "input": "",
                                                                                 "output": "y"})
    assert format_example(ENTRY_IN) == with_input + ENTRY_IN["output"]


def test_format_prompt_phi3_and_unknown_style():
    assert format_prompt(ENTRY_IN, "phi3") == f"<|user|>\n{ENTRY_IN['instruction']}\n{ENTRY_IN['input']}\n<|assistant|>\n"
    assert format_prompt(ENTRY_NO_IN, "phi3") == f"<|user|>\n{ENTRY_NO_IN['instruction']}\n<|assistant|>\n"
    assert PROMPT_STYLES == ("alpaca", "phi3")
    with pytest.raises(ValueError, match="unknown prompt style 'chatml'"):
        format_prompt(ENTRY_IN, "chatml")


def test_split_data_fractions_and_errors():
    train, val, test = split_data(list(range(20)), train_frac=0.5, test_frac=0.25)
    assert (train, test, val) == (list(range(10)), list(range(10, 15)), list(range(15, 20)))
    for bad in [(0.0, 0.1), (1.0, 0.0), (0.9, 0.2), (0.5, -0.1)]:
        with pytest.raises(ValueError, match="train_frac"):
            split_data(list(range(20)), *bad)


def test_instruction_dataset_tokenises_prompt_and_answer(tokenizer):
    entries = [ENTRY_IN, ENTRY_NO_IN, {"instruction": "Repeat: <|endoftext|>", "output": "<|endoftext|>"}]
    dataset = InstructionDataset(entries, tokenizer)
    assert len(dataset) == 3
    for (ids, prompt_len), entry in zip(dataset, entries):
        assert ids[:prompt_len] == tokenizer.encode(format_prompt(entry), disallowed_special=())
        assert ids == tokenizer.encode(format_example(entry), disallowed_special=())
    assert END_OF_TEXT_ID not in dataset[2][0]  # a typed "<|endoftext|>" is text, not the pad id
    phi = InstructionDataset(entries, tokenizer, style="phi3")
    assert phi[0][1] < dataset[0][1]  # the phi3 prompt is shorter than Alpaca's


# --- batching ---------------------------------------------------------------------------------------

TOY = [([0, 1, 2, 3, 4], 2), ([5, 6], 1), ([7, 8, 9], 2)]
P, X = END_OF_TEXT_ID, -100


def test_collate_pads_shifts_and_ignores_padding():
    inputs, targets = instruction_collate(TOY)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, P, P, P], [7, 8, 9, P, P]]
    assert targets.tolist() == [[1, 2, 3, 4, P], [6, P, X, X, X], [8, 9, P, X, X]]
    assert inputs.dtype == targets.dtype == torch.int64


def test_collate_masks_the_prompt_and_truncates():
    _, targets = instruction_collate(TOY, mask_prompt=True)
    assert targets.tolist() == [[X, 2, 3, 4, P], [6, P, X, X, X], [X, 9, P, X, X]]
    inputs, targets = instruction_collate(TOY, mask_prompt=True, max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, P], [7, 8, 9]]
    assert targets.tolist() == [[X, 2, 3], [6, P, X], [X, 9, P]]
    inputs, _ = instruction_collate(TOY, pad_id=99, ignore_index=-1)
    assert inputs[1].tolist() == [5, 6, 99, 99, 99]


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        instruction_collate([])
    with pytest.raises(ValueError, match="max_length"):
        instruction_collate(TOY, max_length=0)


def test_bucket_sampler_covers_every_index_once_per_epoch():
    lengths = [random.Random(i).randint(5, 300) for i in range(101)]
    for drop_last in (False, True):
        sampler = LengthBucketSampler(lengths, batch_size=8, pool_batches=4, drop_last=drop_last)
        batches = list(sampler)
        assert len(batches) == len(sampler) == (101 // 8 if drop_last else 13)
        flat = [i for b in batches for i in b]
        assert len(flat) == len(set(flat)) == (96 if drop_last else 101)
        assert all(len(b) == 8 for b in batches) or not drop_last


def test_bucket_sampler_needs_less_padding_and_follows_the_global_seed():
    lengths = [random.Random(i).randint(5, 300) for i in range(400)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    torch.manual_seed(0)
    bucketed = list(LengthBucketSampler(lengths, batch_size=8))
    shuffled = [p.tolist() for p in torch.randperm(400).split(8)]
    assert padded(bucketed) < 0.8 * padded(shuffled)
    torch.manual_seed(0)
    assert list(LengthBucketSampler(lengths, batch_size=8)) == bucketed  # torch's RNG decides: resumable
    assert list(LengthBucketSampler(lengths, batch_size=8)) != bucketed  # and a new epoch reshuffles
    in_order = list(LengthBucketSampler(lengths, batch_size=8, shuffle=False))
    assert [i for b in in_order for i in b] != list(range(400))  # sorted within pools
    assert sorted(i for b in in_order for i in b) == list(range(400))


def test_bucket_sampler_rejects_bad_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketSampler([1, 2], batch_size=0)
    with pytest.raises(ValueError, match="pool_batches"):
        LengthBucketSampler([1, 2], batch_size=1, pool_batches=0)


# --- the loss ---------------------------------------------------------------------------------------


def test_instruction_loss_ignores_masked_targets():
    model = tiny_model(dtype=torch.float32)
    inputs, targets = instruction_collate(TOY, mask_prompt=True)
    loss = instruction_loss((inputs, targets), model, "cpu")
    with torch.no_grad():
        logits = model(inputs)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, expected)
    unmasked = instruction_loss(instruction_collate(TOY), model, "cpu")
    assert not torch.allclose(loss, unmasked)  # the mask changes which targets count


def test_instruction_loss_refuses_an_all_masked_batch():
    model = tiny_model()
    batch = instruction_collate([([0, 1, 2, 3], 4)], mask_prompt=True, max_length=2)
    with pytest.raises(ValueError, match="every target of this batch is -100"):
        instruction_loss(batch, model, "cpu")


def test_train_model_with_the_masked_loss_and_buckets_lowers_the_loss(tokenizer):
    entries = [ENTRY_IN, ENTRY_NO_IN] * 8
    dataset = InstructionDataset(entries, tokenizer)
    collate = partial(instruction_collate, mask_prompt=True, max_length=128)
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_sampler=LengthBucketSampler([len(i) for i, _ in dataset], 4), collate_fn=collate)
    model = tiny_model(dtype=torch.float32, context_length=128)
    before = answer_loss(model, loader, "cpu")["loss"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    cfg = TrainConfig(num_epochs=3, peak_lr=3e-3, min_lr=3e-3, warmup_steps=0, eval_freq=4, eval_iter=2)
    history = train_model(model, loader, loader, optimizer, "cpu", cfg, loss_fn=instruction_loss, progress=False)
    assert len(history["train_loss"]) == 3
    assert answer_loss(model, loader, "cpu")["loss"] < before - 1.0


def test_answer_loss_is_the_per_token_mean_and_its_exponential():
    model = tiny_model()
    batches = [instruction_collate(TOY[:2], mask_prompt=True), instruction_collate(TOY[2:], mask_prompt=True)]
    result = answer_loss(model, batches, "cpu")
    losses = []
    with torch.no_grad():
        for inputs, targets in batches:
            keep = targets != -100
            losses += F.cross_entropy(model(inputs)[keep], targets[keep], reduction="none").tolist()
    assert result["tokens"] == len(losses) == 8
    assert result["loss"] == pytest.approx(sum(losses) / len(losses))
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    with pytest.raises(ValueError, match="nothing to score"):
        answer_loss(model, [instruction_collate([([0, 1], 2)], mask_prompt=True, max_length=1)], "cpu")


def test_answer_loss_passes_amp_dtype_on():
    model = tiny_model(dtype=torch.float32)
    seen, hooks = linear_output_dtypes(model)
    bf16 = answer_loss(model, [instruction_collate(TOY)], "cpu", amp_dtype=torch.bfloat16)["loss"]
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}  # the loss alone could not tell: it is within rounding of float32's
    assert bf16 == pytest.approx(answer_loss(model, [instruction_collate(TOY)], "cpu")["loss"], rel=2e-2)


# --- batched generation -----------------------------------------------------------------------------


def test_forward_padded_gives_each_row_its_unpadded_logits():
    model = tiny_model()
    prompts = random_prompts(4, seed=3)
    width = max(map(len, prompts))
    idx = torch.tensor([[P] * (width - len(p)) + p for p in prompts])
    real = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts])
    cache = KVCache(model.cfg, 4, dtype=torch.float64)
    logits = forward_padded(model, idx, cache, real)
    assert logits.shape == (4, width, TINY["vocab_size"]) and cache.length == width
    with torch.no_grad():
        for row, p in enumerate(prompts):
            alone = model(torch.tensor([p]))[0]  # (tokens, vocab)
            assert torch.allclose(logits[row, width - len(p) :], alone, atol=1e-10)
    assert torch.isfinite(logits).all()  # the pad positions too (each attends to itself)


def test_forward_padded_checks_shapes():
    model = tiny_model()
    cache = KVCache(model.cfg, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="real must have shape"):
        forward_padded(model, torch.zeros(2, 3, dtype=torch.long), cache, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="exceed context_length"):
        forward_padded(model, torch.zeros(2, 49, dtype=torch.long), cache, torch.ones(2, 49, dtype=torch.bool))


def test_generate_batched_greedy_equals_chapter5_generate_per_prompt():
    model = tiny_model()
    prompts = random_prompts(6, seed=1)
    new = generate_batched(model, prompts, max_new_tokens=10, eos_id=None)
    for p, got in zip(prompts, new):
        expected = generate(model, torch.tensor([p]), max_new_tokens=10)[0, len(p) :].tolist()
        assert got == expected
    assert generate_batched(model, prompts, max_new_tokens=0) == [[] for _ in prompts]


def test_generate_batched_sampling_matches_chapter5_for_one_prompt():
    model = tiny_model()
    prompt = random_prompts(1, seed=2)[0]
    got = generate_batched(model, [prompt], 8, temperature=1.3, top_k=20, eos_id=None,
                           generator=torch.Generator().manual_seed(7))[0]
    expected = generate(model, torch.tensor([prompt]), 8, temperature=1.3, top_k=20,
                        generator=torch.Generator().manual_seed(7))[0, len(prompt) :].tolist()
    assert got == expected
    other = generate_batched(model, [prompt], 8, temperature=1.3, top_k=20, eos_id=None,
                             generator=torch.Generator().manual_seed(8))[0]
    assert other != got  # the seed matters: the sampling path is really taken


def test_generate_batched_stops_each_row_at_eos():
    model = tiny_model()
    prompts = random_prompts(3, seed=4)
    free = generate_batched(model, prompts, max_new_tokens=6, eos_id=None)
    eos = free[1][2]  # make row 1's third token the end-of-text
    stopped = generate_batched(model, prompts, max_new_tokens=6, eos_id=eos)
    assert stopped[1] == free[1][:2]
    for row in (0, 2):  # the other rows go on until they produce eos themselves
        cut = free[row].index(eos) if eos in free[row] else 6
        assert stopped[row] == free[row][:cut]


def test_generate_batched_streams_tokens_and_respects_the_context():
    model = tiny_model()
    prompts = random_prompts(2, seed=5, low=40, high=44)
    seen = []
    new = generate_batched(model, prompts, max_new_tokens=100, eos_id=None, on_token=lambda r, t: seen.append((r, t)))
    width = max(map(len, prompts))
    assert all(len(n) == TINY["context_length"] - width for n in new)  # stopped when the context was full
    assert [t for r, t in seen if r == 0] == new[0] and [t for r, t in seen if r == 1] == new[1]
    with pytest.raises(ValueError, match="leaves no room in context_length 48"):
        generate_batched(model, [[1] * 48], 5)
    with pytest.raises(ValueError, match="at least one token"):
        generate_batched(model, [[1], []], 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_batched(model, [[1]], -1)


def linear_output_dtypes(model: torch.nn.Module) -> tuple[set, list]:
    """(a set that collects the dtypes of every nn.Linear output while the model runs, the hooks to remove)."""
    seen = set()
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def test_generate_batched_in_bfloat16_autocast():
    # Content, not only lengths: a 64-token vocabulary, and prompts (seed 28) whose float32 greedy choices all win by
    # > 0.05 (asserted below), while bfloat16 moves these logits by ~0.007: so bfloat16 must pick the same tokens.
    model = tiny_model(seed=28, dtype=torch.float32, vocab_size=64)
    rng = random.Random(28)
    prompts = [[rng.randrange(64) for _ in range(rng.randint(2, 12))] for _ in range(3)]
    seen, hooks = linear_output_dtypes(model)
    new = generate_batched(model, prompts, max_new_tokens=5, eos_id=None, pad_id=0, amp_dtype=torch.bfloat16)
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}  # autocast really ran (without amp_dtype the tokens would be the same)
    for p, got in zip(prompts, new):
        expected = generate(model, torch.tensor([p]), max_new_tokens=5)[0, len(p) :].tolist()  # float32, unbatched
        assert got == expected
        with torch.no_grad():
            for t in range(len(p), len(p) + 5):
                top2 = model(torch.tensor([(p + expected)[:t]]))[0, -1].topk(2).values
                assert top2[0] - top2[1] > 0.05  # the precondition that makes the comparison CPU-independent


def test_next_token_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert next_token(logits).tolist() == [[1]]
    g = torch.Generator().manual_seed(0)
    assert {int(next_token(logits, temperature=5.0, top_k=2, generator=g)) for _ in range(50)} == {1, 3}
    with pytest.raises(ValueError, match="temperature"):
        next_token(logits, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        next_token(logits, top_k=0)


def test_extract_response():
    assert extract_response("  Red.\n") == "Red."
    assert extract_response("Red.\n\n### Instruction:\nName another") == "Red."
    assert extract_response("### Response:\nRed.") == ""
    assert extract_response("no header") == "no header"


def test_answer_instructions_keeps_the_order(tokenizer):
    model = tiny_model(context_length=256)
    entries = [ENTRY_IN, ENTRY_NO_IN, {"instruction": "Count to three.", "output": "1 2 3"}]
    answers = answer_instructions(model, entries, tokenizer, batch_size=2, max_new_tokens=5, progress=False)
    for entry, answer in zip(entries, answers):
        ids = tokenizer.encode(format_prompt(entry))
        alone = generate_batched(model, [ids], max_new_tokens=5)[0]
        assert answer == extract_response(tokenizer.decode(alone))
    with pytest.raises(ValueError, match="record 0's prompt is"):
        answer_instructions(model, [{"instruction": "word " * 300, "output": ""}], tokenizer, progress=False)


def test_answer_instructions_passes_style_and_sampling_settings_on(tokenizer, monkeypatch):
    # Every setting needs a non-default value here: with the defaults, an argument that is dropped on the way to
    # generate_batched (temperature, top_k, amp_dtype) or to format_prompt (style) changes nothing.
    import ch07_instruction.instruction as module

    model = tiny_model(context_length=256)
    calls = []
    real = module.generate_batched

    def spy(model, prompts, max_new_tokens, **kwargs):
        calls.append((prompts, max_new_tokens, kwargs))
        return real(model, prompts, max_new_tokens, **kwargs)

    monkeypatch.setattr(module, "generate_batched", spy)
    answer_instructions(model, [ENTRY_NO_IN], tokenizer, style="phi3", max_new_tokens=3, temperature=0.7, top_k=5,
                        amp_dtype=torch.bfloat16, progress=False)
    [(prompts, max_new_tokens, kwargs)] = calls
    assert prompts == [tokenizer.encode(format_prompt(ENTRY_NO_IN, "phi3"))] and max_new_tokens == 3
    assert (kwargs["temperature"], kwargs["top_k"], kwargs["amp_dtype"]) == (0.7, 5, torch.bfloat16)

    # and in effect: sampling with the global seed gives generate_batched's tokens for those settings, not greedy ones
    monkeypatch.setattr(module, "generate_batched", real)
    ids = tokenizer.encode(format_prompt(ENTRY_NO_IN))
    torch.manual_seed(3)
    sampled = answer_instructions(model, [ENTRY_NO_IN], tokenizer, max_new_tokens=6, temperature=1.5, top_k=40,
                                  progress=False)[0]
    torch.manual_seed(3)
    expected = extract_response(tokenizer.decode(generate_batched(model, [ids], 6, temperature=1.5, top_k=40)[0]))
    torch.manual_seed(3)
    no_top_k = extract_response(tokenizer.decode(generate_batched(model, [ids], 6, temperature=1.5)[0]))
    greedy = answer_instructions(model, [ENTRY_NO_IN], tokenizer, max_new_tokens=6, progress=False)[0]
    assert sampled == expected and len({sampled, no_top_k, greedy}) == 3


# --- saving -----------------------------------------------------------------------------------------


def test_save_responses_round_trip(tmp_path):
    path = save_responses([ENTRY_IN, ENTRY_NO_IN], ["A.", "B."], tmp_path / "out.json")
    records = load_instruction_data(path, required=("instruction", "output", "model_response"))
    assert [r["model_response"] for r in records] == ["A.", "B."]
    assert records[0]["input"] == ENTRY_IN["input"]
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match="2 records but 1 responses"):
        save_responses([ENTRY_IN, ENTRY_NO_IN], ["A."], tmp_path / "x.json")


def test_save_responses_leaves_no_partial_file_when_the_write_fails(tmp_path, monkeypatch, request):
    path = tmp_path / "answers.json"
    path.write_text("the earlier answers", encoding="utf-8")
    request.getfixturevalue("disk_full_halfway")  # half the text lands, then the disk is full
    with pytest.raises(OSError, match="No space left"):
        save_responses([ENTRY_IN], ["A."], path)
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "the earlier answers"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.json"]  # no answers.json.partial


def test_save_instruction_model_loads_in_course_and_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model(dtype=torch.float32)
    out = save_instruction_model(model, tmp_path / "instruct", style="phi3", source="a test model")
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "model.safetensors", INSTRUCTION_CONFIG])
    back, style = load_instruction_model(out)
    assert style == "phi3"
    ids = torch.tensor([random_prompts(1, seed=9)[0]])
    with torch.no_grad():
        assert torch.allclose(back(ids), model(ids), atol=1e-6)
        hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
        assert torch.allclose(hf(ids).logits, model(ids), atol=1e-5)
    with pytest.raises(ValueError, match="unknown prompt style"):
        save_instruction_model(model, tmp_path / "bad", style="chatml")
    (out / INSTRUCTION_CONFIG).unlink()
    with pytest.raises(FileNotFoundError, match="save_instruction_model"):
        load_instruction_model(out)


# --- ROUGE-L ----------------------------------------------------------------------------------------


def test_lcs_length_known_cases():
    assert lcs_length("abcbdab", "bdcaba") == 4
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["a", "b"], ["a", "b"]) == 2
    assert lcs_length("aaaa", "aa") == 2


def test_rouge_tokens():
    assert rouge_tokens("The CAT's 2 hats, e.g.!") == ["the", "cat", "s", "2", "hats", "e", "g"]
    assert rouge_tokens("...") == []


def test_rouge_l_matches_the_rouge_score_package():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(0)
    words = "the a cat dog sat on mat is was red blue 42 Paris France capital of, runs running!".split()
    pairs = [("", ""), ("", "a cat"), ("a cat", ""), ("...", "a"), ("Paris is the capital of France.",
             "The capital of France is Paris."), ("the the the", "the"), ("Résumé naïve café", "resume cafe")]
    pairs += [(" ".join(rng.choices(words, k=rng.randint(0, 15))), " ".join(rng.choices(words, k=rng.randint(0, 15))))
              for _ in range(300)]
    for candidate, reference in pairs:
        expected = scorer.score(reference, candidate)["rougeL"].fmeasure  # score(target, prediction)
        assert rouge_l(candidate, reference) == pytest.approx(expected, abs=1e-12), (candidate, reference)


# --- the judge --------------------------------------------------------------------------------------


class FakeJudge(http.server.BaseHTTPRequestHandler):
    """Answers as a judge server would; the test sets `behaviour` on the server."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        behaviour = self.server.behaviour
        if behaviour == "slow":
            time.sleep(1.0)
        if behaviour == "404":
            self._send(404, json.dumps({"error": f"model '{body['model']}' not found"}).encode())
            return
        if behaviour == "malformed":
            self._send(200, b"{not json")
            return
        text = {"score": "Score: 85/100", "words": "I would rate it highly.", "slow": "70"}.get(behaviour, behaviour)
        if self.path == "/api/chat":
            reply = {"model": body["model"], "message": {"role": "assistant", "content": text}, "done": True}
        else:
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        self._send(200, json.dumps(reply).encode())

    def _send(self, code, data):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def fake_judge():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    server.behaviour, server.requests = "score", []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def judge_url(server, suffix=""):
    return f"http://127.0.0.1:{server.server_address[1]}{suffix}"


@pytest.mark.parametrize("api, suffix, path", [("ollama", "", "/api/chat"), ("openai", "/v1", "/v1/chat/completions")])
def test_judge_scores_with_temperature_zero_and_a_seed(fake_judge, api, suffix, path):
    judge = Judge(judge_url(fake_judge, suffix), "judge-model")
    assert judge.api == api
    assert judge.score(ENTRY_IN, "The fish was eaten by the cat.") == 85
    sent_path, body = fake_judge.requests[-1]
    assert sent_path == path and body["model"] == "judge-model"
    settings = body["options"] if api == "ollama" else body
    assert settings["temperature"] == 0 and settings["seed"] == 123
    assert "The fish was eaten by the cat." in body["messages"][0]["content"]


@pytest.mark.parametrize(
    "behaviour, message",
    [("malformed", "not JSON"), ("words", "not one integer from 0 to 100"), ("404", "answered 404 for model 'judge-model'"),
     ("slow", "did not answer within 0.3 s")],
)
def test_judge_failures_have_clear_messages(fake_judge, behaviour, message):
    fake_judge.behaviour = behaviour
    judge = Judge(judge_url(fake_judge), "judge-model", timeout=0.3)
    with pytest.raises(JudgeError, match=message):
        judge.score(ENTRY_IN, "an answer")


def test_judge_404_says_how_to_get_the_model(fake_judge):
    fake_judge.behaviour = "404"
    with pytest.raises(JudgeError, match="ollama pull judge-model"):
        Judge(judge_url(fake_judge), "judge-model").score(ENTRY_IN, "x")


def test_judge_without_a_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeJudge)
    port = server.server_address[1]
    server.server_close()  # nothing listens on that port now
    with pytest.raises(JudgeError, match="cannot reach the judge"):
        Judge(f"http://127.0.0.1:{port}", "m", timeout=2).score(ENTRY_IN, "x")


def test_judge_responses_records_failures_and_goes_on(fake_judge):
    judge = Judge(judge_url(fake_judge), "judge-model")
    replies = iter(["90", "I'd rate it 8/10.", "13.", "{"])

    class Scripted(Judge):
        def chat(self, prompt):
            text = next(replies)
            if text == "{":
                raise JudgeError("the judge sent a reply that is not JSON")
            return text

    scripted = Scripted(judge.url, judge.model)
    scores, errors = judge_responses(scripted, [ENTRY_IN] * 4, ["a", "b", "c", "d"], progress=False)
    assert scores == [90, None, 13, None]
    assert len(errors) == 2 and errors[0].startswith("answer 1:") and errors[1].startswith("answer 3:")
    fake_judge.behaviour = "malformed"  # and through the real client: every answer fails, nothing raises
    scores, errors = judge_responses(judge, [ENTRY_IN] * 2, ["a", "b"], progress=False)
    assert scores == [None, None] and all("not JSON" in e for e in errors)


@pytest.mark.parametrize(
    "reply, score",
    [("85", 85), ("Score: 85/100", 85), (" 85.\n", 85), ("100", 100), ("0", 0), ("score: 7", 7),
     ("40 out of 100", 40)],
)
def test_parse_score_reads_the_form_the_prompt_asks_for(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "reply",
    ["I'd rate it 8/10.", "8/10", "7.6", "I give it 76 out of 100", "1000 points, no: 40", "-5", "150", "", "great",
     "85 or 90"],
)
def test_parse_score_reports_any_other_reply_as_unparsed_never_as_a_wrong_score(reply):
    with pytest.raises(JudgeError, match="not one integer from 0 to 100"):
        parse_score(reply)


def test_judge_responses_reports_an_out_of_ten_reply_as_unparsed(fake_judge):
    fake_judge.behaviour = "I'd rate it 8/10."
    scores, errors = judge_responses(Judge(judge_url(fake_judge), "judge-model"), [ENTRY_IN], ["a"], progress=False)
    assert scores == [None] and len(errors) == 1 and "8/10" in errors[0]


def test_judge_from_env(monkeypatch):
    for name in ("LLMS_JUDGE_URL", "LLMS_JUDGE_MODEL", "LLMS_JUDGE_API"):
        monkeypatch.delenv(name, raising=False)
    assert Judge.from_env() is None
    monkeypatch.setenv("LLMS_JUDGE_URL", "http://localhost:8080/v1/")
    assert Judge.from_env() is None  # a model is needed too
    monkeypatch.setenv("LLMS_JUDGE_MODEL", "qwen")
    judge = Judge.from_env()
    assert (judge.url, judge.model, judge.api) == ("http://localhost:8080/v1", "qwen", "openai")
    monkeypatch.setenv("LLMS_JUDGE_API", "ollama")
    assert Judge.from_env().api == "ollama"
    with pytest.raises(ValueError, match="api must be"):
        Judge("http://x", "m", api="grpc")


def test_judge_prompt_holds_task_reference_and_answer():
    text = judge_prompt(ENTRY_IN, "The fish was eaten.")
    assert ENTRY_IN["instruction"] in text and ENTRY_IN["input"] in text and ENTRY_IN["output"] in text
    assert "The fish was eaten." in text and ALPACA_PREAMBLE not in text and "0" in text and "100" in text


# --- boundaries, defaults and pass-throughs a mutation pass found untested ----------------------------


def test_download_instruction_data_lands_in_data_dir(tmp_path, monkeypatch):
    if not os.environ.get("LLMS_DATA_MIRROR"):
        pytest.skip("needs LLMS_DATA_MIRROR (the offline data mirror)")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a data_dir lost on the way would put the file here (download_file's default ".")
    path = download_instruction_data(tmp_path / "data")
    assert path.parent == tmp_path / "data" and path.is_file()
    assert not list(cwd.iterdir())


def test_format_example_uses_its_style():
    assert format_example(ENTRY_IN, "phi3") == format_prompt(ENTRY_IN, "phi3") + ENTRY_IN["output"]
    assert format_example(ENTRY_IN, style="phi3").startswith("<|user|>")


def test_split_data_accepts_the_boundaries_no_test_set_and_no_validation_set():
    data = list(range(20))
    assert split_data(data, train_frac=0.75, test_frac=0.0) == (list(range(15)), list(range(15, 20)), [])
    assert split_data(data, train_frac=0.75, test_frac=0.25) == (list(range(15)), [], list(range(15, 20)))


def test_bucket_sampler_keeps_the_last_short_batch_by_default():
    sampler = LengthBucketSampler(list(range(10)), batch_size=4)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 3
    assert sorted(i for b in batches for i in b) == list(range(10))


def test_instruction_loss_passes_amp_dtype_on():
    model = tiny_model(dtype=torch.float32)
    seen, hooks = linear_output_dtypes(model)
    instruction_loss(instruction_collate(TOY), model, "cpu", amp_dtype=torch.bfloat16)
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}


def test_forward_padded_fills_the_context_exactly():
    model = tiny_model()
    ids = torch.tensor(random_prompts(1, seed=6, low=48, high=48))  # (1, 48): context_length tokens
    cache = KVCache(model.cfg, 1, dtype=torch.float64)
    logits = forward_padded(model, ids, cache, torch.ones(1, 48, dtype=torch.bool))
    assert cache.length == 48
    with torch.no_grad():
        assert torch.allclose(logits, model(ids), atol=1e-10)


def test_next_token_top_k_one_is_greedy_even_when_sampling():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 4.9, 1.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert next_token(logits, temperature=10.0, top_k=1, generator=g).tolist() == [[1], [0]]


def test_generate_batched_cache_dtype_follows_amp_dtype_else_the_weights(monkeypatch):
    import ch07_instruction.instruction as module

    dtypes = []

    class SpyCache(KVCache):
        def __init__(self, cfg, batch_size, device=None, dtype=torch.float32):
            dtypes.append(dtype)
            super().__init__(cfg, batch_size, device=device, dtype=dtype)

    monkeypatch.setattr(module, "KVCache", SpyCache)
    prompts = random_prompts(2, seed=7)
    generate_batched(tiny_model(dtype=torch.float32), prompts, 2, amp_dtype=torch.bfloat16)  # half the cache memory
    generate_batched(tiny_model(dtype=torch.float64), prompts, 2)
    assert dtypes == [torch.bfloat16, torch.float64]


def test_generate_batched_and_answer_loss_use_a_float16_amp_dtype():
    # On the CPU, autocast's own default is bfloat16: only float16 shows that amp_dtype reaches torch.autocast.
    model = tiny_model(dtype=torch.float32)
    seen, hooks = linear_output_dtypes(model)
    generate_batched(model, random_prompts(2, seed=8), 2, amp_dtype=torch.float16)
    assert seen == {torch.float16}
    seen.clear()
    answer_loss(model, [instruction_collate(TOY)], "cpu", amp_dtype=torch.float16)
    for h in hooks:
        h.remove()
    assert seen == {torch.float16}


def test_generate_batched_runs_no_forward_pass_it_does_not_need(monkeypatch):
    import ch07_instruction.instruction as module

    calls = []
    real = module.forward_padded
    monkeypatch.setattr(module, "forward_padded", lambda *args: calls.append(1) or real(*args))
    model = tiny_model()
    prompt = random_prompts(1, seed=9)[0]
    assert len(generate_batched(model, [prompt], 5, eos_id=None)[0]) == 5
    assert len(calls) == 5  # the prefill and 4 steps: the 5th token needs no forward pass after it
    calls.clear()
    long_prompt = random_prompts(1, seed=9, low=45, high=45)[0]  # room for 3 tokens in context_length 48
    assert len(generate_batched(model, [long_prompt], 10, eos_id=None)[0]) == 3 and len(calls) == 3
    free = generate_batched(model, [prompt], 10, eos_id=None)[0]
    stop = next(j for j, t in enumerate(free) if t not in free[:j] and j >= 2)  # first new token from the 3rd on
    calls.clear()
    assert generate_batched(model, [prompt], 10, eos_id=free[stop])[0] == free[:stop]
    assert len(calls) == stop + 1  # every row done: no more steps


def test_answer_instructions_prompt_of_exactly_context_length_names_the_record(tokenizer):
    n = len(tokenizer.encode(format_prompt(ENTRY_NO_IN)))
    with pytest.raises(ValueError, match="record 0's prompt is"):
        answer_instructions(tiny_model(context_length=n), [ENTRY_NO_IN], tokenizer, progress=False)
    assert len(answer_instructions(tiny_model(context_length=n + 1), [ENTRY_NO_IN], tokenizer, progress=False)) == 1


def test_answer_instructions_batches_of_batch_size_prompts_by_length(tokenizer, monkeypatch):
    import ch07_instruction.instruction as module

    calls = []
    real = module.generate_batched
    monkeypatch.setattr(module, "generate_batched",
                        lambda model, prompts, *args, **kwargs: calls.append(prompts) or real(model, prompts, *args,
                                                                                              **kwargs))
    entries = [{"instruction": "word " * k, "output": ""} for k in (5, 1, 4, 2, 3)]
    answers = answer_instructions(tiny_model(context_length=256), entries, tokenizer, batch_size=2, max_new_tokens=1,
                                  progress=False)
    assert len(answers) == 5
    prompts = [tokenizer.encode(format_prompt(e)) for e in entries]
    assert calls == [[prompts[1], prompts[3]], [prompts[4], prompts[2]], [prompts[0]]]


def test_save_responses_creates_folders_and_keeps_text_readable(tmp_path):
    entry = {"instruction": "Translate to French.", "input": "coffee", "output": "café"}
    path = save_responses([entry], ["un café"], tmp_path / "a" / "b" / "answers.json")
    text = path.read_text(encoding="utf-8")
    assert '"un café"' in text and "\\u00e9" not in text  # UTF-8 as written, not \u escapes
    assert json.loads(text)[0]["model_response"] == "un café"


def test_load_instruction_model_passes_device_on(tmp_path, monkeypatch):
    import ch07_instruction.instruction as module

    seen = []
    monkeypatch.setattr(module, "load_gpt2", lambda folder, device=None: seen.append((folder, device)) or "model")
    (tmp_path / INSTRUCTION_CONFIG).write_text(json.dumps({"prompt_style": "phi3"}), encoding="utf-8")
    assert load_instruction_model(tmp_path, device="cuda:1") == ("model", "phi3")
    assert seen == [(tmp_path, "cuda:1")]


def test_parse_score_refuses_101():
    assert parse_score("100") == 100
    with pytest.raises(JudgeError, match="not one integer from 0 to 100"):
        parse_score("101")


def test_judge_asks_ollama_for_one_reply_not_a_stream(fake_judge):
    Judge(judge_url(fake_judge), "judge-model").score(ENTRY_IN, "x")
    _, body = fake_judge.requests[-1]
    assert body["stream"] is False  # a streamed reply is many JSON lines, not one JSON object


def test_judge_timeout_whatever_its_message(monkeypatch):
    # Windows' connect timeout is TimeoutError (WSAETIMEDOUT) with a message that does not say "timed out"
    def urlopen(request, timeout):
        raise urllib.error.URLError(TimeoutError(10060, "the connected party did not properly respond"))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(JudgeError, match="did not answer within 5 s"):
        Judge("http://127.0.0.1:1", "m", timeout=5).score(ENTRY_IN, "x")


@pytest.mark.parametrize("progress", [True, False])
def test_answer_instructions_shows_a_progress_bar_only_when_asked(tokenizer, capsys, progress):
    answer_instructions(tiny_model(context_length=256), [ENTRY_NO_IN], tokenizer, max_new_tokens=1, progress=progress)
    assert ("answering" in capsys.readouterr().err) == progress


def test_answer_instructions_defaults_are_the_documented_ones(tokenizer, monkeypatch):
    import ch07_instruction.instruction as module

    seen = {}
    real = module.generate_in_batches

    def spy(model, prompts, batch_size=16, progress=True, **options):  # the defaults, passed on or not
        seen.update(batch_size=batch_size, progress=progress, **options)
        return real(model, prompts, batch_size, False, **{**options, "max_new_tokens": 1})

    monkeypatch.setattr(module, "generate_in_batches", spy)
    answer_instructions(tiny_model(context_length=512), [ENTRY_NO_IN], tokenizer)
    assert seen == {"batch_size": 16, "progress": True, "max_new_tokens": 256, "temperature": 0.0, "top_k": None,
                    "amp_dtype": None}
    defaults = inspect.signature(real).parameters  # and generate_in_batches' own, for callers such as the CLI
    assert (defaults["batch_size"].default, defaults["progress"].default) == (16, True)


@pytest.mark.parametrize("progress", [True, False, None])
def test_judge_responses_shows_a_progress_bar_unless_told_not_to(fake_judge, capsys, progress):
    class Fixed(Judge):
        def chat(self, prompt):
            return "Score: 50"

    judge = Fixed(judge_url(fake_judge), "judge-model")
    kwargs = {} if progress is None else {"progress": progress}  # None: the default, a bar
    assert judge_responses(judge, [ENTRY_IN], ["a"], **kwargs) == ([50], [])
    assert ("judging" in capsys.readouterr().err) == (progress is not False)
