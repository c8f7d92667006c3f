// The decoder MLP on the CPU, a block of samples at a time. Each layer, and each product of the
// backward, is a small matrix product computed by one register-blocked micro-kernel (4 rows x 16
// columns of the output in 8 AVX registers): a weight row is loaded once per 4 samples, and 8
// independent accumulators hide the FMA latency. One sample at a time (a matrix-vector product
// per layer) was bound by the latency of its few accumulator chains and by loads.
// Included by kernels_impl.h (per-ISA namespace); same rules.

// C[s][0:8 NV] (+)= sum_k A[s am + k ak] B[k ldb + 0:8 NV] for s < MS, C at row stride ldc. The
// product is summed in registers from zero, then stored or added to C (accumulate).
template <int MS, int NV>
static inline __attribute__((always_inline)) void gemm_tile(int K, const float* A, long am, long ak, const float* B,
                                                            long ldb, float* C, long ldc, bool accumulate) {
  rtg_v8 acc[MS][NV];
#pragma GCC unroll 4
  for (int s = 0; s < MS; ++s) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[s][v] = rtg_v8{};
  }
  for (int k = 0; k < K; ++k) {
    rtg_v8 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) __builtin_memcpy(&b[v], B + k * ldb + 8 * v, sizeof(rtg_v8));
#pragma GCC unroll 4
    for (int s = 0; s < MS; ++s) {
      const float a = A[s * am + k * ak];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[s][v] += a * b[v];
    }
  }
#pragma GCC unroll 4
  for (int s = 0; s < MS; ++s) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      rtg_v8 c = acc[s][v];
      if (accumulate) {
        rtg_v8 old;
        __builtin_memcpy(&old, C + s * ldc + 8 * v, sizeof(rtg_v8));
        c += old;
      }
      __builtin_memcpy(C + s * ldc + 8 * v, &c, sizeof(rtg_v8));
    }
  }
}

// One row of C (1 x 8 NV): the k steps dealt round-robin to 4 sets of accumulators, summed at the
// end, so that 4 NV independent chains hide the FMA latency (one set would wait on each add: the
// biases' gradients and the last row of an M that is not a multiple of 4).
template <int NV>
static inline __attribute__((always_inline)) void gemm_row(int K, const float* A, long ak, const float* B, long ldb,
                                                           float* C, bool accumulate) {
  rtg_v8 acc[4][NV];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[j][v] = rtg_v8{};
  }
  int k = 0;
  for (; k + 4 <= K; k += 4) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const float a = A[(k + j) * ak];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        rtg_v8 b;
        __builtin_memcpy(&b, B + (k + j) * ldb + 8 * v, sizeof(rtg_v8));
        acc[j][v] += a * b;
      }
    }
  }
  for (; k < K; ++k) {
    const float a = A[k * ak];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      rtg_v8 b;
      __builtin_memcpy(&b, B + k * ldb + 8 * v, sizeof(rtg_v8));
      acc[0][v] += a * b;
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    rtg_v8 c = (acc[0][v] + acc[1][v]) + (acc[2][v] + acc[3][v]);
    if (accumulate) {
      rtg_v8 old;
      __builtin_memcpy(&old, C + 8 * v, sizeof(rtg_v8));
      c += old;
    }
    __builtin_memcpy(C + 8 * v, &c, sizeof(rtg_v8));
  }
}

// Rows [0, M) of C in tiles of 4 (then single rows) for one column block of 8 NV.
template <int NV>
static void gemm_columns(int M, int K, const float* A, long am, long ak, const float* B, long ldb, float* C, long ldc,
                         bool accumulate) {
  int m = 0;
  for (; m + 4 <= M; m += 4) gemm_tile<4, NV>(K, A + m * am, am, ak, B, ldb, C + m * ldc, ldc, accumulate);
  for (; m < M; ++m) gemm_row<NV>(K, A + m * am, ak, B, ldb, C + m * ldc, accumulate);
}

