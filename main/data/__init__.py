"""Data: sources, the one audio path, manifests, synthetic songs, streamed (LitData) data sets, datasets and data modules.

Command lines (thin: argument parsing and one library call): `python -m main.data.download`,
`python -m main.data.prepare` and `python -m main.data.shard`, sharing `main.data.cli`; every other module
is library code. Heavy modules (torch, Lightning) load lazily, so `python -m main.data.prepare` and its
worker processes start fast.
"""

from __future__ import annotations

from main.lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "AudioCheck": "audio",
    "check_audio": "audio",
    "REASONS": "audio",
    "make_label": "labels",
    "simple_label": "labels",
    "natural_label": "labels",
    "assign_splits": "splits",
    "MANIFEST_COLUMNS": "manifest",
    "PrepareReport": "manifest",
    "prepare_manifest": "manifest",
    "read_manifest": "manifest",
    "SPECIES": "synthetic",
    "generate_synthetic_dataset": "synthetic",
    "AudioDataset": "dataset",
    "BirdSoundDataModule": "datamodule",
    "collate_audio": "dataset",
    "LatentDataModule": "latents",
    "PreencodedStore": "latents",
    "download_recordings": "sources.xenocanto",
    "StreamingAudioDataset": "streaming",
    "write_streaming_dataset": "streaming",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
