// CUDA kernels for optnorm.ot: log-sum-exp half-steps of log-domain Sinkhorn.
// M is a C-contiguous batch (Bn, n, m) of cost matrices, s[b] = 1/eps of problem b.
//   lse_rows: out[b, i] = log sum_j exp(vec[b, j] - M[b, i, j] * s[b])   grid (Bn*n), block 256
//   lse_cols: out[b, j] = log sum_i exp(vec[b, i] - M[b, i, j] * s[b])   grid (ceil(m/32), Bn), block (32, 8)
// Reductions carry (max, sum) pairs merged with the online-softmax rule, so -inf entries (zero weights) and
// fully masked rows are handled without NaN.
//
// optnorm-kernel: lse_rows<float>
// optnorm-kernel: lse_rows<double>
// optnorm-kernel: lse_cols<float>
// optnorm-kernel: lse_cols<double>
// optnorm-kernel: pairwise_box_w2<float>
// optnorm-kernel: pairwise_box_w2<double>

#include "common.cuh"

using namespace optnorm;

template <typename T>
__global__ void lse_rows(const T* __restrict__ M, const T* __restrict__ s, const T* __restrict__ vec,
                         T* __restrict__ out, int Bn, int n, int m) {
    const long long row = blockIdx.x;              // b * n + i
    if (row >= (long long)Bn * n) return;
    const int b = (int)(row / n);
    const T sb = s[b];
    const T* Mr = M + row * (long long)m;
    const T* vb = vec + (long long)b * m;
    T mx = (-Lim<T>::inf()), sm = T(0);
    for (int j = threadIdx.x; j < m; j += blockDim.x) ms_push(mx, sm, vb[j] - Mr[j] * sb);
    __shared__ T smx[256];
    __shared__ T ssm[256];
    smx[threadIdx.x] = mx;
    ssm[threadIdx.x] = sm;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            T a = smx[threadIdx.x], c = ssm[threadIdx.x];
            ms_merge(a, c, smx[threadIdx.x + w], ssm[threadIdx.x + w]);
            smx[threadIdx.x] = a;
            ssm[threadIdx.x] = c;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[row] = (smx[0] == (-Lim<T>::inf())) ? (-Lim<T>::inf()) : smx[0] + d_log(ssm[0]);
}

template <typename T>
__global__ void lse_cols(const T* __restrict__ M, const T* __restrict__ s, const T* __restrict__ vec,
                         T* __restrict__ out, int Bn, int n, int m) {
    const int b = blockIdx.y;
    const int j = blockIdx.x * 32 + threadIdx.x;
    const T sb = s[b];
    const T* Mb = M + (long long)b * n * m;
    const T* ub = vec + (long long)b * n;
    T mx = (-Lim<T>::inf()), sm = T(0);
    if (j < m) {
        for (int i = threadIdx.y; i < n; i += blockDim.y) ms_push(mx, sm, ub[i] - Mb[(long long)i * m + j] * sb);
    }
    __shared__ T smx[8][32];
    __shared__ T ssm[8][32];
    smx[threadIdx.y][threadIdx.x] = mx;
    ssm[threadIdx.y][threadIdx.x] = sm;
    __syncthreads();
    if (threadIdx.y == 0 && j < m) {
        for (int k = 1; k < (int)blockDim.y; ++k) ms_merge(mx, sm, smx[k][threadIdx.x], ssm[k][threadIdx.x]);
        out[(long long)b * m + j] = (mx == (-Lim<T>::inf())) ? (-Lim<T>::inf()) : mx + d_log(sm);
    }
}

// ---- boxes: pairwise 2-Wasserstein / NWD between axis-aligned boxes (as Gaussians)
// out[i, j] for boxes i (p1: n x 4 of (cx, cy, w/2, h/2)) and j (p2t: 4 x m, one row per parameter):
// kind 0: W2^2, kind 1: W2, kind 2: exp(-sqrt(W2^2 + eps) * inv_c) (NWD).  Threads run along j (coalesced
// reads of p2t and writes of out); the grid's y dimension strides over i.
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
      y = sqrt(s);
    } else {
      y = exp(-sqrt(s + eps) * inv_c);
    }
    out[i * m + j] = y;
  }
}
