/**
 * Native acceleration: OpenBLAS `sgemm` (and a few fused kernels) run in place on the wasm backend's
 * heap, through the small N-API addon in `native/accel.c`.
 *
 * The addon is optional at every step:
 * - it is built by the repository's `postinstall` (`native/build.mjs`) when a C compiler and Node's
 *   headers are present, and skipped (with one line saying why) otherwise;
 * - it `dlopen`s the OpenBLAS runtime when the process asks for it, so a machine without OpenBLAS
 *   loads it and reports why acceleration is off;
 * - `MOEPP_ACCEL=off` (or `initBackend({ acceleration: false })`) keeps the wasm kernels.
 *
 * When acceleration is off the kit behaves exactly as before: the wasm kernel fixes do the work.
 *
 * Threads: products run on 2 threads (at most the number of cores) unless `MOEPP_BLAS_THREADS` or
 * `initBackend({ blasThreads })` says otherwise. The threads are the addon's own (the calling thread
 * and a small pool that spins for 50 µs, then sleeps); OpenBLAS itself runs on one thread per product.
 * The addon splits each call's products into pieces of similar size (whole products, or row / column
 * blocks of large ones) and the threads take them in turn; calls under 2^20 multiply-adds stay on the
 * calling thread. OpenBLAS's own threads are not used: they sleep within a few cycles of each product
 * (the kit sets `OPENBLAS_THREAD_TIMEOUT` to {@link DEFAULT_THREAD_TIMEOUT}, 2^4 cycles, so that idle
 * workers do not spin on the core JavaScript needs) and then took about 0.15 ms to wake for every
 * product, more than a small product takes.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { checkNumber } from './errors.js';

/** The functions of the native addon (see `native/accel.c`). Offsets and sizes count float32 elements. */
export interface NativeAccel {
  /** Version of the addon's exports; must equal the one this file was written for. */
  readonly abiVersion: number;
  /** Loads the first OpenBLAS library of `candidates` that has `cblas_sgemm`; idempotent. */
  load(candidates: readonly string[], threads: number, threadTimeout: number): NativeLoadResult;
  /** Sets the number of threads products run on (OpenBLAS stays on one); returns the count now used. */
  setThreads(threads: number): number;
  /** `C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i]`, row-major, for `i < batch`; stride 0 repeats a matrix. */
  sgemm(
    heap: ArrayBuffer,
    transposeA: boolean,
    transposeB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    aOffset: number,
    lda: number,
    strideA: number,
    bOffset: number,
    ldb: number,
    strideB: number,
    beta: number,
    cOffset: number,
    ldc: number,
    strideC: number,
    batch: number,
  ): void;
  /**
   * Independent products in one call, {@link SGEMM_LIST_FIELDS} numbers each in `products`:
   * `[transA, transB, m, n, k, alpha, aOffset, lda, bOffset, ldb, beta, cOffset, ldc]` (as
   * {@link NativeAccel.sgemm} with batch 1; `transA`/`transB` 0 or 1). They run in parallel on the
   * configured threads (each product whole on one thread), so no product's output may overlap another
   * product's output or operands (checked; a `RangeError` says which).
   */
  sgemmList(heap: ArrayBuffer, products: Float64Array): void;
  /** `out[r, j] = silu(up[r, j])·up[r, F + j]` for `up` `[rows, 2F]`, `out` `[rows, F]`. */
  swiglu(heap: ArrayBuffer, upOffset: number, outOffset: number, rows: number, f: number): void;
  /** The gradient of {@link NativeAccel.swiglu}: `dUp` `[rows, 2F]` from `dy` `[rows, F]`. */
  swigluGrad(heap: ArrayBuffer, dyOffset: number, upOffset: number, dUpOffset: number, rows: number, f: number): void;
  /** Exact GELU `y = ½·x·(1 + erf(x/√2))` on `n` elements. */
  gelu(heap: ArrayBuffer, xOffset: number, yOffset: number, n: number): void;
  /** The gradient of {@link NativeAccel.gelu}: `dx = dy·(Φ(x) + x·φ(x))`. */
  geluGrad(heap: ArrayBuffer, dyOffset: number, xOffset: number, dxOffset: number, n: number): void;
  /** `y = x·invRms·weight` per row of `x` `[rows, D]`, and `invRms` `[rows]`. */
  rmsNorm(heap: ArrayBuffer, xOffset: number, weightOffset: number, yOffset: number, invRmsOffset: number, rows: number, d: number, eps: number): void;
  /** The gradient of {@link NativeAccel.rmsNorm}: `dx` `[rows, D]` and `dWeight` `[D]`. */
  rmsNormGrad(
    heap: ArrayBuffer,
    dyOffset: number,
    xOffset: number,
    weightOffset: number,
    invRmsOffset: number,
    dxOffset: number,
    dWeightOffset: number,
    rows: number,
    d: number,
  ): void;
  /**
   * One AdamW update of `n` elements (see `../optim.ts`): reads `weight`, `gradient` (multiplied by
   * `gradientScale` first) and both moments, writes the new weight and moments to three other spans
   * (which must not overlap any input).
   */
  adamw(
    heap: ArrayBuffer,
    weightOffset: number,
    gradientOffset: number,
    firstMomentOffset: number,
    secondMomentOffset: number,
    weightOutOffset: number,
    firstMomentOutOffset: number,
    secondMomentOutOffset: number,
    n: number,
    beta1: number,
    beta2: number,
    epsilon: number,
    stepSize: number,
    inverseRootCorrection2: number,
    decayFactor: number,
    gradientScale: number,
  ): void;
  /**
   * `Σ x²` over several spans of the heap, accumulated in double: `spans` holds (offset, length) pairs.
   * Every span is checked against the heap first (a `RangeError` names the span).
   */
  sumOfSquares(heap: ArrayBuffer, spans: Float64Array): number;
  /**
   * `out[s] = Σ x[r]` over the rows `r` with `ids[r] = s` (rows of `rowSize` floats); `ids` are int32 in
   * the same heap (`idsOffset` in 4-byte elements), ids outside `[0, numSegments)` add nowhere; `out`
   * `[numSegments, rowSize]` is overwritten and must not overlap `x` or `ids`.
   */
  segmentSum(heap: ArrayBuffer, xOffset: number, idsOffset: number, outOffset: number, rows: number, rowSize: number, numSegments: number): void;
  /**
   * `y = x` transposed by `perm` (y's axis i is x's axis `perm[i]`) for 4-byte elements; `layout` holds
   * x's dims, then `perm` (rank <= 8). The trailing axes `perm` keeps in place are copied as runs. `y`
   * must not overlap `x`.
   */
  transpose(heap: ArrayBuffer, xOffset: number, yOffset: number, layout: Float64Array): void;
  /**
   * The copy and constant experts of an MoE++ layer per token (see `../copy-constant.ts`): `mix`
   * `[n, 2c]` holds `x·W_c` on entry and the pairwise softmax `[a1, a2]` on exit; `gates` `[n, 1 + c]`
   * is the copy gate then the constant gates; `y` `[n, d] = x·(g0 + Σ g_k·a1_k) + Σ g_k·a2_k·v_k`.
   */
  copyConstant(heap: ArrayBuffer, xOffset: number, gatesOffset: number, mixOffset: number, vectorsOffset: number, yOffset: number, n: number, d: number, c: number): void;
  /**
   * The gradient of {@link NativeAccel.copyConstant} except the two products with `W_c`: `dx = w·dy`
   * (add `dLogits·W_cᵀ`), `dGates` `[n, 1 + c]`, `dLogits` `[n, 2c]` and `dVectors` `[c, d]` (overwritten).
   */
  copyConstantGrad(
    heap: ArrayBuffer,
    dyOffset: number,
    xOffset: number,
    gatesOffset: number,
    mixOffset: number,
    vectorsOffset: number,
    dxOffset: number,
    dGatesOffset: number,
    dLogitsOffset: number,
    dVectorsOffset: number,
    n: number,
    d: number,
    c: number,
  ): void;
  /**
   * Rotary embedding, rotate-half convention (see `../fused.ts`): `y1 = x1·c − x2·s`, `y2 = x2·c + x1·s`
   * for `x` `[batch, seqLen, 2·half]` and the tables `cos`, `sin` `[seqLen, half]`; `inverse` rotates by
   * the negative angle (the gradient). `y` must not overlap an input.
   */
  rotary(
    heap: ArrayBuffer,
    xOffset: number,
    cosOffset: number,
    sinOffset: number,
    yOffset: number,
    batch: number,
    seqLen: number,
    half: number,
    inverse: boolean,
  ): void;
  /**
   * Causal softmax of attention scores (see `../attention.ts`): for each of `matrices` blocks `[t, t]`
   * stored back to back, row `i` becomes the softmax over `j <= i` of `scale·s_ij`, and exactly 0 for
   * `j > i` (the keys after the query).
   *
   * @param heap - the current wasm heap buffer
   * @param scoresOffset - `scores` `[matrices, t, t]`
   * @param probsOffset - `probs` `[matrices, t, t]`: `scoresOffset` itself (in place) or a span that overlaps nothing
   * @param matrices - blocks (B·H for attention)
   * @param t - T, the sequence length
   * @param scale - multiplies every score before the softmax (`1/√hd` for attention)
   * @throws RangeError when a span lies outside the heap or `probs` partly overlaps `scores` (nothing is written)
   */
  causalSoftmax(heap: ArrayBuffer, scoresOffset: number, probsOffset: number, matrices: number, t: number, scale: number): void;
  /**
   * The gradient of {@link NativeAccel.causalSoftmax} with respect to the scores:
   * `dScores = scale·P⊙(dP − rowsum(P⊙dP))` per block, 0 above the diagonal.
   *
   * @param heap - the current wasm heap buffer
   * @param probsOffset - `P` `[matrices, t, t]`, the forward output
   * @param dProbsOffset - `dP` `[matrices, t, t]`, the gradient with respect to `P`
   * @param dScoresOffset - `dScores` `[matrices, t, t]`: `dProbsOffset` itself (in place) or a span that overlaps nothing; never `probs`
   * @param matrices - blocks
   * @param t - T
   * @param scale - as in the forward call
   * @throws RangeError when a span lies outside the heap or `dScores` overlaps `probs` or partly overlaps `dProbs` (nothing is written)
   */
  causalSoftmaxGrad(heap: ArrayBuffer, probsOffset: number, dProbsOffset: number, dScoresOffset: number, matrices: number, t: number, scale: number): void;
  /**
   * Softmax cross-entropy per row of `logits` `[n, v]` (see `../cross-entropy.ts`):
   * `loss[r] = lse[r] − logits[r, targets[r]]` with `lse[r] = logsumexp(logits[r])`, max-subtracted.
   * Every target is checked before anything is written.
   *
   * @param heap - the current wasm heap buffer
   * @param logitsOffset - `logits` `[n, v]` float32
   * @param targetsOffset - `targets` `[n]` int32, each in `[0, v)`, in the same heap (offset in 4-byte elements)
   * @param lossOffset - `loss` `[n]` float32, written; overlaps no input
   * @param lseOffset - `lse` `[n]` float32, `logsumexp` of each row, written (kept for the gradient); overlaps no input and not `loss`
   * @param n - N, rows
   * @param v - V, classes per row
   * @throws RangeError when a span lies outside the heap, an output overlaps another span, or a target is
   *   outside `[0, v)` (the message names the row and the value); nothing is written
   */
  softmaxCrossEntropy(heap: ArrayBuffer, logitsOffset: number, targetsOffset: number, lossOffset: number, lseOffset: number, n: number, v: number): void;
  /**
   * The gradient of {@link NativeAccel.softmaxCrossEntropy} with respect to the logits:
   * `dLogits[r, j] = dy[r]·(exp(logits[r, j] − lse[r]) − [j = targets[r]])`.
   *
   * @param heap - the current wasm heap buffer
   * @param dyOffset - `dy` `[n]` float32, the gradient with respect to `loss`
   * @param logitsOffset - `logits` `[n, v]` float32, the forward input
   * @param targetsOffset - `targets` `[n]` int32, each in `[0, v)` (offset in 4-byte elements)
   * @param lseOffset - `lse` `[n]` float32, the forward call's `lse`
   * @param dLogitsOffset - `dLogits` `[n, v]` float32, written; overlaps no input
   * @param n - N
   * @param v - V
   * @throws RangeError as {@link NativeAccel.softmaxCrossEntropy}; nothing is written
   */
  softmaxCrossEntropyGrad(
    heap: ArrayBuffer,
    dyOffset: number,
    logitsOffset: number,
    targetsOffset: number,
    lseOffset: number,
    dLogitsOffset: number,
    n: number,
    v: number,
  ): void;
}

