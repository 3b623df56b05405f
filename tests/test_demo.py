"""The demo pipeline end to end (fast variant): training losses fall, the latent species probe runs during
training, audio and a report (CFG 3 next to CFG 1, intervals, learning curve) come out."""

from __future__ import annotations

import csv
import json

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from main.demo import logged
from main.demo import main as demo_main


@pytest.mark.slow
def test_fast_demo_trains_generates_and_reports(tmp_path):
    report = demo_main(["--fast", "--out", str(tmp_path), "--per-species", "2", "--steps", "4"])
    text = report.read_text()
    assert "kNN top-1" in text and "latent top-1" in text and "generated (CFG 1)" in text
    assert "FAD BirdNET / floor" in text and "noise floor vs real" in text and "rhythm: species within 20%" in text
    assert "Training stages" in text and "Text adherence during training" in text
    assert {"spectrograms.png", "per_species.png", "learning_curve.png"} <= {p.name for p in report.parent.iterdir()}
    clips = sorted((tmp_path / "eval/generated").glob("*.wav"))
    assert len(clips) == 20 and all(sf.info(str(c)).frames == 16000 for c in clips)  # 2 per species, whole 1 s
    assert json.loads((tmp_path / "eval/generated/generation.json").read_text())["batched"]  # 16 clips at once
    # learned quality floor (measured: dmae 0.580 -> 0.554 in 40 steps, diffgen 0.343 -> 0.173 in 200 steps)
    for stage, factor in (("dmae", 0.97), ("diffgen", 0.75)):
        losses = logged(tmp_path / stage, "valid/loss")
        assert len(losses) >= 4 and losses[-1] < factor * losses[0], (stage, losses)
    # --fast trains its DiffAE from scratch, then the decoder alone, as the pretrained demo DiffAE was made
    assert "DiffAE decoder" in text
    base, final = (load_file(str(tmp_path / "exports" / f"{name}.safetensors"))
                   for name in ("diffae_tiny_base", "diffae_tiny"))
    encoder = [k for k in base if k.startswith("encoder.")]
    assert encoder and all(torch.equal(base[k], final[k]) for k in encoder)  # the latents stay as they are
    assert any(not torch.equal(base[k], final[k]) for k in base if k.startswith("net."))
    results = json.loads((report.parent / "metrics.json").read_text())["results"]
    # the fidelity figures of every set, under the keys scripts read
    for name in ("generated", "generated (CFG 1)", "reconstructions", "real test", "real train"):
        fidelity = results[name]["fidelity"]
        assert {"fad_birdnet_ratio", "clipped_fraction", "noise_floor_db_vs_real", "rhythm_species_within_20pct",
                "rhythm_n_species"} <= set(fidelity), name
        assert fidelity["clipped_fraction"] == 0.0, name  # the written audio is levelled, never clipped
    assert abs(results["real train"]["fidelity"]["fad_birdnet_ratio"] - 1.0) < 1e-6  # the reference is its own floor
    assert results["real test"]["knn"]["accuracy"] >= 0.8  # BirdNET + kNN tell the real species apart
    for name in ("generated", "generated (CFG 1)"):
        probe = results[name]["latent_species"]
        assert probe["generated"]["n"] == 20 and probe["real"]["accuracy"] >= 0.5  # the probe reads real latents
    # text adherence logged during DiffGen training, drawn as the learning curve
    rows = list(csv.DictReader(open(report.parent / "learning_curve.csv")))
    steps = sorted({int(r["step"]) for r in rows if r["clips"].startswith("generated latents")})
    assert steps and steps[-1] == 200
