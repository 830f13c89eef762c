"""benchmarks/modern_llms.py: a --tiny run end to end, its float32 gate, and its equal-size training configs."""
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/modern_llms.py as a module."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import modern_llms

    return modern_llms


def test_a_tiny_run_prints_both_ratios_and_both_generators_agree(bench, capsys):
    # float32: the two generators must then give the very same greedy tokens (bfloat16 may part after many steps)
    code = bench.main(["--tiny", "--repeats", "1", "--threads", "1", "--dtype", "float32", "--profile", "on",
                       "--profile-steps", "2"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "correctness gate" in out and "identical tokens: yes" in out
    assert re.search(r"ratio course / transformers, tokens/s of the 16 new tokens .*: \d+\.\d\dx", out)
    assert re.search(r"ratio course / transformers, decode tokens/s .*: \d+\.\d\dx", out)
    assert re.search(r"ratio llama-style / gpt2-style, tokens/s: \d+\.\d\dx", out)
    assert "identical leading tokens (float32, first repeat): 16 of 16" in out
    assert "every repeat of a side gave the same tokens: yes" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("course ", "transformers "))}
    assert set(rows) == {"course", "transformers"}
    assert all(float(row[3]) > 0 for row in rows.values())  # tokens/s
    # the rows are the 15 operators whose times differ most, so which ones appear depends on the run
    assert "profile: 2 decode steps per side" in out and re.search(r"^  aten::\w+ +\d+\.\d\d", out, re.M)
    assert "goal within 2%: met" in out


def test_the_float32_gate_fails_when_a_weight_is_lost_on_the_way(bench, monkeypatch, capsys):
    real = bench.load_side

    def broken(side, folder, cfg, dtype):  # the course side forgets one layer's key norm
        model = real(side, folder, cfg, dtype)
        if side == "course":
            with torch.no_grad():
                model.trf_blocks[1].att.k_norm.weight.fill_(1.0)
        return model

    assert bench.float32_gate(seed=5)[0]
    monkeypatch.setattr(bench, "load_side", broken)
    ok, ours, theirs = bench.float32_gate(seed=5)
    assert not ok and ours != theirs
    assert bench.main(["generation", "--tiny", "--threads", "1"]) == 1  # stops before timing anything
    assert "identical tokens: NO" in capsys.readouterr().out


@pytest.mark.parametrize("tiny", [False, True])
def test_the_training_models_have_equal_parameter_counts(bench, tiny):
    gpt_cfg, modern_cfg = bench.train_configs(tiny, context_length=256)
    with torch.device("meta"):
        gpt = bench.tie_weights(bench.GPTModel(gpt_cfg))
        modern = bench.ModernModel(modern_cfg)
    n_gpt, n_modern = (sum(p.numel() for p in m.parameters()) for m in (gpt, modern))
    assert abs(n_modern / n_gpt - 1) <= 0.02, (n_gpt, n_modern)
    assert modern_cfg.tie_embeddings and modern_cfg.n_kv_heads < modern_cfg.n_heads  # tied, grouped-query
    assert (modern_cfg.emb_dim, modern_cfg.n_layers, modern_cfg.vocab_size) == \
        (gpt_cfg.emb_dim, gpt_cfg.n_layers, gpt_cfg.vocab_size)
    if not tiny:
        assert 30e6 < n_gpt < 60e6 and gpt_cfg.vocab_size == 50_257