/** What the addon's `load` returns. */
export interface NativeLoadResult {
  readonly ok: boolean;
  readonly library?: string;
  readonly error?: string;
  readonly config?: string;
  readonly threads?: number;
  readonly canSetThreads?: boolean;
}

/** Whether native acceleration is active, and why (not). Part of `initBackend`'s report. */
export interface AccelerationStatus {
  /** True when wasm matmuls and the fused ops run on OpenBLAS. */
  readonly active: boolean;
  /** Why it is on or off, and when off, how to turn it on. */
  readonly reason: string;
  /** Threads the native products run on, when active. */
  readonly threads?: number;
  /** The OpenBLAS library loaded, when active. */
  readonly library?: string;
  /** OpenBLAS's own build description (`openblas_get_config()`), when active. */
  readonly config?: string;
}

/** Options of {@link configureAcceleration}. */
export interface AccelerationOptions {
  /** Turn acceleration on when possible. Default `true`; `MOEPP_ACCEL=off` forces `false`. */
  readonly enabled?: boolean;
  /**
   * Threads the native products run on (see the file header). Default: `MOEPP_BLAS_THREADS` if set, else 2 (at most the number of cores).
   */
  readonly threads?: number;
}

/** Numbers per product in {@link NativeAccel.sgemmList}'s `products` array. */
export const SGEMM_LIST_FIELDS = 13;

