"""Data-format names: ``channels_first``/``channels_last`` and the layout letters (``NCHW``...).

The one vocabulary of layouts, shared by the spec (which fills in the configured default) and
the configuration (which validates what is set).
"""

from __future__ import annotations

from typing import Literal

DataFormat = Literal["channels_first", "channels_last"]

SPATIAL_LETTERS = {1: ("W", "L"), 2: ("HW",), 3: ("DHW",)}

TO_NC = {3: (0, 2, 1), 4: (0, 3, 1, 2), 5: (0, 4, 1, 2, 3)}
"""Per tensor rank, the axis permutation from channels-last to channels-first (N, C, *spatial):
a transpose with it is cheaper than a ``moveaxis``/``movedim``, which normalise their axes."""
FROM_NC = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}
"""Per tensor rank, the axis permutation from channels-first back to channels-last."""


def format_aliases(ndim: int) -> dict[str, str]:
    """Lower-case name -> API name, for an input with ``ndim`` spatial dims."""
    aliases = {"channels_first": "channels_first", "channels_last": "channels_last"}
    for letters in SPATIAL_LETTERS[ndim]:
        aliases["nc" + letters.lower()] = "channels_first"
        aliases["n" + letters.lower() + "c"] = "channels_last"
    return aliases


def letter_rank(value: object) -> int | None:
    """Spatial rank of layout letters (``ncw`` -> 1, ``NDHWC`` -> 3), None for other names."""
    key = str(value).strip().lower()
    for n in (1, 2, 3):
        if key in format_aliases(n) and key.startswith("n"):
            return n
    return None


def layout_names(ndim: int) -> list[str]:
    return sorted(k if k.startswith("channels") else k.upper() for k in format_aliases(ndim))


def parse_data_format(value: object, ndim: int, argname: str = "data_format") -> DataFormat:
    """Map ``channels_first``/``channels_last`` or layout letters to the API name."""
    if not isinstance(value, str):
        raise TypeError(
            f"{argname} must be a string such as 'channels_first' or 'channels_last', "
            f"got {type(value).__name__} {value!r}"
        )
    key = value.strip().lower()
    aliases = format_aliases(ndim)
    if key in aliases:
        return aliases[key]  # type: ignore[return-value]
    other = letter_rank(key)
    if other is not None:
        raise ValueError(
            f"{argname} must be one of {layout_names(ndim)} for {ndim} spatial dim(s), got "
            f"{value!r}, a {other}-D layout"
        )
    raise ValueError(f"unknown {argname}: expected one of {layout_names(ndim)}, got {value!r}")


def parse_any_rank(value: object, argname: str = "data_format") -> DataFormat:
    """``parse_data_format`` for a setting that applies to every rank (letters of any rank)."""
    return parse_data_format(value, letter_rank(value) or 2, argname)
