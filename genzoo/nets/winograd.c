/* The transforms of Winograd's F(4×4, 3×3) convolution (Lavin & Gray 2016, eq. 8 and 12) on channels_last
 * maps, float32 and float64, for genzoo/nets/winograd.py (which keeps the 36 tile-position products,
 * [tiles, C_in] × [C_in, C_out], in torch's matrix multiplies).
 *
 * Part of genzoo (Apache-2.0). Compiled at first use by genzoo/nets/cpu_kernels.py (plain C, no torch
 * headers) and called through ctypes on the tensors' memory.
 *
 * The matrices are those of winograd_matrices(4) in winograd.py (interpolation points 0, 1, −1, 2, −2, ∞,
 * Bᵀ's rows scaled to integers), written out without their zeros:
 *   Bᵀ d: 4d0 − 5d2 + d4, 4(d1 + d2) − (d3 + d4), 4(d2 − d1) + (d3 − d4), 2(d3 − d1) + (d4 − d2),
 *         2(d1 − d3) + (d4 − d2), 4d1 − 5d3 + d5
 *   Aᵀ m: m0 + m1 + m2 + m3 + m4, (m1 − m2) + 2(m3 − m4), (m1 + m2) + 4(m3 + m4), (m1 − m2) + 8(m3 − m4) + m5
 *   A y (the adjoint of Aᵀ, for the weight gradient): y0, y0 + y1 + y2 + y3, y0 − y1 + y2 − y3,
 *         y0 + 2y1 + 4y2 + 8y3, y0 − 2y1 + 4y2 − 8y3, y3
 * Every 2-D transform is the 1-D one over the tile's columns, then over its rows. The channels are the
 * vectorised inner loop (contiguous in an NHWC map and in each [tiles, C] plane); the map's zero padding
 * and the edge tiles are handled by pointing the rows outside the map at a zero row (input) or a scratch
 * row (output), so no padded copy is made. Tiles are shared among OpenMP threads by rows of tiles.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

#define BT6(T, d0, d1, d2, d3, d4, d5, o)            \
    do {                                               \
        T s13_ = (d3) - (d1), s24_ = (d4) - (d2);      \
        (o)[0] = 4 * (d0) - 5 * (d2) + (d4);           \
        (o)[1] = 4 * ((d1) + (d2)) - ((d3) + (d4));    \
        (o)[2] = 4 * ((d2) - (d1)) + ((d3) - (d4));    \
        (o)[3] = 2 * s13_ + s24_;                      \
        (o)[4] = s24_ - 2 * s13_;                      \
        (o)[5] = 4 * (d1) - 5 * (d3) + (d5);           \
    } while (0)

#define AT4(T, m0, m1, m2, m3, m4, m5, o)             \
    do {                                               \
        T p12_ = (m1) + (m2), d12_ = (m1) - (m2);      \
        T p34_ = (m3) + (m4), d34_ = (m3) - (m4);      \
        (o)[0] = (m0) + p12_ + p34_;                   \
        (o)[1] = d12_ + 2 * d34_;                      \
        (o)[2] = p12_ + 4 * p34_;                      \
        (o)[3] = d12_ + 8 * d34_ + (m5);               \
    } while (0)

#define A6(T, y0, y1, y2, y3, o)                      \
    do {                                               \
        T e_ = (y0) + (y2), f_ = (y1) + (y3);          \
        T g_ = (y0) + 4 * (y2), h_ = 2 * (y1) + 8 * (y3); \
        (o)[0] = (y0);                                 \
        (o)[1] = e_ + f_;                              \
        (o)[2] = e_ - f_;                              \
        (o)[3] = g_ + h_;                              \
        (o)[4] = g_ - h_;                              \
        (o)[5] = (y3);                                 \
    } while (0)

/* 64-byte vectors (gcc lowers them to the CPU's widest where narrower); loads and stores through memcpy,
 * so the rows need no alignment */
