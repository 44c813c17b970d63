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
 *   sgemmList(heap, products: Float64Array)   independent products, run in parallel
 *   swiglu(heap, upOffset, outOffset, rows, f)
 *   swigluGrad(heap, dyOffset, upOffset, dUpOffset, rows, f)
 *   gelu(heap, xOffset, yOffset, n)
 *   geluGrad(heap, dyOffset, xOffset, dxOffset, n)
 *   rmsNorm(heap, xOffset, weightOffset, yOffset, invRmsOffset, rows, d, eps)
 *   rmsNormGrad(heap, dyOffset, xOffset, weightOffset, invRmsOffset, dxOffset, dWeightOffset, rows, d)
 *   adamw(heap, weightOffset, gradientOffset, firstMomentOffset, secondMomentOffset, weightOutOffset,
 *         firstMomentOutOffset, secondMomentOutOffset, n, beta1, beta2, epsilon, stepSize,
 *         inverseRootCorrection2, decayFactor, gradientScale)
 *   sumOfSquares(heap, spans: Float64Array [offset0, length0, offset1, length1, ...]) -> number
 *   segmentSum(heap, xOffset, idsOffset, outOffset, rows, rowSize, numSegments)
 *   transpose(heap, xOffset, yOffset, layout: Float64Array [x's dims..., perm...])
 *   copyConstant(heap, xOffset, gatesOffset, mixOffset, vectorsOffset, yOffset, n, d, c)
 *   copyConstantGrad(heap, dyOffset, xOffset, gatesOffset, mixOffset, vectorsOffset, dxOffset,
 *                    dGatesOffset, dLogitsOffset, dVectorsOffset, n, d, c)
 *   rotary(heap, xOffset, cosOffset, sinOffset, yOffset, batch, seqLen, half, inverse)
 *   causalSoftmax(heap, scoresOffset, probsOffset, matrices, t, scale)   in place when probs = scores
 *   causalSoftmaxGrad(heap, probsOffset, dProbsOffset, dScoresOffset, matrices, t, scale)
 *       in place when dScores = dProbs
 *   softmaxCrossEntropy(heap, logitsOffset, targetsOffset, lossOffset, lseOffset, n, v)   targets int32
 *   softmaxCrossEntropyGrad(heap, dyOffset, logitsOffset, targetsOffset, lseOffset, dLogitsOffset, n, v)
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/*
 * Reads argv[index] as a Float64Array (a list argument: products, spans, a layout). Returns 0, throwing
 * nothing, when it is not one: each caller throws its own message, which says what the list must hold.
 */
static int read_float64_array(call_t *call, size_t index, const double **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *values = NULL;
  napi_value buffer;
  size_t byte_offset = 0;
  if (index >= call->argc || napi_is_typedarray(call->env, call->argv[index], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(call->env, call->argv[index], &type, length, &values, &buffer, &byte_offset) != napi_ok ||
      type != napi_float64_array) {
    return 0;
  }
  *data = (const double *)values;
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

/*
 * Threads: OpenBLAS is kept on ONE thread and the addon runs products on its own workers (this thread
 * plus a pool, see "Products in parallel"): OpenBLAS's threads sleep after a few cycles (the kit sets a
 * short OPENBLAS_THREAD_TIMEOUT so that they do not spin on the core JavaScript needs) and then cost
 * about 0.15 ms to wake for every product, more than a small product takes. `workers` is the count
 * setThreads() sets; without openblas_set_num_threads it stays 1 (OpenBLAS threads itself).
 */
static int workers = 1;

static int current_threads(void) { return workers; }

static void set_workers(int count) {
  if (blas_set_threads == NULL) {
    workers = 1;
    return;
  }
  blas_set_threads(1);
  workers = count < 1 ? 1 : count;
}

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
  if (threads >= 1 && threads <= 1024) set_workers((int)threads);
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
  set_workers((int)threads);
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

/* ------------------------------------------------------------------------------------------------ */
/* Products in parallel                                                                             */

/*
 * Products run on `workers` threads: this one and a pool of helpers that wait on a condition variable
 * (after spinning briefly, so that back-to-back calls do not pay a wake-up). A call splits its products
 * into pieces of similar size (whole products when there are enough of them, row or column blocks of
 * large ones otherwise) and every thread takes pieces from a shared counter until none are left. Work
 * below PARALLEL_MIN multiply-adds runs on this thread alone.
 */

/* One product C = alpha·op(A)·op(B) + beta·C, row-major, offsets in floats into the heap. */
typedef struct {
  int trans_a, trans_b;
  int64_t m, n, k;
  float alpha, beta;
  int64_t a_offset, lda, b_offset, ldb, c_offset, ldc;
} gemm_item_t;

/*
 * Work shared by the threads: piece i < count is claimed by whoever increments `next` to i + 1, and
 * run(context, i) does it. Pieces must be independent.
 */
typedef struct {
  void (*run)(const void *context, int64_t piece);
  const void *context;
  int64_t count;
  int64_t next;
} parallel_job_t;

/* The context of a job of products. */
typedef struct {
  float *heap;
  const gemm_item_t *items;
} gemm_context_t;

#define MAX_WORKERS 64
/* Below this many multiply-adds in one call, threads cost more than they save. */
#define PARALLEL_MIN 1048576LL
/* Pieces per worker a call aims for (some slack for uneven pieces). */
#define PIECES_PER_WORKER 3
/* Smallest piece edge (rows or columns) when splitting one product. */
#define MIN_PIECE_EDGE 32
/* Helpers poll for new work this long before they sleep, and a call for its helpers before it sleeps. */
#define SPIN_NANOSECONDS 50000

static int64_t now_nanoseconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Spins until *value != unchanged or SPIN_NANOSECONDS have passed (the clock is read every 64 polls). */
static void spin_while_equal(const int *value, int unchanged) {
  const int64_t deadline = now_nanoseconds() + SPIN_NANOSECONDS;
  for (int poll = 1; __atomic_load_n(value, __ATOMIC_ACQUIRE) == unchanged; poll++) {
    cpu_relax();
    if ((poll & 63) == 0 && now_nanoseconds() > deadline) return;
  }
}

static void run_gemm_item(float *heap, const gemm_item_t *item) {
  if (item->m == 0 || item->n == 0) return;
  float *c = heap + item->c_offset;
  if (item->k == 0) {
    /* BLAS with k = 0 scales C by beta; do it here so that no pointer into A or B is formed. */
    for (int64_t r = 0; r < item->m; r++)
      for (int64_t j = 0; j < item->n; j++) c[r * item->ldc + j] = item->beta == 0.0f ? 0.0f : item->beta * c[r * item->ldc + j];
    return;
  }
  blas_sgemm(CBLAS_ROW_MAJOR, item->trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS, item->trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)item->m,
             (int)item->n, (int)item->k, item->alpha, heap + item->a_offset, (int)item->lda, heap + item->b_offset, (int)item->ldb,
             item->beta, c, (int)item->ldc);
}

static void run_gemm_piece(const void *context, int64_t piece) {
  const gemm_context_t *products = (const gemm_context_t *)context;
  run_gemm_item(products->heap, products->items + piece);
}

static void work_on(parallel_job_t *job) {
  for (;;) {
    int64_t i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
    if (i >= job->count) break;
    job->run(job->context, i);
  }
}

/* The pool. `generation` counts jobs handed out; `pending` counts helpers not yet done with the current one. */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t done;
  parallel_job_t *job;
  int generation;
  int pending;
  int helpers;
  pthread_mutex_t in_use; /* one call at a time (addon instances in several JS threads share the pool) */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER};

/* arg: the generation when the helper was started (a later helper must not take an old, finished job). */
static void *pool_helper(void *arg) {
  int seen = (int)(intptr_t)arg;
  for (;;) {
    spin_while_equal(&pool.generation, seen);
    pthread_mutex_lock(&pool.lock);
    while (pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.lock);
    seen = pool.generation;
    parallel_job_t *job = pool.job;
    pthread_mutex_unlock(&pool.lock);
    work_on(job);
    pthread_mutex_lock(&pool.lock);
    if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool.done);
    pthread_mutex_unlock(&pool.lock);
  }
  return NULL;
}

/* Starts helpers until there are `wanted` (or as many as could be started); returns the count. */
static int ensure_helpers(int wanted) {
  pthread_mutex_lock(&pool.lock);
  while (pool.helpers < wanted) {
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    const int failed = pthread_create(&thread, &attributes, pool_helper, (void *)(intptr_t)pool.generation);
    pthread_attr_destroy(&attributes);
    if (failed) break;
    pool.helpers++;
  }
  const int helpers = pool.helpers;
  pthread_mutex_unlock(&pool.lock);
  return helpers;
}

/*
 * Runs the job on this thread and every helper; returns when all pieces are done. (Helpers are never
 * stopped: after setThreads lowers the count, the ones already started still take part.)
 */
static void run_on_pool(parallel_job_t *job) {
  pthread_mutex_lock(&pool.lock);
  pool.job = job;
  pool.pending = pool.helpers;
  __atomic_add_fetch(&pool.generation, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.lock);
  work_on(job);
  if (__atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0 && pool.helpers == 1) spin_while_equal(&pool.pending, 1);
  pthread_mutex_lock(&pool.lock);
  while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.lock);
  pthread_mutex_unlock(&pool.lock);
}

