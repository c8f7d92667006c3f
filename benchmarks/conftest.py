"""pytest-benchmark suites. Sizes: RTGAZE_BENCH_SIZES=full for the real grid (64/128/256 rays per
side, 48+48 and 96+96, batch 1 and 8 on a GPU; 64 and 128 at batch 1 on a CPU), anything else
(the default, used by CI with --benchmark-disable) for one tiny smoke size so the suites cannot rot."""
import os

import pytest
import torch

FULL = os.environ.get("RTGAZE_BENCH_SIZES") == "full"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def grid():
    from rtgaze_fast.bench import Case
    if not FULL:
        return [Case(res=8, n=8, n_f=8, plane_res=32)]
    if DEVICE.type == "cpu":
        return [Case(res=r) for r in (64, 128)]
    return [Case(res=r, n=n, n_f=n, batch=b) for r in (64, 128, 256) for n in (48, 96) for b in (1, 8)]


@pytest.fixture(params=grid(), ids=lambda c: c.name.replace(" ", "-"))
def case(request):
    from rtgaze_fast.bench import _free_bytes
    c = request.param
    if c.eager_bytes() > 0.8 * _free_bytes(DEVICE):
        pytest.skip(f"{c.name}: the eager reference would not fit in memory")
    return c
