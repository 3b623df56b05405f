"""Manifest preparation: labels, splits, Xeno-canto / Hugging Face inputs and file validation."""

from __future__ import annotations

import csv
import json
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from main.data import labels
from main.data.audio import REASONS, check_audio
from main.data.labels import make_label, natural_label, simple_label
from main.data.manifest import MANIFEST_COLUMNS, prepare_manifest, read_manifest
from main.data.prepare import main as prepare_main
from main.data.sources.metadata import xc_id_from_filename
from main.data.splits import assign_splits, split_counts

SR = 16000
MP3_OK = "MP3" in sf.available_formats()
OGG_OK = "OGG" in sf.available_formats()


def tone(seconds: float = 1.0, rate: int = SR, channels: int = 2, freq: float = 1000.0) -> np.ndarray:
    """A [frames, channels] sine at -10 dBFS."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def xc_record(rec_id: int, gen: str = "Turdus", sp: str = "merula", **extra: Any) -> dict[str, Any]:
    """A Xeno-canto API record."""
    record = {
        "id": str(rec_id), "gen": gen, "sp": sp, "ssp": "", "en": f"{gen} {sp} English", "cnt": "Portugal",
        "loc": "Lisbon", "lat": "38.7", "lng": "-9.1", "type": "song", "q": "A", "length": "0:01",
        "date": "2019-03-07", "time": "18:30", "also": [], "rec": "Someone", "lic": "//creativecommons.org/x",
        "url": f"//xeno-canto.org/{rec_id}", "file-name": "",
    }
    record.update(extra)
    return record


# ----------------------------------------------------------------------------- labels


SEED_RECORD = {
    "id": "1", "gen": "Athene", "sp": "noctua", "en": "Little Owl", "cnt": "Portugal", "time": "18:30",
    "date": "2019-03-07", "length": "0:18", "q": "B", "type": "song",
    "also": ["Carduelis carduelis", "Turdus merula"],
}


def test_simple_label_matches_the_seed_format() -> None:
    record = {**SEED_RECORD, "duration": 18.2}
    assert simple_label(record) == (
        "Athene noctua; evening; week 10; 2019; Portugal; 18.2 seconds; 4 of 5; song; "
        "Carduelis carduelis; Turdus merula"
    )
    assert make_label(record) == simple_label(record)
    # without a decoded duration the API length is used
    assert "18.0 seconds" in simple_label(SEED_RECORD)


def test_simple_label_leaves_missing_fields_out_cleanly() -> None:
    record = {"gen": "Athene", "sp": "noctua", "time": "?", "date": "2019-00-00", "cnt": "", "q": "no score",
              "type": "", "also": [""], "length": ""}
    assert simple_label(record) == "Athene noctua; 2019"
    assert simple_label({"gen": "", "sp": ""}) == ""
    label = simple_label({**SEED_RECORD, "cnt": None, "also": []})
    assert "; ;" not in label and not label.endswith("; ") and "Portugal" not in label


def test_label_fields_are_configurable() -> None:
    record = {**SEED_RECORD, "duration": 18.2}
    assert simple_label(record, ["sci_name", "en_name", "country"]) == "Athene noctua; Little Owl; Portugal"
    assert make_label(record, fields=["quality", "type"]) == "4 of 5; song"
    with pytest.raises(ValueError, match="unknown label field 'colour'"):
        simple_label(record, ["colour"])
    with pytest.raises(ValueError, match="unknown label style"):
        make_label(record, style="poem")


def test_natural_label() -> None:
    record = {"gen": "Turdus", "sp": "merula", "en": "Common Blackbird", "cnt": "Portugal", "time": "19:00",
              "type": "song"}
    assert natural_label(record) == "A song of Turdus merula (Common Blackbird) recorded in Portugal in the evening"
    assert make_label(record, style="natural") == natural_label(record)
    night = natural_label({**record, "time": "23:10", "type": "alarm call, song", "also": ["Strix aluco"]})
    assert night == ("An alarm call and song of Turdus merula (Common Blackbird) recorded in Portugal at night, "
                     "with Strix aluco in the background")
    assert natural_label({"sci_name": "Turdus merula"}) == "A recording of Turdus merula"
    uk = natural_label({"sci_name": "Turdus merula", "cnt": "United Kingdom", "type": "call, male, adult"})
    assert uk == "A call of Turdus merula recorded in the United Kingdom"


@pytest.mark.parametrize(
    ("time", "expected"),
    [("05:00", "morning"), ("11:59", "morning"), ("12:00", "afternoon"), ("16:59", "afternoon"),
     ("17:00", "evening"), ("20:59", "evening"), ("21:00", "night"), ("04:59", "night"), ("?", ""),
     ("25:00", ""), ("7.30", "morning")],
)
def test_time_of_day(time: str, expected: str) -> None:
    assert labels.time_of_day(time) == expected


def test_quality_and_lists() -> None:
    assert [labels.quality_text(q) for q in "ABCDE"] == [f"{n} of 5" for n in (5, 4, 3, 2, 1)]
    assert labels.quality_text("no score") == ""
    assert labels.parse_list("['A b', 'C d']") == ["A b", "C d"]
    assert labels.parse_list('["A b"]') == ["A b"]
    assert labels.parse_list("A b; C d") == ["A b", "C d"]
    assert labels.parse_list("call, song") == ["call", "song"]
    assert labels.parse_length("1:02:03") == 3723.0


# ----------------------------------------------------------------------------- splits


def _synthetic_ids(species: int, per_species: int, start: int = 0) -> tuple[list[str], list[str]]:
    """Recording ids and species names for a balanced toy set."""
    ids, names = [], []
    for s in range(species):
        for k in range(per_species):
            ids.append(f"{s}-{start + k}")
            names.append(f"species {s}")
    return ids, names


def test_splits_are_stratified_disjoint_and_deterministic() -> None:
    ids, species = _synthetic_ids(50, 40)
    ids += ["0-0", "0-0"]  # two rows of the same recording
    species += ["species 0", "species 0"]
    splits = assign_splits(ids, species, seed=3)
    assert splits == assign_splits(ids, species, seed=3)
    by_recording: dict[str, set[str]] = {}
    for rec, split in zip(ids, splits):
        by_recording.setdefault(rec, set()).add(split)
    assert all(len(s) == 1 for s in by_recording.values())
    counts = split_counts(splits)
    total = len(ids)
    assert abs(counts["train"] / total - 0.85) < 0.02
    assert abs(counts["valid"] / total - 0.10) < 0.02
    assert abs(counts["test"] / total - 0.05) < 0.02
    # order independent
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = assign_splits([ids[i] for i in order], [species[i] for i in order], seed=3)
    assert {ids[i]: s for i, s in zip(order, shuffled)} == dict(zip(ids, splits))
    assert splits != assign_splits(ids, species, seed=4)


def test_every_species_in_train_even_singletons() -> None:
    ids, species = _synthetic_ids(30, 1)
    more_ids, more_species = _synthetic_ids(5, 2, start=100)
    splits = assign_splits(ids + more_ids, species + more_species, seed=0)
    train_species = {sp for sp, s in zip(species + more_species, splits) if s == "train"}
    assert train_species == set(species + more_species)


def test_small_sets_still_get_a_validation_split() -> None:
    ids, species = _synthetic_ids(8, 4)
    for seed in range(10):
        counts = split_counts(assign_splits(ids, species, seed=seed))
        assert counts.get("valid", 0) >= 1 and counts.get("test", 0) >= 1
        assert counts["train"] >= 8


def test_splits_are_stable_when_recordings_are_added() -> None:
    ids, species = _synthetic_ids(40, 30)
    before = dict(zip(ids, assign_splits(ids, species, seed=1)))
    new_ids, new_species = _synthetic_ids(40, 3, start=1000)  # 10% more recordings
    after = dict(zip(ids + new_ids, assign_splits(ids + new_ids, species + new_species, seed=1)))
    moved = sum(before[i] != after[i] for i in ids)
    assert moved <= 0.08 * len(ids)
    # a new species leaves the others untouched
    extra = dict(zip(ids + ["new-1"], assign_splits(ids + ["new-1"], species + ["new species"], seed=1)))
    assert all(before[i] == extra[i] for i in ids)


def test_split_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(["a"], ["x"], fractions=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="2 species"):
        assign_splits(["a"], ["x", "y"])


# ----------------------------------------------------------------------------- validation


def _write_broken_set(root: Path) -> tuple[list[dict[str, Any]], dict[str, int], set[str]]:
    """Good files in every format plus one or two broken files per reason, with XC metadata."""
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    good: set[str] = set()
    rec_id = 100

    def add(name: str, writer: Any = None, matched_by_id: bool = False, **extra: Any) -> None:
        nonlocal rec_id
        rec_id += 1
        if writer is not None:
            writer(root / name)
        records.append(xc_record(rec_id, **({} if matched_by_id else {"file-name": name}), **extra))

    good_formats = [("wav", "WAV", None), ("flac", "FLAC", None)]
    if OGG_OK:
        good_formats.append(("ogg", "OGG", "VORBIS"))
    if MP3_OK:
        good_formats.append(("mp3", "MP3", "MPEG_LAYER_III"))
    for ext, fmt, subtype in good_formats:
        name = f"good-{ext}.{ext}"
        add(name, lambda p, f=fmt, s=subtype: sf.write(p, tone(), SR, format=f, subtype=s))
        good.add(name)
    # matched by the XC id in the file name, mono 48 kHz
    sf.write(root / f"XC{rec_id + 1}.flac", tone(rate=48000, channels=1), 48000)
    add("", matched_by_id=True, gen="Parus", sp="major")
    good.add(f"XC{rec_id}.flac")
    # quiet (-70 dBFS peak) but not silent
    add("quiet.wav", lambda p: sf.write(p, tone() * 10 ** (-60 / 20), SR, subtype="PCM_16"))
    good.add("quiet.wav")

    flac_bytes = (root / "good-flac.flac").read_bytes()
    add("truncated.flac", lambda p: p.write_bytes(flac_bytes[: len(flac_bytes) // 2]))
    corrupt = bytearray(flac_bytes)
    third = len(corrupt) // 3
    corrupt[third:third + 400] = np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes()
    add("garbage.flac", lambda p: p.write_bytes(bytes(corrupt)))
    add("zero.wav", lambda p: p.write_bytes(b""))
    add("no-frames.wav", lambda p: sf.write(p, np.zeros((0, 2), np.float32), SR))
    add("text.wav", lambda p: p.write_text("this is not audio\n" * 20))
    add("movie.m4a", lambda p: p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200)))
    add("silent.wav", lambda p: sf.write(p, np.zeros((SR, 2), np.float32), SR))
    add("long.flac", lambda p: sf.write(p, tone(seconds=3.0), SR))
    nan = tone()
    nan[100, 0] = np.nan
    add("nan.wav", lambda p: sf.write(p, nan, SR, subtype="FLOAT"))
    add("missing.mp3")  # record without a file
    # an audio file nobody describes
    sf.write(root / "stray.wav", tone(), SR)
    expected = {"corrupt": 2, "empty": 2, "unsupported": 2, "silent": 1, "too_long": 1, "non_finite": 1,
                "missing_file": 1}
    return records, expected, good


@pytest.fixture(scope="module")
def broken_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], dict[str, int], set[str]]:
    """A folder with good and broken recordings and an XC metadata page."""
    root = tmp_path_factory.mktemp("broken")
    records, expected, good = _write_broken_set(root)
    (root / "page1.json").write_text(json.dumps({"numRecordings": str(len(records)), "page": 1, "numPages": 1,
                                                 "recordings": records}))
    return root, records, expected, good


def test_prepare_counts_every_reason_exactly(broken_set: Any) -> None:
    root, records, expected, good = broken_set
    report = prepare_manifest(root, max_seconds=2.0)
    assert report.counts() == {reason: expected.get(reason, 0) for reason in REASONS}
    assert report.ok == len(good)
    assert report.total == len(records)
    assert report.no_metadata == 1 and report.unmatched_files[0].endswith("stray.wav")
    rows = read_manifest(report.manifest_path)
    assert {Path(r["file"]).name for r in rows} == good
    with open(report.manifest_path, newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames or ()) == MANIFEST_COLUMNS
    with open(report.rejected_path, newline="") as handle:
        rejected = list(csv.DictReader(handle))
    assert dict(Counter(r["reason"] for r in rejected)) == expected
    assert "rejected by reason" in report.summary()


def test_prepare_with_worker_pool_matches(broken_set: Any, tmp_path: Path) -> None:
    root, _, expected, _ = broken_set
    serial = prepare_manifest(root, max_seconds=2.0, output=tmp_path / "serial.csv")
    pooled = prepare_manifest(root, max_seconds=2.0, output=tmp_path / "pooled.csv", workers=2)
    assert pooled.counts() == serial.counts()
    assert (tmp_path / "serial.csv").read_text() == (tmp_path / "pooled.csv").read_text()


def test_supported_formats_decode(broken_set: Any) -> None:
    root, _, _, good = broken_set
    for name in good:
        check = check_audio(root / name)
        assert check.ok, (name, check)
        assert abs(check.duration - 1.0) < 0.06
    if not MP3_OK:
        pytest.skip("this libsndfile cannot write MP3")


def test_check_audio_reasons(tmp_path: Path) -> None:
    assert check_audio(tmp_path / "absent.wav").reason == "missing_file"
    sf.write(tmp_path / "lsb.wav", np.full((SR, 1), 1 / 32768, np.float32), SR, subtype="PCM_16")
    assert check_audio(tmp_path / "lsb.wav").reason == "silent"


# ----------------------------------------------------------------------------- metadata round trips


@pytest.fixture()
def xc_folder(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Four good recordings of two species with rich metadata."""
    root = tmp_path / "xc"
    root.mkdir()
    records = []
    for k, (gen, sp) in enumerate([("Turdus", "merula"), ("Turdus", "merula"), ("Parus", "major"), ("Parus", "major")]):
        rec_id = 5000 + k
        name = f"XC{rec_id}-{gen} {sp}.flac" if k % 2 else f"XC{rec_id}.flac"
        sf.write(root / name, tone(seconds=1.0 + 0.5 * k), SR)
        records.append(xc_record(rec_id, gen, sp, **{"file-name": name if k % 2 else "", "q": "BCDE"[k],
                                                      "time": ["06:00", "13:00", "18:00", "23:00"][k],
                                                      "also": ["Erithacus rubecula"] if k == 1 else [],
                                                      "type": "call, song" if k == 2 else "song"}))
    return root, records


