/**
 * Softmax cross-entropy as one op with its own gradient: the per-token loss of a language model from
 * its logits and target ids.
 *
 * | op | computes | composite form |
 * |---|---|---|
 * | {@link softmaxCrossEntropy} | `logsumexp(logits_n) − logits_n[target_n]` per row, gradient `dy_n·(softmax(logits_n) − onehot(target_n))` | `logSumExp` (`max`, `sub`, `exp`, `sum`, `log`, `add`), `range`, `mul`, `add`, `gather`, `sub`; backward their gradients, with a scatter into `[N, V]` |
 *
 * With native acceleration on the `wasm` backend (see {@link fusedOpsActive}) it is one kernel forward
 * (`MoeppSoftmaxCrossEntropy`, which also keeps each row's `logsumexp` for the backward pass) and one
 * backward (`MoeppSoftmaxCrossEntropyGrad`), see `kernels/cross-entropy.ts`. Both subtract the row's
 * largest logit before exponentiating, so large logits do not overflow; their `exp` is a polynomial
 * with a relative error of about 2e-7, so the loss agrees with the composite form to a few float32
 * ulps. Otherwise (cpu, tfjs-node, wasm without OpenBLAS, `MOEPP_ACCEL=off`) the op is its composite
 * form, with tfjs's own gradients.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive } from './fused.js';
import { CROSS_ENTROPY_KERNELS, registerCrossEntropyKernels } from './kernels/cross-entropy.js';

registerCrossEntropyKernels();

const OP = 'softmaxCrossEntropy';

/**
 * The composite form: the tfjs ops `@moepp/trainers`' `tokenCrossEntropy` ran before this op existed.
 *
 * @param logits - `[N, V]` float32
 * @param targets - `[N]` int32
 * @returns `[N]` float32, `logsumexp(logits_n) − logits_n[target_n]`
 */
function softmaxCrossEntropyComposite(logits: tf.Tensor, targets: tf.Tensor): tf.Tensor1D {
  const [numTokens, vocabSize] = logits.shape as [number, number];
  return tf.tidy(() => {
    const logNormalizer = tf.logSumExp(logits, 1); // [N]
    // The target logit of row n sits at n·V + target_n in the flattened logits.
    const rowStarts = tf.mul(tf.range(0, numTokens, 1, 'int32'), tf.scalar(vocabSize, 'int32')); // [N] int32
    const targetLogits = tf.gather(tf.reshape(logits, [numTokens * vocabSize]), tf.add(rowStarts, targets)); // [N]
    return tf.sub(logNormalizer, targetLogits) as tf.Tensor1D;
  });
}

/**
 * The gradient of the fused forward pass in composite form, for a backward pass that runs without
 * acceleration (say, acceleration suspended between forward and backward).
 *
 * @param dy - `[N]` float32, the gradient with respect to the loss
 * @param logits - `[N, V]` float32
 * @param targets - `[N]` int32
 * @param logSumExp - `[N]` float32, saved by the forward kernel
 * @returns `[N, V]` float32, `dy_n·(exp(logits_n − logSumExp_n) − onehot(target_n))`
 */
function softmaxCrossEntropyGradientComposite(dy: tf.Tensor, logits: tf.Tensor, targets: tf.Tensor, logSumExp: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const vocabSize = logits.shape[1] as number;
    const probs = tf.exp(tf.sub(logits, tf.expandDims(logSumExp, 1))); // softmax: [N, V]
    const oneHot = tf.oneHot(targets, vocabSize, 1, 0, 'float32'); // [N, V]
    return tf.mul(tf.expandDims(dy, 1), tf.sub(probs, oneHot));
  });
}

function softmaxCrossEntropyFused(logits: tf.Tensor, targets: tf.Tensor): tf.Tensor1D {
  // Only the logits are an input of the op: the targets are ids and get no gradient. They are saved
  // for the backward pass all the same (the caller may dispose them before it runs).
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const [loss, logSumExp] = tf.engine().runKernel(CROSS_ENTROPY_KERNELS.forward, {
      logits: input,
      targets,
    } as unknown as tf.NamedTensorMap) as [tf.Tensor, tf.Tensor]; // [N], [N]
    save([input, targets, logSumExp]);
    return {
      value: loss,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedLogits, savedTargets, savedLogSumExp] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        if (!fusedOpsActive() || dy.dtype !== 'float32') {
          return softmaxCrossEntropyGradientComposite(dy, savedLogits, savedTargets, savedLogSumExp);
        }
        return tf.engine().runKernel(CROSS_ENTROPY_KERNELS.backward, {
          dy,
          logits: savedLogits,
          targets: savedTargets,
          logSumExp: savedLogSumExp,
        } as unknown as tf.NamedTensorMap) as tf.Tensor;
      },
    };
  });
  return op(logits) as tf.Tensor1D;
}

/**
 * Softmax cross-entropy per row, in float32: the negative log-probability of each target under the
 * softmax of its row of logits,
 *
 *     loss_n = logsumexp(logits_n) − logits_n[target_n]
 *
 * differentiable with respect to the logits: `d logits_n = dy_n·(softmax(logits_n) − onehot(target_n))`
 * (no gradient flows to the integer targets). The log-normaliser subtracts the row's largest logit
 * first, so logits of any size are safe. With native acceleration on wasm it runs one kernel each way
 * (see the module notes); otherwise the composite tfjs ops.
 *
 * @param logits - `[N, V]` float32, V >= 1 (a `tf.Variable` is fine: its gradient flows)
 * @param targets - `[N]` int32 target ids in `[0, V)`. With native acceleration an id outside that range
 *   throws a `RangeError` naming its row and value (nothing is computed); the composite form does not
 *   check them on the device: validate ids on the host when that matters.
 * @returns `[N]` float32, nats
 * @throws {@link ConfigError} when `logits` is not float32 or `targets` is not int32
 * @throws {@link ShapeError} when `logits` is not `[N, V]` with V >= 1 or `targets` is not `[N]`
 * @throws RangeError (native acceleration only) when a target id lies outside `[0, V)`
 */
export function softmaxCrossEntropy(logits: tf.Tensor, targets: tf.Tensor): tf.Tensor1D {
  if (logits.dtype !== 'float32') throw new ConfigError(`${OP}: argument 'logits' must be float32, got ${logits.dtype}`);
  if (targets.dtype !== 'int32') throw new ConfigError(`${OP}: argument 'targets' must be int32, got ${targets.dtype}`);
  if (logits.shape.length !== 2 || (logits.shape[1] as number) < 1) {
    throw new ShapeError(`${OP}: argument 'logits' must be [N, V] with V >= 1, got [${logits.shape.join(', ')}]`);
  }
  const numTokens = logits.shape[0] as number;
  if (targets.shape.length !== 1 || targets.shape[0] !== numTokens) {
    throw new ShapeError(`${OP}: argument 'targets' must have shape [${numTokens}] for logits [${logits.shape.join(', ')}], got [${targets.shape.join(', ')}]`);
  }
  return fusedOpsActive() && logits.size > 0 ? softmaxCrossEntropyFused(logits, targets) : softmaxCrossEntropyComposite(logits, targets);
}
