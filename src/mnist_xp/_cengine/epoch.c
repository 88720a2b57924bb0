/* The compiled training engine: whole runs of steps of the one-hidden-layer MLP.
 *
 * One call trains `n_steps` consecutive minibatch steps with the GIL released, on an
 * OpenMP team. Per step, with T threads:
 *
 *   phase 1, each thread on its own rows of the batch (no sharing):
 *     gather + convert (+ shift or warp) its rows, forward, loss, dz, dh;
 *     (batches of up to SPLIT_ROWS: each thread on its own inputs instead, gathering
 *     those columns of every row and its share of the hidden layer's product; after the
 *     barrier every thread sums the shares and runs the rest of the forward and
 *     backward pass for the whole batch itself, see split_forward)
 *   barrier;
 *   phase 2, each thread on its own rows of the 784 inputs:
 *     dW1[rows] = X[:, rows]^T dh and the update of W1[rows] (every sgemm keeps all
 *     hidden units, so the products stay BLAS-shaped; SGD's update is the sgemm's
 *     beta, the other optimizers' runs block by block, each block of the gradient
 *     applied while it is in L1); one thread also does the small
 *     output layer's gradients and updates; each thread prefetches the source rows it
 *     gathers next step;
 *   barrier.
 *
 * Parameters stay in the generic layout (W1 (n_in, H), b1 (H,), W2 (H, O), b2 (O,)),
 * float32, updated in place; the input scale (1/255 for pixels) is the sgemm's alpha.
 * The BLAS is scipy-openblas32 (symbols prefixed `scipy_`), kept at one thread: the
 * parallelism is ours. On Linux the two barriers a step are our own (barrier_wait).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#if defined(__linux__)
#include <limits.h>
#include <linux/futex.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#define OWN_BARRIER 1 /* futex and per-thread rusage at hand */
#else
#define OWN_BARRIER 0
#endif

#include "cblas.h"

/* Hand-written loops get AVX-512 and AVX2/FMA clones picked at load time (no
 * -march=native): Adam's square root and division per weight run at twice the rate
 * in 16-float vectors. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define DISPATCH
#endif

enum { OPT_SGD = 0, OPT_MOMENTUM = 1, OPT_NESTEROV = 2, OPT_ADAM = 3, OPT_ADAMW = 4 };
enum { ACT_RELU = 0, ACT_SIGMOID = 1 };
enum { LOSS_CE = 0, LOSS_SQUARED = 1 };

typedef struct {
    const uint8_t *x_u8;        /* (n, n_in) pixels, or NULL */
    const float *x_f32;         /* (n, n_in) floats, or NULL */
    const int64_t *y;           /* (n,) labels */
    const float *sw;            /* (n,) sample weights, or NULL */
    const int64_t *order;       /* this call's samples, in training order */
    int64_t n_order, batch, n_steps, n_in, H, O, side;
    const double *lrs;          /* (n_steps,) */
    const int32_t *shifts;      /* (n_steps, 2) dy, dx, or NULL */
    const int16_t *warp_index;  /* (bank, n_in) source pixel in the row, or NULL */
    const uint8_t *warp_keep;   /* (bank, n_in) */
    const int64_t *warp_ids;    /* (n,) */
    float *W1, *b1, *W2, *b2;
    float *s1[4], *s2[4];       /* velocity, or Adam's m and v, per parameter */
    int act, loss, opt, threads;
    double scale, smoothing, mu, wd, beta1, beta2, eps;
    int64_t t;                  /* Adam's step count, advanced per step */
    float *losses;              /* (n_order,) per-sample loss out */
    uint8_t *hits;              /* (n_order,) argmax == label out */
    /* workspace */
    float *X, *A, *dA, *Z, *G1, *G2, *gb1, *gb2;
    /* small batches (split_forward): each thread's share of the hidden pre-activations
     * (threads, B, H), and its own A, dA (B, H) and Z (B, O); NULL for large batches */
    float *P, *At, *dAt, *Zt;
} Job;

typedef struct {
    int opt;
    float lr, mu, wd, b1, b2, step, eps, decay_lr;
} Update;

