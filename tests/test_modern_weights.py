"""Tests for ch05_pretraining.modern_weights: Llama 3 / Qwen3 checkpoints -> ModernModel, offline.

The checkpoints are tiny, randomly initialised `transformers` LlamaForCausalLM / Qwen3ForCausalLM models
written with `save_pretrained`, once as one model.safetensors and once in shards: the format of
`meta-llama/Llama-3.2-1B-Instruct` and `Qwen/Qwen3-0.6B` on the Hub, without the download. The Hub itself
is faked by serving such a folder through a stand-in for `hf_hub_download`.
"""
import json
import shutil
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file

from ch05_pretraining import modern_weights
from ch05_pretraining.gpt2_weights import WeightsUnavailableError
from ch05_pretraining.modern_weights import MODERN_MODELS, download_modern, is_hub_name, load_modern

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}
KINDS = {  # GQA, untied head, llama3 RoPE scaling / QK-norm, tied head
    "llama": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                  rope_scaling=LLAMA3_SCALING, rope_theta=500_000.0),
    "qwen3": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}
VOCAB = 97
IDX = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))


def hf_model(kind: str, seed: int = 0):
    """A small random transformers model (float32, eval mode), its norms random too so a missed one shows."""
    config_cls = transformers.LlamaConfig if kind == "llama" else transformers.Qwen3Config
    model_cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen3ForCausalLM
    config = config_cls(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                        max_position_embeddings=64, rms_norm_eps=1e-6, **KINDS[kind])
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """kind -> (transformers model, {"single": folder, "sharded": folder}), written once for the module."""
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for kind in KINDS:
        hf = hf_model(kind)
        hf.save_pretrained(root / kind / "single")
        hf.save_pretrained(root / kind / "sharded", max_shard_size="20KB")
        made[kind] = hf, {"single": root / kind / "single", "sharded": root / kind / "sharded"}
    return made


def copy_checkpoint(folder: Path, tmp_path: Path) -> Path:
    """A copy of a checkpoint folder to damage."""
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def rewrite_shard(folder: Path, hf_name: str, change) -> None:
    """Rewrite the shard holding hf_name with change(state) applied (it may delete or replace tensors)."""
    shard = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][hf_name]
    state = load_file(folder / shard)
    change(state)
    save_file(state, folder / shard, metadata={"format": "pt"})


def assert_same_logits(model, hf, idx=IDX):
    with torch.no_grad():
        expected = hf(idx).logits
        got = model(idx)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max().item()


# --- loading a folder -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["single", "sharded"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_load_modern_matches_transformers(checkpoints, kind, layout):
    hf, folders = checkpoints[kind]
    folder = folders[layout]
    shards = sorted(folder.glob("model-*.safetensors"))
    if layout == "sharded":
        assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
        assert len(shards) > 1
    else:
        assert (folder / "model.safetensors").is_file() and not shards
    model = load_modern(str(folder))
    assert not model.training
    assert_same_logits(model, hf)
    tied = KINDS[kind]["tie_word_embeddings"]
    assert (model.out_head.weight is model.tok_emb.weight) == tied  # tied: one tensor; untied: two
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())
    assert model.cos.shape == (64, model.cfg.head_dim) and model.cos.dtype == torch.float32


def test_a_shorter_context_keeps_the_rope_tables_small(checkpoints):
    hf, folders = checkpoints["llama"]
    model = load_modern(folders["single"], context_length=24)
    assert model.cfg.context_length == 24 and model.cos.shape == model.sin.shape == (24, model.cfg.head_dim)
    assert_same_logits(model, hf, IDX[:, :24])
    with pytest.raises(ValueError, match=r"max_position_embeddings \(64\)"):
        load_modern(folders["single"], context_length=65)


def test_bf16_checkpoint_loads_as_float32_by_default_or_as_bf16(tmp_path):
    hf = hf_model("qwen3").to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    weights = {name: p.detach() for name, p in hf.named_parameters()}
    model = load_modern(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.tok_emb.weight, weights["model.embed_tokens.weight"].float())
    assert torch.equal(model.trf_blocks[1].att.k_norm.weight, weights["model.layers.1.self_attn.k_norm.weight"].float())
    model = load_modern(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.trf_blocks[0].ff.fc3.weight, weights["model.layers.0.mlp.down_proj.weight"])
    with torch.no_grad():
        assert model(IDX).dtype == torch.bfloat16


