// Host check of the CUDA kernels' index math (rtgaze/tile.h), run by tests/test_cuda_layout.py:
// the MMA fragments are the PTX ISA's tables (sm_75's pair of k8 MMAs included) and a warp GEMM
// emulated through those tables (swizzled weights, fragment offsets) equals the plain product;
// every MMA fragment, swizzled weight slot and texel-gather lane covers its elements exactly once,
// the forward's shared-memory loads are free of bank conflicts, and the shared-memory plans fit.
// Prints one line per failed check and exits non-zero if any.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "rtgaze/tile.h"

using namespace rtg_tile;
static int failures = 0;
#define CHECK(cond, ...)                \
  do {                                  \
    if (!(cond)) {                      \
      std::printf("FAIL: " __VA_ARGS__); \
      std::printf("\n");                \
      ++failures;                       \
    }                                   \
  } while (0)

// Every cell of a rows x cols grid hit exactly once by f(lane, e, &r, &c) over 32 lanes x elems.
template <class F>
static void covers_once(const char* what, int rows, int cols, int elems, F f) {
  std::vector<int> hits(rows * cols, 0);
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < elems; ++e) {
      int r, c;
      f(lane, e, &r, &c);
      CHECK(r >= 0 && r < rows && c >= 0 && c < cols, "%s: lane %d element %d -> (%d, %d) out of range", what, lane,
            e, r, c);
      if (r >= 0 && r < rows && c >= 0 && c < cols) ++hits[r * cols + c];
    }
  }
  for (int i = 0; i < rows * cols; ++i) {
    CHECK(hits[i] == 1, "%s: (%d, %d) covered %d times", what, i / cols, i % cols, hits[i]);
  }
}

// The most lanes of one shared-memory wavefront that hit the same bank at different words:
// 32-bit loads are one wavefront per warp; 64-bit loads one per half-warp.
static int conflict_degree(const std::vector<long>& words, int width_words) {
  const int group = width_words == 1 ? 32 : 16;
  int worst = 1;
  for (int g0 = 0; g0 < 32; g0 += group) {
    for (int bank = 0; bank < 32; ++bank) {
      std::vector<long> distinct;
      for (int l = g0; l < g0 + group; ++l) {
        for (int w = 0; w < width_words; ++w) {
          const long word = words[l] + w;
          if (word % 32 != bank) continue;
          bool seen = false;
          for (long d : distinct) seen = seen || d == word;
          if (!seen) distinct.push_back(word);
        }
      }
      if (static_cast<int>(distinct.size()) > worst) worst = static_cast<int>(distinct.size());
    }
  }
  return worst;
}

// The PTX ISA's fragment tables ("Matrix fragments for mma.m16n8k8", .tf32 and .f16, and
// "mma.m16n8k16", .f16/.bf16) as the ISA words them, apart from tile.h's formulas: the (row, col)
// of element i of A, B and C/D in lane (groupID = lane >> 2, threadID_in_group = lane % 4).
static void ptx_a(int kind, int lane, int i, int* row, int* col) {
  const int group = lane >> 2, tig = lane % 4;
  if (kind == kTf32Kind) {  // m16n8k8 .tf32: a0..a3
    *row = (i == 0 || i == 2) ? group : group + 8;
    *col = (i == 0 || i == 1) ? tig : tig + 4;
  } else {  // m16n8k16 .f16/.bf16: a0..a7
    *row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
    *col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
  }
}
static void ptx_b(int kind, int lane, int i, int* row, int* col) {
  const int group = lane >> 2, tig = lane % 4;
  *col = group;
  *row = kind == kTf32Kind ? (i == 0 ? tig : tig + 4) : tig * 2 + (i & 1) + (i >= 2 ? 8 : 0);
}
static void ptx_c(int lane, int i, int* row, int* col) {
  const int group = lane >> 2, tig = lane % 4;
  *row = i < 2 ? group : group + 8;
  *col = tig * 2 + (i & 1);
}
// m16n8k8 .f16 (sm_75, which has no m16n8k16): A a0..a3, B b0..b1.
static void ptx_a_k8_f16(int lane, int i, int* row, int* col) {
  *row = i < 2 ? (lane >> 2) : (lane >> 2) + 8;
  *col = (lane % 4) * 2 + (i & 1);
}
static void ptx_b_k8_f16(int lane, int i, int* row, int* col) {
  *row = (lane % 4) * 2 + (i & 1);
  *col = lane >> 2;
}

