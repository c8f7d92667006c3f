// The render op's backward on the CPU, a recompute (Lightplane-style): per ray, the forward is
// run again from the op's inputs (depths, taps, decoder activations, importance sampling, merge
// order), kept for that ray only, then run backwards: the march, the decoder (its products over
// the ray's samples by decode_impl.h's micro-kernel), the bilinear taps.
// Included by kernels_impl.h (per-ISA namespace); same rules.

template <int CF>
static void render_backward_sized(const RenderGradArgs& g, const GradBuffers& gb, long begin, long end) {
  const RenderArgs& a = *g.fwd;
  const PlanesArgs& P = a.planes;
  const DecoderArgs& D = a.dec;
  const int N = a.N, Nf = a.Nf, S = N + Nf, C = P.C, Hd = D.Hd, O1 = D.O1, O = O1 - 1;
  const bool ray_grads = g.g_origins != nullptr;
  // Per sample j (0..N-1 coarse, N..S-1 fine): depth, sigma_raw, colour, features, hidden
  // activations and their softplus'; the merged copies the march takes and the gradients it
  // gives (merged order); per sample j again the gradients of the decoder's outputs (gout, O1),
  // hidden pre-activations (gh, Hd) and features (gf, C); scratch.
  const long n_buf = 2L * S + static_cast<long>(S) * (O + C + 2 * Hd) + 2L * S + static_cast<long>(S) * O + S +
                     static_cast<long>(S) * O + static_cast<long>(S) * (O1 + Hd + C) + 4L * S + 3L * N +
                     DecodeScratch::floats(D, S);
  float* buf = new float[n_buf];
  float *t = buf, *sig = t + S, *col = sig + S, *feat = col + static_cast<long>(S) * O;
  float *act = feat + static_cast<long>(S) * C, *dact = act + static_cast<long>(S) * Hd;
  float *tm = dact + static_cast<long>(S) * Hd, *sm = tm + S, *cm = sm + S, *g_sig = cm + static_cast<long>(S) * O;
  float *g_col = g_sig + S, *gout = g_col + static_cast<long>(S) * O, *gh = gout + static_cast<long>(S) * O1;
  float *gf = gh + static_cast<long>(S) * Hd, *march_scratch = gf + static_cast<long>(S) * C;
  float *w = march_scratch + 4L * S, *cdf = w + N, *bins = cdf + N;
  const DecodeScratch sc(D, S, bins + N);
  int* ord = new int[S];
  PointTaps* taps = new PointTaps[S];  // each sample's, from the recompute's gather to the scatter
  for (long i = begin; i < end; ++i) {
    const long b = i / a.R;
    const float *o = a.origins + 3 * i, *d = a.dirs + 3 * i;
    const float* planes_b = P.data + b * P.s.b;
    float* gplanes_b = gb.planes + b * gb.planes_s.b;
    unsigned char* locks_b = gb.row_locks ? gb.row_locks + b * 3L * P.H : nullptr;
    auto eval = [&](int j0, int n) {  // the forward's sample+decode, keeping what the backward needs
      const long jc = static_cast<long>(j0) * C, jh = static_cast<long>(j0) * Hd;
      ray_features<CF>(a, b, o, d, t + j0, n, feat + jc, taps + j0);
      decode_block(D, C, n, feat + jc, sc, sig + j0, col + static_cast<long>(j0) * O, act + jh, dact + jh);
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
    // The decoder's outputs, back in sample order: sigma_raw as is; colour = sigmoid(z) * 1.002 -
    // 0.001, and sigmoid(z) = (colour + 0.001) / 1.002.
    for (int k = 0; k < S; ++k) {
      const long j = ord[k];
      float* go = gout + j * O1;
      go[0] = g_sig[k];
      const float* cj = col + j * O;
      const float* gc = g_col + static_cast<long>(k) * O;
      RTG_CHANNEL_LOOP
      for (int c = 0; c < O; ++c) {
        const float sg = (cj[c] + 0.001f) * (1.0f / 1.002f);
        go[c + 1] = gc[c] * (1.002f * sg * (1.0f - sg));
      }
    }
    // Hidden layer: dL/dh = (gout w2) * softplus'(h); features: dL/df = dL/dh w1.
    gemm(S, Hd, O1, gout, O1, 1, D.w2, Hd, gh, Hd, false);
    RTG_CHANNEL_LOOP
    for (long x = 0; x < static_cast<long>(S) * Hd; ++x) gh[x] *= dact[x];
    gemm(S, C, Hd, gh, Hd, 1, D.w1, C, gf, C, false);
    float g_o[3] = {0.0f, 0.0f, 0.0f}, g_d[3] = {0.0f, 0.0f, 0.0f};
    for (int j = 0; j < S; ++j) {
      float g_p[3];
      triplane_backward<CF>(P, planes_b, gb.planes_s, gplanes_b, locks_b, taps[j], a.box_warp, a.plane_set,
                            gf + static_cast<long>(j) * C, ray_grads ? g_p : nullptr);
      for (int x = 0; ray_grads && x < 3; ++x) {  // p = o + t d
        g_o[x] += g_p[x];
        g_d[x] += t[j] * g_p[x];
      }
    }
    // The weights' gradients, summed over the ray's samples before they are added to the task's:
    // dL/dw2 = gout^T act, dL/dw1 = gh^T feat, and the biases.
    gemm(O1, Hd, S, gout, 1, O1, act, Hd, gb.w2, Hd, true);
    gemm(Hd, C, S, gh, 1, Hd, feat, C, gb.w1, C, true);
    const float one = 1.0f;  // the biases': the column sums, a row of ones times gout and gh (sums in registers)
    gemm(1, O1, S, &one, 0, 0, gout, O1, gb.b2, O1, true);
    gemm(1, Hd, S, &one, 0, 0, gh, Hd, gb.b1, Hd, true);
    for (int x = 0; ray_grads && x < 3; ++x) {
      g.g_origins[3 * i + x] = g_o[x];
      g.g_dirs[3 * i + x] = g_d[x];
    }
  }
  delete[] taps;
  delete[] ord;
  delete[] buf;
}

static void render_backward(const RenderGradArgs& g, const GradBuffers& gb, long begin, long end) {
  if (has_eg3d_channels(g.fwd->planes)) render_backward_sized<32>(g, gb, begin, end);
  else render_backward_sized<0>(g, gb, begin, end);
}
