"""The configuration: which backend NumPy input goes to, the default data format, and the
speed-route switch. Each is set per call, per ``with`` block (per thread and asyncio task),
per process or per run (environment variable), highest first.

Speed routes are a backend's faster ways of computing the same plan (a separable max, a
layout view, a host-side NaN check...). They never change a result: every route is checked
against the oracle on the whole conformance grid, forward and gradient, forced on. The switch:

* ``"auto"`` (default): a backend takes a route where its tuning thresholds say it pays;
* ``"off"``: no route, every call runs the backend's plain translation of the plan;
* ``"on"``: every route is taken wherever it applies, whatever the size; ``only=`` forces
  just the named routes (``BACKEND.speed_routes`` lists a backend's) and turns the rest off.

``POOLADAPT_SPEED_ROUTES`` sets it for a run: ``auto``, ``off``, ``on`` or ``on:name,name``
(read when pooladapt is imported).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pooladapt.layouts import DataFormat, parse_any_rank

T = TypeVar("T")

BACKEND_NAMES: tuple[str, ...] = ("numpy", "torch", "tensorflow", "jax", "mxnet",
                                  "onnxruntime")
_ALIASES = {"tf": "tensorflow", "pytorch": "torch", "np": "numpy", "mx": "mxnet", "flax": "jax"}


def normalize_backend_name(name: object) -> str:
    """Canonical backend name; ValueError naming the known ones otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string naming one of {sorted(BACKEND_NAMES)}, "
                        f"got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKEND_NAMES)}")
    return key


# ---------------------------------------------------------------------------- the backend flag

_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pooladapt_backend", default=None)
_global_backend: str | None = None


def set_backend(name: str | None) -> None:
    """Select the backend for framework-neutral (NumPy) input process-wide; None clears it."""
    global _global_backend
    _global_backend = None if name is None else normalize_backend_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Select a backend inside a ``with`` block (per thread and per asyncio task)."""
    token = _selected.set(normalize_backend_name(name))
    try:
        yield _selected.get()  # type: ignore[misc]
    finally:
        _selected.reset(token)


def get_backend() -> str:
    """The backend NumPy input goes to here and now.

    Precedence: ``use_backend`` (innermost), ``set_backend``, ``POOLADAPT_BACKEND``, ``numpy``.
    """
    name = _selected.get() or _global_backend
    if name is not None:
        return name
    env = os.environ.get("POOLADAPT_BACKEND")
    if env:
        try:
            return normalize_backend_name(env)
        except ValueError as err:
            raise ValueError(f"POOLADAPT_BACKEND: {err}") from None
    return "numpy"


# ---------------------------------------------------------------------------- the data format

_global_data_format: DataFormat | None = None


def set_data_format(data_format: str | None) -> None:
    """Set the default data format (``channels_first``/``channels_last``); None clears it."""
    global _global_data_format
    _global_data_format = None if data_format is None else parse_any_rank(data_format)


def default_data_format() -> DataFormat:
    """``set_data_format``, else ``POOLADAPT_DATA_FORMAT``, else ``channels_last``."""
    if _global_data_format is not None:
        return _global_data_format
    env = os.environ.get("POOLADAPT_DATA_FORMAT")
    if env:
        return parse_any_rank(env, "POOLADAPT_DATA_FORMAT")
    return "channels_last"


# ---------------------------------------------------------------------------- speed routes

ROUTE_MODES: tuple[str, ...] = ("auto", "off", "on")


@dataclass(frozen=True)
class SpeedRoutes:
    """The speed-route setting: ``mode`` auto/off/on; with on, ``only`` names the routes
    forced (None: all of them)."""

    mode: str = "auto"
    only: frozenset[str] | None = None

    def take(self, route: str, auto: bool) -> bool:
        """Whether a backend takes ``route`` where it applies; ``auto``: its thresholds' say."""
        if self.mode == "auto":
            return auto
        if self.mode == "off":
            return False
        if self.only is None or route in self.only:
            routes_taken.add(route)
            return True
        return False

    def __str__(self) -> str:
        return self.mode if self.only is None else f"on:{','.join(sorted(self.only))}"


AUTO = SpeedRoutes()

routes_taken: set[str] = set()
"""Every route taken while forced on (the tests check that forcing a route reaches it)."""


