"""Generated clips (text -> audio with exported models) and DiffAE reconstructions of real clips, for evaluation.

Both write WAVs plus `clips.csv` (file, label, sci_name, seed, source) and a JSON of their settings into one
folder, and are resumable: clips already there are skipped. Every clip draws its noise from its own generator
seeded with `seed + clip index`, so a clip's audio does not depend on the batch it ran in, and a resumed run
gives the same audio as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from main.analysis.clips import load_audio, write_clips_csv
from main.audio import slug
from main.files import PathLike, atomic_path
from main.provenance import model_identity
from main.renames import renamed_keywords

GENERATION_FILE = "generation.json"
RECONSTRUCTION_FILE = "reconstruction.json"
# Settings that do not change the audio: a resumed run may use other values.
VOLATILE_SETTINGS = ("batch_size", "device")


@dataclass
class RunReport:
    """What a generate/reconstruct run did."""

    folder: Path
    written: int
    skipped: int
    total: int


def load_sampler(diffae: PathLike, diffgen: PathLike, text_encoder: Optional[str] = None,
                 device: Optional[str] = None) -> tuple[Any, dict[str, Any]]:
    """A CombinedSampler from exported (or checkpointed) model files, and a description of those files."""
    from main.inference.device import resolve_device
    from main.inference.pipeline import get_default_combined_sampler

    info = {"diffae": model_identity(diffae), "diffgen": model_identity(diffgen)}
    model = get_default_combined_sampler(diffae, diffgen, text_encoder, resolve_device(device))
    info["text_encoder"] = model.text_encoder.name_or_path
    info["text_encoder_max_length"] = model.text_encoder.max_length
    info["sample_rate"] = model.sample_rate
    return model, info


@torch.no_grad()
def decode_latents_seeded(diffae: Any, latent: Tensor, generators: Sequence[torch.Generator], num_steps: int,
                          sampler: str = "ddim") -> Tensor:
    """`decode_latent` with each clip's decoding noise drawn from its own generator."""
    from main.inference.decoding import decode_latent

    return decode_latent(diffae, latent, num_steps, sampler, generators=generators)


def _write_wav(path: Path, audio: Tensor, sample_rate: int) -> None:
    """Write a WAV atomically (a killed run leaves no truncated clip behind)."""
    from main.audio import save_audio

    with atomic_path(path, suffix=".wav") as tmp:
        save_audio(tmp, audio, sample_rate)


def decoding_settings() -> dict[str, Any]:
    """How audio is decoded and levelled (recorded with every folder: a folder decoded otherwise does not resume)."""
    from main.inference.decoding import DECODING_SIGMA_POWER, OUTPUT_PEAK

    return {"decoding_sigma_power": DECODING_SIGMA_POWER, "output_peak": OUTPUT_PEAK}


def _is_complete(path: Path) -> bool:
    """Whether a clip file exists and its header reads."""
    if not path.is_file():
        return False
    import soundfile as sf

    try:
        return sf.info(str(path)).frames > 0
    except (sf.LibsndfileError, RuntimeError):
        return False


