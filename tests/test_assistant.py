"""Chapter 7's command line with published chat models (Qwen3, Llama 3): generate, evaluate and chat, offline.

The checkpoints are tiny random transformers models written by the test, with a tokenizer.json that the
`tokenizers` library trains here with Qwen2/3's pre-tokenizer; the expected answers come from transformers'
own greedy `generate` on the same prompt ids.
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ch05_pretraining.modern_tokenizers import QWEN2_PATTERN, load_modern_tokenizer, qwen3_chat_ids
from ch07_instruction import cli
from ch07_instruction.assistant import ChatModel, is_chat_model, load_chat_model

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parent.parent
TEXT = ("The quick brown fox jumps over the lazy dog. Rewrite the sentence in passive voice. "
        "What is the capital of France? Paris is the capital of France. 12 + 30 = 42.\n") * 20
RECORDS = [{"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
           {"instruction": "Rewrite in passive voice.", "input": "The fox jumps over the dog.",
            "output": "The dog is jumped over by the fox."},
           {"instruction": "Add the numbers.", "input": "12 and 30", "output": "42"}]


def write_tokenizer(folder: Path) -> None:
    """A small byte-level BPE with Qwen3's settings and special tokens, as tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([tokenizers.AddedToken(t, normalized=False) for t in ("<think>", "</think>")])  # as in Qwen3's file
    tok.save(str(folder / "tokenizer.json"))


QWEN3_END = []  # the id of <|im_end|> in the test's tokenizer, set by the fixture


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen3")
    write_tokenizer(folder)
    QWEN3_END[:] = [load_modern_tokenizer(folder).special_tokens["<|im_end|>"]]
    vocab = load_modern_tokenizer(folder).vocab_size
    config = transformers.Qwen3Config(vocab_size=vocab + 3, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      max_position_embeddings=256, tie_word_embeddings=True,
                                      initializer_range=0.5)  # large weights: answers that depend on the prompt
    torch.manual_seed(0)
    transformers.Qwen3ForCausalLM(config).float().save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def float32(monkeypatch):
    """Load chat models in float32 on every CPU, so that the answers can be compared with transformers'."""
    monkeypatch.setattr(cli, "autocast_dtype", lambda device: None)