static int64_t item_work(const gemm_item_t *item) { return item->m * item->n * (item->k > 0 ? item->k : 1); }

/*
 * Splits `item` into `pieces` blocks of rows of C (or of columns, when there are too few rows), each
 * an independent product over the same k; returns how many it wrote to `out`.
 */
static int64_t split_item(const gemm_item_t *item, int64_t pieces, gemm_item_t *out) {
  const int by_rows = item->m >= item->n || item->m >= pieces * MIN_PIECE_EDGE;
  const int64_t edge = by_rows ? item->m : item->n;
  if (pieces > edge / MIN_PIECE_EDGE) pieces = edge / MIN_PIECE_EDGE;
  if (pieces < 2 || item->k == 0) {
    out[0] = *item;
    return 1;
  }
  for (int64_t p = 0; p < pieces; p++) {
    const int64_t first = edge * p / pieces, last = edge * (p + 1) / pieces;
    gemm_item_t piece = *item;
    if (by_rows) {
      /* rows [first, last) of op(A) and C */
      piece.m = last - first;
      piece.a_offset += item->trans_a ? first : first * item->lda;
      piece.c_offset += first * item->ldc;
    } else {
      /* columns [first, last) of op(B) and C */
      piece.n = last - first;
      piece.b_offset += item->trans_b ? first * item->ldb : first;
      piece.c_offset += first;
    }
    out[p] = piece;
  }
  return pieces;
}

/*
 * Runs a job's pieces on every worker when there are 2 or more workers and the pool is free (another JS
 * thread may hold it), else on this thread alone. `parallel` false: this thread alone.
 */
static void run_job(parallel_job_t *job, int parallel) {
  const int threads = workers > MAX_WORKERS ? MAX_WORKERS : workers;
  if (parallel && threads >= 2 && job->count >= 2 && pthread_mutex_trylock(&pool.in_use) == 0) {
    if (ensure_helpers(threads - 1) >= 1) {
      run_on_pool(job);
      pthread_mutex_unlock(&pool.in_use);
      return;
    }
    pthread_mutex_unlock(&pool.in_use);
  }
  work_on(job);
}

/* Runs independent products (no output may overlap another product's operands or output). */
static void run_gemm_items(float *heap, const gemm_item_t *items, int64_t count) {
  int64_t total = 0;
  for (int64_t i = 0; i < count; i++) total += item_work(items + i);
  gemm_context_t whole = {heap, items};
  parallel_job_t serial = {run_gemm_piece, &whole, count, 0};
  if (workers < 2 || total < PARALLEL_MIN) {
    work_on(&serial);
    return;
  }
  /* Pieces: items larger than total / target are split so that the threads finish together. */
  const int64_t target = (int64_t)(workers > MAX_WORKERS ? MAX_WORKERS : workers) * PIECES_PER_WORKER;
  int64_t capacity = 0;
  for (int64_t i = 0; i < count; i++) capacity += 1 + item_work(items + i) * target / total;
  gemm_item_t *pieces = (gemm_item_t *)malloc((size_t)capacity * sizeof(gemm_item_t));
  if (pieces == NULL) {
    run_job(&serial, 1);
    return;
  }
  int64_t used = 0;
  for (int64_t i = 0; i < count; i++) {
    const int64_t share = item_work(items + i) * target / total;
    used += split_item(items + i, share < 1 ? 1 : share, pieces + used);
  }
  gemm_context_t split = {heap, pieces};
  parallel_job_t job = {run_gemm_piece, &split, used, 0};
  run_job(&job, 1);
  free(pieces);
}

