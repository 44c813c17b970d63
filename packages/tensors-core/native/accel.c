/*
 * @moepp/tensors-core native acceleration: a small N-API addon that runs OpenBLAS sgemm and a few
 * fused elementwise kernels in place on the tfjs wasm backend's heap.
 *
 * - OpenBLAS is not linked: it is dlopen'ed at run time (load()), so the addon builds with only a C
 *   compiler and Node's headers, and on a machine without OpenBLAS it loads and reports why it cannot
 *   run (the JS side then keeps the wasm kernels).
 * - Every kernel takes the wasm heap (the ArrayBuffer behind HEAPU8; it is replaced when the heap
 *   grows, so the caller passes the current one on every call) and element offsets into it as a
 *   Float32Array. Every offset, length and leading dimension is checked against the heap's size
 *   before a single element is touched; a bad call throws a RangeError and does nothing.
 *
 * Exports (see src/accel.ts for the typed wrapper):
 *   abiVersion: number (ACCEL_ABI_VERSION below)
 *   load(candidates: string[], threads: number, threadTimeout: number)
 *       -> { ok, library?, error?, config?, threads? }
 *   setThreads(n) -> threads now used
 *   sgemm(heap, transA, transB, m, n, k, alpha, aOffset, lda, strideA, bOffset, ldb, strideB,
 *         beta, cOffset, ldc, strideC, batch)
 *   swiglu(heap, upOffset, outOffset, rows, f)
 *   swigluGrad(heap, dyOffset, upOffset, dUpOffset, rows, f)
 *   gelu(heap, xOffset, yOffset, n)
 *   geluGrad(heap, dyOffset, xOffset, dxOffset, n)
 *   rmsNorm(heap, xOffset, weightOffset, yOffset, invRmsOffset, rows, d, eps)
 *   rmsNormGrad(heap, dyOffset, xOffset, weightOffset, invRmsOffset, dxOffset, dWeightOffset, rows, d)
 *   adamw(heap, weightOffset, gradientOffset, firstMomentOffset, secondMomentOffset, weightOutOffset,
 *         firstMomentOutOffset, secondMomentOutOffset, n, beta1, beta2, epsilon, stepSize,
 *         inverseRootCorrection2, decayFactor)
 *   rotary(heap, xOffset, cosOffset, sinOffset, yOffset, batch, seqLen, half, inverse)
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------ */
/* OpenBLAS, resolved at run time                                                                   */

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef void (*set_threads_fn)(int n);
typedef int (*get_threads_fn)(void);
typedef char *(*get_config_fn)(void);

static void *blas_handle = NULL;
static sgemm_fn blas_sgemm = NULL;
static set_threads_fn blas_set_threads = NULL;
static get_threads_fn blas_get_threads = NULL;
static get_config_fn blas_get_config = NULL;
static char blas_library[1024] = "";

/* ------------------------------------------------------------------------------------------------ */
/* N-API helpers                                                                                    */

