/**
 * Fused ops with their own gradients (`tf.customGrad`): one kernel forward and one backward instead
 * of the five to fifteen elementwise kernels (and their saved intermediates) the composite forms
 * cost under autodiff.
 *
 * | op | computes | composite form |
 * |---|---|---|
 * | {@link swiglu} | `silu(a)·b` for the halves `a, b` of `up = x·W_up` (LLaMA / MoE++ experts) | `split`, `sigmoid`, 2 × `mul` |
 * | {@link gelu} | `½·x·(1 + erf(x/√2))`, the exact GELU (Hendrycks & Gimpel 2016) | `div`, `erf`, `add`, 2 × `mul` |
 * | {@link rmsNorm} | `weight·x / sqrt(mean(x²) + eps)` (Zhang & Sennrich 2019) | `square`, `mean`, `add`, `rsqrt`, 2 × `mul` |
 * | {@link rotaryEmbedding} | `x·cos + rotate_half(x)·sin`, rotary positions (Su et al. 2021), LLaMA's convention | `split`, `neg`, 2 × `concat`, 2 × `mul`, `add` |
 *
 * The fused kernels run on the native addon (see `accel.ts`) on the `wasm` backend while native
 * acceleration is active. Otherwise (cpu, tfjs-node, wasm without OpenBLAS, `MOEPP_ACCEL=off`) the
 * ops are exactly their composite forms, with tfjs's own gradients. Both give the same values to
 * float32 rounding.
 */
import * as tf from '@tensorflow/tfjs';
import { activeAccel } from './accel.js';
import { checkNumber, ConfigError, ShapeError } from './errors.js';
import { FUSED_KERNELS, registerFusedKernels } from './kernels/native-fused.js';

registerFusedKernels();

/** Whether the fused kernels run now: acceleration active, on wasm, float32 inputs. */
function runsFused(...tensors: readonly tf.Tensor[]): boolean {
  return fusedOpsActive() && tensors.every((t) => t.dtype === 'float32');
}

/**
 * Whether the fused ops use their native kernels right now (native acceleration active and the `wasm`
 * backend selected): {@link swiglu}, {@link gelu}, {@link rmsNorm}, {@link rotaryEmbedding}, and
 * `groupedSwigluFfn`, `causalAttention`, `softmaxCrossEntropy` and `adamwUpdate` of this package.
 *
 * @returns true when the next float32 call (of non-empty tensors) runs fused
 */
export function fusedOpsActive(): boolean {
  return activeAccel() !== null && tf.getBackend() === 'wasm';
}

/**
 * The composite SwiGLU: `silu(a)·b` with `[a, b] = split(up, 2, -1)`.
 *
 * @param up - `[..., 2F]`
 * @returns `[..., F]`
 */
function swigluComposite(up: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const [gate, value] = tf.split(up, 2, -1) as [tf.Tensor, tf.Tensor]; // a, b: [..., F]
    return tf.mul(tf.mul(gate, tf.sigmoid(gate)), value);
  });
}

/**
 * The gradient of SwiGLU with respect to `up`, composite form (used when the backward pass runs
 * without acceleration).
 *
 * @param dy - `[..., F]`
 * @param up - `[..., 2F]`
 * @returns `[..., 2F]`: `[dy·b·s·(1 + a·(1 - s)), dy·a·s]` with `s = sigmoid(a)`
 */
function swigluGradientComposite(dy: tf.Tensor, up: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const [gate, value] = tf.split(up, 2, -1) as [tf.Tensor, tf.Tensor];
    const s = tf.sigmoid(gate);
    const dGate = tf.mul(tf.mul(tf.mul(dy, value), s), tf.add(1, tf.mul(gate, tf.sub(1, s))));
    const dValue = tf.mul(dy, tf.mul(gate, s));
    return tf.concat([dGate, dValue], -1);
  });
}

