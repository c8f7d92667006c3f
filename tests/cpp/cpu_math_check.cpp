// Host check of the CPU kernels' written-out math (rtgaze/math.h), run by tests/test_cpu_math.py
// with and without FMA (the AVX2 and the base build): exp, softplus' log1p, softplus and its
// derivative, and the widened sigmoid against float64 libm over dense grids, within the bounds
// below, and NaN in gives NaN out. Prints each function's worst error, one line per failed check,
// and exits non-zero if any.
#include <cstdint>
#include <cmath>
#include <cstdio>

#include "rtgaze/math.h"

static int failures = 0;

// The worst relative (absolute: absolute) error of f against ref over [lo, hi] in steps of step;
// checks it against bound.
template <class F, class R>
static void check_rel(const char* name, F f, R ref, double lo, double hi, double step, double bound,
                      bool absolute = false) {
  double worst = 0.0, at = lo;
  for (double xd = lo; xd <= hi; xd += step) {
    const float x = static_cast<float>(xd);
    const double want = ref(static_cast<double>(x));
    const double err = absolute || want == 0.0 ? std::fabs(f(x) - want) : std::fabs(f(x) - want) / std::fabs(want);
    if (!(err <= worst)) {
      worst = err;
      at = x;
    }
  }
  std::printf("%-24s worst %s error %.3g at %.9g (bound %.3g)\n", name, absolute ? "absolute" : "relative", worst, at,
              bound);
  if (!(worst <= bound)) {
    std::printf("FAIL: %s\n", name);
    ++failures;
  }
}

static void check_nan(const char* name, float y) {
  if (y == y) {
    std::printf("FAIL: %s of NaN is %g, not NaN\n", name, y);
    ++failures;
  }
}

int main() {
  const float nan = std::nanf("");
  check_rel("exp", [](float x) { return rtg_exp(x); }, [](double x) { return std::exp(x); }, -87.0, 88.0, 3e-5, 1.5e-7);
  check_rel("exp_nonpositive", [](float x) { return rtg_exp_nonpositive(x); }, [](double x) { return std::exp(x); },
            -87.0, 0.0, 1e-5, 1.5e-7);
  check_rel("log1p on [0, 1]", [](float y) { return rtg_log1p(y); }, [](double y) { return std::log1p(y); }, 0.0, 1.0,
            1e-7, 2e-7);
  check_rel("softplus", [](float x) { return rtg_softplus(x); },
            [](double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }, -80.0, 40.0, 1e-5, 2e-7);
  check_rel("softplus' (sigmoid)", [](float x) { return rtg_softplus_grad_from(x, rtg_softplus_exp(x)); },
            [](double x) { return x > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-x)); }, -80.0, 40.0, 1e-5, 3e-7);
  // Absolute: the widened sigmoid crosses 0 (near x = -6.9), where a relative error means nothing.
  check_rel("widened sigmoid", [](float x) { return rtg_widened_sigmoid(x); },
            [](double x) { return 1.002 / (1.0 + std::exp(-x)) - 0.001; }, -20.0, 20.0, 1e-5, 3e-7, true);
  check_nan("exp", rtg_exp(nan));
  check_nan("exp_nonpositive", rtg_exp_nonpositive(nan));
  check_nan("log1p", rtg_log1p(nan));
  check_nan("softplus", rtg_softplus(nan));
  check_nan("widened sigmoid", rtg_widened_sigmoid(nan));
  if (failures == 0) std::printf("all checks passed\n");
  return failures == 0 ? 0 : 1;
}
