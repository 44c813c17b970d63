/**
 * The kit's kernel fixes, registered through tfjs's kernel registry. Each one is tested against the
 * stock kernel or a plain reference in its own `*.test.ts`.
 *
 * | fix | kernel | backends | what it fixes |
 * |---|---|---|---|
 * | `wasm-batch-matmul` | `BatchMatMul` | wasm | transposed or batched products left XNNPACK for a naive loop |
 * | `wasm-fused-matmul` | `_FusedMatMul` | wasm | the same, keeping bias and activation; `[1]` biases were misread |
 * | `unsorted-segment-sum` | `UnsortedSegmentSum` | cpu, wasm | O(segments·N·D) on cpu, missing on wasm (so `gather` had no gradient there) |
 * | `gather` | `GatherV2` | cpu, wasm | element-by-element copies (13 ms for 256 rows of 256 floats on wasm) |
 * | `wasm-one-hot` | `OneHot` | wasm | wrong values for float32 and fractional on/off values |
 * | `wasm-sum` | `Sum` | wasm | sums over leading axes (bias gradients) transposed the whole input first |
 * | `wasm-slice` | `Slice` | wasm | copied the whole input out of the heap for every slice |
 * | `wasm-split` | `SplitV` | wasm | the same, once per piece |
 * | `wasm-concat` | `Concat` | wasm | one `subarray` view per input row: slow along short axes (rotary halves) |
 * | `wasm-identity` | `Identity` | wasm | copied every tensor saved for the backward pass; share it as cpu does |
 * | `wasm-cast` | `Cast` | wasm | a cast to the same dtype (the gradient of every saved tensor) copied it; int32 256 cast to bool gave false |
 * | `wasm-transpose` | `Transpose` | wasm | a permutation that moves only size-1 axes copied the tensor |
 * | `wasm-equal`, `wasm-not-equal`, `wasm-less`, `wasm-less-equal`, `wasm-greater`, `wasm-greater-equal` | comparisons | wasm | ~190 ns per element when the operands broadcast (one-hot routing masks, the max's gradient) |
 * | `unsorted-segment-sum-gradient` | gradient of `UnsortedSegmentSum` | all | threw on ids `>= numSegments`; fewer passes |
 * | `topk-gradient` | gradient of `TopK` | all | tfjs has none |
 * | `gather-nd-gradient` | gradient of `GatherNd` | all | tfjs has none |
 * | `batch-matmul-gradient` | gradient of `BatchMatMul` | all | broadcast batch dims (`[B, T, D]·[D, F]`) threw |
 *
 * Kernel fixes belong to one backend. Gradient fixes are global in tfjs (one gradient per kernel
 * name, whatever the backend): {@link registerKernelFixes} for any backend registers them, and
 * {@link unregisterKernelFixes} for any backend removes them.
 */
import * as tf from '@tensorflow/tfjs';
import { cpuGather, GATHER_FIX, wasmGather } from './gather.js';
import {
  batchMatMulGradConfig,
  BATCH_MATMUL_GRADIENT_FIX,
  gatherNdGradConfig,
  GATHER_ND_GRADIENT_FIX,
  topKGradConfig,
  TOPK_GRADIENT_FIX,
} from './gradients.js';
import {
  installedGradientFix,
  installedKernelFix,
  installGradient,
  installKernel,
  uninstallGradient,
  uninstallKernel,
} from './registry.js';
import {
  cpuUnsortedSegmentSum,
  unsortedSegmentSumGradConfig,
  UNSORTED_SEGMENT_SUM_FIX,
  UNSORTED_SEGMENT_SUM_GRADIENT_FIX,
  wasmUnsortedSegmentSum,
} from './segment-sum.js';
import { wasmBatchMatMul, wasmFusedMatMul, WASM_BATCH_MATMUL_FIX, WASM_FUSED_MATMUL_FIX } from './wasm-matmul.js';
import { wasmOneHot, WASM_ONE_HOT_FIX } from './wasm-one-hot.js';
import { wasmConcat, wasmSlice, wasmSplitV, WASM_CONCAT_FIX, WASM_SLICE_FIX, WASM_SPLIT_FIX } from './wasm-slice.js';
import { wasmComparison, WASM_COMPARE_FIXES, type ComparisonKernel } from './wasm-compare.js';
import { wasmCast, wasmIdentity, wasmTranspose, WASM_CAST_FIX, WASM_IDENTITY_FIX, WASM_TRANSPOSE_FIX } from './wasm-share.js';
import { wasmSum, WASM_SUM_FIX } from './wasm-sum.js';

