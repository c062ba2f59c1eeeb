/* Decode attention read straight from the paged KV pool (CPU).
 *
 * One query token per sequence attends to its whole context, reading each sequence's K and V
 * blocks in place through its block table: no gather into a padded copy, no mask, K and V each
 * read once. The query heads that share a KV head (grouped-query attention) are done together,
 * so a key is loaded once for all of them. Work items are (sequence, KV head) pairs, shared by
 * OpenMP threads (the same libgomp PyTorch loaded, so torch.set_num_threads applies).
 *
 * Pool layout, one layer: [kv_heads, num_blocks, block_size, head_dim], fp32 or bf16.
 * Softmax is exact (scores for the whole context, then max, exp, sum), in fp32. A sliding
 * window (Mistral) limits the keys to the last `window` positions, the query's own included.
 *
 * Where the time went, and what was done about it (64 sequences of 100-700 tokens, 4 KV heads
 * of 64, blocks shuffled over the pool, 2 threads of a Xeon with AMX): 4.6 ms per call bf16,
 * 4.5 ms fp32, before; 1.6 and 2.5 ms after. The softmax ran scalar (GCC would not vectorize
 * expf's stand-in under `omp simd`): now explicit 16-lane vectors. A key's score was a
 * horizontal sum per query head: a whole block of 16 keys now shares one transposing
 * reduction. And the blocks are scattered, so the next block is prefetched row by row.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

static inline float dot_f32(const float *restrict a, const float *restrict b, int n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static inline float dot_bf16(const float *restrict a, const uint16_t *restrict b, int n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int i = 0; i < n; i++) acc += a[i] * bf16_to_f32(b[i]);
    return acc;
}

static inline void axpy_f32(float *restrict y, float a, const float *restrict x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static inline void axpy_bf16(float *restrict y, float a, const uint16_t *restrict x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * bf16_to_f32(x[i]);
}

/* Visits keys lo..ctx-1 block by block, binding t0 (the block's first position), i0..n-1 (the
 * rows of the block in range) and base (the block's first element in the pool). */
#define FOR_EACH_KEY_BLOCK(lo, ctx, block_size, head_base, table, D)                         \
    for (int blk = (lo) / (block_size), t0 = blk * (block_size);                             \
         t0 < (ctx); blk++, t0 += (block_size))                                              \
        for (int i0 = (lo) > t0 ? (lo) - t0 : 0,                                             \
                 n = (ctx) - t0 < (block_size) ? (ctx) - t0 : (block_size), once = 1;        \
             once; once = 0)                                                                 \
            for (size_t base = ((head_base) + (size_t)(table)[blk] * (block_size)) * (D);    \
                 once; once = 0)

/* --- the fast path: head_dim a multiple of 16 and at most 8 query heads per KV head ---------
 * GCC vector types (AVX-512 registers here, pairs of AVX2 registers elsewhere) with head_dim and
 * group size known at compile time, so the group's queries and output accumulators stay in
 * registers: a key costs group x head_dim/16 FMAs plus one horizontal sum per query head. */
typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef uint16_t v16h __attribute__((vector_size(32), aligned(2)));
typedef uint32_t v16u __attribute__((vector_size(64)));

static inline v16f load16(const void *base, size_t i, int bf16) {
    if (bf16) {
        const v16h h = *(const v16h *)((const uint16_t *)base + i);
        return (v16f)(__builtin_convertvector(h, v16u) << 16);
    }
    return *(const v16f *)((const float *)base + i);
}

static inline float hsum16(v16f v) {
    const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}


typedef int32_t v16i __attribute__((vector_size(64)));

/* exp(x) for x <= 0 (softmax after subtracting the max), on 16 lanes with GCC vector types:
 * x = n ln2 + r with ln2 split in two (Cody-Waite) so r is exact, |r| <= ln2/2, and exp(r) by
 * its degree-7 Taylor polynomial; scaled by 2^n through the exponent bits. n is rounded by the
 * 1.5 * 2^23 trick (exact for |x * log2(e)| < 2^22), so it vectorizes whatever the compiler
 * thinks of roundf. Max relative error 1.0e-7 over [-87, 0] (checked against
 * double-precision exp on 2M points). */
