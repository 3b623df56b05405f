"""Generate bird sounds from text with trained (exported or checkpointed) models.

    python -m main.sample --diffae exports/diffae.safetensors --diffgen exports/diffgen.safetensors \\
        --prompt "Turdus merula; morning; song" --seconds 10 --num 4 --out samples/

writes `samples/<prompt>_<n>.wav` and a spectrogram `.png` beside each, plus `samples/settings.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from main.audio import save_audio, save_spectrogram_png, slug
from main.data.datamodule import load_recording
from main.diffusion import SAMPLERS
from main.inference.device import add_batching, batches_models, resolve_device
from main.inference.pipeline import CombinedSampler, get_default_combined_sampler
from main.renames import add_flag_alias


def main(argv: Optional[list[str]] = None) -> list[Path]:
    """Command-line entry point; returns the WAV files written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="folder written by CombinedSampler.save_pretrained, or a hub repository")
    parser.add_argument("--diffae", help="exported DiffAE (.safetensors) or DMAE checkpoint (.ckpt)")
    parser.add_argument("--diffgen", help="exported DiffGen (.safetensors) or DiffGen checkpoint")
    prompts = parser.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", action="append", help="text prompt (repeatable)")
    prompts.add_argument("--prompts-file", type=Path, help="one prompt per line")
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--num", type=int, default=1, help="clips per prompt")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sampling-steps", type=int, default=25, help="DiffGen sampling steps")
    add_flag_alias(parser, "--steps", "sampling_steps", type=int)
    parser.add_argument("--decoding-steps", type=int, help="DiffAE decoding steps (default: --sampling-steps)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="dpmpp-2m")
    parser.add_argument("--embedding-scale", type=float, default=5.0,
                        help="classifier-free guidance scale (1 = off)")
    add_flag_alias(parser, "--cfg", "embedding_scale", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4, help="clips per step")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--text-encoder", help="override the text encoder stored with the DiffGen export")
    parser.add_argument("--input-audio", type=Path, help="audio-to-audio: start from this recording")
    parser.add_argument("--strength", type=float, default=0.5,
                        help="with --input-audio: how much of it to replace (0 keeps it, 1 ignores it)")
    add_batching(parser)
    args = parser.parse_args(argv)
    if not args.model and not (args.diffae and args.diffgen):
        parser.error("give --model, or both --diffae and --diffgen")

    texts = args.prompt or [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    jobs = [(text, n) for text in texts for n in range(args.num)]
    device = resolve_device(args.device)
    if args.model:
        model = CombinedSampler.from_pretrained(args.model, device=device)
    else:
        model = get_default_combined_sampler(args.diffae, args.diffgen, args.text_encoder, device)
    sample_rate = model.sample_rate
    source = None
    if args.input_audio:
        source = load_recording(args.input_audio, sample_rate, model.diffae.in_channels)
        args.seconds = source.shape[-1] / sample_rate
    frames = model.latent_frames(args.seconds)
    samples = round(args.seconds * sample_rate)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "settings.json").write_text(json.dumps({**settings, "latent_frames": frames,
                                                        "sample_rate": sample_rate}, indent=2))
    together = batches_models(device, args.batched)
    written = []
    for start in tqdm(range(0, len(jobs), args.batch_size), desc="generating"):
        batch = jobs[start:start + args.batch_size]
        # Job i is seeded `seed + i` (sample() seeds clip j `seed + j`): a clip is the same at any batch size.
        texts = [t for t, _ in batch]
        steps = dict(sampling_steps=args.sampling_steps, decoding_steps=args.decoding_steps or args.sampling_steps,
                     embedding_scale=args.embedding_scale, sampler=args.sampler, seed=args.seed + start)
        if source is not None:
            audio = model.variation(source.expand(len(texts), -1, -1), texts, strength=args.strength, **steps)
        else:
            audio = model.sample(texts, latent_length=frames, batch_size=len(texts) if together else 1, **steps)
        for (text, n), clip in zip(batch, audio[..., :samples]):
            name = f"{slug(text)}_{n:03d}"
            written.append(save_audio(args.out / f"{name}.wav", clip, sample_rate))
            save_spectrogram_png(args.out / f"{name}.png", clip, sample_rate, text)
    print(f"wrote {len(written)} clips to {args.out}")
    return written


if __name__ == "__main__":
    main()