/* p, s1, s2 updated from the gradient g (n values); decay: a weight matrix. */
DISPATCH
static void update(float *restrict p, const float *restrict g, float *restrict s1,
                   float *restrict s2, int64_t n, const Update *u, int decay)
{
    const float lr = u->lr, mu = u->mu, wd = decay ? u->wd : 0.0f;
    switch (u->opt) {
    case OPT_SGD:
        for (int64_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
        break;
    case OPT_MOMENTUM:
        for (int64_t i = 0; i < n; i++) {
            s1[i] = s1[i] * mu - lr * (g[i] + wd * p[i]);
            p[i] += s1[i];
        }
        break;
    case OPT_NESTEROV:
        for (int64_t i = 0; i < n; i++) {
            float gg = g[i] + wd * p[i];
            s1[i] = s1[i] * mu - lr * gg;
            p[i] += mu * s1[i] - lr * gg;
        }
        break;
    default: { /* Adam, AdamW */
        const float b1 = u->b1, b2 = u->b2, c1 = 1.0f - u->b1, c2 = 1.0f - u->b2;
        const float step = u->step, eps = u->eps;
        const int decoupled = u->opt == OPT_ADAMW;
        const float shrink = decay ? u->decay_lr : 0.0f; /* lr * wd, AdamW */
        for (int64_t i = 0; i < n; i++) {
            float gg = g[i];
            if (decoupled) p[i] -= shrink * p[i];
            else gg += wd * p[i];
            s1[i] = s1[i] * b1 + c1 * gg;
            s2[i] = s2[i] * b2 + c2 * (gg * gg);
            p[i] -= step * s1[i] / (sqrtf(s2[i]) + eps);
        }
    }
    }
}

/* Inputs [c0, c1) of row r of the batch (sample `i`): its pixels, converted (and
 * shifted or warped), for one thread's share of the inputs. */
DISPATCH
static void gather_cols(const Job *j, int64_t i, const int32_t *shift, int64_t c0, int64_t c1,
                        float *restrict out)
{
    const int64_t n_in = j->n_in;
    if (j->warp_index) {
        const int64_t w = j->warp_ids[i];
        const int16_t *restrict index = j->warp_index + w * n_in;
        const uint8_t *restrict keep = j->warp_keep + w * n_in;
        if (j->x_u8) {
            const uint8_t *restrict src = j->x_u8 + i * n_in;
            for (int64_t p = c0; p < c1; p++) out[p] = (float)(uint8_t)(src[index[p]] * keep[p]);
        } else {
            const float *restrict src = j->x_f32 + i * n_in;
            for (int64_t p = c0; p < c1; p++) out[p] = src[index[p]] * (float)keep[p];
        }
        return;
    }
    if (!shift || (shift[0] == 0 && shift[1] == 0)) {
        if (j->x_u8) {
            const uint8_t *restrict src = j->x_u8 + i * n_in;
            for (int64_t p = c0; p < c1; p++) out[p] = (float)src[p];
        } else {
            memcpy(out + c0, j->x_f32 + i * n_in + c0, (size_t)(c1 - c0) * sizeof(float));
        }
        return;
    }
    /* out[y][x] = img[y - dy][x - dx], zero where that falls outside; a row at a time */
    const int64_t side = j->side, dy = shift[0], dx = shift[1];
    for (int64_t p = c0; p < c1;) {
        const int64_t yy = p / side, stop = (yy + 1) * side < c1 ? (yy + 1) * side : c1;
        const int64_t sy = yy - dy;
        if (sy < 0 || sy >= side) {
            memset(out + p, 0, (size_t)(stop - p) * sizeof(float));
            p = stop;
            continue;
        }
        for (; p < stop; p++) {
            const int64_t sx = p - yy * side - dx;
            if (sx < 0 || sx >= side) out[p] = 0.0f;
            else if (j->x_u8) out[p] = (float)j->x_u8[i * n_in + sy * side + sx];
            else out[p] = j->x_f32[i * n_in + sy * side + sx];
        }
    }
}

/* Row r of the batch: sample `i`'s pixels, converted (and shifted or warped). */
static void gather_row(const Job *j, int64_t i, const int32_t *shift, float *restrict out)
{
    gather_cols(j, i, shift, 0, j->n_in, out);
}

/* Hidden activation in place; sigmoid in the overflow-free tanh form. */
DISPATCH
static void activate(float *restrict a, int64_t n, int act)
{
    if (act == ACT_RELU) {
        for (int64_t i = 0; i < n; i++) a[i] = a[i] > 0.0f ? a[i] : 0.0f;
    } else {
        for (int64_t i = 0; i < n; i++) a[i] = 0.5f * tanhf(0.5f * a[i]) + 0.5f;
    }
}

/* dA *= the activation's derivative, from the activations A. */
DISPATCH
static void backprop_activation(float *restrict dA, const float *restrict A, int64_t n, int act)
{
    if (act == ACT_RELU) {
        for (int64_t i = 0; i < n; i++) dA[i] = A[i] > 0.0f ? dA[i] : 0.0f;
    } else {
        for (int64_t i = 0; i < n; i++) dA[i] *= A[i] * (1.0f - A[i]);
    }
}

/* Loss, hit and dz (scaled by `coef`) of one sample's output scores z (in place). */
static void output_row(const Job *j, float *restrict z, int64_t label, float coef,
                       float *loss_out, uint8_t *hit_out)
{
    const int64_t O = j->O;
    int64_t best = 0;
    for (int64_t k = 1; k < O; k++)
        if (z[k] > z[best]) best = k; /* ties go to the first, as argmax */
    *hit_out = best == label;
    const float off = (float)(j->smoothing / (double)O);
    const float on = (float)(1.0 - j->smoothing) + off;
    float loss = 0.0f;
    if (j->loss == LOSS_CE) {
        float m = z[0];
        for (int64_t k = 1; k < O; k++) m = z[k] > m ? z[k] : m;
        /* loss = sum_k t_k (log s - (z_k - m)) = log s * sum_k t_k - sum_k t_k (z_k - m) */
        float s = 0.0f, tz = 0.0f, tsum = 0.0f;
        for (int64_t k = 0; k < O; k++) {
            const float t = k == label ? on : off;
            z[k] -= m;
            tz += t * z[k];
            tsum += t;
            z[k] = expf(z[k]);
            s += z[k];
        }
        loss = tsum * logf(s) - tz;
        for (int64_t k = 0; k < O; k++) z[k] = (z[k] / s - (k == label ? on : off)) * coef;
    } else {
        for (int64_t k = 0; k < O; k++) {
            const float t = k == label ? on : off;
            const float out = 0.5f * tanhf(0.5f * z[k]) + 0.5f;
            const float diff = out - t;
            loss += 0.5f * diff * diff;
            z[k] = diff * out * (1.0f - out) * coef;
        }
    }
    *loss_out = loss;
}

/* From the hidden pre-activations A of batch rows [b0, b0 + m) to dh (dA), through
 * the output layer; the losses and hits of rows [w0, w1) are written. */
static void output_backward(const Job *j, int64_t s, int64_t rows, int64_t b0, int64_t m,
                            float *A, float *Z, float *dA, int64_t w0, int64_t w1)
{
    const int64_t H = j->H, O = j->O;
    const int64_t *idx = j->order + s * j->batch;
    activate(A, m * H, j->act);
    for (int64_t r = 0; r < m; r++) memcpy(Z + r * O, j->b2, (size_t)O * sizeof(float));
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)O, (int)H, 1.0f,
                      A, (int)H, j->W2, (int)O, 1.0f, Z, (int)O);
    /* each sample's share of the step: 1/rows, or its weight over the batch's total */
    double total = 0.0;
    if (j->sw) {
        float f = 0.0f;
        for (int64_t r = 0; r < rows; r++) f += j->sw[idx[r]];
        total = f > 1e-30f ? f : 1e-30f;
    }
    const int64_t first = s * j->batch;
    for (int64_t r = 0; r < m; r++) {
        const int64_t i = idx[b0 + r];
        const float coef = j->sw ? (float)(j->sw[i] / total) : (float)(1.0 / (double)rows);
        float loss;
        uint8_t hit;
        output_row(j, Z + r * O, j->y[i], coef, &loss, &hit);
        if (b0 + r >= w0 && b0 + r < w1) {
            j->losses[first + b0 + r] = loss;
            j->hits[first + b0 + r] = hit;
        }
    }
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)H, (int)O, 1.0f, Z,
                      (int)O, j->W2, (int)O, 0.0f, dA, (int)H);
    backprop_activation(dA, A, m * H, j->act);
}