def hf_answer(folder: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy answer to prompt ids, without the end-of-turn token."""
    tokenizer = load_modern_tokenizer(folder)
    eos = tokenizer.special_tokens["<|im_end|>"]
    hf = transformers.Qwen3ForCausalLM.from_pretrained(folder).float().eval()
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                      pad_token_id=eos)[0, len(prompt):].tolist()
    return out[: out.index(eos)] if eos in out else out


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def record_prompts(monkeypatch, name: str) -> list:
    """Wrap cli.<name> (generate_batched or generate_in_batches) to record the prompt ids it is given."""
    seen, original = [], getattr(cli, name)

    def wrapper(model, prompts, *args, **kwargs):
        assert kwargs["eos_id"] == kwargs["pad_id"] == QWEN3_END[0]  # a reply ends at <|im_end|>
        seen.extend(list(p) for p in prompts)
        return original(model, prompts, *args, **kwargs)

    monkeypatch.setattr(cli, name, wrapper)
    return seen


def test_generate_answers_each_record_as_transformers_does(qwen3_folder, tmp_path, monkeypatch):
    prompts = record_prompts(monkeypatch, "generate_in_batches")
    data, out = tmp_path / "test.json", tmp_path / "new" / "answers.json"
    data.write_text(json.dumps(RECORDS), encoding="utf-8")
    assert cli.main(["generate", str(data), "--model", str(qwen3_folder), "--out", str(out), "--max-new-tokens",
                     "10", "--batch-size", "2", "--no-progress"]) == 0
    saved = json.loads(out.read_text(encoding="utf-8"))
    tokenizer = load_modern_tokenizer(qwen3_folder)
    for record, entry, prompt in zip(saved, RECORDS, prompts, strict=True):
        content = entry["instruction"] + (f"\n\n{entry['input']}" if entry["input"] else "")
        assert prompt == qwen3_chat_ids(tokenizer, user(content), enable_thinking=False)
        expected = tokenizer.decode(hf_answer(qwen3_folder, prompt, 10)).strip()
        assert record["model_response"] == expected and record["output"] == entry["output"]


def test_evaluate_scores_the_reference_answers_under_a_chat_model(qwen3_folder, tmp_path, capsys):
    data = tmp_path / "answers.json"
    data.write_text(json.dumps([{**r, "model_response": r["output"]} for r in RECORDS]), encoding="utf-8")
    assert cli.main(["evaluate", str(data), "--model", str(qwen3_folder), "--no-judge"]) == 0
    shown = capsys.readouterr().out
    assert "mean ROUGE-L 1.000" in shown
    # the loss of the answer tokens, each answer ended by <|im_end|>, computed here by hand with transformers
    tokenizer = load_modern_tokenizer(qwen3_folder)
    eos = tokenizer.special_tokens["<|im_end|>"]
    hf = transformers.Qwen3ForCausalLM.from_pretrained(qwen3_folder).float().eval()
    total, count = 0.0, 0
    for entry in RECORDS:
        content = entry["instruction"] + (f"\n\n{entry['input']}" if entry["input"] else "")
        prompt = qwen3_chat_ids(tokenizer, user(content), enable_thinking=False)
        answer = tokenizer.encode(entry["output"]) + [eos]
        with torch.no_grad():
            logits = hf(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(answer), reduction="sum").item()
        count += len(answer)
    assert f"loss {total / count:.3f}" in shown and f"({count:,} tokens)" in shown


def test_chat_streams_each_answer_and_keeps_the_conversation(qwen3_folder, monkeypatch, capsys):
    prompts = record_prompts(monkeypatch, "generate_batched")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\nAnd the fox?\n\n"))
    assert cli.main(["chat", "--model", str(qwen3_folder), "--max-new-tokens", "6"]) == 0
    shown = capsys.readouterr().out
    tokenizer = load_modern_tokenizer(qwen3_folder)
    first = tokenizer.decode(hf_answer(qwen3_folder, qwen3_chat_ids(tokenizer, user("Hello there"),
                                                                    enable_thinking=False), 6))
    history = [*user("Hello there"), {"role": "assistant", "content": first.strip()}, *user("And the fox?")]
    second = tokenizer.decode(hf_answer(qwen3_folder, qwen3_chat_ids(tokenizer, history, enable_thinking=False), 6))
    assert prompts[1] == qwen3_chat_ids(tokenizer, history, enable_thinking=False)
    assert f">>> {first}\n>>> {second}\n>>> " in shown


def test_thinking_is_kept_out_of_answers_and_refused_for_llama(qwen3_folder, tmp_path, capsys):
    chat = load_chat_model(qwen3_folder, thinking=True)
    assert chat.record_prompt_ids({"instruction": "Hi"}) == qwen3_chat_ids(chat.tokenizer, user("Hi"),
                                                                           enable_thinking=True)
    ids = chat.tokenizer.encode("<think>\nfirst this, then that\n</think>\n\nParis.", allowed_special="all")
    assert chat.answer_text(ids) == "Paris."
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    assert cli.main(["chat", "--model", str(llama), "--think"]) == 2
    assert "only Qwen3 has a thinking mode" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only Qwen3"):
        ChatModel(chat.model, chat.tokenizer, "llama", "x", thinking=True)


def test_a_mistyped_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert is_chat_model("Qwen/Qwen3-0.6B") and not is_chat_model("runs/instruct")
    (tmp_path / "data.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    assert cli.main(["generate", "data.json", "--model", "runs/instruct", "--out", "a.json"]) == 2
    assert "runs/instruct: no such folder" in capsys.readouterr().err


def test_offline_chat_says_in_one_line_what_to_download_and_where(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-m", "ch07_instruction", "chat", "--model", "Qwen/Qwen3-0.6B"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needed in ("Qwen/Qwen3-0.6B", "https://huggingface.co/Qwen/Qwen3-0.6B", "config.json", "tokenizer.json",
                   "HF_HUB_OFFLINE", "folder", "HF_ENDPOINT"):
        assert needed in lines[0], needed
    assert "licence" not in lines[0]
    result = subprocess.run([sys.executable, "-m", "ch07_instruction", "generate", "x.json", "--model",
                             "meta-llama/Llama-3.2-1B-Instruct", "--out", "y.json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "x.json: no such file" in result.stderr  # the records are checked first
    (tmp_path / "x.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "ch07_instruction", "generate", "x.json", "--model",
                             "meta-llama/Llama-3.2-1B-Instruct", "--out", "y.json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "accept its licence at https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct" in result.stderr
    assert not (tmp_path / "y.json").exists()  # no answers file


def test_an_answer_ends_at_any_stop_token_and_unfinished_thinking_is_dropped(qwen3_folder):
    chat = load_chat_model(qwen3_folder, thinking=True)
    tok = chat.tokenizer
    ids = tok.encode("Paris.", allowed_special="all") + [tok.special_tokens["<|endoftext|>"]] + tok.encode(" more")
    assert chat.answer_text(ids) == "Paris."  # <|endoftext|> stops a Qwen3 answer too, not only <|im_end|>
    assert chat.answer_text(tok.encode("<think>\nstill thinking when the tokens ran out")) == ""


def test_a_hub_model_is_checked_from_its_config_before_the_weights_come(monkeypatch):
    import ch07_instruction.assistant as assistant

    def no_download(repo, cache_dir=None):
        raise AssertionError("the weights must not be downloaded")

    monkeypatch.setattr(assistant, "download_modern", no_download)
    monkeypatch.setattr(assistant, "hub_config", lambda repo: {"model_type": "mistral"})
    with pytest.raises(ValueError, match="'mistral' model; chat models must be one of llama, qwen3"):
        load_chat_model("mistralai/Mistral-7B-Instruct-v0.3")
    monkeypatch.setattr(assistant, "hub_config", lambda repo: {"model_type": "llama"})
    with pytest.raises(ValueError, match="only Qwen3 has a thinking mode"):
        load_chat_model("meta-llama/Llama-3.2-1B-Instruct", thinking=True)


@pytest.mark.parametrize("autocast,expected", [(torch.bfloat16, torch.bfloat16), (torch.float16, None), (None, None)])
def test_chat_models_load_in_bfloat16_only_where_it_is_native(monkeypatch, autocast, expected):
    seen = {}

    def fake_load(value, device, dtype=None, thinking=False):
        seen["dtype"] = dtype
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "autocast_dtype", lambda device: autocast)
    monkeypatch.setattr(cli, "load_chat_model", fake_load)
    with pytest.raises(cli.UsageError, match="stop here"):
        cli._load_chat_model(cli.build_parser().parse_args(["chat", "--model", "Qwen/Qwen3-0.6B"]), torch.device("cpu"))
    assert seen["dtype"] is expected  # float16 weights could overflow: float32 instead
