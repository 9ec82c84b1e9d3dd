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
// optnorm-kernel: topk_softmax_rows<float>
// optnorm-kernel: topk_softmax_rows<double>
// optnorm-kernel: soft_topk_rows<float>
// optnorm-kernel: soft_topk_rows<double>
// optnorm-kernel: sdpa_fwd_rows<float>
// optnorm-kernel: sdpa_fwd_rows<double>
// optnorm-kernel: sdpa_bwd_dq_rows<float>
// optnorm-kernel: sdpa_bwd_dq_rows<double>
// optnorm-kernel: sdpa_bwd_dkv_rows<float>
// optnorm-kernel: sdpa_bwd_dkv_rows<double>

#include "common.cuh"

using namespace optnorm;

// y = softmax(x) (log_ = 0) or log_softmax(x) (log_ = 1) of each row of a C-contiguous (rows, n) array.
// masked_zero: an all -inf row gives 0 (softmax) / -inf (log_softmax) instead of NaN.
template <typename T>
__global__ void softmax_fwd(const T* __restrict__ x, T* __restrict__ y, long long n, int log_, int masked_zero) {
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

// 1 / sqrt(q / n + eps) for q = sum (x - mu)^2 of a row, in double.  When the squares overflow double (|x| ~ 1e154
// and up, double input only) the row is summed again in units of its largest deviation, as the CPU kernels do.
template <typename T>
__device__ double row_rstd(const T* __restrict__ xr, long long n, double mu, double q, double eps, double* sh) {
  if (!isinf(q)) return d_rsqrt(q / (double)n + eps);
  double m = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) m = fmax(m, fabs((double)xr[j] - mu));
  m = block_max(m, sh);
  double qs = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const double dv = ((double)xr[j] - mu) / m;
    qs += dv * dv;
  }
  qs = block_sum(qs, sh);
  return 1.0 / (m * d_sqrt(qs / (double)n + eps / m / m));
}

// y = (x - mean) * rstd * w + b per row (has_w / has_b select the affine terms); writes mean and rstd per row.
template <typename T>
__global__ void layer_norm_fwd(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                               T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd, long long n, T eps,
                               int has_w, int has_b) {
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
  const double rs = row_rstd(xr, n, mu, block_sum(q, sh), (double)eps, sh);
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
  __shared__ double sh[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * n;
  T* yr = y + row * n;
  double q = 0.0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    const double v = (double)xr[j];
    q += v * v;
  }
  const T rs = (T)row_rstd(xr, n, 0.0, block_sum(q, sh), (double)eps, sh);
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

// ---- gates: top-k softmax and soft top-k, one thread per row (rows are short, e.g. 64 experts);
// exponentials and row sums accumulate in double.
#define OPTNORM_TOPK_MAX 64

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
  T vals[OPTNORM_TOPK_MAX];
  long long inds[OPTNORM_TOPK_MAX];
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
    for (long long j = 0; j < n; ++j) s += sigmoid(alpha * ((double)row[j] + mid));
    if (s < k) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const double t = 0.5 * (lo + hi);
  for (long long j = 0; j < n; ++j) orow[j] = (T)sigmoid(alpha * ((double)row[j] + t));
}


// ---- scaled dot-product attention: one thread per (pair, query row) for the output and dQ, one per (pair, key
// row) for dK and dV; keys are streamed with the online (max, sum) update, so no (L, S) matrix is formed.
// q (Pq, L, E), k (Pk, S, E), v (Pk, S, Ev), C-contiguous; qmap/kvmap map each output pair to its query and
// key/value heads (broadcast batch dims, grouped-query heads).  The mask is additive, read at
// madd[moff[p] + i * msl + j * mss] (strides 0 where it broadcasts).  Dropout keeps (p, i, j) when the top 24
// bits of a hash of (seed, p, i, j) are >= thresh (the Numba kernels' and optnorm._numba.attention.dropout_keep's
// hash).  The backward recomputes P = exp(s - lse) from the saved log-sum-exp; dd = rowsum(dO * O) - dLSE.
#define OPTNORM_SDPA_MAX_DIM 256

