// optnorm SPD kernels (CuPy RawModule, NVRTC), launched through optnorm/_cuda/launch.py (elementwise: one thread
// per matrix or matrix pair); n <= SPD_MAXN.
//
// bw_dist2_batched<T>: squared Bures-Wasserstein distance tr A + tr B - 2 sum_i sqrt(mu_i), mu = eig(L^T B L),
// A = L L^T: Cholesky, congruence, Householder tridiagonalisation and implicit QL (eigenvalues only), the same
// algorithm as optnorm/_numba/spd.py, and the bound on its rounding error the caller uses to recompute
// cancelling pairs in the Procrustes form (optnorm/spd/_linalg.py: bw2_terms).  Scratch is double precision
// in local memory for float inputs too.
//
// optnorm-kernel: bw_dist2_batched<float>
// optnorm-kernel: bw_dist2_batched<double>
// optnorm-kernel: newton_schulz_sqrt<float>
// optnorm-kernel: newton_schulz_sqrt<double>
// optnorm-kernel: airm_dist2_pairwise<float>
// optnorm-kernel: airm_dist2_pairwise<double>
// optnorm-kernel: bw_dist2_pairwise<float>
// optnorm-kernel: bw_dist2_pairwise<double>
//
// airm_dist2_pairwise<T> / bw_dist2_pairwise<T>: the (m, k) matrix of squared distances between X_i and Y_j, one
// thread per pair on a 2-D grid (x: columns j, y: rows i, strided), the same per-pair algorithms as
// optnorm/_numba/spd_distances.py: AIRM by L = chol(X_i / a), the difference form L^{-1} (Y_j - X_i) / a L^{-T}
// with log1p when the magnitudes are within 1e30 (else L^{-1} (Y_j / b) L^{-T} and the shift log(b / a)), the
// tridiagonal eigenvalues, and a flag for eigenvalues below the smallest normal number; BW by the trace formula and
// its error bound (the caller recomputes flagged pairs).  ``symmetric`` (Y = X) computes j > i only.

#include "common.cuh"

#define SPD_MAXN 32

__device__ inline void spd_tridiag_eigvals(double* a, double* d, double* e, double* p, double* w, double* v, int n) {
    for (int k = 0; k < n - 2; ++k) {
        int m = n - k - 1;
        double xn2 = 0.0;
        for (int i = 0; i < m; ++i) { v[i] = a[(k + 1 + i) * n + k]; xn2 += v[i] * v[i]; }
        if (xn2 == 0.0) { e[k] = 0.0; continue; }
        double x0 = v[0];
        double alpha = x0 >= 0 ? -sqrt(xn2) : sqrt(xn2);
        v[0] = x0 - alpha;
        double vn2 = xn2 - x0 * x0 + v[0] * v[0];
        double beta = 2.0 / vn2;
        double vp = 0.0;
        for (int i = 0; i < m; ++i) {
            double s = 0.0;
            for (int j = 0; j < m; ++j) s += a[(k + 1 + i) * n + (k + 1 + j)] * v[j];
            p[i] = beta * s;
            vp += v[i] * p[i];
        }
        double kk = 0.5 * beta * vp;
        for (int i = 0; i < m; ++i) w[i] = p[i] - kk * v[i];
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < m; ++j)
                a[(k + 1 + i) * n + (k + 1 + j)] -= v[i] * w[j] + w[i] * v[j];
        e[k] = alpha;
    }
    for (int i = 0; i < n; ++i) d[i] = a[i * n + i];
    if (n >= 2) e[n - 2] = a[(n - 1) * n + (n - 2)];
    e[n - 1] = 0.0;
    const double eps = 2.220446049250313e-16;
    for (int l = 0; l < n; ++l) {
        int it = 0;
        while (true) {
            int m = l;
            while (m < n - 1) {
                double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= eps * dd) break;
                ++m;
            }
            if (m == l || it >= 60) break;
            ++it;
            double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            double r = sqrt(g * g + 1.0);
            g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
            double s = 1.0, c = 1.0, pp = 0.0;
            int i = m - 1;
            bool under = false;
            while (i >= l) {
                double f = s * e[i];
                double b = c * e[i];
                r = sqrt(f * f + g * g);
                e[i + 1] = r;
                if (r == 0.0) { d[i + 1] -= pp; e[m] = 0.0; under = true; break; }
                s = f / r;
                c = g / r;
                g = d[i + 1] - pp;
                r = (d[i] - g) * s + 2.0 * c * b;
                pp = s * r;
                d[i + 1] = g + pp;
                g = c * r - b;
                --i;
            }
            if (under) continue;
            d[l] -= pp;
            e[l] = g;
            e[m] = 0.0;
        }
    }
}

