// One direction of one G2-LSTM layer on the CPU: the whole time loop of the forward and of the
// hand-written backward (BPTT) in C++, so that a step costs one GEMM plus one fused pointwise pass
// and no Python. Weight gradients are one large GEMM each after the backward loop.
//
// Layout (t is the time index, the same for both directions):
//   gates (T, N, 4H): the gate values i, f, g, o of every step, saved by the forward.
//   cs (T+1, N, H), hs (T+1, N, Hout): the states; a forward pass reads slot t and writes t+1, a
//   reverse pass reads t+1 and writes t, so the state entering step t is slot t + reverse.
// A row whose sequence ended (t >= lengths[n]) keeps its state and gets a zero gradient.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

// The large buffers of a call (the saved gates and states, the gate gradients) come from a cache
// of blocks that earlier calls' tensors handed back when they died. glibc serves an allocation over
// 32 MiB with a fresh mmap and unmaps it when freed, so every training step would fault in every
// page again: filling the (T, N, 4H) gates of T70-N80-H1150 once took 140 ms in 4 KiB pages
// (31 ms with transparent huge pages, which the blocks also ask for), against ~10 ms in memory
// already mapped. A training loop asks for the same sizes every step, so the blocks are found.
// At most kCacheBytes are kept unused; empty_cache() hands them all back.
class BufferCache {
 public:
  static constexpr size_t kMinBytes = size_t(1) << 20;
  static constexpr size_t kCacheBytes = size_t(2) << 30;
  static constexpr size_t kAlign = size_t(2) << 20;  // a huge page

  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
    size_t bytes = opts.dtype().itemsize();
    for (int64_t s : sizes) bytes *= static_cast<size_t>(s);
    if (bytes < kMinBytes) return at::empty(sizes, opts);
    bytes = (bytes + kAlign - 1) / kAlign * kAlign;
    void* block = take(bytes);
    if (block == nullptr) {
      block = std::aligned_alloc(kAlign, bytes);
      TORCH_CHECK(block != nullptr, "g2lstm: out of memory allocating ", bytes, " bytes");
#ifdef MADV_HUGEPAGE
      madvise(block, bytes, MADV_HUGEPAGE);  // a hint: where it fails nothing changes
#endif
    }
    return at::from_blob(block, sizes, [this, bytes](void* p) { give(p, bytes); }, opts);
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : free_) std::free(entry.second);
    free_.clear();
    free_bytes_ = 0;
  }

 private:
  // The block of this size handed back last (equal keys keep their insertion order): the one
  // most likely still in cache and the TLB.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.upper_bound(bytes);
    if (it == free_.begin() || (--it)->first != bytes) return nullptr;
    void* block = it->second;
    free_.erase(it);
    free_bytes_ -= bytes;
    return block;
  }

  void give(void* block, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_bytes_ + bytes > kCacheBytes) {
      std::free(block);
      return;
    }
    free_.emplace(bytes, block);
    free_bytes_ += bytes;
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t free_bytes_ = 0;
};

// Never destroyed: tensors may die after static destructors have run.
BufferCache& buffer_cache() {
  static BufferCache* cache = new BufferCache();
  return *cache;
}

at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return buffer_cache().empty(sizes, opts);
}

void empty_cache() { buffer_cache().clear(); }

// STRAIGHT_*: straight-through gates (train_gates='hard'). The saved value is the soft one of
// SCALED / NOISY (the backward's slope); the step uses it rounded, (s >= 1/2), as 0 or 1.
enum GateKind : int64_t { PLAIN = 0, SCALED = 1, NOISY = 2, HARD = 3, STRAIGHT_SCALED = 4, STRAIGHT_NOISY = 5 };

inline bool is_straight(int64_t kind) { return kind == STRAIGHT_SCALED || kind == STRAIGHT_NOISY; }

struct GatePlan {
  int64_t kind[3];  // input, forget, output
  int64_t slot[3];
  double tau;
};

GatePlan make_plan(at::IntArrayRef kinds, at::IntArrayRef slots, double tau) {
  TORCH_CHECK(kinds.size() == 3 && slots.size() == 3, "expected 3 gate kinds and 3 noise slots");
  GatePlan plan;
  for (int k = 0; k < 3; ++k) {
    plan.kind[k] = kinds[k];
    plan.slot[k] = slots[k];
  }
  plan.tau = tau;
  return plan;
}

bool plan_has_noise(const GatePlan& plan) {
  for (int k = 0; k < 3; ++k)
    if (plan.kind[k] == NOISY || plan.kind[k] == STRAIGHT_NOISY) return true;
  return false;
}

// exp and log written so that the compiler vectorises the loops that call them (std::expf and
// std::logf are opaque calls); polynomial approximations of a few float32 ulp (Cephes).
inline float bits_to_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

inline float exp_(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * r * r + r + 1.0f;
  return y * bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}
inline double exp_(double x) { return std::exp(x); }

