/**
 * Fix for wasm `BatchMatMul` and `_FusedMatMul`: always reach XNNPACK.
 *
 * The stock wasm kernels call XNNPACK's packed GEMM only when both inputs are one 2-D, untransposed
 * matrix; a transposed input or a batch dimension falls to a naive triple loop (0.7–2.8 GFLOP/s
 * against ~15–30 with XNNPACK on the machines here). Training hits the slow path on every step: the
 * gradient of `x·W` is `dy·Wᵀ` and `xᵀ·dy`.
 *
 * The fix, in the order it is applied:
 * 1. transpose explicitly so both operands are untransposed (a cache-blocked copy on the wasm heap,
 *    about 3× faster than the wasm `Transpose` kernel); for a single 2-D product, compute
 *    `(op(B)ᵀ·op(A)ᵀ)ᵀ` instead when that moves fewer elements;
 * 2. when `b` has no batch (or a batch of 1), stack all of `a`'s batches into one `[batch·M, K]`
 *    matrix (a free reshape) and make one 2-D call;
 * 3. otherwise make one 2-D call per output batch, with numpy broadcasting of the batch dimensions
 *    (the stock cpu and wasm kernels get `[2, 1, …] × [1, 3, …]` wrong: they return 3 batches, not 6).
 *
 * Each 2-D call is the stock kernel, so XNNPACK does the arithmetic and `_FusedMatMul` keeps its
 * bias and activation semantics. A bias of shape `[N]` and PReLU weights of size 1 or `[N]` go to
 * the stock kernel with every 2-D call; any other broadcastable bias or weights (which the stock
 * wasm kernel rejects or gets wrong: a `[1]` bias is read past its end, `[M, 1]` PReLU weights are
 * indexed modulo their size) are applied afterwards with the wasm `Add` and activation kernels.
 *
 * The gradient of `fused.matMul` is computed by tfjs-core from the op's inputs and output
 * (`customGrad` with unfused `matMul`s), so it needs nothing here: it runs on the fixed `BatchMatMul`.
 *
 * With native acceleration active (see `../accel.ts`), both kernels instead call OpenBLAS `sgemm` in
 * place on the wasm heap: the transposes become sgemm flags (no copies), batches become strided calls
 * (one per output batch only for mixed broadcasting), and a `[N]` (or size-1) bias is written into
 * the output before an `sgemm` with `beta = 1`. Other biases and every activation are applied
 * afterwards with the wasm kernels, exactly as on the XNNPACK path.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { activeAccel, type NativeAccel } from '../accel.js';
import { floatOffset } from './heap.js';
import { registeredKernel, requireStockKernel } from './registry.js';

type TensorInfo = tf.TensorInfo;

/** The shapes of one matmul after broadcasting, with both operands viewed untransposed. */
interface MatMulPlan {
  /** Batch dims of `a`, `b` and the output (numpy broadcasting of the first two). */
  readonly outerA: readonly number[];
  readonly outerB: readonly number[];
  readonly outer: readonly number[];
  readonly batchA: number;
  readonly batchB: number;
  readonly batch: number;
  /** Output rows. */
  readonly m: number;
  /** Inner (contracted) size. */
  readonly k: number;
  /** Output columns. */
  readonly n: number;
}

const product = (dims: readonly number[]): number => dims.reduce((p, d) => p * d, 1);

function planMatMul(op: string, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): MatMulPlan {
  const aRank = a.shape.length;
  const bRank = b.shape.length;
  if (aRank < 2 || bRank < 2) {
    throw new Error(`${op}: inputs must have rank >= 2, got a [${a.shape.join(', ')}] and b [${b.shape.join(', ')}]`);
  }
  const dimA = (i: number): number => a.shape[aRank + i] as number;
  const dimB = (i: number): number => b.shape[bRank + i] as number;
  const m = transposeA ? dimA(-1) : dimA(-2);
  const kA = transposeA ? dimA(-2) : dimA(-1);
  const kB = transposeB ? dimB(-1) : dimB(-2);
  const n = transposeB ? dimB(-2) : dimB(-1);
  if (kA !== kB) {
    throw new Error(
      `${op}: inner dimensions must match, got ${kA} (a [${a.shape.join(', ')}], transposeA ${transposeA}) ` +
        `and ${kB} (b [${b.shape.join(', ')}], transposeB ${transposeB})`,
    );
  }
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  return { outerA, outerB, outer, batchA: product(outerA), batchB: product(outerB), batch: product(outer), m, k: kA, n };
}

