// The op schemas, identical to rtgaze_fast/ops.py's SCHEMAS (a test compares them).
#pragma once

#define RTGAZE_SCHEMA_SAMPLE_DECODE                                                              \
  "(Tensor planes, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor points, float box_warp, " \
  "int plane_set, str precision) -> (Tensor, Tensor)"
#define RTGAZE_SCHEMA_MARCH "(Tensor rgb, Tensor sigma, Tensor depths, bool white_back) -> (Tensor, Tensor, Tensor)"
#define RTGAZE_SCHEMA_IMPORTANCE "(Tensor depths, Tensor weights, Tensor u) -> Tensor"
#define RTGAZE_SCHEMA_RENDER                                                                       \
  "(Tensor planes, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor ray_origins, "              \
  "Tensor ray_directions, Tensor ray_start, Tensor ray_end, Tensor stratified_u, "                \
  "Tensor importance_u, float box_warp, bool disparity, bool white_back, int plane_set, "         \
  "str precision) -> (Tensor, Tensor, Tensor, Tensor)"
#define RTGAZE_SCHEMA_RENDER_BACKWARD                                                             \
  "(Tensor grad_rgb, Tensor grad_depth, Tensor grad_wsum, Tensor planes, Tensor w1, Tensor b1, "  \
  "Tensor w2, Tensor b2, Tensor ray_origins, Tensor ray_directions, Tensor ray_start, "           \
  "Tensor ray_end, Tensor stratified_u, Tensor importance_u, float box_warp, bool disparity, "    \
  "bool white_back, int plane_set, str precision, bool ray_grads) "                               \
  "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
