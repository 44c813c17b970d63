/**
 * wasm kernels of `softmaxCrossEntropy` (`../cross-entropy.ts`), computed by the native addon in place
 * on the wasm heap: one pass over the logits forward, one backward. Registered for `wasm` only and
 * called only while native acceleration is active; otherwise the op runs as composite tfjs ops.
 *
 * | kernel | inputs | outputs |
 * |---|---|---|
 * | `MoeppSoftmaxCrossEntropy` | `logits` `[N, V]` float32, `targets` `[N]` int32 | `loss` `[N]`, `logSumExp` `[N]` (saved for the backward pass) |
 * | `MoeppSoftmaxCrossEntropyGrad` | `dy` `[N]`, `logits` `[N, V]`, `targets` `[N]` int32, `logSumExp` `[N]` | `dLogits` `[N, V]` = `dy·(softmax(logits) − onehot(targets))` |
 *
 * A target outside `[0, V)` makes the addon throw a `RangeError` naming the row and the value, before
 * anything is written; the kernel then disposes its outputs.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { floatOffset, requireAccel } from './heap.js';
import { registerWasmKernels, requireInput, withOutputs, type NativeKernelArgs } from './native-kernel.js';

type TensorInfo = tf.TensorInfo;

/** Kernel names of the fused softmax cross-entropy. */
export const CROSS_ENTROPY_KERNELS = {
  forward: 'MoeppSoftmaxCrossEntropy',
  backward: 'MoeppSoftmaxCrossEntropyGrad',
} as const;

/** Element offset of a tensor's data in the wasm heap, in 4-byte elements (float32 or int32). */
const offsetOf = (backend: BackendWasm, info: TensorInfo): number => floatOffset(backend, info, 'softmax cross-entropy kernel');

/**
 * N and V from `logits` `[N, V]`.
 *
 * @throws Error naming the kernel when `logits` is missing or not rank 2
 */
function sizesOf(kernelName: string, inputs: tf.NamedTensorInfoMap): { numTokens: number; vocabSize: number } {
  const logits = inputs.logits;
  if (logits === undefined || logits.shape.length !== 2) throw new Error(`${kernelName}: 'logits' must be [N, V]`);
  const [numTokens, vocabSize] = logits.shape as [number, number];
  return { numTokens, vocabSize };
}

function forwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = CROSS_ENTROPY_KERNELS.forward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const { numTokens, vocabSize } = sizesOf(kernelName, args.inputs);
  const logits = requireInput(kernelName, args.inputs, 'logits', [numTokens, vocabSize]);
  const targets = requireInput(kernelName, args.inputs, 'targets', [numTokens], 'int32');
  // loss [N], logSumExp [N]
  return withOutputs(backend, [[numTokens], [numTokens]], (heap, [loss, logSumExp]) => {
    if (numTokens === 0) return;
    accel.softmaxCrossEntropy(
      heap,
      offsetOf(backend, logits),
      offsetOf(backend, targets),
      offsetOf(backend, loss as TensorInfo),
      offsetOf(backend, logSumExp as TensorInfo),
      numTokens,
      vocabSize,
    );
  });
}

function backwardKernel(args: NativeKernelArgs): TensorInfo {
  const kernelName = CROSS_ENTROPY_KERNELS.backward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const { numTokens, vocabSize } = sizesOf(kernelName, args.inputs);
  const dy = requireInput(kernelName, args.inputs, 'dy', [numTokens]);
  const logits = requireInput(kernelName, args.inputs, 'logits', [numTokens, vocabSize]);
  const targets = requireInput(kernelName, args.inputs, 'targets', [numTokens], 'int32');
  const logSumExp = requireInput(kernelName, args.inputs, 'logSumExp', [numTokens]);
  // dLogits [N, V]
  const [dLogits] = withOutputs(backend, [[numTokens, vocabSize]], (heap, [result]) => {
    if (numTokens * vocabSize === 0) return;
    accel.softmaxCrossEntropyGrad(
      heap,
      offsetOf(backend, dy),
      offsetOf(backend, logits),
      offsetOf(backend, targets),
      offsetOf(backend, logSumExp),
      offsetOf(backend, result as TensorInfo),
      numTokens,
      vocabSize,
    );
  });
  return dLogits as TensorInfo;
}

const KERNELS: ReadonlyArray<[string, tf.KernelFunc]> = [
  [CROSS_ENTROPY_KERNELS.forward, forwardKernel as unknown as tf.KernelFunc],
  [CROSS_ENTROPY_KERNELS.backward, backwardKernel as unknown as tf.KernelFunc],
];

/**
 * Registers the softmax cross-entropy kernels for `wasm` (once per process; a second copy of this
 * package finds them registered and leaves them).
 */
export function registerCrossEntropyKernels(): void {
  registerWasmKernels(KERNELS);
}
