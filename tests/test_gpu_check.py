"""benchmarks/gpu_check.py, the one command a lent GPU runs: its CPU mode (tiny models) prints the whole table, so
that the check does not break unseen between GPU loans; its 2-GPU DDP start composes a valid training config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of each line of the printed markdown table (its separator line left out)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in stdout.splitlines() if line.startswith("| ")]


@pytest.mark.slow
def test_cpu_mode_prints_one_table_with_every_row(tmp_path, capsys):
    status = gpu_check.main(["--cpu-tiny", "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert status == 0, out
    header, *rows = table_rows(out)
    assert header == list(gpu_check.COLUMNS)
    assert [row[0] for row in rows] == gpu_check.ROWS  # every row, once, in order: one table
    cells = {row[0]: row[1:] for row in rows}
    for name in gpu_check.ROWS[:-1]:  # each measurement ran: figures and a ratio, nothing failed or skipped
        assert cells[name][2].endswith("x") and float(cells[name][2][:-1]) > 0, (name, cells[name])
    assert all("steps/s" in cells[name][0] for name in gpu_check.ROWS[:4])
    assert all("real-time factor" in cells[name][1] for name in gpu_check.SAMPLE_ROWS)
    assert cells[gpu_check.DDP_ROW][0] == "skipped (no GPU)"
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == cells
    assert out.startswith("GPU check (cpu):")


def test_rows_not_started_within_the_budget_are_skipped():
    rows = gpu_check.run_checks("cpu", cpu_tiny=True, budget_s=-1.0, ddp_timeout_s=1.0)
    assert list(rows) == gpu_check.ROWS and all(cells[0].startswith("skipped (time budget") for cells in rows.values())
    assert gpu_check.table(rows).count("\n") == len(gpu_check.ROWS) + 1


def test_ddp_start_needs_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu_check.ddp_row("cuda", timeout_s=1.0)[0] == "skipped (1 GPU)"


def test_ddp_start_composes_a_two_gpu_training_config(tmp_path):
    from main.demo import compose_experiment

    command = gpu_check.ddp_command(tmp_path)
    assert command[1] == "train.py"
    cfg = compose_experiment([arg for arg in command[2:] if not arg.startswith("hydra.")])
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == ("gpu", 2, "ddp")
    assert cfg.trainer.max_steps == gpu_check.DDP_STEPS and cfg.callbacks.get("audio_preview") is None