// natural log of a positive normal float
inline float log_(float x) {
  const uint32_t b = float_to_bits(x);
  float e = static_cast<float>(static_cast<int32_t>((b >> 23) & 0xff) - 126);
  float m = bits_to_float((b & 0x807fffffu) | 0x3f000000u);  // x = m * 2^e, m in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292E-2f;
  y = y * m - 1.1514610310E-1f;
  y = y * m + 1.1676998740E-1f;
  y = y * m - 1.2420140846E-1f;
  y = y * m + 1.4249322787E-1f;
  y = y * m - 1.6668057665E-1f;
  y = y * m + 2.0000714765E-1f;
  y = y * m - 2.4999993993E-1f;
  y = y * m + 3.3333331174E-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

template <typename T>
inline T tanh_(T x) {
  return T(2) / (T(1) + exp_(T(-2) * x)) - T(1);
}

// The counter-based noise of g2lstm/noise.py: a 32-bit hash of the element index and a key.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

inline float counter_uniform(uint32_t key, uint32_t index) {
  return (static_cast<float>(mix32(index ^ key) >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

struct NoiseParams {
  uint32_t key_u, key_b;  // the streams of U and of the mask B
  float p;                // B = (u_B < p); no mask when p >= 1
  int64_t mode;           // 0 step, 1 sequence (t = 0 always), 2 sequence_mask (mask at t = 0)
  int64_t G;              // number of stochastic gates
  int64_t row_offset;     // global row of row 0 and global batch size (data-parallel shards)
  int64_t global_N;
};

// B * (log U - log(1 - U)) of gate slot `slot`, row n, units [j0, j0 + count) at time t into out.
template <typename T>
void draw_noise(T* out, const NoiseParams& np, int64_t t, int64_t n, int64_t slot, int64_t H, int64_t j0,
                int64_t count) {
  // the element index of g2lstm/noise.py with the global batch size and row
  const uint32_t N = static_cast<uint32_t>(np.global_N);
  const uint32_t row = static_cast<uint32_t>(np.row_offset + n);
  const uint32_t tt = np.mode == 1 ? 0u : static_cast<uint32_t>(t);
  const uint32_t base = ((tt * N + row) * np.G + slot) * H + static_cast<uint32_t>(j0);
  const uint32_t mask_t = np.mode == 0 ? tt : 0u;
  const uint32_t mask_base = ((mask_t * N + row) * np.G + slot) * H + static_cast<uint32_t>(j0);
  // with p >= 1 every element is perturbed; the comparison is then always true (ub < 1 <= p)
  const float p = np.p < 1.0f ? np.p : 2.0f;
  T* __restrict__ o = out;
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) {
    const float u = counter_uniform(np.key_u, base + static_cast<uint32_t>(j));
    const float v = log_(u) - log_(1.0f - u);  // 1 - u is exact: u has 23 bits
    const float ub = counter_uniform(np.key_b, mask_base + static_cast<uint32_t>(j));
    o[j] = static_cast<T>(ub < p ? v : 0.0f);
  }
}

// The gate values of rows [n0, n1) and units [j0, j1) of one step into `gates`, from the
// pre-activations hw + x_proj (the recurrent GEMM's result and the step's input projection), then
// the cell and (pre-projection) hidden update of those units. `hw` points at unit j0 of gate
// block i of row 0, the other blocks `hw_block` values further (rows 4H apart). `scratch` holds
// j1 - j0 values.
// The value a gate takes in the step from its saved value v: v, or for a straight-through gate
// (s >= 1/2) as 0 or 1.
template <typename T>
inline T step_value(T v, bool straight) {
  return straight ? (v >= T(0.5) ? T(1) : T(0)) : v;
}

template <typename T>
void forward_pointwise(T* gates, const T* hw, int64_t hw_block, const T* x_proj, const T* c_prev,
                       T* c_new, T* r_out, const NoiseParams& np, int64_t t, int64_t n0, int64_t n1,
                       int64_t H, int64_t j0, int64_t j1, const GatePlan& plan, T* scratch) {
  const T tau = T(plan.tau);
  const int64_t count = j1 - j0;
  const bool si = is_straight(plan.kind[0]), sf = is_straight(plan.kind[1]), so = is_straight(plan.kind[2]);
  const bool straight = si || sf || so;
  for (int64_t n = n0; n < n1; ++n) {
    T* a = gates + n * 4 * H + j0;
    const T* hwn = hw + n * 4 * H;
    const T* xn = x_proj + n * 4 * H + j0;
    // the three sigmoid gates (blocks 0, 1, 3), each with its own formula, and the cell input g
    for (int k = 0; k < 4; ++k) {
      const int64_t block = k == 3 ? 2 : (k == 2 ? 3 : k);
      T* __restrict__ ak = a + block * H;
      const T* __restrict__ hk = hwn + block * hw_block;
      const T* __restrict__ xk = xn + block * H;
      const T* __restrict__ nz = scratch;
      if (k == 3) {
#pragma omp simd
        for (int64_t j = 0; j < count; ++j) ak[j] = tanh_(hk[j] + xk[j]);
        continue;
      }
      switch (plan.kind[k]) {
        case SCALED:
        case STRAIGHT_SCALED:
#pragma omp simd
          for (int64_t j = 0; j < count; ++j) ak[j] = sigmoid((hk[j] + xk[j]) / tau);
          break;
        case NOISY:
        case STRAIGHT_NOISY:
          draw_noise(scratch, np, t, n, plan.slot[k], H, j0, count);
#pragma omp simd
          for (int64_t j = 0; j < count; ++j) ak[j] = sigmoid((hk[j] + xk[j] + nz[j]) / tau);
          break;
        case HARD:
#pragma omp simd
          for (int64_t j = 0; j < count; ++j) ak[j] = (hk[j] + xk[j]) >= T(0) ? T(1) : T(0);
          break;
        default:
#pragma omp simd
          for (int64_t j = 0; j < count; ++j) ak[j] = sigmoid(hk[j] + xk[j]);
      }
    }
    const T* __restrict__ ai = a;
    const T* __restrict__ af = a + H;
    const T* __restrict__ ag = a + 2 * H;
    const T* __restrict__ ao = a + 3 * H;
    const T* __restrict__ cpr = c_prev + n * H + j0;
    T* __restrict__ cnr = c_new + n * H + j0;
    T* __restrict__ rr = r_out + n * H + j0;
    if (straight) {
#pragma omp simd
      for (int64_t j = 0; j < count; ++j) {
        const T c = step_value(af[j], sf) * cpr[j] + step_value(ai[j], si) * ag[j];
        cnr[j] = c;
        rr[j] = step_value(ao[j], so) * tanh_(c);
      }
      continue;
    }
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) {
      const T c = af[j] * cpr[j] + ai[j] * ag[j];
      cnr[j] = c;
      rr[j] = ao[j] * tanh_(c);
    }
  }
}

// The factor of dv/da = v (1 - v) * scale of each sigmoid gate: 0 for a hard gate (no gradient),
// 1 / tau for a tempered one.
template <typename T>
inline T slope_scale(int64_t kind, T inv_tau) {
  return kind == HARD ? T(0) : (kind == PLAIN ? T(1) : inv_tau);  // SCALED, NOISY, STRAIGHT_*
}

// Rows [n0, n1) and units [j0, j1) of one backward step: from dr (gradient w.r.t. o * tanh(c'))
// and the incoming dc, the pre-activation gradients da and the dc of the previous step (in place
// in dc), and r_out = o * tanh(c'), kept for the projection's weight gradient.
template <typename T>
void backward_pointwise(const T* gates, const T* c_prev, const T* c_new, const T* dr, T* dc, T* da,
                        T* r_out, int64_t n0, int64_t n1, int64_t H, int64_t j0, int64_t j1,
                        const GatePlan& plan) {
  const T inv_tau = T(1) / T(plan.tau);
  const T si = slope_scale(plan.kind[0], inv_tau), sf = slope_scale(plan.kind[1], inv_tau),
          so = slope_scale(plan.kind[2], inv_tau);
  const bool bi = is_straight(plan.kind[0]), bf = is_straight(plan.kind[1]), bo = is_straight(plan.kind[2]);
  for (int64_t n = n0; n < n1; ++n) {
    const T* __restrict__ v = gates + n * 4 * H + j0;
    T* __restrict__ d = da + n * 4 * H + j0;
    const T* __restrict__ cp = c_prev + n * H + j0;
    const T* __restrict__ cn = c_new + n * H + j0;
    const T* __restrict__ drn = dr + n * H + j0;
    T* __restrict__ dcn = dc + n * H + j0;
    T* __restrict__ rn = r_out + n * H + j0;
    // A loop of its own for straight-through gates: one loop with step_value's tests for every
    // plan ran 14% slower at 1 thread (benchmarks/ab_cpu_op.py --size 35,20,256).
    if (bi || bf || bo) {  // the slopes from the saved soft values, the step from their rounding
#pragma omp simd
      for (int64_t j = 0; j < j1 - j0; ++j) {
        const T i = v[j], f = v[H + j], g = v[2 * H + j], o = v[3 * H + j];
        const T iv = step_value(i, bi), fv = step_value(f, bf), ov = step_value(o, bo);
        const T tc = tanh_(cn[j]);
        const T dc_total = dcn[j] + drn[j] * ov * (T(1) - tc * tc);
        d[j] = dc_total * g * (i * (T(1) - i) * si);
        d[H + j] = dc_total * cp[j] * (f * (T(1) - f) * sf);
        d[2 * H + j] = dc_total * iv * (T(1) - g * g);
        d[3 * H + j] = drn[j] * tc * (o * (T(1) - o) * so);
        dcn[j] = dc_total * fv;
        rn[j] = ov * tc;
      }
      continue;
    }
#pragma omp simd
    for (int64_t j = 0; j < j1 - j0; ++j) {
      const T i = v[j], f = v[H + j], g = v[2 * H + j], o = v[3 * H + j];
      const T tc = tanh_(cn[j]);
      const T dc_total = dcn[j] + drn[j] * o * (T(1) - tc * tc);
      d[j] = dc_total * g * (i * (T(1) - i) * si);
      d[H + j] = dc_total * cp[j] * (f * (T(1) - f) * sf);
      d[2 * H + j] = dc_total * i * (T(1) - g * g);
      d[3 * H + j] = drn[j] * tc * (o * (T(1) - o) * so);
      dcn[j] = dc_total * f;
      rn[j] = o * tc;
    }
  }
}

// How a step is shared among threads: the hidden units are cut into one chunk per thread, and each
// chunk's task does all the work of its units in one parallel region per step: its columns of the
// recurrent GEMM (the i, f, g, o blocks of its units, single-threaded inside the region), then the
// pointwise part of its units, on data the same core just wrote. One fork/join per step instead of
// a threaded GEMM plus a threaded pointwise pass, and no step data moving between cores but h.
// A step too small to share (under ~16k gate values) is one chunk: waking the other thread would
// cost more than it saves. A chunk has at least 64 units (narrower GEMMs run slowly, and the
// backward sums one share per chunk). Chunk edges are multiples of 8 units (one AVX vector).
std::vector<int64_t> unit_chunks(int64_t N, int64_t H) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t count = N * 4 * H < 16384 ? 1 : std::max<int64_t>(1, std::min<int64_t>(threads, H / 64));
  std::vector<int64_t> edges(count + 1);
  for (int64_t k = 0; k <= count; ++k) edges[k] = k == count ? H : (H * k / count) / 8 * 8;
  return edges;
}

// Whether a (contiguous) state is all zeros, as the default initial state is: the work it feeds
// (h0 W_hh^T at the first step, its rows of dW_hh) is then skipped.
template <typename T>
bool all_zero(const T* p, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (p[i] != T(0)) return false;
  return true;
}

// Runs body(k) for every chunk k, each chunk on one thread (a single task runs inline).
template <typename F>
void for_each_chunk(int64_t count, const F& body) {
  if (count == 1) {
    body(0);
    return;
  }
  at::parallel_for(0, count, 1, [&](int64_t k0, int64_t k1) {
    // ATen calls in a pool thread (the gemm fallback) run below autograd, as in the caller's
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t k = k0; k < k1; ++k) body(k);
  });
}

}  // namespace