/**
 * The flat batch index of `operandOuter` that feeds output batch `flat` of `outer` (numpy
 * broadcasting: operand dims are right-aligned, size-1 dims repeat).
 */
function broadcastBatchIndex(flat: number, outer: readonly number[], operandOuter: readonly number[]): number {
  let index = 0;
  let stride = 1;
  let rest = flat;
  const offset = outer.length - operandOuter.length;
  for (let axis = outer.length - 1; axis >= 0; axis--) {
    const size = outer[axis] as number;
    const coordinate = rest % size;
    rest = Math.floor(rest / size);
    const operandAxis = axis - offset;
    if (operandAxis < 0) continue;
    const operandSize = operandOuter[operandAxis] as number;
    index += (operandSize === 1 ? 0 : coordinate) * stride;
    stride *= operandSize;
  }
  return index;
}

function requireKernel(kernelName: string): tf.KernelConfig {
  const config = registeredKernel(kernelName, 'wasm');
  if (config === undefined) throw new Error(`kernel fix: kernel '${kernelName}' is not registered for backend 'wasm'`);
  return config;
}

function runKernel(kernelName: string, backend: BackendWasm, inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap = {}): TensorInfo {
  return requireKernel(kernelName).kernelFunc({ inputs, backend, attrs }) as TensorInfo;
}

/** Tile edge of {@link transposeLastTwo}: 32×32 floats (4 KiB) keep both sides of a tile in L1. */
const TILE = 32;

/**
 * `x` (float32) viewed as `[batch, rows, cols]` -> a new tensor `[batch, cols, rows]`.
 *
 * A cache-blocked loop over the wasm heap, rather than the wasm `Transpose` kernel: that kernel takes
 * ~11 ns per element here (3.0 ms for `[1024, 256]`, 13.7 ms for `[1024, 1024]`) against ~4 ns for
 * this loop (1.1 ms and 8 ms), and an MoE backward pass transposes about a million elements per
 * expert.
 */
function transposeLastTwo(backend: BackendWasm, x: TensorInfo, batch: number, rows: number, cols: number): TensorInfo {
  const out = backend.makeOutput([batch, cols, rows], 'float32');
  // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
  const source = backend.typedArrayFromHeap({ dataId: x.dataId, shape: [batch, rows, cols], dtype: 'float32' }) as Float32Array;
  const target = backend.typedArrayFromHeap(out) as Float32Array;
  const matrixSize = rows * cols;
  for (let b = 0; b < batch; b++) {
    const base = b * matrixSize;
    for (let r0 = 0; r0 < rows; r0 += TILE) {
      const rEnd = Math.min(r0 + TILE, rows);
      for (let c0 = 0; c0 < cols; c0 += TILE) {
        const cEnd = Math.min(c0 + TILE, cols);
        for (let r = r0; r < rEnd; r++) {
          const sourceRow = base + r * cols;
          for (let c = c0; c < cEnd; c++) target[base + c * rows + r] = source[sourceRow + c] as number;
        }
      }
    }
  }
  return out;
}

/** Copies batch `index` of `whole` (`[batch, ...sliceShape]`) into a new tensor of `sliceShape`. */
function copyBatch(backend: BackendWasm, whole: TensorInfo, index: number, sliceShape: number[]): TensorInfo {
  const size = product(sliceShape);
  const slice = backend.makeOutput(sliceShape, 'float32');
  // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
  const source = backend.typedArrayFromHeap(whole) as Float32Array;
  (backend.typedArrayFromHeap(slice) as Float32Array).set(source.subarray(index * size, (index + 1) * size));
  return slice;
}

/**
 * Computes `a·b` (with the given transposes) through `call2d`, which must multiply one untransposed
 * `[1, rows, K]` by one untransposed `[1, K, N]` and return `[1, rows, N]`.
 */
