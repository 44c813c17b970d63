/**
 * wasm kernels of `causalAttention` (`../attention.ts`): causal self-attention over all heads in one
 * kernel forward and one backward. Each lists its per-head products (`B·H` of them, independent) for
 * the native addon's `sgemmList`, which runs them in parallel, each whole on one thread, and calls
 * the addon's `causalSoftmax` / `causalSoftmaxGrad` once over all `B·H` score blocks. Registered for
 * `wasm` only and called only while native acceleration is active; otherwise the op runs as composite
 * tfjs ops.
 *
 * | kernel | inputs | outputs |
 * |---|---|---|
 * | `MoeppCausalAttention` | `q`, `k`, `v` `[B, H, T, hd]`; attr `scale` | `out` `[B, T, H, hd]`, `probs` `[B, H, T, T]` (saved for the backward pass) |
 * | `MoeppCausalAttentionGrad` | `dOut` `[B, T, H, hd]`, `q`, `k`, `v` `[B, H, T, hd]`, `probs` `[B, H, T, T]`; attr `scale` | `dq`, `dk`, `dv` `[B, H, T, hd]` |
 *
 * For head `h` of batch row `b` (`X_bh` the `[T, ·]` block of `X`):
 * forward, `S_bh = Q_bh·K_bhᵀ` (written into `probs`), `P_bh = causalSoftmax(scale·S_bh)` (in place),
 * `O_bh = P_bh·V_bh` written straight into `out`'s `[B, T, H, hd]` layout (row stride `H·hd`), so the
 * heads are merged without a transpose; backward, `dV_bh = P_bhᵀ·dO_bh` and `dP_bh = dO_bh·V_bhᵀ` (one
 * product list), `dS = scale·P⊙(dP − rowsum(P⊙dP))` (in place over `dP`, a `[B, H, T, T]` scratch
 * buffer), then `dQ_bh = dS_bh·K_bh` and `dK_bh = dS_bhᵀ·Q_bh` (one product list).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { floatOffset, requireAccel, runProducts, type HeapProduct } from './heap.js';
import { registerWasmKernels, requireInput, withOutputs, type NativeKernelArgs } from './native-kernel.js';

type TensorInfo = tf.TensorInfo;

/** Element offset of a float32 tensor in the wasm heap (see `floatOffset`). */
const offsetOf = (backend: BackendWasm, info: TensorInfo): number => floatOffset(backend, info, 'causal attention kernel');

/** Kernel names of the fused causal attention. */
export const ATTENTION_KERNELS = {
  forward: 'MoeppCausalAttention',
  backward: 'MoeppCausalAttentionGrad',
} as const;

/** The sizes both kernels read from `q` `[B, H, T, hd]`. */
interface AttentionSizes {
  readonly batch: number;
  readonly heads: number;
  readonly seqLen: number;
  readonly headDim: number;
}

/** Reads B, H, T, hd from `q` and checks `k` and `v` against it. */
function sizesOf(kernelName: string, inputs: tf.NamedTensorInfoMap): AttentionSizes {
  const q = inputs.q;
  if (q === undefined || q.shape.length !== 4) throw new Error(`${kernelName}: 'q' must be [B, H, T, hd]`);
  requireInput(kernelName, inputs, 'q', q.shape);
  requireInput(kernelName, inputs, 'k', q.shape);
  requireInput(kernelName, inputs, 'v', q.shape);
  const [batch, heads, seqLen, headDim] = q.shape as [number, number, number, number];
  return { batch, heads, seqLen, headDim };
}

function scaleOf(kernelName: string, args: NativeKernelArgs): number {
  const scale = args.attrs?.scale;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new Error(`${kernelName}: attribute 'scale' must be a finite number`);
  return scale;
}

/** One entry per (b, h), `i = b·H + h`, in that order. */
function perHead<T>(sizes: AttentionSizes, product: (b: number, h: number, i: number) => T): T[] {
  const products: T[] = [];
  for (let b = 0; b < sizes.batch; b++) {
    for (let h = 0; h < sizes.heads; h++) products.push(product(b, h, b * sizes.heads + h));
  }
  return products;
}

function forwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = ATTENTION_KERNELS.forward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const sizes = sizesOf(kernelName, args.inputs);
  const scale = scaleOf(kernelName, args);
  const { batch, heads, seqLen, headDim } = sizes;
  const matrices = batch * heads;
  const shapes = [
    [batch, seqLen, heads, headDim], // out
    [batch, heads, seqLen, seqLen], // probs
  ];
  return withOutputs(backend, shapes, (heap, outputs) => {
    if (matrices * seqLen * headDim > 0) {
      const [out, probs] = outputs as [TensorInfo, TensorInfo];
      const [qOffset, kOffset, vOffset] = (['q', 'k', 'v'] as const).map((name) => offsetOf(backend, args.inputs[name] as TensorInfo)) as [number, number, number];
      const outOffset = offsetOf(backend, out);
      const probsOffset = offsetOf(backend, probs);
      const block = seqLen * headDim; // floats of one [T, hd] head
      const scores = seqLen * seqLen; // floats of one [T, T] block
      const rowWidth = heads * headDim; // H·hd, the row stride of out
      // S_bh [T, T] = Q_bh [T, hd] · K_bhᵀ, into probs
      runProducts(
        accel,
        heap,
        perHead(sizes, (_b, _h, i) => ({
          transposeA: false,
          transposeB: true,
          m: seqLen,
          n: seqLen,
          k: headDim,
          aOffset: qOffset + i * block,
          lda: headDim,
          bOffset: kOffset + i * block,
          ldb: headDim,
          cOffset: probsOffset + i * scores,
          ldc: seqLen,
        })),
      );
      accel.causalSoftmax(heap, probsOffset, probsOffset, matrices, seqLen, scale); // P = causal softmax of scale·S, in place
      // O_bh [T, hd] = P_bh [T, T] · V_bh [T, hd], into out[b, :, h, :] (rows H·hd apart)
      runProducts(
        accel,
        heap,
        perHead(sizes, (b, h, i) => ({
          transposeA: false,
          transposeB: false,
          m: seqLen,
          n: headDim,
          k: seqLen,
          aOffset: probsOffset + i * scores,
          lda: seqLen,
          bOffset: vOffset + i * block,
          ldb: headDim,
          cOffset: outOffset + b * seqLen * rowWidth + h * headDim,
          ldc: rowWidth,
        })),
      );
    } else {
      // nothing to multiply: out is empty; probs (non-empty only when hd = 0) is never read, zeros
      (backend.typedArrayFromHeap(outputs[1] as TensorInfo) as Float32Array).fill(0);
    }
  });
}

function backwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = ATTENTION_KERNELS.backward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const sizes = sizesOf(kernelName, args.inputs);
  const scale = scaleOf(kernelName, args);
  const { batch, heads, seqLen, headDim } = sizes;
  const dOut = requireInput(kernelName, args.inputs, 'dOut', [batch, seqLen, heads, headDim]);
  const probs = requireInput(kernelName, args.inputs, 'probs', [batch, heads, seqLen, seqLen]);
  const matrices = batch * heads;
  const headShape = [batch, heads, seqLen, headDim];
  // dq, dk, dv; scratch dP / dS [B, H, T, T]
  return withOutputs(backend, [headShape, headShape, headShape], (heap, outputs, [scratch]) => {
    if (matrices * seqLen * headDim > 0) {
      const [dq, dk, dv] = outputs as [TensorInfo, TensorInfo, TensorInfo];
      const [qOffset, kOffset, vOffset] = (['q', 'k', 'v'] as const).map((name) => offsetOf(backend, args.inputs[name] as TensorInfo)) as [number, number, number];
      const dOutOffset = offsetOf(backend, dOut);
      const probsOffset = offsetOf(backend, probs);
      const [dqOffset, dkOffset, dvOffset] = [dq, dk, dv].map((info) => offsetOf(backend, info)) as [number, number, number];
      const scratchOffset = offsetOf(backend, scratch as TensorInfo);
      const block = seqLen * headDim;
      const scores = seqLen * seqLen;
      const rowWidth = heads * headDim;
      const dOutHead = (b: number, h: number): number => dOutOffset + b * seqLen * rowWidth + h * headDim; // dO_bh [T, hd], rows H·hd apart
      runProducts(
        accel,
        heap,
        perHead(sizes, (b, h, i): HeapProduct[] => [
          // dV_bh [T, hd] = P_bhᵀ ([T, T] read transposed) · dO_bh [T, hd]
          {
            transposeA: true,
            transposeB: false,
            m: seqLen,
            n: headDim,
            k: seqLen,
            aOffset: probsOffset + i * scores,
            lda: seqLen,
            bOffset: dOutHead(b, h),
            ldb: rowWidth,
            cOffset: dvOffset + i * block,
            ldc: headDim,
          },
          // dP_bh [T, T] = dO_bh [T, hd] · V_bhᵀ, into the scratch buffer
          {
            transposeA: false,
            transposeB: true,
            m: seqLen,
            n: seqLen,
            k: headDim,
            aOffset: dOutHead(b, h),
            lda: rowWidth,
            bOffset: vOffset + i * block,
            ldb: headDim,
            cOffset: scratchOffset + i * scores,
            ldc: seqLen,
          },
        ]).flat(),
      );
      accel.causalSoftmaxGrad(heap, probsOffset, scratchOffset, scratchOffset, matrices, seqLen, scale); // dS over dP, in place
      runProducts(
        accel,
        heap,
        perHead(sizes, (_b, _h, i): HeapProduct[] => [
          // dQ_bh [T, hd] = dS_bh [T, T] · K_bh [T, hd]
          {
            transposeA: false,
            transposeB: false,
            m: seqLen,
            n: headDim,
            k: seqLen,
            aOffset: scratchOffset + i * scores,
            lda: seqLen,
            bOffset: kOffset + i * block,
            ldb: headDim,
            cOffset: dqOffset + i * block,
            ldc: headDim,
          },
          // dK_bh [T, hd] = dS_bhᵀ ([T, T] read transposed) · Q_bh [T, hd]
          {
            transposeA: true,
            transposeB: false,
            m: seqLen,
            n: headDim,
            k: seqLen,
            aOffset: scratchOffset + i * scores,
            lda: seqLen,
            bOffset: qOffset + i * block,
            ldb: headDim,
            cOffset: dkOffset + i * block,
            ldc: headDim,
          },
        ]).flat(),
      );
    }
  }, [[batch, heads, seqLen, seqLen]]);
}

const KERNELS: ReadonlyArray<[string, tf.KernelFunc]> = [
  [ATTENTION_KERNELS.forward, forwardKernel as unknown as tf.KernelFunc],
  [ATTENTION_KERNELS.backward, backwardKernel as unknown as tf.KernelFunc],
];

/**
 * Registers the causal attention kernels for `wasm` (once per process; a second copy of this package
 * finds them registered and leaves them).
 */
export function registerAttentionKernels(): void {
  registerWasmKernels(KERNELS);
}
