"""Xeno-canto download: a real HTTP round trip against a local fake API (127.0.0.1 only)."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile as sf

from main.data import download as download_cli
from main.data.manifest import prepare_manifest, read_manifest
from main.data.synthetic import SPECIES, synthesize_recording
from main.data.sources.http import RateLimiter
from main.data.sources.xenocanto import (
    XenoCantoError,
    audio_name,
    build_queries,
    download_recordings,
    metadata_pages,
)

KEY = "test-key-123"
SR = 16000
FAST = dict(api_key=KEY, rate_limit=0, retries=2, backoff=0.01, timeout=5.0)


def _audio_bytes(index: int, fmt: str) -> bytes:
    """A 0.5 s mono synthetic song encoded as `fmt` (FLAC, WAV or MP3)."""
    audio = synthesize_recording(index, np.random.default_rng(index), 0.5, SR, 1)
    buffer = io.BytesIO()
    sf.write(buffer, audio, SR, format=fmt)
    return buffer.getvalue()


class FakeXenoCanto:
    """A recorded-style API v3 (two pages) and its audio files, with a flaky, a truncated, a corrupt and a 404 URL."""

    def __init__(self) -> None:
        flac = _audio_bytes(0, "FLAC")
        self.files: dict[str, bytes] = {
            "ok-101": flac,
            "ok-102": _audio_bytes(1, "WAV"),
            "flaky-103": _audio_bytes(2, "FLAC"),
            "ok-107": _audio_bytes(3, "MP3"),
            "truncated-105": _audio_bytes(4, "FLAC"),
            "corrupt-106": flac[: len(flac) // 2],  # a valid header, then the stream stops
        }
        self.hits: dict[str, int] = {}
        self.log: list[tuple[float, str, dict[str, list[str]]]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        """The fake API endpoint."""
        return f"http://127.0.0.1:{self.port}/api/3/recordings"

    def record(self, xc_id: int, species: int, path: str, ext: str) -> dict[str, Any]:
        """One API v3 record."""
        genus, epithet = SPECIES[species].sci_name.split(" ")
        url = f"http://127.0.0.1:{self.port}/audio/{path}" if path else ""
        return {
            "id": str(xc_id), "gen": genus, "sp": epithet, "ssp": "", "grp": "birds", "en": SPECIES[species].en_name,
            "rec": "Test Recordist", "cnt": "Portugal", "loc": "Lisboa", "lat": "38.7", "lon": "-9.1", "alt": "50",
            "type": "song", "sex": "male", "stage": "adult", "method": "field recording",
            "url": f"//xeno-canto.org/{xc_id}", "file": url,
            "file-name": f"XC{xc_id}-{genus}-{epithet}.{ext}", "sono": {}, "osci": {},
            "lic": "//creativecommons.org/licenses/by-nc-sa/4.0/", "q": "A", "length": "0:01",
            "time": "07:30", "date": "2024-05-01", "uploaded": "2024-05-02",
            "also": ["Gravis profundus"] if xc_id == 101 else [], "rmk": "", "animal-seen": "yes",
            "playback-used": "no", "temp": "", "regnr": "", "auto": "no", "dvc": "", "mic": "", "smp": str(SR),
        }

    def page(self, number: int) -> dict[str, Any]:
        """API page 1 or 2."""
        if number == 1:
            records = [self.record(101, 0, "ok-101", "flac"), self.record(102, 1, "ok-102", "wav"),
                       self.record(103, 2, "flaky-103", "flac"), self.record(104, 3, "missing-104", "mp3")]
        else:
            records = [self.record(105, 4, "truncated-105", "flac"), self.record(106, 5, "corrupt-106", "flac"),
                       self.record(107, 6, "ok-107", "mp3"), self.record(108, 7, "", "mp3")]
        return {"numRecordings": "8", "numSpecies": "8", "page": number, "numPages": 2, "recordings": records}

    def hit(self, name: str) -> int:
        """Count a request to `name`; returns the count so far."""
        with self.lock:
            self.hits[name] = self.hits.get(name, 0) + 1
            return self.hits[name]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                return

            def send(self, status: int, body: bytes, content_type: str, length: int | None = None,
                     headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)
                with fake.lock:
                    fake.log.append((time.monotonic(), parts.path, query))
                if parts.path == "/api/3/recordings":
                    if query.get("key") != [KEY]:
                        body = json.dumps({"error": "invalid_key", "message": "No valid API key"}).encode()
                        return self.send(401, body, "application/json")
                    number = int(query["page"][0])
                    if number == 2 and fake.hit("page-2") == 1:
                        return self.send(429, b"slow down", "text/plain", headers={"Retry-After": "0"})
                    return self.send(200, json.dumps(fake.page(number)).encode(), "application/json")
                name = parts.path.rsplit("/", 1)[-1]
                count = fake.hit(name)
                if name.startswith("flaky") and count == 1:
                    return self.send(500, b"oops", "text/plain")
                if name.startswith("truncated"):
                    body = fake.files[name]
                    return self.send(200, body[: len(body) // 3], "audio/flac", length=len(body))
                if name in fake.files:
                    return self.send(200, fake.files[name], "application/octet-stream")
                return self.send(404, b"not found", "text/plain")

        return Handler


@pytest.fixture()
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeXenoCanto]:
    """A running fake API; proxies are disabled so nothing leaves 127.0.0.1."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    fake = FakeXenoCanto()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_build_queries_and_file_names() -> None:
    queries = build_queries(["Turdus merula", "Erithacus rubecula"], "Portugal", ["a", "B"], "grp:birds")
    assert queries[0] == 'sp:"Turdus merula" cnt:Portugal grp:birds q:A'
    assert len(queries) == 4 and queries[-1] == 'sp:"Erithacus rubecula" cnt:Portugal grp:birds q:B'
    assert build_queries(country="United Kingdom") == ['cnt:"United Kingdom"']
    with pytest.raises(ValueError, match="quality"):
        build_queries(["Turdus merula"], quality=["Z"])
    with pytest.raises(ValueError, match="empty"):
        build_queries()
    assert audio_name({"id": "12", "file-name": "XC12-Turdus merula.MP3"}) == "XC12.mp3"
    assert audio_name({"id": "12", "file-name": ""}) == "XC12.mp3"
    with pytest.raises(ValueError):
        audio_name({"id": "../x"})


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("XENO_CANTO_API_KEY", raising=False)
    with pytest.raises(ValueError, match="XENO_CANTO_API_KEY"):
        download_recordings(tmp_path, species=["Turdus merula"], base_url="http://127.0.0.1:9/none")
    assert download_cli.main(["--out", str(tmp_path), "--species", "Turdus merula",
                              "--base-url", "http://127.0.0.1:9/none"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_round_trip_resume_failures_and_manifest(fake_api: FakeXenoCanto, tmp_path: Path) -> None:
    out = tmp_path / "xc"
    rate = 40.0
    report = download_recordings(out, species=["Turdus merula"], quality=["A"], query="grp:birds",
                                 base_url=fake_api.base_url, **{**FAST, "rate_limit": rate})

    # pages saved as the API returned them, audio verified and named XC<id>.<ext>
    pages = metadata_pages(out)
    assert [p.name for p in pages] == ["page_001.json", "page_002.json"]
    assert json.loads(pages[1].read_text()) == fake_api.page(2)
    files = sorted(p.name for p in (out / "audio").iterdir())
    assert files == ["XC101.flac", "XC102.wav", "XC103.flac", "XC107.mp3"]
    for name, source in [("XC101.flac", "ok-101"), ("XC103.flac", "flaky-103"), ("XC107.mp3", "ok-107")]:
        assert (out / "audio" / name).read_bytes() == fake_api.files[source]
    assert report.downloaded == 4 and report.skipped_existing == 0 and report.records == 8
    assert dict(report.failed) == {"http_404": 1, "truncated": 1, "corrupt": 1, "no_file_url": 1}
    assert fake_api.hits["flaky-103"] == 2  # 500, then retried
    assert fake_api.hits["truncated-105"] == 3  # 1 + 2 retries
    assert fake_api.hits["missing-104"] == 1  # a 404 is not retried
    assert fake_api.hits["page-2"] == 2  # 429 with Retry-After, then retried
    failures = (out / "failures.csv").read_text()
    assert "105,http://127.0.0.1" in failures and "truncated" in failures

    # every API request carries the key and the query; nothing else was contacted
    api = [q for _, path, q in fake_api.log if path == "/api/3/recordings"]
    assert len(api) == 3 and all(q["key"] == [KEY] for q in api)
    assert api[0]["query"] == ['sp:"Turdus merula" grp:birds q:A']
    assert [q["page"] for q in api] == [["1"], ["2"], ["2"]]

    # rate limit: N requests span at least (N - 1) / rate seconds
    times = [t for t, _, _ in fake_api.log]
    assert report.requests == len(times) == 13
    assert report.seconds >= (len(times) - 1) / rate
    assert times[-1] - times[0] >= (len(times) - 1) / rate - 0.05  # server clock: allow connection jitter

    # resume: nothing downloaded again, failures retried
    fake_api.log.clear()
    again = download_recordings(out, species=["Turdus merula"], quality=["A"], query="grp:birds",
                                base_url=fake_api.base_url, **FAST)
    assert again.downloaded == 0 and again.skipped_existing == 4
    assert dict(again.failed) == dict(report.failed)
    fetched = {path.rsplit("/", 1)[-1] for _, path, _ in fake_api.log if path.startswith("/audio/")}
    assert fetched == {"missing-104", "truncated-105", "corrupt-106"}

    # a deleted file is fetched again; a .part leftover is ignored and replaced
    (out / "audio" / "XC101.flac").unlink()
    (out / "audio" / ".XC101.flac.part").write_bytes(b"half a file")
    third = download_recordings(out, species=["Turdus merula"], quality=["A"], query="grp:birds",
                                base_url=fake_api.base_url, **FAST)
    assert third.downloaded == 1 and third.skipped_existing == 3
    assert (out / "audio" / "XC101.flac").read_bytes() == fake_api.files["ok-101"]
    assert not (out / "audio" / ".XC101.flac.part").exists()

    # a file replaced behind our back is verified again (corrupt -> fetched again)
    (out / "audio" / "XC102.wav").write_bytes(b"RIFF garbage")
    fourth = download_recordings(out, species=["Turdus merula"], quality=["A"], query="grp:birds",
                                 base_url=fake_api.base_url, **FAST)
    assert fourth.downloaded == 1 and (out / "audio" / "XC102.wav").read_bytes() == fake_api.files["ok-102"]

    # the saved pages and files make a manifest
    result = prepare_manifest(out / "audio", metadata=metadata_pages(out), output=out / "manifest.csv")
    rows = read_manifest(out / "manifest.csv")
    assert sorted(r["id"] for r in rows) == ["101", "102", "103", "107"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["101"]["sci_name"] == SPECIES[0].sci_name and by_id["101"]["country"] == "Portugal"
    assert by_id["101"]["also"] == "Gravis profundus" and by_id["107"]["format"]
    assert result.missing_file == 4 and result.no_metadata == 0


def test_max_recordings_cuts_the_listing(fake_api: FakeXenoCanto, tmp_path: Path) -> None:
    out = tmp_path / "xc"
    (out / "metadata").mkdir(parents=True)
    (out / "metadata" / "page_003.json").write_text("{}")  # stale page from a longer earlier listing
    report = download_recordings(out, country="Portugal", max_recordings=5, base_url=fake_api.base_url, **FAST)
    assert report.records == 5 and report.pages == 2
    second = json.loads((out / "metadata" / "page_002.json").read_text())
    assert [r["id"] for r in second["recordings"]] == ["105"]
    assert [p.name for p in metadata_pages(out)] == ["page_001.json", "page_002.json"]
    assert "corrupt-106" not in fake_api.hits


def test_api_error_and_cli(fake_api: FakeXenoCanto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(XenoCantoError, match="No valid API key") as error:
        download_recordings(tmp_path / "bad", country="Portugal", base_url=fake_api.base_url,
                            **{**FAST, "api_key": "wrong-key"})
    assert "wrong-key" not in str(error.value)
    status = download_cli.main(["--out", str(tmp_path / "cli"), "--country", "Portugal", "--api-key", KEY,
                                "--base-url", fake_api.base_url, "--rate-limit", "0", "--retries", "1",
                                "--backoff", "0.01", "--max-recordings", "2"])
    assert status == 0
    assert "downloaded: 2" in capsys.readouterr().out


def test_rate_limiter_spaces_requests_across_threads() -> None:
    limiter = RateLimiter(100.0)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            limiter.wait()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 8 / 100.0 - 0.002
