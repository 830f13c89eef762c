"""Robustness tests for ch02_text_data.download against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import http.server
import os
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ch02_text_data import download
from ch02_text_data.download import (
    GPT2_ENCODER_SHA256,
    GPT2_ENCODER_URL,
    GPT2_VOCAB_BPE_SHA256,
    GPT2_VOCAB_BPE_URL,
    MIRROR_ENV,
    THE_VERDICT_SHA256,
    THE_VERDICT_URL,
    DownloadError,
    download_file,
)

# Read before any test clears it: CI points this at the shared offline mirror.
REAL_MIRROR = os.environ.get(MIRROR_ENV)

BODY = bytes(range(256)) * 1000  # 256 kB: several network chunks
BODY_SHA = hashlib.sha256(BODY).hexdigest()
WRONG_SHA = "0" * 64

Action = Callable[[http.server.BaseHTTPRequestHandler], None]


def serve(body: bytes) -> Action:
    """Answer 200 with the whole body."""

    def action(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return action


def drop_mid_body(body: bytes) -> Action:
    """Promise the whole body in Content-Length, send half of it, then close the connection."""

    def action(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.close_connection = True

    return action


def status(code: int) -> Action:
    """Answer with an HTTP error status."""

    def action(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_error(code)

    return action


class Server:
    """A local HTTP server that plays one scripted action per request (the last one repeats)."""

    def __init__(self) -> None:
        self.actions: list[Action] = [serve(BODY)]
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                index = min(len(server.requests), len(server.actions)) - 1
                server.actions[index](self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str = "data.bin") -> str:
        """Return the URL of a file on this server."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/files/{name}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror, no backoff waits, and no proxy between the tests and 127.0.0.1."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def closed_port_url() -> str:
    """Return a URL on a local port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/files/data.bin"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a URL fail the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("download_file touched the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def names(directory: Path) -> list[str]:
    """Return every name in a directory, hidden temporary files included."""
    return sorted(p.name for p in directory.iterdir())


# 1. Normal download ---------------------------------------------------------------------------


def test_download_verifies_and_leaves_no_temp_files(server: Server, tmp_path: Path) -> None:
    path = download_file(server.url(), tmp_path, sha256=BODY_SHA, progress=False)
    assert path == tmp_path / "data.bin"
    assert path.read_bytes() == BODY
    assert names(tmp_path) == ["data.bin"]
    assert server.requests == ["/files/data.bin"]


def test_destination_forms(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = download_file(server.url(), tmp_path / "new", filename="renamed.bin", progress=False)
    assert explicit == tmp_path / "new" / "renamed.bin" and explicit.read_bytes() == BODY
    monkeypatch.chdir(tmp_path)
    default = download_file(server.url("other.bin"), progress=False)
    assert default.resolve() == tmp_path / "other.bin" and default.read_bytes() == BODY
    slash = download_file(server.url("third.bin"), "sub/", progress=False)  # the notebooks' form
    assert slash == Path("sub", "third.bin") and slash.read_bytes() == BODY


def test_missing_dest_dir_without_slash_becomes_a_directory(server: Server, tmp_path: Path) -> None:
    # A fresh clone has no ch05_pretraining/data: Path("data") used to become a FILE named data.
    dest = tmp_path / "a" / "data"
    path = download_file(server.url(), dest, sha256=BODY_SHA, progress=False)
    assert dest.is_dir() and path == dest / "data.bin" and path.read_bytes() == BODY
    assert names(dest) == ["data.bin"]


def test_dest_dir_that_is_a_file_is_refused(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"a file, not a directory")
    with pytest.raises(NotADirectoryError, match="is a file.*filename="):
        download_file(server.url(), tmp_path / "data", progress=False)
    assert (tmp_path / "data").read_bytes() == b"a file, not a directory"
    assert server.requests == []


# 1b. Path traversal: no URL and no filename may write outside dest_dir -------------------------


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fescaped.txt", "..%2fescaped.txt", "..%5C..%5Cescaped.txt", "sub%2Fescaped.txt", "..", "%2E%2E",
             "escaped%00.txt"],
)
def test_url_basename_that_decodes_to_a_path_is_refused(name: str, server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    dest.mkdir(parents=True)
    with pytest.raises(ValueError, match="file name"):
        download_file(server.url(name), dest, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b"]
    assert server.requests == []


@pytest.mark.parametrize("filename", ["../escaped.txt", "sub/x.txt", "..\\escaped.txt", "..", ".", "", "x\0y"])
def test_filename_that_is_a_path_is_refused(filename: str, server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "a"
    dest.mkdir()
    with pytest.raises(ValueError, match="file name"):
        download_file(server.url(), dest, filename=filename, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a"]
    assert server.requests == []


def test_filename_names_a_url_without_a_usable_basename(server: Server, tmp_path: Path) -> None:
    path = download_file(server.url("..%2Fdata.bin"), tmp_path, filename="safe.bin", progress=False)
    assert path == tmp_path / "safe.bin" and names(tmp_path) == ["safe.bin"]


def test_progress_bar_uses_content_length(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download_file(server.url(), tmp_path, sha256=BODY_SHA.upper())
    err = capsys.readouterr().err
    assert "data.bin" in err and "100%" in err


# 2. Checksum mismatch -------------------------------------------------------------------------


def test_checksum_mismatch_raises_and_deletes(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download_file(server.url(), tmp_path, sha256=WRONG_SHA, progress=False)
    message = str(info.value)
    assert WRONG_SHA in message and BODY_SHA in message and server.url() in message
    assert names(tmp_path) == []
    assert len(server.requests) == 1  # a wrong checksum is not a transient failure


# 3. Connection dropped mid-body ---------------------------------------------------------------


def test_dropped_connection_without_retry_leaves_no_partial_file(server: Server, tmp_path: Path) -> None:
    server.actions = [drop_mid_body(BODY), serve(BODY)]
    with pytest.raises(DownloadError, match="connection closed after"):
        download_file(server.url(), tmp_path, retries=1, progress=False)
    assert names(tmp_path) == []
    assert len(server.requests) == 1


def test_dropped_connection_is_retried(server: Server, tmp_path: Path) -> None:
    server.actions = [drop_mid_body(BODY), serve(BODY)]
    path = download_file(server.url(), tmp_path, sha256=BODY_SHA, retries=3, progress=False)
    assert path.read_bytes() == BODY
    assert len(server.requests) == 2
    assert names(tmp_path) == ["data.bin"]


def test_every_attempt_dropped(server: Server, tmp_path: Path) -> None:
    server.actions = [drop_mid_body(BODY)]
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        download_file(server.url(), tmp_path, retries=3, progress=False)
    assert server.url() in str(info.value) and MIRROR_ENV in str(info.value)
    assert names(tmp_path) == []
    assert len(server.requests) == 3


def test_server_error_then_success(server: Server, tmp_path: Path) -> None:
    server.actions = [status(500), serve(BODY)]
    path = download_file(server.url(), tmp_path, sha256=BODY_SHA, progress=False)
    assert path.read_bytes() == BODY
    assert len(server.requests) == 2


def test_keyboard_interrupt_leaves_no_temp_file(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class InterruptedBar(download.tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", InterruptedBar)
    with pytest.raises(KeyboardInterrupt):
        download_file(server.url(), tmp_path, progress=False)
    assert names(tmp_path) == []


# 4. Mirror ------------------------------------------------------------------------------------


@pytest.mark.parametrize("subdir", ["", "gpt2"])
def test_mirror_hit_needs_no_network(
    subdir: str,
    closed_port_url: str,
    no_network: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirror = tmp_path / "mirror"
    (mirror / subdir).mkdir(parents=True, exist_ok=True)
    (mirror / subdir / "data.bin").write_bytes(BODY)
    (mirror / "unrelated").mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    out = tmp_path / "out"
    out.mkdir()
    path = download_file(closed_port_url, out, sha256=BODY_SHA, progress=False)
    assert path == out / "data.bin" and path.read_bytes() == BODY
    assert names(out) == ["data.bin"]


def test_mirror_file_with_wrong_checksum(
    closed_port_url: str, no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.bin").write_bytes(BODY[:-1])
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError, match="wrong SHA-256") as info:
        download_file(closed_port_url, out, sha256=BODY_SHA, progress=False)
    assert str(mirror / "data.bin") in str(info.value)
    assert names(out) == []


def test_mirror_lookup_cannot_climb_out_of_the_mirror(
    closed_port_url: str, no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret.txt").write_text("outside the mirror")
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    out = tmp_path / "a" / "out"
    url = closed_port_url.replace("data.bin", "..%2Fsecret.txt")
    with pytest.raises(ValueError, match="without '/'"):
        download_file(url, out, progress=False)
    assert not (tmp_path / "a").exists()


def test_mirror_ignores_a_subdirectory_linked_from_outside(
    closed_port_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.bin").write_bytes(BODY)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "linked").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="has no such file"):  # not in the mirror: the network is tried
        download_file(closed_port_url, out, retries=1, progress=False)
    assert names(out) == []


def test_mirror_without_the_file_falls_back_to_network(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    path = download_file(server.url(), tmp_path / "out", sha256=BODY_SHA, progress=False)
    assert path.read_bytes() == BODY
    assert len(server.requests) == 1


# 5. No network, no mirror ---------------------------------------------------------------------


def test_no_network_and_no_mirror(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download_file(closed_port_url, tmp_path, retries=2, progress=False)
    message = str(info.value)
    assert closed_port_url in message
    assert f"{MIRROR_ENV}=<dir>" in message and "'data.bin'" in message
    assert str(tmp_path / "data.bin") in message  # where to put a manual download
    assert names(tmp_path) == []


def test_mirror_that_is_not_a_directory_is_reported(
    closed_port_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "missing"))
    with pytest.raises(DownloadError, match="is not a directory"):
        download_file(closed_port_url, tmp_path, retries=1, progress=False)


def test_ssl_certificate_error_gets_a_hint_and_no_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def bad_certificate(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))

    monkeypatch.setattr(urllib.request, "urlopen", bad_certificate)
    with pytest.raises(DownloadError) as info:
        download_file("https://example.org/data.bin", tmp_path, progress=False)
    message = str(info.value)
    assert "certificate" in message and "proxy" in message and "antivirus" in message
    assert len(calls) == 1
    assert names(tmp_path) == []


# 6. Existing files ----------------------------------------------------------------------------


def test_existing_valid_file_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(BODY)
    assert download_file(server.url(), tmp_path, sha256=BODY_SHA, progress=False) == tmp_path / "data.bin"
    (tmp_path / "nosum.bin").write_bytes(b"anything")
    assert download_file(server.url("nosum.bin"), tmp_path, progress=False).read_bytes() == b"anything"
    assert server.requests == []


@pytest.mark.parametrize("old", [b"stale content", b""])
def test_existing_invalid_file_is_replaced(old: bytes, server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(old)
    sha = BODY_SHA if old else None  # an empty file counts as invalid even without a checksum
    path = download_file(server.url(), tmp_path, sha256=sha, progress=False)
    assert path.read_bytes() == BODY
    assert len(server.requests) == 1
    assert names(tmp_path) == ["data.bin"]


# 7. Permanent HTTP errors ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 403])
def test_client_errors_are_not_retried(code: int, server: Server, tmp_path: Path) -> None:
    server.actions = [status(code), serve(BODY)]
    with pytest.raises(DownloadError, match=f"HTTP {code}") as info:
        download_file(server.url(), tmp_path, retries=3, progress=False)
    assert server.url() in str(info.value)
    assert len(server.requests) == 1
    assert names(tmp_path) == []


# Argument validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("ftp://example.org/a.txt", {}, "http:// or https://"),
        ("https://example.org/", {}, "file name"),
        ("https://example.org/a.txt", {"retries": 0}, "retries"),
        ("https://example.org/a.txt", {"retries": 1.5}, "retries"),
        ("https://example.org/a.txt", {"timeout": 0}, "timeout"),
        ("https://example.org/a.txt", {"sha256": "abc"}, "64 hexadecimal"),
        ("https://example.org/a.txt", {"sha256": "g" * 64}, "64 hexadecimal"),
    ],
)
def test_rejects_bad_arguments(url: str, kwargs: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        download_file(url, tmp_path, progress=False, **kwargs)
    assert names(tmp_path) == []


# 8. The course's real offline mirror ----------------------------------------------------------


@pytest.mark.skipif(
    not (REAL_MIRROR and Path(REAL_MIRROR).is_dir()), reason=f"{MIRROR_ENV} is not set to a directory"
)
def test_real_mirror_serves_course_files(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(REAL_MIRROR))
    verdict = download_file(THE_VERDICT_URL, tmp_path, sha256=THE_VERDICT_SHA256)
    assert verdict.name == "the-verdict.txt"
    assert len(verdict.read_text(encoding="utf-8")) == 20479
    encoder = download_file(GPT2_ENCODER_URL, tmp_path, sha256=GPT2_ENCODER_SHA256)
    vocab = download_file(GPT2_VOCAB_BPE_URL, tmp_path, sha256=GPT2_VOCAB_BPE_SHA256)
    assert (encoder.name, vocab.name) == ("encoder.json", "vocab.bpe")
    assert names(tmp_path) == ["encoder.json", "the-verdict.txt", "vocab.bpe"]