#define CHECK_NAPI(env, call)                                                                        \
  do {                                                                                               \
    if ((call) != napi_ok) {                                                                         \
      napi_throw_error((env), NULL, "accel: N-API call failed: " #call);                             \
      return NULL;                                                                                   \
    }                                                                                                \
  } while (0)

#define MAX_ARGS 20

/* The arguments of one call, with the heap resolved to a float pointer and its length. */
typedef struct {
  napi_env env;
  const char *op;
  size_t argc;
  napi_value argv[MAX_ARGS];
  float *heap;
  int64_t heap_floats;
} call_t;

static int throw_range(call_t *call, const char *message) {
  char text[512];
  snprintf(text, sizeof text, "accel.%s: %s", call->op, message);
  napi_throw_range_error(call->env, NULL, text);
  return 0;
}

static int throw_type(call_t *call, const char *message) {
  char text[512];
  snprintf(text, sizeof text, "accel.%s: %s", call->op, message);
  napi_throw_type_error(call->env, NULL, text);
  return 0;
}

/* Reads argv[0] as the heap (an ArrayBuffer, or a typed array viewing one: the whole view is used). */
static int read_heap(call_t *call) {
  napi_value value = call->argv[0];
  bool is_buffer = false;
  bool is_typed = false;
  void *data = NULL;
  size_t bytes = 0;
  if (napi_is_arraybuffer(call->env, value, &is_buffer) != napi_ok) return throw_type(call, "cannot inspect the heap argument");
  if (is_buffer) {
    if (napi_get_arraybuffer_info(call->env, value, &data, &bytes) != napi_ok) return throw_type(call, "cannot read the heap ArrayBuffer");
  } else {
    if (napi_is_typedarray(call->env, value, &is_typed) != napi_ok || !is_typed) {
      return throw_type(call, "argument 'heap' must be an ArrayBuffer or a Float32Array");
    }
    napi_typedarray_type type;
    size_t length = 0;
    napi_value buffer;
    size_t byte_offset = 0;
    if (napi_get_typedarray_info(call->env, value, &type, &length, &data, &buffer, &byte_offset) != napi_ok) {
      return throw_type(call, "cannot read the heap typed array");
    }
    if (type != napi_float32_array) return throw_type(call, "argument 'heap' must be an ArrayBuffer or a Float32Array");
    bytes = length * sizeof(float);
  }
  if (data == NULL && bytes > 0) return throw_type(call, "the heap has no data (detached?)");
  if (((uintptr_t)data) % sizeof(float) != 0) return throw_range(call, "the heap is not 4-byte aligned");
  call->heap = (float *)data;
  call->heap_floats = (int64_t)(bytes / sizeof(float));
  return 1;
}

/* Reads argv[index] as a whole number in [min, max]. */
static int read_int(call_t *call, size_t index, const char *name, int64_t min, int64_t max, int64_t *out) {
  double value = 0;
  char text[256];
  if (index >= call->argc || napi_get_value_double(call->env, call->argv[index], &value) != napi_ok) {
    snprintf(text, sizeof text, "argument '%s' must be a number", name);
    return throw_type(call, text);
  }
  if (!(value >= (double)min && value <= (double)max) || value != floor(value)) {
    snprintf(text, sizeof text, "argument '%s' must be a whole number in [%lld, %lld], got %g", name,
             (long long)min, (long long)max, value);
    return throw_range(call, text);
  }
  *out = (int64_t)value;
  return 1;
}

static int read_double(call_t *call, size_t index, const char *name, double *out) {
  double value = 0;
  char text[256];
  if (index >= call->argc || napi_get_value_double(call->env, call->argv[index], &value) != napi_ok || !isfinite(value)) {
    snprintf(text, sizeof text, "argument '%s' must be a finite number", name);
    return throw_type(call, text);
  }
  *out = value;
  return 1;
}

static int read_float(call_t *call, size_t index, const char *name, float *out) {
  double value = 0;
  if (!read_double(call, index, name, &value)) return 0;
  *out = (float)value;
  return 1;
}

static int read_bool(call_t *call, size_t index, const char *name, int *out) {
  bool value = false;
  char text[256];
  if (index >= call->argc || napi_get_value_bool(call->env, call->argv[index], &value) != napi_ok) {
    snprintf(text, sizeof text, "argument '%s' must be a boolean", name);
    return throw_type(call, text);
  }
  *out = value ? 1 : 0;
  return 1;
}

/* Checks that [offset, offset + extent) lies inside the heap (extent 0: nothing is touched). */
static int check_span(call_t *call, const char *name, int64_t offset, int64_t extent) {
  char text[256];
  if (extent == 0) return 1;
  if (offset < 0 || extent < 0 || offset > call->heap_floats || extent > call->heap_floats - offset) {
    snprintf(text, sizeof text, "'%s' [%lld, %lld) is outside the heap of %lld floats", name, (long long)offset,
             (long long)(offset + extent), (long long)call->heap_floats);
    return throw_range(call, text);
  }
  return 1;
}

/* Largest size handed to BLAS (its integers are 32-bit) and largest heap offset (2^53). */
#define INT_LIMIT 2147483647LL
#define OFFSET_LIMIT 9007199254740991LL

/* a·b, or -1 when it exceeds OFFSET_LIMIT (both factors are >= 0). */
static int64_t product_or_fail(int64_t a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  if (a > OFFSET_LIMIT / b) return -1;
  return a * b;
}

/* Checks that `count` floats (rows·cols, computed without overflow) at `offset` lie inside the heap. */
static int check_block(call_t *call, const char *name, int64_t offset, int64_t rows, int64_t cols) {
  int64_t extent = product_or_fail(rows, cols);
  if (extent < 0) return throw_range(call, "a size overflows");
  return check_span(call, name, offset, extent);
}

/* Checks that an output span does not overlap an input span (the kernels assume they do not). */
static int check_disjoint(call_t *call, const char *output, int64_t output_offset, int64_t output_length, const char *input,
                          int64_t input_offset, int64_t input_length) {
  char text[256];
  if (output_length == 0 || input_length == 0) return 1;
  if (output_offset < input_offset + input_length && input_offset < output_offset + output_length) {
    snprintf(text, sizeof text, "'%s' overlaps '%s'", output, input);
    return throw_range(call, text);
  }
  return 1;
}

static int begin_call(napi_env env, napi_callback_info info, call_t *call, const char *op, size_t expected) {
  call->env = env;
  call->op = op;
  call->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &call->argc, call->argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "accel: cannot read the arguments");
    return 0;
  }
  if (call->argc < expected) {
    char text[128];
    snprintf(text, sizeof text, "expected %zu arguments, got %zu", expected, call->argc);
    return throw_type(call, text);
  }
  return read_heap(call);
}

