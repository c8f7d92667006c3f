"""RTGAZE_FAST_REQUIRE (tests/require.py): a backend or tool the machine should have and lacks stops
the suite (with the build log's last lines) instead of letting its tests skip; unset, they skip."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import require

ROOT = Path(__file__).resolve().parents[1]

# Runs pytest on the probe below in a fresh process where the compiled extension and Triton
# cannot be imported (what a failed build or a broken Triton install leaves), never JIT-built.
_BROKEN_MACHINE = """
import sys
sys.modules["rtgaze_fast._C"] = None
sys.modules["triton"] = None
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_require.py::test_probe"]))
"""


def test_probe():
    """Run by the subprocesses below; passes wherever it is reached."""


def _run_broken(env_update, tmp_path):
    log = tmp_path / "build.log"
    log.write_text("compiling...\nc++ -c csrc/cpu/dispatch.cpp\ncsrc/cpu/dispatch.cpp:1: error: the injected failure\n"
                   "rtgaze-fast: the compiled extension was not built\n" + "pip says more\n" * 40)
    env = {k: v for k, v in os.environ.items() if k != require.ENV}
    env.update(RTGAZE_FAST_NO_JIT="1", RTGAZE_FAST_BUILD_LOG=str(log), **env_update)
    return subprocess.run([sys.executable, "-c", _BROKEN_MACHINE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_required_backend_that_did_not_build_stops_the_suite(tmp_path):
    res = _run_broken({require.ENV: "cpu,triton"}, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "1 passed" not in out and "RTGAZE_FAST_REQUIRE=cpu,triton, but this machine lacks" in out, out
    assert re.search(r"^\s+cpu: .*not built", out, re.M)
    assert re.search(r"^\s+triton: .*could not be imported", out, re.M)
    # the build log, quoted up to its last error and two lines after
    assert "the injected failure" in out and "was not built" in out and out.count("pip says more") == 2, out


def test_without_the_variable_missing_backends_only_skip(tmp_path):
    res = _run_broken({}, tmp_path)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr


def test_unknown_names_are_refused(monkeypatch):
    monkeypatch.setenv(require.ENV, "cpu,trtion")
    with pytest.raises(ValueError, match="trtion"):
        require.required()


def test_skip_or_fail(monkeypatch):
    monkeypatch.setenv(require.ENV, "cpu")
    with pytest.raises(pytest.fail.Exception, match="requires 'cpu'"):
        require.skip_or_fail("cpu", "not built")
    with pytest.raises(pytest.skip.Exception):
        require.skip_or_fail("nvcc", "nvcc not found")
    monkeypatch.delenv(require.ENV)
    with pytest.raises(pytest.skip.Exception):
        require.skip_or_fail("cpu", "not built")


def test_only_a_missing_ptxas_skips_the_lowering_tests(monkeypatch):
    compiler = pytest.importorskip("triton.backends.nvidia.compiler")

    def raising(exc):
        def get_ptxas(arch):
            raise exc
        return get_ptxas
    monkeypatch.setattr(compiler, "get_ptxas", raising(RuntimeError("Cannot find ptxas")))
    assert "Cannot find ptxas" in require.ptxas_missing()
    for exc in (RuntimeError("Unable to use TRITON_PTXAS_PATH=x"), OSError("permission denied")):
        monkeypatch.setattr(compiler, "get_ptxas", raising(exc))
        with pytest.raises(type(exc)):
            require.ptxas_missing()


def test_the_scripts_state_what_they_require():
    """CI (scripts/test.sh) requires what its machines have; the GPU suite's parity stage requires
    both GPU backends."""
    test_sh = (ROOT / "scripts/test.sh").read_text()
    m = re.search(r"^export RTGAZE_FAST_REQUIRE=\$\{RTGAZE_FAST_REQUIRE-([\w,-]+)\}$", test_sh, re.M)
    assert m and m.group(1) == require.DEFAULT_CI
    assert set(require.DEFAULT_CI.split(",")) >= {"cpu", "triton", "nvcc"}
    gpu = (ROOT / "benchmarks/gpu_suite.sh").read_text()
    assert re.search(r"RTGAZE_FAST_REQUIRE=cuda,triton .*\\\n.*pytest .*tests/test_gpu_parity.py", gpu)


def test_build_log_excerpt_ends_at_the_last_error(tmp_path):
    log = tmp_path / "b.log"
    log.write_text("\n".join([f"line {i}" for i in range(100)] + ["x.cpp:3: error: boom", "after 1", "after 2",
                                                                     "after 3"] + ["tail"] * 50))
    text = require.build_log_excerpt(log, lines=10)
    assert "error: boom" in text and "after 2" in text and "after 3" not in text and "tail" not in text
    assert "line 93" in text and "line 92" not in text
    assert "no build log" in require.build_log_excerpt(tmp_path / "missing.log")
