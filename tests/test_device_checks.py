"""Device-index checks of the CUDA glue, shown without a GPU: the shared helper (checks.h)
compiled into a tiny C++ program and run on fake cuda:0 / cuda:1 devices (a c10::Device needs no
GPU), and every tensor argument of every CUDA op routed through it (a source check; the glue's
compilation is tests/test_cuda_build.py). What the CPU cannot show: a launch on a real second GPU."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = (ROOT / "csrc/torch/cuda_glue.cpp").read_text()

PROGRAM = r"""
#include "checks.h"
#include <iostream>
using rtgaze::glue::check_same_device;
int main() {
  check_same_device(c10::Device("cuda:0"), "w1", c10::Device("cuda:0"), "planes");  // same: passes
  try {
    check_same_device(c10::Device("cuda:1"), "w1", c10::Device("cuda:0"), "planes");
  } catch (const c10::ValueError& e) {
    std::cout << e.what_without_backtrace() << std::endl;
    return 0;
  }
  return 1;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_check_same_device_rejects_another_index(tmp_path):
    import torch
    from torch.utils.cpp_extension import include_paths, library_paths
    (tmp_path / "t.cpp").write_text(PROGRAM)
    libs = library_paths()
    cmd = ["g++", "-std=c++17", "-O0", str(tmp_path / "t.cpp"), "-o", str(tmp_path / "t"),
           f"-I{ROOT / 'csrc/torch'}", *[f"-I{p}" for p in include_paths()],
           *[f"-L{p}" for p in libs], *[f"-Wl,-rpath,{p}" for p in libs], "-lc10", "-ltorch_cpu",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    run = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "w1 is on cuda:1 but planes is on cuda:0" in run.stdout and "index included" in run.stdout


def _op_bodies():
    for m in re.finditer(r"\n(?:std::tuple<[^>]*>|Tensor) (\w+_cuda)\((.*?)\) \{(.*?)\n\}", GLUE, re.S):
        yield m.group(1), re.findall(r"const Tensor& (\w+)", m.group(2)), m.group(3)


def test_every_cuda_op_checks_every_tensor_against_one_device():
    ops = list(_op_bodies())
    assert {name for name, _, _ in ops} == {"sample_decode_cuda", "march_cuda", "importance_cuda", "render_cuda",
                                            "render_backward_cuda"}
    pad = re.search(r"Padded pad_inputs\(.*?\n\}", GLUE, re.S).group(0)
    inputs = re.search(r"rc::RenderParams render_inputs\(.*?\n\}", GLUE, re.S).group(0)
    for name, params, body in ops:
        text = body + (inputs if "render_inputs(" in body else "")
        text += pad if "pad_inputs(" in text else ""
        for t in params:
            if t == "planes":  # the anchor: checked to be a CUDA tensor before the guard takes its device
                assert 'CUDAGuard guard(cuda_anchor(planes, "planes").device())' in body, name
                continue
            anchored = re.search(rf"check_cuda\({t}, \"{t}\", \d, (\w+), \"\w+\"\)", text)
            assert anchored, f"{name}: {t} is not checked against the op's device"