/* Phase 1 of step `s` for batch rows [r0, r1): gather, forward, loss, backward to dh. */
static void forward_backward(const Job *j, int64_t s, int64_t rows, int64_t r0, int64_t r1)
{
    const int64_t n_in = j->n_in, H = j->H, O = j->O, m = r1 - r0;
    const int64_t *idx = j->order + s * j->batch;
    const int32_t *shift = j->shifts ? j->shifts + 2 * s : NULL;
    if (m <= 0) return;
    for (int64_t r = r0; r < r1; r++) gather_row(j, idx[r], shift, j->X + r * n_in);
    float *A = j->A + r0 * H, *Z = j->Z + r0 * O, *dA = j->dA + r0 * H;
    for (int64_t r = 0; r < m; r++) memcpy(A + r * H, j->b1, (size_t)H * sizeof(float));
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)H, (int)n_in,
                      (float)j->scale, j->X + r0 * n_in, (int)n_in, j->W1, (int)H, 1.0f, A,
                      (int)H);
    output_backward(j, s, rows, r0, m, A, Z, dA, r0, r1);
}

/* Small batches, phase 1: this thread's inputs [c0, c1) of every batch row, and its
 * share of the hidden pre-activations, P[tid] = scale X[:, c0:c1] W1[c0:c1]. Each
 * thread then reads and writes only its own rows of W1 and columns of X. With the batch
 * split by rows instead, both threads read all of W1 every step, and each line of W1
 * that an update then wrote had first to be taken back from the other core's cache: at
 * batch 32 that wait made Nesterov's update pass 5x slower than on one thread (26 us of
 * a thread's step against 5 us with the writes to W1 left out), and SGD's fused product
 * 1.5x slower; a prefetch for writing a block ahead did not hide it. The price: both
 * threads' shares are summed (in thread order), so the last bits of a run depend on the
 * thread count, and each thread repeats the small output layer for the whole batch. */