__device__ __forceinline__ unsigned int sdpa_mix(unsigned int x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

__device__ __forceinline__ unsigned int sdpa_row_key(unsigned int seed, long long p, long long i) {
  return sdpa_mix(sdpa_mix(seed ^ sdpa_mix((unsigned int)p)) ^ (unsigned int)i);
}

template <typename T>
__device__ __forceinline__ T sdpa_keep(unsigned int key, long long j, unsigned int thresh, T keep_scale) {
  if (thresh == 0u) return T(1);
  return (sdpa_mix(key ^ (unsigned int)j) >> 8) >= thresh ? keep_scale : T(0);
}

// scale <q_i, k_j> + mask, or -inf when masked (causal: j > i)
template <typename T>
__device__ __forceinline__ T sdpa_score(const T* __restrict__ qi, const T* __restrict__ kj, long long E, T scale,
                                        const T* __restrict__ madd, long long moff, long long msl, long long mss,
                                        int has_mask, long long i, long long j, int causal) {
  if (causal && j > i) return -Lim<T>::inf();
  T s = T(0);
  for (long long e = 0; e < E; ++e) s += qi[e] * kj[e];
  s *= scale;
  if (has_mask) s += madd[moff + i * msl + j * mss];
  return s;
}

template <typename T>
__global__ void sdpa_fwd_rows(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                              const long long* __restrict__ qmap, const long long* __restrict__ kvmap,
                              const T* __restrict__ madd, const long long* __restrict__ moff, long long msl,
                              long long mss, int has_mask, T* __restrict__ o, T* __restrict__ lse, long long P,
                              long long L, long long S, long long E, long long Ev, T scale, int causal,
                              unsigned int thresh, T keep_scale, unsigned int seed) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= P * L) return;
  const long long p = t / L, i = t % L;
  const T* qi = q + (qmap[p] * L + i) * E;
  const T* kb = k + kvmap[p] * S * E;
  const T* vb = v + kvmap[p] * S * Ev;
  const long long mo = moff[p];
  const unsigned int key = sdpa_row_key(seed, p, i);
  T acc[OPTNORM_SDPA_MAX_DIM];
  for (long long e = 0; e < Ev; ++e) acc[e] = T(0);
  T m = -Lim<T>::inf(), l = T(0);
  for (long long j = 0; j < S; ++j) {
    const T s = sdpa_score(qi, kb + j * E, E, scale, madd, mo, msl, mss, has_mask, i, j, causal);
    if (s == -Lim<T>::inf()) continue;
    if (s > m) {
      const T a = (m == -Lim<T>::inf()) ? T(0) : d_exp(m - s);
      l *= a;
      for (long long e = 0; e < Ev; ++e) acc[e] *= a;
      m = s;
    }
    const T pj = d_exp(s - m);  // NaN scores propagate through l
    l += pj;
    const T pd = pj * sdpa_keep(key, j, thresh, keep_scale);
    if (pd != T(0)) {
      const T* vj = vb + j * Ev;
      for (long long e = 0; e < Ev; ++e) acc[e] += pd * vj[e];
    }
  }
  T* oi = o + t * Ev;
  if (m == -Lim<T>::inf()) {  // fully masked row: 0, like torch's math backend
    for (long long e = 0; e < Ev; ++e) oi[e] = T(0);
    lse[t] = -Lim<T>::inf();
    return;
  }
  const T inv = T(1) / l;
  for (long long e = 0; e < Ev; ++e) oi[e] = acc[e] * inv;
  lse[t] = m + d_log(l);
}

