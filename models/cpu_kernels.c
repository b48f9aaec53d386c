/* Fused CPU kernels for the Presto encoder's inference (models/cpu_kernels.py builds and loads this file).
 *
 * Why: Presto's heads are 16 floats wide, so eager PyTorch spends more time moving the (B, H, N, N) attention
 * scores through memory (score matmul, exp, sum, value matmul, head transposes) than computing them. Here one
 * (sample, head) pair's keys, values and score rows stay in L1 cache: a 16-float head is exactly one AVX-512
 * vector (GCC's vector extensions lower it to whatever instruction set the pass is compiled for; narrower ones
 * split it, through memory, which is why cpu_kernels.py runs the kernels by default on AVX-512 CPUs only).
 *
 * One library serves every CPU of a mixed cluster: cpu_kernels.py compiles this file once per instruction-set
 * level (SUELO_VARIANT = avx512bf16, avx512, baseline; each with its -m flags) and links the passes, so every
 * exported kernel exists once per level with the level in its name (suelo_attention_avx512, ...). The host picks
 * its level at load time with suelo_cpu_supports, compiled in the baseline pass only.
 *
 * Written for suelo; no code is copied from elsewhere.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef SUELO_VARIANT
#define SUELO_VARIANT baseline /* compiled on its own (no cpu_kernels.py): the names of the portable pass */
#endif
/* suelo_attention -> suelo_attention_<variant>: two levels, so that SUELO_VARIANT is expanded before pasting */
#define SUELO_PASTE(name, variant) name##_##variant
#define SUELO_NAME(name, variant) SUELO_PASTE(name, variant)
#define EXPORT(name) SUELO_NAME(name, SUELO_VARIANT)

#define HEAD 16 /* floats per head: the kernels serve head_dim == 16 only (Presto's 128 / 8) */
#define ROWS 4  /* query rows per pass: 4 independent FMA chains, each key/value vector loaded once for 4 rows */

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));

static inline vf splat(float x) { return (vf){0} + x; }

static inline vf load_f32(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_f32(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf load_bf16(const uint16_t *p) {
    vh h;
    memcpy(&h, p, sizeof h);
    vu wide = __builtin_convertvector(h, vu) << 16; /* bf16 is the top half of a float32 */
    return (vf)wide;
}

static inline void store_bf16(uint16_t *p, vf v) {
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
    __m256bh h = _mm512_cvtneps_pbh((__m512)v); /* one instruction, round to nearest even */
    memcpy(p, &h, sizeof h);
#else
    vu bits = (vu)v;
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest, ties to even */
#if defined(__AVX512F__)
    __m256i h = _mm512_cvtepi32_epi16((__m512i)(bits >> 16)); /* GCC's generic narrowing is a slower permute */
#else
    vh h = __builtin_convertvector(bits >> 16, vh);
#endif
    memcpy(p, &h, sizeof h);
#endif
}

static inline vf load_any(const void *base, int64_t index, int bf16) {
    return bf16 ? load_bf16((const uint16_t *)base + index) : load_f32((const float *)base + index);
}

static inline void store_any(void *base, int64_t index, vf v, int bf16) {
    if (bf16)
        store_bf16((uint16_t *)base + index, v);
    else
        store_f32((float *)base + index, v);
}

static inline vf vmax(vf a, vf b) {
    vi take_b = b > a;
    return (vf)(((vi)a & ~take_b) | ((vi)b & take_b));
}

/* Horizontal max and sum in four halving steps (a scalar loop over 16 lanes cost ~15% of the kernel). */
#define HALVES(v, op)                                                                                         \
    do {                                                                                                      \
        v = op(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));       \
        v = op(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));       \
        v = op(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));       \
        v = op(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));       \
    } while (0)

static inline vf vadd(vf a, vf b) { return a + b; }

static inline float hmax(vf v) {
    HALVES(v, vmax);
    return v[0];
}

