// CUDA row kernels for optnorm.norm: softmax / log_softmax forward+backward (online (max, sum) merge),
// layer_norm and rms_norm forward+backward.  One block per row (blockDim.x a multiple of 32, <= 1024),
// warp-shuffle reductions, then one value per warp through shared memory.
// Row statistics are accumulated in double for float rows (no overflow of (x - mean)^2 up to |x| ~ 1e38;
// the kernels are memory bound, so the wider accumulator costs little).  Half precision is not instantiated:
// the dispatcher sends float16 through the generic path (computed in float32).
//
// optnorm-kernel: softmax_fwd<float>
// optnorm-kernel: softmax_fwd<double>
// optnorm-kernel: softmax_bwd<float>
// optnorm-kernel: softmax_bwd<double>
// optnorm-kernel: layer_norm_fwd<float>
// optnorm-kernel: layer_norm_fwd<double>
// optnorm-kernel: layer_norm_bwd<float>
// optnorm-kernel: layer_norm_bwd<double>
// optnorm-kernel: rms_norm_fwd<float>
// optnorm-kernel: rms_norm_fwd<double>
// optnorm-kernel: rms_norm_bwd<float>
// optnorm-kernel: rms_norm_bwd<double>

namespace optnorm_norm {

__device__ __forceinline__ float d_exp(float v) { return expf(v); }
__device__ __forceinline__ double d_exp(double v) { return exp(v); }
__device__ __forceinline__ float d_log(float v) { return logf(v); }
__device__ __forceinline__ double d_log(double v) { return log(v); }
__device__ __forceinline__ double d_rsqrt(double v) { return rsqrt(v); }

template <typename T> struct Lim;
template <> struct Lim<float> {
  __device__ static float inf() { return __int_as_float(0x7f800000); }
  __device__ static float nan() { return __int_as_float(0x7fffffff); }
};
template <> struct Lim<double> {
  __device__ static double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
  __device__ static double nan() { return __longlong_as_double(0x7ff8000000000000LL); }
};

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result.  `sh` holds >= 32 values.
template <typename A>
__device__ A block_sum(A v, A* sh) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read from a previous reduction
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  v = (threadIdx.x < nw) ? sh[threadIdx.x] : A(0);
  if (wid == 0) v = warp_sum(v);
  if (threadIdx.x == 0) sh[0] = v;
  __syncthreads();
  return sh[0];
}

// Online softmax merge (Milakov & Gimelshein): (m, d) (+) (m2, d2), with the -inf guard.
template <typename T>
__device__ __forceinline__ void ms_merge(T& m, T& d, T m2, T d2) {
  const T big = m > m2 ? m : m2;
  if (big == -Lim<T>::inf()) return;  // both empty: stay (-inf, 0)
  const T a = (m == -Lim<T>::inf()) ? T(0) : d * d_exp(m - big);
  const T b = (m2 == -Lim<T>::inf()) ? T(0) : d2 * d_exp(m2 - big);
  d = a + b;
  m = big;
}

template <typename T>
__device__ void block_max_sum(T& m, T& d, T* shm, T* shd) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    T m2 = __shfl_xor_sync(0xffffffffu, m, o);
    T d2 = __shfl_xor_sync(0xffffffffu, d, o);
    ms_merge(m, d, m2, d2);
  }
  __syncthreads();
  if (lane == 0) { shm[wid] = m; shd[wid] = d; }
  __syncthreads();
  if (wid == 0) {
    m = (lane < nw) ? shm[lane] : -Lim<T>::inf();
    d = (lane < nw) ? shd[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) {
      T m2 = __shfl_xor_sync(0xffffffffu, m, o);
      T d2 = __shfl_xor_sync(0xffffffffu, d, o);
      ms_merge(m, d, m2, d2);
    }
    if (lane == 0) { shm[0] = m; shd[0] = d; }
  }
  __syncthreads();
  m = shm[0];
  d = shd[0];
}

}  // namespace optnorm_norm

// y = softmax(x) (log_ = 0) or log_softmax(x) (log_ = 1) of each row of a C-contiguous (rows, n) array.
// masked_zero: an all -inf row gives 0 (softmax) / -inf (log_softmax) instead of NaN.
template <typename T>
__global__ void softmax_fwd(const T* __restrict__ x, T* __restrict__ y, long long n, int log_, int masked_zero) {
  using namespace optnorm_norm;
  __shared__ T shm[32];
  __shared__ T shd[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * n;
  T* yr = y + row * n;
  T m = -Lim<T>::inf(), d = T(0);
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const T v = xr[j];
    if (v == -Lim<T>::inf()) continue;
    if (v > m) {
      d = (m == -Lim<T>::inf()) ? T(1) : d * d_exp(m - v) + T(1);
      m = v;
    } else {
      d += d_exp(v - m);  // NaN propagates through d
    }
  }
  block_max_sum(m, d, shm, shd);
  if (m == -Lim<T>::inf()) {  // fully masked row
    const T fill = masked_zero ? (log_ ? -Lim<T>::inf() : T(0)) : Lim<T>::nan();
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = fill;
    return;
  }
  if (m == Lim<T>::inf() || d != d) {  // +inf or NaN in the row: NaN like torch
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = Lim<T>::nan();
    return;
  }
  if (log_) {
    const T ld = d_log(d);
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = (xr[j] - m) - ld;
  } else {
    const T inv = T(1) / d;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = d_exp(xr[j] - m) * inv;
  }
}