template <typename T>
__global__ void sdpa_bwd_dq_rows(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                 const long long* __restrict__ qmap, const long long* __restrict__ kvmap,
                                 const T* __restrict__ madd, const long long* __restrict__ moff, long long msl,
                                 long long mss, int has_mask, const T* __restrict__ lse, const T* __restrict__ dd,
                                 const T* __restrict__ dout, long long P, long long L, long long S, long long E,
                                 long long Ev, T scale, int causal, unsigned int thresh, T keep_scale,
                                 unsigned int seed, T* __restrict__ dq) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= P * L) return;
  const long long p = t / L, i = t % L;
  T* dqi = dq + t * E;
  const T li = lse[t];
  if (li == -Lim<T>::inf()) {
    for (long long e = 0; e < E; ++e) dqi[e] = T(0);
    return;
  }
  const T* qi = q + (qmap[p] * L + i) * E;
  const T* kb = k + kvmap[p] * S * E;
  const T* vb = v + kvmap[p] * S * Ev;
  const T* doi = dout + t * Ev;
  const T di = dd[t];
  const long long mo = moff[p];
  const unsigned int key = sdpa_row_key(seed, p, i);
  T acc[OPTNORM_SDPA_MAX_DIM];
  for (long long e = 0; e < E; ++e) acc[e] = T(0);
  for (long long j = 0; j < S; ++j) {
    const T* kj = kb + j * E;
    const T s = sdpa_score(qi, kj, E, scale, madd, mo, msl, mss, has_mask, i, j, causal);
    if (s == -Lim<T>::inf()) continue;
    const T pj = d_exp(s - li);
    const T* vj = vb + j * Ev;
    T dp = T(0);
    for (long long e = 0; e < Ev; ++e) dp += doi[e] * vj[e];
    const T ds = pj * (dp * sdpa_keep(key, j, thresh, keep_scale) - di);
    for (long long e = 0; e < E; ++e) acc[e] += ds * kj[e];
  }
  for (long long e = 0; e < E; ++e) dqi[e] = acc[e] * scale;
}

template <typename T>
__global__ void sdpa_bwd_dkv_rows(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                  const long long* __restrict__ qmap, const long long* __restrict__ kvmap,
                                  const T* __restrict__ madd, const long long* __restrict__ moff, long long msl,
                                  long long mss, int has_mask, const T* __restrict__ lse, const T* __restrict__ dd,
                                  const T* __restrict__ dout, long long P, long long L, long long S, long long E,
                                  long long Ev, T scale, int causal, unsigned int thresh, T keep_scale,
                                  unsigned int seed, T* __restrict__ dk, T* __restrict__ dv) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= P * S) return;
  const long long p = t / S, j = t % S;
  const T* kj = k + (kvmap[p] * S + j) * E;
  const T* vj = v + (kvmap[p] * S + j) * Ev;
  const T* qb = q + qmap[p] * L * E;
  const long long mo = moff[p];
  T ak[OPTNORM_SDPA_MAX_DIM];
  T av[OPTNORM_SDPA_MAX_DIM];
  for (long long e = 0; e < E; ++e) ak[e] = T(0);
  for (long long e = 0; e < Ev; ++e) av[e] = T(0);
  for (long long i = causal ? j : 0; i < L; ++i) {
    const T li = lse[p * L + i];
    if (li == -Lim<T>::inf()) continue;
    const T* qi = qb + i * E;
    const T s = sdpa_score(qi, kj, E, scale, madd, mo, msl, mss, has_mask, i, j, causal);
    if (s == -Lim<T>::inf()) continue;
    const T pj = d_exp(s - li);
    const T* doi = dout + (p * L + i) * Ev;
    const T z = sdpa_keep(sdpa_row_key(seed, p, i), j, thresh, keep_scale);
    T dp = T(0);
    for (long long e = 0; e < Ev; ++e) {
      dp += doi[e] * vj[e];
      av[e] += pj * z * doi[e];
    }
    const T ds = pj * (dp * z - dd[p * L + i]);
    for (long long e = 0; e < E; ++e) ak[e] += ds * qi[e];
  }
  T* dkj = dk + t * E;
  T* dvj = dv + t * Ev;
  for (long long e = 0; e < E; ++e) dkj[e] = ak[e] * scale;
  for (long long e = 0; e < Ev; ++e) dvj[e] = av[e];
}
