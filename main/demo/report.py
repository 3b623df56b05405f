"""The demo's report: the training stages table, DiffGen's learning curve (logged by the latent species probe)
and the headline figures it prints."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of metric `key` a run logged (CSV logger), in order."""
    with open(next(run_dir.glob("csv/version_*/metrics.csv")), newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def learning_curve_rows(out: Path, stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Latent-space text adherence of DiffGen against its training steps (logged by the latent species probe),
    one row per logged evaluation and CFG scale, plus the probe on real validation latents (the ceiling)."""
    rows: list[dict[str, Any]] = []
    run_dir = out / "diffgen"
    files = list(run_dir.glob("csv/version_*/metrics.csv"))
    if not files:
        return rows
    with open(files[0], newline="") as f:
        records = list(csv.DictReader(f))
    keys = sorted({k for r in records for k in r if k.startswith("valid/latent_species_top1_cfg")})
    seconds_per_step = stages["DiffGen"]["seconds"] / max(stages["DiffGen"]["steps"], 1)
    for record in records:
        for key in keys + ["valid/latent_species_top1_real"]:
            if record.get(key):
                step = int(record["step"])
                label = ("real validation latents" if key.endswith("_real")
                         else f"generated latents, CFG {key.rsplit('cfg', 1)[1]}")
                rows.append({"clips": label, "step": step, "minutes": round(step * seconds_per_step / 60, 2),
                             "latent_top1": float(record[key])})
    return rows


def write_latent_curve(rows: list[dict[str, Any]], out_dir: Path) -> str:
    """learning_curve.csv/.png (latent top-1 against DiffGen steps) and the report section that shows them."""
    from main.analysis.report import write_learning_curve

    caption = ("Logged by the latent species probe while DiffGen trained (`valid/latent_species_top1*`): latents "
               "generated for the validation prompts (3 per species, 10 sampling steps) classified by a linear "
               "probe fitted on the training recordings' DiffAE latents; dotted: the probe on the real validation "
               "latents (its ceiling).")
    return write_learning_curve(rows, out_dir, ["clips", "step", "minutes", "latent_top1"],
                                "Text adherence during training", caption, x="step", y="latent_top1",
                                xlabel="DiffGen training steps", ylabel="latent species top-1", chance=0.1)


def stages_section(stages: dict[str, dict[str, Any]]) -> str:
    """The report section on what each training stage did (and whether its time limit cut it short)."""
    lines = ["\n## Training stages\n", "| stage | steps asked | steps done | minutes | note |", "|---|---|---|---|---|"]
    for name, s in stages.items():
        note = s.get("note", "")
        if s.get("steps_done") is not None and s["steps_done"] < s["steps"]:
            note = f"**stopped by its time limit ({s['limit_minutes']} min) before its step count**"
        done = "–" if s.get("steps_done") is None else s["steps_done"]
        lines.append(f"| {name} | {s['steps']} | {done} | {s['seconds'] / 60:.1f} | {note} |")
    return "\n".join(lines) + "\n"


def summarize(out: Path, report: Path, stages: dict[str, dict[str, Any]]) -> None:
    """Print the headline figures of the report's metrics and probe files."""
    metrics = json.loads((report.parent / "metrics.json").read_text())["results"]
    for name, result in metrics.items():
        knn = (result.get("knn") or {})
        latent = (result.get("latent_species") or {}).get("generated") or {}
        text = f"[demo] {name}: kNN top-1 {knn['accuracy']:.3f}" if knn else f"[demo] {name}:"
        if knn.get("ci95"):
            text += f" [{knn['ci95'][0]:.2f}, {knn['ci95'][1]:.2f}] (N = {knn['n_query']})"
        if latent:
            text += f"; latent top-1 {latent['accuracy']:.3f} [{latent['ci95'][0]:.2f}, {latent['ci95'][1]:.2f}]"
        print(text)
        fidelity = result.get("fidelity")
        if fidelity:
            print(f"[demo]   {fidelity_text(fidelity)}")
    for name, s in stages.items():
        print(f"[demo] {name}: {s['steps_done'] if s['steps_done'] is not None else 0} steps in "
              f"{s['seconds'] / 60:.1f} min ({s['note']})")
    print(f"[demo] report: {report}\n[demo] generated audio: {out / 'eval/generated'}\n[demo] log: {out / 'demo.log'}")


def fidelity_text(fidelity: dict[str, Any]) -> str:
    """One line of a set's fidelity figures: FAD over the floor, clipping, noise floor and rhythm."""
    ratio = fidelity.get("fad_birdnet_ratio")
    floor = fidelity.get("noise_floor_db_vs_real")
    distance = fidelity.get("rhythm_log2_distance")
    return (f"FAD/floor {'–' if ratio is None else f'{ratio:.2f}'}; clipped {fidelity['clipping']['clipped_clips']}"
            f"/{fidelity['clipping']['n_clips']}; noise floor {'–' if floor is None else f'{floor:+.1f}'} dB vs "
            f"real; rhythm {fidelity['rhythm_species_within_20pct']}/{fidelity['rhythm_n_species']} species within "
            f"20% (log2 distance {'–' if distance is None else f'{distance:.2f}'})")
