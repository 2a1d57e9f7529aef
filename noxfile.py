"""nox sessions: one test session per backend, each in its own virtualenv.

``nox`` runs lint and every backend's tests; ``nox -s "tests(torch)"`` one backend.
``conformance``, ``bench`` and ``fuzz`` are run on request.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import nox
from nox.command import CommandFailed

nox.options.sessions = ["lint", "typecheck", "docs", "build", "tests", "oldest", "python310",
                         "integration"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "virtualenv"

BACKENDS = ["numpy", "torch", "tensorflow", "jax", "mxnet", "onnxruntime"]

# The suite again with each framework's accelerated CPU kernels off, as on a CPU where they do
# not load (TensorFlow's oneDNN needs AVX-512 on AMD; MXNet's wheels carry MKLDNN): session
# id -> (backend, environment).
KERNELS_OFF = {
    "tensorflow-onednn-off": ("tensorflow", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "mxnet-mkldnn-off": ("mxnet", {"MXNET_MKLDNN_ENABLED": "0",
                                   "MXNET_STORAGE_FALLBACK_LOG_VERBOSE": "0"}),
}
TEST_SESSIONS = {**{b: (b, {}) for b in BACKENDS}, **KERNELS_OFF}


def _install(session: nox.Session, backend: str) -> None:
    session.install("-r", f"backends/{backend}.txt", "-r", "backends/test.txt")
    session.install("--no-deps", "-e", ".")


def _backend_python(session: nox.Session, backend: str) -> str | None:
    """The Python of the environment ``tests(<backend>)`` installed, or None with a warning."""
    pythons = [os.path.join(".nox", name, "bin", "python")
               for name in (f"tests-{backend}", f"tests-variant-{backend}",
                            f"tests-backend-{backend}")]
    python = next((p for p in pythons if os.path.exists(p)), None)
    if python is None:
        session.warn(f"{backend}: no environment; run nox -s 'tests({backend})' first")
    return python


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint of the package, tests, examples and benchmarks."""
    session.install("ruff==0.17.5")
    session.run("ruff", "check", "pooladapt", "tests", "examples", "benchmarks", "noxfile.py")


