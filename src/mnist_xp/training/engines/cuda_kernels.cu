// The fused training step of mnist_xp: three kernels, specialised by #defines.
// Read at run time by cuda_kernels.py, which prepends the typedefs `real` (float or
// double) and `in_t` (the pixels' type) and the sizes (N_IN, N_HID, N_OUT), switches
// (SIDE, WARP, ACT_RELU, LOSS_CE) and launch shapes (ROWS_A, K_SLICE, ...); see its
// docstring for what each kernel fuses.
#define NSPLIT ((N_IN + K_SLICE - 1) / K_SLICE)
#define HQ ((N_HID + 31) / 32)
#define J_TILES ((N_HID + TILE - 1) / TILE)
#define W1_TILES (((N_IN + TILE - 1) / TILE) * J_TILES)

__device__ __forceinline__ real sigmoid_(real a) {
    // tanh form, as in mnist_xp.model: never overflows
    return (real)0.5 * tanh((real)0.5 * a) + (real)0.5;
}

__device__ __forceinline__ real activate(real a) {
#if ACT_RELU
    return a > (real)0 ? a : (real)0;
#else
    return sigmoid_(a);
#endif
}

__device__ __forceinline__ real activation_grad(real h) {
#if ACT_RELU
    return h > (real)0 ? (real)1 : (real)0;
#else
    return h * ((real)1 - h);
#endif
}

