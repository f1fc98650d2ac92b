"""What a ``%%remote`` cell asks of the scheduler: memory, cpus, gpus, time, queue.

Values arrive as text from the magic line or a TOML config and are parsed once
here, so every scheduler renders the same numbers: sizes become bytes, times
become seconds. Sizes are binary, as PBS Pro and Slurm read them
(``1GB`` is 2**30 bytes). Bad input raises ``ResourceError`` naming the option
as the user typed it, the value, and the forms that are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from fractions import Fraction
from functools import partial
from typing import Any, Callable, Iterable

from ..errors import ResourceError

_SIZE_HINT = "use a number and a unit, e.g. 512MB, 8GB, 1.5GB (binary units: 1GB = 1024 MB)"
_TIME_HINT = "use HH:MM:SS (e.g. 2:00:00), MM:SS, D-HH:MM:SS, or 90m, 2h, 1h30m, 45s"

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-z]*)", re.ASCII | re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1} | {
    letter + suffix: 1024**power for power, letter in enumerate("kmgt", start=1) for suffix in ("", "b", "ib")
}

_CLOCK_TIME = re.compile(r"(?:([0-9]+)-)?([0-9]+):([0-9]{1,2})(?::([0-9]{1,2}))?", re.ASCII)
_UNIT_TIME = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", re.ASCII | re.IGNORECASE)

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", re.ASCII)
_QUEUE_OR_PROJECT = re.compile(r"[A-Za-z0-9_.+-]{1,64}", re.ASCII)
_STORAGE_ITEM = re.compile(r"[a-z_]+/[A-Za-z0-9_]+", re.ASCII)
_NAME_RULE = "use a letter, then up to 63 letters, digits, '_', '.' or '-', e.g. fit_model-2"
_QUEUE_RULE = "use 1 to 64 letters, digits, '_', '.', '+' or '-', e.g. normal"
_PROJECT_RULE = "use 1 to 64 letters, digits, '_', '.', '+' or '-', e.g. a56"


def _quoted(value: object) -> str:
    return repr(str(value))


def parse_size(text: str | int, option: str = "size") -> int:
    """Return the number of bytes in ``text`` ("8GB", "1.5 GiB", "512m", 4096).

    Units are B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, any case, all binary;
    no unit means bytes, and an int is a byte count. A fraction of a byte is
    rounded down; the result must be at least one byte.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        nbytes = text
    else:
        match = _SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None or match[2].lower() not in _SIZE_FACTORS:
            raise ResourceError(f"{option} {_quoted(text)} is not a size: {_SIZE_HINT}")
        nbytes = int(Fraction(match[1]) * _SIZE_FACTORS[match[2].lower()])
    if nbytes < 1:
        raise ResourceError(f"{option} {_quoted(text)} must be at least 1 byte: {_SIZE_HINT}")
    return nbytes


