/**
 * wasm kernels of the kit's fused ops (`../fused.ts`, `../optim.ts`), computed by the native addon in place on the
 * wasm heap. They are registered for the `wasm` backend only and called only while native
 * acceleration is active; without it the ops use composite tfjs ops instead.
 *
 * | kernel | inputs | outputs |
 * |---|---|---|
 * | `MoeppSwiGLU` | `up` `[..., 2F]` | `[..., F]` = `silu(a)·b` with `a, b` the halves of `up` |
 * | `MoeppSwiGLUGrad` | `dy` `[..., F]`, `up` `[..., 2F]` | `dUp` `[..., 2F]` |
 * | `MoeppGelu` | `x` | `½·x·(1 + erf(x/√2))`, same shape |
 * | `MoeppGeluGrad` | `dy`, `x` (same shape) | `dx` |
 * | `MoeppRmsNorm` | `x` `[..., D]`, `weight` `[D]`; attr `eps` | `y` `[..., D]`, `invRms` `[rows]` |
 * | `MoeppRmsNormGrad` | `dy`, `x` `[..., D]`, `weight` `[D]`, `invRms` `[rows]` | `dx` `[..., D]`, `dWeight` `[D]` |
 * | `MoeppRotary` | `x` `[..., T, hd]`, `cos`, `sin` `[T, hd/2]`; attr `inverse` | `x` rotated (by −angle when `inverse`), same shape |
 * | `MoeppAdamW` | `weight`, `gradient`, `firstMoment`, `secondMoment` (same shape); attrs `beta1`, `beta2`, `epsilon`, `stepSize`, `inverseRootCorrection2`, `decayFactor`, `gradientScale` | new `weight`, `firstMoment`, `secondMoment` |
 * | `MoeppSumOfSquares` | `x0`, `x1`, … (any shapes) | `[]` `Σ x²` over all of them (accumulated in float64) |
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { floatOffset, requireAccel } from './heap.js';
import { registerWasmKernels, requireFloat32, sizeOf, withOutputs, type NativeKernelArgs } from './native-kernel.js';

/** Element offset of a float32 tensor in the wasm heap (see `floatOffset`). */
const offsetOf = (backend: BackendWasm, info: TensorInfo): number => floatOffset(backend, info, 'fused kernel');

type TensorInfo = tf.TensorInfo;

/** Kernel names of the fused ops. */
export const FUSED_KERNELS = {
  swiglu: 'MoeppSwiGLU',
  swigluGrad: 'MoeppSwiGLUGrad',
  gelu: 'MoeppGelu',
  geluGrad: 'MoeppGeluGrad',
  rmsNorm: 'MoeppRmsNorm',
  rmsNormGrad: 'MoeppRmsNormGrad',
  adamw: 'MoeppAdamW',
  sumOfSquares: 'MoeppSumOfSquares',
  rotary: 'MoeppRotary',
} as const;

function swigluKernel(args: NativeKernelArgs): TensorInfo {
  const accel = requireAccel(FUSED_KERNELS.swiglu);
  const backend = args.backend as BackendWasm;
  const { up } = args.inputs as { up: TensorInfo };
  requireFloat32(FUSED_KERNELS.swiglu, 'up', up);
  const width = up.shape[up.shape.length - 1] as number; // 2F
  const f = width / 2;
  const rows = f === 0 ? 0 : sizeOf(up.shape) / width;
  const [out] = withOutputs(backend, [[...up.shape.slice(0, -1), f]], (heap, [result]) => {
    if (rows > 0 && f > 0) accel.swiglu(heap, offsetOf(backend, up), offsetOf(backend, result as TensorInfo), rows, f);
  });
  return out as TensorInfo;
}

function swigluGradKernel(args: NativeKernelArgs): TensorInfo {
  const accel = requireAccel(FUSED_KERNELS.swigluGrad);
  const backend = args.backend as BackendWasm;
  const { dy, up } = args.inputs as { dy: TensorInfo; up: TensorInfo };
  requireFloat32(FUSED_KERNELS.swigluGrad, 'dy', dy);
  requireFloat32(FUSED_KERNELS.swigluGrad, 'up', up);
  const width = up.shape[up.shape.length - 1] as number;
  const f = width / 2;
  const rows = f === 0 ? 0 : sizeOf(up.shape) / width;
  if (sizeOf(dy.shape) !== rows * f) throw new Error(`${FUSED_KERNELS.swigluGrad}: 'dy' [${dy.shape.join(', ')}] does not match 'up' [${up.shape.join(', ')}]`);
  const [dUp] = withOutputs(backend, [up.shape], (heap, [result]) => {
    if (rows > 0 && f > 0) accel.swigluGrad(heap, offsetOf(backend, dy), offsetOf(backend, up), offsetOf(backend, result as TensorInfo), rows, f);
  });
  return dUp as TensorInfo;
}