__device__ inline double spd_maxabs_d(const double* a, int n) {
    double s = 0.0;
    for (int i = 0; i < n * n; ++i) s = fmax(s, fabs(a[i]));
    return (s > 0.0 && s < 1.0 / 0.0) ? s : 1.0;
}

template <typename T>
__device__ inline double spd_maxabs(const T* a, int n) {
    double s = 0.0;
    for (int i = 0; i < n * n; ++i) s = fmax(s, fabs((double)a[i]));
    return (s > 0.0 && s < 1.0 / 0.0) ? s : 1.0;
}

// Squared AIRM distance of one pair (float64 scratch L, M of n*n and d, e, p, w, v of n); returns NaN when A is
// not positive definite, sets *low when an eigenvalue of (B, A) is below the smallest normal number.
template <typename T>
__device__ double spd_airm_pair(const T* a, const T* bm, int n, double* L, double* M, double* d, double* e,
                                double* p, double* w, double* v, int* low) {
    const double eps = 2.220446049250313e-16;
    double sa = spd_maxabs(a, n), sb = spd_maxabs(bm, n);
    double ia = 1.0 / sa;
    for (int i = 0; i < n * n; ++i) L[i] = 0.0;
    for (int j = 0; j < n; ++j) {
        double s = (double)a[j * n + j] * ia;
        for (int k = 0; k < j; ++k) s -= L[j * n + k] * L[j * n + k];
        if (!(s > 0.0)) return optnorm::Lim<double>::nan();
        double ljj = sqrt(s);
        L[j * n + j] = ljj;
        for (int i = j + 1; i < n; ++i) {
            double t = 0.5 * ((double)a[i * n + j] + (double)a[j * n + i]) * ia;
            for (int k = 0; k < j; ++k) t -= L[i * n + k] * L[j * n + k];
            L[i * n + j] = t / ljj;
        }
    }
    double shift = log(sb) - log(sa);
    bool diff = fabs(shift) < 69.0;
    double sc = diff ? ia : 1.0 / sb;
    // M = L^{-1} S L^{-T}, S = sym(B - A) / a (difference form) or sym(B) / b: column by column of T = L^{-1} S
    // (kept in M), then M <- L^{-1} T^T (T symmetric-product: rows of the result from the columns of T)
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < n; ++i) {
            double sij = diff ? 0.5 * (((double)bm[i * n + j] - (double)a[i * n + j]) +
                                       ((double)bm[j * n + i] - (double)a[j * n + i])) * sc
                              : 0.5 * ((double)bm[i * n + j] + (double)bm[j * n + i]) * sc;
            double t = sij;
            for (int k = 0; k < i; ++k) t -= L[i * n + k] * M[k * n + j];
            M[i * n + j] = t / L[i * n + i];
        }
    for (int j = 0; j < n; ++j) {          // column j of L^{-1} T^T from row j of T, in place through v
        for (int i = 0; i < n; ++i) {
            double t = M[j * n + i];
            for (int k = 0; k < i; ++k) t -= L[i * n + k] * v[k];
            v[i] = t / L[i * n + i];
        }
        for (int i = 0; i < n; ++i) M[j * n + i] = v[i];   // row j of the result (symmetric: = column j)
    }
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) { double s = 0.5 * (M[i * n + j] + M[j * n + i]); M[i * n + j] = s; M[j * n + i] = s; }
    spd_tridiag_eigvals(M, d, e, p, w, v, n);
    double one = diff ? 1.0 : 0.0, mx = 0.0;
    for (int i = 0; i < n; ++i) mx = fmax(mx, d[i] + one);
    double lo = n * eps * mx, acc = 0.0;
    const double log_tiny = log(2.2250738585072014e-308);
    for (int i = 0; i < n; ++i) {
        double mu = d[i] + one, t;
        if (!(mu > 0.0) || log(mu) + (diff ? 0.0 : shift) < log_tiny) *low = 1;
        if (!(mu >= lo)) t = log(lo) + (diff ? 0.0 : shift);
        else if (diff) t = log1p(d[i]);
        else t = log(mu) + shift;
        acc += t * t;
    }
    return acc;
}