typedef float vf32 __attribute__((vector_size(64)));
typedef double vf64 __attribute__((vector_size(64)));
#define LANES(V, T) ((int64_t)(sizeof(V) / sizeof(T)))
#define VLOAD(V, p) ({ V v_; memcpy(&v_, (p), sizeof(V)); v_; })
#define VSTORE(V, p, x) do { V s_ = (x); memcpy((p), &s_, sizeof(V)); } while (0)
#define SLOAD(V, p) (*(p))
#define SSTORE(V, p, x) (*(p) = (x))

/* one channel (block) k of a tile: the 1-D transform over the columns, then over the rows */
#define INPUT_AT(V, LD, ST, k)                                                                          \
    do {                                                                                                 \
        V t_[6][6], o_[6];                                                                               \
        for (int j = 0; j < 6; j++) {                                                                    \
            BT6(V, LD(V, rows[j] + k), LD(V, rows[6 + j] + k), LD(V, rows[12 + j] + k),                  \
                LD(V, rows[18 + j] + k), LD(V, rows[24 + j] + k), LD(V, rows[30 + j] + k), o_);          \
            for (int i = 0; i < 6; i++)                                                                  \
                t_[i][j] = o_[i];                                                                        \
        }                                                                                                \
        for (int i = 0; i < 6; i++) {                                                                    \
            BT6(V, t_[i][0], t_[i][1], t_[i][2], t_[i][3], t_[i][4], t_[i][5], o_);                      \
            for (int j = 0; j < 6; j++)                                                                  \
                ST(V, out + (i * 6 + j) * plane + k, o_[j]);                                             \
        }                                                                                                \
    } while (0)

#define OUTPUT_AT(V, LD, ST, k)                                                                         \
    do {                                                                                                 \
        V t_[4][6], o_[4];                                                                               \
        for (int j = 0; j < 6; j++) {                                                                    \
            AT4(V, LD(V, in + j * plane + k), LD(V, in + (6 + j) * plane + k),                           \
                LD(V, in + (12 + j) * plane + k), LD(V, in + (18 + j) * plane + k),                      \
                LD(V, in + (24 + j) * plane + k), LD(V, in + (30 + j) * plane + k), o_);                 \
            for (int i = 0; i < 4; i++)                                                                  \
                t_[i][j] = o_[i];                                                                        \
        }                                                                                                \
        V b_ = LD(V, add + k);                                                                           \
        for (int i = 0; i < 4; i++) {                                                                    \
            AT4(V, t_[i][0], t_[i][1], t_[i][2], t_[i][3], t_[i][4], t_[i][5], o_);                      \
            for (int j = 0; j < 4; j++)                                                                  \
                ST(V, rows[i * 4 + j] + k, o_[j] + b_);                                                  \
        }                                                                                                \
    } while (0)

#define ADJOINT_AT(V, LD, ST, k)                                                                        \
    do {                                                                                                 \
        V t_[6][4], o_[6];                                                                               \
        for (int j = 0; j < 4; j++) {                                                                    \
            A6(V, LD(V, rows[j] + k), LD(V, rows[4 + j] + k), LD(V, rows[8 + j] + k),                    \
               LD(V, rows[12 + j] + k), o_);                                                             \
            for (int i = 0; i < 6; i++)                                                                  \
                t_[i][j] = o_[i];                                                                        \
        }                                                                                                \
        for (int i = 0; i < 6; i++) {                                                                    \
            A6(V, t_[i][0], t_[i][1], t_[i][2], t_[i][3], o_);                                           \
            for (int j = 0; j < 6; j++)                                                                  \
                ST(V, out + (i * 6 + j) * plane + k, o_[j]);                                             \
        }                                                                                                \
    } while (0)

/* the channels of one tile: whole vectors, then the rest one at a time */
#define OVER_CHANNELS(V, T, AT)                                                                         \
    do {                                                                                                 \
        int64_t k = 0;                                                                                   \
        for (; k + LANES(V, T) <= c; k += LANES(V, T))                                                   \
            AT(V, VLOAD, VSTORE, k);                                                                     \
        for (; k < c; k++)                                                                               \
            AT(T, SLOAD, SSTORE, k);                                                                     \
    } while (0)

/* rows[i·k + j] = the channel row of pixel (y0 + i, x0 + j) of sample b in the [N, H, W, C] map at base,
 * or outside where that pixel lies off the map (a zero row to read, a scratch row to write). */