// The BLAS that torch links (MKL in the official builds) exports the Fortran GEMMs. Calling them
// directly skips the dispatcher and the tensor views of at::mm_out, a few microseconds per call,
// which a small step (a few GEMMs of tens of microseconds per chunk) feels. Weak: where the
// symbols are missing they are null and at::mm_out runs instead.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace {

inline bool fits_int(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// C (m, n) = op(A) op(B) + beta C with beta 0 or 1; C row-major with row stride ldc, op(X) = X
// row-major with row stride ldx, or with trans_x the transpose of such a matrix (column-major BLAS
// sees the transposes: C^T = op(B)^T op(A)^T).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  constexpr bool single = std::is_same<T, float>::value;
  const bool direct = (single ? sgemm_ != nullptr : dgemm_ != nullptr) && fits_int(m) && fits_int(n) &&
                      fits_int(k) && fits_int(lda) && fits_int(ldb) && fits_int(ldc);
  if (direct) {
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const char* ta = trans_b ? "T" : "N";
    const char* tb = trans_a ? "T" : "N";
    const T one = T(1);
    if constexpr (std::is_same<T, float>::value) {
      sgemm_(ta, tb, &M, &N, &K, &one, B, &la, A, &lb, &beta, C, &lc);
    } else {
      dgemm_(ta, tb, &M, &N, &K, &one, B, &la, A, &lb, &beta, C, &lc);
    }
    return;
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* X, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    return trans ? at::from_blob(const_cast<T*>(X), {rows, cols}, {1, ld}, opts)
                 : at::from_blob(const_cast<T*>(X), {rows, cols}, {ld, 1}, opts);
  };
  at::Tensor a = view(A, m, k, lda, trans_a), b = view(B, k, n, ldb, trans_b);
  at::Tensor c = at::from_blob(C, {m, n}, {ldc, 1}, opts);
  if (beta == T(0)) at::mm_out(c, a, b);
  else c.addmm_(a, b);
}

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
          T* C, int64_t ldc) {
  gemm<T>(false, false, m, n, k, A, lda, B, ldb, beta, C, ldc);
}

