"""Download the course's data files: verified, atomic, retried, and offline-friendly.

Hand-written infrastructure (not generated from a notebook). One public function,
`download_file`, used by every chapter that needs a file from the internet:

* `download_file(url, dest_dir)` always treats dest_dir as a directory (created with its parents
  when missing) and writes dest_dir / name, where name is `filename` if given, else the URL's
  basename (percent-decoded); a name with a path separator, '.', '..', NUL or nothing at all is
  refused, so no URL can make it write outside dest_dir;
* a destination that already holds a valid file is returned at once (no network);
* if the environment variable `LLMS_DATA_MIRROR` names a directory that holds the URL's
  basename (directly or in an immediate subdirectory; `filename` when the URL has no usable
  basename), the file is copied from there instead; the lookup never leaves that directory;
* otherwise the file is streamed over HTTP(S) with urllib (which honours `HTTP(S)_PROXY`)
  into a temporary file next to the destination, with a tqdm progress bar and retries;
* the SHA-256 is checked when known, and only then is the file renamed into place, so no
  partial, temporary or corrupt file is ever left behind.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

__all__ = [
    "THE_VERDICT_URL",
    "THE_VERDICT_SHA256",
    "GPT2_ENCODER_URL",
    "GPT2_ENCODER_SHA256",
    "GPT2_VOCAB_BPE_URL",
    "GPT2_VOCAB_BPE_SHA256",
    "MIRROR_ENV",
    "DownloadError",
    "download_file",
    "write_atomically",
]

THE_VERDICT_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt"
)
THE_VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"
GPT2_ENCODER_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

MIRROR_ENV = "LLMS_DATA_MIRROR"

RETRY_BACKOFF_S = 0.5  # wait RETRY_BACKOFF_S * attempt seconds before the next attempt (tests set 0)
CHUNK_SIZE = 1 << 16  # bytes read from the network per step
USER_AGENT = "llms-from-scratch-course/0.1 (+python-urllib)"
_TRANSIENT_HTTP_CODES = frozenset({408, 429})  # 4xx codes worth retrying; every 5xx is retried too


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its checksum; the message says how to fix it."""


class _TruncatedBody(Exception):
    """The server closed the connection before sending the whole body."""