#define TILE_ROWS(rows, base, outside, k, y0, x0)                                                        \
    for (int i_ = 0; i_ < (k); i_++)                                                                     \
        for (int j_ = 0; j_ < (k); j_++) {                                                               \
            const int64_t yy_ = (y0) + i_, xx_ = (x0) + j_;                                              \
            (rows)[i_ * (k) + j_] = (yy_ >= 0 && yy_ < h && xx_ >= 0 && xx_ < w)                         \
                                        ? (base) + ((b * h + yy_) * w + xx_) * c : (outside);            \
        }

/* The kernels for one element type T (vector type V) with suffix S:
 *   wg_input_S: x [N, H, W, C] → v [36, tiles, C], v[i·6 + j] = (Bᵀ d B)[i][j] of the 6×6 window at
 *     (4·ty − 1, 4·tx − 1) (zero outside the map), tiles ordered (n, ty, tx).
 *   wg_output_S: m [36, tiles, C] → y [N, H, W, C], the 4×4 block at (4·ty, 4·tx) = Aᵀ m A + bias (bias may
 *     be NULL), the parts of edge tiles outside the map dropped.
 *   wg_output_adjoint_S: dy [N, H, W, C] → dm [36, tiles, C] = A dy Aᵀ (the transpose of wg_output's
 *     transform; dy is zero outside the map).
 * The 36 planes of v, m and dm lie ``plane`` elements apart (rows of C contiguous within a plane): the
 * caller pads them, since at a power-of-two distance the 36 streams of a tile fall into the same cache
 * sets. Each returns 0, or 1 where a work row could not be allocated. */
#define DEFINE_KERNELS(T, V, S)                                                                         \
    int wg_input_##S(const T *x, T *v, int64_t n, int64_t h, int64_t w, int64_t c, int64_t th,           \
                     int64_t tw, int64_t plane, int threads) {                                           \
        T *zero = calloc((size_t)c, sizeof(T));                                                          \
        if (!zero)                                                                                       \
            return 1;                                                                                    \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                \
        for (int64_t row = 0; row < n * th; row++) {                                                     \
            const int64_t b = row / th, ty = row % th;                                                   \
            const T *rows[36];                                                                           \
            for (int64_t tx = 0; tx < tw; tx++) {                                                        \
                TILE_ROWS(rows, x, zero, 6, 4 * ty - 1, 4 * tx - 1);                                     \
                T *out = v + (row * tw + tx) * c;                                                        \
                OVER_CHANNELS(V, T, INPUT_AT);                                                           \
            }                                                                                            \
        }                                                                                                \
        free(zero);                                                                                      \
        return 0;                                                                                        \
    }                                                                                                    \
                                                                                                         \
    int wg_output_##S(const T *m, const T *bias, T *y, int64_t n, int64_t h, int64_t w, int64_t c,      \
                      int64_t th, int64_t tw, int64_t plane, int threads) {                              \
        T *zero = calloc((size_t)c, sizeof(T));                                                          \
        if (!zero)                                                                                       \
            return 1;                                                                                    \
        const T *add = bias ? bias : zero;                                                               \
        int failed = 0;                                                                                  \
        _Pragma("omp parallel num_threads(threads) reduction(|| : failed)")                              \
        {                                                                                                \
            T *scratch = malloc((size_t)c * sizeof(T));                                                  \
            failed = scratch == NULL;                                                                    \
            _Pragma("omp for schedule(static)")                                                          \
            for (int64_t row = 0; row < n * th; row++) {                                                 \
                if (!scratch)                                                                            \
                    continue;                                                                            \
                const int64_t b = row / th, ty = row % th;                                               \
                T *rows[16];                                                                             \
                for (int64_t tx = 0; tx < tw; tx++) {                                                    \
                    TILE_ROWS(rows, y, scratch, 4, 4 * ty, 4 * tx);                                      \
                    const T *in = m + (row * tw + tx) * c;                                               \
                    OVER_CHANNELS(V, T, OUTPUT_AT);                                                      \
                }                                                                                        \
            }                                                                                            \
            free(scratch);                                                                               \
        }                                                                                                \
        free(zero);                                                                                      \
        return failed;                                                                                   \
    }                                                                                                    \
                                                                                                         \
    int wg_output_adjoint_##S(const T *dy, T *dm, int64_t n, int64_t h, int64_t w, int64_t c, int64_t th, \
                              int64_t tw, int64_t plane, int threads) {                                  \
        T *zero = calloc((size_t)c, sizeof(T));                                                          \
        if (!zero)                                                                                       \
            return 1;                                                                                    \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                \
        for (int64_t row = 0; row < n * th; row++) {                                                     \
            const int64_t b = row / th, ty = row % th;                                                   \
            const T *rows[16];                                                                           \
            for (int64_t tx = 0; tx < tw; tx++) {                                                        \
                TILE_ROWS(rows, dy, zero, 4, 4 * ty, 4 * tx);                                            \
                T *out = dm + (row * tw + tx) * c;                                                       \
                OVER_CHANNELS(V, T, ADJOINT_AT);                                                         \
            }                                                                                            \
        }                                                                                                \
        free(zero);                                                                                      \
        return 0;                                                                                        \
    }