/* ------------------------------------------------------------------------------------------------ */
/* load / setThreads                                                                                */

static void set_string(napi_env env, napi_value object, const char *key, const char *value) {
  napi_value text;
  if (napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &text) == napi_ok) napi_set_named_property(env, object, key, text);
}

static void set_number(napi_env env, napi_value object, const char *key, double value) {
  napi_value number;
  if (napi_create_double(env, value, &number) == napi_ok) napi_set_named_property(env, object, key, number);
}

static void set_bool(napi_env env, napi_value object, const char *key, int value) {
  napi_value flag;
  if (napi_get_boolean(env, value != 0, &flag) == napi_ok) napi_set_named_property(env, object, key, flag);
}

static int current_threads(void) { return blas_get_threads ? blas_get_threads() : 1; }

/*
 * load(candidates, threads, threadTimeout): dlopen the first candidate that has cblas_sgemm.
 * threadTimeout (OpenBLAS's OPENBLAS_THREAD_TIMEOUT, 4..30: idle workers spin for 2^t cycles before
 * sleeping) is set in the environment before the library starts its threads, unless the user set it.
 * Idempotent: once a library is loaded, later calls only set the thread count.
 */
static napi_value load(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_value result;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK_NAPI(env, napi_create_object(env, &result));
  double threads = 0;
  double timeout = 0;
  if (argc < 3 || napi_get_value_double(env, argv[1], &threads) != napi_ok || napi_get_value_double(env, argv[2], &timeout) != napi_ok) {
    napi_throw_type_error(env, NULL, "accel.load: expected (candidates: string[], threads: number, threadTimeout: number)");
    return NULL;
  }
  if (blas_handle == NULL) {
    if (timeout >= 4 && timeout <= 30 && getenv("OPENBLAS_THREAD_TIMEOUT") == NULL) {
      char text[16];
      snprintf(text, sizeof text, "%d", (int)timeout);
      setenv("OPENBLAS_THREAD_TIMEOUT", text, 0);
    }
    bool is_array = false;
    uint32_t count = 0;
    if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[0], &count) != napi_ok) {
      napi_throw_type_error(env, NULL, "accel.load: argument 'candidates' must be an array of strings");
      return NULL;
    }
    char errors[2048] = "";
    for (uint32_t i = 0; i < count && blas_handle == NULL; i++) {
      napi_value item;
      char path[1024];
      size_t length = 0;
      if (napi_get_element(env, argv[0], i, &item) != napi_ok) continue;
      if (napi_get_value_string_utf8(env, item, path, sizeof path, &length) != napi_ok || length == 0 || length >= sizeof path - 1) continue;
      void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (handle == NULL) {
        const char *why = dlerror();
        size_t used = strlen(errors);
        snprintf(errors + used, sizeof errors - used, "%s%s", used > 0 ? "; " : "", why ? why : path);
        continue;
      }
      sgemm_fn sgemm = (sgemm_fn)dlsym(handle, "cblas_sgemm");
      if (sgemm == NULL) {
        size_t used = strlen(errors);
        snprintf(errors + used, sizeof errors - used, "%s%s: no cblas_sgemm", used > 0 ? "; " : "", path);
        dlclose(handle);
        continue;
      }
      blas_handle = handle;
      blas_sgemm = sgemm;
      blas_set_threads = (set_threads_fn)dlsym(handle, "openblas_set_num_threads");
      blas_get_threads = (get_threads_fn)dlsym(handle, "openblas_get_num_threads");
      blas_get_config = (get_config_fn)dlsym(handle, "openblas_get_config");
      snprintf(blas_library, sizeof blas_library, "%s", path);
    }
    if (blas_handle == NULL) {
      set_bool(env, result, "ok", 0);
      set_string(env, result, "error", errors[0] ? errors : "no candidate library given");
      return result;
    }
  }
  if (threads >= 1 && threads <= 1024 && blas_set_threads) blas_set_threads((int)threads);
  set_bool(env, result, "ok", 1);
  set_string(env, result, "library", blas_library);
  if (blas_get_config) {
    const char *config = blas_get_config();
    if (config) set_string(env, result, "config", config);
  }
  set_number(env, result, "threads", current_threads());
  set_bool(env, result, "canSetThreads", blas_set_threads != NULL);
  return result;
}