// Our own float32 GEMM: C (M, N) = A (M, K) B (K, N) with B packed into panels of 16 columns and a
// 6x16 FMA micro-kernel. It runs the per-step products of the time loop (B = an arrangement of
// W_hh, packed once per call: MKL, as torch links it, packs or streams W_hh again at every step)
// and the backward's dx (large_mm). On this project's machines
// (AMD Zen 3, AVX2) it ran the forward step's product (80, 1150) x (1150, 4600) at 78 against MKL's
// 53 GFLOP/s on 1 thread and 138 against 107 on 2 (docs/kernels.md). float32 with AVX2 and FMA
// only; elsewhere BLAS runs.
#if defined(__AVX2__) && defined(__FMA__)
constexpr bool kPackedKernel = true;
#else
constexpr bool kPackedKernel = false;
#endif
constexpr int64_t kPanel = 16;    // columns of B per panel: two AVX vectors
constexpr int64_t kRows = 6;      // rows of A per micro-kernel call: 12 accumulators of 16 registers
constexpr int64_t kDepth = 2400;  // K is cut into blocks of at most this (whole K ran best to 2300)

// A matrix read in place: element (i, j) = p[r(i) rs + c(j) cs], r and c the identity or a list
// of indices (the rows of W_hh a chunk uses, say).
struct View {
  const float* p;
  int64_t rs, cs;
  const int64_t* rows = nullptr;
  const int64_t* cols = nullptr;
  float at(int64_t i, int64_t j) const { return p[(rows ? rows[i] : i) * rs + (cols ? cols[j] : j) * cs]; }
  View from_row(int64_t i0) const {  // rows i0 onwards (no row list)
    return View{p + i0 * rs, rs, cs, nullptr, cols};
  }
};

View view_of(const at::Tensor& t) { return View{t.data_ptr<float>(), t.stride(0), t.stride(1)}; }

inline int64_t panel_floats(int64_t K, int64_t N) { return (N + kPanel - 1) / kPanel * kPanel * K; }

// The panels of B (K, N) that cover columns [begin, end) (begin a multiple of 16): the panel of
// columns n0 to n0 + 15 is (K, 16) contiguous at out + n0 K, the last one zero-padded.
void pack_panels(const View& B, int64_t K, int64_t N, int64_t begin, int64_t end, float* out) {
  const bool rows_contiguous = B.cs == 1 && B.cols == nullptr;
  for (int64_t n0 = begin; n0 < std::min(end, N); n0 += kPanel) {
    float* panel = out + n0 * K;
    const int64_t width = std::min(kPanel, N - n0);
    if (rows_contiguous) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < kPanel; ++j) panel[k * kPanel + j] = j < width ? B.at(k, n0 + j) : 0.0f;
    } else {  // read down B's columns
      for (int64_t j = 0; j < kPanel; ++j)
        for (int64_t k = 0; k < K; ++k) panel[k * kPanel + j] = j < width ? B.at(k, n0 + j) : 0.0f;
    }
  }
}

// Rows [0, M) and columns [k0, k0 + kc) of A in groups of 6 rows, each group (kc, rows of the
// group) interleaved at out + m0 kc (m0 its first row): the micro-kernel's broadcasts in order.
void pack_rows(const View& A, int64_t M, int64_t k0, int64_t kc, float* out) {
  if (A.rs == 1 && A.rows == nullptr) {  // A's columns contiguous: along each column
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t m = 0; m < M; ++m) {
        const int64_t m0 = m / kRows * kRows, rows = std::min(kRows, M - m0);
        out[m0 * kc + k * rows + (m - m0)] = A.at(m, k0 + k);
      }
    return;
  }
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    const int64_t rows = std::min(kRows, M - m0);
    float* group = out + m0 * kc;
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t i = 0; i < rows; ++i) group[k * rows + i] = A.at(m0 + i, k0 + k);
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// C (R, cols <= 16) = a (kc, R interleaved) b (kc, 16), added to C when accumulate. The rows are
// written out so that the accumulators stay in registers (an array of them did not: 2.3x slower).
template <int R>
void micro_kernel(int64_t kc, const float* __restrict__ a, const float* __restrict__ b, float* c, int64_t ldc,
                  int64_t cols, bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
         c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define G2_ROW(i)                                                 \
  if constexpr (R > i) {                                          \
    const __m256 ai = _mm256_broadcast_ss(a + R * k + i);         \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                   \
    c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                   \
  }
  // B's panel comes from L2 (a panel of K = 1150 is 74 KB): prefetched 4 KB ahead, which with the
  // unrolling took the forward step's product from 67 to 78 GFLOP/s on 1 thread.
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(b + kPanel * (k + 64)), _MM_HINT_T0);
    const __m256 b0 = _mm256_load_ps(b + kPanel * k), b1 = _mm256_load_ps(b + kPanel * k + 8);
    G2_ROW(0) G2_ROW(1) G2_ROW(2) G2_ROW(3) G2_ROW(4) G2_ROW(5)
  }
#undef G2_ROW
  const __m256 acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
    __m256 lo = acc[2 * i], hi = acc[2 * i + 1];
    if (cols == kPanel) {
      if (accumulate) {
        lo = _mm256_add_ps(_mm256_loadu_ps(ci), lo);
        hi = _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi);
      }
      _mm256_storeu_ps(ci, lo);
      _mm256_storeu_ps(ci + 8, hi);
    } else {
      alignas(32) float row[kPanel];
      _mm256_store_ps(row, lo);
      _mm256_store_ps(row + 8, hi);
      for (int64_t j = 0; j < cols; ++j) ci[j] = accumulate ? ci[j] + row[j] : row[j];
    }
  }
}

void micro_kernel_rows(int64_t rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       int64_t cols, bool accumulate) {
  switch (rows) {
    case 6: micro_kernel<6>(kc, a, b, c, ldc, cols, accumulate); break;
    case 5: micro_kernel<5>(kc, a, b, c, ldc, cols, accumulate); break;
    case 4: micro_kernel<4>(kc, a, b, c, ldc, cols, accumulate); break;
    case 3: micro_kernel<3>(kc, a, b, c, ldc, cols, accumulate); break;
    case 2: micro_kernel<2>(kc, a, b, c, ldc, cols, accumulate); break;
    default: micro_kernel<1>(kc, a, b, c, ldc, cols, accumulate);
  }
}
#endif