/* wg_filter_S: g [C_out, C_in, 3, 3] → u [36, C_in, C_out] (planes ``plane`` apart), u[a·6 + b][i][o] =
 * (G g_oi Gᵀ)[a][b] with G [6, 3] given (row-major), in the layout the 36 products read. One vector of
 * output channels at a time: their taps for one input channel are gathered into a small [9][lanes]
 * buffer (the vector's filter rows walked in step), then transformed a vector at a time and stored
 * contiguously; the last, partial block one channel at a time. */
#define FILTER_AT(V, LD, ST, l)                                                                         \
    do {                                                                                                 \
        V t_[6][3];                                                                                      \
        for (int a = 0; a < 6; a++)                                                                      \
            for (int c = 0; c < 3; c++)                                                                  \
                t_[a][c] = gm[a * 3] * LD(V, taps[c] + l) + gm[a * 3 + 1] * LD(V, taps[3 + c] + l)       \
                           + gm[a * 3 + 2] * LD(V, taps[6 + c] + l);                                     \
        for (int a = 0; a < 6; a++)                                                                      \
            for (int b = 0; b < 6; b++)                                                                  \
                ST(V, out + (a * 6 + b) * plane + l,                                                     \
                   t_[a][0] * gm[b * 3] + t_[a][1] * gm[b * 3 + 1] + t_[a][2] * gm[b * 3 + 2]);          \
    } while (0)

#define DEFINE_FILTER(T, V, S)                                                                          \
    void wg_filter_##S(const T *g, const T *gmat, T *u, int64_t co, int64_t ci, int64_t plane,           \
                       int threads) {                                                                    \
        enum { L = sizeof(V) / sizeof(T) };                                                              \
        T gm[18];                                                                                        \
        for (int k = 0; k < 18; k++)                                                                     \
            gm[k] = gmat[k];                                                                             \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                \
        for (int64_t ob = 0; ob < co; ob += L) {                                                         \
            const int64_t on = co - ob < L ? co - ob : L;                                                \
            T taps[9][L];                                                                                \
            for (int64_t i = 0; i < ci; i++) {                                                           \
                for (int64_t l = 0; l < on; l++)                                                         \
                    for (int s = 0; s < 9; s++)                                                          \
                        taps[s][l] = g[((ob + l) * ci + i) * 9 + s];                                     \
                T *out = u + i * co + ob;                                                                \
                if (on == L)                                                                             \
                    FILTER_AT(V, VLOAD, VSTORE, 0);                                                      \
                else                                                                                     \
                    for (int64_t l = 0; l < on; l++)                                                     \
                        FILTER_AT(T, SLOAD, SSTORE, l);                                                  \
            }                                                                                            \
        }                                                                                                \
    }

DEFINE_FILTER(float, vf32, f32)
DEFINE_FILTER(double, vf64, f64)
DEFINE_KERNELS(float, vf32, f32)
DEFINE_KERNELS(double, vf64, f64)