function runPlanned(
  backend: BackendWasm,
  a: TensorInfo,
  b: TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
  plan: MatMulPlan,
  call2d: (a2d: TensorInfo, b2d: TensorInfo) => TensorInfo,
): TensorInfo {
  const { m, k, n, batchA, batchB, batch, outer, outerA, outerB } = plan;
  const temporaries: TensorInfo[] = [];
  try {
    // [batchA, M, K] and [batchB, K, N], untransposed
    const a3: TensorInfo = transposeA
      ? transposeLastTwo(backend, a, batchA, k, m)
      : { dataId: a.dataId, shape: [batchA, m, k], dtype: a.dtype };
    if (transposeA) temporaries.push(a3);
    const b3: TensorInfo = transposeB
      ? transposeLastTwo(backend, b, batchB, n, k)
      : { dataId: b.dataId, shape: [batchB, k, n], dtype: b.dtype };
    if (transposeB) temporaries.push(b3);

    if (batchB === 1) {
      // b is shared: all of a's rows in one GEMM, [1, batchA·M, K] x [1, K, N]
      const out = call2d({ ...a3, shape: [1, batchA * m, k] }, { ...b3, shape: [1, k, n] });
      return { ...out, shape: [...outer, m, n] };
    }

    const out = backend.makeOutput([...outer, m, n], 'float32'); // [...outer, M, N]
    const sliceSize = m * n;
    const sharedA: TensorInfo | undefined = batchA === 1 ? { ...a3, shape: [1, m, k] } : undefined;
    try {
      for (let index = 0; index < batch; index++) {
        const slices: TensorInfo[] = [];
        try {
          const aSlice = sharedA ?? copyBatch(backend, a3, broadcastBatchIndex(index, outer, outerA), [1, m, k]);
          if (aSlice !== sharedA) slices.push(aSlice);
          const bSlice = copyBatch(backend, b3, broadcastBatchIndex(index, outer, outerB), [1, k, n]);
          slices.push(bSlice);
          const product2d = call2d(aSlice, bSlice); // [1, M, N]
          slices.push(product2d);
          const result = backend.typedArrayFromHeap(product2d) as Float32Array;
          (backend.typedArrayFromHeap(out) as Float32Array).set(result, index * sliceSize);
        } finally {
          for (const t of slices) backend.disposeData(t.dataId);
        }
      }
    } catch (error) {
      backend.disposeData(out.dataId);
      throw error;
    }
    return out;
  } finally {
    for (const t of temporaries) backend.disposeData(t.dataId);
  }
}

function isEmpty(plan: MatMulPlan): boolean {
  return plan.m * plan.n * plan.k * plan.batch === 0;
}

/**
 * The kit's wasm `BatchMatMul` kernel: explicit transposes and 2-D calls of the stock kernel, so
 * XNNPACK does every product. Non-float32 inputs and empty shapes go to the stock kernel unchanged.
 *
 * @param args - the kernel arguments: inputs `a` `[...batchA, M, K]` (or `[..., K, M]` with
 *   `transposeA`) and `b` `[...batchB, K, N]` (or `[..., N, K]`), attrs `transposeA`, `transposeB`
 * @returns `[...broadcast(batchA, batchB), M, N]` float32
 * @throws Error naming the kernel and both shapes when the inner dimensions differ
 */
export function wasmBatchMatMul(args: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): TensorInfo {
  const stock = requireStockKernel(tf.BatchMatMul, 'wasm');
  const backend = args.backend as BackendWasm;
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const transposeA = Boolean(args.attrs?.transposeA);
  const transposeB = Boolean(args.attrs?.transposeB);
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock.kernelFunc(args) as TensorInfo;
  const plan = planMatMul('BatchMatMul', a, b, transposeA, transposeB);
  if (isEmpty(plan)) return stock.kernelFunc(args) as TensorInfo;
  const accel = activeAccel();
  if (accel !== null) return nativeMatMul(accel, backend, a, b, transposeA, transposeB, plan, undefined);
  const call2d = (a2d: TensorInfo, b2d: TensorInfo): TensorInfo =>
    stock.kernelFunc({ inputs: { a: a2d, b: b2d }, backend, attrs: { transposeA: false, transposeB: false } }) as TensorInfo;
  if (plan.batch === 1 && swappedIsCheaper(plan, transposeA, transposeB)) {
    // C = op(A)·op(B) as (op(B)ᵀ·op(A)ᵀ)ᵀ: moves fewer elements when op(A) is a large transpose.
    const swappedPlan = planMatMul('BatchMatMul', b, a, !transposeB, !transposeA);
    const swapped = runPlanned(backend, b, a, !transposeB, !transposeA, swappedPlan, call2d); // [..., N, M]
    try {
      const out = transposeLastTwo(backend, swapped, 1, plan.n, plan.m); // [1, M, N]
      return { ...out, shape: [...plan.outer, plan.m, plan.n] };
    } finally {
      backend.disposeData(swapped.dataId);
    }
  }
  return runPlanned(backend, a, b, transposeA, transposeB, plan, call2d);
}

