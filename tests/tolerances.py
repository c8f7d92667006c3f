"""Tolerances for the tests, one place. Fused-backend bounds come from rtgaze_fast.precision
(shared with the benchmark's parity gate); each constant says where it comes from."""
from rtgaze_fast.precision import BOUNDS, DEPTH_WSUM_MIN  # noqa: F401

# fp32 fused backends vs the fp32 reference, same injected noise (spec: 'Precision modes').
FP32_RGB_ATOL = BOUNDS["fp32"].rgb_atol
FP32_WSUM_ATOL = BOUNDS["fp32"].wsum_atol
FP32_DEPTH_ATOL = BOUNDS["fp32"].depth_atol   # where weights_sum > DEPTH_WSUM_MIN

# The reference vs the naive float64 per-ray formulation (issue #2: "within 1e-5 (fp32)").
NAIVE_ATOL = 1e-5

# Reduced-precision modes, max |rgb| error vs the fp32 reference (spec starting points; each
# backend's test states the bound it meets, never looser than these).
TF32_RGB_ATOL = BOUNDS["tf32"].rgb_atol
FP16_RGB_ATOL = BOUNDS["fp16"].rgb_atol
BF16_RGB_ATOL = BOUNDS["bf16"].rgb_atol
FP16_MIN_PSNR_DB = BOUNDS["fp16"].min_psnr_db
BF16_MIN_PSNR_DB = BOUNDS["bf16"].min_psnr_db