/* Checks one product's operands against the heap (as check_operand with batch 1). */
static int check_item(call_t *call, const gemm_item_t *item) {
  if (item->m == 0 || item->n == 0) return 1;
  if (!check_operand(call, "c", item->c_offset, item->m, item->n, item->ldc, 0, 1)) return 0;
  if (item->k == 0) return 1;
  return check_operand(call, "a", item->a_offset, item->trans_a ? item->k : item->m, item->trans_a ? item->m : item->k, item->lda, 0, 1) &&
         check_operand(call, "b", item->b_offset, item->trans_b ? item->n : item->k, item->trans_b ? item->k : item->n, item->ldb, 0, 1);
}

/*
 * C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i] for i < batch, row-major, with A[i] = heap + aOffset +
 * i·strideA (a stride of 0 repeats one matrix). op(A) is m x k, op(B) k x n, C m x n. The batch's
 * products run in parallel (see run_gemm_items).
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
  gemm_item_t *items = (gemm_item_t *)malloc((size_t)batch * sizeof(gemm_item_t));
  if (items == NULL) {
    napi_throw_error(env, NULL, "accel.sgemm: out of memory");
    return NULL;
  }
  for (int64_t i = 0; i < batch; i++) {
    items[i] = (gemm_item_t){trans_a, trans_b, m, n, k, alpha, beta, a_offset + i * stride_a, lda, b_offset + i * stride_b, ldb,
                             c_offset + i * stride_c, ldc};
  }
  run_gemm_items(call.heap, items, batch);
  free(items);
  return NULL;
}

/* Floats per product in sgemmList's descriptor array. */
#define GEMM_FIELDS 13

/* A row-major block of the heap: `rows` x `cols` floats, rows `ld` apart, from `offset` (empty when rows or cols is 0). */
typedef struct {
  int64_t offset, rows, cols, ld;
} block_t;

/* The largest integer <= a / b, for b > 0. */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/*
 * Whether two blocks share an element. With the same leading dimension L the test is exact: element
 * x + i1·L + j1 is element y + i2·L + j2 iff j1 − j2 = d + k·L with d = y − x and k = i2 − i1, so the
 * blocks overlap iff some k in [−(x.rows − 1), y.rows − 1] puts d + k·L in [−(y.cols − 1), x.cols − 1].
 * Column blocks of one matrix (attention heads written side by side into [B, T, H, hd]) thus do not
 * collide. Blocks with different leading dimensions are compared by their spans first..last, which is
 * conservative.
 */
static int blocks_overlap(const block_t *x, const block_t *y) {
  if (x->rows == 0 || x->cols == 0 || y->rows == 0 || y->cols == 0) return 0;
  /* first the spans (cheap, and enough for blocks in different tensors), then the exact test */
  if (!(x->offset < y->offset + matrix_extent(y->rows, y->cols, y->ld) && y->offset < x->offset + matrix_extent(x->rows, x->cols, x->ld))) return 0;
  if (x->ld != y->ld) return 1;
  const int64_t ld = x->ld, d = y->offset - x->offset;
  int64_t low = -floor_div(d + y->cols - 1, ld); /* ceil((1 − y.cols − d) / L) */
  int64_t high = floor_div(x->cols - 1 - d, ld);
  if (low < 1 - x->rows) low = 1 - x->rows;
  if (high > y->rows - 1) high = y->rows - 1;
  return low <= high;
}

/*
 * sgemmList(heap, products: Float64Array): independent products, GEMM_FIELDS numbers each:
 * [transA, transB, m, n, k, alpha, aOffset, lda, bOffset, ldb, beta, cOffset, ldc] (transA/B 0 or 1).
 * They run in parallel (see run_gemm_items), so each output must share no element with another
 * product's operands or output (checked by blocks_overlap: exactly for the same leading dimension).
 */