def _make_routes(mode: object, only: Iterable[str] | str | None,
                 argname: str = "mode") -> SpeedRoutes:
    if not isinstance(mode, str) or mode.strip().lower() not in ROUTE_MODES:
        raise ValueError(f"{argname} must be one of {ROUTE_MODES}, got {mode!r}")
    mode = mode.strip().lower()
    if only is None:
        return AUTO if mode == "auto" else SpeedRoutes(mode)
    if mode != "on":
        raise ValueError(f"only= names the routes to force on and needs mode 'on', got {mode!r}")
    names = (only,) if isinstance(only, str) else tuple(only)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"only must be a route name or names (strings), got {only!r}")
    return SpeedRoutes("on", frozenset(names))


def _parse_env(value: str) -> SpeedRoutes:
    mode, _, names = value.partition(":")
    only = [n.strip() for n in names.split(",") if n.strip()] if names else None
    try:
        return _make_routes(mode, only)
    except (TypeError, ValueError) as err:
        raise ValueError(f"POOLADAPT_SPEED_ROUTES must be auto, off, on or on:name,name..., "
                         f"got {value!r} ({err})") from None


_routes: contextvars.ContextVar[SpeedRoutes | None] = contextvars.ContextVar(
    "pooladapt_speed_routes", default=None)
_global_routes: SpeedRoutes | None = None
# POOLADAPT_SPEED_ROUTES is read when pooladapt is imported (a read per call would cost every
# eager call as much as a tiny pooling's bookkeeping), parsed when first needed
_env_value = os.environ.get("POOLADAPT_SPEED_ROUTES", "")
_env_routes: SpeedRoutes | None = None if _env_value else AUTO


def get_speed_routes() -> SpeedRoutes:
    """The speed-route setting here and now: ``speed_routes`` (innermost), ``set_speed_routes``,
    ``POOLADAPT_SPEED_ROUTES`` (read when pooladapt is imported), ``auto``."""
    global _env_routes
    routes = _routes.get() or _global_routes or _env_routes
    if routes is None:
        routes = _env_routes = _parse_env(_env_value)
    return routes


def set_speed_routes(mode: str | None, only: Iterable[str] | str | None = None) -> None:
    """Set the speed routes process-wide (``"auto"``, ``"off"``, ``"on"``); None clears it."""
    global _global_routes
    _global_routes = None if mode is None else _make_routes(mode, only)


@contextlib.contextmanager
def speed_routes(mode: str = "auto",
                 only: Iterable[str] | str | None = None) -> Iterator[SpeedRoutes]:
    """Set the speed routes inside a ``with`` block (per thread and per asyncio task).

    >>> import numpy as np, pooladapt as pa
    >>> with pa.speed_routes("off"):   # the plain translation of every plan
    ...     pa.pool2d(np.ones((1, 4, 4, 1)), "max", 2).shape
    (1, 2, 2, 1)
    """
    token = _routes.set(_make_routes(mode, only))
    try:
        yield _routes.get()  # type: ignore[misc]
    finally:
        _routes.reset(token)


def take_route(route: str, auto: bool) -> bool:
    """For backends: take ``route`` (where it applies)? ``auto`` is the tuning's answer."""
    return (_routes.get() or _global_routes or get_speed_routes()).take(route, auto)


# ---------------------------------------------------------------------------- speed-route tuning


@dataclass(frozen=True)
class Tuning:
    """Base of a backend's speed-route thresholds (its ``fast.Tuning``): frozen fields of
    non-negative ints (sizes, counts), checked when built."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{type(self).__qualname__}.{name} must be an int, got "
                                f"{type(value).__name__} {value!r}")
            if value < 0:
                raise ValueError(f"{type(self).__qualname__}.{name} must be >= 0, got {value}")


class TuningSlot(Generic[T]):
    """Where a backend keeps its tuning: a default, changed per ``with`` block (per thread and
    asyncio task) by :meth:`tuned`, read by the routes with :meth:`get`."""

    def __init__(self, backend: str, default: T) -> None:
        self.default = default
        self._var: contextvars.ContextVar[T] = contextvars.ContextVar(
            f"pooladapt_{backend}_tuning", default=default)

    def get(self) -> T:
        """The thresholds here and now."""
        return self._var.get()

    @contextlib.contextmanager
    def tuned(self, **changes: int) -> Iterator[T]:
        """Change some thresholds inside a ``with`` block; an unknown name raises TypeError,
        a bad value TypeError or ValueError."""
        token = self._var.set(dataclasses.replace(self._var.get(), **changes))  # type: ignore[type-var]
        try:
            yield self._var.get()
        finally:
            self._var.reset(token)
