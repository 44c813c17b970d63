/**
 * Fix for the wasm comparison kernels (`Equal`, `NotEqual`, `Less`, `LessEqual`, `Greater`,
 * `GreaterEqual`) when the operands broadcast.
 *
 * The stock kernels handle broadcasting in C++ by recomputing both operands' indices for every
 * output element: about 190 ns per element here. A training step meets them in the routers (a one-hot
 * `expertIndices [N, K, 1] == range(E)`, 9 ms for N = 2048) and in the loss (`logits == max` in the
 * gradient of the max, 100 ms for `[2048, 256]`): a quarter of a `tiny` MoE++ step.
 *
 * The fix walks the output once with precomputed strides (0 along broadcast axes), merging axes that
 * are contiguous in both operands, in a plain loop over the wasm heap. Operands of the same shape go
 * to the stock kernels, which are fast then. Semantics are the stock ones: a bool output, comparisons
 * with NaN false (`NotEqual` true).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { requireStockKernel } from './registry.js';

type TensorInfo = tf.TensorInfo;
type NumericArray = Float32Array | Int32Array | Uint8Array;

/** The comparison kernels this fix covers, with the name of each one's fix. */
export const WASM_COMPARE_FIXES = {
  Equal: 'wasm-equal',
  NotEqual: 'wasm-not-equal',
  Less: 'wasm-less',
  LessEqual: 'wasm-less-equal',
  Greater: 'wasm-greater',
  GreaterEqual: 'wasm-greater-equal',
} as const;

/** A comparison kernel's name. */
export type ComparisonKernel = keyof typeof WASM_COMPARE_FIXES;

const OPERATOR: Readonly<Record<ComparisonKernel, number>> = { Equal: 0, NotEqual: 1, Less: 2, LessEqual: 3, Greater: 4, GreaterEqual: 5 };

/** The output walk: dims (outermost first) with each operand's stride along them. */
interface BroadcastWalk {
  readonly dims: number[];
  readonly stridesA: number[];
  readonly stridesB: number[];
}

/**
 * Right-aligns both shapes to the output, gives broadcast axes a stride of 0, drops size-1 axes and
 * merges neighbours that are contiguous in both operands.
 */
export function broadcastWalk(aShape: readonly number[], bShape: readonly number[], outShape: readonly number[]): BroadcastWalk {
  const rank = outShape.length;
  const stridesOf = (shape: readonly number[]): number[] => {
    const strides = new Array<number>(rank).fill(0);
    let stride = 1;
    for (let axis = rank - 1; axis >= 0; axis--) {
      const size = shape[axis - (rank - shape.length)] ?? 1;
      strides[axis] = size === 1 ? 0 : stride;
      stride *= size;
    }
    return strides;
  };
  const fullA = stridesOf(aShape);
  const fullB = stridesOf(bShape);
  const dims: number[] = [];
  const stridesA: number[] = [];
  const stridesB: number[] = [];
  for (let axis = 0; axis < rank; axis++) {
    const size = outShape[axis] as number;
    if (size === 1) continue;
    const last = dims.length - 1;
    // merge into the previous (outer) axis when both operands continue contiguously across it
    if (
      last >= 0 &&
      (stridesA[last] as number) === (fullA[axis] as number) * size &&
      (stridesB[last] as number) === (fullB[axis] as number) * size
    ) {
      dims[last] = (dims[last] as number) * size;
      stridesA[last] = fullA[axis] as number;
      stridesB[last] = fullB[axis] as number;
      continue;
    }
    dims.push(size);
    stridesA.push(fullA[axis] as number);
    stridesB.push(fullB[axis] as number);
  }
  if (dims.length === 0) return { dims: [1], stridesA: [0], stridesB: [0] };
  return { dims, stridesA, stridesB };
}

/**
 * `out[i] = a[ia] ⋈ b[ib]` over the walk.
 *
 * @param out - the bool output, overwritten
 * @param a - first operand
 * @param b - second operand
 * @param walk - from {@link broadcastWalk}
 * @param operator - 0 `==`, 1 `!=`, 2 `<`, 3 `<=`, 4 `>`, 5 `>=`
 */
export function compareInto(out: Uint8Array, a: NumericArray, b: NumericArray, walk: BroadcastWalk, operator: number): void {
  const { dims, stridesA, stridesB } = walk;
  const inner = dims.length - 1;
  const length = dims[inner] as number;
  const strideA = stridesA[inner] as number;
  const strideB = stridesB[inner] as number;
  const counter = new Array<number>(inner).fill(0);
  let offsetA = 0;
  let offsetB = 0;
  let target = 0;
  const total = out.length;
  while (target < total) {
    let ia = offsetA;
    let ib = offsetB;
    const end = target + length;
    switch (operator) {
      case 0:
        for (let i = target; i < end; i++, ia += strideA, ib += strideB) out[i] = (a[ia] as number) === (b[ib] as number) ? 1 : 0;
        break;
      case 1:
        for (let i = target; i < end; i++, ia += strideA, ib += strideB) out[i] = (a[ia] as number) !== (b[ib] as number) ? 1 : 0;
        break;
      case 2:
        for (let i = target; i < end; i++, ia += strideA, ib += strideB) out[i] = (a[ia] as number) < (b[ib] as number) ? 1 : 0;
        break;
      case 3:
        for (let i = target; i < end; i++, ia += strideA, ib += strideB) out[i] = (a[ia] as number) <= (b[ib] as number) ? 1 : 0;
        break;
      case 4:
        for (let i = target; i < end; i++, ia += strideA, ib += strideB) out[i] = (a[ia] as number) > (b[ib] as number) ? 1 : 0;
        break;
      default:
        for (let i = target; i < end; i++, ia += strideA, ib += strideB) out[i] = (a[ia] as number) >= (b[ib] as number) ? 1 : 0;
    }
    target = end;
    // next outer position (odometer, innermost outer axis first)
    for (let axis = inner - 1; axis >= 0; axis--) {
      counter[axis] = (counter[axis] as number) + 1;
      offsetA += stridesA[axis] as number;
      offsetB += stridesB[axis] as number;
      if ((counter[axis] as number) < (dims[axis] as number)) break;
      offsetA -= (stridesA[axis] as number) * (dims[axis] as number);
      offsetB -= (stridesB[axis] as number) * (dims[axis] as number);
      counter[axis] = 0;
    }
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * The kit's wasm kernel for one comparison.
 *
 * @param kernelName - which comparison
 * @returns the kernel function: inputs `a`, `b` (broadcastable, same dtype), output bool
 */
export function wasmComparison(kernelName: ComparisonKernel): tf.KernelFunc {
  const operator = OPERATOR[kernelName];
  return (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const numeric = (t: TensorInfo): boolean => t.dtype === 'float32' || t.dtype === 'int32' || t.dtype === 'bool';
    if (sameShape(a.shape, b.shape) || !numeric(a) || !numeric(b)) {
      return requireStockKernel(kernelName, 'wasm').kernelFunc(args) as TensorInfo;
    }
    const backend = args.backend as BackendWasm;
    const outShape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const out = backend.makeOutput(outShape, 'bool');
    if (outShape.some((d) => d === 0)) return out;
    // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
    compareInto(
      backend.typedArrayFromHeap(out) as Uint8Array,
      backend.typedArrayFromHeap(a) as NumericArray,
      backend.typedArrayFromHeap(b) as NumericArray,
      broadcastWalk(a.shape, b.shape, outShape),
      operator,
    );
    return out;
  };
}