/**
 * Whether `(op(B)ᵀ·op(A)ᵀ)ᵀ` transposes fewer elements than `op(A)·op(B)` computed directly. E.g. the
 * weight gradient `hᵀ·dy` with `h` `[T, F]` and `dy` `[T, D]`, F > D: transposing `dy` and the
 * `[D, F]` result moves `T·D + D·F` elements instead of `T·F`.
 */
function swappedIsCheaper(plan: MatMulPlan, transposeA: boolean, transposeB: boolean): boolean {
  const { m, k, n } = plan;
  const direct = (transposeA ? k * m : 0) + (transposeB ? k * n : 0);
  const swapped = (transposeB ? 0 : k * n) + (transposeA ? 0 : k * m) + m * n;
  return swapped < direct;
}

/** Activations of `_FusedMatMul`, applied by the wasm kernel of the same name. */
const ACTIVATION_KERNELS: Readonly<Record<string, string>> = {
  relu: 'Relu',
  relu6: 'Relu6',
  leakyrelu: 'LeakyRelu',
  sigmoid: 'Sigmoid',
  elu: 'Elu',
  prelu: 'Prelu',
};

function applyActivation(
  backend: BackendWasm,
  x: TensorInfo,
  activation: string,
  preluWeights: TensorInfo | undefined,
  leakyreluAlpha: number,
): TensorInfo {
  if (activation === 'linear') return x;
  const kernelName = ACTIVATION_KERNELS[activation];
  if (kernelName === undefined) throw new Error(`_FusedMatMul: activation '${activation}' is not supported on wasm`);
  if (activation === 'prelu') {
    if (preluWeights === undefined) throw new Error(`_FusedMatMul: activation 'prelu' needs preluActivationWeights`);
    // prelu(x) = relu(x) - alpha·relu(-x), with the binary kernels' numpy broadcasting (the wasm
    // Prelu kernel indexes alpha modulo its size, which is wrong for weights such as [M, 1]).
    const temporaries: TensorInfo[] = [];
    try {
      const positive = runKernel('Relu', backend, { x });
      temporaries.push(positive);
      const negated = runKernel('Neg', backend, { x });
      temporaries.push(negated);
      const negativePart = runKernel('Relu', backend, { x: negated });
      temporaries.push(negativePart);
      const scaled = runKernel('Multiply', backend, { a: negativePart, b: preluWeights });
      temporaries.push(scaled);
      return runKernel('Sub', backend, { a: positive, b: scaled });
    } finally {
      for (const t of temporaries) backend.disposeData(t.dataId);
    }
  }
  return runKernel(kernelName, backend, { x }, activation === 'leakyrelu' ? { alpha: leakyreluAlpha } : {});
}

/**
 * The kit's wasm `_FusedMatMul` kernel: `activation(a·b + bias)` through 2-D calls of the stock fused
 * kernel (XNNPACK, bias and activation fused), with the same transposes and batching as
 * {@link wasmBatchMatMul}.
 *
 * @param args - the kernel arguments: inputs `a`, `b` (as for {@link wasmBatchMatMul}), optional `bias`
 *   (broadcastable to the output; `[N]` is the fused fast path) and `preluActivationWeights`; attrs
 *   `transposeA`, `transposeB`, `activation` (`linear`, `relu`, `relu6`, `leakyrelu`, `prelu`,
 *   `sigmoid`, `elu`) and `leakyreluAlpha`
 * @returns `[...broadcast(batchA, batchB), M, N]` float32
 * @throws Error naming the kernel for mismatched inner dimensions or an unknown activation
 */
