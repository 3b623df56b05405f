"""Text labels for recordings, built from Xeno-canto metadata.

Two styles:

* ``simple`` (the seed's format): fields joined with ``"; "``, e.g.
  ``"Athene noctua; evening; week 10; 2019; Portugal; 18.2 seconds; 4 of 5; song; Carduelis carduelis"``
  (sci name; time of day; week; year; country; duration; quality; call types; background species).
  Missing or empty fields are left out (never ``"; ;"``). Each background species is its own part,
  call types stay one part joined with ``", "`` (``"call, song"``).
* ``natural``: a sentence, e.g.
  ``"A song of Turdus merula (Common Blackbird) recorded in Portugal in the evening"``.

A record is any mapping: a raw Xeno-canto API record (``gen``, ``sp``, ``en``, ``cnt``, ``q``, ``length``,
``also`` as a list, ...) or a manifest row (``sci_name``, ``en_name``, ``country``, ``quality``,
``duration``, ``also`` as a ``"; "``-joined string, ...). Manifest-style keys win when both are present.

Time of day from the ``time`` field (``"HH:MM"``): night [21:00, 05:00), morning [05:00, 12:00),
afternoon [12:00, 17:00), evening [17:00, 21:00). Week is the ISO week of ``date`` (``YYYY-MM-DD``);
Xeno-canto's unknown parts (``"2019-00-00"``, ``"?"``) give no week (and no year when the year is unknown).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

LABEL_STYLES: tuple[str, ...] = ("simple", "natural")
LABEL_FIELDS: tuple[str, ...] = (
    "sci_name",
    "en_name",
    "subspecies",
    "time_of_day",
    "week",
    "year",
    "country",
    "location",
    "duration",
    "quality",
    "type",
    "also",
)
DEFAULT_FIELDS: tuple[str, ...] = (
    "sci_name",
    "time_of_day",
    "week",
    "year",
    "country",
    "duration",
    "quality",
    "type",
    "also",
)
SEPARATOR = "; "
QUALITY_SCORES: dict[str, int] = {"A": 5, "B": 4, "C": 3, "D": 2, "E": 1}

_TIME_RE = re.compile(r"^\s*(\d{1,2})\s*[:.hH]\s*(\d{2})")
_DATE_RE = re.compile(r"^\s*(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?")
_LENGTH_RE = re.compile(r"^\s*(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)\s*$")
_UNKNOWN = {"", "?", "none", "nan", "null", "unknown", "no score", "n/a"}
# Xeno-canto's `type` also carries sex and life stage; the natural sentence names only the sound.
_NOT_SOUND_TYPES = {"male", "female", "sex uncertain", "adult", "juvenile", "immature", "nestling",
                    "life stage uncertain", "uncertain"}
_COUNTRIES_WITH_THE = {"Netherlands", "Philippines", "Gambia", "Bahamas", "Maldives", "Comoros", "Seychelles",
                       "Congo", "Vatican City"}


def _text(value: Any) -> str:
    """`value` as a stripped string; '' for None, NaN and Xeno-canto's unknown markers."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas-made CSVs
        return ""
    text = str(value).strip()
    return "" if text.lower() in _UNKNOWN else text


def _first(record: Mapping[str, Any], *keys: str) -> str:
    """The first non-empty text value among `keys` in `record`."""
    for key in keys:
        text = _text(record.get(key))
        if text:
            return text
    return ""


def parse_list(value: Any) -> list[str]:
    """A list of non-empty strings from a list, a JSON/Python list literal or a ';'/','-separated string."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items: Iterable[Any] = value
    else:
        text = _text(value)
        if not text:
            return []
        items = []
        if text.startswith("["):
            for parser in (json.loads, ast.literal_eval):
                try:
                    parsed = parser(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    items = parsed
                    break
            else:
                items = [part for part in re.split(r"[;,]", text.strip("[]"))]
        else:
            items = re.split(r";|,", text) if ";" in text or "," in text else [text]
    out = []
    for item in items:
        cleaned = _text(item).strip("'\"").strip()
        if cleaned and cleaned not in out:
            out.append(cleaned)
    return out


def sci_name_of(record: Mapping[str, Any]) -> str:
    """Scientific name: `sci_name`, else Xeno-canto `gen` + `sp`."""
    name = _first(record, "sci_name")
    if name:
        return name
    return " ".join(part for part in (_first(record, "gen"), _first(record, "sp")) if part)


def en_name_of(record: Mapping[str, Any]) -> str:
    """English name: `en_name`, else Xeno-canto `en`."""
    return _first(record, "en_name", "en")


def time_of_day(value: Any) -> str:
    """'morning', 'afternoon', 'evening' or 'night' from an 'HH:MM' time; '' when unknown."""
    text = _text(value).lower()
    if text in ("morning", "afternoon", "evening", "night"):
        return text
    match = _TIME_RE.match(text)
    if not match:
        return ""
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        return ""
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 21:
        return "evening"
    return "night"


def _date_parts(value: Any) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """(year, month, day) from a 'YYYY-MM-DD' date; unknown parts (0 or absent) are None."""
    match = _DATE_RE.match(_text(value))
    if not match:
        return None, None, None
    year, month, day = (int(g) if g else 0 for g in match.groups())
    return (year or None), (month if 1 <= month <= 12 else None), (day if 1 <= day <= 31 else None)


def year_of(value: Any) -> str:
    """The year of a 'YYYY-MM-DD' date as a string; '' when unknown."""
    year, _, _ = _date_parts(value)
    return str(year) if year else ""


def week_of(value: Any) -> str:
    """'week N' (ISO week) of a 'YYYY-MM-DD' date; '' when the day is unknown or invalid."""
    year, month, day = _date_parts(value)
    if not (year and month and day):
        return ""
    try:
        return f"week {dt.date(year, month, day).isocalendar()[1]}"
    except ValueError:
        return ""


def parse_length(value: Any) -> Optional[float]:
    """Seconds from Xeno-canto's 'm:ss' / 'h:mm:ss' length; None when unparsable."""
    match = _LENGTH_RE.match(_text(value))
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def duration_seconds(record: Mapping[str, Any]) -> Optional[float]:
    """Duration in seconds: the decoded `duration`, else Xeno-canto's `length`."""
    text = _text(record.get("duration"))
    if text:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and value == value and value >= 0:
            return value
    return parse_length(record.get("length"))