function geluKernel(args: NativeKernelArgs): TensorInfo {
  const accel = requireAccel(FUSED_KERNELS.gelu);
  const backend = args.backend as BackendWasm;
  const { x } = args.inputs as { x: TensorInfo };
  requireFloat32(FUSED_KERNELS.gelu, 'x', x);
  const n = sizeOf(x.shape);
  const [y] = withOutputs(backend, [x.shape], (heap, [result]) => {
    if (n > 0) accel.gelu(heap, offsetOf(backend, x), offsetOf(backend, result as TensorInfo), n);
  });
  return y as TensorInfo;
}

function geluGradKernel(args: NativeKernelArgs): TensorInfo {
  const accel = requireAccel(FUSED_KERNELS.geluGrad);
  const backend = args.backend as BackendWasm;
  const { dy, x } = args.inputs as { dy: TensorInfo; x: TensorInfo };
  requireFloat32(FUSED_KERNELS.geluGrad, 'dy', dy);
  requireFloat32(FUSED_KERNELS.geluGrad, 'x', x);
  const n = sizeOf(x.shape);
  if (sizeOf(dy.shape) !== n) throw new Error(`${FUSED_KERNELS.geluGrad}: 'dy' [${dy.shape.join(', ')}] does not match 'x' [${x.shape.join(', ')}]`);
  const [dx] = withOutputs(backend, [x.shape], (heap, [result]) => {
    if (n > 0) accel.geluGrad(heap, offsetOf(backend, dy), offsetOf(backend, x), offsetOf(backend, result as TensorInfo), n);
  });
  return dx as TensorInfo;
}

function rmsNormKernel(args: NativeKernelArgs): TensorInfo[] {
  const accel = requireAccel(FUSED_KERNELS.rmsNorm);
  const backend = args.backend as BackendWasm;
  const { x, weight } = args.inputs as { x: TensorInfo; weight: TensorInfo };
  requireFloat32(FUSED_KERNELS.rmsNorm, 'x', x);
  requireFloat32(FUSED_KERNELS.rmsNorm, 'weight', weight);
  const eps = args.attrs?.eps as number;
  const d = x.shape[x.shape.length - 1] as number;
  const rows = d === 0 ? 0 : sizeOf(x.shape) / d;
  if (sizeOf(weight.shape) !== d) throw new Error(`${FUSED_KERNELS.rmsNorm}: 'weight' [${weight.shape.join(', ')}] must have ${d} elements`);
  return withOutputs(backend, [x.shape, [rows]], (heap, [y, invRms]) => {
    if (rows > 0 && d > 0) {
      accel.rmsNorm(heap, offsetOf(backend, x), offsetOf(backend, weight), offsetOf(backend, y as TensorInfo), offsetOf(backend, invRms as TensorInfo), rows, d, eps);
    }
  });
}

function rmsNormGradKernel(args: NativeKernelArgs): TensorInfo[] {
  const accel = requireAccel(FUSED_KERNELS.rmsNormGrad);
  const backend = args.backend as BackendWasm;
  const { dy, x, weight, invRms } = args.inputs as { dy: TensorInfo; x: TensorInfo; weight: TensorInfo; invRms: TensorInfo };
  for (const [name, info] of Object.entries({ dy, x, weight, invRms })) requireFloat32(FUSED_KERNELS.rmsNormGrad, name, info);
  const d = x.shape[x.shape.length - 1] as number;
  const rows = d === 0 ? 0 : sizeOf(x.shape) / d;
  if (sizeOf(dy.shape) !== rows * d || sizeOf(weight.shape) !== d || sizeOf(invRms.shape) !== rows) {
    throw new Error(`${FUSED_KERNELS.rmsNormGrad}: inputs do not agree (x [${x.shape.join(', ')}], dy [${dy.shape.join(', ')}], weight [${weight.shape.join(', ')}])`);
  }
  return withOutputs(backend, [x.shape, weight.shape], (heap, [dx, dWeight]) => {
    if (rows === 0 || d === 0) {
      (backend.typedArrayFromHeap(dWeight as TensorInfo) as Float32Array).fill(0);
      return;
    }
    accel.rmsNormGrad(
      heap,
      offsetOf(backend, dy),
      offsetOf(backend, x),
      offsetOf(backend, weight),
      offsetOf(backend, invRms),
      offsetOf(backend, dx as TensorInfo),
      offsetOf(backend, dWeight as TensorInfo),
      rows,
      d,
    );
  });
}