template <typename T>
__global__ void airm_dist2_pairwise(const T* __restrict__ X, const T* __restrict__ Y, T* __restrict__ out,
                                    int* __restrict__ low, long long m, long long k, int n, int symmetric) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k || n > SPD_MAXN) return;
    for (long long i = (long long)blockIdx.y * blockDim.y + threadIdx.y; i < m;
         i += (long long)gridDim.y * blockDim.y) {
        if (symmetric && j <= i) { if (j == i) { out[i * k + j] = T(0); low[i * k + j] = 0; } continue; }
        double L[SPD_MAXN * SPD_MAXN], M[SPD_MAXN * SPD_MAXN];
        double d[SPD_MAXN], e[SPD_MAXN], p[SPD_MAXN], w[SPD_MAXN], v[SPD_MAXN];
        int lw = 0;
        double r = spd_airm_pair(X + i * n * n, Y + j * n * n, n, L, M, d, e, p, w, v, &lw);
        out[i * k + j] = (T)r;
        low[i * k + j] = lw;
    }
}

// Squared BW distance of one pair by the trace formula and its error bound, computed for the pair divided by
// sqrt(max|A| max|B|) and scaled back; NaN when A or B is not positive definite.
template <typename T>
__device__ void spd_bw_pair(const T* a, const T* bb, int n, double* L, double* M, double* d, double* e, double* p,
                            double* w, double* v, double* out, double* err) {
    double sc = sqrt(spd_maxabs(a, n)) * sqrt(spd_maxabs(bb, n));
    double isc = 1.0 / sc;
    for (int pass = 0; pass < 2; ++pass) {     // pass 0: positive definiteness of B (in L), pass 1: L = chol(A)
        const T* src = pass == 0 ? bb : a;
        for (int i = 0; i < n * n; ++i) L[i] = 0.0;
        for (int j = 0; j < n; ++j) {
            double s = (double)src[j * n + j] * isc;
            for (int k = 0; k < j; ++k) s -= L[j * n + k] * L[j * n + k];
            if (!(s > 0.0)) { *out = optnorm::Lim<double>::nan(); *err = 0.0; return; }
            double ljj = sqrt(s);
            L[j * n + j] = ljj;
            for (int i = j + 1; i < n; ++i) {
                double t = 0.5 * ((double)src[i * n + j] + (double)src[j * n + i]) * isc;
                for (int k = 0; k < j; ++k) t -= L[i * n + k] * L[j * n + k];
                L[i * n + j] = t / ljj;
            }
        }
    }
    double trA = 0.0, trB = 0.0;
    for (int i = 0; i < n; ++i) { trA += (double)a[i * n + i] * isc; trB += (double)bb[i * n + i] * isc; }
    for (int i = 0; i < n * n; ++i) M[i] = 0.0;
    for (int r = 0; r < n; ++r) {
        for (int j = 0; j < n; ++j) {
            double s = 0.0;
            for (int k = j; k < n; ++k) s += 0.5 * ((double)bb[r * n + k] + (double)bb[k * n + r]) * isc * L[k * n + j];
            v[j] = s;
        }
        for (int i = 0; i <= r; ++i) {
            double lri = L[r * n + i];
            if (lri == 0.0) continue;
            for (int j = 0; j < n; ++j) M[i * n + j] += lri * v[j];
        }
    }
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) { double s = 0.5 * (M[i * n + j] + M[j * n + i]); M[i * n + j] = s; M[j * n + i] = s; }
    spd_tridiag_eigvals(M, d, e, p, w, v, n);
    const double eps = 2.220446049250313e-16;
    double delta = n * eps * trA * trB, acc = 0.0, bound = 0.0;
    for (int i = 0; i < n; ++i) {
        double mu = d[i] > 0.0 ? d[i] : 0.0;
        double s = sqrt(mu);
        acc += s;
        double den = sqrt(mu + delta) + s;
        if (den > 0.0) bound += delta / den;
    }
    double r = trA + trB - 2.0 * acc;
    *out = (r > 0.0 ? r : 0.0) * sc;
    *err = (2.0 * bound + n * eps * (trA + trB)) * sc;
}

