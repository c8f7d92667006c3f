// The CUDA backend's ops: argument checks, decoder padding to the kernels' fixed sizes, output
// allocation, launch on the current stream (csrc/cuda/kernels.h). Built only when torch has CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "../cuda/kernels.h"
#include "checks.h"
#include "rtgaze/schemas.h"

namespace {
using at::Tensor;
using namespace rtgaze::glue;
namespace rc = rtgaze::cuda;

// A CUDA tensor of rank dim on `dev` (the op's first tensor's device, index included).
void check_cuda(const Tensor& t, const char* name, int64_t dim, const Tensor& first, const char* first_name) {
  check_input(t, name, dim, c10::kCUDA);
  check_same_device(t.device(), name, first.device(), first_name);
}

// The op's anchor tensor (planes) is a CUDA tensor: checked before the device guard is built on its
// device, since these ops are dispatched when any argument is a CUDA tensor and c10's CUDA guard on
// a CPU device fails an internal assert instead of naming the argument.
const Tensor& cuda_anchor(const Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor for this backend, got ", t.device());
  return t;
}

// A launch error as an exception; a GPU this build has no code for gets the rebuild command.
void check_launch(cudaError_t err, const char* kernel) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    TORCH_CHECK(false, "rtgaze_fast: the ", kernel, " kernel has no code for this GPU (compute capability ", major,
                ".", minor, "): ", cudaGetErrorString(err), ". Rebuild the extension for it: TORCH_CUDA_ARCH_LIST=\"",
                major, ".", minor, "\" pip install --no-build-isolation -e . (nvcc 13 builds 7.5 and newer)");
  }
  TORCH_CHECK(err != cudaErrorNotSupported, "rtgaze_fast: the cuda ", kernel, " kernel needs compute capability 8.0 ",
              "or newer (tf32 tensor cores, shared memory) and code built for it (TORCH_CUDA_ARCH_LIST with 8.0 or newer, ",
              "not only older +PTX); use backend='triton' or 'torch' to train on this GPU");
  TORCH_CHECK(err != cudaErrorInvalidConfiguration, "rtgaze_fast: the ", kernel, " kernel's shared memory for one ",
              "warp (N + N_f samples per ray) exceeds this GPU's limit per block; render fewer samples per ray or ",
              "use backend='triton' / 'torch'");
  TORCH_CHECK(false, "rtgaze_fast: the ", kernel, " kernel failed to launch: ", cudaGetErrorString(err));
}

// The kernels' precision for a mode (csrc/cuda/kernels.h): fp32 and tf32 take fp32 planes, fp16 and
// bf16 16-bit planes; every mode's decoder runs on tensor cores.
rc::Precision kernel_precision(c10::string_view precision) {
  const std::string p(precision);
  if (p == "fp32") return rc::Precision::kFp32;
  if (p == "tf32") return rc::Precision::kTf32;
  if (p == "fp16") return rc::Precision::kFp16;
  TORCH_CHECK_VALUE(p == "bf16", "precision must be one of 'fp32', 'tf32', 'fp16', 'bf16', got '", p, "'");
  return rc::Precision::kBf16;
}

at::ScalarType plane_dtype(rc::Precision precision) {
  return precision == rc::Precision::kFp16 ? at::kHalf : precision == rc::Precision::kBf16 ? at::kBFloat16 : at::kFloat;
}

// Folded weights zero-padded to the kernels' sizes (a zero channel / hidden unit / output changes
// nothing), w1 and w2 transposed; planes padded along C when smaller.
struct Padded {
  Tensor planes, w1t, b1, w2t, b2;
  rc::Decoder dec() const {
    return {w1t.data_ptr<float>(), b1.data_ptr<float>(), w2t.data_ptr<float>(), b2.data_ptr<float>()};
  }
};