static void split_forward(const Job *j, int64_t s, int64_t rows, int64_t c0, int64_t c1, int tid)
{
    const int64_t n_in = j->n_in, H = j->H;
    const int64_t *idx = j->order + s * j->batch;
    const int32_t *shift = j->shifts ? j->shifts + 2 * s : NULL;
    float *P = j->P + tid * j->batch * H;
    if (c1 <= c0) {
        memset(P, 0, (size_t)(rows * H) * sizeof(float));
        return;
    }
    for (int64_t r = 0; r < rows; r++) gather_cols(j, idx[r], shift, c0, c1, j->X + r * n_in);
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)H,
                      (int)(c1 - c0), (float)j->scale, j->X + c0, (int)n_in, j->W1 + c0 * H,
                      (int)H, 0.0f, P, (int)H);
}

/* Small batches, phase 2's start: the pre-activations of the whole batch, b1 + the
 * threads' shares in thread order, and the rest of the forward and backward pass, on
 * every thread into its own buffers (the output layer is too small to be worth a
 * barrier); this thread's rows [w0, w1) record their losses. */
static void split_backward(const Job *j, int64_t s, int64_t rows, int nt, int tid, int64_t w0,
                           int64_t w1)
{
    const int64_t H = j->H, B = j->batch;
    float *A = j->At + tid * B * H, *dA = j->dAt + tid * B * H, *Z = j->Zt + tid * B * j->O;
    for (int64_t r = 0; r < rows; r++) {
        float *restrict a = A + r * H;
        memcpy(a, j->b1, (size_t)H * sizeof(float));
        for (int t = 0; t < nt; t++) {
            const float *restrict p = j->P + (t * B + r) * H;
            for (int64_t k = 0; k < H; k++) a[k] += p[k];
        }
    }
    output_backward(j, s, rows, 0, rows, A, Z, dA, w0, w1);
}

/* Column sums of a (rows, n) matrix into out (n). */
static void column_sums(const float *a, int64_t rows, int64_t n, float *out)
{
    memset(out, 0, (size_t)n * sizeof(float));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < n; k++) out[k] += a[r * n + k];
}

/* The optimizer's constants for step `s` (Adam's bias corrections folded in). */
static Update update_for(const Job *j, int64_t s)
{
    Update u = {j->opt, (float)j->lrs[s], (float)j->mu, (float)j->wd, (float)j->beta1,
                (float)j->beta2, 0.0f, 0.0f, (float)(j->lrs[s] * j->wd)};
    if (j->opt >= OPT_ADAM) {
        const double t = (double)(j->t + s + 1);
        const double c1 = 1.0 - pow(j->beta1, t), c2 = 1.0 - pow(j->beta2, t);
        u.step = (float)(j->lrs[s] * sqrt(c2) / c1);
        u.eps = (float)(j->eps * sqrt(c2));
    }
    return u;
}

/* Input rows per block of W1's gradient: 32 x 100 floats, 12.8 KB, stay in L1 between
 * the sgemm that writes them and the update that reads them. Only up to BLOCKED_ROWS
 * rows a batch: each block's sgemm packs dh again, which the products of small batches
 * skip (OpenBLAS's small-matrix kernels) and those of larger ones do not (at batch 512
 * the blocks made Nesterov and Adam epochs 5% slower). */
#define GRAD_BLOCK 32
/* Batches of up to SPLIT_ROWS rows split the forward pass by inputs (split_forward). */
#define SPLIT_ROWS 128
#define BLOCKED_ROWS 128

/* Phase 2 of step `s` for input rows [c0, c1): W1's gradient, from the batch's dh `dA`,
 * and update (output_update does the output layer and b1). */
