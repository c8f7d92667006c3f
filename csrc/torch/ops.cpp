// The CPU backend's ops: argument checks, output allocation, then the ISA-dispatched kernels over
// rays with at::parallel_for. Schemas come from rtgaze/schemas.h (equal to rtgaze_fast/ops.py's).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "../cpu/kernels.h"
#include "rtgaze/schemas.h"
#include "checks.h"

namespace {
using at::Tensor;
using namespace rtgaze::glue;

// Folded decoder weights, transposed so the kernels' inner loops run over contiguous outputs (the
// colour outputs' apart from sigma's, so that they are whole AVX registers: rtgaze::DecoderArgs).
struct Decoder {
  Tensor w1t, b1, w2t, b2, w1, w2;
  rtgaze::DecoderArgs args() const {
    return {w1t.data_ptr<float>(), b1.data_ptr<float>(), w2t.data_ptr<float>(), b2.data_ptr<float>(),
            static_cast<int>(w1t.size(1)), static_cast<int>(w2.size(0)), w1.data_ptr<float>(), w2.data_ptr<float>()};
  }
};

Decoder fold_decoder(const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2, int64_t C) {
  check_input(w1, "w1", 2);
  check_input(b1, "b1", 1);
  check_input(w2, "w2", 2);
  check_input(b2, "b2", 1);
  const int64_t hd = w1.size(0), o1 = w2.size(0);
  TORCH_CHECK_VALUE(w1.size(1) == C, "w1 must be (hidden, C=", C, ") to match the planes, got ", w1.sizes());
  TORCH_CHECK_VALUE(b1.size(0) == hd, "b1 must have ", hd, " elements, got ", b1.sizes());
  TORCH_CHECK_VALUE(w2.size(1) == hd && o1 >= 2, "w2 must be (1 + out_dim, hidden=", hd, "), got ", w2.sizes());
  TORCH_CHECK_VALUE(b2.size(0) == o1, "b2 must have ", o1, " elements, got ", b2.sizes());
  TORCH_CHECK_VALUE(C <= 1024 && hd <= 1024 && o1 <= 1025, "decoder sizes above 1024 are not supported");
  return {w1.t().contiguous(), b1, w2.narrow(0, 1, o1 - 1).t().contiguous(), b2, w1, w2};
}

rtgaze::PlaneStrides plane_strides(const Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4)};
}

// Planes (B, 3, H, W, C) at any strides: the kernels read them through their strides, so the
// caller passes them in the layout it holds (EG3D's (B, 3, C, H, W) permuted, channels-last)
// without a planes-sized copy.
rtgaze::PlanesArgs planes_args(const Tensor& planes) {
  TORCH_CHECK_VALUE(planes.dim() == 5, "planes must be 5-D, got shape ", planes.sizes());
  TORCH_CHECK_TYPE(planes.scalar_type() == at::kFloat, "planes must be float32, got ", planes.scalar_type());
  TORCH_CHECK_VALUE(planes.device().is_cpu(), "planes must be a CPU tensor for this backend, got ", planes.device());
  TORCH_CHECK_VALUE(planes.numel() <= std::numeric_limits<int32_t>::max(), "planes has ", planes.numel(),
                    " elements, more than the kernels index (2**31-1)");
  TORCH_CHECK_VALUE(planes.size(1) == 3, "planes must be (B, 3, H, W, C), got ", planes.sizes());
  return {planes.data_ptr<float>(), static_cast<int>(planes.size(2)), static_cast<int>(planes.size(3)),
          static_cast<int>(planes.size(4)), plane_strides(planes)};
}

