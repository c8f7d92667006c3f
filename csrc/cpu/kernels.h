// Plain-pointer interface between the torch glue (csrc/torch/ops.cpp) and the CPU kernels,
// which are compiled once per instruction set (render_cpu_base.cpp, render_cpu_avx2.cpp).
#pragma once
#include <cstdint>

namespace rtgaze {

// Element strides of a (B, 3, H, W, C) planes tensor (or of its gradient).
struct PlaneStrides {
  long b, k, y, x, c;
};

struct PlanesArgs {
  const float* data;  // (B, 3, H, W, C) at any strides: read as the caller holds them (no layout copy)
  int H, W, C;
  PlaneStrides s;
};

struct DecoderArgs {
  const float *w1t, *b1, *w2t, *b2;  // folded; w1t (C, Hd) transposed, w2t (Hd, O1 - 1): the colour rows of w2 transposed
  int Hd, O1;
  const float *w1, *w2;  // untransposed: w1 (Hd, C), w2 (O1, Hd) (sigma's row 0, and the backward's layout)
};

struct RenderArgs {
  PlanesArgs planes;
  DecoderArgs dec;
  const float *origins, *dirs, *start, *end, *su, *iu;  // (B,R,3) x2, (B,R) x2, (B,R,N), (B,R,Nf)
  long R;
  int N, Nf, plane_set;
  float box_warp;
  bool disparity, white_back;
  float *rgb, *depth, *wsum, *range;  // (B,R,O), (B,R), (B,R), (B,R,2)
};

struct SampleDecodeArgs {
  PlanesArgs planes;
  DecoderArgs dec;
  const float* points;  // (B, M, 3)
  long M;
  int plane_set;
  float box_warp;
  float *sigma, *rgb;  // (B, M), (B, M, O)
};

struct MarchArgs {
  const float *rgb, *sigma, *depths;  // (P, S, O), (P, S), (P, S)
  int S, O;
  bool white_back;
  float *out_rgb, *depth, *weights;  // (P, O), (P,), (P, S-1)
};

struct ImportanceArgs {
  const float *depths, *weights, *u;  // (P, N), (P, N-1), (P, Nf)
  int N, Nf;
  float* out;  // (P, Nf)
};

// The render op's backward: the forward's inputs (its output pointers unused), the upstream
// gradients, and the per-ray gradients it writes.
struct RenderGradArgs {
  const RenderArgs* fwd;
  const float *g_rgb, *g_depth, *g_wsum;  // (B,R,O), (B,R), (B,R)
  float *g_origins, *g_dirs;              // (B,R,3) x2, written per ray; both null: not wanted (not computed)
};

// Where one task of the backward accumulates the gradients that many rays share (zeroed by the
// caller): the planes (B,3,H,W,C) at strides planes_s (the caller gives it the planes' own
// layout) and the folded decoder, w1 (Hd, C), b1, w2 (O1, Hd), b2. The decoder's are the task's
// own. The planes' are the task's own when row_locks is null (summed after, in task order:
// deterministic), else shared by every task, each texel row (b, plane, y) guarded by its spin
// lock, row_locks[(b * 3 + plane) * H + y] (one planes-sized buffer in all; the order of the adds,
// so the last bits, vary from run to run).
struct GradBuffers {
  float *planes, *w1, *b1, *w2, *b2;
  unsigned char* row_locks;
  PlaneStrides planes_s;
};

// Each kernel handles the flattened rays (or points) [begin, end).
struct CpuKernels {
  void (*render)(const RenderArgs&, long begin, long end);
  void (*sample_decode)(const SampleDecodeArgs&, long begin, long end);
  void (*march)(const MarchArgs&, long begin, long end);
  void (*importance)(const ImportanceArgs&, long begin, long end);
  void (*render_backward)(const RenderGradArgs&, const GradBuffers&, long begin, long end);
  const char* isa;
};

// The kernels for this CPU: AVX2+FMA when it has them, else the baseline build.
const CpuKernels& cpu_kernels();

}  // namespace rtgaze