/** The addon's export version this file expects (`ACCEL_ABI_VERSION` in `native/accel.c`). */
export const ACCEL_ABI_VERSION = 5;

/** `OPENBLAS_THREAD_TIMEOUT` the kit sets when the user has not: idle workers sleep after ~2^4 cycles. */
export const DEFAULT_THREAD_TIMEOUT = 4;

/** Default native product threads: 2, or fewer on a machine with fewer cores. */
export const DEFAULT_BLAS_THREADS = 2;

/**
 * The OpenBLAS runtime libraries tried, in order: Debian/Ubuntu's pthread build by path (so that an
 * OpenMP build selected as the system default is not picked first), Fedora's pthread build, then
 * whatever `libopenblas.so.0` the loader finds. `MOEPP_BLAS_LIBRARY` replaces the list with one path.
 */
export const OPENBLAS_CANDIDATES: readonly string[] = [
  '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0',
  '/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0',
  'libopenblasp.so.0',
  'libopenblas.so.0',
  'libopenblas.so',
];

const ENABLE_HINT = 'to enable it on Debian/Ubuntu: `apt-get install libopenblas0-pthread`';

/** The addon's path, relative to this file (the same from `src/` and from `dist/`). */
const ADDON_URL = new URL('../native/build/Release/accel.node', import.meta.url);