export function wasmFusedMatMul(args: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): TensorInfo {
  const stock = requireStockKernel(tf._FusedMatMul, 'wasm');
  const backend = args.backend as BackendWasm;
  const { a, b, bias, preluActivationWeights } = args.inputs as {
    a: TensorInfo;
    b: TensorInfo;
    bias?: TensorInfo | null;
    preluActivationWeights?: TensorInfo | null;
  };
  const transposeA = Boolean(args.attrs?.transposeA);
  const transposeB = Boolean(args.attrs?.transposeB);
  const activation = (args.attrs?.activation as string | undefined) ?? 'linear';
  const leakyreluAlpha = (args.attrs?.leakyreluAlpha as number | undefined) ?? 0.2;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock.kernelFunc(args) as TensorInfo;
  const plan = planMatMul('_FusedMatMul', a, b, transposeA, transposeB);
  if (isEmpty(plan)) return stock.kernelFunc(args) as TensorInfo;

  const biasInfo = bias ?? undefined;
  const preluInfo = preluActivationWeights ?? undefined;
  const accel = activeAccel();
  if (accel !== null) {
    const rowBias = biasInfo !== undefined && isRowBias(biasInfo, plan) ? biasInfo : undefined;
    const product2d = nativeMatMul(accel, backend, a, b, transposeA, transposeB, plan, rowBias); // [...outer, M, N]
    return addBiasAndActivate(backend, product2d, rowBias === undefined ? biasInfo : undefined, activation, preluInfo, leakyreluAlpha);
  }
  const biasFuses = biasInfo === undefined || (biasInfo.shape.length === 1 && biasInfo.shape[0] === plan.n);
  const preluSize = preluInfo === undefined ? 0 : product(preluInfo.shape);
  const preluFuses =
    preluInfo === undefined || (preluInfo.shape.length <= 1 && (preluSize === 1 || preluSize === plan.n));

  if (biasFuses && preluFuses) {
    const fusedInputs: tf.NamedTensorInfoMap = {};
    if (biasInfo !== undefined) fusedInputs.bias = biasInfo;
    if (preluInfo !== undefined) fusedInputs.preluActivationWeights = preluInfo;
    const attrs = { transposeA: false, transposeB: false, activation, leakyreluAlpha };
    return runPlanned(backend, a, b, transposeA, transposeB, plan, (a2d, b2d) =>
      stock.kernelFunc({ inputs: { a: a2d, b: b2d, ...fusedInputs }, backend, attrs }) as TensorInfo,
    );
  }

  // General broadcasting of bias / PReLU weights: linear product, then Add and the activation kernel.
  const linear = wasmBatchMatMul({ inputs: { a, b }, backend, attrs: { transposeA, transposeB } }); // [...outer, M, N]
  return addBiasAndActivate(backend, linear, biasInfo, activation, preluInfo, leakyreluAlpha);
}

/**
 * The tail of `_FusedMatMul` where the stock kernel cannot fuse: `product + bias` (broadcasting `Add`),
 * then the activation. Takes ownership of `product`: intermediates are freed, also on error.
 *
 * @param backend - the wasm backend
 * @param product - `[...outer, M, N]` the linear product
 * @param bias - added with broadcasting, or undefined when there is none left to add
 * @param activation - `_FusedMatMul`'s activation attr
 * @param prelu - PReLU weights, when the activation is `prelu`
 * @param leakyreluAlpha - slope of `leakyrelu`
 * @returns the activated result
 */
function addBiasAndActivate(
  backend: BackendWasm,
  product: TensorInfo,
  bias: TensorInfo | undefined,
  activation: string,
  prelu: TensorInfo | undefined,
  leakyreluAlpha: number,
): TensorInfo {
  let result = product;
  try {
    if (bias !== undefined) {
      result = runKernel('Add', backend, { a: product, b: bias });
      backend.disposeData(product.dataId);
    }
    const activated = applyActivation(backend, result, activation, prelu, leakyreluAlpha);
    if (activated !== result) backend.disposeData(result.dataId);
    return activated;
  } catch (error) {
    backend.disposeData(result.dataId);
    throw error;
  }
}

