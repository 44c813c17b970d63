/*
 * The elementwise kernels of accel.c. This file is included twice: once for the baseline target and
 * once (on x86-64 with GCC or Clang) for AVX2 + FMA, with KERNEL(name) giving each copy its own name;
 * accel.c picks the copy at load time. Write loops without branches so that both copies vectorise.
 */

/*
 * exp for float32, branch-free so that loops over it vectorise: exp(x) = 2^n · e^r with
 * n = round(x·log2 e), r = x - n·ln 2 (two-part ln 2), e^r by a degree-6 polynomial on |r| <= ln2/2.
 * Relative error ~2e-7 on [-87, 88]; inputs are clamped there (exp(-87) ~ 1.6e-38, so silu and
 * sigmoid saturate as they should).
 */
static inline float KERNEL(exp_approx)(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  /* round to nearest without a libm call (adding and removing 1.5·2^23 rounds under the default mode) */
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } scale;
  scale.i = ((int32_t)n + 127) << 23;
  return p * scale.f;
}

static inline float KERNEL(sigmoid)(float x) { return 1.0f / (1.0f + KERNEL(exp_approx)(-x)); }

static void KERNEL(swiglu_rows)(const float *restrict up, float *restrict out, int64_t rows, int64_t f) {
  for (int64_t r = 0; r < rows; r++) {
    const float *restrict a = up + r * 2 * f;
    const float *restrict b = a + f;
    float *restrict y = out + r * f;
    /* Two passes (the sigmoid into y, then the products): the same values as one, but GCC's single-pass
       loop ran 7-8x slower here (8 ns per element on a Skylake-X against 1). */
    for (int64_t j = 0; j < f; j++) y[j] = KERNEL(sigmoid)(a[j]);
    for (int64_t j = 0; j < f; j++) y[j] = a[j] * y[j] * b[j];
  }
}

static void KERNEL(swiglu_grad_rows)(const float *restrict dy, const float *restrict up, float *restrict d_up, int64_t rows, int64_t f) {
  for (int64_t r = 0; r < rows; r++) {
    const float *restrict a = up + r * 2 * f;
    const float *restrict b = a + f;
    const float *restrict g = dy + r * f;
    float *restrict da = d_up + r * 2 * f;
    float *restrict db = da + f;
    /* the sigmoid into db first (two passes, as in swiglu_rows) */
    for (int64_t j = 0; j < f; j++) db[j] = KERNEL(sigmoid)(a[j]);
    for (int64_t j = 0; j < f; j++) {
      float x = a[j];
      float s = db[j];
      /* d silu(x)/dx = s·(1 + x·(1 - s)) */
      da[j] = g[j] * b[j] * s * (1.0f + x * (1.0f - s));
      db[j] = g[j] * x * s;
    }
  }
}

/* Σ a[j]·b[j] in eight float lanes (a reduction the compiler may vectorise without reassociating). */
static inline float KERNEL(dot)(const float *restrict a, const float *restrict b, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) lanes[l] += a[j + l] * b[j + l];
  float sum = 0.0f;
  for (; j < n; j++) sum += a[j] * b[j];
  for (int l = 0; l < 8; l++) sum += lanes[l];
  return sum;
}

static void KERNEL(rms_norm_rows)(const float *restrict x, const float *restrict weight, float *restrict y, float *restrict inv_rms, int64_t rows,
                                  int64_t d, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float *restrict xr = x + r * d;
    float *restrict yr = y + r * d;
    float inv = 1.0f / sqrtf(KERNEL(dot)(xr, xr, d) / (float)d + eps);
    inv_rms[r] = inv;
    for (int64_t j = 0; j < d; j++) yr[j] = xr[j] * inv * weight[j];
  }
}

/*
 * y = w·x·s with s = (mean(x²) + eps)^-1/2. With g = dy·w: dx = s·g - x·s³·mean(g·x),
 * dw = Σ_rows dy·x·s. `scratch` holds D floats; dWeight accumulates in double over rows.
 */
