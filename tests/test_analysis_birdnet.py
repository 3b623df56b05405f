"""BirdNET through the official library (offline, LiteRT): identical to the library's own `predict`, cached,
embeddings that separate the synthetic species (kNN, FAD), and the sweep + report commands end to end."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from main.analysis.birdnet import INSTALL_HINT, birdnet_available

pytestmark = pytest.mark.skipif(not birdnet_available(), reason=f"BirdNET not installed ({INSTALL_HINT})")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three draws of the 10 synthetic species (3 + 3 + 1 clips each, 3 s, 32 kHz), a 7 s stereo 44.1 kHz
    recording, one BirdNet with a private cache that has scored all of them (in one batch)."""
    from main.analysis.birdnet import BirdNet
    from main.analysis.clips import clips_from_manifest
    from main.data.synthetic import generate_synthetic_dataset, synthesize_recording

    root = tmp_path_factory.mktemp("birdnet")
    draws = {}
    for name, seed, per_species in (("a", 0, 3), ("b", 1, 3), ("c", 2, 1)):
        manifest = generate_synthetic_dataset(root / name, clips_per_species=per_species, duration_s=3.0,
                                              sample_rate=32000, seed=seed)
        draws[name] = clips_from_manifest(manifest, None, name=name)
    long_file = root / "long.wav"
    sf.write(str(long_file), synthesize_recording(3, np.random.default_rng(5), 7.0, 44100, 2), 44100)
    birdnet = BirdNet(cache_dir=root / "cache", show_progress=False)
    everything = [p for clips in draws.values() for p in clips.paths] + [str(long_file)]
    scores = birdnet.score(everything)
    return {"root": root, "draws": draws, "long": str(long_file), "birdnet": birdnet, "scores": scores}


def _library_model():
    import birdnet

    from main.analysis.birdnet import model_files

    model, labels = model_files()
    return birdnet.load_custom("acoustic", "2.4", "tf", model, labels, library="litert")


def test_confidences_and_embeddings_equal_the_librarys_own_calls(data):
    model = _library_model()
    ours = data["scores"].select([data["long"]])
    assert ours.chunks.tolist() == [3]  # 7 s -> 3 s + 3 s + 1 s (padded)
    prediction = model.predict([data["long"]], top_k=None, default_confidence_threshold=None, n_workers=1)
    per_chunk = np.zeros((prediction.species_probs.shape[1], len(prediction.species_list)), dtype=np.float32)
    for chunk in range(per_chunk.shape[0]):
        assert not prediction.species_masked[0, chunk].all()
        per_chunk[chunk, prediction.species_ids[0, chunk]] = prediction.species_probs[0, chunk]
    assert np.array_equal(ours.confidences[0], per_chunk.max(axis=0))
    assert [s.split("_")[0] for s in prediction.species_list] == ours.sci_names
    encoding = model.encode([data["long"]], n_workers=1)
    np.testing.assert_allclose(ours.embeddings[0], encoding.embeddings[0].mean(axis=0), rtol=1e-6, atol=1e-7)
    assert ours.confidences.min() >= 3.0e-7 and ours.confidences.max() <= 1.0