// C[:, n0:n1] = A (M, K) B[:, n0:n1] into row-major C (row stride ldc), B's panels packed by
// pack_panels (n0 a multiple of 16), on the calling thread. scratch holds M min(K, kDepth) floats.
void packed_gemm(int64_t M, const View& A, int64_t K, const float* panels, int64_t n0, int64_t n1, float* c,
                 int64_t ldc, float* scratch) {
#if defined(__AVX2__) && defined(__FMA__)
  const int64_t blocks = (K + kDepth - 1) / kDepth;
  for (int64_t q = 0; q < blocks; ++q) {
    const int64_t k0 = K * q / blocks, kc = K * (q + 1) / blocks - k0;
    pack_rows(A, M, k0, kc, scratch);
    for (int64_t p = n0; p < n1; p += kPanel) {
      const float* b = panels + p * K + k0 * kPanel;
      for (int64_t m0 = 0; m0 < M; m0 += kRows)
        micro_kernel_rows(std::min(kRows, M - m0), kc, scratch + m0 * kc, b, c + m0 * ldc + p, ldc,
                          std::min(kPanel, n1 - p), q > 0);
    }
  }
#else
  TORCH_CHECK(false, "packed_gemm: needs a CPU with AVX2 and FMA");
#endif
}

// A per-step product of the time loop through packed_gemm: A[m][k] = a[m lda + cols[k]] (cols
// null: the identity). A template so that the float64 instantiation compiles; it never runs
// (the callers take this path for float32 only).
template <typename T>
void packed_step_gemm(int64_t M, const T* a, int64_t lda, const int64_t* cols, int64_t K, const float* panels,
                      int64_t n0, int64_t n1, T* c, int64_t ldc, float* scratch) {
  if constexpr (std::is_same<T, float>::value) {
    packed_gemm(M, View{a, lda, 1, nullptr, cols}, K, panels, n0, n1, c, ldc, scratch);
  } else {
    TORCH_CHECK(false, "packed_step_gemm: float32 only");
  }
}

// c (M, N, row-major) = a b, a large float32 product on all threads: B packed once (its panels
// shared among the threads), then C's rows in blocks of 96, each block on one thread (A's block
// packed there).
void packed_mm(const at::Tensor& a, const at::Tensor& b, at::Tensor& c) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  at::Tensor panels = empty_buffer({panel_floats(K, N)}, a.options());
  const View A = view_of(a), B = view_of(b);
  float* pp = panels.data_ptr<float>();
  const int64_t panel_count = (N + kPanel - 1) / kPanel;
  at::parallel_for(0, panel_count, 1, [&](int64_t p0, int64_t p1) {
    pack_panels(B, K, N, p0 * kPanel, p1 * kPanel, pp);
  });
  constexpr int64_t kBlock = 96;
  float* cp = c.data_ptr<float>();
  at::parallel_for(0, (M + kBlock - 1) / kBlock, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(kBlock * std::min(K, kDepth));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t m0 = r * kBlock;
      packed_gemm(std::min(kBlock, M - m0), A.from_row(m0), K, pp, 0, N, cp + m0 * N, N, scratch.data());
    }
  });
}

// A 2-D tensor as a BLAS operand: row-major (trans false) or the transpose of a row-major matrix,
// with its leading dimension; anything else is copied first.
struct Operand {
  at::Tensor t;
  bool trans;
  int64_t ld;
};

Operand as_operand(const at::Tensor& x) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (x.stride(1) == 1 && x.stride(0) >= std::max<int64_t>(1, cols)) return {x, false, x.stride(0)};
  if (x.stride(0) == 1 && x.stride(1) >= std::max<int64_t>(1, rows)) return {x, true, x.stride(1)};
  return {x.contiguous(), false, std::max<int64_t>(1, cols)};
}

// a (m, k) @ b (k, n) into a new row-major tensor, for the large products of a layer's backward.
// float32 with a row-major `a` (dx = g W) runs packed_mm: at (T N, 4H, I) = (5600, 4600, 400)
// 80 against 75 GFLOP/s on 1 thread and 155 against 132 on 2 for MKL's best layout, (W^T g^T)^T
// with the copy back; a tie at I = 1150. Otherwise (the weight gradients, a = x^T, where packing
// a transposed `a` cost packed_mm ~15% and MKL ran the product faster; and float64) C's columns
// are cut into one block per thread, each block one single-threaded BLAS call: MKL threading one
// call by itself ran these products slower on 2 threads (x^T g 115 against 142 GFLOP/s, W^T g^T
// 115 against 127). Below 2^28 multiply-adds one call, threaded by MKL (a cautious floor:
// smaller products were not timed).
at::Tensor large_mm(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0) && a.scalar_type() == b.scalar_type(),
              "large_mm: expected (m, k) and (k, n) matrices of one dtype, got ", a.sizes(), " ",
              a.scalar_type(), " and ", b.sizes(), " ", b.scalar_type());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "large_mm: expected float32 or float64, got ", a.scalar_type());
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0 || k == 0) return at::zeros({m, n}, a.options());
  at::Tensor c = at::empty({m, n}, a.options());
  if (kPackedKernel && a.scalar_type() == at::kFloat && a.stride(1) == 1) {
    packed_mm(a, b, c);
    return c;
  }
  const Operand A = as_operand(a), B = as_operand(b);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const bool small = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) < 268435456.0;
  const int64_t blocks = small ? 1 : std::max<int64_t>(1, std::min<int64_t>(threads, n / 256));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "g2lstm_large_mm", [&] {
    const scalar_t* ap = A.t.data_ptr<scalar_t>();
    const scalar_t* bp = B.t.data_ptr<scalar_t>();
    scalar_t* cp = c.data_ptr<scalar_t>();
    for_each_chunk(blocks, [&](int64_t q) {
      // block edges at multiples of 16 columns (two AVX vectors)
      const int64_t c0 = q == 0 ? 0 : n * q / blocks / 16 * 16;
      const int64_t c1 = q + 1 == blocks ? n : n * (q + 1) / blocks / 16 * 16;
      gemm<scalar_t>(A.trans, B.trans, m, c1 - c0, k, ap, A.ld, bp + (B.trans ? c0 * B.ld : c0), B.ld,
                     scalar_t(0), cp + c0, n);
    });
  });
  return c;
}