// dx = y (g - <g, y>) (softmax) or g - exp(y) sum(g) (log_softmax); masked_zero rows (all y = -inf) get 0.
template <typename T>
__global__ void softmax_bwd(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ dx, long long n,
                            int log_, int masked_zero) {
  using namespace optnorm_norm;
  __shared__ T sh[32];
  const long long row = blockIdx.x;
  const T* yr = y + row * n;
  const T* gr = g + row * n;
  T* dr = dx + row * n;
  T s = T(0);
  T ymax = -Lim<T>::inf();
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    s += log_ ? gr[j] : gr[j] * yr[j];
    ymax = yr[j] > ymax ? yr[j] : ymax;
  }
  s = block_sum(s, sh);
  if (log_ && masked_zero) {
    // any finite y in the row? (sum of indicators; a masked row has none)
    T cnt = block_sum(ymax > -Lim<T>::inf() ? T(1) : T(0), sh);
    if (cnt == T(0)) {
      for (long long j = threadIdx.x; j < n; j += blockDim.x) dr[j] = T(0);
      return;
    }
  }
  if (log_) {
    for (long long j = threadIdx.x; j < n; j += blockDim.x) dr[j] = gr[j] - d_exp(yr[j]) * s;
  } else {
    for (long long j = threadIdx.x; j < n; j += blockDim.x) dr[j] = yr[j] * (gr[j] - s);
  }
}

// y = (x - mean) * rstd * w + b per row (has_w / has_b select the affine terms); writes mean and rstd per row.
template <typename T>
__global__ void layer_norm_fwd(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                               T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd, long long n, T eps,
                               int has_w, int has_b) {
  using namespace optnorm_norm;
  __shared__ double sh[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * n;
  T* yr = y + row * n;
  double s = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) s += (double)xr[j];
  const double mu = block_sum(s, sh) / (double)n;
  double q = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const double dv = (double)xr[j] - mu;
    q += dv * dv;
  }
  const double rs = d_rsqrt(block_sum(q, sh) / (double)n + (double)eps);
  const T mu_t = (T)mu, rs_t = (T)rs;
  if (threadIdx.x == 0) {
    mean[row] = mu_t;
    rstd[row] = rs_t;
  }
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T v = (xr[j] - mu_t) * rs_t;
    if (has_w) v *= w[j];
    if (has_b) v += b[j];
    yr[j] = v;
  }
}

// dx = rstd (g^ - mean(g^) - x^ mean(g^ x^)), g^ = g * w, x^ = (x - mean) rstd.  dweight/dbias are column sums
// (reduced by the caller).
template <typename T>
__global__ void layer_norm_bwd(const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ w,
                               const T* __restrict__ mean, const T* __restrict__ rstd, T* __restrict__ dx,
                               long long n, int has_w) {
  using namespace optnorm_norm;
  __shared__ double sh[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * n;
  const T* gr = g + row * n;
  T* dr = dx + row * n;
  const T mu = mean[row], rs = rstd[row];
  double c1 = 0.0, c2 = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const T gh = has_w ? gr[j] * w[j] : gr[j];
    const T xh = (xr[j] - mu) * rs;
    c1 += (double)gh;
    c2 += (double)gh * (double)xh;
  }
  const T m1 = (T)(block_sum(c1, sh) / (double)n);
  const T m2 = (T)(block_sum(c2, sh) / (double)n);
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const T gh = has_w ? gr[j] * w[j] : gr[j];
    const T xh = (xr[j] - mu) * rs;
    dr[j] = rs * (gh - m1 - xh * m2);
  }
}

// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
template <typename T>
__global__ void rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                             T* __restrict__ rstd, long long n, T eps, int has_w) {
  using namespace optnorm_norm;
  __shared__ double sh[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * n;
  T* yr = y + row * n;
  double q = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const double v = (double)xr[j];
    q += v * v;
  }
  const T rs = (T)d_rsqrt(block_sum(q, sh) / (double)n + (double)eps);
  if (threadIdx.x == 0) rstd[row] = rs;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T v = xr[j] * rs;
    if (has_w) v *= w[j];
    yr[j] = v;
  }
}

// dx = rstd (g^ - x^ mean(g^ x^)).
template <typename T>
__global__ void rms_norm_bwd(const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ w,
                             const T* __restrict__ rstd, T* __restrict__ dx, long long n, int has_w) {
  using namespace optnorm_norm;
  __shared__ double sh[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * n;
  const T* gr = g + row * n;
  T* dr = dx + row * n;
  const T rs = rstd[row];
  double c2 = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const T gh = has_w ? gr[j] * w[j] : gr[j];
    c2 += (double)gh * (double)(xr[j] * rs);
  }
  const T m2 = (T)(block_sum(c2, sh) / (double)n);
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const T gh = has_w ? gr[j] * w[j] : gr[j];
    dr[j] = rs * (gh - xr[j] * rs * m2);
  }
}
