"""Streaming data sets on LitData for millions of clips: writing (`litdata.optimize`) and streaming them.

`format`: the layout (one LitData dataset per split, dataset.json) and decoding a stored sample;
`writer`: `write_streaming_dataset` (``python -m main.data.shard``); `dataset`: `StreamingAudioDataset`
and `StreamingAudioLoader` (local folders or ``s3://`` URLs, split over ranks and workers, resumable).
"""

from __future__ import annotations

from ..cli import parse_size
from .dataset import StreamingAudioDataset, StreamingAudioLoader
from .format import (
    AUDIO_FORMATS,
    DATASET_FILE,
    DATASET_FORMAT,
    DATASET_VERSION,
    check_split,
    decode_item,
    is_url,
    read_dataset_info,
    split_location,
)
from .writer import StreamReport, encode_pcm16, sample_key, write_streaming_dataset

__all__ = [
    "AUDIO_FORMATS",
    "DATASET_FILE",
    "DATASET_FORMAT",
    "DATASET_VERSION",
    "StreamReport",
    "StreamingAudioDataset",
    "StreamingAudioLoader",
    "check_split",
    "decode_item",
    "encode_pcm16",
    "is_url",
    "parse_size",
    "read_dataset_info",
    "sample_key",
    "split_location",
    "write_streaming_dataset",
]