const swigluFused = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [up, save] = args as [tf.Tensor, tf.GradSaveFunc];
  const value = tf.engine().runKernel(FUSED_KERNELS.swiglu, { up } as unknown as tf.NamedTensorMap) as tf.Tensor; // [..., F]
  save([up]);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const savedUp = saved[0] as tf.Tensor;
      return runsFused(dy, savedUp)
        ? (tf.engine().runKernel(FUSED_KERNELS.swigluGrad, { dy, up: savedUp } as unknown as tf.NamedTensorMap) as tf.Tensor)
        : swigluGradientComposite(dy, savedUp);
    },
  };
});

/**
 * SwiGLU on a fused up-projection: `silu(a)·b` where `a, b` are the first and second halves of the
 * last axis of `up` (the official MoE++ `MLPMoE` layout: `up_proj: D -> 2F`, then `chunk(2, -1)`).
 * `silu(a) = a·sigmoid(a)`.
 *
 * @param up - `[..., 2F]` float32, e.g. `x·W_up`
 * @returns `[..., F]` float32
 * @throws {@link ShapeError} when `up` is a scalar or its last axis is odd
 * @see https://arxiv.org/abs/2002.05202 (Shazeer, GLU Variants Improve Transformer)
 */
export function swiglu(up: tf.Tensor): tf.Tensor {
  const width = up.shape[up.shape.length - 1];
  if (width === undefined || width % 2 !== 0) {
    throw new ShapeError(`swiglu: argument 'up' must have an even last axis [..., 2F], got [${up.shape.join(', ')}]`);
  }
  return runsFused(up) && up.size > 0 ? swigluFused(up) : swigluComposite(up);
}

/**
 * The composite GELU, as `@moepp/experts` writes it.
 *
 * @param x - any shape
 * @returns `½·x·(1 + erf(x/√2))`
 */
function geluComposite(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))));
}

/**
 * The gradient of GELU, composite form (used when the backward pass runs without acceleration).
 *
 * @param dy - the upstream gradient, shaped as `x`
 * @param x - the forward input
 * @returns `dy·(Φ(x) + x·φ(x))`
 */
function geluGradientComposite(dy: tf.Tensor, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))); // Φ(x)
    const pdf = tf.mul(1 / Math.sqrt(2 * Math.PI), tf.exp(tf.mul(-0.5, tf.square(x)))); // φ(x)
    return tf.mul(dy, tf.add(cdf, tf.mul(x, pdf)));
  });
}

const geluFused = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  const value = tf.engine().runKernel(FUSED_KERNELS.gelu, { x } as unknown as tf.NamedTensorMap) as tf.Tensor;
  save([x]);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const savedX = saved[0] as tf.Tensor;
      return runsFused(dy, savedX)
        ? (tf.engine().runKernel(FUSED_KERNELS.geluGrad, { dy, x: savedX } as unknown as tf.NamedTensorMap) as tf.Tensor)
        : geluGradientComposite(dy, savedX);
    },
  };
});

/**
 * GELU, exact (erf) form: `½·x·(1 + erf(x/√2))` (PyTorch's and Hugging Face's `gelu`).
 *
 * @param x - any shape, float32
 * @returns the same shape, float32
 * @see https://arxiv.org/abs/1606.08415 (Hendrycks & Gimpel, Gaussian Error Linear Units)
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  return runsFused(x) && x.size > 0 ? geluFused(x) : geluComposite(x);
}

/**
 * The composite RMSNorm.
 *
 * @param x - `[..., D]`
 * @param weight - `[D]`
 * @param eps - added to the mean square
 * @returns `[..., D]`
 */
function rmsNormComposite(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  return tf.tidy(() => {
    const meanSquare = tf.mean(tf.square(x), -1, true); // [..., 1]
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), weight);
  });
}

