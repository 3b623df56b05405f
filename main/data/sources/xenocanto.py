"""Download recordings and metadata from the Xeno-canto API v3 (standard library `urllib` only).

Layout of the output folder::

    OUT/metadata/page_001.json   API pages exactly as returned (``{"numRecordings", "page", "recordings", ...}``;
                                 a page cut by ``max_recordings`` keeps only the records taken)
    OUT/audio/XC<id>.<ext>       one file per record (extension from the record's ``file-name``)
    OUT/failures.csv             records that failed in the last run, with the reason
    OUT/.download_state.jsonl    files verified so far (id, name, size, mtime): a re-run skips them unread

Then ``prepare_manifest(OUT / "audio", metadata=metadata_pages(OUT))`` (or ``python -m main.data.prepare
--audio-dir OUT/audio --metadata OUT/metadata/page_*.json``) builds the manifest.

Every HTTP request (API pages and audio files, retries included) goes through one `RateLimiter`
(default 1 request/s, as Xeno-canto asks). Status 429 and 5xx, timeouts and dropped connections are
retried with exponential backoff (``Retry-After`` honoured); other 4xx fail at once. A file is
downloaded to a hidden ``.XC<id>.<ext>.part`` file, checked (size > 0, equal to Content-Length when the
server sends one, and `main.data.audio.check_audio` decodes it) and only then renamed, so an interrupted
run never leaves a half file under the final name. Failures are counted by reason in `DownloadReport`;
the files stay absent, so the next run tries them again.

Several ``species`` or ``quality`` values become several queries (the API has no OR): one per
(species, quality) pair. Their pages are numbered in one sequence; page files left over from an earlier,
longer listing are deleted once a listing completes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from main.files import PathLike, write_csv_atomic, write_text_atomic

from ..audio import check_audio
from .http import HttpClient, TransferError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://xeno-canto.org/api/3/recordings"
API_KEY_ENV = "XENO_CANTO_API_KEY"
USER_AGENT = "bird-diffusion-downloader/1.0 (Python urllib)"
STATE_FILE = ".download_state.jsonl"
FAILURES_FILE = "failures.csv"
# Content problems that `prepare_manifest` judges later: the download itself is fine, keep the file.
_KEEP_REASONS = frozenset({"too_long", "non_finite", "silent"})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 16
_MAX_RETRY_AFTER_S = 300.0


class XenoCantoError(RuntimeError):
    """The API refused a request or a page could not be fetched (the message never contains the key)."""


# ----------------------------------------------------------------------------- query


def _tag(name: str, value: str) -> str:
    """One search tag, quoting values with spaces ('sp:"Turdus merula"')."""
    value = value.strip()
    if not value:
        raise ValueError(f"empty value for the {name!r} tag")
    if " " in value and not (value.startswith('"') and value.endswith('"')):
        value = f'"{value}"'
    return f"{name}:{value}"


def build_queries(
    species: Sequence[str] = (),
    country: Optional[str] = None,
    quality: Sequence[str] = (),
    extra: Optional[str] = None,
) -> list[str]:
    """API query strings: one per (species, quality) pair, each with the country and the raw extra tags."""
    common = []
    if country:
        common.append(_tag("cnt", country))
    if extra and extra.strip():
        common.append(extra.strip())
    qualities = [q.strip().upper() for q in quality if q.strip()]
    for q in qualities:
        if not re.fullmatch(r"[A-E]", q):
            raise ValueError(f"quality must be one of A B C D E, got {q!r}")
    queries = []
    for sp in [s for s in species if s.strip()] or [None]:
        for q in qualities or [None]:
            tags = ([_tag("sp", sp)] if sp else []) + common + ([f"q:{q}"] if q else [])
            queries.append(" ".join(tags))
    if not any(queries):
        raise ValueError("the query is empty: give --species, --country, --quality or --query")
    return queries


def resolve_api_key(api_key: Optional[str] = None) -> str:
    """The API key given, else $XENO_CANTO_API_KEY; ValueError with instructions when neither is set."""
    key = (api_key or os.environ.get(API_KEY_ENV, "")).strip()
    if not key:
        raise ValueError(
            f"a Xeno-canto API key is required: pass --api-key KEY or set {API_KEY_ENV} "
            "(register at https://xeno-canto.org, then copy the key from https://xeno-canto.org/account)"
        )
    return key


def page_url(base_url: str, query: str, key: str, page: int, per_page: Optional[int] = None) -> str:
    """The URL of one API page."""
    params: dict[str, Any] = {"query": query, "key": key, "page": page}
    if per_page:
        params["per_page"] = per_page
    return f"{base_url}?{urllib.parse.urlencode(params)}"


# ----------------------------------------------------------------------------- report and state


@dataclass
class DownloadReport:
    """Outcome of `download_recordings`."""

    queries: list[str] = field(default_factory=list)
    pages: int = 0
    records: int = 0
    downloaded: int = 0
    skipped_existing: int = 0
    duplicates: int = 0
    bytes: int = 0
    requests: int = 0
    failed: Counter = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: Optional[Path] = None

    @property
    def num_failed(self) -> int:
        """Records whose file is missing after this run."""
        return sum(self.failed.values())

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [
            f"records: {self.records} on {self.pages} page(s)  downloaded: {self.downloaded} "
            f"({self.bytes / 1e6:.1f} MB)  skipped existing: {self.skipped_existing}  failed: {self.num_failed}"
            f"  ({self.requests} requests, {self.seconds:.1f} s)",
        ]
        if self.failed:
            lines.append("failed by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.failed.items())))
        if self.duplicates:
            lines.append(f"records listed twice (downloaded once): {self.duplicates}")
        if self.out_dir is not None:
            if self.failed:
                lines.append(f"failures: {self.out_dir / FAILURES_FILE} (run again to retry them)")
            lines.append(
                f"next: python -m main.data.prepare --audio-dir {self.out_dir / 'audio'} "
                f"--metadata {self.out_dir / 'metadata'}/page_*.json"
            )
        return "\n".join(lines)


class _State:
    """Append-only log of verified files: (name -> (size, mtime_ns)), so re-runs need not decode them again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    self.entries[str(item["name"])] = (int(item["size"]), int(item["mtime_ns"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.warning("%s:%d: unreadable entry ignored", path, number)

    def is_verified(self, path: Path) -> bool:
        """Whether `path` exists with the size and mtime recorded when it was verified."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        return self.entries.get(path.name) == (stat.st_size, stat.st_mtime_ns)

    def add(self, path: Path, xc_id: str) -> None:
        """Record `path` as verified."""
        stat = path.stat()
        with self._lock:
            self.entries[path.name] = (stat.st_size, stat.st_mtime_ns)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"id": xc_id, "name": path.name, "size": stat.st_size,
                                         "mtime_ns": stat.st_mtime_ns}) + "\n")


# ----------------------------------------------------------------------------- download


def audio_name(record: dict[str, Any]) -> str:
    """Local file name of a record: XC<id>.<ext>, the extension from `file-name` (default mp3)."""
    xc_id = str(record.get("id", "")).strip()
    if not xc_id.isdigit():
        raise ValueError(f"record id {xc_id!r} is not a Xeno-canto number")
    suffix = Path(str(record.get("file-name") or "")).suffix.lower().lstrip(".")
    if not re.fullmatch(r"[a-z0-9]{1,5}", suffix):
        suffix = "mp3"
    return f"XC{xc_id}.{suffix}"


def metadata_pages(out_dir: PathLike) -> list[Path]:
    """The saved API pages under OUT/metadata, in page order (the `metadata` argument of prepare_manifest)."""
    folder = Path(out_dir) / "metadata"
    pages = [p for p in folder.glob("page_*.json") if re.fullmatch(r"page_\d+\.json", p.name)]
    return sorted(pages, key=lambda p: int(p.stem.split("_")[1]))


def _write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))


def _iter_pages(
    client: HttpClient, base_url: str, queries: Sequence[str], key: str, per_page: Optional[int]
) -> Iterator[dict[str, Any]]:
    """Every API page of every query, in order; XenoCantoError when the API answers with an error."""
    for query in queries:
        page, num_pages = 1, 1
        while page <= num_pages:
            url = page_url(base_url, query, key, page, per_page)
            try:
                data = client.get_json(url)
            except TransferError as error:
                raise XenoCantoError(f"query {query!r} page {page}: {error.reason}: {error.detail}") from None
            if not isinstance(data, dict) or "error" in data or not isinstance(data.get("recordings"), list):
                message = data.get("message") or data.get("error") if isinstance(data, dict) else data
                raise XenoCantoError(f"query {query!r} page {page}: the API answered {client.clean(str(message))!r}")
            try:
                num_pages = int(data.get("numPages", 1))
            except (TypeError, ValueError):
                raise XenoCantoError(f"query {query!r}: bad numPages {data.get('numPages')!r}") from None
            yield data
            page += 1


def download_recordings(
    out_dir: PathLike,
    species: Sequence[str] = (),
    country: Optional[str] = None,
    quality: Sequence[str] = (),
    query: Optional[str] = None,
    max_recordings: Optional[int] = None,
    api_key: Optional[str] = None,
    base_url: str = DEFAULT_BASE_URL,
    rate_limit: float = 1.0,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 2.0,
    per_page: Optional[int] = None,
    workers: int = 1,
    verify_audio: bool = True,
) -> DownloadReport:
    """Query the API, save its pages and download every listed file not already present (see module docstring)."""
    start = time.perf_counter()
    key = resolve_api_key(api_key)
    queries = build_queries(species, country, quality, query)
    if max_recordings is not None and max_recordings <= 0:
        raise ValueError(f"max_recordings must be positive, got {max_recordings}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    meta_dir, audio_dir = out / "metadata", out / "audio"
    meta_dir.mkdir(parents=True, exist_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    client = HttpClient(rate_limit, retries, timeout, backoff, redact=[key])
    state = _State(out / STATE_FILE)
    report = DownloadReport(queries=list(queries), out_dir=out)
    lock = threading.Lock()
    seen: set[str] = set()

    def fetch(record: dict[str, Any]) -> None:
        outcome, detail, size = _fetch_record(client, state, audio_dir, record, verify_audio)
        with lock:
            if outcome == "downloaded":
                report.downloaded += 1
                report.bytes += size
            elif outcome == "existing":
                report.skipped_existing += 1
            else:
                report.failed[outcome] += 1
                report.failures.append({"id": str(record.get("id", "")), "url": str(record.get("file", "")),
                                        "reason": outcome, "detail": detail})

    complete = False
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for data in _iter_pages(client, base_url, queries, key, per_page):
                records = list(data["recordings"])
                if max_recordings is not None:
                    records = records[: max(0, max_recordings - report.records)]
                report.pages += 1
                report.records += len(records)
                _write_json(meta_dir / f"page_{report.pages:03d}.json", {**data, "recordings": records})
                todo = []
                for record in records:
                    xc_id = str(record.get("id", ""))
                    if xc_id in seen:
                        report.duplicates += 1
                        continue
                    seen.add(xc_id)
                    todo.append(record)
                list(pool.map(fetch, todo))  # a page at a time: pages and files stay in step
                if max_recordings is not None and report.records >= max_recordings:
                    break
            complete = True
    finally:
        report.requests = client.requests
        report.seconds = time.perf_counter() - start
        _write_failures(out / FAILURES_FILE, report.failures)
    if complete:
        for stale in metadata_pages(out):
            if int(stale.stem.split("_")[1]) > report.pages:
                stale.unlink()
    return report


def _fetch_record(
    client: HttpClient, state: _State, audio_dir: Path, record: dict[str, Any], verify_audio: bool
) -> tuple[str, str, int]:
    """Download one record's file unless present: ('downloaded' | 'existing' | failure reason, detail, bytes)."""
    try:
        name = audio_name(record)
    except ValueError as error:
        return "bad_record", str(error), 0
    dest = audio_dir / name
    if state.is_verified(dest):
        return "existing", "", 0
    if dest.is_file():
        problem = _verify(dest, None, verify_audio)
        if problem is None:
            state.add(dest, str(record["id"]))
            return "existing", "", 0
        log.warning("%s: existing file is bad (%s), downloading it again", dest, problem[1])
        dest.unlink()
    url = str(record.get("file") or "").strip()
    if not url:
        return "no_file_url", "the record has no download URL (restricted species?)", 0
    if url.startswith("//"):
        url = "https:" + url
    part = audio_dir / f".{name}.part"
    try:
        size = client.download(url, part)
    except TransferError as error:
        part.unlink(missing_ok=True)
        return error.reason, error.detail, 0
    problem = _verify(part, size, verify_audio)
    if problem is not None:
        part.unlink(missing_ok=True)
        return problem
    os.replace(part, dest)
    state.add(dest, str(record["id"]))
    return "downloaded", "", size


def _verify(path: Path, size: Optional[int], verify_audio: bool) -> Optional[tuple[str, str, int]]:
    """None when `path` is a good download, else (reason, detail, 0)."""
    actual = path.stat().st_size
    if actual == 0:
        return "empty", "zero bytes", 0
    if size is not None and actual != size:
        return "truncated", f"{actual} bytes on disk, {size} received", 0
    if verify_audio:
        check = check_audio(path, max_seconds=float("inf"))
        if check.reason is not None and check.reason not in _KEEP_REASONS:
            return check.reason, check.detail, 0
    return None


def _write_failures(path: Path, failures: Iterable[dict[str, str]]) -> None:
    """failures.csv: id, url, reason, detail of every failed record of the run."""
    write_csv_atomic(path, failures, ["id", "url", "reason", "detail"])
