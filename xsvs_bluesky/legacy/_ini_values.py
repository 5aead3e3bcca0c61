"""Typed, validated access to one section of a legacy INI file (private).

Every problem becomes an :class:`~xsvs_bluesky.errors.InputFileError` whose
message is one line naming the file, the section, the key and the bad value,
and saying what would be valid.
"""

from __future__ import annotations

import logging
import math
import os.path
from collections.abc import Mapping
from pathlib import Path

from xsvs_bluesky.errors import InputFileError

__all__: list[str] = []

logger = logging.getLogger(__name__)

#: Values of optional keys that mean "not given" (the old tools wrote "none").
_ABSENT = {"", "none"}


def one_line(text: str) -> str:
    """Collapse a text onto one line (error messages must be one line)."""
    return " ".join(text.split())


class SectionValues:
    """Typed getters over the key/value pairs of one INI section.

    Parameters
    ----------
    file : Path
        The INI file (named in error messages).
    section : str
        The section name as written in the file.
    values : Mapping[str, str]
        Key/value pairs (keys lower-case, as configparser gives them).
    """

    def __init__(self, file: Path, section: str, values: Mapping[str, str]) -> None:
        self.file = file
        self.section = section
        self._values = dict(values)
        self._used: set[str] = set()

    # -- errors ------------------------------------------------------------
    def error(self, key: str, value: str | None, problem: str) -> InputFileError:
        """Build the one-line error for ``key`` (``value`` None: key missing)."""
        where = f"{self.file}: [{self.section}]"
        if value is None:
            return InputFileError(one_line(f"{where} missing key '{key}'; {problem}"))
        return InputFileError(one_line(f"{where} {key} = {value!r}: {problem}"))

    # -- raw access --------------------------------------------------------
    def has(self, key: str) -> bool:
        """Whether ``key`` is present with a value other than empty/"none"."""
        raw = self._values.get(key)
        return raw is not None and raw.strip().lower() not in _ABSENT

    def raw(self, key: str, what: str) -> str:
        """Return the stripped value of a required key (may be the empty string)."""
        self._used.add(key)
        if key not in self._values:
            raise self.error(key, None, f"expected {what}")
        return self._values[key].strip()

    def unused_keys(self) -> list[str]:
        """Keys present in the section that no getter asked for."""
        return sorted(set(self._values) - self._used)

    def log_unused(self) -> None:
        """Log (at debug level) the keys nobody used, e.g. 'figure title'."""
        for key in self.unused_keys():
            logger.debug(
                "%s: [%s] key %r is not used by xsvs_bluesky",
                self.file,
                self.section,
                key,
            )

    # -- typed getters -----------------------------------------------------
    def text(self, key: str, what: str, default: str | None = None) -> str:
        """Return a string value; ``default`` (if not None) makes the key optional."""
        if default is not None and key not in self._values:
            self._used.add(key)
            return default
        return self.raw(key, what)

    def optional_text(self, key: str) -> str | None:
        """Return a string value, or None when absent, empty or "none"."""
        self._used.add(key)
        return self._values[key].strip() if self.has(key) else None

    def number(
        self,
        key: str,
        what: str,
        *,
        positive: bool = False,
        non_negative: bool = False,
        default: float | None = None,
    ) -> float:
        """Return a finite float, optionally required to be > 0 or >= 0."""
        if default is not None and not self.has(key):
            self._used.add(key)
            return default
        value = self.raw(key, what)
        try:
            number = float(value)
        except ValueError:
            raise self.error(key, value, f"not a number; expected {what}") from None
        if not math.isfinite(number):
            raise self.error(key, value, f"not finite; expected {what}")
        if positive and number <= 0:
            raise self.error(key, value, f"must be > 0; expected {what}")
        if non_negative and number < 0:
            raise self.error(key, value, f"must be >= 0; expected {what}")
        return number

    def integer(self, key: str, what: str, *, minimum: int | None = None) -> int:
        """Return an integer (written without decimal point), optionally >= minimum."""
        value = self.raw(key, what)
        try:
            number = int(value)
        except ValueError:
            raise self.error(key, value, f"not an integer; expected {what}") from None
        if minimum is not None and number < minimum:
            raise self.error(key, value, f"must be >= {minimum}; expected {what}")
        return number

    def optional_integer(
        self, key: str, what: str, *, minimum: int | None = None
    ) -> int | None:
        """Return an integer, or None when the key is absent, empty or "none"."""
        if not self.has(key):
            self._used.add(key)
            return None
        return self.integer(key, what, minimum=minimum)

    def path(self, key: str, what: str, base: Path) -> Path:
        """Return a required path, resolved relative to ``base`` (the INI folder)."""
        value = self.raw(key, what)
        if value.lower() in _ABSENT:
            raise self.error(key, value, f"empty; expected {what}")
        return resolve_path(value, base)

    def optional_path(self, key: str, base: Path) -> Path | None:
        """Return a path resolved relative to ``base``, or None when not given."""
        value = self.optional_text(key)
        return None if value is None else resolve_path(value, base)


def resolve_path(value: str, base: Path) -> Path:
    """Resolve ``value`` (with or without trailing slash) against ``base``.

    ``~`` is expanded; absolute paths are kept; ``..`` parts are normalised
    without following symbolic links.
    """
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        path = base / path
    # normpath removes "a/../" and a trailing slash; it does not touch links.
    return Path(os.path.normpath(path))
