// The render op's backward on the CPU, a recompute (Lightplane-style): per ray, the forward is
// run again from the op's inputs (depths, taps, decoder activations, importance sampling, merge
// order), kept for that ray only, then run backwards: the march, the decoder, the bilinear taps.
// Included by kernels_impl.h (per-ISA namespace); same rules.

// out[0:n] (+)= sum_k coef[k * coef_stride] * rows[k][0:n], row k at base + idx(k) * row_stride with
// idx(k) = ord[k] (or k when ord is null): the matrix products of the decoder's backward, written
// as sums of scaled rows so that every inner loop is a vector FMA (no horizontal sums). NF > 0:
// a compile-time n, multiple of 8, whose sums stay in AVX registers (see rtg_v8).
template <int NF>
static void sum_rows(int n_, int K, const float* coef, int coef_stride, const float* base, long row_stride,
                     const int* ord, float* out, bool accumulate) {
  const int n = RTG_SIZE(NF, n_);
  if (NF > 0 && NF % 8 == 0) {
    constexpr int NV = NF > 0 ? NF / 8 : 1;
    rtg_v8 acc[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = rtg_v8{};
    for (int k = 0; k < K; ++k) {
      const float c = coef[static_cast<long>(k) * coef_stride];
      const float* row = base + (ord ? ord[k] : k) * row_stride;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        rtg_v8 r;
        __builtin_memcpy(&r, row + 8 * v, sizeof(r));
        acc[v] += c * r;
      }
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      rtg_v8 o = rtg_v8{};
      if (accumulate) __builtin_memcpy(&o, out + 8 * v, sizeof(o));
      o += acc[v];
      __builtin_memcpy(out + 8 * v, &o, sizeof(o));
    }
    return;
  }
  if (!accumulate) {
    for (int i = 0; i < n; ++i) out[i] = 0.0f;
  }
  for (int k = 0; k < K; ++k) {
    const float c = coef[static_cast<long>(k) * coef_stride];
    const float* row = base + (ord ? ord[k] : k) * row_stride;
    RTG_CHANNEL_LOOP
    for (int i = 0; i < n; ++i) out[i] += c * row[i];
  }
}

