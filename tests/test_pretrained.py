"""Tests of ch05_pretraining/pretrained.py: load_pretrained, OpenAI's weights else the chapter-5 substitute.

The substitute's folders (DEFAULT_OUT, SMOKE_OUT, and the ch05 command line's CLI_SMOKE_OUT) and the text's data
folder are pointed into a temporary folder, and OpenAI's weights are made unavailable, so nothing is downloaded and
nothing is written into the repository.
"""
import json
from pathlib import Path

import pytest
import torch

import ch05_pretraining.cli as cli
import ch05_pretraining.pretrain_run as pretrain_run
import ch05_pretraining.pretrained as pretrained
from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import WeightsUnavailableError, save_hf_checkpoint
from ch05_pretraining.cli_tools import UsageError
from ch05_pretraining.pretrain_run import MODEL_PRESETS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread", "force_cpu_device")

real_load_gpt2 = pretrained.load_gpt2


def tiny_model(seed: int = 0, context_length: int = 256) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=32, n_heads=2, n_layers=2,
                              drop_rate=0.0))


def _unavailable(name, device=None, dtype=None):
    if isinstance(name, str) and name in ("gpt2", "124M", "gpt2-medium"):
        raise WeightsUnavailableError("offline")
    return real_load_gpt2(name, device=device, dtype=dtype)


@pytest.fixture
def offline(monkeypatch, tmp_path) -> tuple[Path, Path]:
    """No OpenAI weights; (DEFAULT_OUT, SMOKE_OUT) in tmp_path, both empty; CLI_SMOKE_OUT and DATA_DIR there too."""
    real, smoke = tmp_path / "gpt2-verdict", tmp_path / "gpt2-verdict-smoke"
    monkeypatch.setattr(pretrained, "DEFAULT_OUT", real)
    monkeypatch.setattr(pretrained, "SMOKE_OUT", smoke)
    monkeypatch.setattr(pretrained, "load_gpt2", _unavailable)
    monkeypatch.setattr(cli, "CLI_SMOKE_OUT", tmp_path / "cli-smoke")  # python -m ch05_pretraining --smoke
    monkeypatch.setattr(pretrain_run, "DATA_DIR", tmp_path / "data")  # The Verdict, copied from the mirror
    return real, smoke


def test_load_pretrained_prefers_openai_weights(monkeypatch, capsys):
    sentinel = tiny_model()
    monkeypatch.setattr(pretrained, "load_gpt2", lambda name, device=None: sentinel)
    model, source = pretrained.load_pretrained("gpt2")
    assert model is sentinel and "openai-community/gpt2" in source
    assert "loaded 3," in capsys.readouterr().out  # its size is printed


def test_load_pretrained_falls_back_to_the_chapter5_model_and_prints_its_size(offline, capsys):
    real, _ = offline
    substitute = tiny_model(seed=3)
    save_hf_checkpoint(substitute, real)
    model, source = pretrained.load_pretrained("gpt2")
    out = capsys.readouterr().out
    assert "substitute" in source and str(real) in source
    notice, loaded = out.splitlines()  # offline: one line says what stands in and how to get OpenAI's, no error text
    assert "could not be loaded" in notice and "HF_ENDPOINT" in notice and "openai-community/gpt2" in notice
    n = sum(p.numel() for p in model.parameters())
    assert f"loaded {n:,} parameters (emb_dim 32, 2 layers, context_length 256) from {real}" in out
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), substitute.eval()(ids))


def test_smoke_never_reads_or_writes_the_real_substitute(offline, monkeypatch, the_verdict, capsys):
    """A smoke run trains its tiny model into SMOKE_OUT, and a non-smoke load never finds it there."""
    real, smoke = offline
    monkeypatch.setattr(cli, "main", lambda argv=None: pytest.fail("load_pretrained must not call the CLI"))
    model, source = pretrained.load_pretrained("gpt2", smoke=True)
    assert (smoke / "model.safetensors").is_file() and not real.exists()
    assert "training it with a tiny smoke-test model" in capsys.readouterr().out
    assert model.cfg.emb_dim == MODEL_PRESETS["tiny"].emb_dim and "smoke-test" in source
    assert model.cfg.context_length == 256  # room for chapter 7's prompts

    trained = []
    monkeypatch.setattr(pretrained, "pretrain", lambda settings: trained.append(settings) or save_hf_checkpoint(
        tiny_model(seed=5), settings.out))
    model, source = pretrained.load_pretrained("gpt2")  # the chapter's model is missing: trained, not the smoke one
    assert [s.out for s in trained] == [real] and trained[0] == pretrained.substitute_settings(smoke=False)
    assert trained[0].model is None and trained[0].context_length == 256 and not trained[0].smoke
    assert model.cfg.emb_dim == 32 and source.endswith(f"in chapter 5 ({real})")