function adamwKernel(args: NativeKernelArgs): TensorInfo[] {
  const accel = requireAccel(FUSED_KERNELS.adamw);
  const backend = args.backend as BackendWasm;
  const inputs = args.inputs as { weight: TensorInfo; gradient: TensorInfo; firstMoment: TensorInfo; secondMoment: TensorInfo };
  const { weight, gradient, firstMoment, secondMoment } = inputs;
  for (const [name, info] of Object.entries(inputs)) requireFloat32(FUSED_KERNELS.adamw, name, info);
  const n = sizeOf(weight.shape);
  for (const [name, info] of Object.entries(inputs)) {
    if (sizeOf(info.shape) !== n) throw new Error(`${FUSED_KERNELS.adamw}: '${name}' [${info.shape.join(', ')}] does not match 'weight' [${weight.shape.join(', ')}]`);
  }
  const attrs = args.attrs as {
    beta1: number;
    beta2: number;
    epsilon: number;
    stepSize: number;
    inverseRootCorrection2: number;
    decayFactor: number;
    gradientScale: number;
  };
  return withOutputs(backend, [weight.shape, weight.shape, weight.shape], (heap, [weightOut, firstMomentOut, secondMomentOut]) => {
    if (n === 0) return;
    accel.adamw(
      heap,
      offsetOf(backend, weight),
      offsetOf(backend, gradient),
      offsetOf(backend, firstMoment),
      offsetOf(backend, secondMoment),
      offsetOf(backend, weightOut as TensorInfo),
      offsetOf(backend, firstMomentOut as TensorInfo),
      offsetOf(backend, secondMomentOut as TensorInfo),
      n,
      attrs.beta1,
      attrs.beta2,
      attrs.epsilon,
      attrs.stepSize,
      attrs.inverseRootCorrection2,
      attrs.decayFactor,
      attrs.gradientScale,
    );
  });
}

function sumOfSquaresKernel(args: NativeKernelArgs): TensorInfo {
  const accel = requireAccel(FUSED_KERNELS.sumOfSquares);
  const backend = args.backend as BackendWasm;
  const inputs = Object.values(args.inputs) as TensorInfo[];
  for (const [name, info] of Object.entries(args.inputs)) requireFloat32(FUSED_KERNELS.sumOfSquares, name, info as TensorInfo);
  const spans = new Float64Array(inputs.length * 2);
  inputs.forEach((info, i) => {
    const size = sizeOf(info.shape);
    spans[2 * i] = size === 0 ? 0 : offsetOf(backend, info);
    spans[2 * i + 1] = size;
  });
  const out = backend.makeOutput([], 'float32');
  // The heap is read after the last allocation (makeOutput may grow it).
  const view = backend.typedArrayFromHeap(out) as Float32Array;
  view[0] = accel.sumOfSquares(view.buffer as ArrayBuffer, spans);
  return out;
}

function rotaryKernel(args: NativeKernelArgs): TensorInfo {
  const accel = requireAccel(FUSED_KERNELS.rotary);
  const backend = args.backend as BackendWasm;
  const { x, cos, sin } = args.inputs as { x: TensorInfo; cos: TensorInfo; sin: TensorInfo };
  for (const [name, info] of Object.entries({ x, cos, sin })) requireFloat32(FUSED_KERNELS.rotary, name, info);
  const inverse = args.attrs?.inverse === true;
  const width = x.shape[x.shape.length - 1] as number; // hd
  const seqLen = x.shape[x.shape.length - 2] as number; // T
  const half = width / 2;
  if (x.shape.length < 2 || width % 2 !== 0 || sizeOf(cos.shape) !== seqLen * half || sizeOf(sin.shape) !== seqLen * half) {
    throw new Error(`${FUSED_KERNELS.rotary}: inputs do not agree (x [${x.shape.join(', ')}], cos [${cos.shape.join(', ')}], sin [${sin.shape.join(', ')}])`);
  }
  const batch = seqLen * width === 0 ? 0 : sizeOf(x.shape) / (seqLen * width);
  const [y] = withOutputs(backend, [x.shape], (heap, [result]) => {
    if (batch > 0) {
      accel.rotary(heap, offsetOf(backend, x), offsetOf(backend, cos), offsetOf(backend, sin), offsetOf(backend, result as TensorInfo), batch, seqLen, half, inverse);
    }
  });
  return y as TensorInfo;
}

const KERNELS: ReadonlyArray<[string, tf.KernelFunc]> = [
  [FUSED_KERNELS.swiglu, swigluKernel as tf.KernelFunc],
  [FUSED_KERNELS.swigluGrad, swigluGradKernel as tf.KernelFunc],
  [FUSED_KERNELS.gelu, geluKernel as tf.KernelFunc],
  [FUSED_KERNELS.geluGrad, geluGradKernel as tf.KernelFunc],
  [FUSED_KERNELS.rmsNorm, rmsNormKernel as unknown as tf.KernelFunc],
  [FUSED_KERNELS.rmsNormGrad, rmsNormGradKernel as unknown as tf.KernelFunc],
  [FUSED_KERNELS.adamw, adamwKernel as unknown as tf.KernelFunc],
  [FUSED_KERNELS.sumOfSquares, sumOfSquaresKernel as tf.KernelFunc],
  [FUSED_KERNELS.rotary, rotaryKernel as tf.KernelFunc],
];

/**
 * Registers the fused kernels for `wasm` (once per process; a second copy of this package finds
 * them registered and leaves them).
 */
export function registerFusedKernels(): void {
  registerWasmKernels(KERNELS);
}