// One warp-level MMA as the hardware does it: the lanes' registers placed by the PTX tables,
// D = A B + C, D handed back to the lanes by the C table. a[lane][i], b[lane][i], c[lane][i].
static void ptx_mma(int kind, const double a[32][8], const double b[32][4], double c[32][4]) {
  const int K = k_step(kind);
  double A[16][16] = {}, B[16][8] = {}, D[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < a_elems(kind); ++i) {
      int r, k;
      ptx_a(kind, l, i, &r, &k);
      A[r][k] = a[l][i];
    }
    for (int i = 0; i < b_elems(kind); ++i) {
      int k, n;
      ptx_b(kind, l, i, &k, &n);
      B[k][n] = b[l][i];
    }
    for (int i = 0; i < 4; ++i) {
      int r, n;
      ptx_c(l, i, &r, &n);
      D[r][n] = c[l][i];
    }
  }
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n)
      for (int k = 0; k < K; ++k) D[r][n] += A[r][k] * B[k][n];
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i) {
      int r, n;
      ptx_c(l, i, &r, &n);
      c[l][i] = D[r][n];
    }
  }
}

// tile.cuh's warp_gemm on the host: A (16 x K) read per lane through a_elem, W (K x N) swizzled
// as swizzle_weights writes it and read at warp_gemm's fragment offsets, every K step through
// ptx_mma, the result read back through c_elem. Must equal A W: checks the layouts, the swizzle and
// the fragment addressing together (a permutation that still covers every element would not).
static void check_warp_gemm(int kind, int K, int N) {
  const int NT = N / 8, elems = b_elems(kind), per_tile = 32 * elems, kk = k_step(kind);
  std::vector<double> A(16 * K), W(K * N), sw(K * N);
  for (int i = 0; i < 16 * K; ++i) A[i] = (i * 7 + 3) % 11 - 5;  // small integers: exact sums
  for (int i = 0; i < K * N; ++i) W[i] = (i * 5 + 1) % 13 - 6;
  for (int i = 0; i < K * N; ++i) {  // swizzle_weights
    const int tile_i = i / per_tile, within = i % per_tile, lane = within / elems, e = within % elems;
    int k, n;
    b_elem(kind, lane, e, &k, &n);
    sw[i] = W[(k + (tile_i / NT) * kk) * N + n + (tile_i % NT) * 8];
  }
  std::vector<double> acc(32 * NT * 4, 0.0);
  for (int ks = 0; ks < K / kk; ++ks) {
    double a[32][8] = {};
    for (int l = 0; l < 32; ++l) {
      for (int e = 0; e < a_elems(kind); ++e) {
        int r, c;
        a_elem(kind, l, e, &r, &c);
        a[l][e] = A[r * K + ks * kk + c];
      }
    }
    for (int nt = 0; nt < NT; ++nt) {
      double b[32][4] = {}, c[32][4];
      for (int l = 0; l < 32; ++l) {
        for (int e = 0; e < elems; ++e) b[l][e] = sw[((ks * NT + nt) * 32 + l) * elems + e];
        for (int e = 0; e < 4; ++e) c[l][e] = acc[(l * NT + nt) * 4 + e];
      }
      ptx_mma(kind, a, b, c);
      for (int l = 0; l < 32; ++l)
        for (int e = 0; e < 4; ++e) acc[(l * NT + nt) * 4 + e] = c[l][e];
    }
  }
  int bad = 0;
  for (int l = 0; l < 32; ++l) {
    for (int nt = 0; nt < NT; ++nt) {
      for (int e = 0; e < 4; ++e) {
        int r, c;
        c_elem(l, e, &r, &c);
        c += nt * 8;
        double want = 0.0;
        for (int k = 0; k < K; ++k) want += A[r * K + k] * W[k * N + c];
        bad += acc[(l * NT + nt) * 4 + e] != want;
      }
    }
  }
  CHECK(bad == 0, "%s warp_gemm %dx%d emulated through the PTX tables: %d of %d outputs wrong",
        kind == kTf32Kind ? "tf32" : "f16", K, N, bad, 16 * N);
}

