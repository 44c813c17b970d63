/**
 * What every native wasm kernel of the kit shares (`native-fused.ts`, `grouped-ffn.ts`, `attention.ts`,
 * `cross-entropy.ts`, `copy-constant.ts`): the kernel function's arguments, input checks, float32 outputs
 * (and scratch) that are freed again when the kernel fails, the heap buffer read after the last
 * allocation, and registration.
 * Heap offsets and the native products are in `heap.ts`.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/** The arguments tfjs passes a kernel function. */
export interface NativeKernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: {};
  attrs?: tf.NamedAttrMap;
}

/** `[2, 3]` for error messages. */
export const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/** The number of elements of a shape. */
export const sizeOf = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/**
 * One input of a kernel, checked.
 *
 * @param kernelName - names the kernel in the error
 * @param inputs - the kernel's inputs
 * @param name - the input's name
 * @param shape - the shape it must have
 * @param dtype - the dtype it must have; default float32
 * @returns the input
 * @throws Error naming the kernel and the input when it is missing or has another dtype or shape
 */
export function requireInput(
  kernelName: string,
  inputs: tf.NamedTensorInfoMap,
  name: string,
  shape: readonly number[],
  dtype: tf.DataType = 'float32',
): tf.TensorInfo {
  const info = inputs[name];
  if (info === undefined) throw new Error(`${kernelName}: missing input '${name}'`);
  if (info.dtype !== dtype) throw new Error(`${kernelName}: '${name}' must be ${dtype}, got ${info.dtype}`);
  if (info.shape.length !== shape.length || info.shape.some((size, axis) => size !== shape[axis])) {
    throw new Error(`${kernelName}: '${name}' must have shape ${shapeText(shape)}, got ${shapeText(info.shape)}`);
  }
  return info;
}

/**
 * Checks that an input is float32.
 *
 * @param kernelName - names the kernel in the error
 * @param name - the input's name
 * @param info - the input
 * @throws Error naming the kernel and the input otherwise
 */
export function requireFloat32(kernelName: string, name: string, info: tf.TensorInfo): void {
  if (info.dtype !== 'float32') throw new Error(`${kernelName}: '${name}' must be float32, got ${info.dtype}`);
}

/**
 * Allocates float32 tensors in the wasm heap; when one allocation fails, frees those already made.
 *
 * @param backend - the wasm backend
 * @param shapes - one shape per tensor
 * @returns the new tensors (the caller frees them if it fails later)
 */
function allocateOutputs(backend: BackendWasm, shapes: ReadonlyArray<readonly number[]>): tf.TensorInfo[] {
  const made: tf.TensorInfo[] = [];
  try {
    for (const shape of shapes) made.push(backend.makeOutput([...shape], 'float32'));
  } catch (error) {
    for (const info of made) backend.disposeData(info.dataId);
    throw error;
  }
  return made;
}

/**
 * The whole wasm heap. Read it after the last allocation: growing the heap replaces its buffer.
 *
 * @param backend - the wasm backend
 * @param any - any tensor in the heap
 * @returns the heap's buffer
 */
function currentHeap(backend: BackendWasm, any: tf.TensorInfo): ArrayBuffer {
  return backend.typedArrayFromHeap(any).buffer as ArrayBuffer;
}

/**
 * Allocates float32 outputs (and scratch tensors), then runs `fill` with the heap read after the last
 * allocation; on any error the outputs are freed and the error rethrown. The scratch tensors are freed
 * either way.
 *
 * @param backend - the wasm backend
 * @param shapes - one shape per output (at least one)
 * @param fill - writes the outputs, using the scratch tensors as it likes
 * @param scratchShapes - one shape per scratch tensor; default none
 * @returns the outputs
 */
export function withOutputs(
  backend: BackendWasm,
  shapes: ReadonlyArray<readonly number[]>,
  fill: (heap: ArrayBuffer, outputs: tf.TensorInfo[], scratch: tf.TensorInfo[]) => void,
  scratchShapes: ReadonlyArray<readonly number[]> = [],
): tf.TensorInfo[] {
  const outputs = allocateOutputs(backend, shapes);
  let scratch: tf.TensorInfo[] = [];
  try {
    scratch = allocateOutputs(backend, scratchShapes);
    fill(currentHeap(backend, outputs[0] as tf.TensorInfo), outputs, scratch);
  } catch (error) {
    for (const output of outputs) backend.disposeData(output.dataId);
    throw error;
  } finally {
    for (const info of scratch) backend.disposeData(info.dataId);
  }
  return outputs;
}

/**
 * Registers kernels for `wasm`, each once per process (a second copy of this package finds them
 * registered and leaves them).
 *
 * @param kernels - kernel name and function pairs
 */
export function registerWasmKernels(kernels: ReadonlyArray<readonly [string, tf.KernelFunc]>): void {
  for (const [kernelName, kernelFunc] of kernels) {
    if (tf.getKernel(kernelName, 'wasm') === undefined) tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc });
  }
}