// C (M x N, row stride ldc) = or += A B: A (M x K), element (m, k) at A[m am + k ak] (so a
// transposed operand is a swap of strides), B (K x N) at row stride ldb. Columns in blocks of 16
// and 8; a width that is not a multiple of 8 (decoders other than EG3D's) ends in scalar columns.
static void gemm(int M, int N, int K, const float* A, long am, long ak, const float* B, long ldb, float* C, long ldc,
                 bool accumulate) {
  int n = 0;
  for (; n + 16 <= N; n += 16) gemm_columns<2>(M, K, A, am, ak, B + n, ldb, C + n, ldc, accumulate);
  for (; n + 8 <= N; n += 8) gemm_columns<1>(M, K, A, am, ak, B + n, ldb, C + n, ldc, accumulate);
  for (; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      float s = 0.0f;
      for (int k = 0; k < K; ++k) s += A[m * am + k * ak] * B[k * ldb + n];
      C[m * ldc + n] = accumulate ? C[m * ldc + n] + s : s;
    }
  }
}

// sum_i a[i] b[i] over n floats, 8 lanes at a time in registers.
static inline float dot_n(const float* a, const float* b, int n) {
  rtg_v8 acc = rtg_v8{};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    rtg_v8 x, y;
    __builtin_memcpy(&x, a + i, sizeof(rtg_v8));
    __builtin_memcpy(&y, b + i, sizeof(rtg_v8));
    acc += x * y;
  }
  float s = rtg_hsum8(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Scratch of decode_block for up to n samples.
struct DecodeScratch {
  float *hid, *e;
  static long floats(const DecoderArgs& D, int n) { return 2L * n * D.Hd; }
  DecodeScratch(const DecoderArgs& D, int n, float* buf) : hid(buf), e(buf + static_cast<long>(n) * D.Hd) {}
};

// OSG decoder on n feature vectors feat (n, C) with the folded, transposed weights: sigma_raw
// into sig[n], the widened colours into col (n, O). act (n, Hd), when given, receives the hidden
// activations and dact (n, Hd) their softplus' (what a recomputing backward needs).
static void decode_block(const DecoderArgs& D, int C, int n, const float* feat, const DecodeScratch& sc, float* sig,
                         float* col, float* act = nullptr, float* dact = nullptr) {
  const int Hd = D.Hd, O = D.O1 - 1;
  float* hid = act ? act : sc.hid;
  const long nh = static_cast<long>(n) * Hd;
  for (int s = 0; s < n; ++s) __builtin_memcpy(hid + static_cast<long>(s) * Hd, D.b1, sizeof(float) * Hd);
  gemm(n, Hd, C, feat, C, 1, D.w1t, Hd, hid, Hd, true);
  // Every exp, then every log (see rtg_softplus_exp).
  float* e = sc.e;
  RTG_CHANNEL_LOOP
  for (long i = 0; i < nh; ++i) e[i] = rtg_softplus_exp(hid[i]);
  if (dact) {
    RTG_CHANNEL_LOOP
    for (long i = 0; i < nh; ++i) dact[i] = rtg_softplus_grad_from(hid[i], e[i]);
  }
  RTG_CHANNEL_LOOP
  for (long i = 0; i < nh; ++i) hid[i] = rtg_softplus_from(hid[i], e[i]);
  // The colours' pre-activations in place in col, then sigma_raw (w2's row 0) apart.
  for (int s = 0; s < n; ++s) __builtin_memcpy(col + static_cast<long>(s) * O, D.b2 + 1, sizeof(float) * O);
  gemm(n, O, Hd, hid, Hd, 1, D.w2t, O, col, O, true);
  const long no = static_cast<long>(n) * O;
  RTG_CHANNEL_LOOP
  for (long i = 0; i < no; ++i) col[i] = rtg_widened_sigmoid(col[i]);
  for (int s = 0; s < n; ++s) sig[s] = D.b2[0] + dot_n(hid + static_cast<long>(s) * Hd, D.w2, Hd);
}