static void gradients_update(const Job *j, int64_t s, int64_t rows, int64_t c0, int64_t c1,
                             const float *dA)
{
    const int64_t H = j->H, n_in = j->n_in;
    const Update u = update_for(j, s);
    if (c1 > c0) {
        float *W1 = j->W1 + c0 * H;
        if (j->opt == OPT_SGD) {
            /* plain SGD: W1 <- (1 - lr wd) W1 - lr scale X^T dh, in the sgemm itself */
            scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(c1 - c0), (int)H,
                              (int)rows, (float)(-j->lrs[s] * j->scale), j->X + c0, (int)n_in,
                              dA, (int)H, (float)(1.0 - j->lrs[s] * j->wd), W1, (int)H);
        } else {
            /* The gradient in blocks of GRAD_BLOCK input rows, each applied while it is
             * still in L1: a whole-slice G1 would be one more 157 KB array streamed out
             * and back per thread and step, beside W1 and the optimizer's state, and
             * those no longer fit the core's L2 together with the forward pass's W1. */
            float *G = j->G1 + c0 * H;
            const int64_t block = rows <= BLOCKED_ROWS ? GRAD_BLOCK : c1 - c0;
            for (int64_t b0 = c0; b0 < c1; b0 += block) {
                const int64_t b1 = b0 + block < c1 ? b0 + block : c1;
                scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(b1 - b0),
                                  (int)H, (int)rows, (float)j->scale, j->X + b0, (int)n_in,
                                  dA, (int)H, 0.0f, G, (int)H);
                update(j->W1 + b0 * H, G, j->s1[0] ? j->s1[0] + b0 * H : NULL,
                       j->s2[0] ? j->s2[0] + b0 * H : NULL, (b1 - b0) * H, &u, 1);
            }
        }
    }
}

/* The output layer's and b1's gradients and updates of step `s` (one thread). */
static void output_update(const Job *j, int64_t s, int64_t rows, const float *A, const float *Z,
                          const float *dA)
{
    const int64_t H = j->H, O = j->O;
    const Update u = update_for(j, s);
    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)H, (int)O, (int)rows, 1.0f,
                      A, (int)H, Z, (int)O, 0.0f, j->G2, (int)O);
    column_sums(dA, rows, H, j->gb1);
    column_sums(Z, rows, O, j->gb2);
    update(j->W2, j->G2, j->s1[2], j->s2[2], H * O, &u, 1);
    update(j->b1, j->gb1, j->s1[1], j->s2[1], H, &u, 0);
    update(j->b2, j->gb2, j->s1[3], j->s2[3], O, &u, 0);
}

/* Bring `bytes` from `p` towards this core's cache. */
static void prefetch(const void *p, int64_t bytes)
{
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)p + b, 0, 1);
}

/* Bring the source rows (and warp tables) this thread gathers in step `s` closer. */
static void prefetch_rows(const Job *j, int64_t s, int64_t r0, int64_t r1)
{
    const int64_t *idx = j->order + s * j->batch;
    const int64_t n_in = j->n_in, bytes = n_in * (j->x_u8 ? 1 : 4);
    const char *base = j->x_u8 ? (const char *)j->x_u8 : (const char *)j->x_f32;
    for (int64_t r = r0; r < r1; r++) {
        prefetch(base + idx[r] * bytes, bytes);
        if (j->warp_index) {
            const int64_t w = j->warp_ids[idx[r]];
            prefetch(j->warp_index + w * n_in, n_in * 2);
            prefetch(j->warp_keep + w * n_in, n_in);
        }
    }
}

/* Small batches: the inputs [c0, c1) of every row this thread gathers in step `s`. */
static void prefetch_cols(const Job *j, int64_t s, int64_t rows, int64_t c0, int64_t c1)
{
    const int64_t *idx = j->order + s * j->batch;
    const int64_t n_in = j->n_in, size = j->x_u8 ? 1 : 4;
    const char *base = j->x_u8 ? (const char *)j->x_u8 : (const char *)j->x_f32;
    if (c1 <= c0) return;
    for (int64_t r = 0; r < rows; r++) {
        prefetch(base + (idx[r] * n_in + c0) * size, (c1 - c0) * size);
        if (j->warp_index) {
            const int64_t w = j->warp_ids[idx[r]];
            prefetch(j->warp_index + w * n_in + c0, (c1 - c0) * 2);
            prefetch(j->warp_keep + w * n_in + c0, c1 - c0);
        }
    }
}

/* The team's barrier between the two phases of a step (twice a step). */
typedef struct {
    int arrived;     /* threads at the barrier in this round */
    int generation;  /* rounds completed: the futex word */
    int sleepers;    /* threads asleep on the futex, or about to be */
    int64_t busy;    /* the last step at which any thread had been preempted */
} Barrier;