/**
 * The gradients of RMSNorm, composite form (used when the backward pass runs without acceleration):
 * with `s = (mean(x²) + eps)^-½` and `g = dy·weight`, `dx = s·g - x·s³·mean(g·x)` and
 * `dWeight = Σ_rows dy·x·s`.
 *
 * @param dy - `[..., D]`
 * @param x - `[..., D]`
 * @param weight - `[D]`
 * @param eps - as in the forward pass
 * @returns `[dx [..., D], dWeight [D]]`
 */
function rmsNormGradientComposite(dy: tf.Tensor, x: tf.Tensor, weight: tf.Tensor, eps: number): [tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    const s = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps)); // [..., 1]
    const g = tf.mul(dy, weight); // [..., D]
    const dx = tf.sub(tf.mul(s, g), tf.mul(tf.mul(x, tf.pow(s, 3)), tf.mean(tf.mul(g, x), -1, true)));
    const d = weight.size;
    const dWeight = tf.reshape(tf.sum(tf.reshape(tf.mul(tf.mul(dy, x), s), [-1, d]), 0), weight.shape);
    return [dx, dWeight];
  });
}

function rmsNormFused(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [input, scale, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [y, invRms] = tf.engine().runKernel(FUSED_KERNELS.rmsNorm, { x: input, weight: scale } as unknown as tf.NamedTensorMap, {
      eps,
    }) as tf.Tensor[];
    save([input, scale, invRms as tf.Tensor]);
    return {
      value: y as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedX, savedWeight, savedInvRms] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        if (!runsFused(dy, savedX, savedWeight)) return rmsNormGradientComposite(dy, savedX, savedWeight, eps);
        return tf.engine().runKernel(FUSED_KERNELS.rmsNormGrad, {
          dy,
          x: savedX,
          weight: savedWeight,
          invRms: savedInvRms,
        } as unknown as tf.NamedTensorMap) as tf.Tensor[];
      },
    };
  });
  return op(x, weight);
}

/**
 * RMSNorm as LLaMA and the official MoE++ code compute it: `weight · x / sqrt(mean(x²) + eps)` over
 * the last axis, in float32.
 *
 * @param x - `[..., D]` float32
 * @param weight - `[D]` float32 (a `tf.Variable` is fine: its gradient flows)
 * @param eps - added to the mean square; default 1e-6 (official `rms_norm_eps`)
 * @returns `[..., D]` float32
 * @throws {@link ShapeError} when `weight` is not `[D]` for `x`'s last axis D
 * @throws {@link ConfigError} when `eps` is negative or not finite
 * @see https://arxiv.org/abs/1910.07467 (Zhang & Sennrich, Root Mean Square Layer Normalization)
 */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps = 1e-6): tf.Tensor {
  checkNumber('rmsNorm', 'eps', eps, { min: 0 });
  const d = x.shape[x.shape.length - 1];
  if (d === undefined || weight.shape.length !== 1 || weight.shape[0] !== d) {
    throw new ShapeError(`rmsNorm: argument 'weight' must have shape [${d ?? 'D'}] for x [${x.shape.join(', ')}], got [${weight.shape.join(', ')}]`);
  }
  return runsFused(x, weight) && x.size > 0 ? rmsNormFused(x, weight, eps) : rmsNormComposite(x, weight, eps);
}

/**
 * The composite rotary embedding: `x·cos + rotate_half(x)·sin` with the tables repeated to the full
 * head width, `rotate_half(x) = [−x2, x1]` for the halves `x1, x2` of the last axis.
 *
 * @param x - `[..., T, hd]`
 * @param cos - `[T, hd/2]`
 * @param sin - `[T, hd/2]` (negated: the inverse rotation)
 * @returns `[..., T, hd]`
 */
function rotaryComposite(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const half = (x.shape[x.shape.length - 1] as number) / 2; // hd/2
    const cosFull = tf.concat([cos, cos], 1); // [T, hd]
    const sinFull = tf.concat([sin, sin], 1); // [T, hd]
    const [first, second] = tf.split(x, [half, half], -1) as [tf.Tensor, tf.Tensor]; // x1, x2: [..., T, hd/2]
    const rotated = tf.concat([tf.neg(second), first], -1); // rotate_half(x): [..., T, hd]
    return tf.add(tf.mul(x, cosFull), tf.mul(rotated, sinFull));
  });
}