interface AccelState {
  /** The addon, once required (null: not built or failed to load; see `addonError`). */
  addon: NativeAccel | null | undefined;
  addonError: string;
  /** The OpenBLAS load result, once tried. */
  blas: NativeLoadResult | undefined;
  /** The current status; `active` is what the kernels read. */
  status: AccelerationStatus;
  /** Set by {@link withAcceleration} in tests: overrides `status.active` to false while > 0. */
  suspended: number;
}

const STATE_KEY = Symbol.for('@moepp/tensors-core/acceleration');

/** Module state kept on `globalThis`, so two copies of this package agree (the addon is one per process). */
function state(): AccelState {
  const holder = globalThis as unknown as Record<symbol, AccelState | undefined>;
  let existing = holder[STATE_KEY];
  if (existing === undefined) {
    existing = {
      addon: undefined,
      addonError: '',
      blas: undefined,
      status: { active: false, reason: 'not configured yet: initBackend() turns it on when it can' },
      suspended: 0,
    };
    holder[STATE_KEY] = existing;
  }
  return existing;
}

/**
 * The native addon if it is built and loads (whether or not OpenBLAS is present), else null. For
 * the addon's own tests; the kernels use {@link activeAccel}.
 *
 * @returns the addon or null
 */
export function loadAddon(): NativeAccel | null {
  const current = state();
  if (current.addon !== undefined) return current.addon;
  current.addon = null;
  const addonPath = fileURLToPath(ADDON_URL);
  if (!existsSync(addonPath)) {
    current.addonError =
      "the native addon is not built (`npm ci` builds it when a C compiler and Node's headers are present); " +
      'to enable it on Debian/Ubuntu: `apt-get install gcc libopenblas0-pthread`, then `npm run build:native`';
    return null;
  }
  try {
    const required = createRequire(import.meta.url)(addonPath) as NativeAccel;
    if (required.abiVersion !== ACCEL_ABI_VERSION) {
      current.addonError = `the native addon is out of date (version ${String(required.abiVersion)}, expected ${ACCEL_ABI_VERSION}): run \`npm run build:native\``;
      return null;
    }
    current.addon = required;
  } catch (error) {
    current.addonError = `the native addon failed to load (${error instanceof Error ? error.message.split('\n')[0] : String(error)}); rebuild it with \`npm run build:native\``;
  }
  return current.addon;
}