static inline v16f exp_neg16(v16f x) {
    const v16f lim = x - x - 87.0f;
    x = (v16f)(((v16i)x & (v16i)(x >= lim)) | ((v16i)lim & ~(v16i)(x >= lim)));
    const v16f magic = x - x + 12582912.0f;
    const v16f n = (x * 1.44269504088896341f + magic) - magic;
    const v16f r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    v16f p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16f)bits;
}

static inline v16f max16(v16f a, v16f b) {
    const v16i m = (v16i)(a > b);
    return (v16f)(((v16i)a & m) | ((v16i)b & ~m));
}

/* Softmax over each of G rows of n scores, in place: 16 lanes at a time, the tail one by one. */
static void softmax_rows(float *scores, int G, int n) {
    for (int g = 0; g < G; g++) {
        float *s = scores + (size_t)g * n;
        const int n16 = n & ~15;
        float m = s[0];
        if (n16) {
            v16f mv = *(const v16f *)s;
            for (int t = 16; t < n16; t += 16) mv = max16(mv, *(const v16f *)(s + t));
            for (int l = 0; l < 16; l++) m = mv[l] > m ? mv[l] : m;
        }
        for (int t = n16; t < n; t++) m = s[t] > m ? s[t] : m;
        v16f sv = {0};
        for (int t = 0; t < n16; t += 16) {
            const v16f e = exp_neg16(*(const v16f *)(s + t) - m);
            *(v16f *)(s + t) = e;
            sv += e;
        }
        float sum = hsum16(sv);
        if (n16 < n) {  /* the tail through the same vector exp, padded with the clamp */
            v16f tail = (v16f){0} - 87.0f;
            for (int t = n16; t < n; t++) tail[t - n16] = s[t] - m;
            tail = exp_neg16(tail);
            for (int t = n16; t < n; t++) {
                s[t] = tail[t - n16];
                sum += s[t];
            }
        }
        const float inv = 1.0f / sum;
        for (int t = 0; t < n16; t += 16) *(v16f *)(s + t) *= inv;
        for (int t = n16; t < n; t++) s[t] *= inv;
    }
}

/* a[i]'s 16 lanes summed, as lane i of the result: a transposing tree of 15 shuffle-pair adds
 * instead of 16 horizontal sums (the lanes come out in bit-reversed order, put right at the
 * end). */
#define SHUF_HALF(x, y, o) __builtin_shufflevector(x, y, o + 0, o + 1, o + 2, o + 3, o + 4, \
    o + 5, o + 6, o + 7, o + 16, o + 17, o + 18, o + 19, o + 20, o + 21, o + 22, o + 23)
#define SHUF_QUARTER(x, y, o) __builtin_shufflevector(x, y, o + 0, o + 1, o + 2, o + 3, \
    o + 16, o + 17, o + 18, o + 19, o + 8, o + 9, o + 10, o + 11, o + 24, o + 25, o + 26, o + 27)
#define SHUF_EIGHTH(x, y, o) __builtin_shufflevector(x, y, o + 0, o + 1, o + 16, o + 17, \
    o + 4, o + 5, o + 20, o + 21, o + 8, o + 9, o + 24, o + 25, o + 12, o + 13, o + 28, o + 29)
#define SHUF_LANE(x, y, o) __builtin_shufflevector(x, y, o + 0, o + 16, o + 2, o + 18, \
    o + 4, o + 20, o + 6, o + 22, o + 8, o + 24, o + 10, o + 26, o + 12, o + 28, o + 14, o + 30)
