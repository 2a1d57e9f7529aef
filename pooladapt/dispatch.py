"""Backend registry, selection (the config flag) and tensor-type detection.

Frameworks are imported only when asked for by name or when a tensor of theirs is seen;
detection reads ``type(x).__module__``, so it never imports a framework itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

BACKENDS: dict[str, str] = {
    "numpy": "pooladapt.backends.numpy",
    "torch": "pooladapt.backends.torch",
    "tensorflow": "pooladapt.backends.tensorflow",
    "jax": "pooladapt.backends.jax",
    "mxnet": "pooladapt.backends.mxnet",
}
"""Backend name -> module implementing it."""

FRAMEWORK_MODULES: dict[str, str] = {
    "numpy": "numpy",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "mxnet": "mxnet",
}
"""Backend name -> the framework package it needs."""

PIP_EXTRAS: dict[str, str] = {
    "torch": "pip install 'pooladapt[torch]'",
    "tensorflow": "pip install 'pooladapt[tensorflow]'",
    "jax": "pip install 'pooladapt[jax]'",
    "mxnet": "pip install 'pooladapt[mxnet]'  (needs numpy<1.24)",
}

_ALIASES = {"tf": "tensorflow", "pytorch": "torch", "np": "numpy", "mx": "mxnet", "flax": "jax"}

# Top-level module of a tensor's type -> backend that owns it.
_TYPE_OWNERS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax",
                "mxnet": "mxnet"}

_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pooladapt_backend", default=None)
_global_backend: str | None = None
_global_data_format: str | None = None
_owner_cache: dict[type, str | None] = {}


def normalize_backend_name(name: object) -> str:
    """Canonical backend name; ValueError naming the known ones otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string naming one of {sorted(BACKENDS)}, "
                        f"got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}")
    return key


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


def set_data_format(data_format: str | None) -> None:
    """Set the default data format (``channels_first``/``channels_last``); None clears it."""
    global _global_data_format
    if data_format is not None:
        data_format = _any_rank_format(data_format, "data_format")
    _global_data_format = data_format


def _any_rank_format(value: object, argname: str) -> str:
    """channels_first/channels_last from an API name or any rank's letters (NCW ... NDHWC)."""
    from pooladapt.spec import _all_format_names, normalize_data_format

    rank = _all_format_names().get(str(value).strip().lower(), 2)
    return normalize_data_format(value, rank, argname)


def default_data_format() -> str:
    """``set_data_format``, else ``POOLADAPT_DATA_FORMAT``, else ``channels_last``."""
    if _global_data_format is not None:
        return _global_data_format
    env = os.environ.get("POOLADAPT_DATA_FORMAT")
    if env:
        return _any_rank_format(env, "POOLADAPT_DATA_FORMAT")
    return "channels_last"


def owner_of(x: object) -> str | None:
    """Backend that owns ``x``'s tensor type, or None for framework-neutral input."""
    cls = type(x)
    try:
        return _owner_cache[cls]
    except KeyError:
        pass
    owner = None
    for klass in cls.__mro__:
        top = (klass.__module__ or "").split(".", 1)[0]
        if top in _TYPE_OWNERS:
            owner = _TYPE_OWNERS[top]
            break
    _owner_cache[cls] = owner
    return owner


_loaded: dict[str, ModuleType] = {}


def load(name: str) -> ModuleType:
    """Import a backend module by name (cached); ImportError naming the pip extra if missing."""
    module = _loaded.get(name)
    if module is not None:
        return module
    name = normalize_backend_name(name)
    module = sys.modules.get(BACKENDS[name])  # imported already (e.g. by a layers module)
    if module is not None:
        _loaded[name] = module
        return module
    try:
        importlib.import_module(FRAMEWORK_MODULES[name])
    except ImportError as err:
        raise ImportError(
            f"backend {name!r} needs {FRAMEWORK_MODULES[name]!r}, which is not installed "
            f"here ({err}); install it with: {PIP_EXTRAS[name]}"
        ) from err
    module = _loaded[name] = importlib.import_module(BACKENDS[name])
    return module


def available_backends() -> list[str]:
    """Names of the backends whose framework imports here (imports each to check)."""
    found = []
    for name in BACKENDS:
        try:
            load(name)
        except ImportError:
            continue
        except Exception:  # a broken install (e.g. mxnet with numpy 2) is not available
            continue
        found.append(name)
    return found


def resolve(x: object, backend: str | None) -> tuple[str, bool]:
    """Backend to use for ``x`` and whether ``x`` is a framework tensor of it.

    A framework tensor goes to its own framework; an explicit ``backend=`` of another
    framework for it is a TypeError.
    """
    owner = owner_of(x)
    if owner is not None:
        if backend is not None and normalize_backend_name(backend) != owner:
            raise TypeError(
                f"got a {owner} tensor ({type(x).__module__}.{type(x).__name__}) with "
                f"backend={backend!r}; a framework tensor is pooled by its own framework: pass "
                f"backend={owner!r} or convert it to NumPy first"
            )
        return owner, True
    return (normalize_backend_name(backend) if backend is not None else get_backend()), False
