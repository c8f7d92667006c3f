import os
import sys

# Triton's interpreter must be chosen before any @triton.jit function is defined.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernels allocate NaN-filled outputs, so an unwritten element cannot pass (rtgaze_fast.ops).
os.environ["RTGAZE_FAST_POISON"] = "1"
sys.path.insert(0, os.path.dirname(__file__))