static inline v16f reduce16(const v16f *a) {
    v16f c[8], e[4], f[2];
    for (int i = 0; i < 8; i++) c[i] = SHUF_HALF(a[2 * i], a[2 * i + 1], 0) + SHUF_HALF(a[2 * i], a[2 * i + 1], 8);
    for (int i = 0; i < 4; i++) e[i] = SHUF_QUARTER(c[2 * i], c[2 * i + 1], 0) + SHUF_QUARTER(c[2 * i], c[2 * i + 1], 4);
    for (int i = 0; i < 2; i++) f[i] = SHUF_EIGHTH(e[2 * i], e[2 * i + 1], 0) + SHUF_EIGHTH(e[2 * i], e[2 * i + 1], 2);
    const v16f g = SHUF_LANE(f[0], f[1], 0) + SHUF_LANE(f[0], f[1], 1);
    return __builtin_shufflevector(g, g, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}


/* Ask for the next block's row I while this block's is used: blocks are scattered in the
 * pool, so the hardware prefetcher cannot guess the next one (2x slower without, measured). */
static inline void prefetch_row(const void *cache, size_t elem, int bf16, int D) {
    const char *p = (const char *)cache + elem * (bf16 ? 2 : 4);
    const int bytes = D * (bf16 ? 2 : 4);
    for (int o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

static inline __attribute__((always_inline)) void attend_fixed(
    const float *qh, const void *k_cache, const void *v_cache, int bf16, const int32_t *table,
    int lo, int ctx, size_t head_base, int block_size, float scale, float *scores, float *out,
    const int D, const int G) {
    enum { MAXV = 8, MAXG = 8 };
    const int V = D / 16, nk = ctx - lo;
    v16f qv[MAXG][MAXV];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < V; j++) qv[g][j] = load16(qh, (size_t)g * D + 16 * j, 0) * scale;
    FOR_EACH_KEY_BLOCK(lo, ctx, block_size, head_base, table, D) {
        const size_t next = t0 + block_size < ctx
            ? (head_base + (size_t)table[blk + 1] * block_size) * D : base;
        if (i0 == 0 && n == 16) {  /* a whole tile of 16 keys: one reduction per query head */
            v16f acc[MAXG][16];
            for (int i = 0; i < 16; i++) {
                prefetch_row(k_cache, next + (size_t)i * D, bf16, D);
                v16f kv[MAXV];
                for (int j = 0; j < V; j++) kv[j] = load16(k_cache, base + (size_t)i * D + 16 * j, bf16);
                for (int g = 0; g < G; g++) {
                    v16f a = qv[g][0] * kv[0];
                    for (int j = 1; j < V; j++) a += qv[g][j] * kv[j];
                    acc[g][i] = a;
                }
            }
            for (int g = 0; g < G; g++) *(v16f *)(scores + (size_t)g * nk + t0 - lo) = reduce16(acc[g]);
            continue;
        }
        for (int i = i0; i < n; i++) {
            v16f kv[MAXV];
            for (int j = 0; j < V; j++) kv[j] = load16(k_cache, base + (size_t)i * D + 16 * j, bf16);
            for (int g = 0; g < G; g++) {
                v16f acc = qv[g][0] * kv[0];
                for (int j = 1; j < V; j++) acc += qv[g][j] * kv[j];
                scores[(size_t)g * nk + t0 + i - lo] = hsum16(acc);
            }
        }
    }
    softmax_rows(scores, G, nk);
    v16f ov[MAXG][MAXV];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < V; j++) ov[g][j] = (v16f){0};
    FOR_EACH_KEY_BLOCK(lo, ctx, block_size, head_base, table, D) {
        const size_t next = t0 + block_size < ctx
            ? (head_base + (size_t)table[blk + 1] * block_size) * D : base;
        for (int i = i0; i < n; i++) {
            prefetch_row(v_cache, next + (size_t)i * D, bf16, D);
            v16f vv[MAXV];
            for (int j = 0; j < V; j++) vv[j] = load16(v_cache, base + (size_t)i * D + 16 * j, bf16);
            for (int g = 0; g < G; g++) {
                const float p = scores[(size_t)g * nk + t0 + i - lo];
                for (int j = 0; j < V; j++) ov[g][j] += p * vv[j];
            }
        }
    }
    for (int g = 0; g < G; g++)
        for (int j = 0; j < V; j++) *(v16f *)(out + (size_t)g * D + 16 * j) = ov[g][j];
}

typedef void (*attend_fn)(const float *, const void *, const void *, int, const int32_t *, int,
                          int, size_t, int, float, float *, float *);

#define SPECIALIZE(D, G)                                                                      \
    static void attend_##D##_##G(const float *qh, const void *k, const void *v, int bf16,      \
                                 const int32_t *table, int lo, int ctx, size_t head_base,     \
                                 int bs, float scale, float *scores, float *out) {            \
        attend_fixed(qh, k, v, bf16, table, lo, ctx, head_base, bs, scale, scores, out, D, G); \
    }
#define SPECIALIZE_D(D) SPECIALIZE(D, 1) SPECIALIZE(D, 2) SPECIALIZE(D, 3) SPECIALIZE(D, 4)  \
    SPECIALIZE(D, 5) SPECIALIZE(D, 6) SPECIALIZE(D, 7) SPECIALIZE(D, 8)
