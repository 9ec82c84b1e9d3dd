// Fused elementwise optimizer steps (Adam/AdamW, SGD, Lion, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
// schedule-free AdamW/SGD): one pass over p, g and the state, in place.
// Launched by optnorm/optim/_kernels.py through optnorm/_cuda/launch.py (elementwise: one launch per tensor).
// Grid-stride loops; scalars precomputed on the host in float64 and passed in T (torch's CUDA kernels also
// compute float32 params with float32 opmath).  Same algorithm as optnorm/_numba/optim.py.
//
// flags bits: adam  -> 1 decoupled, 2 amsgrad, 4 maximize, 8 hf_eps
//             sgd   -> 1 nesterov, 2 maximize, 4 first step (buffer = d)
//             lion  -> 1 maximize
//             rmsprop -> 1 centered, 2 momentum, 4 maximize
//             adagrad, adadelta, adamax -> 1 maximize
//             nadam -> 1 decoupled, 2 maximize
//             radam -> 1 rectified, 2 decoupled, 4 maximize
//             schedule_free -> 1 adam (second moment; SGD without)
//
// optnorm-kernel: adam_step<float>
// optnorm-kernel: adam_step<double>
// optnorm-kernel: sgd_step<float>
// optnorm-kernel: sgd_step<double>
// optnorm-kernel: lion_step<float>
// optnorm-kernel: lion_step<double>
// optnorm-kernel: rmsprop_step<float>
// optnorm-kernel: rmsprop_step<double>
// optnorm-kernel: adagrad_step<float>
// optnorm-kernel: adagrad_step<double>
// optnorm-kernel: adadelta_step<float>
// optnorm-kernel: adadelta_step<double>
// optnorm-kernel: adamax_step<float>
// optnorm-kernel: adamax_step<double>
// optnorm-kernel: nadam_step<float>
// optnorm-kernel: nadam_step<double>
// optnorm-kernel: radam_step<float>
// optnorm-kernel: radam_step<double>
// optnorm-kernel: schedule_free_step<float>
// optnorm-kernel: schedule_free_step<double>

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

template <typename T>
__global__ void rmsprop_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sa, T* __restrict__ mb,
                             T* __restrict__ ga, long long n, T lr, T alpha, T alpha_c, T eps, T wd, T momentum,
                             int flags) {
    const bool centered = flags & 1, use_mom = flags & 2, maximize = flags & 4;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = maximize ? -g[i] : g[i];
        T pi = p[i];
        if (wd != T(0)) gi = gi + wd * pi;
        T vi = alpha * sa[i] + alpha_c * (gi * gi);
        sa[i] = vi;
        if (centered) {
            T gm = ga[i];
            gm = gm + alpha_c * (gi - gm);
            ga[i] = gm;
            vi = vi - gm * gm;
            if (vi < T(0)) vi = T(0);
        }
        T d = gi / (d_sqrt(vi) + eps);
        if (use_mom) {
            d = momentum * mb[i] + d;
            mb[i] = d;
        }
        p[i] = pi - lr * d;
    }
}

template <typename T>
__global__ void adagrad_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ s, long long n, T clr,
                             T eps, T wd, int flags) {
    const bool maximize = flags & 1;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = maximize ? -g[i] : g[i];
        T pi = p[i];
        if (wd != T(0)) gi = gi + wd * pi;
        T si = s[i] + gi * gi;
        s[i] = si;
        p[i] = pi - clr * (gi / (d_sqrt(si) + eps));
    }
}

template <typename T>
__global__ void adadelta_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sa, T* __restrict__ ad,
                              long long n, T lr, T rho, T rho_c, T eps, T wd, int flags) {
    const bool maximize = flags & 1;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = maximize ? -g[i] : g[i];
        T pi = p[i];
        if (wd != T(0)) gi = gi + wd * pi;
        T vi = rho * sa[i] + rho_c * (gi * gi);
        sa[i] = vi;
        T ui = ad[i];
        T d = d_sqrt(ui + eps) / d_sqrt(vi + eps) * gi;
        ad[i] = rho * ui + rho_c * (d * d);
        p[i] = pi - lr * d;
    }
}

template <typename T>
__global__ void adamax_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ u,
                            long long n, T clr, T b1c, T b2, T eps, T wd, int flags) {
    const bool maximize = flags & 1;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = maximize ? -g[i] : g[i];
        T pi = p[i];
        if (wd != T(0)) gi = gi + wd * pi;
        T mi = m[i];
        mi = mi + b1c * (gi - mi);
        m[i] = mi;
        T ui = b2 * u[i];
        T a = (gi < T(0) ? -gi : gi) + eps;
        if (a > ui) ui = a;
        u[i] = ui;
        p[i] = pi - clr * (mi / ui);
    }
}

template <typename T>
__global__ void nadam_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                           long long n, T c1, T c2, T bc2, T eps, T b1c, T b2, T b2c, T wd, T decay, int flags) {
    const bool decoupled = flags & 1, maximize = flags & 2;
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
        T den = d_sqrt(vi / bc2) + eps;
        pi = pi - c1 * (gi / den);
        p[i] = pi - c2 * (mi / den);
    }
}

template <typename T>
__global__ void radam_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                           long long n, T lr, T bc1, T bc2_sqrt, T rect, T eps, T b1c, T b2, T b2c, T wd, T decay,
                           int flags) {
    const bool rectified = flags & 1, decoupled = flags & 2, maximize = flags & 4;
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
        if (rectified) {
            p[i] = pi - mi / bc1 * lr * (bc2_sqrt / (d_sqrt(vi) + eps)) * rect;
        } else {
            p[i] = pi - mi / bc1 * lr;
        }
    }
}

template <typename T>
__global__ void schedule_free_step(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ z, T* __restrict__ v,
                                   long long n, T lr, T ck, T coef, T b2, T b2c, T bc2, T eps, T wd, int flags) {
    const bool adam = flags & 1;
    const bool big = ck >= T(0.5);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = g[i];
        T yi = p[i];
        T d = gi;
        if (adam) {
            T vi = b2 * v[i] + b2c * (gi * gi);
            v[i] = vi;
            d = gi / (d_sqrt(vi / bc2) + eps);
        }
        if (wd != T(0)) d = d + wd * yi;
        T zi = z[i];
        T yl = big ? zi - (zi - yi) * (T(1) - ck) : yi + ck * (zi - yi);
        p[i] = yl + coef * d;
        z[i] = zi - lr * d;
    }
}
