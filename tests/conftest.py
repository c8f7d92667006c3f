import os
import sys

# Triton's interpreter must be chosen before any @triton.jit function is defined.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernels allocate NaN-filled outputs, so an unwritten element cannot pass (rtgaze_fast.ops).
os.environ["RTGAZE_FAST_POISON"] = "1"
sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    """RTGAZE_FAST_REQUIRE (tests/require.py): stop before collecting anything when a backend
    or tool this machine should have is missing, instead of letting its tests skip."""
    import pytest
    import require
    try:
        report = require.missing_report()
    except ValueError as e:
        raise pytest.UsageError(str(e))
    if report is not None:
        raise pytest.UsageError(report)


# The compile-bound files (minutes each: Triton lowering, nvcc, the SASS record) go first: with
# pytest-xdist's `-n 2 --dist loadfile` (scripts/test.sh) each file runs on one worker, so these
# start at once and the other worker takes the rest, instead of the longest one starting last.
SLOW_FIRST = ("test_triton_lowering.py", "test_cuda_build.py", "test_cuda_sass.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)
    items.sort(key=rank)  # stable: the order within each file, and of the other files, is kept