def parse_walltime(text: str | int, option: str = "walltime") -> int:
    """Return the number of seconds in ``text`` ("2:00:00", "1-12:00:00", "1h30m", 5400).

    A bare number in text is refused, because PBS reads it as seconds and
    Slurm as minutes; an int (from Python or TOML) is seconds.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    else:
        stripped = text.strip() if isinstance(text, str) else ""
        if stripped.isascii() and stripped.isdigit():
            seconds = int(stripped)
            if seconds > 0:
                raise ResourceError(
                    f"{option} {_quoted(text)} is ambiguous: PBS reads a bare number as seconds and Slurm as "
                    f"minutes; write {seconds}m for {seconds} minutes or {format_walltime(seconds)} for {seconds} seconds"
                )
        else:
            seconds = _seconds_in(stripped)
            if seconds is None:
                raise ResourceError(f"{option} {_quoted(text)} is not a time: {_TIME_HINT}")
    if seconds < 1:
        raise ResourceError(f"{option} {_quoted(text)} must be more than zero: {_TIME_HINT}")
    return seconds


def _seconds_in(text: str) -> int | None:
    """Seconds in a clock form ("1-02:00:00", "2:00:00", "1:30") or unit form ("1h30m"); None if neither."""
    if clock := _CLOCK_TIME.fullmatch(text):
        days, first, second, third = clock.groups()
        if third is None and days is not None:
            return None
        hours, minutes, seconds = map(int, (0, first, second) if third is None else (first, second, third))
        if minutes >= 60 or seconds >= 60 or (days is not None and hours >= 24):
            return None
        return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    units = _UNIT_TIME.fullmatch(text)
    if units is None or not any(units.groups()):
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in units.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _parse_count(value: str | int, option: str, *, minimum: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        count = int(value.strip())
    else:
        count = None
    if count is None or count < minimum:
        raise ResourceError(
            f"{option} {_quoted(value)} is not a count: use a whole number of {minimum} or more, e.g. 4"
        )
    return count


def _parse_matching(value: str, option: str, *, pattern: re.Pattern, rule: str) -> str:
    text = value.strip() if isinstance(value, str) else None
    if text is None or not pattern.fullmatch(text):
        raise ResourceError(f"{option} {_quoted(value)} is not allowed: {rule}")
    return text


def _parse_storage(value: str, option: str) -> str:
    rule = "use filesystem/project items joined by '+', e.g. scratch/a56+gdata/a56"
    text = value.strip() if isinstance(value, str) else None
    if text is None or not all(_STORAGE_ITEM.fullmatch(item) for item in text.split("+")):
        raise ResourceError(f"{option} {_quoted(value)} is not a storage list: {rule}")
    return text


def _parse_extra(values: str | Iterable[str], option: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    directives = []
    for value in values:
        text = value.strip() if isinstance(value, str) else ""
        if not text or any(char in text for char in "\n\r\0"):
            raise ResourceError(
                f"{option} {_quoted(value)} is not a directive: each must be one non-empty line, e.g. '-l wd'"
            )
        directives.append(text)
    return tuple(directives)


def _given(parse_value: Callable[[Any, str], Any], value: Any, option: str) -> Any:
    return None if value is None else parse_value(value, option)


@dataclass(frozen=True)
class Resources:
    """The resources one job asks for; ``None`` (or empty ``extra``) means unset.

    ``mem`` and ``jobfs`` are bytes, ``walltime`` is seconds; ``extra`` holds
    raw scheduler directives that the scheduler module renders as they are.
    """

    mem: int | None = None
    ncpus: int | None = None
    ngpus: int | None = None
    walltime: int | None = None
    queue: str | None = None
    project: str | None = None
    jobfs: int | None = None
    storage: str | None = None
    name: str | None = None
    extra: tuple[str, ...] = ()

    @classmethod
    def parse(cls, *, mem=None, ncpus=None, ngpus=None, walltime=None, queue=None, project=None,
              jobfs=None, storage=None, name=None, extra=()) -> Resources:
        """Validate raw values from the magic line or a TOML config; raise ``ResourceError`` on bad ones."""
        return cls(
            mem=_given(parse_size, mem, "--mem"),
            ncpus=_given(partial(_parse_count, minimum=1), ncpus, "--ncpus"),
            ngpus=_given(partial(_parse_count, minimum=0), ngpus, "--ngpus"),
            walltime=_given(parse_walltime, walltime, "--walltime"),
            queue=_given(partial(_parse_matching, pattern=_QUEUE_OR_PROJECT, rule=_QUEUE_RULE), queue, "--queue"),
            project=_given(partial(_parse_matching, pattern=_QUEUE_OR_PROJECT, rule=_PROJECT_RULE), project, "--project"),
            jobfs=_given(parse_size, jobfs, "--jobfs"),
            storage=_given(_parse_storage, storage, "--storage"),
            name=_given(partial(_parse_matching, pattern=_NAME, rule=_NAME_RULE), name, "--name"),
            extra=_parse_extra(extra or (), "--extra"),
        )

    def over(self, defaults: Resources) -> Resources:
        """Return these resources with unset fields taken from ``defaults``; extra directives add up."""
        chosen = {
            field.name: getattr(defaults, field.name) if getattr(self, field.name) is None else getattr(self, field.name)
            for field in fields(self)
            if field.name != "extra"
        }
        return Resources(**chosen, extra=defaults.extra + self.extra)

    def to_json(self) -> dict:
        """Return the set fields as a plain JSON-able dict (``extra`` as a list)."""
        data = {field.name: getattr(self, field.name) for field in fields(self)}
        data["extra"] = list(self.extra) or None
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_json(cls, data: dict) -> Resources:
        """Rebuild resources from ``to_json`` output, validating every field again."""
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ResourceError(f"unknown resource fields {unknown}: expected some of {[f.name for f in fields(cls)]}")
        return cls.parse(**data)

    def describe(self) -> str:
        """Summarise the set fields for people, e.g. "mem 8 GiB, 4 cpus, walltime 2:00:00"; "" when none are set."""
        parts = [
            self.mem is not None and f"mem {format_size_human(self.mem)}",
            self.ncpus is not None and f"{self.ncpus} cpu{'' if self.ncpus == 1 else 's'}",
            self.ngpus is not None and f"{self.ngpus} gpu{'' if self.ngpus == 1 else 's'}",
            self.walltime is not None and f"walltime {format_walltime(self.walltime)}",
            self.queue is not None and f"queue {self.queue}",
            self.project is not None and f"project {self.project}",
            self.jobfs is not None and f"jobfs {format_size_human(self.jobfs)}",
            self.storage is not None and f"storage {self.storage}",
            self.name is not None and f"name {self.name}",
            bool(self.extra) and f"extra {'; '.join(self.extra)}",
        ]
        return ", ".join(part for part in parts if part)


def format_size(nbytes: int) -> str:
    """Render bytes for a scheduler directive in the largest binary unit that divides exactly: "1536MB"."""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return f"{nbytes}B"


def format_size_human(nbytes: int) -> str:
    """Render bytes for people: "8 GiB", "1.5 GiB", "977 KiB", "12 B" (three significant digits, one decimal at most)."""
    if nbytes < 1024:
        return f"{nbytes} B"
    units = (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4))
    for unit, factor in units:
        value = nbytes / factor
        text = f"{value:.0f}" if value >= 99.95 else f"{value:.1f}".removesuffix(".0")
        # Rounding can reach 1024 (1023.96 KiB); then the next unit up reads better.
        if float(text) < 1024 or unit == units[-1][0]:
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def format_walltime(seconds: int) -> str:
    """Render seconds as "H:MM:SS", hours running past 24: 172800 -> "48:00:00"."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
