"""The `sweep`, `evaluate` and `report` commands without BirdNET (log-mel FAD only): they run wherever the
project installs, and the command lines map onto the functions."""

from __future__ import annotations

import json
import shutil

import pytest

from main.analysis.cli import main as analysis_main
from main.analysis.clips import write_clips_csv
from main.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """10 synthetic species x 3 clips of 3 s at 32 kHz (its test split holds a few of them)."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), clips_per_species=3, duration_s=3.0,
                                      sample_rate=32000)


def test_sweep_evaluate_and_report_commands_without_birdnet(tmp_path, manifest, tiny_exports):
    sweep_dir = tmp_path / "sweep"
    table = analysis_main(["sweep", "--diffae", str(tiny_exports["diffae"]), "--diffgen",
                           str(tiny_exports["diffgen"]), "--manifest", str(manifest), "--split", "train",
                           "--num", "2", "--cfg-scales", "1", "3", "--steps", "2", "--samplers", "ddim", "dpmpp-2m",
                           "--seconds", "0.5", "--device", "cpu", "--reference-split", "none", "--no-birdnet",
                           "--out", str(sweep_dir)])
    assert [r["setting"] for r in table] == ["cfg1_steps2_ddim", "cfg3_steps2_ddim", "cfg1_steps2_dpmpp-2m",
                                             "cfg3_steps2_dpmpp-2m"]
    assert all(r["n_clips"] == 2 and r["fad_logmel"] > 0 and r["knn_top1"] is None for r in table)
    saved = json.loads((sweep_dir / "sweep.json").read_text())
    assert saved["settings"]["birdnet"] is False and len(saved["rows"]) == 4

    # Real synthetic songs stand in for generated clips (one per species, from the train split).
    from main.data.manifest import read_manifest

    generated = tmp_path / "generated"
    generated.mkdir()
    rows, seen = [], set()
    for row in read_manifest(manifest, "train"):
        if row["sci_name"] in seen:
            continue
        seen.add(row["sci_name"])
        name = f"{len(rows):05d}.flac"
        shutil.copy(row["path"], generated / name)
        rows.append({"file": name, "label": row["label"], "sci_name": row["sci_name"], "seed": 0,
                     "source": row["file"]})
    write_clips_csv(generated, rows)

    results = analysis_main(["evaluate", "--clips", str(generated), "--manifest", str(manifest), "--no-birdnet",
                             "--reference-split", "none", "--json", str(tmp_path / "eval.json")])
    assert results[str(generated)]["fad"]["logmel"]["clips_a"] == len(rows)
    assert json.loads((tmp_path / "eval.json").read_text())

    report = analysis_main(["report", "--generated", str(generated), "--manifest", str(manifest), "--no-birdnet",
                            "--reference-split", "none", "--sweep", str(sweep_dir), "--spectrograms", "2",
                            "--out", str(tmp_path / "report")])
    text = report.read_text()
    assert "| generated | 10 |" in text and "FAD log-mel" in text
    for png in ("sweep.png", "spectrograms.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000 and f"]({png})" in text
    assert not (tmp_path / "report/per_species.png").exists()  # no BirdNET, no kNN: nothing per species
