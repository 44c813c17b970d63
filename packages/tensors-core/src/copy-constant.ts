/**
 * The copy and constant experts of an MoE++ layer (paper Eq. 4–5) for every token at once, as one op
 * with its own gradient:
 *
 *     [a1_k, a2_k] = softmax(x·W_c[:, 2k..2k+2])            per constant expert k (its mixing weights)
 *     y = x ⊙ (g_copy + Σ_k g_k·a1_k) + Σ_k (g_k·a2_k)·v_k
 *
 * with `g_copy` a token's summed gate on the copy experts and `g_k` its gate on constant expert k (0 for
 * an expert it did not pick). The MoE layer computes these experts per token like this, with no rows
 * gathered or scattered; as tfjs ops that is about 18 kernels forward and 35 backward per layer.
 *
 * | op | computes | composite form |
 * |---|---|---|
 * | {@link copyConstantMix} | `y` above, gradients for `x`, the gates, `W_c` and the vectors | `matMul`, `reshape`, `softmax`, `split`, 2 × `slice`, `sum`, 2 × `mul`, `add`, `matMul`, `add` |
 *
 * With native acceleration on the `wasm` backend (see {@link fusedOpsActive}) it is one kernel forward
 * (`MoeppCopyConstant`: the product `x·W_c` on OpenBLAS, the rest per token in the addon) and one
 * backward (`MoeppCopyConstantGrad`), see `kernels/copy-constant.ts`; otherwise the composite tfjs ops.
 * Both give the same values to float32 rounding.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive } from './fused.js';
import { COPY_CONSTANT_KERNELS, registerCopyConstantKernels } from './kernels/copy-constant.js';

registerCopyConstantKernels();

const OP = 'copyConstantMix';

/**
 * The composite form (the tfjs ops `MoeLayer` ran before this op existed).
 *
 * @param x - `[N, D]`
 * @param gates - `[N, 1 + C]`
 * @param mixWeight - `[D, 2C]`
 * @param vectors - `[C, D]`
 * @returns `[N, D]`
 */
function copyConstantComposite(x: tf.Tensor2D, gates: tf.Tensor2D, mixWeight: tf.Tensor2D, vectors: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const [numTokens] = x.shape;
    const numConstants = vectors.shape[0];
    const mix = tf.softmax(tf.matMul(x, mixWeight).reshape([numTokens, numConstants, 2])); // [N, C, 2]
    const [keepInput, takeConstant] = tf.split(mix, 2, 2).map((a) => a.reshape([numTokens, numConstants])) as [tf.Tensor2D, tf.Tensor2D]; // [N, C]
    const copyGates = tf.slice(gates, [0, 0], [numTokens, 1]); // [N, 1]
    const constantGates = tf.slice(gates, [0, 1], [numTokens, numConstants]); // [N, C]
    const inputWeight = tf.add(copyGates, tf.sum(tf.mul(constantGates, keepInput), 1, true)); // [N, 1]
    return tf.add(tf.mul(x, inputWeight), tf.matMul(tf.mul(constantGates, takeConstant), vectors)) as tf.Tensor2D; // [N, D]
  });
}

function copyConstantFused(x: tf.Tensor2D, gates: tf.Tensor2D, mixWeight: tf.Tensor2D, vectors: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [xIn, gatesIn, mixWeightIn, vectorsIn, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    const [y, mix] = tf.engine().runKernel(COPY_CONSTANT_KERNELS.forward, {
      x: xIn,
      gates: gatesIn,
      mixWeight: mixWeightIn,
      vectors: vectorsIn,
    } as unknown as tf.NamedTensorMap) as [tf.Tensor2D, tf.Tensor2D]; // [N, D], [N, 2C]
    save([xIn, gatesIn, mixWeightIn, vectorsIn, mix]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sg, sw, sv] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
        if (!fusedOpsActive() || dy.dtype !== 'float32') {
          // acceleration suspended since the forward pass: the composite form's gradients
          return tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
            copyConstantComposite(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor2D, d as tf.Tensor2D),
          )([sx, sg, sw, sv], dy);
        }
        return tf.engine().runKernel(COPY_CONSTANT_KERNELS.backward, {
          dy,
          x: sx,
          gates: sg,
          mixWeight: sw,
          vectors: sv,
          mix: saved[4] as tf.Tensor,
        } as unknown as tf.NamedTensorMap) as tf.Tensor[]; // dx, dGates, dMixWeight, dVectors
      },
    };
  });
  return op(x, gates, mixWeight, vectors) as tf.Tensor2D;
}

/**
 * The copy and constant experts' share of an MoE++ layer's output for every token (see the module
 * notes): `y = x ⊙ (g_copy + Σ_k g_k·a1_k) + Σ_k (g_k·a2_k)·v_k` with `[a1_k, a2_k] = softmax(x·W_k)`.
 * Differentiable with respect to all four inputs. One native kernel each way when accelerated.
 *
 * @param x - `[N, D]` float32, the expert input
 * @param gates - `[N, 1 + C]` float32: column 0 a token's summed gate on the copy experts, column `1 + k`
 *   its gate on constant expert k (0 where it did not pick it)
 * @param mixWeight - `[D, 2C]` float32, the constant experts' mixing weights side by side (`W_k` in
 *   columns `2k, 2k + 1`)
 * @param vectors - `[C, D]` float32, the constant vectors `v_k`
 * @returns `[N, D]` float32
 * @throws {@link ConfigError} naming the argument for a tensor that is not float32
 * @throws {@link ShapeError} naming the argument when the shapes disagree or C < 1
 */
export function copyConstantMix(x: tf.Tensor2D, gates: tf.Tensor2D, mixWeight: tf.Tensor2D, vectors: tf.Tensor2D): tf.Tensor2D {
  for (const [name, tensor] of [['x', x], ['gates', gates], ['mixWeight', mixWeight], ['vectors', vectors]] as const) {
    if (tensor.dtype !== 'float32') throw new ConfigError(`${OP}: argument '${name}' must be float32, got ${tensor.dtype}`);
    if (tensor.shape.length !== 2) throw new ShapeError(`${OP}: argument '${name}' must be rank 2, got [${tensor.shape.join(', ')}]`);
  }
  const [numTokens, width] = x.shape;
  const numConstants = vectors.shape[0];
  const expect = (name: string, tensor: tf.Tensor, shape: readonly number[]) => {
    if (tensor.shape.some((size, axis) => size !== shape[axis])) {
      throw new ShapeError(`${OP}: argument '${name}' must have shape [${shape.join(', ')}] for x [${x.shape.join(', ')}] and ${numConstants} constant experts, got [${tensor.shape.join(', ')}]`);
    }
  };
  if (numConstants < 1) throw new ShapeError(`${OP}: argument 'vectors' must be [C, D] with C >= 1, got [${vectors.shape.join(', ')}]`);
  expect('vectors', vectors, [numConstants, width]);
  expect('gates', gates, [numTokens, 1 + numConstants]);
  expect('mixWeight', mixWeight, [width, 2 * numConstants]);
  return fusedOpsActive() && x.size > 0 ? copyConstantFused(x, gates, mixWeight, vectors) : copyConstantComposite(x, gates, mixWeight, vectors);
}
