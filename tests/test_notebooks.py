"""The notebooks in notebooks/ run top to bottom (nbclient, a real Jupyter kernel) on the tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from main.data.manifest import read_manifest
from main.data.synthetic import generate_synthetic_dataset
from tests.conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def run_notebook(name: str, env: dict[str, str], timeout: int = 600) -> nbformat.NotebookNode:
    """Execute notebooks/<name> in a fresh kernel with `env` set; returns the executed notebook."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(book, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return book


def outputs(book: nbformat.NotebookNode, kind: str) -> list:
    """Every output of `kind` ('stream', 'display_data', ...) of the executed notebook."""
    return [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if o.output_type == kind]


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_stored_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in book.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_generate_notebook_plays_and_plots(tiny_exports):
    book = run_notebook("generate.ipynb", {
        "NOTEBOOK_DIFFAE": str(tiny_exports["diffae"]), "NOTEBOOK_DIFFGEN": str(tiny_exports["diffgen"]),
        "NOTEBOOK_SECONDS": "0.5", "NOTEBOOK_STEPS": "2", "BIRD_DIFFUSION_ROOT": str(ROOT)})
    shown = [o.get("data", {}) for o in outputs(book, "display_data")]
    assert sum("text/html" in d and "<audio" in d["text/html"] for d in shown) == 3  # one player per prompt
    assert any("image/png" in d for d in shown)  # the spectrograms


@pytest.mark.slow
def test_evaluate_notebook_scores_generated_clips(tiny_exports, tmp_path):
    manifest = generate_synthetic_dataset(tmp_path / "data", clips_per_species=3, duration_s=3.0, sample_rate=16000)
    book = run_notebook("evaluate.ipynb", {
        "NOTEBOOK_DIFFAE": str(tiny_exports["diffae"]), "NOTEBOOK_DIFFGEN": str(tiny_exports["diffgen"]),
        "NOTEBOOK_MANIFEST": str(manifest), "NOTEBOOK_OUT": str(tmp_path / "eval"), "NOTEBOOK_PER_SPECIES": "1",
        "NOTEBOOK_SECONDS": "3", "NOTEBOOK_STEPS": "2", "BIRD_DIFFUSION_ROOT": str(ROOT)})
    text = "".join(o.get("text", "") for o in outputs(book, "stream"))
    assert "latent species top-1, generated" in text and "kNN species top-1" in text
    assert (tmp_path / "eval/confusion.png").is_file()
    test_species = {r["sci_name"] for r in read_manifest(manifest, "test")}
    assert len(list((tmp_path / "eval/generated").glob("*.wav"))) == len(test_species) > 0  # one per species