std::tuple<Tensor, Tensor> sample_decode_cpu(const Tensor& planes, const Tensor& w1, const Tensor& b1,
                                             const Tensor& w2, const Tensor& b2, const Tensor& points,
                                             double box_warp, int64_t plane_set, c10::string_view precision) {
  check_precision("cpu", std::string(precision));
  check_plane_set(plane_set);
  rtgaze::SampleDecodeArgs a{};
  a.planes = planes_args(planes);
  check_input(points, "points", 3);
  TORCH_CHECK_VALUE(points.size(0) == planes.size(0) && points.size(2) == 3, "points must be (B=", planes.size(0),
                    ", M, 3), got ", points.sizes());
  Decoder dec = fold_decoder(w1, b1, w2, b2, planes.size(4));
  a.dec = dec.args();
  const int64_t B = points.size(0), M = points.size(1), O = w2.size(0) - 1;
  Tensor sigma = new_output({B, M}, points), rgb = new_output({B, M, O}, points);
  a.points = points.data_ptr<float>();
  a.M = M;
  a.plane_set = static_cast<int>(plane_set);
  a.box_warp = static_cast<float>(box_warp);
  a.sigma = sigma.data_ptr<float>();
  a.rgb = rgb.data_ptr<float>();
  const auto& k = rtgaze::cpu_kernels();
  at::parallel_for(0, B * M, 256, [&](int64_t b, int64_t e) { k.sample_decode(a, b, e); });
  return {sigma, rgb};
}

std::tuple<Tensor, Tensor, Tensor> march_cpu(const Tensor& rgb, const Tensor& sigma, const Tensor& depths,
                                             bool white_back) {
  check_input(rgb, "rgb", 4);
  check_input(sigma, "sigma", 3);
  check_input(depths, "depths", 3);
  const int64_t B = rgb.size(0), R = rgb.size(1), S = rgb.size(2), O = rgb.size(3);
  TORCH_CHECK_VALUE(sigma.sizes() == at::IntArrayRef({B, R, S}), "sigma must be (B, R, S) = ", at::IntArrayRef({B, R, S}),
                    ", got ", sigma.sizes());
  TORCH_CHECK_VALUE(depths.sizes() == sigma.sizes(), "depths must have sigma's shape ", sigma.sizes(), ", got ",
                    depths.sizes());
  TORCH_CHECK_VALUE(S >= 2, "march needs S >= 2 samples per ray, got ", S);
  Tensor out = new_output({B, R, O}, rgb), depth = new_output({B, R}, rgb), w = new_output({B, R, S - 1}, rgb);
  rtgaze::MarchArgs a{rgb.data_ptr<float>(), sigma.data_ptr<float>(), depths.data_ptr<float>(), static_cast<int>(S),
                      static_cast<int>(O), white_back, out.data_ptr<float>(), depth.data_ptr<float>(),
                      w.data_ptr<float>()};
  const auto& k = rtgaze::cpu_kernels();
  at::parallel_for(0, B * R, 64, [&](int64_t b, int64_t e) { k.march(a, b, e); });
  return {out, depth, w};
}

Tensor importance_cpu(const Tensor& depths, const Tensor& weights, const Tensor& u) {
  check_input(depths, "depths", 3);
  check_input(weights, "weights", 3);
  check_input(u, "u", 3);
  const int64_t B = depths.size(0), R = depths.size(1), N = depths.size(2), Nf = u.size(2);
  TORCH_CHECK_VALUE(N >= 4, "importance sampling needs N >= 4 coarse samples, got ", N);
  TORCH_CHECK_VALUE(weights.sizes() == at::IntArrayRef({B, R, N - 1}), "weights must be (B, R, N-1) = ",
                    at::IntArrayRef({B, R, N - 1}), ", got ", weights.sizes());
  TORCH_CHECK_VALUE(u.size(0) == B && u.size(1) == R, "u must be (B=", B, ", R=", R, ", N_f), got ", u.sizes());
  Tensor out = new_output({B, R, Nf}, depths);
  rtgaze::ImportanceArgs a{depths.data_ptr<float>(), weights.data_ptr<float>(), u.data_ptr<float>(),
                           static_cast<int>(N), static_cast<int>(Nf), out.data_ptr<float>()};
  const auto& k = rtgaze::cpu_kernels();
  at::parallel_for(0, B * R, 64, [&](int64_t b, int64_t e) { k.importance(a, b, e); });
  return out;
}

