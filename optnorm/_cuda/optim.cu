// Fused elementwise optimizer steps (Adam/AdamW, SGD, Lion): one pass over p, g and the state, in place.
// Launched by optnorm/optim/_kernels.py through optnorm/_cuda/launch.py (elementwise: one launch per tensor).
// Grid-stride loops; scalars precomputed on the host in float64 and passed in T (torch's CUDA kernels also
// compute float32 params with float32 opmath).  Same algorithm as optnorm/_numba/optim.py.
//
// flags bits: adam  -> 1 decoupled, 2 amsgrad, 4 maximize, 8 hf_eps
//             sgd   -> 1 nesterov, 2 maximize, 4 first step (buffer = d)
//             lion  -> 1 maximize
//
// optnorm-kernel: adam_step<float>
// optnorm-kernel: adam_step<double>
// optnorm-kernel: sgd_step<float>
// optnorm-kernel: sgd_step<double>
// optnorm-kernel: lion_step<float>
// optnorm-kernel: lion_step<double>

#include "common.cuh"

using optnorm::d_sqrt;

template <typename T>
__global__ void adam_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                          T* __restrict__ vmax, long long n, T step_size, T bc2_sqrt, T eps, T b1c, T b2, T b2c,
                          T wd, T decay, int flags) {
    const bool decoupled = flags & 1, amsgrad = flags & 2, maximize = flags & 4, hf_eps = flags & 8;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = maximize ? -g[i] : g[i];
        T pi = p[i];
        if (decoupled) {
            pi = pi * decay;
        } else if (wd != T(0)) {
            gi = gi + wd * pi;
        }
        T mi = m[i];
        mi = mi + b1c * (gi - mi);
        T vi = b2 * v[i] + b2c * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            T vm = vmax[i];
            if (vm > vi) vi = vm;
            vmax[i] = vi;
        }
        T den = hf_eps ? d_sqrt(vi) + eps : d_sqrt(vi) / bc2_sqrt + eps;
        p[i] = pi - step_size * (mi / den);
    }
}

template <typename T>
__global__ void sgd_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, long long n, T lr,
                         T momentum, T damp_c, T wd, int flags) {
    const bool nesterov = flags & 1, maximize = flags & 2, first = flags & 4;
    const bool use_mom = momentum != T(0);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T d = maximize ? -g[i] : g[i];
        T pi = p[i];
        if (wd != T(0)) d = d + wd * pi;
        if (use_mom) {
            T b = first ? d : momentum * buf[i] + damp_c * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] = pi - lr * d;
    }
}

template <typename T>
__global__ void lion_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, long long n, T lr, T b1,
                          T b1c, T b2, T b2c, T wd, int flags) {
    const bool maximize = flags & 1;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = maximize ? -g[i] : g[i];
        T mi = m[i];
        T c = b1c * gi + b1 * mi;
        T s = c > T(0) ? T(1) : (c < T(0) ? T(-1) : T(0));
        T pi = p[i];
        p[i] = pi - lr * (s + wd * pi);
        m[i] = b2c * gi + b2 * mi;
    }
}