static inline float hsum(vf v) {
    HALVES(v, vadd);
    return v[0];
}

/* In-place transpose of 16 vectors of 16 (rows <-> lanes): four butterfly stages that swap off-diagonal blocks
 * of 8, 4, 2 and 1, two-vector shuffles instead of 256 scalar stores. */
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define BUTTERFLY(m, s, LO, HI)                                                                               \
    for (int i = 0; i < HEAD; i++)                                                                            \
        if (!(i & (s))) {                                                                                     \
            vf a = m[i], b = m[i + (s)];                                                                      \
            m[i] = __builtin_shufflevector(a, b, LO);                                                         \
            m[i + (s)] = __builtin_shufflevector(a, b, HI);                                                   \
        }

static inline void transpose16(vf m[HEAD]) {
    BUTTERFLY(m, 8, LO8, HI8)
    BUTTERFLY(m, 4, LO4, HI4)
    BUTTERFLY(m, 2, LO2, HI2)
    BUTTERFLY(m, 1, LO1, HI1)
}

/* 2^x for x <= 0 (scores minus their row max, in log2 units); 0 below -126 (and for -inf: masked keys).
 * x = n + f with n an integer and |f| <= 1/2; 2^f by a degree-5 polynomial (relative error < 2.4e-7 in float32
 * arithmetic), times 2^n. */
