// The render op's backward on the CPU, a recompute (Lightplane-style): per ray, the forward is
// run again from the op's inputs (depths, taps, decoder activations, importance sampling, merge
// order), kept for that ray only, then run backwards: the march, the decoder, the bilinear taps.
// Included by kernels_impl.h (per-ISA namespace); same rules.

// The decoder's backward at one sample: from dL/dsigma_raw and dL/dcolour (O), accumulate the
// folded weights' gradients into gb and return dL/dfeature in gf[C]. feat: the sample's features,
// act: its hidden activations softplus(h), col: its widened-sigmoid colours. Scratch: gout[O1],
// gh[Hd].
template <int CF, int HF, int OF>
static void decoder_backward(const DecoderArgs& D, const GradBuffers& gb, int C_, const float* feat,
                             const float* act, const float* col, float g_sigma, const float* g_col, float* gout,
                             float* gh, float* gf) {
  const int C = RTG_SIZE(CF, C_), Hd = RTG_SIZE(HF, D.Hd), O1 = RTG_SIZE(OF, D.O1), O = O1 - 1;
  gout[0] = g_sigma;
  RTG_CHANNEL_LOOP
  for (int o = 0; o < O; ++o) {
    // colour = sigmoid(z) * 1.002 - 0.001, so sigmoid(z) = (colour + 0.001) / 1.002.
    const float sg = (col[o] + 0.001f) * (1.0f / 1.002f);
    gout[o + 1] = g_col[o] * (1.002f * sg * (1.0f - sg));
  }
  RTG_CHANNEL_LOOP
  for (int o = 0; o < O1; ++o) gb.b2[o] += gout[o];
  for (int h = 0; h < Hd; ++h) {
    const float* row = D.w2t + static_cast<long>(h) * O1;
    float* grow = gb.w2t + static_cast<long>(h) * O1;
    const float a = act[h];
    float acc = 0.0f;
    RTG_CHANNEL_LOOP
    for (int o = 0; o < O1; ++o) {
      acc += row[o] * gout[o];
      grow[o] += a * gout[o];
    }
    // softplus'(h) = sigmoid(h) = 1 - exp(-softplus(h)) (exactly 1 above the threshold, as in torch).
    gh[h] = acc * (1.0f - rtg_exp(-a));
  }
  RTG_CHANNEL_LOOP
  for (int h = 0; h < Hd; ++h) gb.b1[h] += gh[h];
  for (int c = 0; c < C; ++c) {
    const float* row = D.w1t + static_cast<long>(c) * Hd;
    float* grow = gb.w1t + static_cast<long>(c) * Hd;
    const float f = feat[c];
    float acc = 0.0f;
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) {
      acc += row[h] * gh[h];
      grow[h] += f * gh[h];
    }
    gf[c] = acc;
  }
}

// The triplane sampling's backward at point p: scatter dL/dfeature (gf[C]) into the planes'
// gradient through the bilinear weights (taps outside a plane get nothing, as they gave 0), and
// return dL/dp in g_p[3] through the weights' dependence on the position (grid_sample's grid
// gradient). NaN coordinates scatter nothing and give a NaN dL/dp.
template <int CF>
static void triplane_backward(const float* planes_b, float* gplanes_b, int H, int W, int C_, const float* p,
                              float box_warp, int plane_set, const float* gf, float* g_p) {
  const int C = RTG_SIZE(CF, C_);
  const float scale = 2.0f / box_warp;
  const float q[3] = {p[0] * scale, p[1] * scale, p[2] * scale};
  float gq[3] = {0.0f, 0.0f, 0.0f};
  bool nan = false;
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    long idx[4];
    float wts[4], tx, ty;
    if (!rtg_bilinear_taps_frac(H, W, q[iu], q[iv], idx, wts, &tx, &ty)) {
      nan = true;
      continue;
    }
    const long off = static_cast<long>(k) * H * W * C;
    // d(tap weight)/d(tx) and /d(ty) of the taps (x0,y0), (x1,y0), (x0,y1), (x1,y1).
    const float dwx[4] = {-(1.0f - ty), 1.0f - ty, -ty, ty};
    const float dwy[4] = {-(1.0f - tx), -tx, 1.0f - tx, tx};
    float gx = 0.0f, gy = 0.0f;
    for (int t = 0; t < 4; ++t) {
      if (idx[t] < 0) continue;
      const float* texel = planes_b + off + idx[t] * C;
      float* gtexel = gplanes_b + off + idx[t] * C;
      const float wt = wts[t] * (1.0f / 3.0f);  // the mean over the three planes
      float dot = 0.0f;
      RTG_CHANNEL_LOOP
      for (int c = 0; c < C; ++c) {
        dot += gf[c] * texel[c];
        gtexel[c] += wt * gf[c];
      }
      gx += dwx[t] * dot;
      gy += dwy[t] * dot;
    }
    // ix = ((u + 1) W - 1) / 2, so dix/du = W / 2; and the 1/3 of the mean.
    gq[iu] += gx * (W * 0.5f / 3.0f);
    gq[iv] += gy * (H * 0.5f / 3.0f);
  }
  for (int j = 0; j < 3; ++j) g_p[j] = nan ? __builtin_nanf("") : gq[j] * scale;
}