def quality_text(value: Any) -> str:
    """'N of 5' from a Xeno-canto quality grade A..E (A = 5 of 5); '' otherwise."""
    score = QUALITY_SCORES.get(_text(value).upper())
    return f"{score} of 5" if score else ""


def call_types(record: Mapping[str, Any]) -> list[str]:
    """Lower-cased call types ('song', 'call', ...) from the `type` field."""
    return [item.lower() for item in parse_list(record.get("type"))]


def background_species(record: Mapping[str, Any]) -> list[str]:
    """Background species (`also`) as a list of scientific names."""
    return parse_list(record.get("also"))


def field_parts(record: Mapping[str, Any], field: str) -> list[str]:
    """The label parts that one field contributes (0, 1 or several)."""
    getters: dict[str, Callable[[], list[str]]] = {
        "sci_name": lambda: [sci_name_of(record)],
        "en_name": lambda: [en_name_of(record)],
        "subspecies": lambda: [_first(record, "subspecies", "ssp")],
        "time_of_day": lambda: [time_of_day(record.get("time"))],
        "week": lambda: [week_of(record.get("date"))],
        "year": lambda: [year_of(record.get("date"))],
        "country": lambda: [_first(record, "country", "cnt")],
        "location": lambda: [_first(record, "location", "loc")],
        "duration": lambda: [_duration_text(record)],
        "quality": lambda: [quality_text(_first(record, "quality", "q"))],
        "type": lambda: [", ".join(call_types(record))],
        "also": lambda: background_species(record),
    }
    if field not in getters:
        raise ValueError(f"unknown label field {field!r}; choose from {', '.join(LABEL_FIELDS)}")
    return [part for part in getters[field]() if part]


def _duration_text(record: Mapping[str, Any]) -> str:
    """'18.2 seconds' or ''."""
    seconds = duration_seconds(record)
    return f"{seconds:.1f} seconds" if seconds is not None else ""


def simple_label(record: Mapping[str, Any], fields: Optional[Sequence[str]] = None) -> str:
    """The seed's label: the non-empty `fields` (default DEFAULT_FIELDS) joined with '; '."""
    parts: list[str] = []
    for field in DEFAULT_FIELDS if fields is None else fields:
        parts.extend(field_parts(record, field))
    return SEPARATOR.join(parts)


def _join_words(words: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _country_phrase(country: str) -> str:
    """'Portugal', 'the Netherlands', 'the United States', ..."""
    needs_the = (
        country in _COUNTRIES_WITH_THE
        or country.startswith(("United ", "Republic ", "Democratic Republic", "Central African"))
        or country.endswith((" Islands", " Republic", " Kingdom", " States", " Emirates"))
    )
    return f"the {country}" if needs_the and not country.lower().startswith("the ") else country


def natural_label(record: Mapping[str, Any]) -> str:
    """A sentence such as 'A song of Turdus merula (Common Blackbird) recorded in Portugal in the evening'."""
    types = [t for t in call_types(record) if t not in _NOT_SOUND_TYPES]
    what = _join_words(types) if types else "recording"
    article = "An" if what[0].lower() in "aeiou" else "A"
    subject = sci_name_of(record) or "an unknown species"
    en_name = en_name_of(record)
    if en_name and en_name.lower() != subject.lower():
        subject = f"{subject} ({en_name})"
    sentence = f"{article} {what} of {subject}"
    country = _first(record, "country", "cnt")
    tod = time_of_day(record.get("time"))
    if country or tod:
        sentence += " recorded"
        if country:
            sentence += f" in {_country_phrase(country)}"
        if tod:
            sentence += " at night" if tod == "night" else f" in the {tod}"
    background = background_species(record)
    if background:
        sentence += f", with {_join_words(background)} in the background"
    return sentence


def make_label(record: Mapping[str, Any], style: str = "simple", fields: Optional[Sequence[str]] = None) -> str:
    """The label of `record` in `style` ('simple' uses `fields`; 'natural' ignores them)."""
    if style == "simple":
        return simple_label(record, fields)
    if style == "natural":
        return natural_label(record)
    raise ValueError(f"unknown label style {style!r}; choose from {', '.join(LABEL_STYLES)}")