// fn(task, begin, end) over [0, n) in chunks that `tasks` threads take in turn from a shared
// counter: on a loaded machine a thread the OS deschedules holds back only its current chunk,
// not a fixed share of the rays (a static split waits for it).
template <class F>
void for_chunks(int64_t n, int64_t chunk, int64_t tasks, const F& fn) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      for (int64_t b = next.fetch_add(chunk); b < n; b = next.fetch_add(chunk)) fn(task, b, std::min(n, b + chunk));
    }
  });
}

// Rays per chunk of the render ops: ~1 ms of work at the tiny model's 16+16 samples.
constexpr int64_t kRayChunk = 32;

int64_t task_count(int64_t n, int64_t chunk) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk));
}

// The render op's inputs, checked, as kernel arguments (output pointers left null). dec keeps the
// transposed decoder weights alive.
rtgaze::RenderArgs render_inputs(const Tensor& planes, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                                 const Tensor& b2, const Tensor& ray_origins, const Tensor& ray_directions,
                                 const Tensor& ray_start, const Tensor& ray_end, const Tensor& stratified_u,
                                 const Tensor& importance_u, double box_warp, bool disparity, bool white_back,
                                 int64_t plane_set, c10::string_view precision, Decoder& dec) {
  check_precision("cpu", std::string(precision));
  check_plane_set(plane_set);
  rtgaze::RenderArgs a{};
  a.planes = planes_args(planes);
  dec = fold_decoder(w1, b1, w2, b2, planes.size(4));
  a.dec = dec.args();
  check_input(ray_origins, "ray_origins", 3);
  check_input(ray_directions, "ray_directions", 3);
  const int64_t B = planes.size(0), R = ray_origins.size(1);
  TORCH_CHECK_VALUE(ray_origins.size(0) == B && ray_origins.size(2) == 3, "ray_origins must be (B=", B,
                    ", R, 3), got ", ray_origins.sizes());
  TORCH_CHECK_VALUE(ray_directions.sizes() == ray_origins.sizes(), "ray_directions must have ray_origins' shape ",
                    ray_origins.sizes(), ", got ", ray_directions.sizes());
  check_input(ray_start, "ray_start", 2);
  check_input(ray_end, "ray_end", 2);
  TORCH_CHECK_VALUE(ray_start.sizes() == at::IntArrayRef({B, R}) && ray_end.sizes() == ray_start.sizes(),
                    "ray_start and ray_end must be (B=", B, ", R=", R, ")");
  check_input(stratified_u, "stratified_u", 3);
  check_input(importance_u, "importance_u", 3);
  const int64_t N = stratified_u.size(2), Nf = importance_u.size(2);
  TORCH_CHECK_VALUE(stratified_u.size(0) == B && stratified_u.size(1) == R && N >= 2,
                    "stratified_u must be (B=", B, ", R=", R, ", N >= 2), got ", stratified_u.sizes());
  TORCH_CHECK_VALUE(importance_u.size(0) == B && importance_u.size(1) == R, "importance_u must be (B=", B, ", R=", R,
                    ", N_f), got ", importance_u.sizes());
  TORCH_CHECK_VALUE(Nf == 0 || N >= 4, "importance sampling needs N >= 4 coarse samples, got ", N);
  TORCH_CHECK_VALUE(B * R * (N + Nf) * std::max<int64_t>(planes.size(4), w2.size(0)) <= std::numeric_limits<int32_t>::max(),
                    "B * R * (N + N_f) * channels exceeds 2**31-1; render in ray chunks");
  a.origins = ray_origins.data_ptr<float>();
  a.dirs = ray_directions.data_ptr<float>();
  a.start = ray_start.data_ptr<float>();
  a.end = ray_end.data_ptr<float>();
  a.su = stratified_u.data_ptr<float>();
  a.iu = importance_u.data_ptr<float>();
  a.R = R;
  a.N = static_cast<int>(N);
  a.Nf = static_cast<int>(Nf);
  a.plane_set = static_cast<int>(plane_set);
  a.box_warp = static_cast<float>(box_warp);
  a.disparity = disparity;
  a.white_back = white_back;
  return a;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> render_cpu(
    const Tensor& planes, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
    const Tensor& ray_origins, const Tensor& ray_directions, const Tensor& ray_start, const Tensor& ray_end,
    const Tensor& stratified_u, const Tensor& importance_u, double box_warp, bool disparity, bool white_back,
    int64_t plane_set, c10::string_view precision) {
  Decoder dec;
  rtgaze::RenderArgs a = render_inputs(planes, w1, b1, w2, b2, ray_origins, ray_directions, ray_start, ray_end,
                                       stratified_u, importance_u, box_warp, disparity, white_back, plane_set,
                                       precision, dec);
  const int64_t B = planes.size(0), R = ray_origins.size(1), O = w2.size(0) - 1;
  Tensor rgb = new_output({B, R, O}, ray_origins), depth = new_output({B, R}, ray_origins),
         wsum = new_output({B, R}, ray_origins), range = new_output({B, R, 2}, ray_origins);
  a.rgb = rgb.data_ptr<float>();
  a.depth = depth.data_ptr<float>();
  a.wsum = wsum.data_ptr<float>();
  a.range = range.data_ptr<float>();
  const auto& k = rtgaze::cpu_kernels();
  const int64_t rays = rays_to_render(B * R);
  for_chunks(rays, kRayChunk, task_count(rays, kRayChunk), [&](int64_t, int64_t b, int64_t e) { k.render(a, b, e); });
  return {rgb, depth, wsum, range};
}

// Recompute backward. With at least two batch items per thread, threads take whole items and parts
// of the last ones (below).
// Otherwise the rays are split into one contiguous range per task (a thread each; not taken in
// chunks as the forward's are, so that a run repeats bitwise when the ranges do not share an
// item, as resumed training relies on; where they would share one anyway, as a batch-1 image's
// do, in chunks). The decoder's gradients go to a small buffer per task, summed in task order.
// The planes' gradient:
// by default one buffer that every task adds into under per-texel-row spin locks (memory: the
// gradient itself; the adds' order, so the last bits, may change from run to run); with
// torch.use_deterministic_algorithms(True), or one task, a buffer per task summed in task order
// (bitwise repeatable for a given thread count; (tasks - 1) more planes-sized buffers).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> render_backward_cpu(
    const Tensor& grad_rgb, const Tensor& grad_depth, const Tensor& grad_wsum, const Tensor& planes, const Tensor& w1,
    const Tensor& b1, const Tensor& w2, const Tensor& b2, const Tensor& ray_origins, const Tensor& ray_directions,
    const Tensor& ray_start, const Tensor& ray_end, const Tensor& stratified_u, const Tensor& importance_u,
    double box_warp, bool disparity, bool white_back, int64_t plane_set, c10::string_view precision,
    bool ray_grads) {
  Decoder dec;
  rtgaze::RenderArgs a = render_inputs(planes, w1, b1, w2, b2, ray_origins, ray_directions, ray_start, ray_end,
                                       stratified_u, importance_u, box_warp, disparity, white_back, plane_set,
                                       precision, dec);
  const int64_t B = planes.size(0), R = ray_origins.size(1), O = w2.size(0) - 1;
  check_input(grad_rgb, "grad_rgb", 3);
  check_input(grad_depth, "grad_depth", 2);
  check_input(grad_wsum, "grad_wsum", 2);
  TORCH_CHECK_VALUE(grad_rgb.sizes() == at::IntArrayRef({B, R, O}), "grad_rgb must be (B, R, O) = ",
                    at::IntArrayRef({B, R, O}), ", got ", grad_rgb.sizes());
  TORCH_CHECK_VALUE(grad_depth.sizes() == at::IntArrayRef({B, R}) && grad_wsum.sizes() == grad_depth.sizes(),
                    "grad_depth and grad_wsum must be (B=", B, ", R=", R, ")");
  // Gradients start at zero (they are sums); the per-ray ones are written for every ray (zeros,
  // not computed, without ray_grads). The planes' in the planes' own layout (empty_like keeps the
  // strides of dense planes), so the caller's autograd gets it without a layout copy; taken by
  // items, it is zeroed below, each item by the work unit that writes it first.
  const int64_t P = B * R, C = planes.size(4), Hd = w1.size(0), O1 = w2.size(0);
  const int64_t tasks = task_count(P, 16);
  const bool by_item = tasks > 1 && B >= 2 * tasks;
  Tensor g_planes = by_item ? at::empty_like(planes) : at::zeros_like(planes);
  // Poisoned for the tests: an item left unzeroed fails.
  if (by_item && poison_outputs()) g_planes.fill_(std::numeric_limits<float>::quiet_NaN());
  Tensor g_origins = ray_grads ? new_output({B, R, 3}, ray_origins) : at::zeros({B, R, 3}, ray_origins.options());
  Tensor g_dirs = ray_grads ? new_output({B, R, 3}, ray_origins) : at::zeros({B, R, 3}, ray_origins.options());
  rtgaze::RenderGradArgs g{&a, grad_rgb.data_ptr<float>(), grad_depth.data_ptr<float>(), grad_wsum.data_ptr<float>(),
                           ray_grads ? g_origins.data_ptr<float>() : nullptr,
                           ray_grads ? g_dirs.data_ptr<float>() : nullptr};
  const int64_t dec_elems = Hd * C + Hd + O1 * Hd + O1;
  const auto& k = rtgaze::cpu_kernels();
  // Where rays [begin, end) add their gradients: decoder buffer gd, planes buffer gp, row locks.
  auto run = [&](float* gd, float* gp, uint8_t* locks, int64_t begin, int64_t end,
                 rtgaze::PlaneStrides gs) {
    rtgaze::GradBuffers gb{gp, gd, gd + Hd * C, gd + Hd * C + Hd, gd + Hd * C + Hd + O1 * Hd, locks, gs};
    k.render_backward(g, gb, begin, end);
  };
  Tensor g_dec;
  if (by_item) {
    // At least two batch items per task: the tasks take work units from a shared counter, whole
    // items first, then the last `tasks` items in kItemParts ray ranges each, so that a thread
    // slowed by other load holds the others back by a part of an item, not a whole one (whole
    // items alone left one of two threads idle ~15% of the time on a shared 2-core machine).
    // A whole item's planes gradient, and a split item's first part, are written into the
    // item's slice of g_planes; a later part into its own buffer (the item's strides, batch
    // stride 0), added to the slice after the parallel loop in part order. Each unit zeroes its
    // buffer first (in parallel, and the memory is then in this core's caches). The decoder's
    // gradients go to one buffer per unit, summed in unit order. So the result is bitwise
    // repeatable, whichever thread ran which unit; memory: (kItemParts - 1) * tasks item-sized
    // buffers beyond the gradient.
    constexpr int64_t kItemParts = 4;
    const int64_t split = tasks, whole = B - split, units = whole + split * kItemParts;
    std::vector<Tensor> parts;  // split item i's parts 1.. at i * (kItemParts - 1) + part - 1
    for (int64_t i = 0; i < split; ++i) {
      for (int64_t part = 1; part < kItemParts; ++part) {
        parts.push_back(at::empty_like(g_planes.select(0, whole + i)));
        if (poison_outputs()) parts.back().fill_(std::numeric_limits<float>::quiet_NaN());  // a part left unzeroed fails
      }
    }
    g_dec = at::zeros({units, dec_elems}, planes.options());
    const rtgaze::PlaneStrides gs_items = plane_strides(g_planes);
    for_chunks(units, 1, tasks, [&](int64_t, int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t b = u < whole ? u : whole + (u - whole) / kItemParts;
        const int64_t part = u < whole ? 0 : (u - whole) % kItemParts;
        const int64_t begin = b * R + (u < whole ? 0 : part * R / kItemParts);
        const int64_t end = u < whole ? (b + 1) * R : b * R + (part + 1) * R / kItemParts;
        float* gd = g_dec.data_ptr<float>() + u * dec_elems;
        if (part == 0) {
          g_planes.select(0, b).zero_();
          run(gd, g_planes.data_ptr<float>(), nullptr, begin, end, gs_items);
        } else {
          Tensor& buf = parts[(b - whole) * (kItemParts - 1) + part - 1];
          buf.zero_();
          run(gd, buf.data_ptr<float>(), nullptr, begin, end,
              {0, buf.stride(0), buf.stride(1), buf.stride(2), buf.stride(3)});
        }
      }
    });
    for (int64_t i = 0; i < split; ++i) {
      Tensor item = g_planes.select(0, whole + i);
      for (int64_t p = 1; p < kItemParts; ++p) item.add_(parts[i * (kItemParts - 1) + p - 1]);
    }
  } else {
    g_dec = at::zeros({tasks, dec_elems}, planes.options());
    const bool shared = tasks > 1 && !at::globalContext().deterministicAlgorithms();
    std::vector<Tensor> extra;
    for (int64_t task = 1; !shared && task < tasks; ++task) extra.push_back(at::zeros_like(g_planes));
    Tensor locks = at::zeros({shared ? B * 3 * planes.size(2) : 0}, planes.options().dtype(at::kByte));
    const int64_t per_task = (P + tasks - 1) / tasks;
    if (shared && per_task % R != 0) {
      // The ranges would share an item, so the adds' order varies from run to run anyway: the
      // tasks take chunks of rays from a shared counter instead, so that a thread slowed by other
      // load does not hold the others back (a batch-1 image: one item).
      for_chunks(P, kRayChunk, tasks, [&](int64_t task, int64_t begin, int64_t end) {
        run(g_dec.data_ptr<float>() + task * dec_elems, g_planes.data_ptr<float>(), locks.data_ptr<uint8_t>(), begin,
            end, plane_strides(g_planes));
      });
    } else {
      at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t task = t0; task < t1; ++task) {
          const int64_t begin = task * per_task, end = std::min<int64_t>(P, begin + per_task);
          float* gp = (task == 0 || shared ? g_planes : extra[task - 1]).data_ptr<float>();
          if (begin < end) {
            run(g_dec.data_ptr<float>() + task * dec_elems, gp, shared ? locks.data_ptr<uint8_t>() : nullptr, begin,
                end, plane_strides(g_planes));
          }
        }
      });
    }
    for (const Tensor& e : extra) g_planes.add_(e);
  }
  Tensor dec_sum = g_dec.sum(0);
  // Separate tensors (an op's outputs must not alias each other).
  Tensor g_w1 = dec_sum.narrow(0, 0, Hd * C).view({Hd, C}).clone();
  Tensor g_b1 = dec_sum.narrow(0, Hd * C, Hd).clone();
  Tensor g_w2 = dec_sum.narrow(0, Hd * C + Hd, O1 * Hd).view({O1, Hd}).clone();
  Tensor g_b2 = dec_sum.narrow(0, Hd * C + Hd + O1 * Hd, O1).clone();
  return {g_planes, g_w1, g_b1, g_w2, g_b2, g_origins, g_dirs};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rtgaze_fast, m) {
  m.def("sample_decode_cpu" RTGAZE_SCHEMA_SAMPLE_DECODE);
  m.def("march_cpu" RTGAZE_SCHEMA_MARCH);
  m.def("importance_cpu" RTGAZE_SCHEMA_IMPORTANCE);
  m.def("render_cpu" RTGAZE_SCHEMA_RENDER);
  m.def("render_backward_cpu" RTGAZE_SCHEMA_RENDER_BACKWARD);
}

TORCH_LIBRARY_IMPL(rtgaze_fast, CPU, m) {
  m.impl("sample_decode_cpu", &sample_decode_cpu);
  m.impl("march_cpu", &march_cpu);
  m.impl("importance_cpu", &importance_cpu);
  m.impl("render_cpu", &render_cpu);
  m.impl("render_backward_cpu", &render_backward_cpu);
}
