// CUDA kernels for optnorm.ot: the soft-minimum half-steps of log-domain Sinkhorn (in cost units) and the
// pairwise 2-Wasserstein / NWD between axis-aligned boxes.
//
// M is a C-contiguous batch (Bn, n, m) of cost matrices and reg the entropic regularisation:
//   softmin_rows: out[b, i] = reg * log sum_j exp((h[b, j] - M[b, i, j]) / reg)   grid (Bn*n), block 256
//   softmin_cols: out[b, j] = reg * log sum_i exp((h[b, i] - M[b, i, j]) / reg)   grid (ceil(m/32), <= Bn),
//                                                                                  block (32, 8)
// Two passes (max, then the sum of exps), like the Numba kernels: exponents below -708 (float64) / -87
// (float32) are flushed, so no subnormal is ever produced; -inf entries of h (zero weights) add nothing and
// a row or column of -inf gives -inf.
//
// optnorm-kernel: softmin_rows<float>
// optnorm-kernel: softmin_rows<double>
// optnorm-kernel: softmin_cols<float>
// optnorm-kernel: softmin_cols<double>
// optnorm-kernel: pairwise_box_w2<float>
// optnorm-kernel: pairwise_box_w2<double>
// optnorm-kernel: softmin_cloud<float>
// optnorm-kernel: softmin_cloud<double>
//
// softmin_cloud (lazy point-cloud Sinkhorn, optnorm.ot._lazy): the row soft maximum over a cost computed on the
// fly, never stored: out[b, i] = reg * log sum_j exp((h[b, j] - cscale * C(X[b, i], Y[b, j])) / reg), X (B, n, d),
// Yt (B, d, m) (Y transposed: consecutive threads read consecutive j), grid (B*n), block 256.  The cost codes of
// optnorm/_numba/lse.py: 0 sum d_k^2, 1 its sqrt, 2 sum |d_k|, 3 (sum |d_k|^p)^(1/p), 4 (sum d_k^2)^(p/2),
// 5 1 - <x, y>.  Two passes (max, then the sum of exps) recomputing the cost, as softmin_rows.

#include "common.cuh"

using namespace optnorm;

template <typename T> struct Flush;
template <> struct Flush<float> { __device__ static float lo() { return -87.0f; } };
template <> struct Flush<double> { __device__ static double lo() { return -708.0; } };

template <typename T>
__global__ void softmin_rows(const T* __restrict__ M, const T* __restrict__ h, T* __restrict__ out, long long Bn,
                             long long n, long long m, T reg) {
  const long long row = blockIdx.x;  // b * n + i
  if (row >= Bn * n) return;
  const long long b = row / n;
  const T* Mr = M + row * m;
  const T* hb = h + b * m;
  __shared__ T sh[32];
  T mx = -Lim<T>::inf();
  for (long long j = threadIdx.x; j < m; j += blockDim.x) {
    const T z = hb[j] - Mr[j];
    mx = z > mx ? z : mx;
  }
  mx = block_max(mx, sh);
  if (mx == -Lim<T>::inf()) {  // block-uniform
    if (threadIdx.x == 0) out[row] = -Lim<T>::inf();
    return;
  }
  T acc = T(0);
  for (long long j = threadIdx.x; j < m; j += blockDim.x) {
    const T e = (hb[j] - Mr[j] - mx) / reg;
    acc += d_exp(e > Flush<T>::lo() ? e : Flush<T>::lo());
  }
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) out[row] = mx + reg * d_log(acc);
}

template <typename T>
__global__ void softmin_cols(const T* __restrict__ M, const T* __restrict__ h, T* __restrict__ out, long long Bn,
                             long long n, long long m, T reg) {
  const long long j = (long long)blockIdx.x * 32 + threadIdx.x;
  __shared__ T sh[8][32];
  for (long long b = blockIdx.y; b < Bn; b += gridDim.y) {
    const T* Mb = M + b * n * m;
    const T* hb = h + b * n;
    T mx = -Lim<T>::inf();
    if (j < m) {
      for (long long i = threadIdx.y; i < n; i += blockDim.y) {
        const T z = hb[i] - Mb[i * m + j];
        mx = z > mx ? z : mx;
      }
    }
    sh[threadIdx.y][threadIdx.x] = mx;
    __syncthreads();
    for (int k = 0; k < (int)blockDim.y; ++k) {
      const T w = sh[k][threadIdx.x];
      mx = w > mx ? w : mx;
    }
    __syncthreads();
    T acc = T(0);
    if (j < m && mx > -Lim<T>::inf()) {
      for (long long i = threadIdx.y; i < n; i += blockDim.y) {
        const T e = (hb[i] - Mb[i * m + j] - mx) / reg;
        acc += d_exp(e > Flush<T>::lo() ? e : Flush<T>::lo());
      }
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < m) {
      for (int k = 1; k < (int)blockDim.y; ++k) acc += sh[k][threadIdx.x];
      out[b * m + j] = (mx == -Lim<T>::inf()) ? -Lim<T>::inf() : mx + reg * d_log(acc);
    }
    __syncthreads();
  }
}