function rotaryFused(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  // Only x is an input of the op: the tables are position constants and get no gradient. They are
  // saved for the backward pass all the same (the caller may dispose its tables before it runs).
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const value = tf.engine().runKernel(FUSED_KERNELS.rotary, { x: input, cos, sin } as unknown as tf.NamedTensorMap, {
      inverse: false,
    }) as tf.Tensor;
    save([cos, sin]);
    return {
      value,
      // A rotation's gradient is the inverse rotation: the same kernel by the negative angle.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedCos, savedSin] = saved as [tf.Tensor, tf.Tensor];
        return runsFused(dy, savedCos, savedSin)
          ? (tf.engine().runKernel(FUSED_KERNELS.rotary, { x: dy, cos: savedCos, sin: savedSin } as unknown as tf.NamedTensorMap, {
              inverse: true,
            }) as tf.Tensor)
          : tf.tidy(() => rotaryComposite(dy, savedCos, tf.neg(savedSin)));
      },
    };
  });
  return op(x);
}

/**
 * Rotary position embedding (RoPE), in the rotate-half convention of LLaMA, Hugging Face and the
 * official MoE++ code: with `x1, x2` the two halves of the last axis and the angle `θ[t, i]` of
 * position t and frequency i,
 *
 *     y1 = x1·cos θ − x2·sin θ,   y2 = x2·cos θ + x1·sin θ
 *
 * which is `x·cos + rotate_half(x)·sin` with the tables repeated to the full width (Hugging Face's
 * `emb = cat(freqs, freqs)`). The tables are constants: on the fused path no gradient flows to `cos`
 * and `sin` (the composite path lets tfjs differentiate them).
 *
 * @param x - `[..., T, hd]` float32, hd even (for attention `[B, H, T, hd]`)
 * @param cos - `[T, hd/2]` float32, `cos θ[t, i]` (the first half of a `[T, hd]` Hugging Face table)
 * @param sin - `[T, hd/2]` float32, `sin θ[t, i]`
 * @returns `[..., T, hd]` float32, `x` rotated
 * @throws {@link ShapeError} when `x` has rank < 2 or an odd last axis, or `cos` / `sin` are not `[T, hd/2]` for `x`
 * @throws {@link ConfigError} when a tensor is not float32
 * @see https://arxiv.org/abs/2104.09864 (Su et al., RoFormer: Enhanced Transformer with Rotary Position Embedding)
 */
export function rotaryEmbedding(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  const op = 'rotaryEmbedding';
  for (const [name, tensor] of [['x', x], ['cos', cos], ['sin', sin]] as const) {
    if (tensor.dtype !== 'float32') throw new ConfigError(`${op}: argument '${name}' must be float32, got ${tensor.dtype}`);
  }
  const rank = x.shape.length;
  const width = x.shape[rank - 1];
  const seqLen = x.shape[rank - 2];
  if (width === undefined || seqLen === undefined || width % 2 !== 0) {
    throw new ShapeError(`${op}: argument 'x' must be [..., T, hd] with an even hd, got [${x.shape.join(', ')}]`);
  }
  for (const [name, table] of [['cos', cos], ['sin', sin]] as const) {
    if (table.shape.length !== 2 || table.shape[0] !== seqLen || table.shape[1] !== width / 2) {
      throw new ShapeError(`${op}: argument '${name}' must have shape [${seqLen}, ${width / 2}] for x [${x.shape.join(', ')}], got [${table.shape.join(', ')}]`);
    }
  }
  return runsFused(x, cos, sin) && x.size > 0 ? rotaryFused(x, cos, sin) : rotaryComposite(x, cos, sin);
}
