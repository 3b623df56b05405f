"""Command line: `python -m main.analysis {generate,reconstruct,evaluate,sweep,report} ...`.

    # 200 clips prompted with test labels, 100 DDIM steps, CFG (embedding scale) 5
    python -m main.analysis generate --diffae exports/diffae.safetensors --diffgen exports/diffgen.safetensors \\
        --manifest data/manifest.csv --num 200 --out eval/gen
    # DiffAE reconstructions of the same test recordings
    python -m main.analysis reconstruct --diffae exports/diffae.safetensors --manifest data/manifest.csv \\
        --num 200 --out eval/recon
    # BirdNET / kNN / FAD metrics of one folder
    python -m main.analysis evaluate --clips eval/gen --manifest data/manifest.csv
    # CFG x steps sweep (resumable), then the report
    python -m main.analysis sweep --diffae ... --diffgen ... --manifest data/manifest.csv --num 200 --out eval/sweep
    python -m main.analysis report --generated eval/gen --manifest data/manifest.csv --reconstructions eval/recon \\
        --sweep eval/sweep --out eval/report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from main.diffusion import SAMPLERS
from main.inference.device import add_batching
from main.renames import add_flag_alias


def _optional_split(value: str) -> Optional[str]:
    return None if value.lower() in ("", "none") else value


def _optional_count(value: str) -> Optional[int]:
    count = int(value)
    return None if count <= 0 else count


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV (main.data.prepare)")
    parser.add_argument("--split", default="test", help="split whose labels/recordings are used (default test)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--num", type=int, help="number of clips (a seeded selection of the split's rows, cycled "
                                                "when larger; default: one per row)")
    group.add_argument("--per-species", type=int, help="clips per species instead of --num")


def _add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--diffae", type=Path, required=True, help="exported DiffAE (.safetensors) or .ckpt")
    parser.add_argument("--diffgen", type=Path, required=True, help="exported DiffGen (.safetensors) or .ckpt")
    parser.add_argument("--text-encoder", help="override the text encoder stored with the DiffGen export")


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decoding-steps", type=int, help="DiffAE decoding steps (default: the sampling steps)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip duration (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="clip i uses seed + i (default 0)")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per step (default 4)")
    parser.add_argument("--device", default="auto")
    add_batching(parser)


def _add_evaluation(parser: argparse.ArgumentParser, reference_default: Optional[str] = "train") -> None:
    parser.add_argument("--reference-split", type=_optional_split, default=reference_default,
                        help="real clips the kNN classifier is fitted on ('none' to skip; default %(default)s)")
    parser.add_argument("--reference-per-species", type=_optional_count, default=20,
                        help="reference clips per species (0 = all; default 20)")
    parser.add_argument("--no-birdnet", action="store_true", help="skip BirdNET (metrics, kNN, BirdNET FAD)")
    parser.add_argument("--no-logmel", action="store_true", help="skip the log-mel FAD")
    parser.add_argument("--cache-dir", type=Path, help="BirdNET result cache (default ~/.cache/bird-diffusion/"
                                                       "birdnet or $BIRD_DIFFUSION_CACHE/birdnet)")
    parser.add_argument("--workers", type=int, help="BirdNET worker processes (default min(2, cores))")
    parser.add_argument("--threshold", type=float, default=0.25, help="detection confidence (default 0.25)")
    parser.add_argument("--k", type=int, default=5, help="kNN neighbours (default 5)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m main.analysis`."""
    parser = argparse.ArgumentParser(prog="python -m main.analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate clips from the labels of a manifest split")
    _add_models(gen)
    _add_selection(gen)
    gen.add_argument("--out", type=Path, required=True, help="folder for the clips, clips.csv, generation.json")
    gen.add_argument("--sampling-steps", type=int, default=100, help="DiffGen sampling steps (default 100)")
    add_flag_alias(gen, "--steps", "sampling_steps", type=int)
    gen.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="DiffGen sampler (default ddim)")
    gen.add_argument("--decoding-sampler", choices=SAMPLERS, help="DiffAE decoding sampler (default: --sampler)")
    gen.add_argument("--embedding-scale", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    add_flag_alias(gen, "--cfg", "embedding_scale", type=float)
    _add_sampling(gen)
    gen.add_argument("--overwrite", action="store_true", help="regenerate every clip")
    gen.add_argument("--no-latent-probe", action="store_true",
                     help="skip scoring the generated latents with the latent species classifier "
                          "(latent_species.json)")

    rec = sub.add_parser("reconstruct", help="encode + decode real clips with a DiffAE")
    rec.add_argument("--diffae", type=Path, required=True)
    _add_selection(rec)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--decoding-steps", type=int, default=100, help="decoding steps (default 100)")
    add_flag_alias(rec, "--steps", "decoding_steps", type=int)
    rec.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    rec.add_argument("--seconds", type=float, default=10.0, help="first seconds of each recording (0 = whole)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--batch-size", type=int, default=4)
    rec.add_argument("--device", default="auto")
    rec.add_argument("--overwrite", action="store_true")

    ev = sub.add_parser("evaluate", help="BirdNET / kNN / FAD metrics of folders of clips")
    ev.add_argument("--clips", type=Path, action="append", required=True, help="folder with clips.csv (repeatable)")
    ev.add_argument("--manifest", type=Path, required=True)
    ev.add_argument("--split", default="test", help="real clips the folders are compared with (default test)")
    ev.add_argument("--test-per-species", type=_optional_count, help="cap the real test clips per species")
    _add_evaluation(ev)
    ev.add_argument("--json", type=Path, help="write the full results here")

    sw = sub.add_parser("sweep", help="generate + evaluate over CFG scales x steps x samplers")
    _add_models(sw)
    _add_selection(sw)
    sw.add_argument("--out", type=Path, required=True)
    sw.add_argument("--embedding-scales", type=float, nargs="+", default=[1.0, 2.5, 5.0, 7.5, 10.0, 15.0],
                    help="classifier-free guidance scales")
    add_flag_alias(sw, "--cfg-scales", "embedding_scales", type=float, nargs="+")
    sw.add_argument("--sampling-steps", type=int, nargs="+", default=[25, 100], help="DiffGen sampling steps")
    add_flag_alias(sw, "--steps", "sampling_steps", type=int, nargs="+")
    sw.add_argument("--samplers", choices=SAMPLERS, nargs="+", default=["ddim"])
    _add_sampling(sw)
    _add_evaluation(sw)

    rep = sub.add_parser("report", help="report.md with tables and plots")
    rep.add_argument("--generated", type=Path, required=True, help="folder written by `generate`")
    rep.add_argument("--manifest", type=Path, required=True)
    rep.add_argument("--split", default="test")
    rep.add_argument("--test-per-species", type=_optional_count, help="cap the real test clips per species")
    rep.add_argument("--reconstructions", type=Path, help="folder written by `reconstruct`")
    rep.add_argument("--also", action="append", default=[], metavar="NAME=FOLDER",
                     help="another folder of generated clips to compare, e.g. 'generated (CFG 1)=eval/cfg1' "
                          "(repeatable)")
    rep.add_argument("--sweep", type=Path, help="folder (or sweep.json) written by `sweep`")
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--spectrograms", type=int, default=4, help="prompts in the spectrogram grid (default 4)")
    _add_evaluation(rep)
    return parser


def _named_folders(values: Sequence[str]) -> dict[str, Path]:
    """'NAME=FOLDER' arguments as {name: folder}."""
    out = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--also expects NAME=FOLDER, got {value!r}")
        out[name] = Path(folder)
    return out


def _birdnet(args: argparse.Namespace) -> Optional[Any]:
    if args.no_birdnet:
        return None
    from main.analysis.birdnet import BirdNet

    return BirdNet(cache_dir=args.cache_dir, n_workers=args.workers)


def _print_rows(results: dict[str, Any]) -> None:
    from main.analysis.evaluate import summary_row

    for name, result in results.items():
        row = {k: v for k, v in summary_row(result).items() if v is not None}
        print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def main(argv: Optional[Sequence[str]] = None) -> Any:
    """Command-line entry point; returns what the subcommand produced."""
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        from main.analysis.generate import generate_from_manifest

        report = generate_from_manifest(
            args.out, args.diffae, args.diffgen, args.manifest, args.split, args.num, args.per_species,
            args.text_encoder, args.device, sampling_steps=args.sampling_steps, decoding_steps=args.decoding_steps,
            sampler=args.sampler, decoding_sampler=args.decoding_sampler, embedding_scale=args.embedding_scale,
            seconds=args.seconds, seed=args.seed, batch_size=args.batch_size, batched=args.batched,
            overwrite=args.overwrite,
            latent_probe=not args.no_latent_probe)
        print(f"{report.folder}: wrote {report.written} clips, {report.skipped} already there ({report.total} in all)")
        probe = report.folder / "latent_species.json"
        if probe.is_file():
            generated = json.loads(probe.read_text())["generated"]
            print(f"latent species top-1 {generated['accuracy']:.3f} (95% CI {generated['ci95'][0]:.3f}-"
                  f"{generated['ci95'][1]:.3f}, N = {generated['n']}, chance {generated['chance']:.3f})")
        return report
    if args.command == "reconstruct":
        from main.analysis.generate import reconstruct_from_manifest

        report = reconstruct_from_manifest(
            args.out, args.diffae, args.manifest, args.split, args.num, args.per_species,
            decoding_steps=args.decoding_steps,
            sampler=args.sampler, seconds=args.seconds or None, seed=args.seed, batch_size=args.batch_size,
            device=args.device, overwrite=args.overwrite)
        print(f"{report.folder}: wrote {report.written} reconstructions, {report.skipped} already there")
        return report
    if args.command == "evaluate":
        from main.analysis.clips import clips_from_folder, clips_from_manifest
        from main.analysis.evaluate import evaluate_sets, write_json

        sets = {str(folder): clips_from_folder(folder) for folder in args.clips}
        test = clips_from_manifest(args.manifest, args.split, per_species=args.test_per_species)
        reference = (clips_from_manifest(args.manifest, args.reference_split,
                                         per_species=args.reference_per_species)
                     if args.reference_split else None)
        results = evaluate_sets(sets, test, reference, _birdnet(args), args.threshold, args.k, not args.no_logmel)
        _print_rows(results)
        if args.json:
            write_json(args.json, results)
        return results
    if args.command == "sweep":
        from main.analysis.sweep import run_sweep

        table = run_sweep(
            args.out, args.diffae, args.diffgen, args.manifest, args.split, args.num, args.per_species,
            args.embedding_scales, args.sampling_steps, args.samplers, args.decoding_steps, args.seconds, args.seed,
            args.batch_size, args.text_encoder, args.device, args.reference_split, args.reference_per_species,
            _birdnet(args), args.threshold, args.k, not args.no_logmel, batched=args.batched)
        for row in table:
            print(json.dumps({k: v for k, v in row.items() if v is not None}, default=str))
        print(f"wrote {args.out / 'sweep.csv'} and {args.out / 'sweep.json'}")
        return table
    if args.command == "report":
        from main.analysis.report import write_report

        path = write_report(
            args.out, args.generated, args.manifest, args.split, args.test_per_species, args.reference_split,
            args.reference_per_species, args.reconstructions, args.sweep, _birdnet(args), args.threshold, args.k,
            not args.no_logmel, args.spectrograms, also=_named_folders(args.also))
        print(f"wrote {path}")
        return path
    raise AssertionError(args.command)


if __name__ == "__main__":
    main()
