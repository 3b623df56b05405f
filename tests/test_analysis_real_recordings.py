"""`python -m main.analysis evaluate` on recordings as the packaged real-recordings source lays them out: files of
mixed lengths (0.4 s to 7.3 s, so one BirdNET call pads the shorter ones with masked chunks), sample rates (16 to
44.1 kHz) and channel counts, scored in one batch; and benchmarks/birdnet_top1_per_file.py on the same folder."""

from __future__ import annotations

import json
import math
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from main.analysis.birdnet import INSTALL_HINT, birdnet_available
from tests.conftest import ROOT
from tests.test_data_packaged import STAND_IN, WHEEL, NoNetwork, build_stand_in

pytestmark = pytest.mark.skipif(not birdnet_available(), reason=f"BirdNET not installed ({INSTALL_HINT})")


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """The stand-in wheel prepared by the packaged source, plus a copy of its manifest with every recording in the
    test split (so that `evaluate` compares the folder with itself: BirdNET metrics, no FAD to wait for)."""
    from main.data.manifest import MANIFEST_COLUMNS, read_manifest
    from main.data.sources.packaged import load_registry, prepare_packaged
    from main.files import write_csv_atomic

    root = tmp_path_factory.mktemp("real")
    registry_path, wheel = build_stand_in(root / "stand_in")
    (root / "cache").mkdir()
    shutil.copy(wheel, root / "cache" / WHEEL)
    _, prepared = prepare_packaged(root / "out", root / "cache", load_registry(registry_path), NoNetwork())
    rows = [{**row, "split": "test"} for row in read_manifest(prepared.manifest_path)]
    write_csv_atomic(root / "out" / "all_test.csv", rows, MANIFEST_COLUMNS)
    return root


def test_evaluate_scores_mixed_lengths_and_rates_in_one_batch(real_folder):
    from main.analysis.birdnet import BirdNet
    from main.analysis.cli import main as analysis_main
    from main.analysis.clips import clips_from_folder

    out, cache = real_folder / "out", real_folder / "birdnet"
    results = analysis_main(["evaluate", "--clips", str(out), "--manifest", str(out / "all_test.csv"),
                             "--split", "test", "--reference-split", "none", "--cache-dir", str(cache),
                             "--no-logmel", "--json", str(real_folder / "eval.json")])
    entry = results[str(out)]
    expected_chunks = [max(1, math.ceil(seconds / 3.0)) for *_, seconds, _ in STAND_IN]  # 1, 3, 1, 2
    assert entry["n_clips"] == 4 and entry["birdnet"]["n_clips_known"] == 4
    assert entry["birdnet"]["mean_chunks"] == pytest.approx(np.mean(expected_chunks))
    assert 0.0 <= entry["birdnet"]["top1"] <= entry["birdnet"]["top5"] <= 1.0
    assert {name: e["n"] for name, e in entry["birdnet"]["per_species"].items()} == {
        "Parus major": 2, "Taeniopygia guttata": 2}
    assert json.loads((real_folder / "eval.json").read_text())[str(out)]["n_clips"] == 4

    clips = clips_from_folder(out)
    birdnet = BirdNet(cache_dir=cache, show_progress=False)
    together = birdnet.score(clips.paths)  # from evaluate's cache: one batch of all four, padded to 3 chunks
    assert birdnet.library_calls == 0
    by_name = {Path(p).name: i for i, p in enumerate(together.paths)}
    for path, *_, seconds, _ in STAND_IN:
        assert together.chunks[by_name[f"fakebirds_{Path(path).name}"]] == max(1, math.ceil(seconds / 3.0))
    short = str(out / "audio" / "fakebirds_call_1.wav")  # 0.4 s at 32 kHz: two padding chunks in the batch
    alone = BirdNet(cache_dir=real_folder / "alone", show_progress=False).score([short])
    row = together.paths.index(short)
    np.testing.assert_allclose(alone.confidences[0], together.confidences[row], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone.embeddings[0], together.embeddings[row], rtol=1e-5, atol=1e-6)


def test_top1_per_file_lists_every_file_with_its_provenance(real_folder, capsys):
    out = real_folder / "out"
    script = runpy.run_path(str(ROOT / "benchmarks" / "birdnet_top1_per_file.py"))
    result = script["main"](["--clips", str(out), "--cache-dir", str(real_folder / "birdnet")])
    printed = capsys.readouterr().out
    assert len(result["rows"]) == 4 and all(row["package"] == "fakebirds" for row in result["rows"])
    assert {row["file"]: row["chunks"] for row in result["rows"]} == {
        "fakebirds_call_1.wav": 1, "fakebirds_song_1.wav": 1, "fakebirds_song_2.flac": 3, "fakebirds_song_3.flac": 2}
    overall = result["summary"]["overall"]
    assert overall["n"] == 4 and 0.0 <= overall["ci95"][0] <= overall["rate"] <= overall["ci95"][1] <= 1.0
    assert "| fakebirds | 1.0 | MIT | *Parus major* | `fakebirds/data/tit/song_1.wav` |" in printed