std::vector<at::Tensor> lstm_forward(const at::Tensor& x_proj, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_hh,
                                     const c10::optional<at::Tensor>& w_hr_opt,
                                     const c10::optional<at::Tensor>& lengths_opt, bool reverse,
                                     at::IntArrayRef kinds, at::IntArrayRef slots, double tau,
                                     at::IntArrayRef noise_keys, double noise_p,
                                     int64_t noise_mode, int64_t noise_gates, int64_t noise_row_offset,
                                     int64_t noise_global_batch, bool save) {
  const GatePlan plan = make_plan(kinds, slots, tau);
  const int64_t T = x_proj.size(0), N = x_proj.size(1), H4 = x_proj.size(2), H = H4 / 4;
  const bool proj = w_hr_opt.has_value() && w_hr_opt->defined();
  const int64_t Hout = proj ? w_hr_opt->size(0) : H;
  const auto opts = x_proj.options();
  at::Tensor x = x_proj.contiguous();
  at::Tensor w_hr_t = proj ? w_hr_opt->t().contiguous() : at::Tensor();
  TORCH_CHECK(!plan_has_noise(plan) || noise_keys.size() == 2, "a noisy gate needs 2 noise keys");
  TORCH_CHECK(noise_row_offset >= 0 && noise_row_offset + N <= noise_global_batch,
              "noise rows [", noise_row_offset, ", ", noise_row_offset + N, ") do not fit a global batch of ",
              noise_global_batch);
  NoiseParams np{0u, 0u, static_cast<float>(noise_p), noise_mode, noise_gates, noise_row_offset,
                 noise_global_batch};
  if (noise_keys.size() == 2) {
    np.key_u = static_cast<uint32_t>(noise_keys[0]);
    np.key_b = static_cast<uint32_t>(noise_keys[1]);
  }
  const int64_t* len = nullptr;
  at::Tensor lengths;
  if (lengths_opt.has_value() && lengths_opt->defined()) {
    lengths = lengths_opt->to(at::kLong).contiguous();
    len = lengths.data_ptr<int64_t>();
  }

  at::Tensor gates = empty_buffer({save ? T : 1, N, H4}, opts);
  // The recurrent GEMM writes a small buffer that stays in cache from step to step (N 4H values)
  // rather than the step's slice of `gates`: addmm into gates[t] would copy x_proj[t] there first
  // and then read and write that fresh memory again.
  at::Tensor hw = at::empty({N, H4}, opts);
  at::Tensor cs = empty_buffer({T + 1, N, H}, opts);
  at::Tensor hs = empty_buffer({T + 1, N, Hout}, opts);
  at::Tensor r = proj ? at::empty({N, H}, opts) : at::Tensor();
  at::Tensor h_tmp = (proj && len) ? at::empty({N, Hout}, opts) : at::Tensor();
  const std::vector<int64_t> edges = unit_chunks(N, H);
  const int64_t chunks = static_cast<int64_t>(edges.size()) - 1;
  // W_hh^T (Hout, 4H), MKL's faster layout for this product; with several chunks its columns go
  // chunk by chunk, [i f g o] of the chunk's units side by side, so that a chunk's part of
  // h W_hh^T is one GEMM (5-13% faster than one per gate block for a chunk of T70-N80-H1150 at 2
  // threads, timed on one thread; the forward op at 2 threads: 537 -> 492 ms).
  // float32 packs the same layout into panels for packed_gemm (each chunk its own columns, on its
  // thread); float64 keeps it as a matrix for gemm().
  const bool packed = kPackedKernel && x.scalar_type() == at::kFloat;
  std::vector<int64_t> w_rows(H4);  // the row of W_hh behind each column of that layout
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t j0 = edges[k], width = edges[k + 1] - j0;
    for (int64_t block = 0; block < 4; ++block)
      for (int64_t u = 0; u < width; ++u) w_rows[4 * j0 + block * width + u] = block * H + j0 + u;
  }
  at::Tensor w_hh_t, w_panels, a_scratch;
  if (packed) {
    const at::Tensor w = w_hh.contiguous();
    w_panels = empty_buffer({panel_floats(Hout, H4)}, opts);
    a_scratch = at::empty({chunks, N * Hout}, opts);
    // column n of the layout is row w_rows[n] of W_hh
    const View layout{w.data_ptr<float>(), 1, Hout, nullptr, w_rows.data()};
    for_each_chunk(chunks, [&](int64_t k) {
      pack_panels(layout, Hout, H4, 4 * edges[k], 4 * edges[k + 1], w_panels.data_ptr<float>());
    });
  } else {
    w_hh_t = w_hh.index_select(0, at::tensor(w_rows, at::kLong)).t().contiguous();
  }
  const int64_t first = reverse ? T : 0;
  cs[first].copy_(c0);
  hs[first].copy_(h0);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "g2lstm_cpu_forward", [&] {
    const bool h0_zero = all_zero(hs[first].data_ptr<scalar_t>(), N * Hout);
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t in = t + (reverse ? 1 : 0), outi = t + (reverse ? 0 : 1);
      at::Tensor g_t = gates[save ? t : 0];
      at::Tensor h_prev = hs[in], h_new = hs[outi];
      scalar_t* gp = g_t.data_ptr<scalar_t>();
      scalar_t* hwo = hw.data_ptr<scalar_t>();
      const scalar_t* hp = h_prev.data_ptr<scalar_t>();
      const scalar_t* wp = packed ? nullptr : w_hh_t.data_ptr<scalar_t>();
      const scalar_t* xp = x[t].data_ptr<scalar_t>();
      const scalar_t* cp = cs[in].data_ptr<scalar_t>();
      scalar_t* cn = cs[outi].data_ptr<scalar_t>();
      scalar_t* rp = proj ? r.data_ptr<scalar_t>() : h_new.data_ptr<scalar_t>();
      for_each_chunk(chunks, [&](int64_t k) {
        const int64_t j0 = edges[k], j1 = edges[k + 1];
        // this chunk's columns of h_prev W_hh^T (columns 4 j0 to 4 j1 of the chunk-major layout)
        if (s == 0 && h0_zero) {
          for (int64_t n = 0; n < N; ++n) std::fill(hwo + n * H4 + 4 * j0, hwo + n * H4 + 4 * j1, scalar_t(0));
        } else if (packed) {
          packed_step_gemm<scalar_t>(N, hp, Hout, nullptr, Hout, w_panels.data_ptr<float>(), 4 * j0, 4 * j1, hwo,
                                     H4, a_scratch.data_ptr<float>() + k * N * Hout);
        } else {
          gemm<scalar_t>(N, 4 * (j1 - j0), Hout, hp, Hout, wp + 4 * j0, H4, scalar_t(0), hwo + 4 * j0, H4);
        }
        std::vector<scalar_t> scratch(j1 - j0);
        forward_pointwise<scalar_t>(gp, hwo + 4 * j0, j1 - j0, xp, cp, cn, rp, np, t, 0, N, H, j0, j1, plan,
                                    scratch.data());
      });
      if (proj) at::mm_out(len ? h_tmp : h_new, r, w_hr_t);
      if (len) {
        // rows past their end keep the state they had
        const scalar_t* hp = h_prev.data_ptr<scalar_t>();
        scalar_t* hn = h_new.data_ptr<scalar_t>();
        const scalar_t* ht = proj ? h_tmp.data_ptr<scalar_t>() : nullptr;
        for (int64_t n = 0; n < N; ++n) {
          if (t >= len[n]) {
            std::copy(cp + n * H, cp + (n + 1) * H, cn + n * H);
            std::copy(hp + n * Hout, hp + (n + 1) * Hout, hn + n * Hout);
          } else if (proj) {
            std::copy(ht + n * Hout, ht + (n + 1) * Hout, hn + n * Hout);
          }
        }
      }
    }
  });

  const int64_t last = reverse ? 0 : T;
  at::Tensor out = hs.narrow(0, reverse ? 0 : 1, T).clone();
  if (len) {
    auto steps = at::arange(T, lengths.options()).unsqueeze(1);
    out.mul_((steps < lengths.unsqueeze(0)).unsqueeze(-1).to(out.scalar_type()));
  }
  return {out, hs[last].clone(), cs[last].clone(), gates, cs, hs};
}