/** A description of one kernel fix, for reports and documentation. */
export interface KernelFixInfo {
  /** The fix's name, as {@link registerKernelFixes} reports it, e.g. `'wasm-batch-matmul'`. */
  readonly name: string;
  /** `'kernel'`: replaces or adds a backend's kernel; `'gradient'`: registers a (global) gradient. */
  readonly kind: 'kernel' | 'gradient';
  /** The tfjs kernel name, e.g. `'BatchMatMul'`. */
  readonly kernelName: string;
  /** The backends a kernel fix applies to; `'all'` for gradient fixes. */
  readonly backends: readonly string[] | 'all';
  /** One line on what was wrong. */
  readonly summary: string;
}

interface KernelFixDefinition extends KernelFixInfo {
  /** Kernel fixes: the kernel function per backend. */
  readonly kernelFuncs?: Readonly<Record<string, tf.KernelFunc>>;
  /** Gradient fixes: the gradient config. */
  readonly gradient?: tf.GradConfig;
}

const FIXES: readonly KernelFixDefinition[] = [
  {
    name: WASM_BATCH_MATMUL_FIX,
    kind: 'kernel',
    kernelName: tf.BatchMatMul,
    backends: ['wasm'],
    summary: 'transposed or batched matmuls fell from XNNPACK to a naive loop; transpose explicitly and make 2-D calls',
    kernelFuncs: { wasm: wasmBatchMatMul as tf.KernelFunc },
  },
  {
    name: WASM_FUSED_MATMUL_FIX,
    kind: 'kernel',
    kernelName: tf._FusedMatMul,
    backends: ['wasm'],
    summary: 'as wasm-batch-matmul, keeping bias and activation; biases other than [N] are added separately',
    kernelFuncs: { wasm: wasmFusedMatMul as tf.KernelFunc },
  },
  {
    name: UNSORTED_SEGMENT_SUM_FIX,
    kind: 'kernel',
    kernelName: tf.UnsortedSegmentSum,
    backends: ['cpu', 'wasm'],
    summary: 'O(segments·N·D) on cpu and not registered on wasm (so gather had no gradient); one O(N·D) pass',
    kernelFuncs: { cpu: cpuUnsortedSegmentSum as tf.KernelFunc, wasm: wasmUnsortedSegmentSum as tf.KernelFunc },
  },
  {
    name: GATHER_FIX,
    kind: 'kernel',
    kernelName: tf.GatherV2,
    backends: ['cpu', 'wasm'],
    summary: 'copied element by element (13 ms for 256 rows of 256 floats on wasm); copy whole slices',
    kernelFuncs: { cpu: cpuGather as tf.KernelFunc, wasm: wasmGather as tf.KernelFunc },
  },
  {
    name: WASM_ONE_HOT_FIX,
    kind: 'kernel',
    kernelName: tf.OneHot,
    backends: ['wasm'],
    summary: 'float32 / bool outputs held int32 bit patterns and fractional on/off values were truncated',
    kernelFuncs: { wasm: wasmOneHot as tf.KernelFunc },
  },
  {
    name: WASM_SUM_FIX,
    kind: 'kernel',
    kernelName: tf.Sum,
    backends: ['wasm'],
    summary: 'sums over leading axes (bias gradients) transposed the whole input first; add rows in place',
    kernelFuncs: { wasm: wasmSum as tf.KernelFunc },
  },
  {
    name: WASM_SLICE_FIX,
    kind: 'kernel',
    kernelName: tf.Slice,
    backends: ['wasm'],
    summary: 'copied the whole input out of the wasm heap for every slice; copy only the slice',
    kernelFuncs: { wasm: wasmSlice as tf.KernelFunc },
  },
  {
    name: WASM_SPLIT_FIX,
    kind: 'kernel',
    kernelName: tf.SplitV,
    backends: ['wasm'],
    summary: 'tf.split copied the whole input once per piece; copy only the pieces',
    kernelFuncs: { wasm: wasmSplitV as unknown as tf.KernelFunc },
  },
  {
    name: WASM_CONCAT_FIX,
    kind: 'kernel',
    kernelName: tf.Concat,
    backends: ['wasm'],
    summary: 'made one subarray view per input row, 4x the copy along short axes (rotary halves); loop short runs',
    kernelFuncs: { wasm: wasmConcat as tf.KernelFunc },
  },
  {
    name: WASM_IDENTITY_FIX,
    kind: 'kernel',
    kernelName: tf.Identity,
    backends: ['wasm'],
    summary: 'copied every tensor saved for the backward pass (engine.clone); share the data as cpu does',
    kernelFuncs: { wasm: wasmIdentity as tf.KernelFunc },
  },
  {
    name: WASM_CAST_FIX,
    kind: 'kernel',
    kernelName: tf.Cast,
    backends: ['wasm'],
    summary: 'a cast to the same dtype (the gradient of every saved tensor) copied it, and casts to bool kept the low byte (256 -> false)',
    kernelFuncs: { wasm: wasmCast as tf.KernelFunc },
  },
  {
    name: WASM_TRANSPOSE_FIX,
    kind: 'kernel',
    kernelName: tf.Transpose,
    backends: ['wasm'],
    summary: 'a permutation that moves only size-1 axes (or none) copied the tensor; share it (a real one is one native pass with acceleration)',
    kernelFuncs: { wasm: wasmTranspose as tf.KernelFunc },
  },
  ...(Object.keys(WASM_COMPARE_FIXES) as ComparisonKernel[]).map(
    (kernelName): KernelFixDefinition => ({
      name: WASM_COMPARE_FIXES[kernelName],
      kind: 'kernel',
      kernelName,
      backends: ['wasm'],
      summary: `${kernelName} took ~190 ns per element when its operands broadcast; one strided pass`,
      kernelFuncs: { wasm: wasmComparison(kernelName) },
    }),
  ),
  {
    name: UNSORTED_SEGMENT_SUM_GRADIENT_FIX,
    kind: 'gradient',
    kernelName: tf.UnsortedSegmentSum,
    backends: 'all',
    summary: 'the stock gradient threw on segment ids >= numSegments; this one zeroes them, in fewer passes',
    gradient: unsortedSegmentSumGradConfig,
  },
  {
    name: TOPK_GRADIENT_FIX,
    kind: 'gradient',
    kernelName: tf.TopK,
    backends: 'all',
    summary: 'tfjs has no gradient for TopK; scatter dy back to the chosen positions',
    gradient: topKGradConfig,
  },
  {
    name: GATHER_ND_GRADIENT_FIX,
    kind: 'gradient',
    kernelName: tf.GatherNd,
    backends: 'all',
    summary: 'tfjs has no gradient for GatherNd; scatterND dy into the params shape, summing duplicates',
    gradient: gatherNdGradConfig,
  },
  {
    name: BATCH_MATMUL_GRADIENT_FIX,
    kind: 'gradient',
    kernelName: tf.BatchMatMul,
    backends: 'all',
    summary: 'the stock gradient ignored broadcast batch dims (x [B, T, D] times w [D, F] threw); sum them out',
    gradient: batchMatMulGradConfig,
  },
];

