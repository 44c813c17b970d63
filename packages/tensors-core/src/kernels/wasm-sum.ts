/**
 * Fix for wasm `Sum` over leading (or middle) axes: no transpose.
 *
 * The stock wasm kernel reduces only innermost axes: for any other axes it first transposes the
 * whole input so that they become innermost (the wasm `Transpose` kernel, ~11 ns per element here),
 * then sums. Training sums over the leading axis all the time: the gradient of a bias added to
 * `[N, D]` rows is `sum(dy, 0)`, and every broadcast in a forward pass becomes such a sum in the
 * backward pass (RMSNorm weights, the batch dims of a broadcast matmul).
 *
 * The fix views `x` as `[outer, reduce, inner]` (the reduced axes must be consecutive) and sums the
 * `reduce` rows of each `[reduce, inner]` block as the product `ones[1, reduce] · block`, through the
 * wasm `BatchMatMul` kernel (OpenBLAS with native acceleration, else XNNPACK; float32 accumulation,
 * as the stock kernel); with several blocks and no native acceleration, or several small blocks, a
 * plain float64 loop over the wasm heap instead. Innermost reductions (`inner = 1`), non-float32 inputs and reductions over axes
 * that are not consecutive go to the stock kernel unchanged. An empty input sums to zeros (the stock
 * kernel returned uninitialised memory).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { activeAccel } from '../accel.js';
import { registeredKernel, requireStockKernel } from './registry.js';

type TensorInfo = tf.TensorInfo;

/** The name of the wasm `Sum` fix. */
export const WASM_SUM_FIX = 'wasm-sum';

interface SumArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: {};
  attrs?: tf.NamedAttrMap;
}

/**
 * `x` viewed as `[outer, reduce, inner]` for consecutive reduced axes, or null when the axes are not
 * consecutive.
 */
function blockLayout(shape: readonly number[], axes: readonly number[]): { outer: number; reduce: number; inner: number } | null {
  const sorted = [...new Set(axes)].sort((p, q) => p - q);
  const first = sorted[0] as number;
  if (sorted.some((axis, i) => axis !== first + i)) return null;
  const last = sorted[sorted.length - 1] as number;
  const size = (dims: readonly number[]): number => dims.reduce((p, d) => p * d, 1);
  return { outer: size(shape.slice(0, first)), reduce: size(shape.slice(first, last + 1)), inner: size(shape.slice(last + 1)) };
}

/**
 * The column sums of each `[reduce, inner]` block: `out[o, j] = Σ_r x[o, r, j]`, accumulated in float64.
 *
 * @param out - `[outer·inner]`, overwritten
 * @param x - `[outer·reduce·inner]`
 * @param outer - blocks
 * @param reduce - rows per block
 * @param inner - row length
 */
export function sumLeadingInto(out: Float32Array, x: Float32Array, outer: number, reduce: number, inner: number): void {
  const accumulator = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    accumulator.fill(0);
    const base = o * reduce * inner;
    for (let r = 0; r < reduce; r++) {
      const row = base + r * inner;
      for (let j = 0; j < inner; j++) accumulator[j] = (accumulator[j] as number) + (x[row + j] as number);
    }
    out.set(accumulator, o * inner);
  }
}

/** Blocks of at least this many elements are summed by a product when there are several (native only). */
const LARGE_BLOCK = 16384;

function requireRegisteredKernel(kernelName: string): tf.KernelConfig {
  const config = registeredKernel(kernelName, 'wasm');
  if (config === undefined) throw new Error(`Sum: kernel '${kernelName}' is not registered for backend 'wasm'`);
  return config;
}

/**
 * The kit's wasm `Sum` kernel.
 *
 * @param args - input `x`; attrs `axis` (number or list) and `keepDims`
 * @returns `x` summed over `axis`, float32 (other dtypes: the stock kernel's result)
 */
export function wasmSum(args: SumArgs): TensorInfo {
  const stock = requireStockKernel(tf.Sum, 'wasm');
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype !== 'float32' && x.dtype !== 'int32') return stock.kernelFunc(args) as TensorInfo;
  const axes = tf.util.parseAxisParam((args.attrs?.axis as number | number[] | undefined) ?? [], x.shape);
  if (axes.length === 0) return stock.kernelFunc(args) as TensorInfo;
  const keepDims = Boolean(args.attrs?.keepDims);
  const outShape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
  const backend = args.backend as BackendWasm;
  if (x.shape.some((d) => d === 0)) {
    // The stock kernel leaves the output uninitialised here; a sum over nothing is 0.
    const empty = backend.makeOutput(outShape, x.dtype);
    (backend.typedArrayFromHeap(empty) as Float32Array | Int32Array).fill(0);
    return empty;
  }
  const layout = blockLayout(x.shape, axes);
  if (x.dtype !== 'float32' || layout === null || layout.inner === 1) return stock.kernelFunc(args) as TensorInfo;
  if (layout.outer === 1 || (activeAccel() !== null && layout.reduce * layout.inner >= LARGE_BLOCK)) {
    // Σ over rows = ones[1, R] · x[R, C]: a GEMM (OpenBLAS, or XNNPACK through the BatchMatMul fix)
    // reads the rows at memory speed, ~10× the plain loop. Many small blocks (the `[N, K, E]` one-hots
    // of a router summed over K) stay with the loop: one tiny product per block costs more than it saves.
    const ones = backend.makeOutput([1, layout.reduce], 'float32');
    try {
      (backend.typedArrayFromHeap(ones) as Float32Array).fill(1);
      const rows = { dataId: x.dataId, shape: [layout.outer, layout.reduce, layout.inner], dtype: x.dtype };
      const product = requireRegisteredKernel(tf.BatchMatMul).kernelFunc({
        inputs: { a: layout.outer === 1 ? ones : { ...ones, shape: [1, 1, layout.reduce] }, b: layout.outer === 1 ? { ...rows, shape: [layout.reduce, layout.inner] } : rows },
        backend,
        attrs: { transposeA: false, transposeB: false },
      }) as TensorInfo; // [1, C] or [outer, 1, C]
      return { ...product, shape: outShape };
    } finally {
      backend.disposeData(ones.dataId);
    }
  }
  const out = backend.makeOutput(outShape, 'float32');
  // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
  sumLeadingInto(
    backend.typedArrayFromHeap(out) as Float32Array,
    backend.typedArrayFromHeap(x) as Float32Array,
    layout.outer,
    layout.reduce,
    layout.inner,
  );
  return out;
}