int main() {
  // tile.h's fragment formulas are the PTX ISA's tables, element by element.
  for (int kind : {kTf32Kind, kF16Kind}) {
    for (int lane = 0; lane < 32; ++lane) {
      for (int e = 0; e < a_elems(kind); ++e) {
        int r, c, pr, pc;
        a_elem(kind, lane, e, &r, &c);
        ptx_a(kind, lane, e, &pr, &pc);
        CHECK(r == pr && c == pc, "kind %d A lane %d a%d: (%d, %d), PTX (%d, %d)", kind, lane, e, r, c, pr, pc);
      }
      for (int e = 0; e < b_elems(kind); ++e) {
        int k, n, pk, pn;
        b_elem(kind, lane, e, &k, &n);
        ptx_b(kind, lane, e, &pk, &pn);
        CHECK(k == pk && n == pn, "kind %d B lane %d b%d: (%d, %d), PTX (%d, %d)", kind, lane, e, k, n, pk, pn);
      }
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 4; ++e) {
      int r, c, pr, pc;
      c_elem(lane, e, &r, &c);
      ptx_c(lane, e, &pr, &pc);
      CHECK(r == pr && c == pc, "C lane %d c%d: (%d, %d), PTX (%d, %d)", lane, e, r, c, pr, pc);
    }
    // sm_75's mma_16<__half>: two m16n8k8 .f16, the first on registers a[0], a[1] and b0 (the
    // k16 fragment's elements 0..3 and 0..1), the second on a[2], a[3] and b1 at k + 8.
    for (int e = 0; e < 8; ++e) {
      int r, c, pr, pc;
      a_elem(kF16Kind, lane, e, &r, &c);
      ptx_a_k8_f16(lane, e % 4, &pr, &pc);
      CHECK(r == pr && c == pc + 8 * (e / 4), "sm_75 A lane %d element %d: (%d, %d), k8 half %d says (%d, %d)", lane,
            e, r, c, e / 4, pr, pc + 8 * (e / 4));
    }
    for (int e = 0; e < 4; ++e) {
      int k, n, pk, pn;
      b_elem(kF16Kind, lane, e, &k, &n);
      ptx_b_k8_f16(lane, e % 2, &pk, &pn);
      CHECK(k == pk + 8 * (e / 2) && n == pn, "sm_75 B lane %d element %d: (%d, %d)", lane, e, k, n);
    }
  }
  // Every GEMM shape the kernels run with swizzled weights (W2^T, K = 40, is tf32 only).
  for (int kind : {kTf32Kind, kF16Kind}) {
    check_warp_gemm(kind, kC, kHidden);
    check_warp_gemm(kind, kHidden, kOut1Pad);
    check_warp_gemm(kind, kHidden, kC);
  }
  check_warp_gemm(kTf32Kind, kOut1Pad, kHidden);
  for (int kind : {kTf32Kind, kF16Kind}) {
    const char* name = kind == kTf32Kind ? "tf32" : "f16";
    char what[64];
    std::snprintf(what, sizeof(what), "%s A", name);
    covers_once(what, 16, k_step(kind), a_elems(kind), [&](int l, int e, int* r, int* c) { a_elem(kind, l, e, r, c); });
    std::snprintf(what, sizeof(what), "%s B", name);
    covers_once(what, k_step(kind), 8, b_elems(kind), [&](int l, int e, int* k, int* n) { b_elem(kind, l, e, k, n); });
    // Swizzled weights: the builder's slot -> (k, n) (as csrc/cuda/tile.cuh's swizzle_weights) and
    // swizzled_index agree, and the slots of a K x N matrix are a permutation.
    const int shapes[4][2] = {{kC, kHidden}, {kHidden, kOut1Pad}, {kOut1Pad, kHidden}, {kHidden, kC}};
    for (const auto& sh : shapes) {
      const int K = sh[0], N = sh[1], n_tiles = N / 8, elems = b_elems(kind), per_tile = 32 * elems;
      if (K % k_step(kind) != 0) continue;  // W2^T (K = 40) is a tf32-only operand (the backward)
      std::vector<int> hits(K * N, 0);
      for (int i = 0; i < K * N; ++i) {
        const int tile_i = i / per_tile, within = i % per_tile, lane = within / elems, e = within % elems;
        int k, n;
        b_elem(kind, lane, e, &k, &n);
        k += (tile_i / n_tiles) * k_step(kind);
        n += (tile_i % n_tiles) * 8;
        CHECK(k < K && n < N, "%s swizzle %dx%d: slot %d -> (%d, %d)", name, K, N, i, k, n);
        if (k < K && n < N) {
          ++hits[k * N + n];
          CHECK(swizzled_index(kind, n_tiles, k, n) == i, "%s swizzle %dx%d: (%d, %d) at %d, index says %d", name, K, N,
                k, n, i, swizzled_index(kind, n_tiles, k, n));
        }
      }
      for (int i = 0; i < K * N; ++i) {
        CHECK(hits[i] == 1, "%s swizzle %dx%d: (%d, %d) %d times", name, K, N, i / N, i % N, hits[i]);
      }
    }
    // The forward's A loads from the activation tile (stride tile_ld): tf32 one word per element,
    // f16 one 64-bit pair per register; conflict-free.
    const int ld = tile_ld(kind);
    for (int e = 0; e < a_elems(kind); e += kind == kTf32Kind ? 1 : 2) {
      std::vector<long> words(32);
      for (int lane = 0; lane < 32; ++lane) {
        int r, c;
        a_elem(kind, lane, e, &r, &c);
        words[lane] = static_cast<long>(r) * ld + c;
      }
      const int deg = conflict_degree(words, kind == kTf32Kind ? 1 : 2);
      CHECK(deg == 1, "%s A load, element %d: %d-way bank conflict at stride %d", name, e, deg, ld);
    }
  }
  covers_once("C", 16, 8, 4, [](int l, int e, int* r, int* c) { c_elem(l, e, r, c); });
  // The gather: (row, channel) of the 16 x kC feature tile, over lanes, passes and a lane's V channels.
  for (int bytes : {4, 2}) {
    const int V = gather_vec(bytes), passes = gather_passes(bytes);
    covers_once(bytes == 4 ? "gather fp32" : "gather 16-bit", kRows, kC, passes * V, [&](int l, int e, int* r, int* c) {
      int ch0;
      gather_lane(bytes, l, e / V, r, &ch0);
      *c = ch0 + e % V;
    });
    CHECK(V * bytes == 16, "gather: %d-byte channels, %d per lane is not one 16-byte load", bytes, V);
  }
  // Shared-memory plans (opt-in limits per block: sm_90 227 KiB, sm_86/89 99 KiB, sm_75 64 KiB).
  const int sm90 = 232448, sm86 = 101376, sm75 = 65536;
  const int fwd32 = fwd_block_bytes(kTf32Kind), fwd16 = fwd_block_bytes(kF16Kind);
  CHECK(warps_for(fwd32, fwd_warp_bytes(kTf32Kind, 96, 48, 4), sm90, 4) == 4, "fwd 48+48 fp32 sm_90");
  CHECK(warps_for(fwd16, fwd_warp_bytes(kF16Kind, 96, 48, 2), sm90, 4) == 4, "fwd 48+48 fp16 sm_90");
  CHECK(warps_for(fwd_block_bytes(kTf32Kind), fwd_warp_bytes(kTf32Kind, 192, 96, 4), sm75, 4) >= 1, "fwd 96+96 sm_75");
  CHECK(warps_for(bwd_block_bytes(), bwd_warp_bytes(96, 48), sm90, 4) == 4, "bwd 48+48 sm_90");
  CHECK(warps_for(bwd_block_bytes(), bwd_warp_bytes(192, 96), sm86, 4) >= 1, "bwd 96+96 sm_86");
  // The plans in bytes (block, per warp), which rtgaze_fast/perf_model.py mirrors.
  for (int s : {96, 192}) {
    std::printf("plan fwd tf32 %d %d %d\n", s, fwd_block_bytes(kTf32Kind), fwd_warp_bytes(kTf32Kind, s, s / 2, 4));
    std::printf("plan fwd f16 %d %d %d\n", s, fwd_block_bytes(kF16Kind), fwd_warp_bytes(kF16Kind, s, s / 2, 2));
    std::printf("plan bwd tf32 %d %d %d\n", s, bwd_block_bytes(), bwd_warp_bytes(s, s / 2));
  }
  CHECK(warps_for(bwd_block_bytes(), bwd_warp_bytes(96, 48), sm75, 4) == 0,
        "bwd fits sm_75: the launcher's refusal is stale");
  std::printf(failures ? "%d checks failed\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
