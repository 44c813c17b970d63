/**
 * Optimiser ops: one AdamW update of one parameter as a single op, so that an optimiser step costs
 * one kernel per parameter instead of the twelve elementwise kernels of its composite form.
 *
 * | op | computes | composite form |
 * |---|---|---|
 * | {@link adamwUpdate} | new weight and moments of PyTorch's `torch.optim.AdamW` (optionally of a scaled gradient) | 8 × `mul`, 3 × `add` / `sub`, `square`, `sqrt`, `div` |
 * | {@link sumOfSquares} | `Σ x²` over many tensors (the squared global norm of gradient clipping) | per tensor `square` and `sum`, then `addN` |
 *
 * The fused kernel (`MoeppAdamW`) runs on the native addon (see `accel.ts`) on the `wasm` backend
 * while native acceleration is active. It rounds every operation to float32 in the composite form's
 * order, so both paths give the same values bit for bit. Otherwise (cpu, tfjs-node, wasm without
 * OpenBLAS, `MOEPP_ACCEL=off`) the op is its composite form.
 */
import * as tf from '@tensorflow/tfjs';
import { fusedOpsActive } from './fused.js';
import { checkNumber, ConfigError, ShapeError } from './errors.js';
import { FUSED_KERNELS, registerFusedKernels } from './kernels/native-fused.js';

registerFusedKernels();

/**
 * The scalars of one AdamW update at step `t` (1, 2, …) with learning rate `lr`, computed by the
 * caller in float64 (as PyTorch computes them in Python floats); each is rounded to float32 once.
 */
export interface AdamWUpdateScalars {
  /** β1, decay of the first moment, in [0, 1). */
  readonly beta1: number;
  /** β2, decay of the second moment, in [0, 1). */
  readonly beta2: number;
  /** ε, added to the bias-corrected root of the second moment; >= 0. */
  readonly epsilon: number;
  /** `lr / (1 − β1^t)`, the bias-corrected step size; >= 0. */
  readonly stepSize: number;
  /** `1 / √(1 − β2^t)`, the second moment's bias correction of the root; > 0 (1: no correction). */
  readonly inverseRootCorrection2: number;
  /** `1 − lr·λ` for decoupled weight decay λ, or 1 for a parameter that does not decay; finite. */
  readonly decayFactor: number;
  /**
   * Multiplies the gradient before the update: the factor of gradient clipping by global norm (see
   * {@link sumOfSquares}), so that clipping costs no pass of its own. Finite, >= 0. Default 1.
   */
  readonly gradientScale?: number;
}

/** The result of {@link adamwUpdate}: three new tensors, each the parameter's shape, float32. */
export interface AdamWUpdate {
  /** The updated weight. */
  readonly weight: tf.Tensor;
  /** The updated first moment (PyTorch `exp_avg`). */
  readonly firstMoment: tf.Tensor;
  /** The updated second moment (PyTorch `exp_avg_sq`). */
  readonly secondMoment: tf.Tensor;
}

/**
 * The composite form: the tfjs ops `@moepp/trainers`' AdamW ran before this op existed, in the same order.
 *
 * @param weight - any shape
 * @param rawGradient - the weight's shape, before `gradientScale`
 * @param firstMoment - the weight's shape
 * @param secondMoment - the weight's shape
 * @param scalars - validated
 * @returns the new weight and moments
 */
function adamwUpdateComposite(
  weight: tf.Tensor,
  rawGradient: tf.Tensor,
  firstMoment: tf.Tensor,
  secondMoment: tf.Tensor,
  scalars: AdamWUpdateScalars,
): AdamWUpdate {
  const { beta1, beta2, epsilon, stepSize, inverseRootCorrection2, decayFactor } = scalars;
  const gradientScale = scalars.gradientScale ?? 1;
  return tf.tidy(() => {
    // the clipping multiply as a separate op, as the trainer ran it before the scale moved in here
    const gradient = gradientScale === 1 ? rawGradient : tf.mul(rawGradient, gradientScale);
    const first = tf.add(tf.mul(firstMoment, beta1), tf.mul(gradient, 1 - beta1));
    const second = tf.add(tf.mul(secondMoment, beta2), tf.mul(tf.square(gradient), 1 - beta2));
    const denominator = tf.add(tf.mul(tf.sqrt(second), inverseRootCorrection2), epsilon);
    const decayed = decayFactor === 1 ? weight : tf.mul(weight, decayFactor);
    const updated = tf.sub(decayed, tf.mul(tf.div(first, denominator), stepSize));
    return { weight: updated, firstMoment: first, secondMoment: second };
  });
}