# The public API: what ``import pooladapt`` offers, and the core modules it is made of.
PUBLIC_API = ["pooladapt/__init__.py", "pooladapt/api.py", "pooladapt/config.py",
              "pooladapt/spec.py", "pooladapt/plan.py", "pooladapt/layouts.py",
              "pooladapt/dispatch.py", "pooladapt/lowering.py"]


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the public API (the rest of the package is checked where it imports)."""
    session.install("-r", "backends/typecheck.txt")
    session.run("mypy", "--strict", "--follow-imports=silent", *PUBLIC_API)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs Material, API reference from the docstrings) built with
    warnings as errors, after drawing the benchmark plots from benchmarks/results."""
    session.install("-r", "backends/docs.txt")
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "benchmarks.plot")
    session.run("mkdocs", "build", "--strict", "--site-dir",
                os.path.join(session.create_tmp(), "site"), env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def build(session: nox.Session) -> None:
    """sdist and wheel, twine check, then the wheel alone (NumPy, no framework) in a clean
    virtualenv: ``pooladapt info``, ``pooladapt pool`` and each layers module's install hint
    (tests/packaging/smoke.py)."""
    session.install("build==1.4.0", "twine==6.2.0")
    dist = os.path.join(session.create_tmp(), "dist")
    session.run("python", "-m", "build", "--outdir", dist)
    wheels = [os.path.join(dist, f) for f in os.listdir(dist) if f.endswith(".whl")]
    session.run("twine", "check", "--strict", *[os.path.join(dist, f) for f in os.listdir(dist)])
    clean = os.path.join(session.create_tmp(), "clean")
    session.run("python", "-m", "venv", "--clear", clean)
    python = os.path.join(clean, "bin", "python")
    session.run(python, "-m", "pip", "install", "--quiet", f"{wheels[0]}[cli]", external=True)
    session.run(python, "tests/packaging/smoke.py", external=True)


@nox.session
@nox.parametrize("variant", list(TEST_SESSIONS), ids=list(TEST_SESSIONS))
def tests(session: nox.Session, variant: str) -> None:
    """The test suite on one backend: its conformance run plus its own framework tests
    (``tensorflow-onednn-off`` and ``mxnet-mkldnn-off``: the same with those kernels off)."""
    backend, env = TEST_SESSIONS[variant]
    _install(session, backend)
    paths = ["tests/conformance", f"tests/{backend}"]
    if variant == "numpy":
        paths.insert(0, "tests/core")
    paths = [p for p in paths if os.path.isdir(p)]
    session.run("pytest", *paths, *session.posargs,
                env={"POOLADAPT_TEST_BACKENDS": backend, "HYPOTHESIS_PROFILE": "ci", **env})


# The lowest supported versions (the extras' lower bounds) and the newest releases, per
# framework; docs/compatibility.md says what was run and why torch and MXNet are not here.
OLDEST = ["tensorflow", "jax", "onnxruntime"]
NEWEST = {"tensorflow": ["tensorflow-cpu", "keras"], "jax": ["jax", "jaxlib", "flax", "keras"],
          "onnxruntime": ["onnxruntime", "onnx"]}


def _version_suite(session: nox.Session, backend: str) -> None:
    """The backend's conformance grid and edges and its own tests; not its framework notes,
    which pin the behaviour of the versions backends/<backend>.txt installs."""
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    session.run("pytest", "tests/conformance/test_grid.py", "tests/conformance/test_edges.py",
                f"tests/{backend}", f"--ignore=tests/{backend}/test_framework_notes.py",
                *session.posargs,
                env={"POOLADAPT_TEST_BACKENDS": backend, "HYPOTHESIS_PROFILE": "ci"})


# The oldest Python declared: where pyenv keeps it (this project's machines; pyenv's shim on
# PATH answers only for the selected version), or on PATH.
PYTHON310 = next(iter(sorted(glob.glob(os.path.expanduser(
    "~/.pyenv/versions/3.10.*/bin/python3.10")))), None) or shutil.which("python3.10")


@nox.session(python=PYTHON310 or False)
def python310(session: nox.Session) -> None:
    """The core and the NumPy backend on Python 3.10 (backends/python310.txt)."""
    if PYTHON310 is None:
        session.skip("no Python 3.10 on this machine")
    session.install("-r", "backends/python310.txt", "-r", "backends/test.txt")
    session.install("--no-deps", "-e", ".")
    session.run("pytest", "tests/core", "tests/conformance", *session.posargs,
                env={"POOLADAPT_TEST_BACKENDS": "numpy", "HYPOTHESIS_PROFILE": "ci"})


@nox.session
@nox.parametrize("backend", OLDEST, ids=OLDEST)
def oldest(session: nox.Session, backend: str) -> None:
    """The oldest supported versions of a framework (backends/oldest-<backend>.txt)."""
    session.install("-r", f"backends/oldest-{backend}.txt", "-r", "backends/test.txt")
    session.install("--no-deps", "-e", ".")
    _version_suite(session, backend)


@nox.session
@nox.parametrize("backend", list(NEWEST), ids=list(NEWEST))
def newest(session: nox.Session, backend: str) -> None:
    """The newest releases, unpinned (on request: today they are the versions the tests
    sessions pin; this session notices a new release before the pins move)."""
    session.install("--upgrade", *NEWEST[backend], "numpy", "pillow", "rich",
                    "-r", "backends/test.txt")
    session.install("--no-deps", "-e", ".")
    _version_suite(session, backend)


@nox.session
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def conformance(session: nox.Session, backend: str) -> None:
    """Conformance report of one backend, merged into docs/conformance.{md,json}.

    Full grid, 200 random cases and gradients, run in an environment installed from the
    backend's pinned backends/<name>.txt; ``nox -s conformance`` refreshes every column.
    """
    _install(session, backend)
    report = os.path.join(session.create_tmp(), f"conformance-{backend}.json")
    session.run("pooladapt", "conformance", "--backends", backend, "--grid", "full",
                "--fuzz", "200", "--seed", "0", "--gradients", "--json", report,
                success_codes=[0, 1])
    merged = os.path.join("docs", "conformance.json")
    sources = [merged, report] if os.path.exists(merged) else [report]
    session.run("pooladapt", "conformance", "--merge", *sources, "--json", merged,
                "--markdown", os.path.join("docs", "conformance.md"), success_codes=[0, 1])
    with open(report) as f:
        failed = json.load(f)["backends"][backend]["failed"]
    if failed:
        session.error(f"{backend}: {failed} conformance failures, listed in docs/conformance.md")


@nox.session
def integration(session: nox.Session) -> None:
    """Every NumPy-2 framework in one environment: cross-backend agreement, the model port,
    the examples that swap backends."""
    _install(session, "all")
    session.run("pytest", "tests/integration", "tests/core/test_examples.py", *session.posargs,
                env={"HYPOTHESIS_PROFILE": "ci"})


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Benchmarks (docs/benchmarks.md): benchmarks/run.py, forward calls and training steps
    (forward+backward, eager and compiled), in every backend environment that
    ``nox -s "tests(<backend>)"`` installed, then benchmarks/report.py and the plots
    (benchmarks/plot.py, with the docs or NumPy environment's matplotlib). Not run by default.

    ``nox -s bench -- torch jax --quick`` limits the backends; other arguments go to run.py
    (``--phase train``, ``-k stem``, ``--repeats 3``); a run replaces the rows it measures in
    benchmarks/results/<backend>.json and keeps the others (``--threads 1`` results are kept
    apart, in benchmarks/results/<backend>-1thread.json).
    """
    chosen = [a for a in session.posargs if a in BACKENDS] or BACKENDS
    options = [a for a in session.posargs if a not in BACKENDS]
    threads = options[options.index("--threads") + 1] if "--threads" in options else None
    suffix = f"-{threads}thread" if threads else ""
    failed = []
    for backend in chosen:
        python = _backend_python(session, backend)
        if python is None:
            continue
        try:
            session.run(python, "-m", "benchmarks.run", "--backend", backend, "--json",
                        os.path.join("benchmarks", "results", f"{backend}{suffix}.json"),
                        *options, external=True)
        except CommandFailed:
            failed.append(backend)
    session.run("python", "-m", "benchmarks.report", external=True)
    plotters = [os.path.join(".nox", env, "bin", "python") for env in ("docs", "tests-numpy")]
    plotter = next((p for p in plotters if os.path.exists(p)), None)
    if plotter is None:
        session.warn("no environment with matplotlib: nox -s docs draws the plots")
    else:
        session.run(plotter, "-m", "benchmarks.plot", external=True)
    if failed:
        session.error(f"the benchmark run failed on {', '.join(failed)} (output above)")


@nox.session(venv_backend="none")
def fuzz(session: nox.Session) -> None:
    """Differential fuzzing against the oracle (tests/conformance/test_fuzz.py, the hypothesis
    ``fuzz`` profile: 10,000 examples per test) in every backend environment that
    ``nox -s "tests(<backend>)"`` installed from backends/<backend>.txt. Not run by default.

    ``nox -s fuzz -- torch mxnet`` limits the backends; other arguments go to pytest;
    ``POOLADAPT_FUZZ_EXAMPLES=1000`` sets the examples per test (JAX compiles every new shape,
    about 0.25 s each on 2 cores). A failure prints the shrunk example as a regression test to
    paste into test_fuzz.py.
    """
    chosen = [a for a in session.posargs if a in BACKENDS] or BACKENDS
    options = [a for a in session.posargs if a not in BACKENDS]
    failed = []
    for backend in chosen:
        python = _backend_python(session, backend)
        if python is None:
            continue
        try:
            session.run(python, "-m", "pytest", "tests/conformance/test_fuzz.py", *options,
                        env={"POOLADAPT_TEST_BACKENDS": backend, "HYPOTHESIS_PROFILE": "fuzz"},
                        external=True)
        except CommandFailed:
            failed.append(backend)
    if failed:
        session.error(f"fuzzing found failures on {', '.join(failed)} (regression tests above)")