std::vector<at::Tensor> lstm_backward(const at::Tensor& grad_out, const at::Tensor& grad_hT,
                                      const at::Tensor& grad_cT, const at::Tensor& gates,
                                      const at::Tensor& cs, const at::Tensor& hs,
                                      const at::Tensor& w_hh, const c10::optional<at::Tensor>& w_hr_opt,
                                      const c10::optional<at::Tensor>& lengths_opt, bool reverse,
                                      at::IntArrayRef kinds, double tau, bool need_dh0) {
  const GatePlan plan = make_plan(kinds, at::IntArrayRef({0, 0, 0}), tau);
  const int64_t T = gates.size(0), N = gates.size(1), H4 = gates.size(2), H = H4 / 4;
  const bool proj = w_hr_opt.has_value() && w_hr_opt->defined();
  const int64_t Hout = hs.size(2);
  const auto opts = gates.options();
  at::Tensor w_hr = proj ? w_hr_opt->contiguous() : at::Tensor();
  at::Tensor go = grad_out.contiguous();
  const int64_t* len = nullptr;
  at::Tensor lengths;
  if (lengths_opt.has_value() && lengths_opt->defined()) {
    lengths = lengths_opt->to(at::kLong).contiguous();
    len = lengths.data_ptr<int64_t>();
    // outputs past a row's end are constant zeros: no gradient flows from them
    auto steps = at::arange(T, lengths.options()).unsqueeze(1);
    go = go.mul((steps < lengths.unsqueeze(0)).unsqueeze(-1).to(go.scalar_type()));
  }

  at::Tensor da = empty_buffer({T, N, H4}, opts);
  at::Tensor dh = at::empty({N, Hout}, opts);  // dL/dh of the step being processed, then of the one before
  at::Tensor dc = grad_cT.contiguous().clone();
  at::Tensor dr = proj ? at::empty({N, H}, opts) : at::Tensor();
  at::Tensor dH = proj ? at::empty({T, N, Hout}, opts) : at::Tensor();  // dL/dh' of every step
  // o * tanh(c') of every step (projection), or of one step as scratch
  at::Tensor R = at::empty({proj ? T : 1, N, H}, opts);
  const int64_t t_last = reverse ? 0 : T - 1;
  at::add_out(dh, grad_hT, go[t_last]);
  // Each chunk's share of da[t] W_hh (its units' rows of W_hh); dh of the step before is the sum
  // of the shares, plus that step's output gradient, summed in chunk order (deterministic). Two
  // sets, by step parity: a chunk writes this step's share while others still read the last one.
  const std::vector<int64_t> edges = unit_chunks(N, H);
  const int64_t chunks = static_cast<int64_t>(edges.size()) - 1;
  at::Tensor shares = at::empty({2, chunks, N, Hout}, opts);
  at::Tensor w_hh_c = w_hh.contiguous();
  // A chunk's rows of W_hh (its units' rows of the four gate blocks), which are also its columns of
  // da[t]; with float32 packed into panels once, each chunk its own on its thread.
  const bool packed = kPackedKernel && gates.scalar_type() == at::kFloat;
  std::vector<std::vector<int64_t>> chunk_rows(chunks);
  std::vector<int64_t> panel_offset(chunks + 1, 0);
  int64_t widest = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t j0 = edges[k], width = edges[k + 1] - j0;
    widest = std::max(widest, width);
    for (int64_t block = 0; block < 4; ++block)
      for (int64_t u = 0; u < width; ++u) chunk_rows[k].push_back(block * H + j0 + u);
    panel_offset[k + 1] = panel_offset[k] + panel_floats(4 * width, Hout);
  }
  at::Tensor w_panels, a_scratch;
  if (packed) {
    w_panels = empty_buffer({panel_offset[chunks]}, opts);
    a_scratch = at::empty({chunks, N * 4 * widest}, opts);
    for_each_chunk(chunks, [&](int64_t k) {
      const View rows{w_hh_c.data_ptr<float>(), Hout, 1, chunk_rows[k].data()};
      pack_panels(rows, static_cast<int64_t>(chunk_rows[k].size()), Hout, 0, Hout,
                  w_panels.data_ptr<float>() + panel_offset[k]);
    });
  }

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "g2lstm_cpu_backward", [&] {
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    scalar_t* shares_p = shares.data_ptr<scalar_t>();
    scalar_t* sharep = shares_p;  // the set of the step processed last
    const scalar_t* whp = w_hh_c.data_ptr<scalar_t>();
    // dh[:, c0:c1] = go_t + the shares of the step processed before (t_prev), plus, for rows past
    // their end at t_prev, the dh that step got (their state passed through it unchanged)
    auto gather_dh = [&](const scalar_t* go_t, int64_t t_prev, int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; ++n) {
        scalar_t* d = dhp + n * Hout;
        const bool carry = len && t_prev >= len[n];
        for (int64_t j = c0; j < c1; ++j) {
          scalar_t sum = go_t ? go_t[n * Hout + j] : scalar_t(0);
          for (int64_t k = 0; k < chunks; ++k) sum += sharep[(k * N + n) * Hout + j];
          d[j] = carry ? sum + d[j] : sum;
        }
      }
    };
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t t_prev = reverse ? t - 1 : t + 1;  // processed just before (s < T - 1)
      scalar_t* const written = shares_p + (s % 2) * chunks * N * Hout;
      const int64_t in = t + (reverse ? 1 : 0), outi = t + (reverse ? 0 : 1);
      const scalar_t* go_t = go[t].data_ptr<scalar_t>();
      if (proj) {  // the projection needs all of dh first
        if (s < T - 1) gather_dh(go_t, t_prev, 0, Hout);
        dH[t].copy_(dh);
        if (len) {
          scalar_t* p = dH[t].data_ptr<scalar_t>();
          for (int64_t n = 0; n < N; ++n)
            if (t >= len[n]) std::fill(p + n * Hout, p + (n + 1) * Hout, scalar_t(0));
        }
        at::mm_out(dr, dh, w_hr);
      }
      const scalar_t* v = gates[t].data_ptr<scalar_t>();
      const scalar_t* cp = cs[in].data_ptr<scalar_t>();
      const scalar_t* cn = cs[outi].data_ptr<scalar_t>();
      const scalar_t* drp = (proj ? dr : dh).data_ptr<scalar_t>();
      scalar_t* dcp = dc.data_ptr<scalar_t>();
      scalar_t* dap = da[t].data_ptr<scalar_t>();
      scalar_t* rp = R[proj ? t : 0].data_ptr<scalar_t>();
      for_each_chunk(chunks, [&](int64_t k) {
        const int64_t j0 = edges[k], j1 = edges[k + 1];
        if (!proj && s < T - 1) gather_dh(go_t, t_prev, j0, j1);  // this chunk's units of dh
        for (int64_t n = 0; n < N; ++n) {
          if (!len || t < len[n]) {
            backward_pointwise<scalar_t>(v, cp, cn, drp, dcp, dap, rp, n, n + 1, H, j0, j1, plan);
          } else {  // past the end: da = 0, dc passes through unchanged
            for (int64_t block = 0; block < 4; ++block)
              std::fill(dap + n * H4 + block * H + j0, dap + n * H4 + block * H + j1, scalar_t(0));
            std::fill(rp + n * H + j0, rp + n * H + j1, scalar_t(0));
          }
        }
        // this chunk's share of da[t] W_hh: its units' columns of da[t] times their rows of W_hh
        // (at the last step processed, only wanted for the gradient w.r.t. h0)
        if (s == 0 && !need_dh0) return;
        scalar_t* share = written + k * N * Hout;
        if (packed) {
          packed_step_gemm<scalar_t>(N, dap, H4, chunk_rows[k].data(), static_cast<int64_t>(chunk_rows[k].size()),
                                     w_panels.data_ptr<float>() + panel_offset[k], 0, Hout, share, Hout,
                                     a_scratch.data_ptr<float>() + k * N * 4 * widest);
          return;
        }
        const int64_t width = chunks == 1 ? H4 : j1 - j0;
        for (int64_t block = 0; block < (chunks == 1 ? 1 : 4); ++block) {
          const int64_t col = block * H + j0;
          gemm<scalar_t>(N, Hout, width, dap + col, H4, whp + col * Hout, Hout,
                         block == 0 ? scalar_t(0) : scalar_t(1), share, Hout);
        }
      });
      sharep = written;
    }
    // the gradient w.r.t. h0: the shares of the last step processed, no output gradient
    if (need_dh0) gather_dh(nullptr, reverse ? T - 1 : 0, 0, Hout);
    else dh.zero_();
  });

  // dW_hh = (hs^T da)^T: MKL runs this layout about 1.2x faster than da^T hs at (T N, 4H) =
  // (5600, 4600). The state entering step t is slot t + reverse; a zero initial state (slot T
  // when reverse, else 0) adds nothing, so its rows are left out of the product.
  at::Tensor dw_hh;
  const int64_t initial = reverse ? T : 0;
  const bool h0_zero = AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "g2lstm_cpu_h0", [&] {
    return all_zero(hs[initial].data_ptr<scalar_t>(), N * Hout);
  });
  const int64_t used = h0_zero ? T - 1 : T;
  if (used == 0) {
    dw_hh = at::zeros({H4, Hout}, opts);
  } else {
    at::Tensor states = hs.narrow(0, reverse ? 1 : (h0_zero ? 1 : 0), used).reshape({used * N, Hout});
    at::Tensor grads = da.narrow(0, reverse || !h0_zero ? 0 : 1, used).reshape({used * N, H4});
    dw_hh = large_mm(states.t(), grads).t().contiguous();
  }
  at::Tensor dw_hr = proj ? dH.view({T * N, Hout}).t().mm(R.view({T * N, H})) : at::empty({0}, opts);
  return {da, dh, dc, dw_hh, dw_hr};
}

