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

#include <math_constants.h>

namespace optnorm_ot {

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -CUDART_INF_F; }
template <> __device__ __forceinline__ double neg_inf<double>() { return -CUDART_INF; }

__device__ __forceinline__ float exp_(float x) { return __expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }

// merge (m2, s2) into (m1, s1): the pair represents m + log(s)
template <typename T>
__device__ __forceinline__ void merge(T &m1, T &s1, T m2, T s2) {
    if (m2 == neg_inf<T>()) return;
    if (m1 == neg_inf<T>()) { m1 = m2; s1 = s2; return; }
    if (m2 > m1) { s1 = s1 * exp_(m1 - m2) + s2; m1 = m2; }
    else { s1 += s2 * exp_(m2 - m1); }
}

template <typename T>
__device__ __forceinline__ void push(T &mx, T &sm, T z) {
    if (z == neg_inf<T>()) return;
    if (z > mx) { sm = (mx == neg_inf<T>() ? T(0) : sm * exp_(mx - z)) + T(1); mx = z; }
    else { sm += exp_(z - mx); }
}

}  // namespace optnorm_ot

template <typename T>
__global__ void lse_rows(const T* __restrict__ M, const T* __restrict__ s, const T* __restrict__ vec,
                         T* __restrict__ out, int Bn, int n, int m) {
    using namespace optnorm_ot;
    const long long row = blockIdx.x;              // b * n + i
    if (row >= (long long)Bn * n) return;
    const int b = (int)(row / n);
    const T sb = s[b];
    const T* Mr = M + row * (long long)m;
    const T* vb = vec + (long long)b * m;
    T mx = neg_inf<T>(), sm = T(0);
    for (int j = threadIdx.x; j < m; j += blockDim.x) push(mx, sm, vb[j] - Mr[j] * sb);
    __shared__ T smx[256];
    __shared__ T ssm[256];
    smx[threadIdx.x] = mx;
    ssm[threadIdx.x] = sm;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            T a = smx[threadIdx.x], c = ssm[threadIdx.x];
            merge(a, c, smx[threadIdx.x + w], ssm[threadIdx.x + w]);
            smx[threadIdx.x] = a;
            ssm[threadIdx.x] = c;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[row] = (smx[0] == neg_inf<T>()) ? neg_inf<T>() : smx[0] + log_(ssm[0]);
}

template <typename T>
__global__ void lse_cols(const T* __restrict__ M, const T* __restrict__ s, const T* __restrict__ vec,
                         T* __restrict__ out, int Bn, int n, int m) {
    using namespace optnorm_ot;
    const int b = blockIdx.y;
    const int j = blockIdx.x * 32 + threadIdx.x;
    const T sb = s[b];
    const T* Mb = M + (long long)b * n * m;
    const T* ub = vec + (long long)b * n;
    T mx = neg_inf<T>(), sm = T(0);
    if (j < m) {
        for (int i = threadIdx.y; i < n; i += blockDim.y) push(mx, sm, ub[i] - Mb[(long long)i * m + j] * sb);
    }
    __shared__ T smx[8][32];
    __shared__ T ssm[8][32];
    smx[threadIdx.y][threadIdx.x] = mx;
    ssm[threadIdx.y][threadIdx.x] = sm;
    __syncthreads();
    if (threadIdx.y == 0 && j < m) {
        for (int k = 1; k < (int)blockDim.y; ++k) merge(mx, sm, smx[k][threadIdx.x], ssm[k][threadIdx.x]);
        out[(long long)b * m + j] = (mx == neg_inf<T>()) ? neg_inf<T>() : mx + log_(sm);
    }
}