def test_files_of_mixed_length_in_one_call_equal_scoring_them_one_by_one(data, tmp_path):
    """The library pads short files with masked chunks whose species ids are placeholders (> 6522); 7 s, 5 s and
    2.5 s recordings scored together must equal each scored alone (this used to raise IndexError)."""
    from main.analysis.birdnet import BirdNet
    from main.data.synthetic import synthesize_recording

    paths = []
    for species, seconds in ((0, 7.0), (4, 5.0), (9, 2.5)):
        path = tmp_path / f"mixed_{species}.wav"
        sf.write(str(path), synthesize_recording(species, np.random.default_rng(species), seconds, 32000, 2), 32000)
        paths.append(str(path))
    together = BirdNet(cache_dir=tmp_path / "together", show_progress=False).score(paths)
    assert together.chunks.tolist() == [3, 2, 1]
    alone = BirdNet(cache_dir=tmp_path / "alone", show_progress=False)
    for i, path in enumerate(paths):
        single = alone.score([path])
        np.testing.assert_allclose(together.confidences[i], single.confidences[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.embeddings[i], single.embeddings[0], rtol=1e-5, atol=1e-6)


def test_dense_confidences_ignores_masked_placeholder_ids():
    from main.analysis.birdnet import dense_confidences

    ids = np.array([[[2, 0, 1], [65535, 61793, 7]]])  # second chunk: padding, placeholder ids
    probs = np.array([[[0.9, 0.5, 0.1], [0.0, 0.0, 0.0]]], dtype=np.float32)
    masked = np.array([[[False, False, False], [True, True, True]]])
    dense, chunk_mask = dense_confidences(ids, probs, masked)
    assert chunk_mask.tolist() == [[False, True]]
    np.testing.assert_allclose(dense[0, 0], [0.5, 0.1, 0.9])
    np.testing.assert_array_equal(dense[0, 1], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="species ids"):
        dense_confidences(np.array([[[5]]]), np.array([[[0.5]]], dtype=np.float32), np.array([[[False]]]))


def test_results_are_cached_by_file_content(data, tmp_path):
    birdnet, a = data["birdnet"], data["draws"]["a"]
    copy = tmp_path / "renamed.flac"
    shutil.copy(a.paths[0], copy)
    calls = birdnet.library_calls
    again = birdnet.score([a.paths[1], str(copy), a.paths[0]])
    assert birdnet.library_calls == calls  # nothing recomputed, not even for the renamed copy
    first = data["scores"].select([a.paths[1], a.paths[0], a.paths[0]])
    assert np.array_equal(again.confidences[[0, 1, 2]], first.confidences)
    assert np.array_equal(again.embeddings, first.embeddings)


def test_knn_on_birdnet_embeddings_separates_synthetic_species(data):
    from main.analysis.knn import knn_classify

    a, b = data["draws"]["a"], data["draws"]["b"]
    ref, query = data["scores"].select(a.paths), data["scores"].select(b.paths)
    result = knn_classify(ref.embeddings, a.species, query.embeddings, b.species, k=3)
    assert result.n_query == 30 and len(result.species) == 10
    assert result.accuracy >= 0.9  # measured 1.0 (held-out draw, k=3); chance is 0.1


def test_birdnet_fad_same_species_far_below_different_species(data):
    from main.analysis.fad import fad_from_embeddings

    a, b = data["draws"]["a"], data["draws"]["b"]
    first = sorted(set(a.species))[:5]
    pick = lambda clips, keep: [p for p, s in zip(clips.paths, clips.species) if (s in first) == keep]  # noqa: E731
    emb = lambda paths: data["scores"].select(paths).embeddings  # noqa: E731
    same = fad_from_embeddings(emb(pick(a, True)), emb(pick(b, True)))
    different = fad_from_embeddings(emb(pick(a, True)), emb(pick(b, False)))
    assert same["n_a"] == same["n_b"] == 15 and same["dim"] == 1024 and same["singular"]
    assert same["fad"] < 0.3 * different["fad"]  # measured: 55 vs 367


def _manifest_with_splits(data, path):
    """A manifest over draws a (train) and b (test) with absolute paths."""
    from main.data.manifest import read_manifest

    rows = []
    for name, split in (("a", "train"), ("b", "test")):
        for row in read_manifest(data["root"] / name / "manifest.csv"):
            rows.append({**row, "file": row["path"], "split": split})
    columns = [c for c in rows[0] if c != "path"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.slow
def test_sweep_and_report_end_to_end(data, tmp_path, tiny_exports):
    from main.analysis.clips import write_clips_csv
    from main.analysis.report import write_report
    from main.analysis.sweep import run_sweep

    manifest = _manifest_with_splits(data, tmp_path / "manifest.csv")
    birdnet = data["birdnet"]
    sweep_args = dict(out_dir=tmp_path / "sweep", diffae=tiny_exports["diffae"], diffgen=tiny_exports["diffgen"],
                      manifest=manifest, per_species=None, num=3, cfg_scales=[1.0, 5.0], steps=[2],
                      seconds=0.5, batch_size=3, device="cpu", reference_per_species=None, birdnet=birdnet,
                      show_progress=False)
    table = run_sweep(**sweep_args)
    assert [r["setting"] for r in table] == ["cfg1_steps2_ddim", "cfg5_steps2_ddim"]
    for row in table:
        assert row["n_clips"] == 3 and row["n_knn_reference"] == 30 and row["n_fad_birdnet_test"] == 30
        assert 0.0 <= row["knn_top1"] <= 1.0 and row["fad_logmel"] > 0
        assert row["macro_ap"] is None  # the synthetic species are not BirdNET labels
    assert (tmp_path / "sweep/sweep.csv").is_file()
    calls = birdnet.library_calls
    assert run_sweep(**sweep_args) == table  # resumed: nothing generated or scored again
    assert birdnet.library_calls == calls

    # "Generated" clips: the third draw of real synthetic songs (one per species), as `generate` lays them out.
    generated = tmp_path / "generated"
    generated.mkdir()
    c = data["draws"]["c"]
    rows = []
    for i, (path, species) in enumerate(zip(c.paths, c.species)):
        shutil.copy(path, generated / f"{i:05d}.flac")
        rows.append({"file": f"{i:05d}.flac", "label": species, "sci_name": species, "seed": i, "source": ""})
    write_clips_csv(generated, rows)
    report = write_report(tmp_path / "report", generated, manifest, sweep=tmp_path / "sweep", birdnet=birdnet,
                          reference_per_species=None, spectrograms=3, show_progress=False)
    text = report.read_text()
    for png in ("per_species.png", "sweep.png", "spectrograms.png", "confusion.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
        assert f"]({png})" in text
    assert "| generated | 10 |" in text and "| real test | 30 |" in text and "| real train | 30 |" in text
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())["results"]
    assert metrics["generated"]["knn"]["accuracy"] >= 0.9  # real songs of each species: near-perfect
    assert metrics["generated"]["birdnet"]["coverage"]["species_known"] == 0
    assert metrics["generated"]["fad"]["birdnet"]["n_a"] == 10
    assert metrics["real train"]["fad"]["logmel"]["fad"] < metrics["generated"]["fad"]["logmel"]["fad"] * 10
    # fidelity of every set against the real reference clips; real songs are near the real-vs-real floor
    for name in ("generated", "real test", "real train"):
        fidelity = metrics[name]["fidelity"]
        assert fidelity["clipped_fraction"] == 0.0 and fidelity["rhythm_n_species"] == 10
    assert metrics["real train"]["fidelity"]["fad_birdnet_ratio"] == pytest.approx(1.0)  # itself: the floor
    assert 0.2 < metrics["generated"]["fidelity"]["fad_birdnet_ratio"] < 3.0
    assert metrics["real test"]["fidelity"]["fad_birdnet_ratio"] is None  # the test clips have no distance to themselves
    assert "FAD BirdNET / floor" in text


def test_scoring_leaves_no_session_logs_in_the_temporary_directory(data, tmp_path, monkeypatch):
    """The library writes a log file per session to the temporary directory and keeps it; scoring removes them."""
    import tempfile

    from main.analysis.birdnet import BirdNet

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    birdnet = BirdNet(cache_dir=tmp_path / "cache", show_progress=False)  # nothing cached: the library runs
    scores = birdnet.score([data["draws"]["c"].paths[0]])
    assert birdnet.library_calls > 0 and scores.embeddings.shape[0] == 1
    assert sorted(p.name for p in temporary.iterdir()) == []
    assert tempfile.tempdir == str(temporary)