template <int CF, int HF, int OF>
static void render_backward_sized(const RenderGradArgs& g, const GradBuffers& gb, long begin, long end) {
  const RenderArgs& a = *g.fwd;
  const PlanesArgs& P = a.planes;
  const DecoderArgs& D = a.dec;
  const int N = a.N, Nf = a.Nf, S = N + Nf, C = RTG_SIZE(CF, P.C), Hd = RTG_SIZE(HF, D.Hd);
  const int O1 = RTG_SIZE(OF, D.O1), O = O1 - 1;
  // Per sample (0..N-1 coarse, N..S-1 fine): depth, sigma_raw, colour, features, activations and
  // their softplus'; the merged copies the march takes; per merged sample the gradients of the
  // decoder's outputs (gout, O1) and hidden pre-activations (gh, Hd); scratch.
  const long n_buf = 2L * S + static_cast<long>(S) * (O + C + 2 * Hd) + 2L * S + static_cast<long>(S) * O + S +
                     static_cast<long>(S) * O + static_cast<long>(S) * (O1 + Hd) + 3L * S + 3L * N + O1 + C;
  float* buf = new float[n_buf];
  float *t = buf, *sig = t + S, *col = sig + S, *feat = col + static_cast<long>(S) * O;
  float *act = feat + static_cast<long>(S) * C, *dact = act + static_cast<long>(S) * Hd;
  float *tm = dact + static_cast<long>(S) * Hd, *sm = tm + S, *cm = sm + S, *g_sig = cm + static_cast<long>(S) * O;
  float *g_col = g_sig + S, *gout = g_col + static_cast<long>(S) * O, *gh = gout + static_cast<long>(S) * O1;
  float *march_scratch = gh + static_cast<long>(S) * Hd, *w = march_scratch + 3L * S, *cdf = w + N;
  float *bins = cdf + N, *out = bins + N, *gf = out + O1;
  int* ord = new int[S];
  for (long i = begin; i < end; ++i) {
    const long b = i / a.R;
    const float *o = a.origins + 3 * i, *d = a.dirs + 3 * i;
    const float* planes_b = P.data + b * P.s.b;
    float* gplanes_b = gb.planes + b * gb.planes_s.b;
    unsigned char* locks_b = gb.row_locks ? gb.row_locks + b * 3L * P.H : nullptr;
    auto eval = [&](int j0, int n) {  // the forward's sample+decode, keeping what the backward needs
      for (int j = j0; j < j0 + n; ++j) {
        const float p[3] = {o[0] + t[j] * d[0], o[1] + t[j] * d[1], o[2] + t[j] * d[2]};
        float* fj = feat + static_cast<long>(j) * C;
        triplane_features<CF>(P, planes_b, p, a.box_warp, a.plane_set, fj);
        rtg_decode<CF, HF, OF>(fj, C, Hd, O1, D.w1t, D.b1, D.w2t, D.b2, act + static_cast<long>(j) * Hd, out, &sig[j],
                               col + static_cast<long>(j) * O, dact + static_cast<long>(j) * Hd);
      }
    };
    coarse_depths(a, i, t);
    eval(0, N);
    if (Nf > 0) {
      fine_depths(a, i, t, sig, w, cdf, bins, t + N);
      eval(N, Nf);
      rtg_merge_order(t, N, t + N, Nf, ord);
    } else {
      for (int k = 0; k < S; ++k) ord[k] = k;
    }
    for (int k = 0; k < S; ++k) {
      const int j = ord[k];
      tm[k] = t[j];
      sm[k] = sig[j];
      for (int c = 0; c < O; ++c) cm[static_cast<long>(k) * O + c] = col[static_cast<long>(j) * O + c];
    }
    rtg_march_backward(tm, sm, cm, S, O, a.white_back, g.g_rgb + i * O, g.g_depth[i], g.g_wsum[i], g_sig, g_col,
                       march_scratch);
    float g_o[3] = {0.0f, 0.0f, 0.0f}, g_d[3] = {0.0f, 0.0f, 0.0f};
    for (int k = 0; k < S; ++k) {
      const long j = ord[k];
      // The decoder's outputs: sigma_raw as is; colour = sigmoid(z) * 1.002 - 0.001, and
      // sigmoid(z) = (colour + 0.001) / 1.002.
      float* go = gout + static_cast<long>(k) * O1;
      go[0] = g_sig[k];
      const float* cj = col + j * O;
      const float* gc = g_col + static_cast<long>(k) * O;
      RTG_CHANNEL_LOOP
      for (int c = 0; c < O; ++c) {
        const float sg = (cj[c] + 0.001f) * (1.0f / 1.002f);
        go[c + 1] = gc[c] * (1.002f * sg * (1.0f - sg));
      }
      // Hidden layer: dL/dh = (w2^T gout) * softplus'(h); features: dL/df = w1^T dL/dh.
      float* ghk = gh + static_cast<long>(k) * Hd;
      sum_rows<HF>(Hd, O1, go, 1, D.w2, Hd, nullptr, ghk, false);
      const float* dj = dact + j * Hd;
      RTG_CHANNEL_LOOP
      for (int h = 0; h < Hd; ++h) ghk[h] *= dj[h];
      sum_rows<CF>(C, Hd, ghk, 1, D.w1, C, nullptr, gf, false);
      const float p[3] = {o[0] + t[j] * d[0], o[1] + t[j] * d[1], o[2] + t[j] * d[2]};
      float g_p[3];
      triplane_backward<CF>(P, planes_b, gb.planes_s, gplanes_b, locks_b, p, a.box_warp, a.plane_set, gf, g_p);
      for (int x = 0; x < 3; ++x) {  // p = o + t d
        g_o[x] += g_p[x];
        g_d[x] += t[j] * g_p[x];
      }
    }
    // The weights' gradients, summed over the ray's samples before touching the buffers:
    // dL/dw2[o] = sum_k gout_k[o] act_k, dL/dw1[h] = sum_k gh_k[h] feat_k, and the biases.
    for (int r = 0; r < O1; ++r) sum_rows<HF>(Hd, S, gout + r, O1, act, Hd, ord, gb.w2 + static_cast<long>(r) * Hd, true);
    for (int h = 0; h < Hd; ++h) sum_rows<CF>(C, S, gh + h, Hd, feat, C, ord, gb.w1 + static_cast<long>(h) * C, true);
    for (int k = 0; k < S; ++k) {
      RTG_CHANNEL_LOOP
      for (int r = 0; r < O1; ++r) gb.b2[r] += gout[static_cast<long>(k) * O1 + r];
      RTG_CHANNEL_LOOP
      for (int h = 0; h < Hd; ++h) gb.b1[h] += gh[static_cast<long>(k) * Hd + h];
    }
    for (int x = 0; x < 3; ++x) {
      g.g_origins[3 * i + x] = g_o[x];
      g.g_dirs[3 * i + x] = g_d[x];
    }
  }
  delete[] ord;
  delete[] buf;
}

static void render_backward(const RenderGradArgs& g, const GradBuffers& gb, long begin, long end) {
  if (is_eg3d_decoder(g.fwd->planes, g.fwd->dec)) render_backward_sized<32, 64, 33>(g, gb, begin, end);
  else render_backward_sized<0, 0, 0>(g, gb, begin, end);
}
