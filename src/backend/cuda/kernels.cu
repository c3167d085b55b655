// varsparse's element-wise and reduction kernels for the CUDA backend (compiled with NVRTC).
// Matrices are row-major float arrays; vectors are (1, n) or (n, 1) matrices. Reductions
// accumulate in double and add block results atomically (sm_60+).

#define TPB 256

__device__ double block_sum(double v) {
    __shared__ double buf[TPB];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    double r = buf[0];
    __syncthreads();
    return r;
}

#define GRID_STRIDE(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

extern "C" __global__ void vs_fill(float* y, float v, int n) { GRID_STRIDE(i, n) y[i] = v; }

extern "C" __global__ void vs_axpby(float* y, const float* x, float a, float b, int beta_zero, int n) {
    GRID_STRIDE(i, n) y[i] = beta_zero ? a * x[i] : a * x[i] + b * y[i];
}

extern "C" __global__ void vs_add_scaled_diff(float* y, const float* a, const float* b, float alpha, int n) {
    GRID_STRIDE(i, n) y[i] = y[i] + alpha * (a[i] - b[i]);
}

extern "C" __global__ void vs_mul_assign(float* y, const float* a, int n) { GRID_STRIDE(i, n) y[i] = y[i] * a[i]; }

extern "C" __global__ void vs_scale(float* y, float a, int n) { GRID_STRIDE(i, n) y[i] = a * y[i]; }

extern "C" __global__ void vs_add_row_bias(float* a, const float* bias, int cols, int n) {
    GRID_STRIDE(i, n) a[i] = a[i] + bias[i % cols];
}

extern "C" __global__ void vs_relu(float* a, int n) { GRID_STRIDE(i, n) a[i] = a[i] > 0.0f ? a[i] : 0.0f; }

extern "C" __global__ void vs_relu_mask(float* g, const float* act, int n) {
    GRID_STRIDE(i, n) if (act[i] <= 0.0f) g[i] = 0.0f;
}

extern "C" __global__ void vs_hinge_grad(float* g, const float* x, const float* mean, const float* sd,
                                         float beta, float t, int rows, int cols, int count) {
    float scale = -(2.0f * beta) / (float)(count - 1);
    GRID_STRIDE(i, rows * cols) {
        int j = i % cols;
        float s = sd[j];
        if (s > 0.0f && s < t) g[i] = g[i] + scale * (t - s) / s * (x[i] - mean[j]);
    }
}

__device__ float shrink(float u, float thr, int nonneg) {
    if (nonneg) {
        float v = u - thr;
        return v > 0.0f ? v : 0.0f;
    }
    float m = fabsf(u) - thr;
    return m > 0.0f ? copysignf(m, u) : 0.0f;
}

extern "C" __global__ void vs_shrink_step(float* z, const float* x, const float* g, const float* flags,
                                          float eta, float thr, int nonneg, int cols, int n) {
    GRID_STRIDE(i, n) {
        int r = i / cols;
        if (flags[r] == 0.0f) {
            z[i] = shrink(x[i] - eta * g[i], thr, nonneg);
        } else {
            z[i] = nonneg ? (x[i] > 0.0f ? x[i] : 0.0f) : x[i];
        }
    }
}

extern "C" __global__ void vs_momentum(float* x, const float* z, const float* zo, float coef, int n) {
    GRID_STRIDE(i, n) x[i] = z[i] + coef * (z[i] - zo[i]);
}

// One block per row. counts[0] += converged rows, counts[1] += rows with a non-finite value.
extern "C" __global__ void vs_converged_rows(float* flags, const float* zo, const float* zn, float tol, int cols,
                                             int* counts) {
    int r = blockIdx.x;
    double diff = 0.0, old = 0.0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        double a = zo[r * cols + j], b = zn[r * cols + j];
        double d = (double)(zo[r * cols + j] - zn[r * cols + j]);
        diff += d * d;
        old += a * a;
        (void)b;
    }
    diff = block_sum(diff);
    old = block_sum(old);
    if (threadIdx.x == 0) {
        bool ok = old > 0.0 && sqrt(diff) / sqrt(old) < (double)tol;
        flags[r] = ok ? 1.0f : 0.0f;
        if (ok) atomicAdd(&counts[0], 1);
        if (!isfinite(diff)) atomicAdd(&counts[1], 1);
    }
}

// The fused FISTA update, one block per row (see Backend::fista_update).
extern "C" __global__ void vs_fista_update(float* x, float* z, float* zo, float* flags, const float* g, float eta,
                                           float thr, int nonneg, float coef, float tol, int cols, int* counts) {
    int r = blockIdx.x;
    __shared__ float prev;
    if (threadIdx.x == 0) prev = flags[r];
    __syncthreads();
    bool active = prev == 0.0f;
    double diff = 0.0, old = 0.0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        int i = r * cols + j;
        float o = z[i];
        float xv = x[i];
        float nz = active ? shrink(xv - eta * g[i], thr, nonneg) : (nonneg ? (xv > 0.0f ? xv : 0.0f) : xv);
        zo[i] = o;
        z[i] = nz;
        x[i] = nz + coef * (nz - o);
        float d = o - nz;
        diff += (double)d * (double)d;
        old += (double)o * (double)o;
    }
    diff = block_sum(diff);
    old = block_sum(old);
    if (threadIdx.x == 0) {
        bool ok = old > 0.0 && sqrt(diff) / sqrt(old) < (double)tol;
        flags[r] = ok ? 1.0f : 0.0f;
        if (ok) atomicAdd(&counts[0], 1);
        if (!isfinite(diff)) atomicAdd(&counts[1], 1);
    }
}