// planes: the mode's dtype (fp32 planes in a 16-bit mode are converted here, as the triton backend accepts them).
Padded pad_inputs(const Tensor& planes_in, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                  rc::Precision precision) {
  const at::ScalarType dtype = plane_dtype(precision);
  const Tensor planes = planes_in.scalar_type() == at::kFloat ? planes_in.to(dtype) : planes_in;
  check_input(planes, "planes", 5, c10::kCUDA, dtype);
  check_cuda(w1, "w1", 2, planes_in, "planes");
  check_cuda(b1, "b1", 1, planes_in, "planes");
  check_cuda(w2, "w2", 2, planes_in, "planes");
  check_cuda(b2, "b2", 1, planes_in, "planes");
  const int64_t C = planes.size(4), hd = w1.size(0), o1 = w2.size(0);
  TORCH_CHECK_VALUE(planes.size(1) == 3, "planes must be (B, 3, H, W, C) channels-last, got ", planes.sizes());
  TORCH_CHECK_VALUE(w1.size(1) == C, "w1 must be (hidden, C=", C, ") to match the planes, got ", w1.sizes());
  TORCH_CHECK_VALUE(b1.size(0) == hd, "b1 must have ", hd, " elements, got ", b1.sizes());
  TORCH_CHECK_VALUE(w2.size(1) == hd && o1 >= 2, "w2 must be (1 + out_dim, hidden=", hd, "), got ", w2.sizes());
  TORCH_CHECK_VALUE(b2.size(0) == o1, "b2 must have ", o1, " elements, got ", b2.sizes());
  TORCH_CHECK_VALUE(C <= rc::kC && hd <= rc::kHidden && o1 <= rc::kOut1, "the cuda backend supports decoders up to C=",
                    rc::kC, ", hidden=", rc::kHidden, ", 1+out_dim=", rc::kOut1, "; got C=", C, ", hidden=", hd,
                    ", 1+out_dim=", o1, " (w1, w2)");
  const Tensor p = C == rc::kC ? planes : at::constant_pad_nd(planes, {0, rc::kC - C}).contiguous();
  TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(p.data_ptr()) % 16 == 0,
                    "planes must start at a 16-byte aligned address (the kernels read texels with 16-byte loads); "
                    "pass planes.clone()");
  const Tensor w1p = at::constant_pad_nd(w1, {0, rc::kC - C, 0, rc::kHidden - hd});
  const Tensor w2p = at::constant_pad_nd(w2, {0, rc::kHidden - hd, 0, rc::kOut1 - o1});
  return {p, w1p.t().contiguous(), at::constant_pad_nd(b1, {0, rc::kHidden - hd}).contiguous(),
          w2p.t().contiguous(), at::constant_pad_nd(b2, {0, rc::kOut1 - o1}).contiguous()};
}

std::tuple<Tensor, Tensor> sample_decode_cuda(const Tensor& planes, const Tensor& w1, const Tensor& b1,
                                              const Tensor& w2, const Tensor& b2, const Tensor& points,
                                              double box_warp, int64_t plane_set, c10::string_view precision) {
  const rc::Precision prec = kernel_precision(precision);
  check_plane_set(plane_set);
  const c10::cuda::CUDAGuard guard(cuda_anchor(planes, "planes").device());
  const Padded pad = pad_inputs(planes, w1, b1, w2, b2, prec);
  check_cuda(points, "points", 3, planes, "planes");
  TORCH_CHECK_VALUE(points.size(0) == planes.size(0) && points.size(2) == 3, "points must be (B=", planes.size(0),
                    ", M, 3), got ", points.sizes());
  const int64_t B = points.size(0), M = points.size(1), O = w2.size(0) - 1;
  Tensor sigma = new_output({B, M}, points), rgb = new_output({B, M, O}, points);
  rc::SampleDecodeParams p{pad.planes.data_ptr(), prec, static_cast<int>(planes.size(2)),
                           static_cast<int>(planes.size(3)), pad.dec(), points.data_ptr<float>(), B * M, M,
                           static_cast<int>(O), static_cast<int>(plane_set), static_cast<float>(box_warp),
                           sigma.data_ptr<float>(), rgb.data_ptr<float>()};
  check_launch(rc::sample_decode_fwd(p, c10::cuda::getCurrentCUDAStream()), "sample_decode");
  return {sigma, rgb};
}