def _check_settings(folder: Path, name: str, settings: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse to resume into a folder whose clips were made with other settings."""
    path = folder / name
    if not path.is_file() or overwrite:
        return
    old = json.loads(path.read_text())
    keys = (set(old) | set(settings)) - set(VOLATILE_SETTINGS)
    differing = sorted(k for k in keys if old.get(k) != settings.get(k))
    if differing:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in differing[:6])
        raise ValueError(f"{folder} holds clips made with other settings ({details}); use another folder, or "
                         "overwrite=True / --overwrite to replace them")


def _plan_rows(rows: Sequence[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """clips.csv rows: one clip per selected manifest row, seeded `seed + index`."""
    return [{"file": f"{i:05d}_{slug(str(r['sci_name']), limit=40)}.wav", "label": str(r["label"]),
             "sci_name": str(r["sci_name"]), "seed": seed + i, "source": str(r.get("file", ""))}
            for i, r in enumerate(rows)]


def _plan_digest(plan: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the clip plan (prompts, species, seeds, sources): a changed selection is not resumed into."""
    return hashlib.sha256(json.dumps(list(plan), sort_keys=True).encode()).hexdigest()


def _start_run(folder: Path, name: str, settings: dict[str, Any], rows: Sequence[Mapping[str, Any]], seed: int,
               overwrite: bool) -> list[dict[str, Any]]:
    """The clip plan of a generate/reconstruct run into `folder`: its digest joins `settings`, which must be those
    of the clips already there (unless `overwrite`); writes the settings (`name`) and clips.csv."""
    plan = _plan_rows(rows, seed)
    settings["plan_sha256"] = _plan_digest(plan)
    _check_settings(folder, name, settings, overwrite)
    (folder / name).write_text(json.dumps(settings, indent=2) + "\n")
    write_clips_csv(folder, plan)
    return plan


def _manifest_selection(manifest: PathLike, split: str, num: Optional[int], per_species: Optional[int],
                        seed: int) -> list[dict[str, Any]]:
    """The rows of a manifest split that a run takes (`select_rows`: deterministic); an empty split is an error."""
    from main.analysis.clips import select_rows
    from main.data.manifest import read_manifest

    rows = read_manifest(manifest, split)
    if not rows:
        raise ValueError(f"manifest {manifest} has no rows in split {split!r}")
    return select_rows(rows, num, per_species, seed)


@renamed_keywords(steps="sampling_steps", cfg_scale="embedding_scale")
def generate_clips(
    out_dir: PathLike,
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    sampling_steps: int = 100,
    decoding_steps: Optional[int] = None,
    sampler: str = "ddim",
    embedding_scale: float = 5.0,
    seconds: float = 5.0,
    seed: int = 0,
    batch_size: int = 4,
    decoding_sampler: Optional[str] = None,
    settings: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    show_progress: bool = True,
    batched: Optional[bool] = None,
) -> RunReport:
    """Generate one clip per row (prompted with its `label`) into `out_dir` with a CombinedSampler; resumable.

    `sampler` runs DiffGen, `decoding_sampler` (default: `sampler`) the DiffAE decoding; `generation.json` keeps
    its keys `steps` and `cfg_scale` for `sampling_steps` and `embedding_scale` (folders written before resume).
    `settings` (e.g. the model files from `load_sampler` and how the rows were chosen) is saved in
    `generation.json` together with the sampling settings. Clip i is seeded on its own (`seed + i`); `batched`
    (default: on CUDA) runs each group of `batch_size` clips through the models together, which matches the
    one-at-a-time audio to float rounding; unbatched, every clip is bit-identical at any `batch_size`.
    """
    from main.inference.device import batches_models
    from main.inference.generate import clip_generators, generate_audio

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    latent_length = model.latent_frames(seconds)
    samples = round(seconds * model.sample_rate)
    full = {**dict(settings or {}), "kind": "generate", "steps": sampling_steps,
            "decoding_steps": decoding_steps or sampling_steps, "sampler": sampler,
            "cfg_scale": float(embedding_scale), "seed": seed, "seconds": float(seconds),
            "latent_length": latent_length, "sample_rate": model.sample_rate, "num_clips": len(rows),
            "batch_size": batch_size, "device": str(model.device), **decoding_settings()}
    together = batches_models(model.device, batched)
    full["batched"] = together
    if decoding_sampler not in (None, sampler):  # recorded only when it differs (older folders stay resumable)
        full["decoding_sampler"] = decoding_sampler
    plan = _start_run(folder, GENERATION_FILE, full, rows, seed, overwrite)
    todo = [i for i, row in enumerate(plan)
            if overwrite or not (_is_complete(folder / row["file"]) and latent_path(folder, row["file"]).is_file())]
    with tqdm(total=len(todo), desc=f"generating ({folder.name})", unit="clip", disable=not show_progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = [plan[i] for i in todo[start:start + batch_size]]
            generators = clip_generators([r["seed"] for r in batch], model.device)
            audio, latent = generate_audio(model, [r["label"] for r in batch], generators, sampling_steps,
                                           decoding_steps or sampling_steps, embedding_scale, latent_length, sampler,
                                           decoding_sampler, batch_size=len(batch) if together else 1)
            for row, clip, clip_latent in zip(batch, audio[..., :samples], latent):
                _write_latent(latent_path(folder, row["file"]), clip_latent)
                _write_wav(folder / row["file"], clip, model.sample_rate)
            bar.update(len(batch))
    return RunReport(folder, len(todo), len(plan) - len(todo), len(plan))


LATENTS_DIR = "latents"
LATENT_SPECIES_FILE = "latent_species.json"


def latent_path(folder: PathLike, clip_file: str) -> Path:
    """Where the DiffGen latent of a generated clip is kept (`latents/<clip>.npy`, [channels, frames])."""
    return Path(folder) / LATENTS_DIR / f"{Path(clip_file).stem}.npy"


def _write_latent(path: Path, latent: Tensor) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, latent.detach().float().cpu().numpy())


@torch.no_grad()
def encode_recordings(diffae: Any, paths: Sequence[PathLike], sample_rate: int, seconds: Optional[float],
                      device: str = "cpu") -> list[Tensor]:
    """DiffAE latents [channels, frames] of the first `seconds` of each recording (zero-padded to a length the
    DiffAE takes, then cut to the frames the audio covers)."""
    multiple = diffae_length_multiple(diffae)
    out = []
    for path in paths:
        clip = torch.from_numpy(load_clip(path, sample_rate, seconds, diffae.in_channels))
        length = math.ceil(clip.shape[1] / multiple) * multiple
        padded = torch.nn.functional.pad(clip, (0, length - clip.shape[1]))[None].to(device)
        frames = max(1, clip.shape[1] // int(diffae.latent_factor))
        out.append(diffae.encode(padded)[0, :, :frames].cpu())
    return out


def score_latents(folder: PathLike, diffae: Any, manifest: PathLike, reference_split: str = "train",
                  reference_per_species: Optional[int] = 20, device: str = "cpu",
                  method: str = "ridge") -> dict[str, Any]:
    """Text adherence in latent space of a generated folder: a `LatentSpeciesClassifier` fitted on the DiffAE
    latents of real `reference_split` recordings scores the stored DiffGen latents against the prompted species;
    the real recordings the prompts came from are scored too (the ceiling). Writes `latent_species.json`.
    (Rhythm is measured on the audio: `main.analysis.fidelity`.)"""
    from main.analysis.clips import read_clip_rows, select_rows
    from main.analysis.evaluate import write_json
    from main.analysis.latent_species import LatentSpeciesClassifier
    from main.data.manifest import read_manifest

    folder = Path(folder)
    settings = json.loads((folder / GENERATION_FILE).read_text())
    sample_rate, seconds = int(settings["sample_rate"]), float(settings["seconds"])
    diffae = diffae.eval().to(device)
    reference_rows = select_rows(read_manifest(manifest, reference_split), None, reference_per_species, 0)
    reference = encode_recordings(diffae, [r["path"] for r in reference_rows], sample_rate, seconds, device)
    reference_species = [str(r["sci_name"]) for r in reference_rows]
    frames = min(x.shape[-1] for x in reference)
    classifier = LatentSpeciesClassifier.fit(torch.stack([x[..., :frames] for x in reference]), reference_species,
                                             method)
    rows = read_clip_rows(folder)
    generated = torch.stack([torch.from_numpy(np.load(latent_path(folder, r["file"])))[..., :frames] for r in rows])
    result = {"generated": classifier.evaluate(generated, [r["sci_name"] for r in rows]),
              "reference_split": reference_split, "n_reference": len(reference_rows), "frames": frames,
              "pool_frames": classifier.pool_frames,
              "cfg_scale": settings.get("cfg_scale")}
    by_file = {str(r["file"]): r for r in read_manifest(manifest)}
    sources = list(dict.fromkeys(r["source"] for r in rows))
    if sources and all(s in by_file for s in sources):
        real = encode_recordings(diffae, [by_file[s]["path"] for s in sources], sample_rate, seconds, device)
        real_frames = min([frames, *(x.shape[-1] for x in real)])
        real_species = [str(by_file[s]["sci_name"]) for s in sources]
        result["real"] = classifier.evaluate(torch.stack([x[..., :real_frames] for x in real]), real_species)
    write_json(folder / LATENT_SPECIES_FILE, result)
    return result


@renamed_keywords(steps="sampling_steps", cfg_scale="embedding_scale")
def generate_from_manifest(
    out_dir: PathLike, diffae: PathLike, diffgen: PathLike, manifest: PathLike, split: str = "test",
    num: Optional[int] = None, per_species: Optional[int] = None, text_encoder: Optional[str] = None,
    device: Optional[str] = None, latent_probe: bool = True, **kwargs: Any,
) -> RunReport:
    """Load the models and generate clips from the labels of a manifest split (see `generate_clips`); with
    `latent_probe`, also score the generated latents against the prompted species (`score_latents`)."""
    chosen = _manifest_selection(manifest, split, num, per_species, int(kwargs.get("seed", 0)))
    model, info = load_sampler(diffae, diffgen, text_encoder, device)
    settings = {"models": info, "manifest": str(Path(manifest).resolve()), "split": split, "num": num,
                "per_species": per_species}
    report = generate_clips(out_dir, model, chosen, settings=settings, **kwargs)
    if latent_probe:
        score_latents(out_dir, model.diffae, manifest, device=str(model.device))
    return report


def load_clip(path: PathLike, sample_rate: int, seconds: Optional[float], channels: int) -> np.ndarray:
    """The first `seconds` (None: all) of a recording at `sample_rate` as [channels, samples]."""
    from main.data.cropping import to_channels

    audio, _ = load_audio(path, sample_rate, mono=False)
    if seconds is not None:
        audio = audio[: round(seconds * sample_rate)]
    return to_channels(torch.from_numpy(audio.T), channels).contiguous().numpy()


def diffae_length_multiple(diffae: Any) -> int:
    """The audio length a DiffAE can encode and decode must be a multiple of this."""
    from main.nets.lengths import diffae_audio_multiple

    return diffae_audio_multiple(getattr(diffae, "config", {}))


@renamed_keywords(steps="decoding_steps")
def reconstruct_clips(
    out_dir: PathLike,
    diffae_file: PathLike,
    rows: Sequence[Mapping[str, Any]],
    decoding_steps: int = 100,
    sampler: str = "ddim",
    seconds: Optional[float] = 10.0,
    seed: int = 0,
    batch_size: int = 4,
    device: Optional[str] = None,
    settings: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> RunReport:
    """Encode and decode real recordings (manifest rows with `path`) with an exported DiffAE; resumable.

    Each recording is cut to its first `seconds` (None: whole), zero-padded to a length the DiffAE takes, and
    the reconstruction trimmed back. The decoding noise of clip i comes from a generator seeded `seed + i`.
    `reconstruction.json` keeps its key `steps` for `decoding_steps`.
    """
    from main.inference.generate import clip_generators
    from main.inference.device import resolve_device
    from main.nets.weights import load_model

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    diffae, config = load_model(diffae_file, "diffae")
    sample_rate = int(config.get("sample_rate", 32000))
    device_name = resolve_device(device)
    diffae = diffae.eval().requires_grad_(False).to(device_name)
    full = {**dict(settings or {}), "kind": "reconstruct", "diffae": model_identity(diffae_file),
            "steps": decoding_steps, "sampler": sampler, "seconds": seconds, "seed": seed, "sample_rate": sample_rate,
            "num_clips": len(rows), "batch_size": batch_size, "device": device_name, **decoding_settings()}
    plan = _start_run(folder, RECONSTRUCTION_FILE, full, rows, seed, overwrite)
    multiple = diffae_length_multiple(diffae)
    todo = [i for i, row in enumerate(plan) if overwrite or not _is_complete(folder / row["file"])]
    with tqdm(total=len(todo), desc=f"reconstructing ({folder.name})", unit="clip",
              disable=not show_progress) as bar:
        for start in range(0, len(todo), batch_size):
            indices = todo[start:start + batch_size]
            clips = []
            for i in indices:
                clips.append(load_clip(rows[i]["path"], sample_rate, seconds, diffae.in_channels))
            # Clips run together only with clips of the same padded length: no clip's audio depends on its batch.
            groups: dict[int, list[int]] = {}
            for j, clip in enumerate(clips):
                groups.setdefault(math.ceil(clip.shape[1] / multiple) * multiple, []).append(j)
            for length, members in groups.items():
                batch = torch.zeros(len(members), diffae.in_channels, length)
                for b, j in enumerate(members):
                    batch[b, :, : clips[j].shape[1]] = torch.from_numpy(clips[j])
                with torch.no_grad():
                    latent = diffae.encode(batch.to(device_name))
                    out = decode_latents_seeded(diffae, latent, clip_generators(
                        [plan[indices[j]]["seed"] for j in members], latent.device), decoding_steps, sampler)
                for b, j in enumerate(members):
                    _write_wav(folder / plan[indices[j]]["file"], out[b, :, : clips[j].shape[1]], sample_rate)
            bar.update(len(indices))
    return RunReport(folder, len(todo), len(plan) - len(todo), len(plan))


@renamed_keywords(steps="decoding_steps")
def reconstruct_from_manifest(
    out_dir: PathLike, diffae: PathLike, manifest: PathLike, split: str = "test", num: Optional[int] = None,
    per_species: Optional[int] = None, **kwargs: Any,
) -> RunReport:
    """Reconstruct (a deterministic selection of) the recordings of a manifest split (see `reconstruct_clips`)."""
    chosen = _manifest_selection(manifest, split, num, per_species, int(kwargs.get("seed", 0)))
    settings = {"manifest": str(Path(manifest).resolve()), "split": split, "num": num, "per_species": per_species}
    return reconstruct_clips(out_dir, diffae, chosen, settings=settings, **kwargs)