static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double threads = 0;
  napi_value result;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_double(env, argv[0], &threads) != napi_ok || !(threads >= 1 && threads <= 1024) || threads != floor(threads)) {
    napi_throw_range_error(env, NULL, "accel.setThreads: argument 'threads' must be a whole number in [1, 1024]");
    return NULL;
  }
  if (blas_set_threads) blas_set_threads((int)threads);
  CHECK_NAPI(env, napi_create_int32(env, current_threads(), &result));
  return result;
}

/* ------------------------------------------------------------------------------------------------ */
/* sgemm                                                                                            */

/* Elements spanned by a row-major rows x cols matrix with leading dimension ld (ld >= cols). */
static int64_t matrix_extent(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols; }

/* Checks one operand: `batch` matrices of rows x cols (physical), `stride` apart, inside the heap. */
static int check_operand(call_t *call, const char *name, int64_t offset, int64_t rows, int64_t cols, int64_t ld,
                         int64_t stride, int64_t batch) {
  char text[256];
  if (ld < cols || ld < 1) {
    snprintf(text, sizeof text, "leading dimension of '%s' (%lld) must be >= its row length %lld and >= 1", name,
             (long long)ld, (long long)cols);
    return throw_range(call, text);
  }
  int64_t one = matrix_extent(rows, cols, ld);
  if (batch > 1 && stride > (OFFSET_LIMIT - one) / (batch - 1)) return throw_range(call, "batch stride overflows");
  return check_span(call, name, offset, one + (batch - 1) * stride);
}

/*
 * C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i] for i < batch, row-major, with A[i] = heap + aOffset +
 * i·strideA (a stride of 0 repeats one matrix). op(A) is m x k, op(B) k x n, C m x n.
 */
static napi_value sgemm(napi_env env, napi_callback_info info) {
  call_t call;
  if (!begin_call(env, info, &call, "sgemm", 18)) return NULL;
  if (blas_sgemm == NULL) {
    throw_type(&call, "OpenBLAS is not loaded (call load() first)");
    return NULL;
  }
  int trans_a, trans_b;
  int64_t m, n, k, a_offset, lda, stride_a, b_offset, ldb, stride_b, c_offset, ldc, stride_c, batch;
  float alpha, beta;
  if (!read_bool(&call, 1, "transA", &trans_a) || !read_bool(&call, 2, "transB", &trans_b) ||
      !read_int(&call, 3, "m", 0, INT_LIMIT, &m) || !read_int(&call, 4, "n", 0, INT_LIMIT, &n) ||
      !read_int(&call, 5, "k", 0, INT_LIMIT, &k) || !read_float(&call, 6, "alpha", &alpha) ||
      !read_int(&call, 7, "aOffset", 0, OFFSET_LIMIT, &a_offset) || !read_int(&call, 8, "lda", 1, INT_LIMIT, &lda) ||
      !read_int(&call, 9, "strideA", 0, OFFSET_LIMIT, &stride_a) ||
      !read_int(&call, 10, "bOffset", 0, OFFSET_LIMIT, &b_offset) || !read_int(&call, 11, "ldb", 1, INT_LIMIT, &ldb) ||
      !read_int(&call, 12, "strideB", 0, OFFSET_LIMIT, &stride_b) || !read_float(&call, 13, "beta", &beta) ||
      !read_int(&call, 14, "cOffset", 0, OFFSET_LIMIT, &c_offset) || !read_int(&call, 15, "ldc", 1, INT_LIMIT, &ldc) ||
      !read_int(&call, 16, "strideC", 0, OFFSET_LIMIT, &stride_c) || !read_int(&call, 17, "batch", 0, INT_LIMIT, &batch)) {
    return NULL;
  }
  if (batch == 0 || m == 0 || n == 0) return NULL;
  /* Physical shapes: A is m x k (k x m transposed), B is k x n (n x k transposed), C is m x n. */
  if (!check_operand(&call, "c", c_offset, m, n, ldc, stride_c, batch)) return NULL;
  if (batch > 1 && stride_c < matrix_extent(m, n, ldc)) {
    throw_range(&call, "'strideC' must not make the output matrices overlap");
    return NULL;
  }
  if (k > 0) {
    if (!check_operand(&call, "a", a_offset, trans_a ? k : m, trans_a ? m : k, lda, stride_a, batch)) return NULL;
    if (!check_operand(&call, "b", b_offset, trans_b ? n : k, trans_b ? k : n, ldb, stride_b, batch)) return NULL;
  }
  float *heap = call.heap;
  for (int64_t i = 0; i < batch; i++) {
    float *c = heap + c_offset + i * stride_c;
    if (k == 0) {
      /* BLAS with k = 0 scales C by beta; do it here so that no pointer into A or B is formed. */
      for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < n; j++) c[r * ldc + j] = beta == 0.0f ? 0.0f : beta * c[r * ldc + j];
      continue;
    }
    blas_sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS, trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)m,
               (int)n, (int)k, alpha, heap + a_offset + i * stride_a, (int)lda, heap + b_offset + i * stride_b, (int)ldb,
               beta, c, (int)ldc);
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* Elementwise kernels                                                                              */