std::tuple<Tensor, Tensor, Tensor> march_cuda(const Tensor& rgb, const Tensor& sigma, const Tensor& depths,
                                              bool white_back) {
  check_cuda(rgb, "rgb", 4, rgb, "rgb");
  check_cuda(sigma, "sigma", 3, rgb, "rgb");
  check_cuda(depths, "depths", 3, rgb, "rgb");
  const int64_t B = rgb.size(0), R = rgb.size(1), S = rgb.size(2), O = rgb.size(3);
  TORCH_CHECK_VALUE(sigma.sizes() == at::IntArrayRef({B, R, S}), "sigma must be (B, R, S) = ",
                    at::IntArrayRef({B, R, S}), ", got ", sigma.sizes());
  TORCH_CHECK_VALUE(depths.sizes() == sigma.sizes(), "depths must have sigma's shape ", sigma.sizes(), ", got ",
                    depths.sizes());
  TORCH_CHECK_VALUE(S >= 2, "march needs S >= 2 samples per ray, got ", S);
  const c10::cuda::CUDAGuard guard(rgb.device());
  Tensor out = new_output({B, R, O}, rgb), depth = new_output({B, R}, rgb), w = new_output({B, R, S - 1}, rgb);
  check_launch(rc::march_fwd(rgb.data_ptr<float>(), sigma.data_ptr<float>(), depths.data_ptr<float>(), B * R,
                             static_cast<int>(S), static_cast<int>(O), white_back, out.data_ptr<float>(),
                             depth.data_ptr<float>(), w.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()),
               "march");
  return {out, depth, w};
}

Tensor importance_cuda(const Tensor& depths, const Tensor& weights, const Tensor& u) {
  check_cuda(depths, "depths", 3, depths, "depths");
  check_cuda(weights, "weights", 3, depths, "depths");
  check_cuda(u, "u", 3, depths, "depths");
  const int64_t B = depths.size(0), R = depths.size(1), N = depths.size(2), Nf = u.size(2);
  TORCH_CHECK_VALUE(N >= 4 && N <= rc::kMaxSamples, "importance sampling needs 4 <= N <= ", rc::kMaxSamples,
                    " coarse samples (depths), got ", N);
  TORCH_CHECK_VALUE(weights.sizes() == at::IntArrayRef({B, R, N - 1}), "weights must be (B, R, N-1) = ",
                    at::IntArrayRef({B, R, N - 1}), ", got ", weights.sizes());
  TORCH_CHECK_VALUE(u.size(0) == B && u.size(1) == R, "u must be (B=", B, ", R=", R, ", N_f), got ", u.sizes());
  const c10::cuda::CUDAGuard guard(depths.device());
  Tensor out = new_output({B, R, Nf}, depths);
  check_launch(rc::importance_fwd(depths.data_ptr<float>(), weights.data_ptr<float>(), u.data_ptr<float>(), B * R,
                                  static_cast<int>(N), static_cast<int>(Nf), out.data_ptr<float>(),
                                  c10::cuda::getCurrentCUDAStream()),
               "importance");
  return out;
}