/* How long a thread spins at a barrier before it sleeps: SPIN_MAX on idle cores,
 * SPIN_MIN (about GNU OpenMP's 1,000 spins here) for BUSY_STEPS steps after any thread
 * of the team found itself preempted (checked every SPIN_CHECK steps), which is how a
 * busy machine shows; see barrier_wait. */
#define SPIN_MIN 20e-6
#define SPIN_MAX 200e-6
#define SPIN_CHECK 16
#define BUSY_STEPS 256

#if OWN_BARRIER
static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Involuntary context switches of the calling thread so far. */
static long preemptions(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : 0;
}
#endif

/* Wait until all `nt` threads have arrived: spin for up to `budget` seconds, then sleep
 * on the futex.
 *
 * Why not GNU OpenMP's barrier with its spin count lowered to 1,000 (about 20 us): at
 * batch 32 a phase is shorter than a sleeping thread's wake-up on a virtual machine.
 * Once one thread slept, it came late to the next barrier, where its partner slept in
 * turn, and the two could take turns waking each other at every barrier (the likely
 * part of whole epochs at 0.38-0.44 s instead of 0.16 s in
 * epoch_time-20261129T175227Z.json; other jobs on the VM are the rest). Spinning through
 * such waits costs nothing on idle cores; on busy ones a spinning thread holds the core
 * its partner needs (a fixed 100 us spin made batch-32 epochs 1.4x slower there), so
 * the budget drops to SPIN_MIN while the thread is being preempted. */
static void barrier_wait(Barrier *b, int nt, double budget)
{
#if OWN_BARRIER
    if (nt == 1) return;
    const int gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_SEQ_CST) == nt) {
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, gen + 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
            syscall(SYS_futex, &b->generation, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    const double until = seconds_now() + budget;
    for (int i = 1;; i++) {
        if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != gen) return;
        __builtin_ia32_pause();
        if ((i & 15) == 0 && seconds_now() > until) break;
    }
    /* sleepers is raised before the generation is read again, and the last thread
     * raises the generation before it reads sleepers (all sequentially consistent):
     * one of the two sees the other, so no wake-up is lost */
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->generation, __ATOMIC_SEQ_CST) == gen)
        syscall(SYS_futex, &b->generation, FUTEX_WAIT_PRIVATE, gen, NULL, NULL, 0);
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
#else
    (void)b;
    (void)nt;
    (void)budget;
#pragma omp barrier
#endif
}

static void run(Job *j)
{
    const int T = j->threads;
    Barrier bar = {0, 0, 0, -BUSY_STEPS};
#pragma omp parallel num_threads(T)
    {
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        double budget = SPIN_MIN;
#if OWN_BARRIER
        long switches = preemptions();
#endif
        for (int64_t s = 0; s < j->n_steps; s++) {
            const int64_t start = s * j->batch;
            const int64_t rows = j->n_order - start < j->batch ? j->n_order - start : j->batch;
            const int64_t next = s + 1 < j->n_steps ? (j->n_order - start - rows < j->batch
                                                        ? j->n_order - start - rows : j->batch)
                                                     : 0;
            const int64_t c0 = j->n_in * tid / nt, c1 = j->n_in * (tid + 1) / nt;
            if (j->P) {
                split_forward(j, s, rows, c0, c1, tid);
                barrier_wait(&bar, nt, budget);
                if (next) prefetch_cols(j, s + 1, next, c0, c1);
                split_backward(j, s, rows, nt, tid, rows * tid / nt, rows * (tid + 1) / nt);
                const int64_t B = j->batch;
                gradients_update(j, s, rows, c0, c1, j->dAt + tid * B * j->H);
                barrier_wait(&bar, nt, budget);
                /* after the barrier: the other threads' split_backward read b1 and W2;
                 * they read them next after the next step's first barrier */
                if (tid == nt - 1)
                    output_update(j, s, rows, j->At + tid * B * j->H, j->Zt + tid * B * j->O,
                                  j->dAt + tid * B * j->H);
            } else {
                forward_backward(j, s, rows, rows * tid / nt, rows * (tid + 1) / nt);
                barrier_wait(&bar, nt, budget);
                /* issued before the products, so the loads overlap them */
                if (next) prefetch_rows(j, s + 1, next * tid / nt, next * (tid + 1) / nt);
                gradients_update(j, s, rows, c0, c1, j->dA);
                if (tid == nt - 1) output_update(j, s, rows, j->A, j->Z, j->dA);
                barrier_wait(&bar, nt, budget);
            }
#if OWN_BARRIER
            if (s % SPIN_CHECK == SPIN_CHECK - 1) {
                const long now = preemptions();
                if (now != switches) __atomic_store_n(&bar.busy, s, __ATOMIC_RELAXED);
                switches = now;
                budget = s - __atomic_load_n(&bar.busy, __ATOMIC_RELAXED) < BUSY_STEPS
                             ? SPIN_MIN : SPIN_MAX;
            }
#endif
        }
    }
}