/* The scalars of one AdamW update, each rounded once to float32 (see adamw() below). */
typedef struct {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, epsilon, step_size, inverse_root_correction2, decay_factor;
} adamw_scalars_t;

/*
 * Marks a kernel that must round every product and sum separately (no a·b + c -> FMA), to agree bit
 * for bit with the tfjs ops it replaces. GCC contracts across statements by default in GNU C mode;
 * Clang (whose default contracts only within one expression) needs nothing when the kernel writes one
 * operation per statement.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define NO_FP_CONTRACT
#endif

/* The elementwise kernels, twice: baseline, and AVX2 + FMA where the compiler can target it. */
#define KERNEL(name) name##_baseline
#include "elementwise.h"
#undef KERNEL

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_COPY 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define KERNEL(name) name##_avx2
#include "elementwise.h"
#undef KERNEL
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
#define HAVE_AVX2_COPY 0
#endif

/* Whether this CPU runs the AVX2 + FMA copies (decided once, at module load). */
static int use_avx2 = 0;

static void detect_cpu(void) {
#if HAVE_AVX2_COPY
  __builtin_cpu_init();
  use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
}

#if HAVE_AVX2_COPY
#define DISPATCH(name, ...) (use_avx2 ? name##_avx2(__VA_ARGS__) : name##_baseline(__VA_ARGS__))
#else
#define DISPATCH(name, ...) name##_baseline(__VA_ARGS__)
#endif

static napi_value swiglu(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t up_offset, out_offset, rows, f;
  if (!begin_call(env, info, &call, "swiglu", 5)) return NULL;
  if (!read_int(&call, 1, "upOffset", 0, OFFSET_LIMIT, &up_offset) || !read_int(&call, 2, "outOffset", 0, OFFSET_LIMIT, &out_offset) ||
      !read_int(&call, 3, "rows", 0, INT_LIMIT, &rows) || !read_int(&call, 4, "f", 0, INT_LIMIT, &f)) {
    return NULL;
  }
  if (!check_block(&call, "up", up_offset, rows, 2 * f) || !check_block(&call, "out", out_offset, rows, f) ||
      !check_disjoint(&call, "out", out_offset, rows * f, "up", up_offset, rows * 2 * f)) {
    return NULL;
  }
  DISPATCH(swiglu_rows, call.heap + up_offset, call.heap + out_offset, rows, f);
  return NULL;
}

static napi_value swiglu_grad(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t dy_offset, up_offset, d_up_offset, rows, f;
  if (!begin_call(env, info, &call, "swigluGrad", 6)) return NULL;
  if (!read_int(&call, 1, "dyOffset", 0, OFFSET_LIMIT, &dy_offset) || !read_int(&call, 2, "upOffset", 0, OFFSET_LIMIT, &up_offset) ||
      !read_int(&call, 3, "dUpOffset", 0, OFFSET_LIMIT, &d_up_offset) || !read_int(&call, 4, "rows", 0, INT_LIMIT, &rows) ||
      !read_int(&call, 5, "f", 0, INT_LIMIT, &f)) {
    return NULL;
  }
  if (!check_block(&call, "dy", dy_offset, rows, f) || !check_block(&call, "up", up_offset, rows, 2 * f) ||
      !check_block(&call, "dUp", d_up_offset, rows, 2 * f) ||
      !check_disjoint(&call, "dUp", d_up_offset, rows * 2 * f, "dy", dy_offset, rows * f) ||
      !check_disjoint(&call, "dUp", d_up_offset, rows * 2 * f, "up", up_offset, rows * 2 * f)) {
    return NULL;
  }
  DISPATCH(swiglu_grad_rows, call.heap + dy_offset, call.heap + up_offset, call.heap + d_up_offset, rows, f);
  return NULL;
}