def test_weights_are_never_randomly_initialised_on_a_real_device(checkpoints, monkeypatch):
    # nn.Linear and nn.Embedding initialise through torch.nn.init: on "meta" that costs nothing and is overwritten.
    devices = []

    def recording(init):
        def wrapped(tensor, *args, **kwargs):
            devices.append(tensor.device.type)
            return init(tensor, *args, **kwargs)
        return wrapped

    for name in ("kaiming_uniform_", "normal_", "uniform_"):
        monkeypatch.setattr(torch.nn.init, name, recording(getattr(torch.nn.init, name)))
    model = load_modern(checkpoints["qwen3"][1]["sharded"])
    assert devices and set(devices) == {"meta"}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert t.device.type == "cpu", name
        assert t.untyped_storage().nbytes() == t.nbytes, f"{name} is a view of a bigger storage"


# --- bad checkpoints ------------------------------------------------------------------------------------


def test_a_deleted_tensor_is_named(checkpoints, tmp_path):
    folder = copy_checkpoint(checkpoints["qwen3"][1]["sharded"], tmp_path)
    name = "model.layers.1.self_attn.k_norm.weight"
    rewrite_shard(folder, name, lambda state: state.pop(name))
    with pytest.raises(ValueError, match=rf"no tensor {name} \(for trf_blocks\.1\.att\.k_norm\.weight\)"):
        load_modern(folder)


def test_a_misshapen_tensor_is_named(checkpoints, tmp_path):
    folder = copy_checkpoint(checkpoints["llama"][1]["sharded"], tmp_path)
    name = "model.layers.0.mlp.down_proj.weight"
    rewrite_shard(folder, name, lambda state: state.update({name: torch.zeros(48, 3)}))
    with pytest.raises(ValueError, match=rf"{name} has shape \(48, 3\), but trf_blocks\.0\.ff\.fc3\.weight needs "
                                         r"\(48, 80\)"):
        load_modern(folder)


def test_harmless_extra_tensors_are_ignored_and_others_named(checkpoints, tmp_path):
    hf, folders = checkpoints["qwen3"]
    folder = copy_checkpoint(folders["single"], tmp_path)
    state = load_file(folder / "model.safetensors")
    # Qwen3-0.6B's file holds an lm_head beside its tied embedding; old files keep RoPE's inv_freq
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    state["model.rotary_emb.inv_freq"] = torch.ones(8)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = load_modern(folder)
    assert model.out_head.weight is model.tok_emb.weight
    assert_same_logits(model, hf)
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"no place for, first \['model\.layers\.0\.self_attn\.q_proj\.bias'\]"):
        load_modern(folder)


@pytest.mark.parametrize("change, match", [
    ({"model_type": "mistral"}, r"model_type 'mistral', but load_modern supports 'llama' and 'qwen3'"),
    ({"attention_bias": True}, r"attention_bias=True, but ModernModel computes attention_bias=False"),
    ({"hidden_act": "gelu"}, r"hidden_act='gelu'"),
])
def test_configs_modern_model_cannot_compute_are_refused(checkpoints, tmp_path, change, match):
    folder = copy_checkpoint(checkpoints["llama"][1]["single"], tmp_path)
    config = json.loads((folder / "config.json").read_text()) | change
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        load_modern(folder)


