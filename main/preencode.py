"""Pre-encode a prepared data set for DiffGen: DiffAE latents of whole recordings and text embeddings per label.

    python -m main.preencode --manifest data/xc/manifest.csv --diffae exports/diffae.safetensors \\
        --text-encoder t5-base --max-length 128 --out data/xc/preencoded
    python -m main.preencode --stream data/xc/streamed ...    # the LitData data set of `python -m main.data.shard`

DiffGen then trains from `main.data.latents.LatentDataModule` (crops taken in latent space) instead of
re-running the DiffAE encoder and the text encoder on every step. The output folder's layout is defined in
`main.data.latents.format` (latents.bin, items.csv, text_tokens.bin, text_offsets.npy, labels.json, meta.json,
and the journal encoded.csv with settings.json). A killed run started again with the same settings keeps what
it encoded and goes on from there; other settings are refused (pass `overwrite` to start over). Files that
fail to read are skipped and listed in `meta.json` (`failed`).

With caption variants (``--captions [KEY=VALUE ...]``, the keys of ``datamodule.captions``;
`main.data.captions`), each recording also gets ``variants`` captions drawn from its metadata once, seeded by its
file name; every distinct string (labels and variants) is encoded once, and training draws among a recording's
variants and its exact label per epoch (`main.data.latents.LatentDataModule`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import yaml

from main.data.audio import AudioReadError, load_recording, recording_tensor
from main.data.captions import CaptionConfig, caption_record, variant_list
from main.data.latents.format import (
    DTYPES,
    ITEMS_FILE,
    JOURNAL_FILE,
    LABELS_FILE,
    LATENTS_FILE,
    META_FILE,
    SETTINGS_FILE,
    TEXT_OFFSETS_FILE,
    TEXT_TOKENS_FILE,
    VARIANTS_COLUMN,
    journal_columns,
    journal_row,
    parse_journal,
    write_items,
)
from main.data.manifest import read_manifest
from main.files import PathLike
from main.models import load_model, resolve_device
from main.provenance import model_identity
from main.text import FrozenTextEncoder

READ_ERRORS = (AudioReadError, RuntimeError, OSError, ValueError, KeyError)


@dataclass
class Recording:
    """One recording to encode: its identity and labels, how to load its audio [channels, samples], and the
    metadata its caption variants are drawn from."""

    file: str
    split: str
    sci_name: str
    label: str
    load: Callable[[], Tensor]
    record: dict[str, Any] = field(default_factory=dict)


def manifest_recordings(manifest: PathLike, splits: Optional[Sequence[str]], rate: int,
                        channels: int) -> Iterator[Recording]:
    """The recordings of a manifest's `splits` (all rows when None)."""
    rows = [r for split in (splits or [None]) for r in read_manifest(manifest, split)]
    if not rows:
        raise ValueError(f"{manifest}: no rows in splits {list(splits or [])}")
    for row in rows:
        yield Recording(str(row["file"]), str(row["split"]), str(row["sci_name"]), str(row["label"]),
                        lambda path=row["path"]: load_recording(path, rate, channels), caption_record(row))


def stream_recordings(stream: PathLike, splits: Sequence[str], rate: int, channels: int,
                      failed: dict[str, str]) -> Iterator[Recording]:
    """The recordings stored in a streamed data set's `splits` (a folder or an object-store URL), in stored
    order; a split that cannot be read (or the rest of it) is recorded in `failed` under the split's location."""
    from litdata import StreamingDataset

    from main.data.streaming import check_split, decode_item, split_location

    for split in splits:
        check_split(stream, split)
        location = split_location(stream, split)
        dataset = StreamingDataset(location, shuffle=False)
        index = 0
        try:
            for index in range(len(dataset)):
                raw = dataset[index]
                info = json.loads(raw["meta"])
                yield Recording(str(info.get("file") or raw["key"]), str(info.get("split") or split),
                                str(info.get("sci_name", "")), str(raw["label"]),
                                lambda raw=raw: recording_tensor(*decode_item(raw), rate, channels),
                                caption_record(info))
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            failed[location] = f"unreadable from item {index} of {len(dataset)} ({error})"


def stream_identity(stream: PathLike) -> dict[str, Any]:
    """What identifies a streamed data set in the settings: its dataset.json (local) or its URL."""
    from main.data.streaming import DATASET_FILE, is_url

    if is_url(str(stream)):
        return {"path": str(stream)}
    return model_identity(Path(stream).expanduser() / DATASET_FILE)


@torch.no_grad()
def encode_recording(encoder: nn.Module, audio: Tensor, factor: int, min_samples: int, window: int) -> Tensor:
    """Latent [frames, channels] of a recording, zero-padded to a multiple of `factor` and >= `min_samples`,
    encoded in windows of `window` samples (a multiple of `factor`) to bound memory."""
    length = max(audio.shape[-1], min_samples)
    length = math.ceil(length / factor) * factor
    audio = torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))
    device = next(encoder.parameters()).device
    pieces = [encoder(audio[None, :, start:start + window].to(device))[0] for start in range(0, length, window)]
    return torch.cat(pieces, dim=-1).T.float().cpu()