static napi_value gelu(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t x_offset, y_offset, n;
  if (!begin_call(env, info, &call, "gelu", 4)) return NULL;
  if (!read_int(&call, 1, "xOffset", 0, OFFSET_LIMIT, &x_offset) || !read_int(&call, 2, "yOffset", 0, OFFSET_LIMIT, &y_offset) ||
      !read_int(&call, 3, "n", 0, OFFSET_LIMIT, &n)) {
    return NULL;
  }
  if (!check_span(&call, "x", x_offset, n) || !check_span(&call, "y", y_offset, n) ||
      !check_disjoint(&call, "y", y_offset, n, "x", x_offset, n)) {
    return NULL;
  }
  DISPATCH(gelu_values, call.heap + x_offset, call.heap + y_offset, n);
  return NULL;
}

static napi_value gelu_grad(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t dy_offset, x_offset, dx_offset, n;
  if (!begin_call(env, info, &call, "geluGrad", 5)) return NULL;
  if (!read_int(&call, 1, "dyOffset", 0, OFFSET_LIMIT, &dy_offset) || !read_int(&call, 2, "xOffset", 0, OFFSET_LIMIT, &x_offset) ||
      !read_int(&call, 3, "dxOffset", 0, OFFSET_LIMIT, &dx_offset) || !read_int(&call, 4, "n", 0, OFFSET_LIMIT, &n)) {
    return NULL;
  }
  if (!check_span(&call, "dy", dy_offset, n) || !check_span(&call, "x", x_offset, n) || !check_span(&call, "dx", dx_offset, n) ||
      !check_disjoint(&call, "dx", dx_offset, n, "dy", dy_offset, n) || !check_disjoint(&call, "dx", dx_offset, n, "x", x_offset, n)) {
    return NULL;
  }
  DISPATCH(gelu_grad_values, call.heap + dy_offset, call.heap + x_offset, call.heap + dx_offset, n);
  return NULL;
}

static napi_value rms_norm(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t x_offset, weight_offset, y_offset, inv_offset, rows, d;
  float eps;
  if (!begin_call(env, info, &call, "rmsNorm", 8)) return NULL;
  if (!read_int(&call, 1, "xOffset", 0, OFFSET_LIMIT, &x_offset) || !read_int(&call, 2, "weightOffset", 0, OFFSET_LIMIT, &weight_offset) ||
      !read_int(&call, 3, "yOffset", 0, OFFSET_LIMIT, &y_offset) || !read_int(&call, 4, "invRmsOffset", 0, OFFSET_LIMIT, &inv_offset) ||
      !read_int(&call, 5, "rows", 0, INT_LIMIT, &rows) || !read_int(&call, 6, "d", 1, INT_LIMIT, &d) ||
      !read_float(&call, 7, "eps", &eps)) {
    return NULL;
  }
  if (!check_block(&call, "x", x_offset, rows, d) || !check_span(&call, "weight", weight_offset, d) ||
      !check_block(&call, "y", y_offset, rows, d) || !check_span(&call, "invRms", inv_offset, rows) ||
      !check_disjoint(&call, "y", y_offset, rows * d, "x", x_offset, rows * d) ||
      !check_disjoint(&call, "y", y_offset, rows * d, "weight", weight_offset, d) ||
      !check_disjoint(&call, "y", y_offset, rows * d, "invRms", inv_offset, rows) ||
      !check_disjoint(&call, "invRms", inv_offset, rows, "x", x_offset, rows * d) ||
      !check_disjoint(&call, "invRms", inv_offset, rows, "weight", weight_offset, d)) {
    return NULL;
  }
  DISPATCH(rms_norm_rows, call.heap + x_offset, call.heap + weight_offset, call.heap + y_offset, call.heap + inv_offset, rows, d, eps);
  return NULL;
}

