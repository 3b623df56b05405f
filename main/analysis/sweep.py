"""Sweep classifier-free guidance scale x sampling steps x sampler: generate the same prompts (same seeds) with
each setting, evaluate every setting together (one BirdNET pass) and write `sweep.csv` + `sweep.json`.

Resumable: each setting's folder keeps its clips (generation skips them) and BirdNET results are cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from main.analysis.clips import ClipSet, clips_from_folder, clips_from_manifest, select_rows
from main.analysis.evaluate import evaluate_sets, jsonable, summary_row, write_json
from main.files import PathLike, write_csv_atomic
from main.renames import renamed_keywords

DEFAULT_CFG_SCALES: tuple[float, ...] = (1.0, 2.5, 5.0, 7.5, 10.0, 15.0)
DEFAULT_STEPS: tuple[int, ...] = (25, 100)
SWEEP_CSV = "sweep.csv"
SWEEP_JSON = "sweep.json"


def setting_name(cfg_scale: float, steps: int, sampler: str) -> str:
    """Folder name of one sweep setting, e.g. `cfg7.5_steps100_ddim`."""
    return f"cfg{cfg_scale:g}_steps{steps}_{sampler}"


@renamed_keywords(cfg_scales="embedding_scales", steps="sampling_steps")
def run_sweep(
    out_dir: PathLike,
    diffae: PathLike,
    diffgen: PathLike,
    manifest: PathLike,
    split: str = "test",
    num: Optional[int] = None,
    per_species: Optional[int] = None,
    embedding_scales: Sequence[float] = DEFAULT_CFG_SCALES,
    sampling_steps: Sequence[int] = DEFAULT_STEPS,
    samplers: Sequence[str] = ("ddim",),
    decoding_steps: Optional[int] = None,
    seconds: float = 5.0,
    seed: int = 0,
    batch_size: int = 4,
    text_encoder: Optional[str] = None,
    device: Optional[str] = None,
    reference_split: Optional[str] = "train",
    reference_per_species: Optional[int] = 20,
    birdnet: Optional[Any] = None,
    threshold: float = 0.25,
    k: int = 5,
    logmel: bool = True,
    show_progress: bool = True,
    batched: Optional[bool] = None,
) -> list[dict[str, Any]]:
    """Generate and evaluate every (embedding scale, sampling steps, sampler); returns the rows written to
    `sweep.csv` (whose columns keep their names `cfg_scale` and `steps`).

    `birdnet` is a `main.analysis.birdnet.BirdNet` (None: no BirdNET metrics, no kNN, log-mel FAD only).
    `decoding_steps` None decodes with as many DiffAE steps as sampling steps; `batched`: see `generate_clips`.
    """
    from main.analysis.generate import generate_clips, load_sampler
    from main.data.manifest import read_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(manifest, split)
    if not rows:
        raise ValueError(f"manifest {manifest} has no rows in split {split!r}")
    chosen = select_rows(rows, num, per_species, seed)
    test = clips_from_manifest(manifest, split, name=f"real {split}")
    reference = None
    if reference_split:
        reference = clips_from_manifest(manifest, reference_split, per_species=reference_per_species, seed=seed,
                                        name=f"real {reference_split}")
    model, info = load_sampler(diffae, diffgen, text_encoder, device)
    base = {"models": info, "manifest": str(Path(manifest).resolve()), "split": split, "num": num,
            "per_species": per_species}
    settings = [(float(c), int(s), str(m)) for m in samplers for s in sampling_steps for c in embedding_scales]
    sets: dict[str, ClipSet] = {}
    for cfg_scale, n_steps, sampler in settings:
        name = setting_name(cfg_scale, n_steps, sampler)
        generate_clips(out / name, model, chosen, sampling_steps=n_steps, decoding_steps=decoding_steps,
                       sampler=sampler, embedding_scale=cfg_scale, seconds=seconds, seed=seed, batch_size=batch_size,
                       settings=base, show_progress=show_progress, batched=batched)
        sets[name] = clips_from_folder(out / name)
    results = evaluate_sets(sets, test, reference, birdnet, threshold, k, logmel, show_progress)
    table = []
    for cfg_scale, n_steps, sampler in settings:
        name = setting_name(cfg_scale, n_steps, sampler)
        table.append(jsonable({"setting": name, "cfg_scale": cfg_scale, "steps": n_steps,
                               "decoding_steps": decoding_steps or n_steps, "sampler": sampler,
                               **summary_row(results[name])}))  # NaN (no such metric) -> None
    write_sweep(out, table, {
        "settings": {**base, "cfg_scales": list(embedding_scales), "steps": list(sampling_steps),  # keys as before
                     "samplers": list(samplers), "decoding_steps": decoding_steps, "seconds": seconds, "seed": seed,
                     "threshold": threshold, "k": k, "reference_split": reference_split,
                     "reference_per_species": reference_per_species, "n_test_clips": len(test),
                     "n_reference_clips": len(reference) if reference else 0, "birdnet": birdnet is not None},
        "results": results,
    })
    return table


def write_sweep(out_dir: PathLike, table: Sequence[dict[str, Any]], details: dict[str, Any]) -> tuple[Path, Path]:
    """Write `sweep.csv` (one row per setting) and `sweep.json` (settings, rows and full results)."""
    out = Path(out_dir)
    csv_path = out / SWEEP_CSV
    write_csv_atomic(csv_path, jsonable(list(table)), list(table[0].keys()) if table else ["setting"])
    json_path = write_json(out / SWEEP_JSON, {**details, "rows": list(table)})
    return csv_path, json_path


def read_sweep(path: PathLike) -> dict[str, Any]:
    """A `sweep.json` (given itself or its folder)."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / SWEEP_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m main.analysis sweep` first")
    return json.loads(path.read_text())