template <typename T>
__global__ void bw_dist2_pairwise(const T* __restrict__ X, const T* __restrict__ Y, T* __restrict__ out,
                                  T* __restrict__ err, long long m, long long k, int n, int symmetric) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k || n > SPD_MAXN) return;
    for (long long i = (long long)blockIdx.y * blockDim.y + threadIdx.y; i < m;
         i += (long long)gridDim.y * blockDim.y) {
        if (symmetric && j <= i) { if (j == i) { out[i * k + j] = T(0); err[i * k + j] = T(0); } continue; }
        double L[SPD_MAXN * SPD_MAXN], M[SPD_MAXN * SPD_MAXN];
        double d[SPD_MAXN], e[SPD_MAXN], p[SPD_MAXN], w[SPD_MAXN], v[SPD_MAXN];
        double o, r;
        spd_bw_pair(X + i * n * n, Y + j * n * n, n, L, M, d, e, p, w, v, &o, &r);
        out[i * k + j] = (T)o;
        err[i * k + j] = (T)r;
    }
}

template <typename T>
__global__ void bw_dist2_batched(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ out,
                                 T* __restrict__ err, long long count, int n) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= count || n > SPD_MAXN) return;
    const T* a = A + b * n * n;
    const T* bb = B + b * n * n;
    double L[SPD_MAXN * SPD_MAXN];
    double M[SPD_MAXN * SPD_MAXN];
    double d[SPD_MAXN], e[SPD_MAXN], p[SPD_MAXN], w[SPD_MAXN], v[SPD_MAXN];
    for (int i = 0; i < n * n; ++i) L[i] = 0.0;
    for (int j = 0; j < n; ++j) {
        double s = (double)a[j * n + j];
        for (int k = 0; k < j; ++k) s -= L[j * n + k] * L[j * n + k];
        if (!(s > 0.0)) { out[b] = optnorm::Lim<T>::nan(); err[b] = T(0); return; }
        double ljj = sqrt(s);
        L[j * n + j] = ljj;
        for (int i = j + 1; i < n; ++i) {
            double t = 0.5 * ((double)a[i * n + j] + (double)a[j * n + i]);
            for (int k = 0; k < j; ++k) t -= L[i * n + k] * L[j * n + k];
            L[i * n + j] = t / ljj;
        }
    }
    double trA = 0.0, trB = 0.0;
    for (int i = 0; i < n; ++i) { trA += (double)a[i * n + i]; trB += (double)bb[i * n + i]; }
    // M = L^T sym(B) L, one row of T = sym(B) L at a time (T row kept in v)
    for (int i = 0; i < n * n; ++i) M[i] = 0.0;
    for (int r = 0; r < n; ++r) {
        for (int j = 0; j < n; ++j) {
            double s = 0.0;
            for (int k = j; k < n; ++k) s += 0.5 * ((double)bb[r * n + k] + (double)bb[k * n + r]) * L[k * n + j];
            v[j] = s;  // T[r, j]
        }
        for (int i = 0; i <= r; ++i) {         // M[i, j] += L[r, i] T[r, j] for r >= i
            double lri = L[r * n + i];
            if (lri == 0.0) continue;
            for (int j = 0; j < n; ++j) M[i * n + j] += lri * v[j];
        }
    }
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) { double s = 0.5 * (M[i * n + j] + M[j * n + i]); M[i * n + j] = s; M[j * n + i] = s; }
    spd_tridiag_eigvals(M, d, e, p, w, v, n);
    const double eps = 2.220446049250313e-16;
    double delta = n * eps * trA * trB;
    double acc = 0.0, bound = 0.0;
    for (int i = 0; i < n; ++i) {
        double mu = d[i] > 0.0 ? d[i] : 0.0;
        double s = sqrt(mu);
        acc += s;
        double den = sqrt(mu + delta) + s;
        if (den > 0.0) bound += delta / den;
    }
    double r = trA + trB - 2.0 * acc;
    out[b] = (T)(r > 0.0 ? r : 0.0);
    err[b] = (T)(2.0 * bound + n * eps * (trA + trB));
}