def test_instruction_finetune_smoke_without_openai_weights_keeps_to_the_smoke_folder(offline, tmp_path):
    from ch07_instruction.cli import main as instruction_main

    real, smoke = offline
    save_hf_checkpoint(tiny_model(seed=1), smoke)  # a smoke model exists already: used, nothing trained
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(12)]))
    status = instruction_main(["finetune", str(data), "--out", str(tmp_path / "run"), "--smoke", "--batch-size", "2",
                               "--no-progress", "--device", "cpu"])
    assert status == 0
    assert not real.exists()
    assert json.loads((tmp_path / "run" / "instruction.json").read_text())["base_model"].endswith(f"({smoke})")


def test_the_chapter5_notebook_saves_a_smoke_run_apart_from_the_real_model():
    cells = json.loads((ROOT / "ch05_pretraining" / "ch05.ipynb").read_text(encoding="utf-8"))["cells"]
    saving = [''.join(c["source"]) for c in cells if "save_hf_checkpoint(getattr(model" in ''.join(c["source"])]
    assert len(saving) == 1
    assert '"checkpoints/gpt2-verdict-smoke" if SMOKE_TEST else "checkpoints/gpt2-verdict"' in saving[0]


def instruction_data(folder: Path) -> Path:
    path = folder / "data.json"
    path.write_text(json.dumps([{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(12)]))
    return path


def test_the_ch05_smoke_command_then_a_ch07_smoke_run(offline, tmp_path):
    """The ch05 README's smoke command, then ch07's: each smoke model has its own folder, each fits its use."""
    from ch07_instruction.cli import main as instruction_main

    _, smoke = offline
    assert cli.main(["--smoke", "--no-progress"]) == 0  # context 32: a model ch07's prompts would not fit
    assert (tmp_path / "cli-smoke" / "model.safetensors").is_file() and not smoke.exists()
    status = instruction_main(["finetune", str(instruction_data(tmp_path)), "--out", str(tmp_path / "run"), "--smoke",
                               "--batch-size", "2", "--no-progress", "--device", "cpu"])
    assert status == 0
    assert json.loads((smoke / "config.json").read_text())["n_positions"] == 256


def test_a_ch06_smoke_run_then_the_ch05_smoke_command(offline, tmp_path):
    """ch06's smoke run trains its substitute first; the ch05 smoke command is not refused for it."""
    from ch06_classification.cli import main as classification_main

    _, smoke = offline
    rows = [f'"{"win a cash prize now" if i % 2 else "see you at dinner"} {i}",{"spam" if i % 2 else "ham"}'
            for i in range(80)]
    (tmp_path / "data.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    assert classification_main(["train", str(tmp_path / "data.csv"), "--out", str(tmp_path / "spam"), "--smoke",
                                "--no-progress", "--device", "cpu"]) == 0
    assert (smoke / "model.safetensors").is_file()
    assert cli.main(["--smoke", "--no-progress"]) == 0
    assert (tmp_path / "cli-smoke" / "model.safetensors").is_file()


def test_a_substitute_with_a_shorter_context_is_refused_with_the_fix(offline):
    _, smoke = offline
    save_hf_checkpoint(tiny_model(context_length=32), smoke)  # e.g. python -m ch05_pretraining --smoke --out there
    with pytest.raises(UsageError, match=r"has context_length 32, fewer than the 256 tokens .*: delete "):
        pretrained.load_pretrained("gpt2", smoke=True)


def test_an_interrupted_substitute_training_is_resumed(offline, monkeypatch, capsys):
    _, smoke = offline
    real_train_model = pretrain_run.train_model

    def ctrl_c_after_step_2(*args, **kwargs):
        real_train_model(*args, **{**kwargs, "stop_at_step": 2})  # writes train_state.pt at step 2
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_run, "train_model", ctrl_c_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        pretrained.load_pretrained("gpt2", smoke=True)
    assert (smoke / "train_state.pt").is_file() and not (smoke / "model.safetensors").exists()
    monkeypatch.setattr(pretrain_run, "train_model", real_train_model)
    capsys.readouterr()
    model, source = pretrained.load_pretrained("gpt2", smoke=True)
    assert "resuming the interrupted training of a tiny smoke-test model" in capsys.readouterr().out
    assert torch.load(smoke / "train_state.pt", weights_only=True)["step"] == pretrain_run.SMOKE_DEFAULTS["stop_at_step"]
    assert model.cfg.context_length == 256 and "smoke-test" in source


def test_the_substitute_is_trained_on_the_device_asked_for(offline, monkeypatch):
    trained = []
    monkeypatch.setattr(pretrained, "pretrain", lambda settings: trained.append(settings) or save_hf_checkpoint(
        tiny_model(), settings.out))
    pretrained.load_pretrained("gpt2", device=torch.device("cpu"), smoke=True)
    assert [s.device for s in trained] == ["cpu"]