static napi_value rms_norm_grad(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t dy_offset, x_offset, weight_offset, inv_offset, dx_offset, dw_offset, rows, d;
  if (!begin_call(env, info, &call, "rmsNormGrad", 9)) return NULL;
  if (!read_int(&call, 1, "dyOffset", 0, OFFSET_LIMIT, &dy_offset) || !read_int(&call, 2, "xOffset", 0, OFFSET_LIMIT, &x_offset) ||
      !read_int(&call, 3, "weightOffset", 0, OFFSET_LIMIT, &weight_offset) ||
      !read_int(&call, 4, "invRmsOffset", 0, OFFSET_LIMIT, &inv_offset) || !read_int(&call, 5, "dxOffset", 0, OFFSET_LIMIT, &dx_offset) ||
      !read_int(&call, 6, "dWeightOffset", 0, OFFSET_LIMIT, &dw_offset) || !read_int(&call, 7, "rows", 0, INT_LIMIT, &rows) ||
      !read_int(&call, 8, "d", 1, INT_LIMIT, &d)) {
    return NULL;
  }
  if (!check_block(&call, "dy", dy_offset, rows, d) || !check_block(&call, "x", x_offset, rows, d) ||
      !check_span(&call, "weight", weight_offset, d) || !check_span(&call, "invRms", inv_offset, rows) ||
      !check_block(&call, "dx", dx_offset, rows, d) || !check_span(&call, "dWeight", dw_offset, d) ||
      !check_disjoint(&call, "dx", dx_offset, rows * d, "dy", dy_offset, rows * d) ||
      !check_disjoint(&call, "dx", dx_offset, rows * d, "x", x_offset, rows * d) ||
      !check_disjoint(&call, "dx", dx_offset, rows * d, "weight", weight_offset, d) ||
      !check_disjoint(&call, "dx", dx_offset, rows * d, "invRms", inv_offset, rows) ||
      !check_disjoint(&call, "dx", dx_offset, rows * d, "dWeight", dw_offset, d)) {
    return NULL;
  }
  double *accumulator = (double *)calloc((size_t)d, sizeof(double));
  float *scratch = (float *)malloc((size_t)d * sizeof(float));
  if (accumulator == NULL || scratch == NULL) {
    free(accumulator);
    free(scratch);
    napi_throw_error(env, NULL, "accel.rmsNormGrad: out of memory");
    return NULL;
  }
  DISPATCH(rms_norm_grad_rows, call.heap + dy_offset, call.heap + x_offset, call.heap + weight_offset, call.heap + inv_offset,
           call.heap + dx_offset, accumulator, scratch, rows, d);
  free(scratch);
  float *d_weight = call.heap + dw_offset;
  for (int64_t j = 0; j < d; j++) d_weight[j] = (float)accumulator[j];
  free(accumulator);
  return NULL;
}

/*
 * One AdamW update of one parameter of n elements: reads weight, gradient and both moments, writes
 * the new weight and moments to three other spans (which must not overlap any input or each other;
 * the inputs may overlap one another). The scalars arrive as doubles and are rounded to float32 once,
 * as tfjs does for a JS number in an op (1 - beta is formed in double first, like the JS caller).
 */
static napi_value adamw(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t offsets[7], n;
  double beta1, beta2, epsilon, step_size, inverse_root_correction2, decay_factor;
  static const char *const names[7] = {"weight", "gradient", "firstMoment", "secondMoment", "weightOut", "firstMomentOut", "secondMomentOut"};
  static const char *const offset_names[7] = {"weightOffset",    "gradientOffset",       "firstMomentOffset",    "secondMomentOffset",
                                              "weightOutOffset", "firstMomentOutOffset", "secondMomentOutOffset"};
  if (!begin_call(env, info, &call, "adamw", 15)) return NULL;
  for (size_t i = 0; i < 7; i++) {
    if (!read_int(&call, 1 + i, offset_names[i], 0, OFFSET_LIMIT, &offsets[i])) return NULL;
  }
  if (!read_int(&call, 8, "n", 0, OFFSET_LIMIT, &n) || !read_double(&call, 9, "beta1", &beta1) || !read_double(&call, 10, "beta2", &beta2) ||
      !read_double(&call, 11, "epsilon", &epsilon) || !read_double(&call, 12, "stepSize", &step_size) ||
      !read_double(&call, 13, "inverseRootCorrection2", &inverse_root_correction2) || !read_double(&call, 14, "decayFactor", &decay_factor)) {
    return NULL;
  }
  for (size_t i = 0; i < 7; i++) {
    if (!check_span(&call, names[i], offsets[i], n)) return NULL;
  }
  /* each output against every input and every other output */
  for (size_t out = 4; out < 7; out++) {
    for (size_t other = 0; other < 7; other++) {
      if (other != out && !check_disjoint(&call, names[out], offsets[out], n, names[other], offsets[other], n)) return NULL;
    }
  }
  const adamw_scalars_t scalars = {
      .beta1 = (float)beta1,
      .one_minus_beta1 = (float)(1.0 - beta1),
      .beta2 = (float)beta2,
      .one_minus_beta2 = (float)(1.0 - beta2),
      .epsilon = (float)epsilon,
      .step_size = (float)step_size,
      .inverse_root_correction2 = (float)inverse_root_correction2,
      .decay_factor = (float)decay_factor,
  };
  float *heap = call.heap;
  DISPATCH(adamw_values, heap + offsets[0], heap + offsets[1], heap + offsets[2], heap + offsets[3], heap + offsets[4], heap + offsets[5],
           heap + offsets[6], n, &scalars);
  return NULL;
}