static napi_value sgemm_list(napi_env env, napi_callback_info info) {
  call_t call;
  if (!begin_call(env, info, &call, "sgemmList", 2)) return NULL;
  if (blas_sgemm == NULL) {
    throw_type(&call, "OpenBLAS is not loaded (call load() first)");
    return NULL;
  }
  const double *fields = NULL;
  size_t length = 0;
  if (!read_float64_array(&call, 1, &fields, &length)) {
    throw_type(&call, "argument 'products' must be a Float64Array");
    return NULL;
  }
  if (length % GEMM_FIELDS != 0) {
    char text[160];
    snprintf(text, sizeof text, "argument 'products' must hold %d numbers per product, got %zu numbers", GEMM_FIELDS, length);
    throw_range(&call, text);
    return NULL;
  }
  const int64_t count = (int64_t)(length / GEMM_FIELDS);
  if (count == 0) return NULL;
  gemm_item_t *items = (gemm_item_t *)malloc((size_t)count * sizeof(gemm_item_t));
  block_t(*blocks)[3] = (block_t(*)[3])malloc((size_t)count * sizeof *blocks); /* output, a, b of each product */
  if (items == NULL || blocks == NULL) {
    free(items);
    free(blocks);
    napi_throw_error(env, NULL, "accel.sgemmList: out of memory");
    return NULL;
  }
  static const char *const names[GEMM_FIELDS] = {"transA", "transB", "m", "n", "k", "alpha", "aOffset", "lda", "bOffset", "ldb", "beta", "cOffset", "ldc"};
  static const int64_t limits[GEMM_FIELDS] = {1, 1, INT_LIMIT, INT_LIMIT, INT_LIMIT, 0, OFFSET_LIMIT, INT_LIMIT, OFFSET_LIMIT, INT_LIMIT, 0, OFFSET_LIMIT, INT_LIMIT};
  int ok = 1;
  for (int64_t i = 0; i < count && ok; i++) {
    const double *f = fields + i * GEMM_FIELDS;
    for (int j = 0; j < GEMM_FIELDS && ok; j++) {
      char text[200];
      const int is_scalar = j == 5 || j == 10;
      const double minimum = (j == 7 || j == 9 || j == 12) ? 1 : 0;
      if (is_scalar ? !isfinite(f[j]) : !(f[j] >= minimum && f[j] <= (double)limits[j] && f[j] == floor(f[j]))) {
        if (is_scalar) snprintf(text, sizeof text, "product %lld: '%s' must be a finite number, got %g", (long long)i, names[j], f[j]);
        else snprintf(text, sizeof text, "product %lld: '%s' must be a whole number in [%g, %lld], got %g", (long long)i, names[j], minimum, (long long)limits[j], f[j]);
        ok = throw_range(&call, text);
      }
    }
    if (!ok) break;
    gemm_item_t *item = items + i;
    *item = (gemm_item_t){(int)f[0], (int)f[1], (int64_t)f[2], (int64_t)f[3], (int64_t)f[4], (float)f[5], (float)f[10], (int64_t)f[6],
                          (int64_t)f[7], (int64_t)f[8], (int64_t)f[9], (int64_t)f[11], (int64_t)f[12]};
    ok = check_item(&call, item);
    if (!ok) break;
    const int empty = item->m == 0 || item->n == 0;
    const int reads = !empty && item->k > 0;
    /* physical shapes; an operand that is not read is an empty block */
    blocks[i][0] = (block_t){item->c_offset, empty ? 0 : item->m, item->n, item->ldc};
    blocks[i][1] = (block_t){item->a_offset, reads ? (item->trans_a ? item->k : item->m) : 0, item->trans_a ? item->m : item->k, item->lda};
    blocks[i][2] = (block_t){item->b_offset, reads ? (item->trans_b ? item->n : item->k) : 0, item->trans_b ? item->k : item->n, item->ldb};
  }
  /* each output against every other product's output and operands */
  for (int64_t i = 0; i < count && ok; i++) {
    for (int64_t j = 0; j < count && ok; j++) {
      if (i == j) continue;
      for (int s = 0; s < 3 && ok; s++) {
        if (blocks_overlap(&blocks[i][0], &blocks[j][s])) {
          char text[200];
          static const char *const what[3] = {"output", "a", "b"};
          snprintf(text, sizeof text, "the output of product %lld overlaps the %s of product %lld (products run in parallel)", (long long)i,
                   what[s], (long long)j);
          ok = throw_range(&call, text);
        }
      }
    }
  }
  if (ok) run_gemm_items(call.heap, items, count);
  free(items);
  free(blocks);
  return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* Elementwise kernels                                                                              */

/* The scalars of one AdamW update, each rounded once to float32 (see adamw() below). */
typedef struct {
  float gradient_scale, beta1, one_minus_beta1, beta2, one_minus_beta2, epsilon, step_size, inverse_root_correction2, decay_factor;
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

/* SwiGLU and its gradient in blocks of SWIGLU_ROWS rows for the workers, when there are enough elements. */
#define SWIGLU_ROWS 64
#define PARALLEL_ELEMENTS 65536

typedef struct {
  const float *up;
  const float *dy; /* gradient only */
  float *out;      /* y [rows, F], or dUp [rows, 2F] */
  int64_t rows, f;
} swiglu_context_t;

static void swiglu_chunk(const void *context, int64_t piece) {
  const swiglu_context_t *c = (const swiglu_context_t *)context;
  const int64_t first = piece * SWIGLU_ROWS;
  const int64_t rows = c->rows - first < SWIGLU_ROWS ? c->rows - first : SWIGLU_ROWS;
  DISPATCH(swiglu_rows, c->up + first * 2 * c->f, c->out + first * c->f, rows, c->f);
}

static void swiglu_grad_chunk(const void *context, int64_t piece) {
  const swiglu_context_t *c = (const swiglu_context_t *)context;
  const int64_t first = piece * SWIGLU_ROWS;
  const int64_t rows = c->rows - first < SWIGLU_ROWS ? c->rows - first : SWIGLU_ROWS;
  DISPATCH(swiglu_grad_rows, c->dy + first * c->f, c->up + first * 2 * c->f, c->out + first * 2 * c->f, rows, c->f);
}

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
  const swiglu_context_t context = {call.heap + up_offset, NULL, call.heap + out_offset, rows, f};
  parallel_job_t job = {swiglu_chunk, &context, (rows + SWIGLU_ROWS - 1) / SWIGLU_ROWS, 0};
  run_job(&job, rows * f >= PARALLEL_ELEMENTS);
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
  const swiglu_context_t context = {call.heap + up_offset, call.heap + dy_offset, call.heap + d_up_offset, rows, f};
  parallel_job_t job = {swiglu_grad_chunk, &context, (rows + SWIGLU_ROWS - 1) / SWIGLU_ROWS, 0};
  run_job(&job, rows * f >= PARALLEL_ELEMENTS);
  return NULL;
}

/* GELU and its gradient in chunks of ELEMENT_CHUNK elements for the workers. */
#define ELEMENT_CHUNK 16384

typedef struct {
  const float *dy; /* gradient only */
  const float *x;
  float *out; /* y, or dx */
  int64_t n;
} gelu_context_t;

static void gelu_chunk(const void *context, int64_t piece) {
  const gelu_context_t *c = (const gelu_context_t *)context;
  const int64_t first = piece * ELEMENT_CHUNK;
  DISPATCH(gelu_values, c->x + first, c->out + first, c->n - first < ELEMENT_CHUNK ? c->n - first : ELEMENT_CHUNK);
}

static void gelu_grad_chunk(const void *context, int64_t piece) {
  const gelu_context_t *c = (const gelu_context_t *)context;
  const int64_t first = piece * ELEMENT_CHUNK;
  DISPATCH(gelu_grad_values, c->dy + first, c->x + first, c->out + first, c->n - first < ELEMENT_CHUNK ? c->n - first : ELEMENT_CHUNK);
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
  const gelu_context_t context = {NULL, call.heap + x_offset, call.heap + y_offset, n};
  parallel_job_t job = {gelu_chunk, &context, (n + ELEMENT_CHUNK - 1) / ELEMENT_CHUNK, 0};
  run_job(&job, n >= PARALLEL_ELEMENTS);
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
  const gelu_context_t context = {call.heap + dy_offset, call.heap + x_offset, call.heap + dx_offset, n};
  parallel_job_t job = {gelu_grad_chunk, &context, (n + ELEMENT_CHUNK - 1) / ELEMENT_CHUNK, 0};
  run_job(&job, n >= PARALLEL_ELEMENTS);
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

/* An AdamW update in chunks of ADAMW_CHUNK elements, for the workers. */
#define ADAMW_CHUNK 32768

typedef struct {
  float *heap;
  const int64_t *offsets; /* weight, gradient, first, second moment; then the three outputs */
  int64_t n;
  const adamw_scalars_t *scalars;
} adamw_context_t;

static void adamw_chunk(const void *context, int64_t piece) {
  const adamw_context_t *update = (const adamw_context_t *)context;
  const int64_t first = piece * ADAMW_CHUNK;
  const int64_t count = update->n - first < ADAMW_CHUNK ? update->n - first : ADAMW_CHUNK;
  float *const heap = update->heap;
  const int64_t *const o = update->offsets;
  DISPATCH(adamw_values, heap + o[0] + first, heap + o[1] + first, heap + o[2] + first, heap + o[3] + first, heap + o[4] + first,
           heap + o[5] + first, heap + o[6] + first, count, update->scalars);
}

/*
 * One AdamW update of one parameter of n elements: reads weight, gradient and both moments, writes
 * the new weight and moments to three other spans (which must not overlap any input or each other;
 * the inputs may overlap one another). The scalars arrive as doubles and are rounded to float32 once,
 * as tfjs does for a JS number in an op (1 - beta is formed in double first, like the JS caller).
 * gradientScale multiplies the gradient first (gradient clipping by global norm; 1 = none).
 */
static napi_value adamw(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t offsets[7], n;
  double beta1, beta2, epsilon, step_size, inverse_root_correction2, decay_factor, gradient_scale;
  static const char *const names[7] = {"weight", "gradient", "firstMoment", "secondMoment", "weightOut", "firstMomentOut", "secondMomentOut"};
  static const char *const offset_names[7] = {"weightOffset",    "gradientOffset",       "firstMomentOffset",    "secondMomentOffset",
                                              "weightOutOffset", "firstMomentOutOffset", "secondMomentOutOffset"};
  if (!begin_call(env, info, &call, "adamw", 16)) return NULL;
  for (size_t i = 0; i < 7; i++) {
    if (!read_int(&call, 1 + i, offset_names[i], 0, OFFSET_LIMIT, &offsets[i])) return NULL;
  }
  if (!read_int(&call, 8, "n", 0, OFFSET_LIMIT, &n) || !read_double(&call, 9, "beta1", &beta1) || !read_double(&call, 10, "beta2", &beta2) ||
      !read_double(&call, 11, "epsilon", &epsilon) || !read_double(&call, 12, "stepSize", &step_size) ||
      !read_double(&call, 13, "inverseRootCorrection2", &inverse_root_correction2) || !read_double(&call, 14, "decayFactor", &decay_factor) ||
      !read_double(&call, 15, "gradientScale", &gradient_scale)) {
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
      .gradient_scale = (float)gradient_scale,
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
  const adamw_context_t context = {heap, offsets, n, &scalars};
  parallel_job_t job = {adamw_chunk, &context, (n + ADAMW_CHUNK - 1) / ADAMW_CHUNK, 0};
  run_job(&job, n >= 2 * ADAMW_CHUNK); /* memory-bound: two threads move about 1.5x the bytes of one */
  return NULL;
}

/*
 * segmentSum(heap, xOffset, idsOffset, outOffset, rows, rowSize, numSegments): out[s] = Σ_{r: ids[r] = s}
 * x[r] over rows of rowSize floats (the scatter-add of an MoE layer, the gradient of a gather). ids are
 * int32 in the same heap (idsOffset counts 4-byte elements too); an id outside [0, numSegments) adds
 * nowhere. out [numSegments, rowSize] is overwritten and must not overlap x or ids.
 */
static napi_value segment_sum(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t x_offset, ids_offset, out_offset, rows, row_size, segments;
  if (!begin_call(env, info, &call, "segmentSum", 7)) return NULL;
  if (!read_int(&call, 1, "xOffset", 0, OFFSET_LIMIT, &x_offset) || !read_int(&call, 2, "idsOffset", 0, OFFSET_LIMIT, &ids_offset) ||
      !read_int(&call, 3, "outOffset", 0, OFFSET_LIMIT, &out_offset) || !read_int(&call, 4, "rows", 0, INT_LIMIT, &rows) ||
      !read_int(&call, 5, "rowSize", 0, INT_LIMIT, &row_size) || !read_int(&call, 6, "numSegments", 0, INT_LIMIT, &segments)) {
    return NULL;
  }
  const int64_t x_length = product_or_fail(rows, row_size);
  const int64_t out_length = product_or_fail(segments, row_size);
  if (x_length < 0 || out_length < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_span(&call, "x", x_offset, x_length) || !check_span(&call, "ids", ids_offset, rows) || !check_span(&call, "out", out_offset, out_length) ||
      !check_disjoint(&call, "out", out_offset, out_length, "x", x_offset, x_length) ||
      !check_disjoint(&call, "out", out_offset, out_length, "ids", ids_offset, rows)) {
    return NULL;
  }
  float *out = call.heap + out_offset;
  const float *x = call.heap + x_offset;
  const int32_t *ids = (const int32_t *)(call.heap + ids_offset);
  memset(out, 0, (size_t)out_length * sizeof(float));
  for (int64_t r = 0; r < rows; r++) {
    const int64_t segment = ids[r];
    if (segment < 0 || segment >= segments) continue;
    DISPATCH(add_row, out + segment * row_size, x + r * row_size, row_size);
  }
  return NULL;
}

/*
 * transpose(heap, xOffset, yOffset, layout: Float64Array [x's dims..., perm...]): y = x transposed by perm
 * (y's axis i is x's axis perm[i]), for 4-byte elements (float32 or int32). The trailing axes perm
 * leaves in place are copied as one run per output position; rank at most 8. y must not overlap x.
 */
#define MAX_RANK 8
static napi_value transpose(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t x_offset, y_offset;
  if (!begin_call(env, info, &call, "transpose", 4)) return NULL;
  if (!read_int(&call, 1, "xOffset", 0, OFFSET_LIMIT, &x_offset) || !read_int(&call, 2, "yOffset", 0, OFFSET_LIMIT, &y_offset)) return NULL;
  const double *layout = NULL;
  size_t length = 0;
  if (!read_float64_array(&call, 3, &layout, &length) || length % 2 != 0 || length / 2 > MAX_RANK) {
    throw_type(&call, "argument 'layout' must be a Float64Array of x's dims then the permutation, rank <= 8");
    return NULL;
  }
  const int rank = (int)(length / 2);
  int64_t dims[MAX_RANK], perm[MAX_RANK], x_strides[MAX_RANK], total = 1;
  int seen[MAX_RANK] = {0};
  for (int i = 0; i < rank; i++) {
    const double dim = layout[i], axis = layout[rank + i];
    if (!(dim >= 0 && dim <= (double)INT_LIMIT && dim == floor(dim)) || !(axis >= 0 && axis < rank && axis == floor(axis)) || seen[(int)axis]) {
      throw_range(&call, "'layout' must hold whole dims >= 0 and a permutation of 0..rank-1");
      return NULL;
    }
    dims[i] = (int64_t)dim;
    perm[i] = (int64_t)axis;
    seen[(int)axis] = 1;
    total = product_or_fail(total, dims[i]);
    if (total < 0) {
      throw_range(&call, "a size overflows");
      return NULL;
    }
  }
  if (!check_span(&call, "x", x_offset, total) || !check_span(&call, "y", y_offset, total) ||
      !check_disjoint(&call, "y", y_offset, total, "x", x_offset, total)) {
    return NULL;
  }
  if (total == 0) return NULL;
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; i--) {
    x_strides[i] = stride;
    stride *= dims[i];
  }
  /* the trailing output axes that are x's trailing axes in order form one contiguous run */
  int outer = rank;
  int64_t run = 1;
  while (outer > 0 && perm[outer - 1] == outer - 1 && (outer == rank || perm[outer] == outer)) {
    outer--;
    run *= dims[outer];
  }
  int64_t index[MAX_RANK] = {0};
  const float *x = call.heap + x_offset;
  float *y = call.heap + y_offset;
  for (int64_t at = 0; at < total; at += run) {
    int64_t source = 0;
    for (int i = 0; i < outer; i++) source += index[i] * x_strides[perm[i]];
    memcpy(y + at, x + source, (size_t)run * sizeof(float));
    for (int i = outer - 1; i >= 0; i--) {
      if (++index[i] < dims[perm[i]]) break;
      index[i] = 0;
    }
  }
  return NULL;
}

/*
 * sumOfSquares(heap, spans): Σ x² over several spans of the heap (the squared global norm of a model's
 * gradients, for clipping), accumulated in double; spans is a Float64Array of (offset, length) pairs.
 */
static napi_value sum_of_squares(napi_env env, napi_callback_info info) {
  call_t call;
  if (!begin_call(env, info, &call, "sumOfSquares", 2)) return NULL;
  const double *spans = NULL;
  size_t length = 0;
  napi_value result;
  if (!read_float64_array(&call, 1, &spans, &length) || length % 2 != 0) {
    throw_type(&call, "argument 'spans' must be a Float64Array of (offset, length) pairs");
    return NULL;
  }
  for (size_t i = 0; i < length; i += 2) {
    char text[160];
    if (!(spans[i] >= 0 && spans[i] <= (double)OFFSET_LIMIT && spans[i] == floor(spans[i])) ||
        !(spans[i + 1] >= 0 && spans[i + 1] <= (double)OFFSET_LIMIT && spans[i + 1] == floor(spans[i + 1]))) {
      snprintf(text, sizeof text, "span %zu: offset and length must be whole numbers >= 0, got (%g, %g)", i / 2, spans[i], spans[i + 1]);
      throw_range(&call, text);
      return NULL;
    }
    snprintf(text, sizeof text, "span %zu", i / 2);
    if (!check_span(&call, text, (int64_t)spans[i], (int64_t)spans[i + 1])) return NULL;
  }
  double total = 0;
  for (size_t i = 0; i < length; i += 2) total += DISPATCH(sum_of_squares_values, call.heap + (int64_t)spans[i], (int64_t)spans[i + 1]);
  CHECK_NAPI(env, napi_create_double(env, total, &result));
  return result;
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

/*
 * causalSoftmax(heap, scoresOffset, probsOffset, matrices, t, scale): the attention weights of
 * `matrices` score blocks [t, t] (one per batch row and head, back to back): row i of each becomes the
 * softmax over j <= i of scale·s_ij, and exactly 0 for j > i. In place when probsOffset == scoresOffset;
 * otherwise probs must not overlap scores.
 */
static napi_value causal_softmax(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t scores_offset, probs_offset, matrices, t;
  float scale;
  if (!begin_call(env, info, &call, "causalSoftmax", 6)) return NULL;
  if (!read_int(&call, 1, "scoresOffset", 0, OFFSET_LIMIT, &scores_offset) || !read_int(&call, 2, "probsOffset", 0, OFFSET_LIMIT, &probs_offset) ||
      !read_int(&call, 3, "matrices", 0, INT_LIMIT, &matrices) || !read_int(&call, 4, "t", 0, INT_LIMIT, &t) ||
      !read_float(&call, 5, "scale", &scale)) {
    return NULL;
  }
  const int64_t block = product_or_fail(t, t);
  if (block < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_block(&call, "scores", scores_offset, matrices, block) || !check_block(&call, "probs", probs_offset, matrices, block) ||
      (probs_offset != scores_offset &&
       !check_disjoint(&call, "probs", probs_offset, matrices * block, "scores", scores_offset, matrices * block))) {
    return NULL;
  }
  DISPATCH(causal_softmax_blocks, call.heap + scores_offset, call.heap + probs_offset, matrices, t, scale);
  return NULL;
}

/*
 * causalSoftmaxGrad(heap, probsOffset, dProbsOffset, dScoresOffset, matrices, t, scale): the gradient
 * of causalSoftmax with respect to the scores, dS = scale·P⊙(dP − rowsum(P⊙dP)) per block, 0 above the
 * diagonal. In place when dScoresOffset == dProbsOffset; otherwise dScores must not overlap dProbs.
 * dScores never overlaps probs.
 */
static napi_value causal_softmax_grad(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t probs_offset, d_probs_offset, d_scores_offset, matrices, t;
  float scale;
  if (!begin_call(env, info, &call, "causalSoftmaxGrad", 7)) return NULL;
  if (!read_int(&call, 1, "probsOffset", 0, OFFSET_LIMIT, &probs_offset) || !read_int(&call, 2, "dProbsOffset", 0, OFFSET_LIMIT, &d_probs_offset) ||
      !read_int(&call, 3, "dScoresOffset", 0, OFFSET_LIMIT, &d_scores_offset) || !read_int(&call, 4, "matrices", 0, INT_LIMIT, &matrices) ||
      !read_int(&call, 5, "t", 0, INT_LIMIT, &t) || !read_float(&call, 6, "scale", &scale)) {
    return NULL;
  }
  const int64_t block = product_or_fail(t, t);
  if (block < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_block(&call, "probs", probs_offset, matrices, block) || !check_block(&call, "dProbs", d_probs_offset, matrices, block) ||
      !check_block(&call, "dScores", d_scores_offset, matrices, block)) {
    return NULL;
  }
  const int64_t total = matrices * block;
  if (!check_disjoint(&call, "dScores", d_scores_offset, total, "probs", probs_offset, total) ||
      (d_scores_offset != d_probs_offset && !check_disjoint(&call, "dScores", d_scores_offset, total, "dProbs", d_probs_offset, total))) {
    return NULL;
  }
  DISPATCH(causal_softmax_grad_blocks, call.heap + probs_offset, call.heap + d_probs_offset, call.heap + d_scores_offset, matrices, t, scale);
  return NULL;
}

/* Checks that every target lies in [0, v) before anything is written; the RangeError names the row. */
static int check_targets(call_t *call, const int32_t *targets, int64_t n, int64_t v) {
  for (int64_t r = 0; r < n; r++) {
    if (targets[r] < 0 || targets[r] >= v) {
      char text[200];
      snprintf(text, sizeof text, "'targets' row %lld holds %d, outside [0, %lld)", (long long)r, (int)targets[r], (long long)v);
      return throw_range(call, text);
    }
  }
  return 1;
}

/*
 * softmaxCrossEntropy(heap, logitsOffset, targetsOffset, lossOffset, lseOffset, n, v): per row of
 * logits [n, v], loss = logsumexp(row) − row[target] and lse = logsumexp(row) (saved for the gradient).
 * targets are int32 in the same heap (targetsOffset counts 4-byte elements too), each in [0, v): all are
 * checked before anything is written. loss and lse [n] must overlap no input and each other.
 */
static napi_value softmax_cross_entropy(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t logits_offset, targets_offset, loss_offset, lse_offset, n, v;
  if (!begin_call(env, info, &call, "softmaxCrossEntropy", 7)) return NULL;
  if (!read_int(&call, 1, "logitsOffset", 0, OFFSET_LIMIT, &logits_offset) || !read_int(&call, 2, "targetsOffset", 0, OFFSET_LIMIT, &targets_offset) ||
      !read_int(&call, 3, "lossOffset", 0, OFFSET_LIMIT, &loss_offset) || !read_int(&call, 4, "lseOffset", 0, OFFSET_LIMIT, &lse_offset) ||
      !read_int(&call, 5, "n", 0, INT_LIMIT, &n) || !read_int(&call, 6, "v", 0, INT_LIMIT, &v)) {
    return NULL;
  }
  const int64_t total = product_or_fail(n, v);
  if (total < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_span(&call, "logits", logits_offset, total) || !check_span(&call, "targets", targets_offset, n) ||
      !check_span(&call, "loss", loss_offset, n) || !check_span(&call, "lse", lse_offset, n) ||
      !check_disjoint(&call, "loss", loss_offset, n, "logits", logits_offset, total) ||
      !check_disjoint(&call, "loss", loss_offset, n, "targets", targets_offset, n) ||
      !check_disjoint(&call, "lse", lse_offset, n, "logits", logits_offset, total) ||
      !check_disjoint(&call, "lse", lse_offset, n, "targets", targets_offset, n) ||
      !check_disjoint(&call, "lse", lse_offset, n, "loss", loss_offset, n)) {
    return NULL;
  }
  const int32_t *targets = (const int32_t *)(call.heap + targets_offset);
  if (!check_targets(&call, targets, n, v)) return NULL;
  DISPATCH(softmax_cross_entropy_rows, call.heap + logits_offset, targets, call.heap + loss_offset, call.heap + lse_offset, n, v);
  return NULL;
}

/*
 * softmaxCrossEntropyGrad(heap, dyOffset, logitsOffset, targetsOffset, lseOffset, dLogitsOffset, n, v):
 * dLogits [n, v] = dy_r·(softmax(row) − onehot(target_r)), softmax from the saved lse (exp(x − lse)).
 * targets are checked as in softmaxCrossEntropy; dLogits must overlap no input.
 */
static napi_value softmax_cross_entropy_grad(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t dy_offset, logits_offset, targets_offset, lse_offset, d_logits_offset, n, v;
  if (!begin_call(env, info, &call, "softmaxCrossEntropyGrad", 8)) return NULL;
  if (!read_int(&call, 1, "dyOffset", 0, OFFSET_LIMIT, &dy_offset) || !read_int(&call, 2, "logitsOffset", 0, OFFSET_LIMIT, &logits_offset) ||
      !read_int(&call, 3, "targetsOffset", 0, OFFSET_LIMIT, &targets_offset) || !read_int(&call, 4, "lseOffset", 0, OFFSET_LIMIT, &lse_offset) ||
      !read_int(&call, 5, "dLogitsOffset", 0, OFFSET_LIMIT, &d_logits_offset) || !read_int(&call, 6, "n", 0, INT_LIMIT, &n) ||
      !read_int(&call, 7, "v", 0, INT_LIMIT, &v)) {
    return NULL;
  }
  const int64_t total = product_or_fail(n, v);
  if (total < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_span(&call, "dy", dy_offset, n) || !check_span(&call, "logits", logits_offset, total) ||
      !check_span(&call, "targets", targets_offset, n) || !check_span(&call, "lse", lse_offset, n) ||
      !check_span(&call, "dLogits", d_logits_offset, total) ||
      !check_disjoint(&call, "dLogits", d_logits_offset, total, "dy", dy_offset, n) ||
      !check_disjoint(&call, "dLogits", d_logits_offset, total, "logits", logits_offset, total) ||
      !check_disjoint(&call, "dLogits", d_logits_offset, total, "targets", targets_offset, n) ||
      !check_disjoint(&call, "dLogits", d_logits_offset, total, "lse", lse_offset, n)) {
    return NULL;
  }
  const int32_t *targets = (const int32_t *)(call.heap + targets_offset);
  if (!check_targets(&call, targets, n, v)) return NULL;
  DISPATCH(softmax_cross_entropy_grad_rows, call.heap + dy_offset, call.heap + logits_offset, targets, call.heap + lse_offset,
           call.heap + d_logits_offset, n, v);
  return NULL;
}

/*
 * copyConstant(heap, xOffset, gatesOffset, mixOffset, vectorsOffset, yOffset, n, d, c): the copy and
 * constant experts per token; mix [N, 2C] holds x·W_c on entry and the pairwise softmax on exit (see
 * copy_constant_rows). y must not overlap an input.
 */
static napi_value copy_constant(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t x_offset, gates_offset, mix_offset, vectors_offset, y_offset, n, d, c;
  if (!begin_call(env, info, &call, "copyConstant", 9)) return NULL;
  if (!read_int(&call, 1, "xOffset", 0, OFFSET_LIMIT, &x_offset) || !read_int(&call, 2, "gatesOffset", 0, OFFSET_LIMIT, &gates_offset) ||
      !read_int(&call, 3, "mixOffset", 0, OFFSET_LIMIT, &mix_offset) || !read_int(&call, 4, "vectorsOffset", 0, OFFSET_LIMIT, &vectors_offset) ||
      !read_int(&call, 5, "yOffset", 0, OFFSET_LIMIT, &y_offset) || !read_int(&call, 6, "n", 0, INT_LIMIT, &n) ||
      !read_int(&call, 7, "d", 0, INT_LIMIT, &d) || !read_int(&call, 8, "c", 1, 65536, &c)) {
    return NULL;
  }
  const int64_t xs = product_or_fail(n, d), gs = product_or_fail(n, 1 + c), ms = product_or_fail(n, 2 * c), vs = product_or_fail(c, d);
  if (xs < 0 || gs < 0 || ms < 0 || vs < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  if (!check_span(&call, "x", x_offset, xs) || !check_span(&call, "gates", gates_offset, gs) || !check_span(&call, "mix", mix_offset, ms) ||
      !check_span(&call, "vectors", vectors_offset, vs) || !check_span(&call, "y", y_offset, xs) ||
      !check_disjoint(&call, "y", y_offset, xs, "x", x_offset, xs) || !check_disjoint(&call, "y", y_offset, xs, "gates", gates_offset, gs) ||
      !check_disjoint(&call, "y", y_offset, xs, "mix", mix_offset, ms) || !check_disjoint(&call, "y", y_offset, xs, "vectors", vectors_offset, vs) ||
      !check_disjoint(&call, "mix", mix_offset, ms, "x", x_offset, xs) || !check_disjoint(&call, "mix", mix_offset, ms, "gates", gates_offset, gs) ||
      !check_disjoint(&call, "mix", mix_offset, ms, "vectors", vectors_offset, vs)) {
    return NULL;
  }
  float *h = call.heap;
  DISPATCH(copy_constant_rows, h + x_offset, h + gates_offset, h + mix_offset, h + vectors_offset, h + y_offset, n, d, c);
  return NULL;
}

/*
 * copyConstantGrad(heap, dyOffset, xOffset, gatesOffset, mixOffset, vectorsOffset, dxOffset, dGatesOffset,
 * dLogitsOffset, dVectorsOffset, n, d, c): see copy_constant_grad_rows; the four outputs must not overlap
 * any input or each other.
 */
static napi_value copy_constant_grad(napi_env env, napi_callback_info info) {
  call_t call;
  int64_t o[9], n, d, c;
  static const char *const names[9] = {"dy", "x", "gates", "mix", "vectors", "dx", "dGates", "dLogits", "dVectors"};
  static const char *const arguments[9] = {"dyOffset", "xOffset", "gatesOffset", "mixOffset", "vectorsOffset", "dxOffset", "dGatesOffset", "dLogitsOffset", "dVectorsOffset"};
  if (!begin_call(env, info, &call, "copyConstantGrad", 13)) return NULL;
  for (int i = 0; i < 9; i++) {
    if (!read_int(&call, 1 + i, arguments[i], 0, OFFSET_LIMIT, &o[i])) return NULL;
  }
  if (!read_int(&call, 10, "n", 0, INT_LIMIT, &n) || !read_int(&call, 11, "d", 0, INT_LIMIT, &d) || !read_int(&call, 12, "c", 1, 65536, &c)) return NULL;
  const int64_t xs = product_or_fail(n, d), gs = product_or_fail(n, 1 + c), ms = product_or_fail(n, 2 * c), vs = product_or_fail(c, d);
  if (xs < 0 || gs < 0 || ms < 0 || vs < 0) {
    throw_range(&call, "a size overflows");
    return NULL;
  }
  const int64_t sizes[9] = {xs, xs, gs, ms, vs, xs, gs, ms, vs};
  for (int i = 0; i < 9; i++) {
    if (!check_span(&call, names[i], o[i], sizes[i])) return NULL;
  }
  for (int out = 5; out < 9; out++) {
    for (int other = 0; other < 9; other++) {
      if (other != out && !check_disjoint(&call, names[out], o[out], sizes[out], names[other], o[other], sizes[other])) return NULL;
    }
  }
  float *h = call.heap;
  DISPATCH(copy_constant_grad_rows, h + o[0], h + o[1], h + o[2], h + o[3], h + o[4], h + o[5], h + o[6], h + o[7], h + o[8], n, d, c);
  return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* Module                                                                                           */

/* Bumped whenever an export changes; src/accel.ts refuses an addon built from another version. */
#define ACCEL_ABI_VERSION 5

static napi_value init(napi_env env, napi_value exports) {
  napi_value abi;
  detect_cpu();
  if (napi_create_int32(env, ACCEL_ABI_VERSION, &abi) != napi_ok || napi_set_named_property(env, exports, "abiVersion", abi) != napi_ok) return NULL;
  napi_property_descriptor properties[] = {
      {"load", NULL, load, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_default, NULL},
      {"sgemmList", NULL, sgemm_list, NULL, NULL, NULL, napi_default, NULL},
      {"swiglu", NULL, swiglu, NULL, NULL, NULL, napi_default, NULL},
      {"swigluGrad", NULL, swiglu_grad, NULL, NULL, NULL, napi_default, NULL},
      {"gelu", NULL, gelu, NULL, NULL, NULL, napi_default, NULL},
      {"geluGrad", NULL, gelu_grad, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNormGrad", NULL, rms_norm_grad, NULL, NULL, NULL, napi_default, NULL},
      {"adamw", NULL, adamw, NULL, NULL, NULL, napi_default, NULL},
      {"sumOfSquares", NULL, sum_of_squares, NULL, NULL, NULL, napi_default, NULL},
      {"segmentSum", NULL, segment_sum, NULL, NULL, NULL, napi_default, NULL},
      {"transpose", NULL, transpose, NULL, NULL, NULL, napi_default, NULL},
      {"copyConstant", NULL, copy_constant, NULL, NULL, NULL, napi_default, NULL},
      {"copyConstantGrad", NULL, copy_constant_grad, NULL, NULL, NULL, napi_default, NULL},
      {"rotary", NULL, rotary, NULL, NULL, NULL, napi_default, NULL},
      {"causalSoftmax", NULL, causal_softmax, NULL, NULL, NULL, napi_default, NULL},
      {"causalSoftmaxGrad", NULL, causal_softmax_grad, NULL, NULL, NULL, napi_default, NULL},
      {"softmaxCrossEntropy", NULL, softmax_cross_entropy, NULL, NULL, NULL, napi_default, NULL},
      {"softmaxCrossEntropyGrad", NULL, softmax_cross_entropy_grad, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties) != napi_ok) return NULL;
  return exports;
}

#ifndef NODE_GYP_MODULE_NAME
#define NODE_GYP_MODULE_NAME accel
#endif
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