__device__ __forceinline__ real warp_sum(real v) {
    // butterfly: every lane gets the same sum, in a fixed order (deterministic)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void __launch_bounds__(THREADS_A) hidden_partial(
    const in_t* __restrict__ data, const long long* __restrict__ order, const int base,
    const int rows, const int* __restrict__ shifts, const int batch, const real scale,
    const real* __restrict__ W1, real* __restrict__ xbuf, real* __restrict__ part,
    double* __restrict__ step_loss, unsigned long long* __restrict__ hits,
    const long long* __restrict__ warp_index, const unsigned char* __restrict__ warp_keep,
    const long long* __restrict__ warp_ids, const real* __restrict__ sample_weight,
    const int weighted, real* __restrict__ wsum)
{
    __shared__ real xs[ROWS_A][K_SLICE];
    if (blockIdx.x == 0 && blockIdx.y == 0) {
        if (threadIdx.x == 0) {
            // this step's loss, and at step 0 the epoch's hits, start here:
            // output_backward of the same step runs after this kernel
            step_loss[batch] = 0.0;
            if (batch == 0) *hits = 0ULL;
        }
        if (weighted) {
            // the batch's total weight, which output_backward divides by; summed in a
            // fixed order (strided, then a tree), so it is deterministic
            __shared__ real wred[THREADS_A];
            real t = (real)0;
            for (int r = threadIdx.x; r < rows; r += THREADS_A) t += sample_weight[order[base + r]];
            wred[threadIdx.x] = t;
            __syncthreads();
            for (int o = THREADS_A / 2; o > 0; o >>= 1) {
                if (threadIdx.x < o) wred[threadIdx.x] += wred[threadIdx.x + o];
                __syncthreads();
            }
            // as mnist_xp.model: an all-zero-weight batch moves nothing
            if (threadIdx.x == 0) wsum[batch] = max(wred[0], (real)1e-30);
        }
    }
    const int r0 = blockIdx.x * ROWS_A;
    const int split = blockIdx.y;
    const int k0 = split * K_SLICE;
    const int kn = min(K_SLICE, N_IN - k0);
#if SIDE > 0
    const int dy = shifts[2 * batch], dx = shifts[2 * batch + 1];
#endif
    for (int t = threadIdx.x; t < ROWS_A * K_SLICE; t += blockDim.x) {
        const int r = t / K_SLICE, kk = t - r * K_SLICE;
        real v = (real)0;
        if (r0 + r < rows && kk < kn) {
            const long long sample = order[base + r0 + r];
            const long long src = sample * (long long)N_IN;
            const int p = k0 + kk;
#if WARP
            // the sample's own warp: a source pixel per output pixel, or none (zero)
            const long long w = warp_ids[sample] * (long long)N_IN + p;
            if (warp_keep[w]) v = (real)data[src + warp_index[w]] * scale;
#elif SIDE > 0
            // the pixel moved here by (dy, dx); zero where it came from outside
            const int sy = p / SIDE - dy, sx = p % SIDE - dx;
            if (sy >= 0 && sy < SIDE && sx >= 0 && sx < SIDE)
                v = (real)data[src + sy * SIDE + sx] * scale;
#else
            v = (real)data[src + p] * scale;
#endif
            xbuf[(long long)(r0 + r) * N_IN + p] = v;
        }
        xs[r][kk] = v;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < N_HID; j += blockDim.x) {
        real acc[ROWS_A];
#pragma unroll
        for (int r = 0; r < ROWS_A; ++r) acc[r] = (real)0;
        const real* w = W1 + (long long)k0 * N_HID + j;
        if (kn == K_SLICE) {
            // The loop is bound by the latency of the weight loads, not by arithmetic:
            // the slice goes in groups of K_GROUP loads, the next group's in flight
            // while the current one is used (a full unroll would spill registers).
            real wa[K_GROUP], wb[K_GROUP];
#pragma unroll
            for (int u = 0; u < K_GROUP; ++u) wa[u] = w[(long long)u * N_HID];
#pragma unroll 1
            for (int g = 0; g < K_SLICE; g += K_GROUP) {
                if (g + K_GROUP < K_SLICE) {
#pragma unroll
                    for (int u = 0; u < K_GROUP; ++u) wb[u] = w[(long long)(g + K_GROUP + u) * N_HID];
                }
#pragma unroll
                for (int u = 0; u < K_GROUP; ++u) {
#pragma unroll
                    for (int r = 0; r < ROWS_A; ++r) acc[r] += xs[r][g + u] * wa[u];
                }
#pragma unroll
                for (int u = 0; u < K_GROUP; ++u) wa[u] = wb[u];
            }
        } else {
#pragma unroll 4
            for (int kk = 0; kk < kn; ++kk) {
                const real wv = w[(long long)kk * N_HID];
#pragma unroll
                for (int r = 0; r < ROWS_A; ++r) acc[r] += xs[r][kk] * wv;
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS_A; ++r)
            if (r0 + r < rows)
                part[((long long)(r0 + r) * NSPLIT + split) * N_HID + j] = acc[r];
    }
}

extern "C" __global__ void __launch_bounds__(THREADS_B) output_backward(
    const real* __restrict__ part, const real* __restrict__ b1, const real* __restrict__ W2,
    const real* __restrict__ b2, const long long* __restrict__ labels,
    const long long* __restrict__ order, const int base, const int rows, const real inv_rows,
    real* __restrict__ h, real* __restrict__ dz, real* __restrict__ dh,
    double* __restrict__ step_loss, const int step, unsigned long long* __restrict__ hits,
    const real* __restrict__ sample_weight, const int weighted, const real* __restrict__ wsum,
    const real keep, const real spread)
{
    const int row = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together: blockDim is a multiple of 32
    real hv[HQ];
    real z[N_OUT];
#pragma unroll
    for (int c = 0; c < N_OUT; ++c) z[c] = (real)0;
#pragma unroll
    for (int q = 0; q < HQ; ++q) {
        const int j = lane + 32 * q;
        real a = (real)0;
        if (j < N_HID) {
            const real* p = part + (long long)row * NSPLIT * N_HID + j;
#pragma unroll
            for (int s = 0; s < NSPLIT; ++s) a += p[s * N_HID];
            a = activate(a + b1[j]);
            h[(long long)row * N_HID + j] = a;
#pragma unroll
            for (int c = 0; c < N_OUT; ++c) z[c] += a * W2[j * N_OUT + c];
        }
        hv[q] = a;
    }
#pragma unroll
    for (int c = 0; c < N_OUT; ++c) z[c] = warp_sum(z[c]) + b2[c];
    // every lane now holds the sample's scores; each computes the same dz
    const long long sample = order[base + row];
    const int label = (int)labels[sample];
    // the sample's share of the mean: 1/rows, or its weight over the batch's total
    const real wi = weighted ? sample_weight[sample] : (real)1;
    const real share = weighted ? wi / wsum[step] : inv_rows;
    int best = 0;
    real zmax = z[0];
#pragma unroll
    for (int c = 1; c < N_OUT; ++c)
        if (z[c] > zmax) { zmax = z[c]; best = c; }  // the first maximum, as argmax
    // targets as mnist_xp.model: (1 - smoothing) one-hot + smoothing / N_OUT, that is
    // keep at the label plus spread everywhere (keep 1, spread 0 without smoothing)
    real loss = (real)0;
#if LOSS_CE
    // loss = sum_c target_c (log s - d_c) with d = z - zmax, s = sum_c exp(d_c):
    // keep (log s - d_label) + spread (N_OUT log s - sum_c d_c), exactly
    // log s - d_label one-hot; the sum of d keeps one exp per score in registers
    real zl = (real)0, zs = (real)0, s = (real)0;
#pragma unroll
    for (int c = 0; c < N_OUT; ++c) {
        const real d = z[c] - zmax;
        if (c == label) zl = d;
        zs += d;
        z[c] = exp(d);
        s += z[c];
    }
    const real logs = log(s);
    loss = keep * (logs - zl) + spread * ((real)N_OUT * logs - zs);
#pragma unroll
    for (int c = 0; c < N_OUT; ++c)
        z[c] = (z[c] / s - ((c == label ? keep : (real)0) + spread)) * share;
#else
#pragma unroll
    for (int c = 0; c < N_OUT; ++c) {
        const real out = sigmoid_(z[c]);
        const real diff = out - ((c == label ? keep : (real)0) + spread);
        loss += (real)0.5 * (diff * diff);
        z[c] = diff * out * ((real)1 - out) * share;
    }
#endif
    loss *= wi;
    if (lane == 0) {
        atomicAdd(step_loss + step, (double)loss);
        if (best == label) atomicAdd(hits, 1ULL);
#pragma unroll
        for (int c = 0; c < N_OUT; ++c) dz[(long long)row * N_OUT + c] = z[c];
    }
#pragma unroll
    for (int q = 0; q < HQ; ++q) {
        const int j = lane + 32 * q;
        if (j < N_HID) {
            real d = (real)0;
#pragma unroll
            for (int c = 0; c < N_OUT; ++c) d += z[c] * W2[j * N_OUT + c];
            dh[(long long)row * N_HID + j] = d * activation_grad(hv[q]);
        }
    }
}

// The optimizer's constants for one step: SGD's, or Adam's with the bias corrections
// of step t folded in on the host (as mnist_xp.optim.Adam does), so no kernel computes
// a power or reads the step count.
struct Rule {
    real lr, mu, wd;  // learning rate, momentum, weight decay (SGD, and Adam's L2)
    int nesterov, adam, decoupled;
    real b1, b2, omb1, omb2;  // beta1, beta2, 1 - beta1, 1 - beta2
    real step_size, eps, decay;  // lr sqrt(1-b2^t)/(1-b1^t), eps sqrt(1-b2^t), lr wd
};

__device__ __forceinline__ void update(real* p, real* v, real* s, real g, const Rule& r,
                                       const bool decays)
{
    // decays: a weight matrix (biases are never decayed, as in mnist_xp.optim)
    const real pv = *p;
    if (r.adam) {
        // as mnist_xp.optim.Adam: m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
        // p <- p - step_size m / (sqrt(v) + eps), AdamW decaying p by lr wd first
        real q = pv;
        if (decays && r.wd != (real)0) {
            if (r.decoupled) q = pv - r.decay * pv;
            else g += r.wd * pv;
        }
        const real m = r.b1 * *v + r.omb1 * g;
        const real sq = r.b2 * *s + r.omb2 * (g * g);
        *v = m;
        *s = sq;
        *p = q - r.step_size * m / (sqrt(sq) + r.eps);
        return;
    }
    // as mnist_xp.optim.SGD: v <- mu v - lr g; p <- p + v (Nesterov: p + mu v - lr g)
    if (decays && r.wd != (real)0) g += r.wd * pv;
    if (r.mu == (real)0) { *p = pv - r.lr * g; return; }
    const real vv = r.mu * *v - r.lr * g;
    *v = vv;
    *p = r.nesterov ? pv + (r.mu * vv - r.lr * g) : pv + vv;
}

extern "C" __global__ void __launch_bounds__(THREADS_C) grads_update(
    const real* __restrict__ xbuf, const real* __restrict__ h, const real* __restrict__ dz,
    const real* __restrict__ dh, const int rows,
    real* __restrict__ W1, real* __restrict__ b1, real* __restrict__ W2, real* __restrict__ b2,
    real* __restrict__ V1, real* __restrict__ Vb1, real* __restrict__ V2, real* __restrict__ Vb2,
    real* __restrict__ S1, real* __restrict__ Sb1, real* __restrict__ S2, real* __restrict__ Sb2,
    const real* __restrict__ lrs, const real* __restrict__ adam_steps, const int step,
    const real mu, const real wd, const int nesterov, const int adam, const int decoupled,
    const real beta1, const real beta2, const real one_minus_beta1, const real one_minus_beta2)
{
    // V: velocity (SGD) or first moment (Adam); S: second moment (Adam only; SGD passes
    // V again and S is never touched). adam_steps: per step, step size, eps, lr wd.
    Rule r;
    r.lr = lrs[step]; r.mu = mu; r.wd = wd;
    r.nesterov = nesterov; r.adam = adam; r.decoupled = decoupled;
    r.b1 = beta1; r.b2 = beta2; r.omb1 = one_minus_beta1; r.omb2 = one_minus_beta2;
    r.step_size = adam_steps[3 * step]; r.eps = adam_steps[3 * step + 1];
    r.decay = adam_steps[3 * step + 2];
    if (blockIdx.x < W1_TILES) {
        // W1 gradient tile (TILE inputs x TILE hidden units) = xbuf.T @ dh, then update;
        // the batch is walked in chunks of TILE rows, the next chunk's loads in flight
        // while the current one is summed
        __shared__ real xs[TILE][TILE + 1];
        __shared__ real ds[TILE][TILE + 1];
        const int kt = blockIdx.x / J_TILES, jt = blockIdx.x - kt * J_TILES;
        const int k0 = kt * TILE, j0 = jt * TILE;
        const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
        constexpr int PER = TILE * TILE / THREADS_C;
        real px[PER], pd[PER];
#pragma unroll
        for (int e = 0; e < PER; ++e) {
            const int t = threadIdx.x + THREADS_C * e, b = t >> 5, k = k0 + (t & 31), j = j0 + (t & 31);
            px[e] = (b < rows && k < N_IN) ? xbuf[(long long)b * N_IN + k] : (real)0;
            pd[e] = (b < rows && j < N_HID) ? dh[(long long)b * N_HID + j] : (real)0;
        }
        real acc[4] = {(real)0, (real)0, (real)0, (real)0};
        for (int b0 = 0; b0 < rows; b0 += TILE) {
#pragma unroll
            for (int e = 0; e < PER; ++e) {
                const int t = threadIdx.x + THREADS_C * e;
                xs[t >> 5][t & 31] = px[e];
                ds[t >> 5][t & 31] = pd[e];
            }
            __syncthreads();
            if (b0 + TILE < rows) {
#pragma unroll
                for (int e = 0; e < PER; ++e) {
                    const int t = threadIdx.x + THREADS_C * e, b = b0 + TILE + (t >> 5);
                    const int k = k0 + (t & 31), j = j0 + (t & 31);
                    px[e] = (b < rows && k < N_IN) ? xbuf[(long long)b * N_IN + k] : (real)0;
                    pd[e] = (b < rows && j < N_HID) ? dh[(long long)b * N_HID + j] : (real)0;
                }
            }
            const int bn = min(TILE, rows - b0);
            if (bn == TILE) {
#pragma unroll 8
                for (int bb = 0; bb < TILE; ++bb) {
                    const real d = ds[bb][tx];
#pragma unroll
                    for (int m = 0; m < 4; ++m) acc[m] += xs[bb][ty + 8 * m] * d;
                }
            } else {
                for (int bb = 0; bb < bn; ++bb) {
                    const real d = ds[bb][tx];
#pragma unroll
                    for (int m = 0; m < 4; ++m) acc[m] += xs[bb][ty + 8 * m] * d;
                }
            }
            __syncthreads();
        }
        const int j = j0 + tx;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            const int k = k0 + ty + 8 * m;
            if (k < N_IN && j < N_HID) {
                const long long i = (long long)k * N_HID + j;
                update(W1 + i, V1 + i, S1 + i, acc[m], r, true);
            }
        }
        return;
    }
    // the small parameters, one warp each, lanes striding over the batch: warp j < N_HID
    // takes row j of W2 and b1[j]; warp N_HID takes b2
    const int warp = ((blockIdx.x - W1_TILES) * THREADS_C + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    real g[N_OUT];
#pragma unroll
    for (int c = 0; c < N_OUT; ++c) g[c] = (real)0;
    if (warp < N_HID) {
        const int j = warp;
        real gb = (real)0;
        for (int b = lane; b < rows; b += 32) {
            const real hv = h[(long long)b * N_HID + j];
            gb += dh[(long long)b * N_HID + j];
#pragma unroll
            for (int c = 0; c < N_OUT; ++c) g[c] += hv * dz[(long long)b * N_OUT + c];
        }
        gb = warp_sum(gb);
#pragma unroll
        for (int c = 0; c < N_OUT; ++c) {
            const real gc = warp_sum(g[c]);
            if (lane == c % 32) update(W2 + j * N_OUT + c, V2 + j * N_OUT + c, S2 + j * N_OUT + c, gc, r, true);
        }
        if (lane == 31) update(b1 + j, Vb1 + j, Sb1 + j, gb, r, false);  // biases: no decay
    } else if (warp == N_HID) {
        for (int b = lane; b < rows; b += 32) {
#pragma unroll
            for (int c = 0; c < N_OUT; ++c) g[c] += dz[(long long)b * N_OUT + c];
        }
#pragma unroll
        for (int c = 0; c < N_OUT; ++c) {
            const real gc = warp_sum(g[c]);
            if (lane == c % 32) update(b2 + c, Vb2 + c, Sb2 + c, gc, r, false);
        }
    }
}
