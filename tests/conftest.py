"""Fixtures shared by the test files. None is autouse: a test file asks for what it needs, either as a
test argument or for a whole module with `pytestmark = pytest.mark.usefixtures("one_thread")`.

Data comes from the mirror named by LLMS_DATA_MIRROR (CI sets it) or, without one, from the network.
When neither has a file, the tests that need it are skipped; with a mirror set, a missing file is an
error instead, so CI cannot silently skip them.
"""
import os
from pathlib import Path

import pytest
import torch

DEVICE_ENV_VAR = "LLMS_DEVICE"  # appendix_pytorch.get_device reads it (not imported: collection stays light)


def _mirror_set() -> bool:
    return bool(os.environ.get("LLMS_DATA_MIRROR", "").strip())


@pytest.fixture(scope="module")
def one_thread():
    """Run on one CPU thread: tiny models are fastest so, and do not contend with whatever else the CPU runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_device_override(monkeypatch):
    """Unset LLMS_DEVICE, whatever the developer's shell has: get_device() makes its own choice."""
    monkeypatch.delenv(DEVICE_ENV_VAR, raising=False)


@pytest.fixture
def force_cpu_device(monkeypatch):
    """Set LLMS_DEVICE=cpu: code that calls get_device() runs on the CPU even where a GPU exists."""
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")


@pytest.fixture(scope="session")
def fetch_or_skip(tmp_path_factory):
    """A function (url, sha256) -> Path of the downloaded file (one copy per session, via the course helper)."""
    from ch02_text_data import DownloadError, download_file

    folder = tmp_path_factory.mktemp("downloads")

    def fetch(url: str, sha256: str | None = None) -> Path:
        try:
            return download_file(url, folder, sha256=sha256, retries=1, timeout=10, progress=False)
        except DownloadError as err:
            if _mirror_set():
                raise
            pytest.skip(f"no LLMS_DATA_MIRROR and no network: {err}")

    return fetch


@pytest.fixture(scope="session")
def the_verdict(fetch_or_skip) -> str:
    """The text of "The Verdict", the short story chapters 2 and 5 train on."""
    from ch02_text_data import THE_VERDICT_SHA256, THE_VERDICT_URL

    return fetch_or_skip(THE_VERDICT_URL, THE_VERDICT_SHA256).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """tiktoken's GPT-2 encoding (offline from TIKTOKEN_CACHE_DIR, as CI sets it up)."""
    tiktoken = pytest.importorskip("tiktoken")
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no TIKTOKEN_CACHE_DIR and no network
        if _mirror_set():
            raise
        pytest.skip(f"tiktoken cannot load gpt2: {err}")


@pytest.fixture
def disk_full_halfway(monkeypatch):
    """Path.write_text writes half its text, then fails as a full disk does; monkeypatch.undo() ends it."""
    from pathlib import Path

    real_write_text = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """Offline mode with an empty Hub cache; huggingface_hub reads HF_HUB_OFFLINE at import, so patch both."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"
