"""The demo pipeline end to end (fast variant): training losses fall, the latent species probe runs during
training, audio and a report (CFG 3 next to CFG 1, intervals, learning curve) come out."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from main.demo import cpu_count, logged, run_lanes
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


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_lanes_runs_lanes_in_parallel_and_commands_in_order(tmp_path):
    log = tmp_path / "demo.log"
    signal, order = tmp_path / "signal", tmp_path / "order"
    # lane 0 waits for a file that only lane 1 writes: it finishes only if the lanes run at the same time
    wait = (f"import os, pathlib, time\nfor _ in range(600):\n    if pathlib.Path({str(signal)!r}).exists(): break\n"
            f"    time.sleep(0.05)\nelse: raise SystemExit(3)\nprint('threads', os.environ['OMP_NUM_THREADS'])")
    append = f"open({str(order)!r}, 'a').write('{{}}')"
    lanes = [[_python(wait)], [_python(append.format("a")), _python(f"open({str(signal)!r}, 'w')"),
                               _python(append.format("b"))]]
    run_lanes(lanes, log)
    assert order.read_text() == "ab"
    assert f"threads {max(1, cpu_count() // 2)}" in log.read_text()  # the cores split between the lanes
    assert not list(tmp_path.glob("demo.lane*.log"))  # merged into the one log


def test_run_lanes_raises_after_every_lane_is_done(tmp_path):
    log, done = tmp_path / "demo.log", tmp_path / "done"
    with pytest.raises(SystemExit, match="stage failed.*demo.log"):
        run_lanes([[_python("import sys; print('broken'); sys.exit(1)")],
                   [_python(f"import time; time.sleep(0.5); open({str(done)!r}, 'w')")]], log)
    assert done.exists() and "broken" in log.read_text()


def test_default_demo_uses_both_pretrained_models_without_training(tmp_path, monkeypatch):
    """Without --train-diffgen the demo copies pretrained/diffgen_demo next to the DiffAE, then generates with
    both: no pre-encoding, no train.py; the report's stages table says so. (The stages themselves are replaced by
    recorders here; the fast demo above runs them.)"""
    import main.demo as demo

    commands: list[list[str]] = []

    def record(command, *args, **kwargs):
        commands.append([str(c) for c in command])
        return 0.0

    monkeypatch.setattr(demo, "run", record)
    monkeypatch.setattr(demo, "run_lanes", lambda lanes, log: [record(c) for lane in lanes for c in lane] and 0.0)
    monkeypatch.setattr(demo, "prepare_data", lambda *args: tmp_path / "manifest.csv")
    monkeypatch.setattr(demo, "summarize", lambda *args: None)
    (tmp_path / "demo" / "report").mkdir(parents=True)  # where `main.analysis report` writes
    report = demo.main(["--out", str(tmp_path / "demo")])
    exports = tmp_path / "demo" / "exports"
    for name, source in (("diffae_demo", demo.PRETRAINED_DIFFAE), ("diffgen_demo", demo.PRETRAINED_DIFFGEN)):
        assert (exports / f"{name}.safetensors").read_bytes() == source.read_bytes()
        assert (exports / f"{name}.json").read_text() == source.with_suffix(".json").read_text()
    text = " ".join(" ".join(c) for c in commands)
    assert "main.preencode" not in text and "train.py" not in text
    generate = [c for c in commands if "generate" in c]
    assert len(generate) == 2 and all(str(exports / "diffgen_demo.safetensors") in c for c in generate)
    stages = report.read_text()
    assert "| DiffGen | 0 | – | 0.0 | pretrained/diffgen_demo.safetensors as it is |" in stages
    assert "Text adherence during training" not in stages  # no training, no learning curve