def test_missing_files_and_bad_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_modern(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        load_modern(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder"):
        load_modern(tmp_path / "absent")
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a Hugging Face Hub name"):
        load_modern("Qwen3")


def test_is_hub_name(tmp_path, monkeypatch):
    assert all(is_hub_name(name) for name in MODERN_MODELS)
    assert is_hub_name("owner/some-model_v1.5")
    for not_a_name in ["gpt2", "a/b/c", "./x", "../x", "x/..", "/abs", "owner/", "/name", "a--b/c", ""]:
        assert not is_hub_name(not_a_name), not_a_name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_hub_name("owner/name")  # a local folder of that shape is a folder


# --- the Hub, offline and faked ---------------------------------------------------------------------------


def test_offline_download_says_in_one_line_how_to_get_the_files(hub_offline, tmp_path):
    with pytest.raises(WeightsUnavailableError) as info:
        download_modern("Qwen/Qwen3-0.6B", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is not None
    for part in ["Qwen/Qwen3-0.6B", "config.json", "model.safetensors", "tokenizer.json", "HF_ENDPOINT",
                 "HF_HUB_OFFLINE", "https://huggingface.co/Qwen/Qwen3-0.6B/tree/main", str(tmp_path / "cache")]:
        assert part in message, part
    with pytest.raises(WeightsUnavailableError, match="Qwen/Qwen3-0.6B"):
        load_modern("Qwen/Qwen3-0.6B")


def http_error(cls, status: int, repo: str):
    """A huggingface_hub HTTP error as hf_hub_download raises it."""
    url = f"https://huggingface.co/{repo}/resolve/main/config.json"
    return cls(f"{status} Client Error.", response=httpx2.Response(status, request=httpx2.Request("HEAD", url)))


@pytest.mark.parametrize("cls, status, parts", [
    (GatedRepoError, 403, ["is gated", "licence", "https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct",
                           "hf auth login", "HF_TOKEN"]),
    (RepositoryNotFoundError, 404, ["no repository meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-0.6B"]),
])
def test_gated_or_unknown_repo_says_what_to_do(monkeypatch, tmp_path, cls, status, parts):
    repo = "meta-llama/Llama-3.2-1B-Instruct"

    def refuse(repo_id, filename, **kwargs):
        raise http_error(cls, status, repo_id)

    monkeypatch.setattr(modern_weights, "hf_hub_download", refuse)
    with pytest.raises(WeightsUnavailableError) as info:
        download_modern(repo, cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value.__cause__, cls)
    for part in parts:
        assert part in message, part
    assert ("licence" in message) == (cls is GatedRepoError)


def fake_hub(monkeypatch, tmp_path, source: Path, offline_missing: bool = False) -> list[str]:
    """Serve the files of source as huggingface_hub would from a snapshot folder; return the names asked for."""
    snapshot = tmp_path / "hub" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    asked = []

    def download(repo_id, filename, cache_dir=None, **kwargs):
        asked.append(filename)
        if not (source / filename).is_file():
            if offline_missing:
                raise LocalEntryNotFoundError(f"{filename} is not in the cache")
            raise EntryNotFoundError(f"404: {repo_id} has no {filename}")
        shutil.copy(source / filename, snapshot / filename)
        return str(snapshot / filename)

    monkeypatch.setattr(modern_weights, "hf_hub_download", download)
    return asked


@pytest.mark.parametrize("layout", ["sharded", "single"])
def test_hub_name_end_to_end_on_a_fake_hub(checkpoints, monkeypatch, tmp_path, layout):
    kind = "qwen3" if layout == "sharded" else "llama"
    hf, folders = checkpoints[kind]
    source = copy_checkpoint(folders[layout], tmp_path)
    (source / "tokenizer.json").write_text("{}")
    asked = fake_hub(monkeypatch, tmp_path, source)
    folder = download_modern("owner/tiny")
    shards = sorted(p.name for p in source.glob("model-*.safetensors"))
    if layout == "sharded":
        assert asked == ["config.json", "model.safetensors", "model.safetensors.index.json", *shards, "tokenizer.json"]
    else:
        assert asked == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (folder / "tokenizer.json").is_file()
    asked.clear()
    assert_same_logits(load_modern("owner/tiny"), hf)
    assert "config.json" in asked


def test_fake_hub_without_weights_names_model_safetensors(checkpoints, monkeypatch, tmp_path, hub_offline):
    source = tmp_path / "only_config"
    source.mkdir()
    shutil.copy(checkpoints["qwen3"][1]["single"] / "config.json", source / "config.json")
    asked = fake_hub(monkeypatch, tmp_path, source, offline_missing=True)
    with pytest.raises(WeightsUnavailableError) as info:
        download_modern("owner/tiny")
    assert asked == ["config.json", "model.safetensors", "model.safetensors.index.json"]
    assert "owner/tiny (model.safetensors) is not in the Hugging Face cache" in str(info.value)
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)