function defaultThreads(): number {
  return Math.max(1, Math.min(DEFAULT_BLAS_THREADS, availableParallelism()));
}

/**
 * The thread count from `MOEPP_BLAS_THREADS`, or undefined when unset.
 *
 * @throws ConfigError when it is set to something other than a whole number >= 1
 */
function threadsFromEnvironment(): number | undefined {
  const text = process.env.MOEPP_BLAS_THREADS;
  if (text === undefined || text.trim() === '') return undefined;
  return checkNumber('MOEPP_BLAS_THREADS', 'value', Number(text), { integer: true, min: 1, max: 1024 });
}

/** True when `MOEPP_ACCEL` asks for the fallback (`off`, `0`, `false`, `no`). */
export function accelerationDisabledByEnvironment(): boolean {
  const value = (process.env.MOEPP_ACCEL ?? '').trim().toLowerCase();
  return value === 'off' || value === '0' || value === 'false' || value === 'no';
}

/**
 * Turns native acceleration on (when it can) or off, and reports the outcome. `initBackend` calls
 * it; call it directly to change the thread count later. Loading happens once per process: OpenBLAS
 * is never unloaded, only unused.
 *
 * @param options - see {@link AccelerationOptions}
 * @returns the new status (also what {@link accelerationStatus} returns from now on)
 * @throws ConfigError for a thread count that is not a whole number in [1, 1024] (option or `MOEPP_BLAS_THREADS`)
 */
