"""Backend registry and tensor-type detection (the flag that selects a backend: ``config``).

Frameworks are imported only when asked for by name or when a tensor of theirs is seen;
detection reads ``type(x).__module__``, so it never imports a framework itself.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from pooladapt.config import get_backend, normalize_backend_name

BACKENDS: dict[str, str] = {  # keys: config.BACKEND_NAMES
    "numpy": "pooladapt.backends.numpy",
    "torch": "pooladapt.backends.torch",
    "tensorflow": "pooladapt.backends.tensorflow",
    "jax": "pooladapt.backends.jax",
    "mxnet": "pooladapt.backends.mxnet",
    "onnxruntime": "pooladapt.backends.onnxruntime",
}
"""Backend name -> module implementing it."""

FRAMEWORK_MODULES: dict[str, str] = {
    "numpy": "numpy",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "mxnet": "mxnet",
    "onnxruntime": "onnxruntime",
}
"""Backend name -> the framework package it needs."""

PIP_EXTRAS: dict[str, str] = {
    "torch": "pip install 'pooladapt[torch]'",
    "tensorflow": "pip install 'pooladapt[tensorflow]'",
    "jax": "pip install 'pooladapt[jax]'",
    "mxnet": "pip install 'pooladapt[mxnet]'  (needs numpy<1.24)",
    "onnxruntime": "pip install 'pooladapt[onnx]'",
}

# Top-level module of a tensor's type -> backend that owns it.
_TYPE_OWNERS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax",
                "mxnet": "mxnet"}

_owner_cache: dict[type, str | None] = {}


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