def _resume_journal(out: Path, settings: dict[str, Any], row_bytes: int, overwrite: bool) -> list[dict[str, Any]]:
    """The journal entries of an earlier run with the same settings (latents.bin cut to match them), or []
    after clearing a previous run when `overwrite`; refuses other settings."""
    settings_path, journal_path, latents_path = out / SETTINGS_FILE, out / JOURNAL_FILE, out / LATENTS_FILE
    if overwrite or not settings_path.is_file():
        for path in (journal_path, latents_path, out / META_FILE, out / ITEMS_FILE):
            path.unlink(missing_ok=True)
        settings_path.write_text(json.dumps(settings, indent=2) + "\n")
        return []
    previous = json.loads(settings_path.read_text())
    changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    if changed:
        raise ValueError(f"{out} holds latents encoded with other settings ({', '.join(changed)}); "
                         f"pass --overwrite (overwrite=True) to start over, or choose another --out")
    entries = []
    if journal_path.is_file():
        text = journal_path.read_text()
        if not text.endswith("\n"):  # a row cut off by the kill: that recording is encoded again
            text = text[: text.rfind("\n") + 1]
            journal_path.write_text(text)
        entries = parse_journal(text)
    frames = 0
    for entry in entries:  # recordings lie back to back in journal order
        if entry["offset"] != frames:
            raise ValueError(f"{journal_path} is inconsistent; pass --overwrite to start over")
        frames += entry["frames"]
    size = latents_path.stat().st_size if latents_path.is_file() else 0
    if size < frames * row_bytes:
        raise ValueError(f"{latents_path} is shorter than {journal_path} records; pass --overwrite to start over")
    with open(latents_path, "ab") as f:  # drop a recording that was being written when the run stopped
        f.truncate(frames * row_bytes)
    return entries


