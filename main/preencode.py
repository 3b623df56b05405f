"""Pre-encode a prepared data set for DiffGen: DiffAE latents of whole recordings and text embeddings per label.

    python -m main.preencode --manifest data/xc/manifest.csv --diffae exports/diffae.safetensors \\
        --text-encoder t5-base --max-length 128 --out data/xc/preencoded

DiffGen then trains from `main.data.latents.LatentDataModule` (crops taken in latent space) instead of
re-running the DiffAE encoder and the text encoder on every step. Layout of the output folder:

- `latents.bin`: float16/32 [total_frames, channels], all recordings back to back; `items.csv` holds each
  recording's frame offset/count, its split, label index and sci_name.
- `text_tokens.bin`: [total_tokens, features] of the *unpadded* tokens of each unique label (ragged, so
  padding costs no disk), `text_offsets.npy` the start of each label; `labels.json` the label strings.
- `meta.json`: shapes, dtype, sample rate, DiffAE downsampling factor, text encoder and max length.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from main.data.audio import AudioReadError
from main.data.datamodule import load_recording
from main.data.manifest import read_manifest
from main.models import load_model, resolve_device
from main.text import FrozenTextEncoder

DTYPES = {"float16": np.float16, "float32": np.float32}


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


def preencode(
    manifest: Union[str, Path],
    diffae: Union[str, Path],
    out_dir: Union[str, Path],
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
) -> dict[str, Any]:
    """Write latents and text embeddings of the manifest's `splits` to `out_dir`; returns the meta data."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    device = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, diffae_config = load_model(diffae, "diffae")
    encoder = model.encoder.to(device).eval()
    factor = int(model.latent_factor)
    window = max(factor, window // factor * factor)
    rate = int(sample_rate or diffae_config.get("sample_rate") or 32000)
    min_samples = max(min_samples, round(min_seconds * rate))  # seconds count at the rate actually used
    rows = [r for split in (splits or [None]) for r in read_manifest(manifest, split)]
    if not rows:
        raise ValueError(f"{manifest}: no rows in splits {list(splits or [])}")

    labels = sorted({str(r["label"]) for r in rows})
    label_index = {label: i for i, label in enumerate(labels)}
    np_dtype = DTYPES[dtype]
    items, failed, offset = [], {}, 0
    with open(out / "latents.bin", "wb") as latents_file:
        for row in tqdm(rows, desc="encoding audio"):
            try:
                audio = load_recording(row["path"], rate, channels)
            except (AudioReadError, RuntimeError, OSError) as error:
                failed[str(row["file"])] = str(error)
                continue
            latent = encode_recording(encoder, audio, factor, min_samples, window)
            latents_file.write(latent.numpy().astype(np_dtype).tobytes())
            items.append({"file": row["file"], "split": row["split"], "sci_name": row["sci_name"],
                          "label": label_index[str(row["label"])], "offset": offset, "frames": latent.shape[0]})
            offset += latent.shape[0]
    latent_channels = int(model.encoder.out_channels)
    del model, encoder

    text = FrozenTextEncoder(text_encoder, max_length).to(device)
    text_offsets, token_count = [0], 0
    with open(out / "text_tokens.bin", "wb") as tokens_file:
        for start in tqdm(range(0, len(labels), text_batch_size), desc="encoding labels"):
            embedding, mask = text(labels[start:start + text_batch_size])
            for e, m in zip(embedding, mask):
                tokens = e[m].float().cpu().numpy().astype(np_dtype)
                tokens_file.write(tokens.tobytes())
                token_count += tokens.shape[0]
                text_offsets.append(token_count)
    np.save(out / "text_offsets.npy", np.asarray(text_offsets, dtype=np.int64))
    (out / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))
    with open(out / "items.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "split", "sci_name", "label", "offset", "frames"])
        writer.writeheader()
        writer.writerows(items)
    meta = {
        "latent_frames": offset, "latent_channels": latent_channels, "downsample_factor": factor,
        "sample_rate": rate, "channels": channels, "dtype": dtype, "text_encoder": str(text_encoder),
        "text_max_length": max_length, "text_features": text.features, "text_tokens": token_count,
        "num_labels": len(labels), "num_items": len(items), "failed": failed, "diffae": str(diffae),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="manifest CSV from python -m main.data.prepare")
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
    args = parser.parse_args(argv)
    meta = preencode(args.manifest, args.diffae, args.out, args.text_encoder, args.max_length, args.splits,
                     args.sample_rate, min_seconds=args.min_seconds, dtype=args.dtype,
                     device=args.device)
    print(f"encoded {meta['num_items']} recordings ({meta['latent_frames']} latent frames) and "
          f"{meta['num_labels']} labels into {args.out}; {len(meta['failed'])} files failed to read")
    return meta


if __name__ == "__main__":
    main()