/*
 * Rotary embedding (rotate-half convention) of x [batch, seqLen, 2·half] by the tables cos, sin
 * [seqLen, half] into y (same shape as x, overlapping nothing); inverse = true rotates by −angle, which
 * is the gradient of the forward rotation.
 */
static napi_value rotary(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t x_offset, cos_offset, sin_offset, y_offset, batch, seq_len, half;
  int inverse;
  if (!begin_call(env, info, &call, "rotary", 9)) return NULL;
  if (!read_int(&call, 1, "xOffset", 0, OFFSET_LIMIT, &x_offset) || !read_int(&call, 2, "cosOffset", 0, OFFSET_LIMIT, &cos_offset) ||
      !read_int(&call, 3, "sinOffset", 0, OFFSET_LIMIT, &sin_offset) || !read_int(&call, 4, "yOffset", 0, OFFSET_LIMIT, &y_offset) ||
      !read_int(&call, 5, "batch", 0, INT_LIMIT, &batch) || !read_int(&call, 6, "seqLen", 0, INT_LIMIT, &seq_len) ||
      !read_int(&call, 7, "half", 0, INT_LIMIT, &half) || !read_bool(&call, 8, "inverse", &inverse)) {
    return NULL;
  }
  const int64_t table = product_or_fail(seq_len, half);
  const int64_t rows = product_or_fail(batch, seq_len);
  const int64_t total = rows < 0 ? -1 : product_or_fail(rows, 2 * half);
  if (table < 0 || total < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_span(&call, "x", x_offset, total) || !check_span(&call, "cos", cos_offset, table) || !check_span(&call, "sin", sin_offset, table) ||
      !check_span(&call, "y", y_offset, total) || !check_disjoint(&call, "y", y_offset, total, "x", x_offset, total) ||
      !check_disjoint(&call, "y", y_offset, total, "cos", cos_offset, table) ||
      !check_disjoint(&call, "y", y_offset, total, "sin", sin_offset, table)) {
    return NULL;
  }
  DISPATCH(rotary_rows, call.heap + x_offset, call.heap + cos_offset, call.heap + sin_offset, call.heap + y_offset, batch, seq_len, half,
           inverse ? -1.0f : 1.0f);
  return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* Module                                                                                           */

/* Bumped whenever an export changes; src/accel.ts refuses an addon built from another version. */
#define ACCEL_ABI_VERSION 4

static napi_value init(napi_env env, napi_value exports) {
  napi_value abi;
  detect_cpu();
  if (napi_create_int32(env, ACCEL_ABI_VERSION, &abi) != napi_ok || napi_set_named_property(env, exports, "abiVersion", abi) != napi_ok) return NULL;
  napi_property_descriptor properties[] = {
      {"load", NULL, load, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_default, NULL},
      {"swiglu", NULL, swiglu, NULL, NULL, NULL, napi_default, NULL},
      {"swigluGrad", NULL, swiglu_grad, NULL, NULL, NULL, napi_default, NULL},
      {"gelu", NULL, gelu, NULL, NULL, NULL, napi_default, NULL},
      {"geluGrad", NULL, gelu_grad, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNormGrad", NULL, rms_norm_grad, NULL, NULL, NULL, napi_default, NULL},
      {"adamw", NULL, adamw, NULL, NULL, NULL, napi_default, NULL},
      {"rotary", NULL, rotary, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties) != napi_ok) return NULL;
  return exports;
}

#ifndef NODE_GYP_MODULE_NAME
#define NODE_GYP_MODULE_NAME accel
#endif
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