static void KERNEL(rms_norm_grad_rows)(const float *restrict dy, const float *restrict x, const float *restrict weight, const float *restrict inv_rms,
                                       float *restrict dx, double *restrict d_weight, float *restrict scratch, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; r++) {
    const float *restrict xr = x + r * d;
    const float *restrict gr = dy + r * d;
    float *restrict dxr = dx + r * d;
    float s = inv_rms[r];
    for (int64_t j = 0; j < d; j++) scratch[j] = gr[j] * weight[j];
    float coefficient = s * s * s * KERNEL(dot)(scratch, xr, d) / (float)d;
    for (int64_t j = 0; j < d; j++) dxr[j] = s * scratch[j] - coefficient * xr[j];
    for (int64_t j = 0; j < d; j++) d_weight[j] += (double)(gr[j] * xr[j] * s);
  }
}

/*
 * erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, the approximation tfjs's own Erf kernels
 * use): erf(z) = 1 - t·(a1 + t·(a2 + ... + t·a5))·exp(-z²), t = 1 / (1 + p·z), z = |x|, sign restored.
 */
static inline float KERNEL(erf_approx)(float x) {
  float z = fabsf(x);
  float t = 1.0f / (1.0f + 0.3275911f * z);
  float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  return copysignf(1.0f - poly * KERNEL(exp_approx)(-z * z), x);
}

/* GELU, exact form: y = x·Φ(x) = ½·x·(1 + erf(x/√2)). */
static void KERNEL(gelu_values)(const float *restrict x, float *restrict y, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    y[i] = 0.5f * v * (1.0f + KERNEL(erf_approx)(v * 0.70710678118654752f));
  }
}

/* dGELU/dx = Φ(x) + x·φ(x), φ(x) = exp(-x²/2)/√(2π). */
static void KERNEL(gelu_grad_values)(const float *restrict dy, const float *restrict x, float *restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float cdf = 0.5f * (1.0f + KERNEL(erf_approx)(v * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * KERNEL(exp_approx)(-0.5f * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

/*
 * One AdamW update (PyTorch's torch.optim.AdamW as @moepp/trainers' adamw.ts writes it), every
 * operation rounded to float32 in the order the composite tfjs ops use, so that both agree bit for
 * bit. That is why accel.c compiles this function without FMA contraction (NO_FP_CONTRACT).
 *   m' = m·β1 + g·(1 − β1)
 *   v' = v·β2 + g²·(1 − β2)
 *   w' = w·decay − (m' / (√v'·c2 + ε))·stepSize     c2 = 1/√(1 − β2^t), stepSize = lr/(1 − β1^t)
 * The inputs may alias one another; the outputs alias nothing (accel.c checks).
 */
static void NO_FP_CONTRACT KERNEL(adamw_values)(const float *restrict w, const float *restrict g, const float *restrict m, const float *restrict v,
                                                float *restrict w_out, float *restrict m_out, float *restrict v_out, int64_t n,
                                                const adamw_scalars_t *scalars) {
  const adamw_scalars_t s = *scalars;
  for (int64_t i = 0; i < n; i++) {
    /* one statement per tfjs kernel of the composite form (Clang contracts only within a statement) */
    float gradient = g[i] * s.gradient_scale; /* exact when the scale is 1 (no clipping) */
    float decayed_first = m[i] * s.beta1;
    float scaled_gradient = gradient * s.one_minus_beta1;
    float first = decayed_first + scaled_gradient;
    float decayed_second = v[i] * s.beta2;
    float squared_gradient = gradient * gradient;
    float scaled_square = squared_gradient * s.one_minus_beta2;
    float second = decayed_second + scaled_square;
    float root = sqrtf(second);
    float corrected_root = root * s.inverse_root_correction2;
    float denominator = corrected_root + s.epsilon;
    float decayed_weight = w[i] * s.decay_factor;
    float direction = first / denominator;
    float step = direction * s.step_size;
    m_out[i] = first;
    v_out[i] = second;
    w_out[i] = decayed_weight - step;
  }
}

/* out[j] += x[j] for j < n (one row of a segment sum; rows of different segments never alias). */
static void KERNEL(add_row)(float *restrict out, const float *restrict x, int64_t n) {
  for (int64_t j = 0; j < n; j++) out[j] += x[j];
}

/* Σ x[i]² in double (the squares are exact in double), in eight interleaved partial sums. */
static double KERNEL(sum_of_squares_values)(const float *restrict x, int64_t n) {
  double partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; j++) {
      const double value = x[i + j];
      partial[j] += value * value;
    }
  }
  double total = 0;
  for (; i < n; i++) total += (double)x[i] * (double)x[i];
  for (int j = 0; j < 8; j++) total += partial[j];
  return total;
}

/*
 * Rotary position embedding, rotate-half convention (LLaMA / Hugging Face), on `x` [batch, T, 2·half]:
 * with x1 = x[..., :half], x2 = x[..., half:], c = cos[t, i], s = sign·sin[t, i] (sign -1: the inverse
 * rotation, which is the gradient),
 *   y1 = x1·c − x2·s,   y2 = x2·c + x1·s.
 * Each product and sum rounded to float32 as the composite tfjs form rounds them (x·cos + rotate_half(x)·sin),
 * hence NO_FP_CONTRACT. The output aliases nothing (accel.c checks).
 */
static void NO_FP_CONTRACT KERNEL(rotary_rows)(const float *restrict x, const float *restrict cos_table, const float *restrict sin_table,
                                               float *restrict y, int64_t batch, int64_t seq_len, int64_t half, float sign) {
  const int64_t width = 2 * half;
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t t = 0; t < seq_len; t++) {
      const float *restrict in = x + (b * seq_len + t) * width;
      float *restrict out = y + (b * seq_len + t) * width;
      const float *restrict c = cos_table + t * half;
      const float *restrict s = sin_table + t * half;
      for (int64_t i = 0; i < half; i++) {
        float first = in[i];
        float second = in[half + i];
        float sine = sign * s[i];
        float first_cos = first * c[i];
        float second_sin = second * sine;
        float second_cos = second * c[i];
        float first_sin = first * sine;
        out[i] = first_cos - second_sin;
        out[half + i] = second_cos + first_sin;
      }
    }
  }
}

