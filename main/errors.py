"""Errors shared across layers: a configuration mistake, raised wherever it is found (start-up checks, loaders)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""
