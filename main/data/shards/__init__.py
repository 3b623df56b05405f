"""WebDataset-compatible tar shards for millions of clips, and a streaming dataset that reads them.

`format`: the folder layout, index.json and reading a shard; `writer`: `write_shards`
(``python -m main.data.shard``); `planning`: shards per (DDP rank, DataLoader worker) slot;
`dataset`: `ShardedAudioDataset` and `ShardedDataLoader`.
"""

from __future__ import annotations

from ..cli import parse_size
from .dataset import ShardedAudioDataset, ShardedDataLoader
from .format import (
    AUDIO_FORMATS,
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    SHARD_NAME,
    audio_member,
    decode_audio_member,
    iter_tar_samples,
    read_index,
    split_shards,
)
from .planning import UNEVEN_MODES, assign_shards, worker_quotas
from .writer import ShardReport, encode_clip, sample_key, write_shards

__all__ = [
    "AUDIO_FORMATS",
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "SHARD_NAME",
    "UNEVEN_MODES",
    "ShardReport",
    "ShardedAudioDataset",
    "ShardedDataLoader",
    "assign_shards",
    "audio_member",
    "decode_audio_member",
    "encode_clip",
    "iter_tar_samples",
    "parse_size",
    "read_index",
    "sample_key",
    "split_shards",
    "worker_quotas",
    "write_shards",
]