/*
 * Causal softmax of `matrices` blocks [T, T] of attention scores: row i of each block becomes
 * p_ij = exp(scale·s_ij − m_i) / Σ_{k<=i} exp(scale·s_ik − m_i) for j <= i (m_i the row's largest
 * scale·s_ij) and exactly 0 for j > i (keys after the query). `probs` is `scores` itself (in place) or
 * overlaps nothing (accel.c checks); out of place, each row is copied first and every pass then works on
 * the one row of `probs` (two pointers that may be equal would make the compiler keep a scalar copy of
 * each loop for that case). Every loop vectorises in both copies.
 */
static void KERNEL(causal_softmax_blocks)(const float *scores, float *probs, int64_t matrices, int64_t t, float scale) {
  for (int64_t row = 0; row < matrices * t; row++) {
    const int64_t visible = row % t + 1; /* query i sees keys 0..i */
    float *restrict p = probs + row * t;
    if (scores != probs) memcpy(p, scores + row * t, (size_t)visible * sizeof(float));
    /* The row's largest scale·s_ij, found as the largest of integer keys that order like the floats
       (negative ones with their magnitude bits flipped; the map is its own inverse): an integer max
       vectorises, a float one (with its NaN rules) does not. */
    int32_t largest_key = INT32_MIN;
    for (int64_t j = 0; j < visible; j++) {
      union { float f; int32_t i; } z = {scale * p[j]};
      const int32_t key = z.i ^ ((z.i >> 31) & 0x7fffffff);
      largest_key = key > largest_key ? key : largest_key;
    }
    const union { int32_t i; float f; } largest = {largest_key ^ ((largest_key >> 31) & 0x7fffffff)};
    int64_t j;
    for (j = 0; j < visible; j++) p[j] = KERNEL(exp_approx)(scale * p[j] - largest.f);
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (j = 0; j + 8 <= visible; j += 8)
      for (int l = 0; l < 8; l++) lanes[l] += p[j + l];
    float total = 0.0f;
    for (; j < visible; j++) total += p[j];
    for (int l = 0; l < 8; l++) total += lanes[l];
    const float inverse = 1.0f / total; /* total >= 1: the largest term is exp(0) */
    for (j = 0; j < visible; j++) p[j] *= inverse;
    for (j = visible; j < t; j++) p[j] = 0.0f;
  }
}

/*
 * The gradient of causal_softmax_blocks: with p the probabilities and g = dL/dp,
 * dL/ds_ij = scale·p_ij·(g_ij − Σ_{k<=i} p_ik·g_ik) for j <= i and 0 for j > i. `d_scores` is `d_probs`
 * itself (in place) or overlaps nothing, and never overlaps `probs` (accel.c checks); out of place, each
 * row of g is copied into `d_scores` first, as in causal_softmax_blocks.
 */