// ---- boxes: pairwise 2-Wasserstein / NWD between axis-aligned boxes (as Gaussians)
// out[i, j] for boxes i (p1: n x 4 of (cx, cy, w/2, h/2)) and j (p2t: 4 x m, one row per parameter):
// kind 0: W2^2, kind 1: W2, kind 2: exp(-sqrt(W2^2 + eps) * inv_c) (NWD).  Threads run along j (coalesced
// reads of p2t and writes of out); the grid's y dimension strides over i.  The caller scales extreme
// magnitudes (so the squares stay finite) and rescales kinds 0 and 1.
template <typename T>
__global__ void pairwise_box_w2(const T* __restrict__ p1, const T* __restrict__ p2t, T* __restrict__ out,
                                long long n, long long m, int kind, T inv_c, T eps) {
  const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= m) return;
  const T b0 = p2t[j], b1 = p2t[m + j], b2 = p2t[2 * m + j], b3 = p2t[3 * m + j];
  for (long long i = blockIdx.y; i < n; i += gridDim.y) {
    const T d0 = p1[4 * i] - b0, d1 = p1[4 * i + 1] - b1, d2 = p1[4 * i + 2] - b2, d3 = p1[4 * i + 3] - b3;
    const T s = d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
    T y;
    if (kind == 0) {
      y = s;
    } else if (kind == 1) {
      y = d_sqrt(s);
    } else {
      y = d_exp(-d_sqrt(s + eps) * inv_c);
    }
    out[i * m + j] = y;
  }
}


__device__ __forceinline__ float c_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double c_pow(double a, double b) { return pow(a, b); }

template <typename T>
__device__ __forceinline__ T cloud_cost(const T* __restrict__ x, const T* __restrict__ Yt, long long j, long long m,
                                        long long d, int code, T p) {
  T acc = T(0);
  if (code == 5) {
    for (long long k = 0; k < d; ++k) acc += x[k] * Yt[k * m + j];
    return T(1) - acc;
  }
  for (long long k = 0; k < d; ++k) {
    const T dk = x[k] - Yt[k * m + j];
    const T a = dk < T(0) ? -dk : dk;
    acc += code == 2 ? a : (code == 3 ? c_pow(a, p) : dk * dk);
  }
  if (code == 1) return d_sqrt(acc);
  if (code == 3) return c_pow(acc, T(1) / p);
  if (code == 4) return c_pow(acc, p / T(2));
  return acc;
}

template <typename T>
__global__ void softmin_cloud(const T* __restrict__ X, const T* __restrict__ Yt, const T* __restrict__ h,
                              T* __restrict__ out, long long B, long long n, long long m, long long d, T reg, int code,
                              T p, T cscale) {
  const long long row = blockIdx.x;  // b * n + i
  if (row >= B * n) return;
  const long long b = row / n;
  const T* x = X + row * d;
  const T* Yb = Yt + b * d * m;
  const T* hb = h + b * m;
  __shared__ T sh[32];
  T mx = -Lim<T>::inf();
  for (long long j = threadIdx.x; j < m; j += blockDim.x) {
    const T z = hb[j] - cscale * cloud_cost(x, Yb, j, m, d, code, p);
    mx = z > mx ? z : mx;
  }
  mx = block_max(mx, sh);
  if (mx == -Lim<T>::inf()) {  // block-uniform
    if (threadIdx.x == 0) out[row] = -Lim<T>::inf();
    return;
  }
  T acc = T(0);
  for (long long j = threadIdx.x; j < m; j += blockDim.x) {
    const T e = (hb[j] - cscale * cloud_cost(x, Yb, j, m, d, code, p) - mx) / reg;
    acc += d_exp(e > Flush<T>::lo() ? e : Flush<T>::lo());
  }
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) out[row] = mx + reg * d_log(acc);
}