// Coupled Newton-Schulz square root and inverse square root of one SPD matrix per thread (n <= SPD_MAXN):
// Y0 = A / ||A||_F, Z0 = I, T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z; Y * sqrt(c) and Z / sqrt(c) are written.
template <typename T>
__global__ void newton_schulz_sqrt(const T* __restrict__ A, T* __restrict__ Ys, T* __restrict__ Zs,
                                   long long count, int n, int n_iter) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= count || n > SPD_MAXN) return;
    const T* a = A + b * n * n;
    double Y[SPD_MAXN * SPD_MAXN], Z[SPD_MAXN * SPD_MAXN], W[SPD_MAXN * SPD_MAXN];
    double m = 0.0;   // ||A||_F = m ||A / m||_F: no overflow of the squares near the dtype's range
    for (int i = 0; i < n * n; ++i) m = fmax(m, fabs((double)a[i]));
    if (m == 0.0) m = 1.0;
    double c = 0.0;
    for (int i = 0; i < n * n; ++i) { double t = (double)a[i] / m; c += t * t; }
    c = m * sqrt(c);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
            Y[i * n + j] = 0.5 * ((double)a[i * n + j] + (double)a[j * n + i]) / c;
            Z[i * n + j] = (i == j) ? 1.0 : 0.0;
        }
    for (int it = 0; it < n_iter; ++it) {
        // W = (3I - Z Y) / 2
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) {
                double s = 0.0;
                for (int k = 0; k < n; ++k) s += Z[i * n + k] * Y[k * n + j];
                W[i * n + j] = 0.5 * ((i == j ? 3.0 : 0.0) - s);
            }
        // Y <- Y W (row by row, using one row buffer in the output slot)
        for (int i = 0; i < n; ++i) {
            double row[SPD_MAXN];
            for (int j = 0; j < n; ++j) {
                double s = 0.0;
                for (int k = 0; k < n; ++k) s += Y[i * n + k] * W[k * n + j];
                row[j] = s;
            }
            for (int j = 0; j < n; ++j) Y[i * n + j] = row[j];
        }
        // Z <- W Z (column by column)
        for (int j = 0; j < n; ++j) {
            double col[SPD_MAXN];
            for (int i = 0; i < n; ++i) {
                double s = 0.0;
                for (int k = 0; k < n; ++k) s += W[i * n + k] * Z[k * n + j];
                col[i] = s;
            }
            for (int i = 0; i < n; ++i) Z[i * n + j] = col[i];
        }
    }
    double sc = sqrt(c);
    for (int i = 0; i < n * n; ++i) {
        Ys[b * n * n + i] = (T)(Y[i] * sc);
        Zs[b * n * n + i] = (T)(Z[i] / sc);
    }
}