export function configureAcceleration(options: AccelerationOptions = {}): AccelerationStatus {
  const current = state();
  const requestedThreads =
    options.threads !== undefined
      ? checkNumber('configureAcceleration', 'threads', options.threads, { integer: true, min: 1, max: 1024 })
      : threadsFromEnvironment() ?? defaultThreads();
  if (accelerationDisabledByEnvironment()) {
    current.status = { active: false, reason: `disabled by MOEPP_ACCEL=${process.env.MOEPP_ACCEL ?? ''}` };
    return current.status;
  }
  if (options.enabled === false) {
    current.status = { active: false, reason: 'disabled by the acceleration option' };
    return current.status;
  }
  if (process.platform !== 'linux') {
    current.status = { active: false, reason: `native acceleration is available on Linux only (this is ${process.platform})` };
    return current.status;
  }
  const addon = loadAddon();
  if (addon === null) {
    current.status = { active: false, reason: current.addonError };
    return current.status;
  }
  const explicit = process.env.MOEPP_BLAS_LIBRARY;
  const candidates = explicit !== undefined && explicit.trim() !== '' ? [explicit.trim()] : OPENBLAS_CANDIDATES;
  if (current.blas === undefined || !current.blas.ok) {
    current.blas = addon.load(candidates, requestedThreads, DEFAULT_THREAD_TIMEOUT);
  }
  const blas = current.blas;
  if (!blas.ok) {
    current.status = {
      active: false,
      reason: `the OpenBLAS runtime was not found (tried ${candidates.join(', ')}); ${ENABLE_HINT}`,
    };
    return current.status;
  }
  const threads = addon.setThreads(requestedThreads);
  current.status = {
    active: true,
    reason: `OpenBLAS sgemm on the wasm heap, ${threads} thread${threads === 1 ? '' : 's'}`,
    threads,
    ...(blas.library !== undefined ? { library: blas.library } : {}),
    ...(blas.config !== undefined ? { config: blas.config } : {}),
  };
  return current.status;
}

/**
 * Marks acceleration inactive with a reason (for backends and settings that do not use it).
 *
 * @param reason - why it is off
 * @returns the new status
 */
export function deactivateAcceleration(reason: string): AccelerationStatus {
  const current = state();
  current.status = { active: false, reason };
  return current.status;
}

/** @returns the current acceleration status (see {@link configureAcceleration}) */
export function accelerationStatus(): AccelerationStatus {
  const current = state();
  return current.suspended > 0 ? { active: false, reason: 'suspended by withAcceleration(false, ...)' } : current.status;
}

/**
 * The addon, when acceleration is active; the kernels call this on every run.
 *
 * @returns the addon, or null when the wasm kernels should do the work
 */
export function activeAccel(): NativeAccel | null {
  const current = state();
  return current.status.active && current.suspended === 0 ? (current.addon ?? null) : null;
}

/**
 * Runs `fn` with acceleration suspended (`enabled` false), for tests and benchmarks that compare
 * both paths in one process. With `enabled` true it just runs `fn` (acceleration stays as configured).
 *
 * @param enabled - false to run `fn` on the wasm kernels even when acceleration is active
 * @param fn - the code to run; may be async
 * @returns whatever `fn` returns
 */
export async function withAcceleration<T>(enabled: boolean, fn: () => T | Promise<T>): Promise<T> {
  if (enabled) return await fn();
  const resume = suspendAcceleration();
  try {
    return await fn();
  } finally {
    resume();
  }
}

/**
 * Suspends acceleration until the returned function is called (for test hooks such as
 * `beforeAll` / `afterAll`; prefer {@link withAcceleration}). Suspensions nest.
 *
 * @returns a function that ends this suspension (calling it twice does nothing more)
 */
export function suspendAcceleration(): () => void {
  const current = state();
  current.suspended++;
  let resumed = false;
  return () => {
    if (resumed) return;
    resumed = true;
    current.suspended--;
  };
}
