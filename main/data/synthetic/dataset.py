"""The synthetic data set: the default data set when no manifest is configured (songs from `.songs`).

`generate_synthetic_dataset` writes the clips, a Xeno-canto style ``metadata.json`` page and a manifest
(through `main.data.manifest.prepare_manifest`, the same path as real data). Output is deterministic
given the parameters: WAV and FLAC files are byte-identical across runs (Ogg streams carry a random
serial number in libsndfile, so Ogg files are identical in samples only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import soundfile as sf

from main.files import PathLike, write_text_atomic

from ..manifest import prepare_manifest
from .songs import Species, species_subset, synthesize_recording

GENERATOR_VERSION = 1
PARAMS_FILE = "synthetic.params.json"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.csv"
BACKGROUND_PROBABILITY = 0.2
_FORMATS: dict[str, tuple[str, Optional[str]]] = {
    "flac": ("FLAC", "PCM_16"),
    "wav": ("WAV", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def _record_metadata(
    rec_id: int, species: Species, rng: np.random.Generator, duration_s: float, background: Optional[Species],
    file_name: str,
) -> dict[str, Any]:
    """A Xeno-canto API style record for one synthetic recording."""
    genus, epithet = species.sci_name.split(" ", 1)
    country = species.countries[int(rng.integers(len(species.countries)))]
    n_types = 1 if len(species.types) == 1 else int(rng.integers(1, len(species.types) + 1))
    types = sorted(rng.choice(len(species.types), size=n_types, replace=False).tolist())
    day = dt.date(2010, 1, 1) + dt.timedelta(days=int(rng.integers(0, 14 * 365)))
    hour = int(np.clip(rng.normal(8.0, 4.5), 0, 23))
    seconds = int(round(duration_s))
    return {
        "id": str(rec_id),
        "gen": genus,
        "sp": epithet,
        "ssp": "",
        "group": "birds",
        "en": species.en_name,
        "rec": "Synthetic Recordist",
        "cnt": country,
        "loc": f"Synthetic Reserve, {country}",
        "lat": f"{rng.uniform(-50, 60):.4f}",
        "lng": f"{rng.uniform(-120, 150):.4f}",
        "alt": str(int(rng.integers(0, 1500))),
        "type": ", ".join(species.types[i] for i in types),
        "sex": "",
        "stage": "",
        "method": "synthetic",
        "url": "",
        "file": "",
        "file-name": file_name,
        "lic": "//creativecommons.org/publicdomain/zero/1.0/",
        "q": "ABCDE"[int(rng.choice(5, p=[0.3, 0.35, 0.2, 0.1, 0.05]))],
        "length": f"{seconds // 60}:{seconds % 60:02d}",
        "time": f"{hour:02d}:{int(rng.integers(0, 60)):02d}",
        "date": day.isoformat(),
        "uploaded": day.isoformat(),
        "also": [background.sci_name] if background else [],
        "rmk": "procedurally generated",
    }


# ----------------------------------------------------------------------------- data set


def params_hash(params: dict[str, Any]) -> str:
    """A short hash of the generation parameters."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _cached_manifest(out_dir: Path, params: dict[str, Any]) -> Optional[Path]:
    """The manifest path when `out_dir` holds a complete set made with `params`, else None."""
    params_path = out_dir / PARAMS_FILE
    if not params_path.is_file():
        return None
    try:
        stored = json.loads(params_path.read_text())
    except (json.JSONDecodeError, OSError):
        return None
    if stored.get("hash") != params_hash(params) or stored.get("params") != params:
        return None
    manifest = out_dir / stored.get("manifest", MANIFEST_FILE)
    files = [out_dir / name for name in stored.get("files", [])]
    if not manifest.is_file() or not (out_dir / METADATA_FILE).is_file() or not all(f.is_file() for f in files):
        return None
    return manifest


def _remove_previous(out_dir: Path) -> None:
    """Delete the files a previous (different or incomplete) generation listed, and its params file."""
    params_path = out_dir / PARAMS_FILE
    if not params_path.is_file():
        return
    try:
        stored = json.loads(params_path.read_text())
    except (json.JSONDecodeError, OSError):
        stored = {}
    for name in stored.get("files", []):
        path = out_dir / name
        if path.is_file() and path.resolve().parent == out_dir.resolve():
            path.unlink()
    params_path.unlink()