def preencode(
    manifest: Optional[PathLike],
    diffae: PathLike,
    out_dir: PathLike,
    text_encoder: str = "t5-base",
    max_length: int = 128,
    splits: Optional[Sequence[str]] = ("train", "valid"),
    sample_rate: Optional[int] = None,
    channels: int = 2,
    min_samples: int = 0,
    min_seconds: float = 0.0,
    window: int = 2**22,
    dtype: str = "float16",
    text_batch_size: int = 64,
    device: str = "auto",
    stream: Optional[PathLike] = None,
    overwrite: bool = False,
    captions: Optional[Any] = None,
) -> dict[str, Any]:
    """Write latents and text embeddings of the `splits` of a manifest (or of a streamed data set) to `out_dir`,
    with caption variants when `captions` (a `CaptionConfig` or its keys) is enabled; resumes an interrupted run with
    the same settings; returns the meta data."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if (manifest is None) == (stream is None):
        raise ValueError("give a manifest or a streamed data set (stream), not both")
    if stream is not None and not splits:
        raise ValueError("name the splits to encode from the streamed data set")
    device = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, diffae_config = load_model(diffae, "diffae")
    encoder = model.encoder.to(device).eval()
    factor = int(model.latent_factor)
    latent_channels = int(model.encoder.out_channels)
    window = max(factor, window // factor * factor)
    rate = int(sample_rate or diffae_config.get("sample_rate") or 32000)
    min_samples = max(min_samples, round(min_seconds * rate))  # seconds count at the rate actually used
    np_dtype = DTYPES[dtype]
    source = {"manifest": model_identity(manifest)} if manifest is not None else {"stream": stream_identity(stream)}
    settings = {**source, "diffae": model_identity(diffae), "splits": list(splits or []), "sample_rate": rate,
                "channels": channels, "min_samples": min_samples, "dtype": dtype}
    caption_config = captions if isinstance(captions, CaptionConfig) else CaptionConfig.from_mapping(captions)
    with_variants = caption_config.enabled
    if with_variants:  # only then: a folder encoded without variants resumes as before
        settings["captions"] = caption_config.as_dict()
    entries = _resume_journal(out, settings, latent_channels * np.dtype(np_dtype).itemsize, overwrite)
    done = {(e["split"], e["file"]) for e in entries}
    failed: dict[str, str] = {}
    recordings = (manifest_recordings(manifest, splits, rate, channels) if manifest is not None
                  else stream_recordings(stream, list(splits or []), rate, channels, failed))
    offset = sum(e["frames"] for e in entries)
    resumed = len(entries)
    with open(out / LATENTS_FILE, "ab") as latents_file, open(out / JOURNAL_FILE, "a", newline="") as journal:
        writer = csv.DictWriter(journal, fieldnames=journal_columns(with_variants))
        if journal.tell() == 0:
            writer.writeheader()
        for recording in tqdm(recordings, desc="encoding audio"):
            if (recording.split, recording.file) in done:
                continue
            try:
                audio = recording.load()
            except READ_ERRORS as error:
                failed[recording.file] = str(error)
                continue
            latent = encode_recording(encoder, audio, factor, min_samples, window)
            latents_file.write(latent.numpy().astype(np_dtype).tobytes())
            latents_file.flush()  # the journal never names frames that are not on disk
            entry = {"file": recording.file, "split": recording.split, "sci_name": recording.sci_name,
                     "label": recording.label, "offset": offset, "frames": latent.shape[0]}
            if with_variants:
                entry[VARIANTS_COLUMN] = variant_list(recording.label, recording.record, caption_config,
                                                      recording.file)
            writer.writerow(journal_row(entry))
            journal.flush()
            entries.append(entry)
            done.add((recording.split, recording.file))
            offset += latent.shape[0]
    del model, encoder
    if not entries:
        raise ValueError(f"no recording could be encoded ({len(failed)} failed: {list(failed.items())[:3]})")

    # every distinct string once: labels and caption variants (short variants repeat across recordings)
    labels = sorted({str(e["label"]) for e in entries} | {v for e in entries for v in e.get(VARIANTS_COLUMN, [])})
    label_index = {label: i for i, label in enumerate(labels)}
    text = FrozenTextEncoder(text_encoder, max_length).to(device)
    text_offsets, token_count = [0], 0
    with open(out / TEXT_TOKENS_FILE, "wb") as tokens_file:
        for start in tqdm(range(0, len(labels), text_batch_size), desc="encoding labels"):
            embedding, mask = text(labels[start:start + text_batch_size])
            for e, m in zip(embedding, mask):
                tokens = e[m].float().cpu().numpy().astype(np_dtype)
                tokens_file.write(tokens.tobytes())
                token_count += tokens.shape[0]
                text_offsets.append(token_count)
    np.save(out / TEXT_OFFSETS_FILE, np.asarray(text_offsets, dtype=np.int64))
    (out / LABELS_FILE).write_text(json.dumps(labels, ensure_ascii=False))
    write_items(out, entries, label_index)
    meta = {
        "latent_frames": offset, "latent_channels": latent_channels, "downsample_factor": factor,
        "sample_rate": rate, "channels": channels, "dtype": dtype, "text_encoder": str(text_encoder),
        "text_max_length": max_length, "text_features": text.features, "text_tokens": token_count,
        "num_labels": len(labels), "num_items": len(entries),
        "caption_variants": int(caption_config.variants) if with_variants else 0,
        "captions": caption_config.as_dict() if with_variants else None, "resumed_items": resumed, "failed": failed,
        "diffae": str(diffae), "source": {k: v["path"] for k, v in source.items()},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def caption_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--captions`` KEY=VALUE pairs (values read as YAML) over ``enabled: true``."""
    options: dict[str, Any] = {"enabled": True}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--captions takes KEY=VALUE pairs, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def caption_args(datamodule: Any) -> list[str]:
    """The ``--captions`` arguments that pre-encode a datamodule config's caption variants ([] when it has none)."""
    options = datamodule.get("captions") if hasattr(datamodule, "get") else None
    config = CaptionConfig.from_mapping(options)
    if not config.enabled:
        return []
    return ["--captions", *(f"{key}={json.dumps(value)}" for key, value in config.as_dict().items()
                            if key != "enabled")]


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="manifest CSV from python -m main.data.prepare")
    source.add_argument("--stream", help="streamed data set (folder or s3:// URL) from python -m main.data.shard")
    parser.add_argument("--diffae", required=True, help="exported DiffAE (.safetensors) or DMAE checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--text-encoder", default="t5-base", help="hub name or local folder (default t5-base)")
    parser.add_argument("--max-length", type=int, default=128, help="text tokens kept per label (default 128)")
    parser.add_argument("--splits", nargs="+", default=["train", "valid"])
    parser.add_argument("--sample-rate", type=int, help="default: the DiffAE export's, else 32000")
    parser.add_argument("--min-seconds", type=float, default=0.0,
                        help="zero-pad shorter recordings to this length (use the training crop length)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    parser.add_argument("--captions", nargs="*", metavar="KEY=VALUE",
                        help="pre-encode caption variants (datamodule.captions keys over their defaults, e.g. "
                             "variants=8 exact_p=0.25); without this flag, only the labels")
    args = parser.parse_args(argv)
    meta = preencode(args.manifest, args.diffae, args.out, args.text_encoder, args.max_length, args.splits,
                     args.sample_rate, min_seconds=args.min_seconds, dtype=args.dtype,
                     device=args.device, stream=args.stream, overwrite=args.overwrite,
                     captions=None if args.captions is None else caption_options(args.captions))
    texts = "distinct captions" if meta["caption_variants"] else "labels"
    print(f"encoded {meta['num_items']} recordings ({meta['latent_frames']} latent frames) and "
          f"{meta['num_labels']} {texts} into {args.out} ({meta['resumed_items']} kept from an earlier run); "
          f"{len(meta['failed'])} files failed to read")
    return meta


if __name__ == "__main__":
    main()