/**
 * One AdamW update of one parameter (Loshchilov & Hutter; PyTorch's `torch.optim.AdamW`), in float32:
 *
 *     g  = gradientScale · gradient                      (1 unless clipping)
 *     m' = β1·m + (1 − β1)·g
 *     v' = β2·v + (1 − β2)·g²
 *     w' = w·decayFactor − stepSize · m' / (√v' · inverseRootCorrection2 + ε)
 *
 * It returns new tensors and never writes to its inputs (tfjs tensors may share data); assign them to
 * the variables yourself. Not differentiable (an optimiser step is not differentiated).
 *
 * @example
 * ```ts
 * const t = 1; // the update's number, from 1
 * const update = adamwUpdate(variable, gradient, exp_avg, exp_avg_sq, {
 *   beta1: 0.9, beta2: 0.95, epsilon: 1e-8,
 *   stepSize: lr / (1 - 0.9 ** t),
 *   inverseRootCorrection2: 1 / Math.sqrt(1 - 0.95 ** t),
 *   decayFactor: 1 - lr * 0.1,
 * });
 * variable.assign(update.weight);
 * ```
 *
 * @param weight - any shape, float32 (a `tf.Variable` is fine)
 * @param gradient - the weight's shape, float32 (pass zeros for a parameter that got no gradient)
 * @param firstMoment - the weight's shape, float32
 * @param secondMoment - the weight's shape, float32, >= 0
 * @param scalars - see {@link AdamWUpdateScalars}
 * @returns the new weight and moments, each the weight's shape, float32
 * @throws {@link ShapeError} naming the argument when a tensor's shape differs from the weight's
 * @throws {@link ConfigError} naming the argument for a tensor that is not float32 or a scalar out of range
 * @see https://arxiv.org/abs/1711.05101 (Loshchilov & Hutter, Decoupled Weight Decay Regularization)
 */
export function adamwUpdate(
  weight: tf.Tensor,
  gradient: tf.Tensor,
  firstMoment: tf.Tensor,
  secondMoment: tf.Tensor,
  scalars: AdamWUpdateScalars,
): AdamWUpdate {
  const op = 'adamwUpdate';
  for (const [name, tensor] of [['weight', weight], ['gradient', gradient], ['firstMoment', firstMoment], ['secondMoment', secondMoment]] as const) {
    if (tensor.dtype !== 'float32') throw new ConfigError(`${op}: argument '${name}' must be float32, got ${tensor.dtype}`);
    if (tensor.shape.length !== weight.shape.length || tensor.shape.some((d, i) => d !== weight.shape[i])) {
      throw new ShapeError(`${op}: argument '${name}' must have the weight's shape [${weight.shape.join(', ')}], got [${tensor.shape.join(', ')}]`);
    }
  }
  const beta = (field: 'beta1' | 'beta2'): number => {
    const value = checkNumber(op, field, scalars[field], { min: 0 });
    if (value >= 1) throw new ConfigError(`${op}: '${field}' must be < 1, got ${value}`);
    return value;
  };
  const checked: AdamWUpdateScalars = {
    beta1: beta('beta1'),
    beta2: beta('beta2'),
    epsilon: checkNumber(op, 'epsilon', scalars.epsilon, { min: 0 }),
    stepSize: checkNumber(op, 'stepSize', scalars.stepSize, { min: 0 }),
    inverseRootCorrection2: checkNumber(op, 'inverseRootCorrection2', scalars.inverseRootCorrection2, { greaterThan: 0 }),
    decayFactor: checkNumber(op, 'decayFactor', scalars.decayFactor),
    gradientScale: checkNumber(op, 'gradientScale', scalars.gradientScale ?? 1, { min: 0 }),
  };
  if (!fusedOpsActive() || weight.size === 0) {
    return adamwUpdateComposite(weight, gradient, firstMoment, secondMoment, checked);
  }
  const [updated, first, second] = tf.engine().runKernel(
    FUSED_KERNELS.adamw,
    { weight, gradient, firstMoment, secondMoment } as unknown as tf.NamedTensorMap,
    { ...checked } as unknown as tf.NamedAttrMap,
  ) as [tf.Tensor, tf.Tensor, tf.Tensor];
  return { weight: updated, firstMoment: first, secondMoment: second };
}

/**
 * The sum of the squares of every element of several tensors: the squared global L2 norm that gradient
 * clipping needs (`√` of it is PyTorch's `clip_grad_norm_` total norm). One native pass over all the
 * tensors when fused ops are active (accumulated in float64, so it can differ from the composite form
 * in the last float32 bits); otherwise `addN(sum(square(x_i)))` in float32.
 *
 * @example
 * ```ts
 * const norm = Math.sqrt(sumOfSquares(gradients).dataSync()[0]!);
 * ```
 *
 * @param tensors - float32 tensors of any shapes (not disposed); may be empty
 * @returns a float32 scalar (0 for an empty list or empty tensors)
 * @throws {@link ConfigError} naming the position of a tensor that is not float32
 */
export function sumOfSquares(tensors: readonly tf.Tensor[]): tf.Scalar {
  tensors.forEach((tensor, i) => {
    if (tensor.dtype !== 'float32') throw new ConfigError(`sumOfSquares: tensor ${i} must be float32, got ${tensor.dtype}`);
  });
  if (tensors.length === 0) return tf.scalar(0);
  if (fusedOpsActive()) {
    const inputs = Object.fromEntries(tensors.map((tensor, i) => [`x${i}`, tensor]));
    return tf.engine().runKernel(FUSED_KERNELS.sumOfSquares, inputs as unknown as tf.NamedTensorMap) as tf.Scalar;
  }
  return tf.tidy(() => tf.addN(tensors.map((tensor) => tf.sum(tf.square(tensor)))) as tf.Scalar);
}
