/* SiLU(GroupNorm(x)·(1 + scale) + shift) forward and backward over float32 or bfloat16 maps (Wu & He 2018,
 * Eq. 1-2; ADM's adaptive group normalisation), channels_last [N, L, C] or contiguous [N, C, L].
 *
 * Part of genzoo (Apache-2.0). Compiled at first use by genzoo/nets/cpu_kernels.py (plain C, no torch
 * headers) and called through ctypes on the tensors' memory.
 *
 * Per (sample, channel) the normalisation is y = (x − μ_g)·a_c + o_c with a_c = γ_c(1 + s_c)·rstd_g and
 * o_c = β_c(1 + s_c) + t_c, so the forward is two passes over a sample (statistics, then the output) and
 * the backward two (the sums Σdy and Σdy·(x − μ), then dx): nothing but μ and rstd per (sample, group)
 * is saved, the SiLU's input is recomputed (the backward keeps dy of the sample, or group, it works on in a
 * float32 buffer of its own between its two passes, where it stays in cache). Math is float32 per element; sums are taken in float32 over
 * blocks of rows and added in double, around a per-channel shift (the first value), so neither the
 * variance nor the gradient sums cancel for offset inputs. exp is a vectorisable Cephes-style
 * polynomial (≈ 2 ulp), so gcc -O3 vectorises every inner loop.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64 /* rows summed in float32 before the double accumulator */
#define INLINE static inline __attribute__((always_inline))

/* for (i = start; i < end; i++) BODY over one row (the channels of a pixel, or the pixels of a channel).
 * gcc vectorises bfloat16 rows 32 elements at a time and runs a shorter row scalar; a ``narrow`` row
 * (fewer than 32 elements) is vectorised 16 at a time instead. PRAGMA adds clauses (a reduction). */
#define ROW_LOOP(narrow, PRAGMA_NARROW, PRAGMA_WIDE, i, start, end, ...) \
    do {                                                                  \
        if (narrow) {                                                     \
            _Pragma(PRAGMA_NARROW) for (int64_t i = (start); i < (end); i++) __VA_ARGS__ \
        } else {                                                          \
            _Pragma(PRAGMA_WIDE) for (int64_t i = (start); i < (end); i++) __VA_ARGS__   \
        }                                                                 \
    } while (0)
#define ROW(narrow, i, start, end, ...) ROW_LOOP(narrow, "omp simd simdlen(16)", "omp simd", i, start, end, __VA_ARGS__)

