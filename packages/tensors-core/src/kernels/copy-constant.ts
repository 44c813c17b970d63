/**
 * wasm kernels of `copyConstantMix` (`../copy-constant.ts`): the copy and constant experts of an MoE++
 * layer for every token, forward and backward, with the two products by OpenBLAS (`runProducts`) and
 * the per-token work in the native addon. Registered for `wasm` only and called only while native
 * acceleration is active; otherwise the op runs as composite tfjs ops.
 *
 * `N` tokens, `D` width, `C` constant experts.
 *
 * | kernel | inputs | outputs |
 * |---|---|---|
 * | `MoeppCopyConstant` | `x` `[N, D]`, `gates` `[N, 1 + C]`, `mixWeight` `[D, 2C]`, `vectors` `[C, D]` | `y` `[N, D]`, `mix` `[N, 2C]` (the pairwise softmax, saved) |
 * | `MoeppCopyConstantGrad` | `dy`, `x`, `gates`, `mixWeight`, `vectors`, `mix` | `dx` `[N, D]`, `dGates` `[N, 1 + C]`, `dMixWeight` `[D, 2C]`, `dVectors` `[C, D]` |
 */
import type * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { floatOffset, requireAccel, runProducts } from './heap.js';
import { registerWasmKernels, requireInput, withOutputs, type NativeKernelArgs } from './native-kernel.js';

type TensorInfo = tf.TensorInfo;

/** Kernel names of the copy / constant experts op. */
export const COPY_CONSTANT_KERNELS = {
  forward: 'MoeppCopyConstant',
  backward: 'MoeppCopyConstantGrad',
} as const;

const offsetOf = (backend: BackendWasm, info: TensorInfo): number => floatOffset(backend, info, 'copy/constant kernel');

/** N, D, C from `x` `[N, D]` and `vectors` `[C, D]`, every input checked. */
function sizesOf(kernelName: string, inputs: tf.NamedTensorInfoMap): { n: number; d: number; c: number } {
  const x = inputs.x;
  const vectors = inputs.vectors;
  if (x === undefined || x.shape.length !== 2 || vectors === undefined || vectors.shape.length !== 2) {
    throw new Error(`${kernelName}: 'x' must be [N, D] and 'vectors' [C, D]`);
  }
  const [n, d] = x.shape as [number, number];
  const c = vectors.shape[0] as number;
  requireInput(kernelName, inputs, 'x', [n, d]);
  requireInput(kernelName, inputs, 'vectors', [c, d]);
  requireInput(kernelName, inputs, 'gates', [n, 1 + c]);
  requireInput(kernelName, inputs, 'mixWeight', [d, 2 * c]);
  return { n, d, c };
}

function forwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = COPY_CONSTANT_KERNELS.forward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const { n, d, c } = sizesOf(kernelName, args.inputs);
  const { x, gates, mixWeight, vectors } = args.inputs as Record<string, TensorInfo>;
  const shapes = [
    [n, d], // y
    [n, 2 * c], // mix
  ];
  return withOutputs(backend, shapes, (heap, outputs) => {
    const [y, mix] = outputs as [TensorInfo, TensorInfo];
    const [xOffset, mixOffset] = [offsetOf(backend, x as TensorInfo), offsetOf(backend, mix)];
    if (n > 0) {
      // mix [N, 2C] = x [N, D] · mixWeight [D, 2C]; the softmax and the rest per token, natively
      runProducts(accel, heap, [
        { transposeA: false, transposeB: false, m: n, n: 2 * c, k: d, aOffset: xOffset, lda: Math.max(d, 1), bOffset: offsetOf(backend, mixWeight as TensorInfo), ldb: 2 * c, cOffset: mixOffset, ldc: 2 * c },
      ]);
      accel.copyConstant(heap, xOffset, offsetOf(backend, gates as TensorInfo), mixOffset, offsetOf(backend, vectors as TensorInfo), offsetOf(backend, y), n, d, c);
    }
  });
}

function backwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = COPY_CONSTANT_KERNELS.backward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const { n, d, c } = sizesOf(kernelName, args.inputs);
  const dy = requireInput(kernelName, args.inputs, 'dy', [n, d]);
  const mix = requireInput(kernelName, args.inputs, 'mix', [n, 2 * c]);
  const { x, gates, mixWeight, vectors } = args.inputs as Record<string, TensorInfo>;
  const shapes = [
    [n, d], // dx
    [n, 1 + c], // dGates
    [d, 2 * c], // dMixWeight
    [c, d], // dVectors
  ];
  // scratch: dLogits [N, 2C]
  return withOutputs(backend, shapes, (heap, outputs, [dLogits]) => {
    const [dx, dGates, dMixWeight, dVectors] = outputs as [TensorInfo, TensorInfo, TensorInfo, TensorInfo];
    const [xOffset, dxOffset, dLogitsOffset] = [offsetOf(backend, x as TensorInfo), offsetOf(backend, dx), offsetOf(backend, dLogits as TensorInfo)];
    const mixWeightOffset = offsetOf(backend, mixWeight as TensorInfo);
    accel.copyConstantGrad(
      heap,
      offsetOf(backend, dy),
      xOffset,
      offsetOf(backend, gates as TensorInfo),
      offsetOf(backend, mix),
      offsetOf(backend, vectors as TensorInfo),
      dxOffset,
      offsetOf(backend, dGates),
      dLogitsOffset,
      offsetOf(backend, dVectors),
      n,
      d,
      c,
    );
    // dx [N, D] += dLogits [N, 2C] · mixWeightᵀ; dMixWeight [D, 2C] = xᵀ · dLogits (k = N: zeros when N = 0)
    runProducts(accel, heap, [
      ...(n > 0 ? [{ transposeA: false, transposeB: true, m: n, n: d, k: 2 * c, aOffset: dLogitsOffset, lda: 2 * c, bOffset: mixWeightOffset, ldb: 2 * c, beta: 1, cOffset: dxOffset, ldc: Math.max(d, 1) }] : []),
      { transposeA: true, transposeB: false, m: d, n: 2 * c, k: n, aOffset: xOffset, lda: Math.max(d, 1), bOffset: dLogitsOffset, ldb: 2 * c, cOffset: offsetOf(backend, dMixWeight), ldc: 2 * c },
    ]);
  }, [[n, 2 * c]]);
}

const KERNELS: ReadonlyArray<[string, tf.KernelFunc]> = [
  [COPY_CONSTANT_KERNELS.forward, forwardKernel as unknown as tf.KernelFunc],
  [COPY_CONSTANT_KERNELS.backward, backwardKernel as unknown as tf.KernelFunc],
];

/**
 * Registers the copy / constant kernels for `wasm` (once per process; a second copy of this package
 * finds them registered and leaves them).
 */
export function registerCopyConstantKernels(): void {
  registerWasmKernels(KERNELS);
}
