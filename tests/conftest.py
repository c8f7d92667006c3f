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