// out[0] += sum_i 10 log10(1 / max(s2 * mean_j r^2, floor)); one block per row.
extern "C" __global__ void vs_psnr_rows(double* out, const float* r, float s2, float floor_, int cols) {
    int row = blockIdx.x;
    double ss = 0.0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        double e = r[row * cols + j];
        ss += e * e;
    }
    ss = block_sum(ss);
    if (threadIdx.x == 0) {
        double mse = (double)s2 * ss / (double)cols;
        if (mse < (double)floor_) mse = (double)floor_;
        atomicAdd(out, -10.0 * log10(mse));
    }
}

// op: 0 sum a^2, 1 sum (a-b)^2, 2 sum a*b, 3 sum |a|, 4 count a == 0, 5 count non-finite a
extern "C" __global__ void vs_reduce(double* out, const float* a, const float* b, int op, int n) {
    double acc = 0.0;
    GRID_STRIDE(i, n) {
        double x = a[i];
        switch (op) {
            case 0: acc += x * x; break;
            case 1: { double d = (double)(a[i] - b[i]); acc += d * d; } break;
            case 2: acc += x * (double)b[i]; break;
            case 3: acc += fabs(x); break;
            case 4: acc += a[i] == 0.0f ? 1.0 : 0.0; break;
            default: acc += isfinite(a[i]) ? 0.0 : 1.0; break;
        }
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) atomicAdd(out, acc);
}

extern "C" __global__ void vs_step_model_terms(double* out, const float* g, const float* p, const float* x, int n) {
    double lin = 0.0, sq = 0.0;
    GRID_STRIDE(i, n) {
        double d = (double)(p[i] - x[i]);
        lin += (double)g[i] * d;
        sq += d * d;
    }
    lin = block_sum(lin);
    sq = block_sum(sq);
    if (threadIdx.x == 0) {
        atomicAdd(&out[0], lin);
        atomicAdd(&out[1], sq);
    }
}

extern "C" __global__ void vs_hinge_value(double* out, const float* sd, float t, int n) {
    double acc = 0.0;
    GRID_STRIDE(i, n) {
        double h = (double)(t - sd[i]);
        if (h > 0.0) acc += h * h;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) atomicAdd(out, acc);
}

// One thread per column.
extern "C" __global__ void vs_col_sums(float* out, const float* a, float alpha, float beta, int beta_zero, int rows,
                                       int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double s = 0.0;
    for (int r = 0; r < rows; r++) s += a[r * cols + j];
    out[j] = beta_zero ? alpha * (float)s : alpha * (float)s + beta * out[j];
}

// Shifted by the first row, as the CPU backend: a constant column has std exactly 0.
extern "C" __global__ void vs_col_mean_std(float* mean, float* sd, const float* a, int rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float v0 = a[j];
    double s = 0.0;
    for (int r = 1; r < rows; r++) s += (double)(a[r * cols + j] - v0);
    float mu = v0 + (float)(s / (double)rows);
    double ss = 0.0;
    for (int r = 0; r < rows; r++) {
        double d = (double)(a[r * cols + j] - mu);
        ss += d * d;
    }
    mean[j] = mu;
    sd[j] = (float)sqrt(ss / (double)(rows - 1));
}

extern "C" __global__ void vs_normalize_columns(float* a, int rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double ss = 0.0;
    for (int r = 0; r < rows; r++) ss += (double)a[r * cols + j] * (double)a[r * cols + j];
    if (ss <= 0.0) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int r = 0; r < rows; r++) a[r * cols + j] *= inv;
}

extern "C" __global__ void vs_adam(float* p, const float* g, float* m, float* v, float step_size, float b1, float b2,
                                   float eps, float wd, float bc2_sqrt, int n) {
    GRID_STRIDE(i, n) {
        float gi = wd != 0.0f ? g[i] + wd * p[i] : g[i];
        m[i] = m[i] + (1.0f - b1) * (gi - m[i]);
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] - step_size * (m[i] / denom);
    }
}

// Positions of the active rows (flags 0): a serial scan, the batch is small. count[0] = k.
extern "C" __global__ void vs_scan_flags(int* pos, int* count, const float* flags, int rows) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int k = 0;
    for (int r = 0; r < rows; r++) {
        pos[r] = k;
        if (flags[r] == 0.0f) k++;
    }
    count[0] = k;
}

// One block per row.
extern "C" __global__ void vs_gather_rows(float* dst, const float* src, const float* flags, const int* pos, int cols) {
    int r = blockIdx.x;
    if (flags[r] != 0.0f) return;
    int k = pos[r];
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dst[k * cols + j] = src[r * cols + j];
}

extern "C" __global__ void vs_scatter_rows(float* dst, const float* src, const float* flags, const int* pos, int cols) {
    int r = blockIdx.x;
    bool active = flags[r] == 0.0f;
    int k = pos[r];
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dst[r * cols + j] = active ? src[k * cols + j] : 0.0f;
}
