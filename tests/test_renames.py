"""One name per concept (main/renames.py): `sampling_steps`, `decoding_steps`, `embedding_scale` in the command
lines and the analysis API, the old names still accepted (flags hidden, keywords with a DeprecationWarning)."""

from __future__ import annotations

import pytest

from main.analysis.cli import build_parser
from main.analysis.generate import generate_clips, load_sampler, reconstruct_clips
from main.analysis.sweep import run_sweep
from main.sample import main as sample_main

COMMON = {
    "generate": ["generate", "--diffae", "a", "--diffgen", "b", "--manifest", "m.csv", "--out", "o"],
    "reconstruct": ["reconstruct", "--diffae", "a", "--manifest", "m.csv", "--out", "o"],
    "sweep": ["sweep", "--diffae", "a", "--diffgen", "b", "--manifest", "m.csv", "--out", "o"],
}
# (subcommand, old flags, the same with the new flags)
FLAGS = [
    ("generate", ["--steps", "7", "--cfg", "2.5"], ["--sampling-steps", "7", "--embedding-scale", "2.5"]),
    ("reconstruct", ["--steps", "7"], ["--decoding-steps", "7"]),
    ("sweep", ["--cfg-scales", "1", "3", "--steps", "4", "8"],
     ["--embedding-scales", "1", "3", "--sampling-steps", "4", "8"]),
]


@pytest.mark.parametrize("command,old,new", FLAGS)
def test_old_analysis_flags_parse_as_the_new_ones_and_stay_out_of_the_help(command, old, new, capsys):
    parser = build_parser()
    assert parser.parse_args([*COMMON[command], *old]) == parser.parse_args([*COMMON[command], *new])
    defaults = vars(parser.parse_args(COMMON[command]))  # the hidden alias does not hide the new flag's default
    assert all(defaults[f.lstrip("-").replace("-", "_")] is not None for f in new if f.startswith("--"))
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    shown = capsys.readouterr().out
    assert all(flag in shown for flag in new if flag.startswith("--"))
    assert not any(f"{flag} " in shown for flag in old if flag.startswith("--"))


def test_old_sample_flags_write_the_same_clip(tmp_path, tiny_exports):
    common = ["--diffae", str(tiny_exports["diffae"]), "--diffgen", str(tiny_exports["diffgen"]), "--prompt",
              "Synthia fluvialis", "--seconds", "0.25", "--device", "cpu"]
    old = sample_main([*common, "--steps", "2", "--cfg", "2.5", "--out", str(tmp_path / "old")])
    new = sample_main([*common, "--sampling-steps", "2", "--embedding-scale", "2.5", "--out", str(tmp_path / "new")])
    assert [p.read_bytes() for p in old] == [p.read_bytes() for p in new]


def test_old_keywords_work_with_a_deprecation_warning(tmp_path, tiny_exports):
    model, _ = load_sampler(tiny_exports["diffae"], tiny_exports["diffgen"], device="cpu")
    rows = [{"label": "Synthia fluvialis", "sci_name": "Synthia fluvialis", "file": ""}]
    common = {"seconds": 0.25, "show_progress": False}
    generate_clips(tmp_path / "new", model, rows, sampling_steps=2, embedding_scale=2.5, **common)
    with pytest.warns(DeprecationWarning, match="'steps' is now 'sampling_steps'"):
        generate_clips(tmp_path / "old", model, rows, steps=2, cfg_scale=2.5, **common)
    files = [sorted((tmp_path / name).glob("*.wav")) for name in ("new", "old")]
    assert [p.read_bytes() for p in files[0]] == [p.read_bytes() for p in files[1]]
    # the other renamed functions: old and new names together are refused before any work
    with pytest.raises(TypeError, match="both 'steps'"):
        reconstruct_clips(tmp_path / "r", tiny_exports["diffae"], rows, steps=2, decoding_steps=2)
    with pytest.raises(TypeError, match="both 'cfg_scales'"):
        run_sweep(tmp_path / "s", "a", "b", "m.csv", cfg_scales=[1.0], embedding_scales=[1.0])
