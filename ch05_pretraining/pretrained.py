"""load_pretrained: OpenAI's GPT-2 weights if they can be had, else the model chapter 5 pretrains (trained if missing).

Hand-written infrastructure (not generated from a notebook), used by chapters 6 and 7. The substitute lives in
DEFAULT_OUT (`ch05_pretraining/checkpoints/gpt2-verdict`, where the chapter-5 notebook saves it); smoke runs use
SMOKE_OUT (`.../gpt2-verdict-smoke`) instead, so a smoke model is never taken for the real one. (`python -m
ch05_pretraining --smoke` writes to a third folder, CLI_SMOKE_OUT, so that it and this substitute never meet.)
A substitute whose context is shorter than the run that makes it is refused, and an interrupted run is resumed.
"""
from __future__ import annotations

from pathlib import Path

import dataclasses

import torch

from ch04_gpt_model import GPTModel
from ch05_pretraining.gpt2_weights import GPT2_ALIASES, GPT2_REPOS, WeightsUnavailableError, load_gpt2
from ch05_pretraining.cli_tools import STATE_NAME, UsageError
from ch05_pretraining.pretrain_run import DEFAULT_OUT, SMOKE_DEFAULTS, SMOKE_OUT, PretrainSettings, pretrain

__all__ = ["load_pretrained", "load_base_model", "is_gpt2_size", "substitute_settings", "DEFAULT_OUT", "SMOKE_OUT"]

ROOT = Path(__file__).resolve().parent.parent


def substitute_settings(smoke: bool = False) -> PretrainSettings:
    """The run that makes the substitute: the chapter's, or (smoke) a tiny model with room for ch07's prompts (256 tokens)."""
    if smoke:
        return PretrainSettings(**{**SMOKE_DEFAULTS, "context_length": 256}, smoke=True, out=SMOKE_OUT, progress=False)
    return PretrainSettings(out=DEFAULT_OUT, progress=False)


def _shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _train_substitute(settings: PretrainSettings, where: str, device: str | torch.device | None) -> None:
    """Train the substitute on device; resume the run that was interrupted if its train_state.pt is there."""
    resume = (settings.out / STATE_NAME).is_file()
    what = "a tiny smoke-test model" if settings.smoke else "the chapter's run (GPT-2 124M on The Verdict)"
    doing = f"resuming the interrupted training of {what}" if resume else f"training it with {what}"
    print(f"No chapter-5 model in {where} yet: {doing} (the chapter-5 notebook saves the same model there) ...",
          flush=True)
    pretrain(dataclasses.replace(settings, resume=resume, device=None if device is None else str(device)))


def _check_fits(model: GPTModel, settings: PretrainSettings, where: str) -> None:
    """A UsageError if the model found in settings.out reads fewer tokens than the substitute that would be trained."""
    if model.cfg.context_length < settings.context_length:
        raise UsageError(f"the chapter-5 model in {where} has context_length {model.cfg.context_length}, fewer than "
                         f"the {settings.context_length} tokens chapters 6 and 7 need: delete {where} (it is trained "
                         "again) or save a model with a longer context there")


def load_pretrained(
    name: str = "gpt2", device: str | torch.device | None = None, *, smoke: bool = False
) -> tuple[GPTModel, str]:
    """OpenAI's GPT-2 `name` if it can be had, else chapter 5's model (trained first if missing); prints its size.

    Returns the model (in eval mode) and a sentence naming it, for the fine-tuning chapters to print. The substitute
    is read from DEFAULT_OUT, or with smoke=True from SMOKE_OUT (a tiny model trained in seconds if missing), and
    trained on `device`; a UsageError if the model there has a shorter context than the substitute's.
    """
    try:
        model = load_gpt2(name, device=device)
        where = GPT2_REPOS[GPT2_ALIASES.get(name, name)]
        source = f"OpenAI's GPT-2 {name} ({where})"
    except WeightsUnavailableError:  # load_gpt2(name) alone shows the full reason
        repo = GPT2_REPOS[GPT2_ALIASES.get(name, name)]
        print(f"OpenAI's {name} weights could not be loaded (no network and not in the Hugging Face cache), so the "
              f"chapter-5 model stands in; to use OpenAI's, go online once, set HF_ENDPOINT to a mirror, or download "
              f"{repo}'s config.json and model.safetensors into a folder and pass it to load_gpt2", flush=True)
        settings = substitute_settings(smoke)
        where = _shown(settings.out)
        if not (settings.out / "model.safetensors").is_file():
            _train_substitute(settings, where, device)
        model = load_gpt2(settings.out, device=device)
        _check_fits(model, settings, where)
        kind = "a smoke-test model from chapter 5" if smoke else "the model pretrained on The Verdict in chapter 5"
        source = f"the substitute: {kind} ({where})"
    cfg = model.cfg
    print(f"loaded {sum(p.numel() for p in model.parameters()):,} parameters (emb_dim {cfg.emb_dim}, {cfg.n_layers} "
          f"layers, context_length {cfg.context_length}) from {where}")
    return model, source


def is_gpt2_size(name: str) -> bool:
    """Whether a --model value names a GPT-2 size (a name wins over a folder of that name, as in load_gpt2)."""
    return name in GPT2_REPOS or name in GPT2_ALIASES


def load_base_model(model: str, device: torch.device, *, smoke: bool = False) -> tuple[GPTModel, str]:
    """The fine-tuning commands' --model: a GPT-2 size (load_pretrained) or a checkpoint folder; a UsageError if unreadable."""
    if is_gpt2_size(model):
        return load_pretrained(model, device, smoke=smoke)
    try:
        return load_gpt2(Path(model), device=device), f"the checkpoint in {model}"
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--model {model}: {err}") from None
