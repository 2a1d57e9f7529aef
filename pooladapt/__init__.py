"""pooladapt: pooling that means the same thing in every deep-learning framework.

The public API of API.md: ``Pool1D/2D/3D`` and ``pool1d/2d/3d``, ``global_pool*``,
``adaptive_pool*``, ``max_unpool*``, ``fractional_max_pool2d/3d`` and the backend flag
(``set_backend``, ``use_backend``, ``get_backend``, ``available_backends``), the data-format
default and the speed-route switch (``speed_routes``, ``set_speed_routes``,
``get_speed_routes``). Importing it needs NumPy only.
"""

from pooladapt.api import (
    Pool1D,
    Pool2D,
    Pool3D,
    adaptive_pool1d,
    adaptive_pool2d,
    adaptive_pool3d,
    fractional_max_pool2d,
    fractional_max_pool3d,
    global_pool1d,
    global_pool2d,
    global_pool3d,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
    pool1d,
    pool2d,
    pool3d,
)
from pooladapt.config import (
    get_backend,
    get_speed_routes,
    set_backend,
    set_data_format,
    set_speed_routes,
    speed_routes,
    use_backend,
)
from pooladapt.dispatch import available_backends
from pooladapt.spec import PoolSpec, make_spec

__version__ = "0.1.0"

__all__ = [
    "Pool1D", "Pool2D", "Pool3D", "PoolSpec", "__version__", "adaptive_pool1d",
    "adaptive_pool2d", "adaptive_pool3d", "available_backends", "fractional_max_pool2d",
    "fractional_max_pool3d", "get_backend",
    "get_speed_routes", "global_pool1d", "global_pool2d", "global_pool3d", "make_spec",
    "max_unpool1d", "max_unpool2d", "max_unpool3d", "pool1d", "pool2d", "pool3d",
    "set_backend", "set_data_format", "set_speed_routes", "speed_routes", "use_backend",
]
