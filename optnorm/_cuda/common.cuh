// Shared device helpers for every optnorm CUDA source (inlined by optnorm/_cuda/loader.py where a source
// says #include "common.cuh"): numeric limits, exp/log/rsqrt overloads, warp and block sums, and the one
// online (max, sum) merge of Milakov & Gimelshein used by softmax rows and log-sum-exp reductions.
#pragma once

namespace optnorm {

template <typename T> struct Lim;
template <> struct Lim<float> {
  __device__ static float inf() { return __int_as_float(0x7f800000); }
  __device__ static float nan() { return __int_as_float(0x7fffffff); }
};
template <> struct Lim<double> {
  __device__ static double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
  __device__ static double nan() { return __longlong_as_double(0x7ff8000000000000LL); }
};

__device__ __forceinline__ float d_exp(float v) { return expf(v); }
__device__ __forceinline__ double d_exp(double v) { return exp(v); }
__device__ __forceinline__ float d_log(float v) { return logf(v); }
__device__ __forceinline__ double d_log(double v) { return log(v); }
__device__ __forceinline__ float d_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double d_sqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float d_rsqrt(float v) { return rsqrtf(v); }
__device__ __forceinline__ double d_rsqrt(double v) { return rsqrt(v); }

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

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Max over the block (NaN-ignoring, like fmax); every thread gets the result.  `sh` holds >= 32 values.
template <typename A>
__device__ A block_max(A v, A* sh) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  v = (threadIdx.x < nw) ? sh[threadIdx.x] : -Lim<A>::inf();
  if (wid == 0) v = warp_max(v);
  if (threadIdx.x == 0) sh[0] = v;
  __syncthreads();
  return sh[0];
}

// Online log-sum-exp pair: (m, d) stands for m + log(d).  (m, d) (+)= (m2, d2), exact for -inf entries:
// an empty pair is (-inf, 0), and two empty pairs stay empty (no exp(-inf - -inf) = NaN).
template <typename T>
__device__ __forceinline__ void ms_merge(T& m, T& d, T m2, T d2) {
  const T big = m > m2 ? m : m2;
  if (big == -Lim<T>::inf()) return;
  const T a = (m == -Lim<T>::inf()) ? T(0) : d * d_exp(m - big);
  const T b = (m2 == -Lim<T>::inf()) ? T(0) : d2 * d_exp(m2 - big);
  d = a + b;
  m = big;
}

// Push one term z (stands for exp(z)) into the pair (m, d).
template <typename T>
__device__ __forceinline__ void ms_push(T& m, T& d, T z) { ms_merge(m, d, z, T(1)); }

// Merge the pairs of a whole block; every thread gets the result.  shm, shd hold >= 32 values each.
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

__device__ __forceinline__ double sigmoid(double u) {
  if (u >= 0.0) return 1.0 / (1.0 + exp(-u));
  const double e = exp(u);
  return e / (1.0 + e);
}

}  // namespace optnorm
