"""Conformance: the case grid, random cases, the runner and the report, shared by
``pooladapt conformance`` and the test suite.

``grid()`` is the systematic case grid; ``random_cases`` draws seeded random ones;
``run_case(case, backend)`` runs one case against the NumPy oracle; ``run_conformance`` runs
many on several backends into the JSON report that ``matrix``/``render_markdown`` tabulate.
"""

from pooladapt.conformance.cases import (
    EPS,
    FLOAT_DTYPES,
    GEOMETRIES,
    GRADIENT_DTYPES,
    INT_DTYPES,
    PADDINGS,
    SIZES,
    TINY,
    TOLERANCE,
    Case,
    available_dtypes,
    bfloat16_dtype,
    case_by_id,
    features_of,
    grid,
    np_dtype,
)
from pooladapt.conformance.draw import (
    Chooser,
    NumpyChooser,
    draw_adaptive_case,
    draw_global_case,
    draw_pool_case,
    draw_unpool_case,
    random_cases,
)
from pooladapt.conformance.report import (
    ROWS,
    matrix,
    merge_reports,
    render_markdown,
    reproducer_for,
    run_conformance,
)
from pooladapt.conformance.runner import (
    Result,
    actual,
    compare,
    cotangent,
    entry,
    expected,
    expected_vjp,
    gradient_tolerance,
    load_function,
    reproducer,
    run_against,
    run_case,
    taps,
)

__all__ = [
    "EPS", "FLOAT_DTYPES", "GEOMETRIES", "GRADIENT_DTYPES", "INT_DTYPES", "PADDINGS", "ROWS",
    "SIZES", "TINY", "TOLERANCE", "Case", "Chooser", "NumpyChooser", "Result", "actual",
    "available_dtypes", "bfloat16_dtype", "case_by_id", "compare", "cotangent",
    "draw_adaptive_case", "draw_global_case", "draw_pool_case", "draw_unpool_case", "entry",
    "expected",
    "expected_vjp", "features_of", "gradient_tolerance", "grid", "load_function", "matrix",
    "merge_reports", "np_dtype", "random_cases", "render_markdown", "reproducer",
    "reproducer_for", "run_against", "run_case", "run_conformance", "taps",
]