static void KERNEL(causal_softmax_grad_blocks)(const float *restrict probs, const float *d_probs, float *d_scores, int64_t matrices, int64_t t,
                                               float scale) {
  for (int64_t row = 0; row < matrices * t; row++) {
    const int64_t visible = row % t + 1;
    const float *restrict p = probs + row * t;
    float *restrict ds = d_scores + row * t;
    if (d_probs != d_scores) memcpy(ds, d_probs + row * t, (size_t)visible * sizeof(float));
    const float weighted = KERNEL(dot)(p, ds, visible); /* Σ_k p_ik·g_ik */
    for (int64_t j = 0; j < visible; j++) ds[j] = scale * p[j] * (ds[j] - weighted);
    for (int64_t j = visible; j < t; j++) ds[j] = 0.0f;
  }
}

/*
 * The largest of x[0..v) (v >= 1), found as the largest of integer keys that order like the floats
 * (negative ones with their magnitude bits flipped; the map is its own inverse), as in
 * causal_softmax_blocks: an integer max vectorises, a float one (with its NaN rules) does not.
 */
static inline float KERNEL(row_max)(const float *restrict x, int64_t v) {
  int32_t largest_key = INT32_MIN;
  for (int64_t j = 0; j < v; j++) {
    union { float f; int32_t i; } z = {x[j]};
    const int32_t key = z.i ^ ((z.i >> 31) & 0x7fffffff);
    largest_key = key > largest_key ? key : largest_key;
  }
  const union { int32_t i; float f; } largest = {largest_key ^ ((largest_key >> 31) & 0x7fffffff)};
  return largest.f;
}

/* Σ exp(x[j] − shift) in eight float lanes (the exp and the sum in one loop: it vectorises, see below). */
static inline float KERNEL(sum_exp)(const float *restrict x, int64_t v, float shift) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= v; j += 8)
    for (int l = 0; l < 8; l++) lanes[l] += KERNEL(exp_approx)(x[j + l] - shift);
  float sum = 0.0f;
  for (; j < v; j++) sum += KERNEL(exp_approx)(x[j] - shift);
  for (int l = 0; l < 8; l++) sum += lanes[l];
  return sum;
}

/*
 * Softmax cross-entropy of `n` rows of `v` logits (v >= 1) against int32 targets in [0, v) (accel.c
 * checks them all first): with m the row's largest logit,
 *   lse_r  = m + log Σ_j exp(x_rj − m)        (max-subtracted: no overflow, the sum is >= 1)
 *   loss_r = lse_r − x_r[target_r]
 * exp by exp_approx (relative error ~2e-7), log by logf once per row: lse is within a few float32
 * ulps of the exact value. Two passes per row (max, then exp and sum in eight lanes); both vectorise.
 * Timed (N = 1024, V = 256, GCC 12) against exp into a scratch row and a separate sum: the AVX2 copy ran
 * 0.7-1.1 ns per logit either way, the one loop 5-10% ahead; the baseline (SSE2) copy was ~25% faster
 * with the scratch row, but the AVX2 copy is the one x86-64 machines run.
 */
static void KERNEL(softmax_cross_entropy_rows)(const float *restrict logits, const int32_t *restrict targets, float *restrict loss,
                                               float *restrict lse, int64_t n, int64_t v) {
  for (int64_t r = 0; r < n; r++) {
    const float *restrict x = logits + r * v;
    const float largest = KERNEL(row_max)(x, v);
    const float log_normalizer = largest + logf(KERNEL(sum_exp)(x, v, largest));
    lse[r] = log_normalizer;
    loss[r] = log_normalizer - x[targets[r]];
  }
}

/*
 * The gradient of softmax_cross_entropy_rows: dx_rj = dy_r·(exp(x_rj − lse_r) − [j = target_r]), one
 * pass (exp times dy) and the target's −dy after it. Timed against exp, then a scaling pass: 0.6-0.9
 * against 0.6-1.0 ns per logit on AVX2, equal on the baseline copy (no slow single pass here).
 * x − lse <= 0 up to rounding; below −87 exp_approx clamps (gives ~1.6e-38 where the exact value
 * underflows to 0).
 */