INLINE float bf16_load(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

INLINE uint16_t bf16_store(float f) { /* round to nearest even; NaN stays a (quiet) NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : rounded);
}

INLINE float load(const void *p, int64_t i, int bf) {
    return bf ? bf16_load(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

INLINE void store(void *p, int64_t i, float v, int bf) {
    if (bf)
        ((uint16_t *)p)[i] = bf16_store(v);
    else
        ((float *)p)[i] = v;
}

INLINE float exp_poly(float x) { /* e^x for x in [-87.3, 88.3] (clamped): 2^k · p(r), |r| ≤ ln2/2 */
    x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

INLINE float sigmoid(float y) { return 1.0f / (1.0f + exp_poly(-y)); }

/* dL/dy from dL/d SiLU(y) (or the gradient itself without the SiLU). */
INLINE float silu_grad(float g, float y, int silu) {
    if (!silu)
        return g;
    float s = sigmoid(y);
    return g * s * (1.0f + y * (1.0f - s));
}

/* Per-channel coefficients of one sample: centre μ_c (its group's mean), a_c and o_c (see the top). */
static void coefficients(int64_t n, int64_t C, int64_t G, const float *gamma, const float *beta,
                         const float *scale, const float *shift, const float *mean, const float *rstd,
                         float *centre, float *a, float *o) {
    int64_t D = C / G;
    for (int64_t c = 0; c < C; c++) {
        double gain = gamma ? gamma[c] : 1.0, offset = beta ? beta[c] : 0.0;
        if (scale) {
            double f = 1.0 + scale[n * C + c];
            gain *= f;
            offset = offset * f + shift[n * C + c];
        }
        centre[c] = mean[n * G + c / D];
        a[c] = (float)(gain * rstd[n * G + c / D]);
        o[c] = (float)offset;
    }
}

/* Group mean and 1/sqrt(var + eps) from per-channel sums of (x − shift_c) and its square over L values
 * each: the group variance combines the channels' centred second moments with the spread of their
 * means (Chan et al.), all in double. */
static void group_moments(int64_t G, int64_t D, int64_t L, const double *sum, const double *sq,
                          const float *shift, double eps, float *mean, float *rstd) {
    for (int64_t g = 0; g < G; g++) {
        double mean_g = 0.0, m2 = 0.0, spread = 0.0;
        for (int64_t j = g * D; j < (g + 1) * D; j++)
            mean_g += shift[j] + sum[j] / L;
        mean_g /= D;
        for (int64_t j = g * D; j < (g + 1) * D; j++) {
            double mean_c = shift[j] + sum[j] / L;
            m2 += sq[j] - sum[j] * sum[j] / L;
            spread += (mean_c - mean_g) * (mean_c - mean_g);
        }
        double var = (m2 > 0.0 ? m2 : 0.0) / (double)(L * D) + spread / D;
        mean[g] = (float)mean_g;
        rstd[g] = (float)(1.0 / sqrt(var + eps));
    }
}

/* ------------------------------------------------------------------ channels_last: [N, L, C] */

INLINE void cl_forward_sample(const void *x, void *out, int bf, int narrow, int64_t n, int64_t C, int64_t L, int64_t G,
                              const float *gamma, const float *beta, const float *scale, const float *shift,
                              double eps, int silu, float *mean, float *rstd, float *work, double *dwork) {
    float *first = work, *fs = work + C, *fq = work + 2 * C, *centre = work + 3 * C, *a = work + 4 * C,
          *o = work + 5 * C;
    double *sum = dwork, *sq = dwork + C;
    const int64_t base = n * L * C;
    for (int64_t c = 0; c < C; c++) {
        first[c] = load(x, base + c, bf);
        sum[c] = sq[c] = 0.0;
    }
    for (int64_t l0 = 0; l0 < L; l0 += BLOCK) {
        int64_t l1 = l0 + BLOCK < L ? l0 + BLOCK : L;
        for (int64_t c = 0; c < C; c++)
            fs[c] = fq[c] = 0.0f;
        for (int64_t l = l0; l < l1; l++) {
            const int64_t row = base + l * C;
            ROW(narrow, c, 0, C, {
                float d = load(x, row + c, bf) - first[c];
                fs[c] += d;
                fq[c] += d * d;
            });
        }
        for (int64_t c = 0; c < C; c++) {
            sum[c] += fs[c];
            sq[c] += fq[c];
        }
    }
    group_moments(G, C / G, L, sum, sq, first, eps, mean + n * G, rstd + n * G);
    coefficients(n, C, G, gamma, beta, scale, shift, mean, rstd, centre, a, o);
    for (int64_t l = 0; l < L; l++) {
        const int64_t row = base + l * C;
        ROW(narrow, c, 0, C, {
            float y = (load(x, row + c, bf) - centre[c]) * a[c] + o[c];
            store(out, row + c, silu ? y * sigmoid(y) : y, bf);
        });
    }
}

INLINE void cl_backward_sample(const void *x, const void *grad, void *dx, int bf, int narrow, int64_t n, int64_t C,
                               int64_t L, int64_t G, const float *gamma, const float *beta, const float *scale,
                               const float *shift, int silu, const float *mean, const float *rstd,
                               float *s1_out, float *p_out, float *work, double *dwork, float *dys) {
    float *fs = work, *fp = work + C, *centre = work + 2 * C, *a = work + 3 * C, *o = work + 4 * C,
          *k1 = work + 5 * C, *k0 = work + 6 * C;
    double *s1 = dwork, *sp = dwork + C;
    const int64_t base = n * L * C, D = C / G;
    coefficients(n, C, G, gamma, beta, scale, shift, mean, rstd, centre, a, o);
    for (int64_t c = 0; c < C; c++)
        s1[c] = sp[c] = 0.0;
    for (int64_t l0 = 0; l0 < L; l0 += BLOCK) {
        int64_t l1 = l0 + BLOCK < L ? l0 + BLOCK : L;
        for (int64_t c = 0; c < C; c++)
            fs[c] = fp[c] = 0.0f;
        for (int64_t l = l0; l < l1; l++) {
            const int64_t row = base + l * C;
            ROW(narrow, c, 0, C, {
                float xc = load(x, row + c, bf) - centre[c];
                float dy = silu_grad(load(grad, row + c, bf), xc * a[c] + o[c], silu);
                dys[l * C + c] = dy;
                fs[c] += dy;
                fp[c] += dy * xc;
            });
        }
        for (int64_t c = 0; c < C; c++) {
            s1[c] += fs[c];
            sp[c] += fp[c];
        }
    }
    /* dx = rstd·(gain·dy − m1 − x̂·m2), m1 and m2 the group means of gain·dy and gain·dy·x̂ */
    for (int64_t g = 0; g < G; g++) {
        double r = rstd[n * G + g], m1 = 0.0, m2 = 0.0;
        for (int64_t c = g * D; c < (g + 1) * D; c++) {
            double gain = a[c] / r;
            m1 += gain * s1[c];
            m2 += gain * sp[c] * r;
        }
        m1 /= (double)(L * D);
        m2 /= (double)(L * D);
        for (int64_t c = g * D; c < (g + 1) * D; c++) {
            k1[c] = (float)(-r * r * m2);
            k0[c] = (float)(-r * m1);
            s1_out[n * C + c] = (float)s1[c];
            p_out[n * C + c] = (float)(sp[c] * r);
        }
    }
    for (int64_t l = 0; l < L; l++) {
        const int64_t row = base + l * C;
        ROW(narrow, c, 0, C, {
            float xc = load(x, row + c, bf) - centre[c];
            store(dx, row + c, a[c] * dys[l * C + c] + k1[c] * xc + k0[c], bf);
        });
    }
}

/* ------------------------------------------------------------------ contiguous: [N, C, L] */

INLINE void nc_forward_group(const void *x, void *out, int bf, int narrow, int64_t n, int64_t g, int64_t C, int64_t L,
                             int64_t G, const float *gamma, const float *beta, const float *scale,
                             const float *shift, double eps, int silu, float *mean, float *rstd) {
    const int64_t D = C / G, c0 = g * D;
    double sum[D], sq[D];
    float first[D];
    for (int64_t j = 0; j < D; j++) {
        const int64_t base = (n * C + c0 + j) * L;
        const float f = load(x, base, bf);
        double s = 0.0, q = 0.0;
        for (int64_t l0 = 0; l0 < L; l0 += 16 * BLOCK) {
            int64_t l1 = l0 + 16 * BLOCK < L ? l0 + 16 * BLOCK : L;
            float bs = 0.0f, bq = 0.0f;
            ROW_LOOP(narrow, "omp simd simdlen(16) reduction(+ : bs, bq)", "omp simd reduction(+ : bs, bq)", l, l0,
                     l1, {
                         float d = load(x, base + l, bf) - f;
                         bs += d;
                         bq += d * d;
                     });
            s += bs;
            q += bq;
        }
        first[j] = f;
        sum[j] = s;
        sq[j] = q;
    }
    group_moments(1, D, L, sum, sq, first, eps, mean + n * G + g, rstd + n * G + g);
    for (int64_t j = 0; j < D; j++) {
        const int64_t c = c0 + j, base = (n * C + c) * L;
        double gain = gamma ? gamma[c] : 1.0, offset = beta ? beta[c] : 0.0;
        if (scale) {
            double f = 1.0 + scale[n * C + c];
            gain *= f;
            offset = offset * f + shift[n * C + c];
        }
        const float mu = mean[n * G + g], a = (float)(gain * rstd[n * G + g]), o = (float)offset;
        ROW(narrow, l, 0, L, {
            float y = (load(x, base + l, bf) - mu) * a + o;
            store(out, base + l, silu ? y * sigmoid(y) : y, bf);
        });
    }
}

INLINE void nc_backward_group(const void *x, const void *grad, void *dx, int bf, int narrow, int64_t n, int64_t g,
                              int64_t C, int64_t L, int64_t G, const float *gamma, const float *beta,
                              const float *scale, const float *shift, int silu, const float *mean,
                              const float *rstd, float *s1_out, float *p_out, float *dys) {
    const int64_t D = C / G, c0 = g * D;
    const double r = rstd[n * G + g];
    const float mu = mean[n * G + g];
    float a[D];
    double s1[D], sp[D], m1 = 0.0, m2 = 0.0;
    for (int64_t j = 0; j < D; j++) {
        const int64_t c = c0 + j, base = (n * C + c) * L;
        double gain = gamma ? gamma[c] : 1.0, offset = beta ? beta[c] : 0.0;
        if (scale) {
            double f = 1.0 + scale[n * C + c];
            gain *= f;
            offset = offset * f + shift[n * C + c];
        }
        const float aj = (float)(gain * r), oj = (float)offset;
        a[j] = aj;
        double s = 0.0, p = 0.0;
        for (int64_t l0 = 0; l0 < L; l0 += 16 * BLOCK) {
            int64_t l1 = l0 + 16 * BLOCK < L ? l0 + 16 * BLOCK : L;
            float bs = 0.0f, bp = 0.0f;
            ROW_LOOP(narrow, "omp simd simdlen(16) reduction(+ : bs, bp)", "omp simd reduction(+ : bs, bp)", l, l0,
                     l1, {
                         float xc = load(x, base + l, bf) - mu;
                         float dy = silu_grad(load(grad, base + l, bf), xc * aj + oj, silu);
                         dys[j * L + l] = dy;
                         bs += dy;
                         bp += dy * xc;
                     });
            s += bs;
            p += bp;
        }
        s1[j] = s;
        sp[j] = p;
        m1 += gain * s;
        m2 += gain * p * r;
    }
    m1 /= (double)(L * D);
    m2 /= (double)(L * D);
    const float k1 = (float)(-r * r * m2), k0 = (float)(-r * m1);
    for (int64_t j = 0; j < D; j++) {
        const int64_t c = c0 + j, base = (n * C + c) * L;
        const float aj = a[j];
        s1_out[n * C + c] = (float)s1[j];
        p_out[n * C + c] = (float)(sp[j] * r);
        ROW(narrow, l, 0, L, { store(dx, base + l, aj * dys[j * L + l] + k1 * (load(x, base + l, bf) - mu) + k0, bf); });
    }
}

/* ------------------------------------------------------------------ entry points
 * bf: 0 float32, 1 bfloat16 (x, grad, out and dx alike); channels_last: 1 for [N, L, C], 0 for
 * [N, C, L]. gamma, beta: [C] or NULL; scale, shift: [N, C] or both NULL; mean, rstd: [N, G];
 * s1 = Σ dy and p = Σ dy·x̂ per (sample, channel): [N, C]. All float32. Returns 0, or 1 when out of
 * memory. */

/* EXPR compiled four times, with BF and NARROW constants for the runtime ``bf`` and ``narrow``. */
#define VARIANTS(EXPR)                         \
    do {                                       \
        if (bf && narrow) {                    \
            enum { BF = 1, NARROW = 1 };       \
            EXPR;                              \
        } else if (bf) {                       \
            enum { BF = 1, NARROW = 0 };       \
            EXPR;                              \
        } else if (narrow) {                   \
            enum { BF = 0, NARROW = 1 };       \
            EXPR;                              \
        } else {                               \
            enum { BF = 0, NARROW = 0 };       \
            EXPR;                              \
        }                                      \
    } while (0)

int gn_silu_forward(const void *x, void *out, int bf, int channels_last, int64_t N, int64_t C, int64_t L,
                    int64_t G, const float *gamma, const float *beta, const float *scale, const float *shift,
                    double eps, int silu, float *mean, float *rstd, int threads) {
    int failed = 0, narrow = (channels_last ? C : L) < 32;
    if (channels_last) {
#pragma omp parallel num_threads(threads) if (threads > 1)
        {
            float *work = malloc(6 * C * sizeof(float));
            double *dwork = malloc(2 * C * sizeof(double));
            if (!work || !dwork) {
#pragma omp atomic write
                failed = 1;
            } else {
#pragma omp for schedule(static)
                for (int64_t n = 0; n < N; n++)
                    VARIANTS(cl_forward_sample(x, out, BF, NARROW, n, C, L, G, gamma, beta, scale, shift, eps, silu,
                                               mean, rstd, work, dwork));
            }
            free(work);
            free(dwork);
        }
        return failed;
    }
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t i = 0; i < N * G; i++)
        VARIANTS(nc_forward_group(x, out, BF, NARROW, i / G, i % G, C, L, G, gamma, beta, scale, shift, eps, silu, mean,
                                  rstd));
    return 0;
}

int gn_silu_backward(const void *x, const void *grad, void *dx, int bf, int channels_last, int64_t N, int64_t C,
                     int64_t L, int64_t G, const float *gamma, const float *beta, const float *scale,
                     const float *shift, int silu, const float *mean, const float *rstd, float *s1, float *p,
                     int threads) {
    int failed = 0, narrow = (channels_last ? C : L) < 32;
    if (channels_last) {
#pragma omp parallel num_threads(threads) if (threads > 1)
        {
            float *work = malloc(7 * C * sizeof(float));
            double *dwork = malloc(2 * C * sizeof(double));
            float *dys = malloc(L * C * sizeof(float));
            if (!work || !dwork || !dys) {
#pragma omp atomic write
                failed = 1;
            } else {
#pragma omp for schedule(static)
                for (int64_t n = 0; n < N; n++)
                    VARIANTS(cl_backward_sample(x, grad, dx, BF, NARROW, n, C, L, G, gamma, beta, scale, shift, silu, mean,
                                                rstd, s1, p, work, dwork, dys));
            }
            free(dys);
            free(work);
            free(dwork);
        }
        return failed;
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *dys = malloc(C / G * L * sizeof(float));
        if (!dys) {
#pragma omp atomic write
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < N * G; i++)
                VARIANTS(nc_backward_group(x, grad, dx, BF, NARROW, i / G, i % G, C, L, G, gamma, beta, scale, shift, silu,
                                           mean, rstd, s1, p, dys));
        }
        free(dys);
    }
    return failed;
}