def generate_synthetic_dataset(
    out_dir: PathLike,
    clips_per_species: int = 24,
    duration_s: float = 3.0,
    sample_rate: int = 32000,
    channels: int = 2,
    seed: int = 0,
    audio_format: str = "flac",
    num_species: Optional[int] = None,
    background_probability: float = BACKGROUND_PROBABILITY,
    split_fractions: Optional[Sequence[float]] = None,
) -> Path:
    """Write synthetic recordings, Xeno-canto metadata and a manifest into `out_dir`; return the manifest path.

    `split_fractions` (train, valid, test) defaults to the manifest's 0.85 / 0.10 / 0.05 (the demo keeps more test
    recordings per species for its evaluation)."""
    audio_format = audio_format.lower()
    if audio_format not in _FORMATS:
        raise ValueError(f"audio_format must be one of {sorted(_FORMATS)}, got {audio_format!r}")
    container, subtype = _FORMATS[audio_format]
    if container not in sf.available_formats():
        raise ValueError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {audio_format}")
    if clips_per_species < 1:
        raise ValueError(f"clips_per_species must be >= 1, got {clips_per_species}")
    if not 0.0 <= background_probability <= 1.0:
        raise ValueError(f"background_probability must be in [0, 1], got {background_probability}")
    species = species_subset(num_species)
    params: dict[str, Any] = {
        "version": GENERATOR_VERSION,
        "clips_per_species": int(clips_per_species),
        "duration_s": float(duration_s),
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "seed": int(seed),
        "audio_format": audio_format,
        "species": [s.sci_name for s in species],
        "background_probability": float(background_probability),
    }
    if split_fractions is not None:  # only when set: the default keeps the data sets (and hashes) made before
        params["split_fractions"] = [float(f) for f in split_fractions]
    out = Path(out_dir).expanduser()
    cached = _cached_manifest(out, params)
    if cached is not None:
        return cached
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)

    records: list[dict[str, Any]] = []
    files: list[str] = []
    for s_index, sp in enumerate(species):
        for clip in range(clips_per_species):
            rng = np.random.default_rng([int(seed), s_index, clip, GENERATOR_VERSION])
            background = None
            if len(species) > 1 and rng.uniform() < background_probability:
                background = (s_index + 1 + int(rng.integers(len(species) - 1))) % len(species)
            audio = synthesize_recording(s_index, rng, duration_s, sample_rate, channels, background)
            rec_id = 900001 + s_index * clips_per_species + clip
            name = f"XC{rec_id}-{sp.sci_name.replace(' ', '-')}.{audio_format}"
            sf.write(out / name, audio, sample_rate, format=container, subtype=subtype)
            background_species = species[background] if background is not None else None
            records.append(_record_metadata(rec_id, sp, rng, duration_s, background_species, name))
            files.append(name)
    page = {"numRecordings": str(len(records)), "numSpecies": str(len(species)), "page": 1, "numPages": 1,
            "recordings": records}
    (out / METADATA_FILE).write_text(json.dumps(page, indent=1))
    split_kwargs = {"fractions": tuple(split_fractions)} if split_fractions is not None else {}
    report = prepare_manifest(out, metadata=[out / METADATA_FILE], output=out / MANIFEST_FILE, seed=seed,
                              **split_kwargs)
    if report.ok != len(records):
        raise RuntimeError(f"synthetic data failed validation:\n{report.summary()}")
    stored = {"hash": params_hash(params), "params": params, "manifest": MANIFEST_FILE, "files": files}
    write_text_atomic(out / PARAMS_FILE, json.dumps(stored, indent=1))
    assert report.manifest_path is not None
    return report.manifest_path


def default_cache_dir() -> Path:
    """Where synthetic data goes by default: $BIRD_DIFFUSION_CACHE/synthetic or ~/.cache/bird-diffusion/synthetic."""
    root = os.environ.get("BIRD_DIFFUSION_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "bird-diffusion") / "synthetic"


def dataset_params(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments of `generate_synthetic_dataset` with defaults filled in (for logging)."""
    defaults = {"clips_per_species": 24, "duration_s": 3.0, "sample_rate": 32000, "channels": 2, "seed": 0,
                "audio_format": "flac", "num_species": None, "background_probability": BACKGROUND_PROBABILITY,
                "split_fractions": None}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise ValueError(f"unknown synthetic data option(s): {sorted(unknown)}; choose from {sorted(defaults)}")
    params = {**defaults, **kwargs}
    if params["split_fractions"] is not None:  # plain floats (a Hydra list would not hash or serialise)
        params["split_fractions"] = [float(f) for f in params["split_fractions"]]
    return params