static void KERNEL(softmax_cross_entropy_grad_rows)(const float *restrict dy, const float *restrict logits, const int32_t *restrict targets,
                                                    const float *restrict lse, float *restrict d_logits, int64_t n, int64_t v) {
  for (int64_t r = 0; r < n; r++) {
    const float *restrict x = logits + r * v;
    float *restrict d = d_logits + r * v;
    const float shift = lse[r];
    const float g = dy[r];
    for (int64_t j = 0; j < v; j++) d[j] = g * KERNEL(exp_approx)(x[j] - shift);
    d[targets[r]] -= g;
  }
}

/*
 * The copy and constant experts of an MoE++ layer, per token (see copyConstantMix in
 * src/copy-constant.ts). mix [N, 2C] holds x·W_c on entry and the pairwise softmax [a1_c, a2_c] on exit;
 * gates [N, 1 + C] is (copy gate, constant gates); y [N, D] = x·(g0 + Σ_c g_c·a1_c) + Σ_c g_c·a2_c·v_c.
 */
static void KERNEL(copy_constant_rows)(const float *restrict x, const float *restrict gates, float *restrict mix, const float *restrict vectors,
                                       float *restrict y, int64_t n, int64_t d, int64_t c) {
  for (int64_t r = 0; r < n; r++) {
    const float *restrict xr = x + r * d;
    const float *restrict g = gates + r * (1 + c);
    float *restrict m = mix + r * 2 * c;
    float *restrict yr = y + r * d;
    float w = g[0];
    for (int64_t k = 0; k < c; k++) {
      const float l1 = m[2 * k], l2 = m[2 * k + 1];
      const float top = l1 > l2 ? l1 : l2;
      const float e1 = expf(l1 - top), e2 = expf(l2 - top);
      const float a1 = e1 / (e1 + e2), a2 = e2 / (e1 + e2);
      m[2 * k] = a1;
      m[2 * k + 1] = a2;
      w += g[1 + k] * a1;
    }
    for (int64_t j = 0; j < d; j++) yr[j] = w * xr[j];
    for (int64_t k = 0; k < c; k++) {
      const float scale = g[1 + k] * m[2 * k + 1];
      const float *restrict v = vectors + k * d;
      for (int64_t j = 0; j < d; j++) yr[j] += scale * v[j];
    }
  }
}

/*
 * The gradient of copy_constant_rows, all but the two products with W_c: dx = w·dy (the caller adds
 * dLogits·W_cᵀ), dGates, dLogits [N, 2C] (through the pairwise softmax) and dVectors [C, D] (overwritten).
 */
static void KERNEL(copy_constant_grad_rows)(const float *restrict dy, const float *restrict x, const float *restrict gates, const float *restrict mix,
                                            const float *restrict vectors, float *restrict dx, float *restrict d_gates, float *restrict d_logits,
                                            float *restrict d_vectors, int64_t n, int64_t d, int64_t c) {
  for (int64_t i = 0; i < c * d; i++) d_vectors[i] = 0.0f;
  for (int64_t r = 0; r < n; r++) {
    const float *restrict dyr = dy + r * d;
    const float *restrict xr = x + r * d;
    const float *restrict g = gates + r * (1 + c);
    const float *restrict m = mix + r * 2 * c;
    float *restrict dxr = dx + r * d;
    float *restrict dg = d_gates + r * (1 + c);
    float *restrict dl = d_logits + r * 2 * c;
    float w = g[0];
    for (int64_t k = 0; k < c; k++) w += g[1 + k] * m[2 * k];
    const float dw = KERNEL(dot)(dyr, xr, d); /* d y / d w = x */
    for (int64_t j = 0; j < d; j++) dxr[j] = w * dyr[j];
    dg[0] = dw;
    for (int64_t k = 0; k < c; k++) {
      const float a1 = m[2 * k], a2 = m[2 * k + 1];
      const float d_g_big = KERNEL(dot)(dyr, vectors + k * d, d); /* d y / d G_k = v_k */
      dg[1 + k] = dw * a1 + d_g_big * a2;
      const float da1 = dw * g[1 + k], da2 = d_g_big * g[1 + k];
      const float mean = a1 * da1 + a2 * da2;
      dl[2 * k] = a1 * (da1 - mean);
      dl[2 * k + 1] = a2 * (da2 - mean);
      const float big_g = g[1 + k] * a2;
      float *restrict dv = d_vectors + k * d;
      for (int64_t j = 0; j < d; j++) dv[j] += big_g * dyr[j];
    }
  }
}