static inline vf exp2_nonpositive(vf x) {
#if defined(__AVX512F__)
    /* max, round, scalef: 2^n and the underflow to 0 in single instructions (x < -150 gives exactly 0) */
    __m512 clamped = _mm512_max_ps((__m512)x, _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(clamped, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf f = (vf)_mm512_sub_ps(clamped, n);
#else
    vi underflow = x < -126.0f;
    x = (vf)(((vi)x & ~underflow) | ((vi)splat(-126.0f) & underflow));
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer, left in the low bits */
    vf t = x + shifter;
    vi ni = (vi)t - (vi)splat(shifter);
    vf f = x - (t - shifter);
#endif
    vf p = splat(1.327697653323412e-3f);
    p = p * f + 9.675545617938042e-3f;
    p = p * f + 5.55071160197258e-2f;
    p = p * f + 2.4022120237350464e-1f;
    p = p * f + 6.931469440460205e-1f;
    p = p * f + 1.0000001192092896f;
#if defined(__AVX512F__)
    return (vf)_mm512_scalef_ps((__m512)p, n);
#else
    return (vf)(((vi)p + (ni << 23)) & ~underflow);
#endif
}

/* Attention of up to ROWS query rows of one head (query: [row][dim], log2-scaled) over the head's keys
 * (keys_t: [dim][key], padded to whole blocks of 16) and values ([key][dim]); writes each row's 16 outputs at
 * out + row * out_stride. Scores go through the scratch rows (scores: [row][key]). */
static void attend_rows(const float *query, const float *keys_t, const float *values, const float *key_bias,
                        float *scores, int64_t tokens, int64_t padded, int64_t blocks, void *out, int64_t out_stride,
                        int rows, int out_bf16) {
    for (int64_t jb = 0; jb < blocks; jb++) {
        vf acc[ROWS] = {0};
        for (int d = 0; d < HEAD; d++) {
            vf k = load_f32(keys_t + d * padded + jb * HEAD);
            for (int r = 0; r < ROWS; r++) acc[r] += query[r * HEAD + d] * k;
        }
        vf bias = load_f32(key_bias + jb * HEAD);
        for (int r = 0; r < ROWS; r++) store_f32(scores + r * padded + jb * HEAD, acc[r] + bias);
    }
    float inverse_sum[ROWS];
    for (int r = 0; r < ROWS; r++) {
        float *row = scores + r * padded;
        vf m = splat(-INFINITY);
        for (int64_t jb = 0; jb < blocks; jb++) m = vmax(m, load_f32(row + jb * HEAD));
        const float row_max = hmax(m);
        vf total = splat(0.0f);
        for (int64_t jb = 0; jb < blocks; jb++) {
            vf p = exp2_nonpositive(load_f32(row + jb * HEAD) - row_max);
            store_f32(row + jb * HEAD, p);
            total += p;
        }
        const float sum = hsum(total);
        inverse_sum[r] = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    vf acc[ROWS] = {0};
    for (int64_t j = 0; j < tokens; j++) {
        vf v = load_f32(values + j * HEAD);
        for (int r = 0; r < ROWS; r++) acc[r] += scores[r * padded + j] * v;
    }
    for (int r = 0; r < rows; r++) store_any(out, r * out_stride, acc[r] * inverse_sum[r], out_bf16);
}

/* attend_rows for a compile-time number of key blocks (1-4): the ROWS x blocks scores live in registers, and
 * their 2^x run side by side instead of one block's polynomial after another. */
static inline __attribute__((always_inline)) void attend_rows_in_registers(
    const float *query, const float *keys_t, const float *values, const float *key_bias, float *scores,
    int64_t tokens, int64_t padded, const int blocks, void *out, int64_t out_stride, int rows, int out_bf16) {
    vf s[ROWS][4];
    for (int jb = 0; jb < blocks; jb++) {
        for (int r = 0; r < ROWS; r++) s[r][jb] = load_f32(key_bias + jb * HEAD);
        for (int d = 0; d < HEAD; d++) {
            vf k = load_f32(keys_t + d * padded + jb * HEAD);
            for (int r = 0; r < ROWS; r++) s[r][jb] += query[r * HEAD + d] * k;
        }
    }
    vf row_max[ROWS], total[ROWS];
    for (int r = 0; r < ROWS; r++) {
        vf m = s[r][0];
        for (int jb = 1; jb < blocks; jb++) m = vmax(m, s[r][jb]);
        row_max[r] = splat(hmax(m));
        total[r] = splat(0.0f);
    }
    for (int r = 0; r < ROWS; r++)
        for (int jb = 0; jb < blocks; jb++) {
            s[r][jb] = exp2_nonpositive(s[r][jb] - row_max[r]);
            total[r] += s[r][jb];
            store_f32(scores + r * padded + jb * HEAD, s[r][jb]);
        }
    vf acc[ROWS] = {0};
    for (int64_t j = 0; j < tokens; j++) {
        vf v = load_f32(values + j * HEAD);
        for (int r = 0; r < ROWS; r++) acc[r] += scores[r * padded + j] * v;
    }
    for (int r = 0; r < rows; r++) {
        const float sum = hsum(total[r]);
        store_any(out, r * out_stride, acc[r] * (sum > 0.0f ? 1.0f / sum : 0.0f), out_bf16);
    }
}

/* Multi-head softmax attention of Presto's fused qkv projection, for inference.
 *
 * qkv: (batch, tokens, 3 * heads * 16), float32 or bf16 (qkv_bf16), contiguous; the query columns are already
 *      scaled by 1 / sqrt(16) / ln(2), so softmax is 2^(s - max s) / sum.
 * keep: (batch, tokens) 0/1: keys with 0 get no weight (every row must keep at least one key).
 * out: (batch, tokens, heads * 16), float32 or bf16 (out_bf16): the heads side by side, as the projection takes
 *      them. Arithmetic is float32 throughout.
 * Returns 0, or -1 if scratch memory could not be had.
 */
int EXPORT(suelo_attention)(const void *qkv, const uint8_t *keep, void *out, int64_t batch, int64_t tokens,
                            int64_t heads, int qkv_bf16, int out_bf16) {
    const int64_t width = heads * HEAD, stride = 3 * width;
    const int64_t blocks = (tokens + HEAD - 1) / HEAD, padded = blocks * HEAD;
    /* one sample's keys and values for all heads, gathered in one sequential pass over its qkv rows */
    float *keys_t = aligned_alloc(64, sizeof(float) * heads * HEAD * padded); /* [head][dim][key] */
    float *values = aligned_alloc(64, sizeof(float) * heads * HEAD * padded); /* [head][key][dim] */
    float *scores = aligned_alloc(64, sizeof(float) * ROWS * padded);         /* [row][key] */
    float *key_bias = aligned_alloc(64, sizeof(float) * padded);              /* 0 kept, -inf masked or padding */
    float *query = aligned_alloc(64, sizeof(float) * ROWS * HEAD);            /* [row][dim] */
    if (!keys_t || !values || !scores || !key_bias || !query) {
        free(keys_t), free(values), free(scores), free(key_bias), free(query);
        return -1;
    }
    memset(keys_t, 0, sizeof(float) * heads * HEAD * padded);
    memset(values, 0, sizeof(float) * heads * HEAD * padded);

    for (int64_t b = 0; b < batch; b++) {
        const int64_t first = b * tokens;
        for (int64_t j = 0; j < padded; j++) key_bias[j] = j < tokens && keep[first + j] ? 0.0f : -INFINITY;
        const int64_t element = qkv_bf16 ? 2 : 4;
        for (int64_t jb = 0; jb < blocks; jb++) {
            for (int64_t h = 0; h < heads; h++) {
                vf tile[HEAD];
                for (int t = 0; t < HEAD; t++) {
                    const int64_t j = jb * HEAD + t;
                    if (h == 0 && j + HEAD < tokens) { /* next block's rows come from L3: ask for them early */
                        const char *ahead = (const char *)qkv + ((first + j + HEAD) * stride + width) * element;
                        for (int64_t line = 0; line < 2 * width * element; line += 64) __builtin_prefetch(ahead + line);
                    }
                    if (j < tokens) {
                        tile[t] = load_any(qkv, (first + j) * stride + width + h * HEAD, qkv_bf16);
                        store_f32(values + (h * padded + j) * HEAD,
                                  load_any(qkv, (first + j) * stride + 2 * width + h * HEAD, qkv_bf16));
                    } else {
                        tile[t] = splat(0.0f);
                    }
                }
                transpose16(tile);
                for (int d = 0; d < HEAD; d++) store_f32(keys_t + (h * HEAD + d) * padded + jb * HEAD, tile[d]);
            }
        }
        for (int64_t h = 0; h < heads; h++) {
            const float *head_keys_t = keys_t + h * HEAD * padded, *head_values = values + h * HEAD * padded;
            if (b + 1 < batch) { /* the next sample's rows, a share per head, while this one computes */
                const char *next = (const char *)qkv + (first + tokens) * stride * element;
                const int64_t bytes = tokens * stride * element, share = (bytes + heads - 1) / heads;
                for (int64_t at = h * share; at < (h + 1) * share && at < bytes; at += 64) __builtin_prefetch(next + at);
            }
            for (int64_t i0 = 0; i0 < tokens; i0 += ROWS) {
                const int rows = tokens - i0 < ROWS ? (int)(tokens - i0) : ROWS;
                for (int r = 0; r < ROWS; r++) {
                    vf q = r < rows ? load_any(qkv, (first + i0 + r) * stride + h * HEAD, qkv_bf16) : splat(0.0f);
                    store_f32(query + r * HEAD, q);
                }
                void *target = (char *)out + ((first + i0) * width + h * HEAD) * (out_bf16 ? 2 : 4);
                /* up to 64 tokens the score rows stay in registers: one specialised copy per block count */
#define IN_REGISTERS(n)                                                                                       \
    attend_rows_in_registers(query, head_keys_t, head_values, key_bias, scores, tokens, padded, n, target, width, \
                             rows, out_bf16)
                switch (blocks) {
                case 1: IN_REGISTERS(1); break;
                case 2: IN_REGISTERS(2); break;
                case 3: IN_REGISTERS(3); break;
                case 4: IN_REGISTERS(4); break;
                default: attend_rows(query, head_keys_t, head_values, key_bias, scores, tokens, padded, blocks,
                                     target, width, rows, out_bf16);
                }
#undef IN_REGISTERS
            }
        }
    }
    free(keys_t), free(values), free(scores), free(key_bias), free(query);
    return 0;
}

/* The residual add and the LayerNorm that follows it, in one pass over each token (rows x width, width a
 * multiple of 16): x += delta (skipped when delta is NULL; float32 or bf16), then
 * out = (x - mean) / sqrt(var + eps) * gamma + beta, written as float32 or bf16. Mean and variance are two-pass
 * float32 sums over the row, as torch's layer_norm. */
void EXPORT(suelo_add_layer_norm)(float *x, const void *delta, int delta_bf16, const float *gamma,
                                  const float *beta, float eps, void *out, int out_bf16, int64_t rows, int64_t width) {
    const int64_t vectors = width / HEAD;
    for (int64_t i = 0; i < rows; i++) {
        float *row = x + i * width;
        vf total = splat(0.0f);
        for (int64_t v = 0; v < vectors; v++) {
            vf value = load_f32(row + v * HEAD);
            if (delta) {
                value += load_any(delta, i * width + v * HEAD, delta_bf16);
                store_f32(row + v * HEAD, value);
            }
            total += value;
        }
        const vf mean = splat(hsum(total) / (float)width);
        vf squares = splat(0.0f);
        for (int64_t v = 0; v < vectors; v++) {
            vf centred = load_f32(row + v * HEAD) - mean;
            squares += centred * centred;
        }
        const vf scale = splat(1.0f / sqrtf(hsum(squares) / (float)width + eps));
        for (int64_t v = 0; v < vectors; v++) {
            vf normed = (load_f32(row + v * HEAD) - mean) * scale;
            store_any(out, i * width + v * HEAD, normed * load_f32(gamma + v * HEAD) + load_f32(beta + v * HEAD),
                      out_bf16);
        }
    }
}

/* Per-sample weighted sums over tokens: out[b] = sum_n weights[b, n] * values[b, n] for values (batch, tokens,
 * width) float32 or bf16 and width a multiple of 16; out is float32 (batch, width). The encoder's masked mean. */
void EXPORT(suelo_weighted_sum)(const void *values, int bf16, const float *weights, float *out, int64_t batch,
                                int64_t tokens, int64_t width) {
    for (int64_t b = 0; b < batch; b++) {
        float *row = out + b * width;
        for (int64_t v = 0; v < width; v += HEAD) store_f32(row + v, splat(0.0f));
        for (int64_t n = 0; n < tokens; n++) {
            const float weight = weights[b * tokens + n];
            if (weight == 0.0f) continue;
            for (int64_t v = 0; v < width; v += HEAD)
                store_f32(row + v, load_f32(row + v) + weight * load_any(values, (b * tokens + n) * width + v, bf16));
        }
    }
}

#if defined(SUELO_DISPATCH)
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
/* 1 if this host's CPU (and its OS, which must save the wider registers) can run the named variant, else 0.
 * Exactly the features the variant's pass is compiled for are asked for: cpu_kernels.py keeps the lists the same. */
int suelo_cpu_supports(const char *variant) {
    if (strcmp(variant, "baseline") == 0) return 1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (strcmp(variant, "avx512") == 0) return avx512;
    if (strcmp(variant, "avx512bf16") == 0) {
        /* CPUID leaf 7, subleaf 1, EAX bit 5; asked directly, as not every compiler's __builtin_cpu_supports
         * knows "avx512bf16". Its registers are AVX-512's, whose OS support the line above checked. */
        unsigned int eax = 0, ebx, ecx, edx;
        return avx512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax >> 5 & 1u);
    }
#endif
    return 0;
}
#endif
