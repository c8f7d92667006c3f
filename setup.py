"""Build script. A pure-Python install always works; the compiled backends are added when possible:
the CPU extension whenever torch and a C++ compiler are present, CUDA kernels only when the
installed torch has CUDA (see build_config.py). A failed compile warns and continues: the
reference and Triton backends need no compiler, and rtgaze_fast/_ext.py can JIT-build later.

Install with `pip install --no-build-isolation -e .` against an installed torch.
"""
import sys
import warnings

from setuptools import setup

sys.path.insert(0, __file__.rsplit("/", 1)[0] if "/" in __file__ else ".")

ext_modules, cmdclass = [], {}
try:
    import torch  # noqa: F401
    from torch.utils.cpp_extension import BuildExtension

    import build_config
except ImportError as e:  # no torch in the build environment: pure-Python install
    warnings.warn(f"rtgaze-fast: building without the compiled extension ({e})")
else:
    class OptionalBuildExtension(BuildExtension):
        """Warn instead of failing when the extension cannot be compiled here."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as e:  # compiler missing or failing: keep the pure-Python install
                warnings.warn(f"rtgaze-fast: the compiled extension was not built ({e}); the 'cpu' and "
                              "'cuda' backends are unavailable until it is (see rtgaze_fast/_ext.py)")
                # Nothing was built: nothing to copy in place (--inplace, -e) or to package.
                self.extensions = []

    ext_modules = [build_config.extension()]
    cmdclass = {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