/** Every kernel fix the kit has, in the order they are reported. */
export const KERNEL_FIXES: readonly KernelFixInfo[] = FIXES.map(
  ({ name, kind, kernelName, backends, summary }): KernelFixInfo => ({ name, kind, kernelName, backends, summary }),
);

/** The backends that have kernel fixes (gradient fixes apply to every backend). */
export const KERNEL_FIX_BACKENDS: readonly string[] = [
  ...new Set(FIXES.flatMap((fix) => (fix.backends === 'all' ? [] : fix.backends))),
];

function checkBackendName(op: string, backend: unknown): string {
  if (typeof backend !== 'string' || backend.length === 0) {
    throw new TypeError(`${op}: argument 'backend' must be a backend name such as 'wasm' or 'cpu', got ${String(backend)}`);
  }
  return backend;
}

function isActive(fix: KernelFixDefinition, backend: string): boolean {
  if (fix.gradient) return installedGradientFix(fix.kernelName) === fix.name;
  return fix.kernelFuncs?.[backend] !== undefined && installedKernelFix(fix.kernelName, backend) === fix.name;
}

/**
 * The kernel fixes active for a backend right now (its kernel fixes plus the global gradient fixes).
 *
 * @param backend - the tfjs backend name (`'cpu'`, `'wasm'`, `'tensorflow'`)
 * @returns the names of the active fixes, in {@link KERNEL_FIXES} order
 * @throws TypeError if `backend` is not a non-empty string
 */
