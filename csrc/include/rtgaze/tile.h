// Index math of the CUDA kernels' warp tiles (csrc/cuda/tile.cuh), host and device, so that the
// CPU can check it (tests/test_cuda_layout.py compiles tests/cpp/tile_layout_check.cpp with g++):
// which (row, column) of an MMA operand each lane's registers hold, which texel channels a lane
// gathers, and how much shared memory a block needs.
//
// A warp renders one ray at a time; its samples go through the decoder 16 at a time, as the 16
// rows of mma.sync tiles (PTX ISA, "Matrix fragments for mma.m16n8k8" / "mma.m16n8k16"):
// g = lane / 4 (the group), t = lane % 4 (the thread in the group).
#pragma once
#include "common.h"

namespace rtg_tile {

constexpr int kRows = 16;     // samples per tile: the MMA's M
constexpr int kC = 32;        // feature channels (the glue pads smaller decoders)
constexpr int kHidden = 64;   // hidden units
constexpr int kOut1 = 33;     // sigma_raw + 32 colours
constexpr int kOut1Pad = 40;  // kOut1 rounded up to whole n8 tiles
constexpr int kMaxSamples = 192;

// The operand kinds: tf32 (m16n8k8; also the 3xTF32 split of fp32 and the FFMA fallback of sm_75,
// which reads the same layouts) and 16-bit (m16n8k16, fp16 or bf16).
enum Kind { kTf32Kind = 0, kF16Kind = 1 };
RTG_HD int k_step(int kind) { return kind == kTf32Kind ? 8 : 16; }

// A (16 x K step), 4 registers: tf32 one element each, f16 two (a pair of columns) each.
// tf32: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4).
// f16, element e = 2*reg + half: (g + 8*(reg&1), 2t + half + 8*(reg>>1)).
RTG_HD void a_elem(int kind, int lane, int e, int* row, int* col) {
  const int g = lane >> 2, t = lane & 3;
  if (kind == kTf32Kind) {
    *row = g + 8 * (e & 1);
    *col = t + 4 * (e >> 1);
  } else {
    const int reg = e >> 1, half = e & 1;
    *row = g + 8 * (reg & 1);
    *col = 2 * t + half + 8 * (reg >> 1);
  }
}
RTG_HD int a_elems(int kind) { return kind == kTf32Kind ? 4 : 8; }

// B (K step x 8), 2 registers: tf32 b0 (k=t, n=g), b1 (k=t+4, n=g); f16 element e (k = 2t + (e&1)
// + 8*(e>>1), n = g), 4 elements.
RTG_HD void b_elem(int kind, int lane, int e, int* k, int* n) {
  const int g = lane >> 2, t = lane & 3;
  *n = g;
  *k = kind == kTf32Kind ? t + 4 * e : 2 * t + (e & 1) + 8 * (e >> 1);
}
RTG_HD int b_elems(int kind) { return kind == kTf32Kind ? 2 : 4; }

// C/D (16 x 8) fp32, 4 registers: (g + 8*(e>>1), 2t + (e&1)).
RTG_HD void c_elem(int lane, int e, int* row, int* col) {
  *row = (lane >> 2) + 8 * (e >> 1);
  *col = 2 * (lane & 3) + (e & 1);
}

// A weight matrix W (K x N, row-major, zero beyond K0 x N0) is kept in shared memory in fragment
// order: tile (ks, nt) of K-step ks and n8 tile nt, lane, element e at
// ((ks * n_tiles + nt) * 32 + lane) * b_elems + e, so a lane loads its B fragment with one vector
// load (no bank conflicts, no index math in the loop). The inverse: where element (k, n) lives.
RTG_HD int swizzled_index(int kind, int n_tiles, int k, int n) {
  const int ks = k / k_step(kind), kk = k % k_step(kind), nt = n / 8, g = n % 8;
  int lane, e;
  if (kind == kTf32Kind) {
    lane = g * 4 + (kk & 3);
    e = kk >> 2;
  } else {
    lane = g * 4 + ((kk & 7) >> 1);
    e = (kk & 1) + 2 * (kk >> 3);
  }
  return ((ks * n_tiles + nt) * 32 + lane) * b_elems(kind) + e;
}

// The texel gather: a texel's kC channels are one 128-byte (fp32) or 64-byte (16-bit) run, read
// by kC / V lanes with one 16-byte vector load each (V = 16 / bytes per channel). The warp reads
// 32 / (kC / V) tile rows (samples) at once; pass p covers rows [p * slots, (p + 1) * slots).
RTG_HD int gather_vec(int channel_bytes) { return 16 / channel_bytes; }
RTG_HD int gather_slots(int channel_bytes) { return 32 / (kC / gather_vec(channel_bytes)); }
RTG_HD int gather_passes(int channel_bytes) { return kRows / gather_slots(channel_bytes); }
RTG_HD void gather_lane(int channel_bytes, int lane, int pass, int* row, int* ch0) {
  const int lanes_per_texel = kC / gather_vec(channel_bytes);
  *row = pass * gather_slots(channel_bytes) + lane / lanes_per_texel;
  *ch0 = (lane % lanes_per_texel) * gather_vec(channel_bytes);
}

// Row strides (floats) of the per-warp fp32 activation tiles: 68 (= 4 mod 32) puts the tf32 A
// loads (g * ld + t) on 32 distinct banks; 72 (= 8 mod 32) the f16 pair loads (g * ld + 2t, 64-bit).
RTG_HD int tile_ld(int kind) { return kind == kTf32Kind ? kHidden + 4 : kHidden + 8; }
// Colour rows in the per-warp store (odd: a C fragment's stores spread over the banks).
constexpr int kColLd = kOut1;

RTG_HD int align16(int bytes) { return (bytes + 15) / 16 * 16; }

// Shared memory of the forward (render) kernel. Block: W1 (kC x kHidden) and W2 (kHidden x
// kOut1Pad) in fragment order (4 bytes per element in the tf32 kinds, 2 in f16) and the fp32
// biases. Per warp: depths, raw densities, alphas/weights, merge order (S each), cdf and bins (N
// each), the colours (S x kColLd, col_bytes each), the activation tile, and 4 scalars.
RTG_HD int fwd_block_bytes(int kind) {
  const int elem = kind == kTf32Kind ? 4 : 2;
  return align16((kC * kHidden + kHidden * kOut1Pad) * elem) + align16((kHidden + kOut1Pad) * 4);
}
RTG_HD int fwd_warp_bytes(int kind, int S, int N, int col_bytes) {
  return align16(4 * (4 * S + 2 * N + 4)) + align16(S * kColLd * col_bytes) + align16(kRows * tile_ld(kind) * 4);
}

// Shared memory of the backward kernel (tf32 kinds only). Block: W1, W2 and their transposes in
// fragment order (W2^T padded to K = 40, W1^T is kHidden x kC), biases, and the block's decoder
// gradient sums (w1t, b1, w2t (kHidden x kOut1Pad), b2). Per warp: depths, raw densities, colour
// dots, merge order, merged depths, densities, dL/dsigma and colour weights, the march's scratch
// (3 S), cdf and bins, and five 16-row tiles: features and dL/dfeatures (kLdC), hidden activations and
// dL/dpre-activations (kLdH), dL/doutputs (kLdO). Strides 4 x odd (mod 32): conflict-free tf32 A loads.
constexpr int kLdC = kC + 4, kLdH = kHidden + 4, kLdO = kOut1Pad + 4;
RTG_HD int bwd_block_bytes() {
  const int w = 2 * kC * kHidden + 2 * kHidden * kOut1Pad;
  const int g = kC * kHidden + kHidden + kHidden * kOut1Pad + kOut1Pad;
  return align16(w * 4) + align16((kHidden + kOut1Pad) * 4) + align16(g * 4);
}
RTG_HD int bwd_warp_bytes(int S, int N) {
  return align16(4 * (11 * S + 2 * N + 8)) + align16(kRows * (2 * kLdC + 2 * kLdH + kLdO) * 4);
}

// Warps per block for a kernel: as many as fit in `smem_optin` bytes (the device's opt-in limit per
// block), at most `max_warps`; 0 when not even one fits.
RTG_HD int warps_for(int block_bytes, int warp_bytes, int smem_optin, int max_warps) {
  int w = (smem_optin - block_bytes) / warp_bytes;
  w = w > max_warps ? max_warps : w;
  return w < 0 ? 0 : w;
}

}  // namespace rtg_tile