template <int CF, int HF, int OF>
static void render_backward_sized(const RenderGradArgs& g, const GradBuffers& gb, long begin, long end) {
  const RenderArgs& a = *g.fwd;
  const PlanesArgs& P = a.planes;
  const DecoderArgs& D = a.dec;
  const int N = a.N, Nf = a.Nf, S = N + Nf, O = D.O1 - 1, C = P.C, Hd = D.Hd;
  // Per sample (0..N-1 coarse, N..S-1 fine): depth, sigma_raw, colour, features, activations;
  // then the merged copies the march takes, their gradients, and scratch.
  const long n_buf = 2L * S + static_cast<long>(S) * (O + C + Hd) + 2L * S + static_cast<long>(S) * O + S +
                     static_cast<long>(S) * O + 3L * S + 3L * N + 2L * D.O1 + Hd + C;
  float* buf = new float[n_buf];
  float *t = buf, *sig = t + S, *col = sig + S, *feat = col + static_cast<long>(S) * O;
  float *act = feat + static_cast<long>(S) * C, *tm = act + static_cast<long>(S) * Hd, *sm = tm + S;
  float *cm = sm + S, *g_sig = cm + static_cast<long>(S) * O, *g_col = g_sig + S;
  float *march_scratch = g_col + static_cast<long>(S) * O, *w = march_scratch + 3L * S, *cdf = w + N;
  float *bins = cdf + N, *out = bins + N, *gout = out + D.O1, *gh = gout + D.O1, *gf = gh + Hd;
  int* ord = new int[S];
  const long plane_elems = 3L * P.H * P.W * C;
  for (long i = begin; i < end; ++i) {
    const long b = i / a.R;
    const float *o = a.origins + 3 * i, *d = a.dirs + 3 * i;
    const float* planes_b = P.data + b * plane_elems;
    auto eval = [&](int j0, int n) {  // the forward's sample+decode, keeping what the backward needs
      for (int j = j0; j < j0 + n; ++j) {
        const float p[3] = {o[0] + t[j] * d[0], o[1] + t[j] * d[1], o[2] + t[j] * d[2]};
        float* fj = feat + static_cast<long>(j) * C;
        rtg_triplane_features<CF>(planes_b, P.H, P.W, C, p, a.box_warp, a.plane_set, fj);
        rtg_decode<CF, HF, OF>(fj, C, Hd, D.O1, D.w1t, D.b1, D.w2t, D.b2, act + static_cast<long>(j) * Hd, out,
                               &sig[j], col + static_cast<long>(j) * O);
      }
    };
    coarse_depths(a, i, t);
    eval(0, N);
    if (Nf > 0) {
      fine_depths(a, i, t, sig, w, cdf, bins, t + N);
      eval(N, Nf);
      merge_order(t, N, t + N, Nf, ord);
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
      decoder_backward<CF, HF, OF>(D, gb, C, feat + j * C, act + j * Hd, col + j * O, g_sig[k],
                                   g_col + static_cast<long>(k) * O, gout, gh, gf);
      const float p[3] = {o[0] + t[j] * d[0], o[1] + t[j] * d[1], o[2] + t[j] * d[2]};
      float g_p[3];
      triplane_backward<CF>(planes_b, gb.planes + b * plane_elems, P.H, P.W, C, p, a.box_warp, a.plane_set, gf, g_p);
      for (int x = 0; x < 3; ++x) {  // p = o + t d
        g_o[x] += g_p[x];
        g_d[x] += t[j] * g_p[x];
      }
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