// The checked inputs of render / render_backward as kernel parameters (outputs unset); pad keeps the
// padded planes and weights alive.
rc::RenderParams render_inputs(const Tensor& planes, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                               const Tensor& b2, const Tensor& ray_origins, const Tensor& ray_directions,
                               const Tensor& ray_start, const Tensor& ray_end, const Tensor& stratified_u,
                               const Tensor& importance_u, double box_warp, bool disparity, bool white_back,
                               int64_t plane_set, c10::string_view precision, Padded& pad) {
  const rc::Precision prec = kernel_precision(precision);
  check_plane_set(plane_set);
  pad = pad_inputs(planes, w1, b1, w2, b2, prec);
  check_cuda(ray_origins, "ray_origins", 3, planes, "planes");
  check_cuda(ray_directions, "ray_directions", 3, planes, "planes");
  const int64_t B = planes.size(0), R = ray_origins.size(1);
  TORCH_CHECK_VALUE(ray_origins.size(0) == B && ray_origins.size(2) == 3, "ray_origins must be (B=", B,
                    ", R, 3), got ", ray_origins.sizes());
  TORCH_CHECK_VALUE(ray_directions.sizes() == ray_origins.sizes(), "ray_directions must have ray_origins' shape ",
                    ray_origins.sizes(), ", got ", ray_directions.sizes());
  check_cuda(ray_start, "ray_start", 2, planes, "planes");
  check_cuda(ray_end, "ray_end", 2, planes, "planes");
  TORCH_CHECK_VALUE(ray_start.sizes() == at::IntArrayRef({B, R}) && ray_end.sizes() == ray_start.sizes(),
                    "ray_start and ray_end must be (B=", B, ", R=", R, ")");
  check_cuda(stratified_u, "stratified_u", 3, planes, "planes");
  check_cuda(importance_u, "importance_u", 3, planes, "planes");
  const int64_t N = stratified_u.size(2), Nf = importance_u.size(2);
  TORCH_CHECK_VALUE(stratified_u.size(0) == B && stratified_u.size(1) == R && N >= 2,
                    "stratified_u must be (B=", B, ", R=", R, ", N >= 2), got ", stratified_u.sizes());
  TORCH_CHECK_VALUE(importance_u.size(0) == B && importance_u.size(1) == R, "importance_u must be (B=", B,
                    ", R=", R, ", N_f), got ", importance_u.sizes());
  TORCH_CHECK_VALUE(Nf == 0 || N >= 4, "importance sampling needs N >= 4 coarse samples, got ", N);
  TORCH_CHECK_VALUE(N + Nf <= rc::kMaxSamples, "the cuda backend renders at most ", rc::kMaxSamples,
                    " samples per ray (stratified_u, importance_u), got N + N_f = ", N + Nf);
  rc::RenderParams p{};
  p.planes = pad.planes.data_ptr();
  p.precision = prec;
  p.H = static_cast<int>(planes.size(2));
  p.W = static_cast<int>(planes.size(3));
  p.dec = pad.dec();
  p.origins = ray_origins.data_ptr<float>();
  p.dirs = ray_directions.data_ptr<float>();
  p.start = ray_start.data_ptr<float>();
  p.end = ray_end.data_ptr<float>();
  p.su = stratified_u.data_ptr<float>();
  p.iu = importance_u.data_ptr<float>();
  p.R = R;
  p.N = static_cast<int>(N);
  p.Nf = static_cast<int>(Nf);
  p.O = static_cast<int>(w2.size(0) - 1);
  p.plane_set = static_cast<int>(plane_set);
  p.box_warp = static_cast<float>(box_warp);
  p.disparity = disparity;
  p.white_back = white_back;
  return p;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> render_cuda(
    const Tensor& planes, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
    const Tensor& ray_origins, const Tensor& ray_directions, const Tensor& ray_start, const Tensor& ray_end,
    const Tensor& stratified_u, const Tensor& importance_u, double box_warp, bool disparity, bool white_back,
    int64_t plane_set, c10::string_view precision) {
  const c10::cuda::CUDAGuard guard(cuda_anchor(planes, "planes").device());
  Padded pad;
  rc::RenderParams p = render_inputs(planes, w1, b1, w2, b2, ray_origins, ray_directions, ray_start, ray_end,
                                     stratified_u, importance_u, box_warp, disparity, white_back, plane_set,
                                     precision, pad);
  const int64_t B = planes.size(0), R = ray_origins.size(1), O = p.O;
  Tensor rgb = new_output({B, R, O}, ray_origins), depth = new_output({B, R}, ray_origins),
         wsum = new_output({B, R}, ray_origins), range = new_output({B, R, 2}, ray_origins);
  p.rays = rays_to_render(B * R);
  p.rgb = rgb.data_ptr<float>();
  p.depth = depth.data_ptr<float>();
  p.wsum = wsum.data_ptr<float>();
  p.range = range.data_ptr<float>();
  check_launch(rc::render_fwd(p, c10::cuda::getCurrentCUDAStream()), "render");
  return {rgb, depth, wsum, range};
}

// Recompute backward (csrc/cuda/render_bwd.cu). The planes' and the decoder's gradients are sums of
// fp32 atomics in an order that changes from run to run (their last bits too): under
// torch.use_deterministic_algorithms(True) this op raises (use backend='cpu', which has a
// deterministic mode, or 'torch').
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> render_backward_cuda(
    const Tensor& grad_rgb, const Tensor& grad_depth, const Tensor& grad_wsum, const Tensor& planes, const Tensor& w1,
    const Tensor& b1, const Tensor& w2, const Tensor& b2, const Tensor& ray_origins, const Tensor& ray_directions,
    const Tensor& ray_start, const Tensor& ray_end, const Tensor& stratified_u, const Tensor& importance_u,
    double box_warp, bool disparity, bool white_back, int64_t plane_set, c10::string_view precision,
    bool ray_grads) {
  at::globalContext().alertNotDeterministic(
      "rtgaze_fast render_backward_cuda (fp32 atomics into the planes' and the decoder's gradients)");
  const c10::cuda::CUDAGuard guard(cuda_anchor(planes, "planes").device());
  Padded pad;
  rc::RenderGradParams g{};
  g.fwd = render_inputs(planes, w1, b1, w2, b2, ray_origins, ray_directions, ray_start, ray_end, stratified_u,
                        importance_u, box_warp, disparity, white_back, plane_set, precision, pad);
  const int64_t B = planes.size(0), R = ray_origins.size(1), O = g.fwd.O, C = planes.size(4);
  const int64_t hd = w1.size(0), o1 = w2.size(0);
  check_cuda(grad_rgb, "grad_rgb", 3, planes, "planes");
  check_cuda(grad_depth, "grad_depth", 2, planes, "planes");
  check_cuda(grad_wsum, "grad_wsum", 2, planes, "planes");
  TORCH_CHECK_VALUE(grad_rgb.sizes() == at::IntArrayRef({B, R, O}), "grad_rgb must be (B, R, O) = ",
                    at::IntArrayRef({B, R, O}), ", got ", grad_rgb.sizes());
  TORCH_CHECK_VALUE(grad_depth.sizes() == at::IntArrayRef({B, R}) && grad_wsum.sizes() == grad_depth.sizes(),
                    "grad_depth and grad_wsum must be (B=", B, ", R=", R, ")");
  const auto f32 = ray_origins.options();
  // Sums start at zero; the per-ray gradients are written for every ray.
  Tensor g_planes = at::zeros({B, 3, planes.size(2), planes.size(3), rc::kC}, f32);
  Tensor g_w1t = at::zeros({rc::kC, rc::kHidden}, f32), g_b1 = at::zeros({rc::kHidden}, f32);
  Tensor g_w2t = at::zeros({rc::kHidden, rc::kOut1}, f32), g_b2 = at::zeros({rc::kOut1}, f32);
  Tensor g_origins = new_output({B, R, 3}, ray_origins), g_dirs = new_output({B, R, 3}, ray_origins);
  g.fwd.rays = B * R;
  g.g_rgb = grad_rgb.data_ptr<float>();
  g.g_depth = grad_depth.data_ptr<float>();
  g.g_wsum = grad_wsum.data_ptr<float>();
  g.g_planes = g_planes.data_ptr<float>();
  g.g_w1t = g_w1t.data_ptr<float>();
  g.g_b1 = g_b1.data_ptr<float>();
  g.g_w2t = g_w2t.data_ptr<float>();
  g.g_b2 = g_b2.data_ptr<float>();
  g.g_origins = g_origins.data_ptr<float>();
  g.g_dirs = g_dirs.data_ptr<float>();
  g.ray_grads = ray_grads;
  if (!ray_grads) {  // the kernel skips them (and the texel reads of their dot products)
    g_origins.zero_();
    g_dirs.zero_();
  }
  check_launch(rc::render_bwd(g, c10::cuda::getCurrentCUDAStream()), "render_backward");
  // Back to the op's shapes: the decoder's untransposed and unpadded, the planes' unpadded.
  return {C == rc::kC ? g_planes : g_planes.narrow(4, 0, C).contiguous(),
          g_w1t.narrow(0, 0, C).narrow(1, 0, hd).t().contiguous(), g_b1.narrow(0, 0, hd).contiguous(),
          g_w2t.narrow(0, 0, hd).narrow(1, 0, o1).t().contiguous(), g_b2.narrow(0, 0, o1).contiguous(), g_origins,
          g_dirs};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rtgaze_fast, m) {
  m.def("sample_decode_cuda" RTGAZE_SCHEMA_SAMPLE_DECODE);
  m.def("march_cuda" RTGAZE_SCHEMA_MARCH);
  m.def("importance_cuda" RTGAZE_SCHEMA_IMPORTANCE);
  m.def("render_cuda" RTGAZE_SCHEMA_RENDER);
  m.def("render_backward_cuda" RTGAZE_SCHEMA_RENDER_BACKWARD);
}

TORCH_LIBRARY_IMPL(rtgaze_fast, CUDA, m) {
  m.impl("sample_decode_cuda", &sample_decode_cuda);
  m.impl("march_cuda", &march_cuda);
  m.impl("importance_cuda", &importance_cuda);
  m.impl("render_cuda", &render_cuda);
  m.impl("render_backward_cuda", &render_backward_cuda);
}