SPECIALIZE_D(64)
SPECIALIZE_D(128)
#define ROW(D) {attend_##D##_1, attend_##D##_2, attend_##D##_3, attend_##D##_4, attend_##D##_5, \
                attend_##D##_6, attend_##D##_7, attend_##D##_8}
static const attend_fn FIXED_64[8] = ROW(64);
static const attend_fn FIXED_128[8] = ROW(128);

static attend_fn fixed_path(int head_dim, int group) {
    if (group < 1 || group > 8) return NULL;
    if (head_dim == 64) return FIXED_64[group - 1];
    if (head_dim == 128) return FIXED_128[group - 1];
    return NULL;
}

/* --- the generic path: any head_dim and group size ------------------------------------------ */
static void attend_generic(const float *qh, const void *k_cache, const void *v_cache, int bf16,
                           const int32_t *table, int lo, int ctx, size_t head_base,
                           int block_size, float scale, float *scores, float *acc, float *out,
                           int D, int G) {
    const int nk = ctx - lo;
    FOR_EACH_KEY_BLOCK(lo, ctx, block_size, head_base, table, D) {
        for (int i = i0; i < n; i++) {
            const size_t row = base + (size_t)i * D;
            for (int g = 0; g < G; g++) {
                const float *qg = qh + (size_t)g * D;
                scores[(size_t)g * nk + t0 + i - lo] = scale * (bf16
                    ? dot_bf16(qg, (const uint16_t *)k_cache + row, D)
                    : dot_f32(qg, (const float *)k_cache + row, D));
            }
        }
    }
    softmax_rows(scores, G, nk);
    memset(acc, 0, sizeof(float) * (size_t)G * D);
    FOR_EACH_KEY_BLOCK(lo, ctx, block_size, head_base, table, D) {
        for (int i = i0; i < n; i++) {
            const size_t row = base + (size_t)i * D;
            for (int g = 0; g < G; g++) {
                const float p = scores[(size_t)g * nk + t0 + i - lo];
                if (bf16)
                    axpy_bf16(acc + (size_t)g * D, p, (const uint16_t *)v_cache + row, D);
                else
                    axpy_f32(acc + (size_t)g * D, p, (const float *)v_cache + row, D);
            }
        }
    }
    memcpy(out, acc, sizeof(float) * (size_t)G * D);
}

/* q: [batch, heads, head_dim] fp32; out: the same shape, fp32.
 * block_tables: [batch, max_blocks] int32; ctx_lens: [batch] int32 (tokens to attend, >= 1).
 * window: attend only the last `window` positions (0: the whole context).
 * Returns 0, or -1 if a work buffer could not be allocated. */
int paged_decode_attention(const float *q, const void *k_cache, const void *v_cache,
                           int cache_is_bf16, const int32_t *block_tables,
                           const int32_t *ctx_lens, int batch, int max_blocks, int heads,
                           int kv_heads, int num_blocks, int block_size, int head_dim,
                           int window, float scale, float *out) {
    const int group = heads / kv_heads;
    const attend_fn fixed = fixed_path(head_dim, group);
    int max_ctx = 0;
    for (int b = 0; b < batch; b++)
        if (ctx_lens[b] > max_ctx) max_ctx = ctx_lens[b];
    int failed = 0;
#pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * (size_t)group * (size_t)max_ctx);
        float *acc = malloc(sizeof(float) * (size_t)group * (size_t)head_dim);
        if (scores == NULL || acc == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < batch * kv_heads; item++) {
            if (failed) continue;
            const int b = item / kv_heads, kh = item % kv_heads;
            const int ctx = ctx_lens[b];
            const int lo = window > 0 && ctx > window ? ctx - window : 0;
            const int32_t *table = block_tables + (size_t)b * max_blocks;
            const size_t offset = ((size_t)b * heads + (size_t)kh * group) * head_dim;
            const size_t head_base = (size_t)kh * num_blocks * block_size;
            if (fixed != NULL)
                fixed(q + offset, k_cache, v_cache, cache_is_bf16, table, lo, ctx, head_base,
                      block_size, scale, scores, out + offset);
            else
                attend_generic(q + offset, k_cache, v_cache, cache_is_bf16, table, lo, ctx,
                               head_base, block_size, scale, scores, acc, out + offset,
                               head_dim, group);
        }
        free(scores);
        free(acc);
    }
    return failed ? -1 : 0;
}
