"""Drop-in pooling layers, one module per framework, imported only when used."""

from __future__ import annotations

import importlib.util


def require(extra: str, *modules: str) -> None:
    """ImportError naming the pip extra when one of ``modules`` (the framework a layers module
    is built on) is not installed; called before the module imports it."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"pooladapt.layers.{extra} needs {', '.join(repr(m) for m in missing)}, which is not "
            f"installed here; install it with: pip install 'pooladapt[{extra}]'")