def test_xc_json_to_manifest_to_labels_round_trip(xc_folder: Any) -> None:
    root, records = xc_folder
    (root / "page.json").write_text(json.dumps({"page": 1, "numPages": 1, "recordings": records}))
    report = prepare_manifest(root)
    assert report.ok == 4 and report.bad == 0 and report.species == 2
    rows = {r["id"]: r for r in read_manifest(report.manifest_path)}
    for k, record in enumerate(records):
        row = rows[record["id"]]
        assert row["duration"] == pytest.approx(1.0 + 0.5 * k, abs=1e-3)
        assert row["label"] == simple_label({**record, "duration": 1.0 + 0.5 * k})
        assert row["sci_name"] == f"{record['gen']} {record['sp']}"
        assert row["country"] == "Portugal" and row["quality"] == record["q"]
        assert Path(row["path"]).is_file() and not Path(row["file"]).is_absolute()
    assert rows["5001"]["also"] == "Erithacus rubecula"
    assert rows["5001"]["label"].endswith("; song; Erithacus rubecula")
    assert rows["5002"]["type"] == "call, song"
    assert rows["5000"]["url"] == "https://xeno-canto.org/5000"


def test_metadata_as_list_csv_and_natural_labels(xc_folder: Any, tmp_path: Path) -> None:
    root, records = xc_folder
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    (meta_dir / "list.json").write_text(json.dumps(records))
    with open(meta_dir / "records.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({**r, "also": json.dumps(r["also"])} for r in records)
    from_json = prepare_manifest(root, metadata=[meta_dir / "list.json"], output=tmp_path / "a.csv")
    from_csv = prepare_manifest(root, metadata=[meta_dir / "records.csv"], output=tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert from_json.ok == from_csv.ok == 4
    natural = prepare_manifest(root, metadata=[meta_dir / "list.json"], output=tmp_path / "n.csv",
                               label_style="natural")
    label = {r["id"]: r["label"] for r in read_manifest(natural.manifest_path)}["5003"]
    assert label == "A song of Parus major (Parus major English) recorded in Portugal at night"
    # paths are relative to the manifest's folder when inside it, absolute otherwise
    assert all(r["file"].startswith("xc/XC") for r in read_manifest(tmp_path / "a.csv"))
    elsewhere = prepare_manifest(root, metadata=[meta_dir / "list.json"], output=tmp_path / "out" / "c.csv")
    assert all(Path(r["file"]).is_absolute() for r in read_manifest(elsewhere.manifest_path))


def test_duplicate_records_and_reprepare_is_stable(xc_folder: Any) -> None:
    root, records = xc_folder
    (root / "p1.json").write_text(json.dumps({"recordings": records[:3]}))
    (root / "p2.json").write_text(json.dumps({"recordings": records[2:]}))
    first = prepare_manifest(root)
    assert first.duplicates == 1 and first.ok == 4
    text = first.manifest_path.read_text()
    again = prepare_manifest(root)  # the manifest itself is not read as metadata
    assert again.manifest_path.read_text() == text


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one source"):
        prepare_manifest()
    with pytest.raises(ValueError, match="no Xeno-canto metadata"):
        prepare_manifest(tmp_path)
    (tmp_path / "bad.json").write_text('{"foo": 1}')
    with pytest.raises(ValueError, match="without 'recordings'"):
        prepare_manifest(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "none.csv")


def test_xc_id_from_filename() -> None:
    assert xc_id_from_filename("XC12345.mp3") == "12345"
    assert xc_id_from_filename("xc-77 - Turdus merula.flac") == "77"
    assert xc_id_from_filename("12345.wav") == "12345"
    assert xc_id_from_filename("blackbird.wav") is None


# ----------------------------------------------------------------------------- Hugging Face datasets


class _FakeDataset:
    """The part of `datasets.Dataset` that prepare_manifest uses."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.column_names = list(rows[0])

    def select_columns(self, columns: list[str]) -> "_FakeDataset":
        return _FakeDataset([{c: r[c] for c in columns} for r in self.rows])

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]


def test_hf_dataset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", tone(), SR)
    sf.write(audio / "b.wav", tone(seconds=1.5), SR)
    rows = [
        {"file": str(audio / "a.wav"), "sci_name": "Turdus merula", "label": "a blackbird", "country": "Spain"},
        {"file": "../audio/b.wav", "sci_name": "Parus major", "label": 3, "country": "France"},
        {"file": str(audio / "gone.wav"), "sci_name": "Parus major", "label": "gone", "country": ""},
    ]
    saved = tmp_path / "hf"
    saved.mkdir()
    calls: list[str] = []

    def load_from_disk(path: str) -> dict[str, _FakeDataset]:
        calls.append(path)
        return {"train": _FakeDataset(rows[:2]), "test": _FakeDataset(rows[2:])}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_from_disk=load_from_disk))
    report = prepare_manifest(hf_dataset=saved, output=tmp_path / "hf.csv")
    assert calls == [str(saved)]
    assert report.ok == 2 and report.missing_file == 1
    by_name = {r["sci_name"]: r for r in read_manifest(tmp_path / "hf.csv")}
    assert by_name["Turdus merula"]["label"] == "a blackbird"  # a string label is kept
    assert by_name["Parus major"]["label"] == "Parus major; France; 1.5 seconds"  # a class id is not


def test_hf_dataset_without_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        prepare_manifest(hf_dataset=tmp_path)


# ----------------------------------------------------------------------------- CLI


def test_cli(xc_folder: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, records = xc_folder
    (root / "page.json").write_text(json.dumps({"recordings": records}))
    out = tmp_path / "cli.csv"
    assert prepare_main(["--audio-dir", str(root), "--output", str(out), "--quiet", "--seed", "1",
                         "--label-fields", "sci_name", "country"]) == 0
    assert "good: 4" in capsys.readouterr().out
    assert {r["label"] for r in read_manifest(out)} == {"Turdus merula; Portugal", "Parus major; Portugal"}
    assert prepare_main(["--audio-dir", str(tmp_path / "nowhere"), "--quiet"]) == 2