/** Whether a bias broadcasts along rows only (`[N]`, `[1, N]`, `[1]`, `[]`...), so it can seed the output. */
function isRowBias(bias: TensorInfo, plan: MatMulPlan): boolean {
  if (bias.dtype !== 'float32' || bias.shape.length > plan.outer.length + 2) return false;
  const size = product(bias.shape);
  const last = bias.shape[bias.shape.length - 1];
  return size === 1 || (size === plan.n && last === plan.n);
}

/**
 * `op(a)·op(b)` (plus a row bias) by OpenBLAS `sgemm`, reading and writing the wasm heap in place.
 *
 * @param accel - the native addon
 * @param backend - the wasm backend
 * @param a - `[...outerA, M, K]` float32 (`[..., K, M]` with `transposeA`)
 * @param b - `[...outerB, K, N]` float32 (`[..., N, K]` with `transposeB`)
 * @param transposeA - as in the kernel
 * @param transposeB - as in the kernel
 * @param plan - from {@link planMatMul}
 * @param rowBias - a float32 bias that broadcasts along rows (see {@link isRowBias}), or undefined
 * @returns `[...outer, M, N]` float32
 */
function nativeMatMul(
  accel: NativeAccel,
  backend: BackendWasm,
  a: TensorInfo,
  b: TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
  plan: MatMulPlan,
  rowBias: TensorInfo | undefined,
): TensorInfo {
  const { m, k, n, batchA, batchB, batch, outer, outerA, outerB } = plan;
  const out = backend.makeOutput([...outer, m, n], 'float32'); // [...outer, M, N]
  try {
    // Offsets and the heap are read after makeOutput: an allocation may grow (and so replace) the heap.
    const aOffset = floatOffset(backend, a, 'BatchMatMul');
    const bOffset = floatOffset(backend, b, 'BatchMatMul');
    const cOffset = floatOffset(backend, out, 'BatchMatMul');
    let beta = 0;
    if (rowBias !== undefined) {
      const target = backend.typedArrayFromHeap(out) as Float32Array;
      const biasValues = backend.typedArrayFromHeap(rowBias) as Float32Array;
      if (biasValues.length === 1) target.fill(biasValues[0] as number);
      else for (let row = 0; row < batch * m; row++) target.set(biasValues, row * n);
      beta = 1;
    }
    const heap = backend.typedArrayFromHeap(out).buffer as ArrayBuffer; // the whole wasm heap
    const lda = transposeA ? m : k;
    const ldb = transposeB ? k : n;
    if (batchB === 1 && !transposeA) {
      // b is shared and a's batches are consecutive rows: one [batchA·M, K] x [K, N] product
      accel.sgemm(heap, false, transposeB, batchA * m, n, k, 1, aOffset, lda, 0, bOffset, ldb, 0, beta, cOffset, n, 0, 1);
    } else if ((batchA === batch || batchA === 1) && (batchB === batch || batchB === 1)) {
      // one strided batch; a stride of 0 repeats the operand that has no batch
      accel.sgemm(
        heap, transposeA, transposeB, m, n, k, 1,
        aOffset, lda, batchA === 1 ? 0 : m * k,
        bOffset, ldb, batchB === 1 ? 0 : k * n,
        beta, cOffset, n, m * n, batch,
      );
    } else {
      // mixed broadcasting ([2, 1] x [1, 3]): one call per output batch
      for (let index = 0; index < batch; index++) {
        const indexA = broadcastBatchIndex(index, outer, outerA);
        const indexB = broadcastBatchIndex(index, outer, outerB);
        accel.sgemm(
          heap, transposeA, transposeB, m, n, k, 1,
          aOffset + indexA * m * k, lda, 0,
          bOffset + indexB * k * n, ldb, 0,
          beta, cOffset + index * m * n, n, 0, 1,
        );
      }
    }
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  return out;
}

/** The name of the fix for wasm `BatchMatMul`. */
export const WASM_BATCH_MATMUL_FIX = 'wasm-batch-matmul';
/** The name of the fix for wasm `_FusedMatMul`. */
export const WASM_FUSED_MATMUL_FIX = 'wasm-fused-matmul';