def download_file(
    url: str,
    dest_dir: str | os.PathLike[str] | None = ".",
    *,
    filename: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch url into the directory dest_dir (created if missing) as filename (default: the URL's basename)."""
    url_name = _url_basename(url, required=filename is None)
    name = _check_filename(filename, "filename") if filename is not None else url_name
    expected = _check_sha256(sha256)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise ValueError(f"retries must be an integer >= 1 (the number of attempts), got {retries!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")

    target = _target_path(dest_dir, name)
    if _is_valid(target, expected):
        return target

    mirror_file = _find_in_mirror(url_name or name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(target)
    try:
        if mirror_file is not None:
            shutil.copyfile(mirror_file, tmp)
            actual = _sha256(tmp)
            if expected is not None and actual != expected:
                raise DownloadError(
                    f"Mirror file {mirror_file} has the wrong SHA-256 for {url}:\n"
                    f"  expected {expected}\n  actual   {actual}\n"
                    f"Replace it with a good copy, or unset {MIRROR_ENV} to download from the internet."
                )
        else:
            _download_with_retries(url, tmp, target, retries=retries, timeout=timeout, progress=progress)
            actual = _sha256(tmp)
            if expected is not None and actual != expected:
                raise DownloadError(
                    f"Downloaded {url} but its SHA-256 does not match (the file was deleted):\n"
                    f"  expected {expected}\n  actual   {actual}\n"
                    "The server sent different content (a changed file, or a proxy's error page)."
                )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful os.replace
    return target


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), then rename tmp_path to path: readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful os.replace


def _url_basename(url: str, *, required: bool = True) -> str | None:
    """Return the percent-decoded last path segment of an http(s) URL (None if unusable and not required)."""
    if not isinstance(url, str):
        raise ValueError(f"url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
    name = unquote(parts.path.rsplit("/", 1)[-1])
    try:
        return _check_filename(name, f"the file name at the end of url {url!r}")
    except ValueError as err:
        if not required:
            return None
        raise ValueError(f"{err}; pass filename='...' to name the local file yourself") from None


def _check_filename(name: str, what: str) -> str:
    """Return name if it is a plain file name (no path separator, not '.' or '..', no NUL), else raise ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {type(name).__name__}")
    if not name or name in (".", ".."):
        raise ValueError(f"{what} must be a file name, got {name!r}")
    bad = [c for c in ("/", "\\", "\0") if c in name]
    if bad:
        raise ValueError(
            f"{what} must be a plain file name without {' or '.join(map(repr, bad))}, got {name!r}: "
            "a path would let the download write outside its directory"
        )
    return name


def _check_sha256(sha256: str | None) -> str | None:
    """Return the checksum in lower case, or raise ValueError if it is not 64 hex digits."""
    if sha256 is None:
        return None
    digest = sha256.strip().lower() if isinstance(sha256, str) else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return digest


def _target_path(dest_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """Return dest_dir / name; raise if dest_dir is an existing file or name would leave dest_dir."""
    directory = Path.cwd() if dest_dir is None else Path(dest_dir)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"dest_dir {str(directory)!r} is a file, but download_file saves into a directory: pass the "
            f"directory to put {name!r} in (and filename='...' to choose the file's name)"
        )
    target = directory / name
    if target.parent != directory or target.name != name:  # e.g. a drive letter ("C:x") on Windows
        raise ValueError(f"file name {name!r} is not a plain file name inside {str(directory)!r}")
    return target


def _is_valid(path: Path, expected: str | None) -> bool:
    """Say whether path is a file with the expected checksum (or, without one, non-empty)."""
    if not path.is_file():
        return False
    if expected is None:
        return path.stat().st_size > 0
    return _sha256(path) == expected


def _sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mirror_dir() -> Path | None:
    """Return the mirror directory named by LLMS_DATA_MIRROR, if it is set and is a directory."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser() if value and Path(value).expanduser().is_dir() else None


def _find_in_mirror(name: str) -> Path | None:
    """Return the mirror's copy of name (at its top level or one directory down), if any; never outside it."""
    mirror = _mirror_dir()
    if mirror is None:
        return None
    _check_filename(name, "mirror file name")  # a bare name: joined to a folder, it cannot climb out
    for folder in [mirror, *sorted(p for p in mirror.iterdir() if p.is_dir())]:
        if (folder / name).is_file() and _inside(mirror, folder / name):
            return folder / name
    return None


def _inside(mirror: Path, path: Path) -> bool:
    """Say whether path, symlinks resolved, lies in mirror or one of its immediate subdirectories."""
    root, real = mirror.resolve(), path.resolve()
    return real.parent == root or real.parent.parent == root


def _create_temp(target: Path) -> Path:
    """Create an empty, uniquely named temporary file next to target (mode subject to umask)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _download_with_retries(
    url: str, tmp: Path, target: Path, *, retries: int, timeout: float, progress: bool
) -> None:
    """Stream url into tmp, retrying transient failures; raise DownloadError on final failure."""
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, tmp, timeout=timeout, progress=progress, desc=target.name)
            return
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
            ssl.SSLError,
            _TruncatedBody,
        ) as err:
            if isinstance(err, urllib.error.HTTPError):
                err.close()
            if not _is_transient(err) or attempt == retries:
                tried = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise DownloadError(_failure_message(url, target, err, tried)) from err
        time.sleep(RETRY_BACKOFF_S * attempt)


def _fetch(url: str, tmp: Path, *, timeout: float, progress: bool, desc: str) -> None:
    """Make one HTTP request and stream its body into tmp; raise if the body is cut short."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
        total = _content_length(response)
        received = 0
        with tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress
        ) as bar:
            while chunk := response.read(CHUNK_SIZE):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise _TruncatedBody(f"connection closed after {received:,} of {total:,} bytes")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """Return the response's Content-Length, or None when absent or malformed."""
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _is_transient(err: BaseException) -> bool:
    """Say whether a failed attempt is worth retrying (server hiccups yes; 404, bad certs no)."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in _TRANSIENT_HTTP_CODES
    return not _is_cert_error(err)


def _is_cert_error(err: BaseException) -> bool:
    """Say whether err is (or wraps) an SSL certificate verification failure."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    return isinstance(reason, ssl.SSLCertVerificationError)


def _describe(err: BaseException) -> str:
    """Return a short human description of why an attempt failed."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _failure_message(url: str, target: Path, err: BaseException, tried: str) -> str:
    """Return the final error text: what failed, why, and how to get the file anyway."""
    lines = [f"Could not download {url}{tried}: {_describe(err)}."]
    if _is_cert_error(err):
        lines.append(
            "This is an SSL certificate error, often caused by a corporate proxy or antivirus that "
            "inspects HTTPS; point SSL_CERT_FILE at its root certificate, or use one of the fixes below."
        )
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        where = "has no such file" if _mirror_dir() is not None else "is not a directory"
        lines.append(f"({MIRROR_ENV}={mirror} is set, but it {where}.)")
    lines.append(
        f"To fix: set {MIRROR_ENV}=<dir> to a directory containing '{target.name}', "
        f"or download the file manually to '{target}'."
    )
    return "\n".join(lines)