/* --- Python glue -------------------------------------------------------------------- */

/* A buffer of at least `nbytes` (C-contiguous), or none for None when `optional`. */
static int take(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t nbytes, int optional,
                const char *name)
{
    view->obj = NULL;
    view->buf = NULL;
    if (obj == Py_None && optional) return 0;
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->len < nbytes) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, needs %zd", name, view->len, nbytes);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

#define N_VIEWS 20

static PyObject *train_steps(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"x", "y", "sample_weight", "order", "learning_rates", "shifts",
                            "warp_index", "warp_keep", "warp_ids", "W1", "b1", "W2", "b2",
                            "state1", "state2", "losses", "hits", "batch_size", "side",
                            "activation", "loss", "optimizer", "threads", "scale",
                            "label_smoothing", "momentum", "weight_decay", "beta1", "beta2",
                            "eps", "t", NULL};
    PyObject *o[17];
    Job j;
    memset(&j, 0, sizeof j);
    long long batch, side, t;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OOOOOOOOOOOOOOOOOLLiiiidddddddL", names, &o[0], &o[1], &o[2], &o[3],
            &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13], &o[14],
            &o[15], &o[16], &batch, &side, &j.act, &j.loss, &j.opt, &j.threads, &j.scale,
            &j.smoothing, &j.mu, &j.wd, &j.beta1, &j.beta2, &j.eps, &t))
        return NULL;
    if (!PyTuple_Check(o[13]) || !PyTuple_Check(o[14]) || PyTuple_GET_SIZE(o[13]) != 4 ||
        PyTuple_GET_SIZE(o[14]) != 4) {
        PyErr_SetString(PyExc_TypeError, "state1 and state2 must be tuples of 4 (or None)");
        return NULL;
    }
    Py_buffer v[N_VIEWS];
    for (int i = 0; i < N_VIEWS; i++) v[i].obj = NULL;
    PyObject *result = NULL;
    void *work = NULL;
    Py_buffer xv, W1v, W2v;
    xv.obj = W1v.obj = W2v.obj = NULL;
    /* shapes come from the parameters: W1 (n_in, H), W2 (H, O) */
    if (PyObject_GetBuffer(o[9], &W1v, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_ND) < 0 ||
        PyObject_GetBuffer(o[11], &W2v, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_ND) < 0 ||
        W1v.ndim != 2 || W2v.ndim != 2 || W1v.itemsize != 4 || W2v.itemsize != 4 ||
        W1v.shape[1] != W2v.shape[0]) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "W1, W2 must be 2-d float32");
        goto done;
    }
    j.n_in = W1v.shape[0];
    j.H = W1v.shape[1];
    j.O = W2v.shape[1];
    j.W1 = W1v.buf;
    j.W2 = W2v.buf;
    if (PyObject_GetBuffer(o[0], &xv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    const int64_t n = xv.len / xv.itemsize / j.n_in;
    if (xv.itemsize == 1) j.x_u8 = xv.buf;
    else if (xv.itemsize == 4 && xv.format && strcmp(xv.format, "f") == 0) j.x_f32 = xv.buf;
    else {
        PyErr_SetString(PyExc_ValueError, "x must be uint8 or float32");
        goto done;
    }
    j.batch = batch;
    j.side = side;
    j.t = t;
    /* order and learning rates set the call's size */
    if (take(o[3], &v[0], 0, 0, 0, "order") < 0 || take(o[4], &v[1], 0, 0, 0, "learning_rates") < 0)
        goto done;
    j.n_order = v[0].len / 8;
    j.n_steps = v[1].len / 8;
    if (batch < 1 || j.n_steps != (j.n_order + batch - 1) / batch || j.threads < 1) {
        PyErr_SetString(PyExc_ValueError, "one learning rate per step, batch and threads >= 1");
        goto done;
    }
    const Py_ssize_t H = j.H, O = j.O, n_in = j.n_in;
    if (take(o[1], &v[2], 0, n * 8, 0, "y") < 0 ||
        take(o[2], &v[3], 0, n * 4, 1, "sample_weight") < 0 ||
        take(o[5], &v[4], 0, j.n_steps * 8, 1, "shifts") < 0 ||
        take(o[6], &v[5], 0, n_in * 2, 1, "warp_index") < 0 ||
        take(o[7], &v[6], 0, n_in, 1, "warp_keep") < 0 ||
        take(o[8], &v[7], 0, n * 8, 1, "warp_ids") < 0 ||
        take(o[10], &v[8], 1, H * 4, 0, "b1") < 0 ||
        take(o[12], &v[9], 1, O * 4, 0, "b2") < 0 ||
        take(o[15], &v[10], 1, j.n_order * 4, 0, "losses") < 0 ||
        take(o[16], &v[11], 1, j.n_order, 0, "hits") < 0)
        goto done;
    j.y = v[2].buf;
    j.sw = v[3].buf;
    j.shifts = v[4].buf;
    j.warp_index = v[5].buf;
    j.warp_keep = v[6].buf;
    j.warp_ids = v[7].buf;
    j.b1 = v[8].buf;
    j.b2 = v[9].buf;
    j.losses = v[10].buf;
    j.hits = v[11].buf;
    j.order = v[0].buf;
    j.lrs = v[1].buf;
    const Py_ssize_t sizes[4] = {n_in * H, H, H * O, O};
    for (int p = 0; p < 4; p++) {
        if (take(PyTuple_GET_ITEM(o[13], p), &v[12 + p], 1, sizes[p] * 4, 1, "state1") < 0)
            goto done;
        j.s1[p] = v[12 + p].buf;
    }
    for (int p = 0; p < 4; p++) {
        if (take(PyTuple_GET_ITEM(o[14], p), &v[16 + p], 1, sizes[p] * 4, 1, "state2") < 0)
            goto done;
        j.s2[p] = v[16 + p].buf;
    }
    if (j.opt != OPT_SGD && !j.s1[0]) {
        PyErr_SetString(PyExc_ValueError, "this optimizer needs its state buffers");
        goto done;
    }
    for (int64_t i = 0; i < j.n_order; i++) {
        const int64_t k = ((const int64_t *)j.order)[i];
        if (k < 0 || k >= n) {
            PyErr_SetString(PyExc_IndexError, "order holds a sample number out of range");
            goto done;
        }
    }
    /* workspace: X (B, n_in), A, dA (B, H), Z (B, O), G1 (n_in, H), G2 (H, O), gb1, gb2;
     * for small batches P, A, dA (T, B, H) and Z (T, B, O) */
    const size_t B = (size_t)batch;
    const size_t T = (size_t)j.threads;
    const int split = batch <= SPLIT_ROWS;
    const size_t floats = B * n_in + 2 * B * H + B * O + n_in * H + H * O + H + O + 64 +
                          (split ? T * B * (3 * H + O) : 0);
    work = calloc(floats, sizeof(float));
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    float *w = work;
    j.X = w; w += B * n_in;
    j.A = w; w += B * H;
    j.dA = w; w += B * H;
    j.Z = w; w += B * O;
    j.G1 = w; w += n_in * H;
    j.G2 = w; w += H * O;
    j.gb1 = w; w += H;
    j.gb2 = w; w += O + 64;
    if (split) {
        j.P = w; w += T * B * H;
        j.At = w; w += T * B * H;
        j.dAt = w; w += T * B * H;
        j.Zt = w;
    }
    /* again each call: threadpoolctl, restoring limits it found, may have raised it */
    scipy_openblas_set_num_threads(1);
    Py_BEGIN_ALLOW_THREADS
    run(&j);
    Py_END_ALLOW_THREADS
    result = PyLong_FromLongLong(j.t + (j.opt >= OPT_ADAM ? j.n_steps : 0));
done:
    free(work);
    for (int i = 0; i < N_VIEWS; i++)
        if (v[i].obj) PyBuffer_Release(&v[i]);
    if (xv.obj) PyBuffer_Release(&xv);
    if (W1v.obj) PyBuffer_Release(&W1v);
    if (W2v.obj) PyBuffer_Release(&W2v);
    return result;
}

static PyObject *max_threads(PyObject *self, PyObject *noargs)
{
    return PyLong_FromLong(omp_get_max_threads());
}

static PyObject *blas_config(PyObject *self, PyObject *noargs)
{
    return PyUnicode_FromString(scipy_openblas_get_config());
}

static PyMethodDef methods[] = {
    {"train_steps", (PyCFunction)(void (*)(void))train_steps, METH_VARARGS | METH_KEYWORDS,
     "Train consecutive minibatch steps in place; returns Adam's new step count."},
    {"max_threads", max_threads, METH_NOARGS, "OpenMP's default team size."},
    {"blas_config", blas_config, METH_NOARGS, "The linked OpenBLAS's configuration string."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_epoch",
                                    "Compiled training steps (see epoch.c).", -1, methods};

PyMODINIT_FUNC PyInit__epoch(void)
{
    /* the parallelism is ours: OpenBLAS runs each call on the calling thread */
    scipy_openblas_set_num_threads(1);
    return PyModule_Create(&module);
}
