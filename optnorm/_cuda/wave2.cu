// CUDA kernels for the wave-2 functions: the top-k softmax gate and the soft top-k operator (one thread per
// row: rows are short, e.g. 64 experts), and the pairwise box 2-Wasserstein / NWD matrix (one thread per
// output entry, coalesced along the columns).  Same algorithms as the Numba kernels in
// optnorm/_numba/norm_wave2.py and ot_wave2.py; exponentials and row sums accumulate in double.
//
// optnorm-kernel: topk_softmax_rows<float>
// optnorm-kernel: topk_softmax_rows<double>
// optnorm-kernel: soft_topk_rows<float>
// optnorm-kernel: soft_topk_rows<double>
// optnorm-kernel: pairwise_box_w2<float>
// optnorm-kernel: pairwise_box_w2<double>

#define OPTNORM_WAVE2_TOPK_MAX 64

namespace optnorm_wave2 {

__device__ __forceinline__ double sigmoid(double u) {
  if (u >= 0.0) return 1.0 / (1.0 + exp(-u));
  const double e = exp(u);
  return e / (1.0 + e);
}

}  // namespace optnorm_wave2

// Dense top-k softmax gate of each row of x (rows x n, C-contiguous) and the selected indices (rows x k).
// The running top-k list is kept sorted; a value enters only if strictly greater than the current k-th, so
// among equal logits the lowest index wins (the documented tie rule).  Requires 1 <= k <= 64.
template <typename T>
__global__ void topk_softmax_rows(const T* __restrict__ x, T* __restrict__ out, long long* __restrict__ idx,
                                  long long rows, long long n, int k, double inv_t) {
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* row = x + r * n;
  T* orow = out + r * n;
  T vals[OPTNORM_WAVE2_TOPK_MAX];
  long long inds[OPTNORM_WAVE2_TOPK_MAX];
  int cnt = 0;
  for (long long j = 0; j < n; ++j) {
    const T v = row[j];
    if (cnt == k && !(v > vals[k - 1])) continue;
    int pos = cnt < k ? cnt : k - 1;
    while (pos > 0 && vals[pos - 1] < v) --pos;
    for (int q = (cnt < k ? cnt : k - 1); q > pos; --q) {
      vals[q] = vals[q - 1];
      inds[q] = inds[q - 1];
    }
    vals[pos] = v;
    inds[pos] = j;
    if (cnt < k) ++cnt;
  }
  for (long long j = 0; j < n; ++j) orow[j] = T(0);
  const double m = (double)vals[0];
  double s = 0.0;
  for (int q = 0; q < k; ++q) s += exp(((double)vals[q] - m) * inv_t);
  for (int q = 0; q < k; ++q) {
    orow[inds[q]] = (T)(exp(((double)vals[q] - m) * inv_t) / s);
    idx[r * k + q] = inds[q];
  }
}

// Soft top-k of each row: bisection on [c - max z, c - min z] (c = logit(k/n)/alpha, computed on the host)
// for t with sum_j sigmoid(alpha (z_j + t)) = k, n_iter halvings, then p_j = sigmoid(alpha (z_j + t)).
template <typename T>
__global__ void soft_topk_rows(const T* __restrict__ z, T* __restrict__ out, long long rows, long long n,
                               double k, double alpha, double c, int n_iter) {
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* row = z + r * n;
  T* orow = out + r * n;
  double mx = (double)row[0], mn = (double)row[0];
  for (long long j = 1; j < n; ++j) {
    const double v = (double)row[j];
    mx = v > mx ? v : mx;
    mn = v < mn ? v : mn;
  }
  double lo = c - mx, hi = c - mn;
  for (int it = 0; it < n_iter; ++it) {
    const double mid = 0.5 * (lo + hi);
    double s = 0.0;
    for (long long j = 0; j < n; ++j) s += optnorm_wave2::sigmoid(alpha * ((double)row[j] + mid));
    if (s < k) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const double t = 0.5 * (lo + hi);
  for (long long j = 0; j < n; ++j) orow[j] = (T)optnorm_wave2::sigmoid(alpha * ((double)row[j] + t));
}

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