// x W^T + b, (T, N, I) -> (T, N, 4H), into a cached buffer (the input projection of a layer
// direction, as large as the saved gates).
at::Tensor project(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 3 && weight.dim() == 2 && x.size(2) == weight.size(1),
              "project: expected x (T, N, I) and weight (4H, I), got ", x.sizes(), " and ", weight.sizes());
  at::Tensor out = empty_buffer({x.size(0), x.size(1), weight.size(0)}, x.options());
  at::Tensor out2 = out.view({-1, weight.size(0)});
  at::Tensor x2 = x.reshape({-1, x.size(2)});
  if (bias.has_value() && bias->defined()) at::addmm_out(out2, *bias, x2, weight.t());
  else at::mm_out(out2, x2, weight.t());
  return out;
}

}  // namespace

TORCH_LIBRARY(g2lstm_cpu, m) {
  m.def(
      "forward(Tensor x_proj, Tensor h0, Tensor c0, Tensor w_hh, Tensor? w_hr, Tensor? lengths, "
      "bool reverse, int[] kinds, int[] slots, float tau, int[] noise_keys, float noise_p, "
      "int noise_mode, int noise_gates, int noise_row_offset, int noise_global_batch, bool save) "
      "-> Tensor[]",
      &lstm_forward);
  m.def(
      "backward(Tensor grad_out, Tensor grad_hT, Tensor grad_cT, Tensor gates, Tensor cs, Tensor hs, "
      "Tensor w_hh, Tensor? w_hr, Tensor? lengths, bool reverse, int[] kinds, float tau, bool need_dh0) "
      "-> Tensor[]",
      &lstm_backward);
  m.def("project(Tensor x, Tensor weight, Tensor? bias) -> Tensor", &project);
  m.def("large_mm(Tensor a, Tensor b) -> Tensor", &large_mm);
  m.def("empty_cache() -> ()", &empty_cache);
}