export function activeKernelFixes(backend: string): string[] {
  const name = checkBackendName('activeKernelFixes', backend);
  return FIXES.filter((fix) => isActive(fix, name)).map((fix) => fix.name);
}

/**
 * Registers every kernel fix that applies to a backend, and the (global) gradient fixes. Idempotent:
 * a fix already registered is left alone. The stock kernels are kept, and
 * {@link unregisterKernelFixes} puts them back. Registering before the backend is initialised is
 * fine: the stock kernels' setup functions stay attached.
 *
 * @param backend - the tfjs backend name (`'cpu'`, `'wasm'`, `'tensorflow'`)
 * @returns the names of the fixes now active for that backend
 * @throws TypeError if `backend` is not a non-empty string
 */
export function registerKernelFixes(backend: string): string[] {
  const name = checkBackendName('registerKernelFixes', backend);
  for (const fix of FIXES) {
    if (fix.gradient) installGradient(fix.name, fix.gradient);
    const kernelFunc = fix.kernelFuncs?.[name];
    if (kernelFunc) installKernel(fix.name, fix.kernelName, name, kernelFunc);
  }
  return activeKernelFixes(name);
}

/**
 * Puts the stock kernels back, for benchmarks and for tests that show the stock behaviour.
 *
 * With a backend, removes that backend's kernel fixes and the global gradient fixes; other backends
 * keep their kernel fixes. Without one, removes every fix from every backend.
 *
 * @param backend - the tfjs backend name, or `undefined` for all
 * @returns the names of the fixes removed (a name appears once even if removed from two backends)
 * @throws TypeError if `backend` is given and is not a non-empty string
 */
export function unregisterKernelFixes(backend?: string): string[] {
  const backends = backend === undefined ? KERNEL_FIX_BACKENDS : [checkBackendName('unregisterKernelFixes', backend)];
  const removed = new Set<string>();
  for (const fix of FIXES) {
    if (fix.gradient) {
      if (uninstallGradient(fix.kernelName)) removed.add(fix.name);
      continue;
    }
    for (const name of backends) {
      if (fix.kernelFuncs?.[name] !== undefined && installedKernelFix(fix.kernelName, name) === fix.name) {
        if (uninstallKernel(fix.kernelName, name)) removed.add(fix.name);
      }
    }
  }
  return FIXES.map((fix) => fix.name).filter((fixName) => removed.has(fixName));
}

/**
 * Runs `fn` with stock tfjs kernels and gradients on every backend, then registers again exactly
 * the fixes that were active before (even if `fn` throws).
 *
 * @param fn - the code to run on stock kernels; may be async
 * @returns whatever `fn` returns
 */
export async function withStockKernels<T>(fn: () => T | Promise<T>): Promise<T> {
  const active: Array<{ fix: KernelFixDefinition; backend: string | null }> = [];
  for (const fix of FIXES) {
    if (fix.gradient) {
      if (isActive(fix, '')) active.push({ fix, backend: null });
      continue;
    }
    for (const name of Object.keys(fix.kernelFuncs ?? {})) if (isActive(fix, name)) active.push({ fix, backend: name });
  }
  unregisterKernelFixes();
  try {
    return await fn();
  } finally {
    for (const { fix, backend } of active) {
      if (fix.gradient) installGradient(fix.name, fix.gradient);
      const kernelFunc = backend === null ? undefined : fix.kernelFuncs?.[backend];
      if (backend !== null && kernelFunc) installKernel(fix.name, fix.kernelName, backend, kernelFunc);
    }
  }
}
