/**
 * Auxiliary routing losses as pure functions. Each returns an UNWEIGHTED scalar; the trainer applies its
 * coefficient (Switch `α = 1e-2`, MoE++ `β = 0.01`, ST-MoE z-loss `1e-3`, Shazeer `w_importance`,
 * `w_load`). Every function takes an optional `tokenMask` `[N]` (1 = real token, 0 = padding) so padding
 * never counts (a bug Hugging Face's Mixtral loss once had); `T` below is the number of real tokens.
 *
 * Differentiability: the selection counts `f` carry no gradient (they come from top-k indices); the
 * probabilities `P`, logits and gates do.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, checkShapes, isZeroComputation, type ExpertKind } from '@moepp/tensors-core';
import { detach, gatherColumns, oneHotFloat } from './common.js';

const SMALL = 1e-10;

/**
 * The sum over real tokens (axis 0) of `values` `[N, ...]`, and `T = max(Σ mask, 1)`. Without a mask
 * every token is real: a plain sum and `T = max(N, 1)`, the same values with fewer ops.
 */
function sumOverTokens(values: tf.Tensor, tokenMask: tf.Tensor1D | undefined): { sum: tf.Tensor; count: tf.Scalar | number } {
  if (!tokenMask) return { sum: tf.sum(values, 0), count: Math.max(values.shape[0] as number, 1) };
  const mask = tokenMask.reshape([tokenMask.shape[0], ...values.shape.slice(1).map(() => 1)]); // [N, 1, …]
  return { sum: tf.sum(tf.mul(values, mask), 0), count: tf.maximum(tf.sum(tokenMask), 1) as tf.Scalar };
}

/**
 * Fraction of real tokens that select each expert among their top-K: `f_i = (1/T)·#{t : i ∈ topK(t)}`
 * (MoE++ Eq. 7; with K = 1 this is Switch's `f_i`). `Σ_i f_i = K`. No gradient.
 *
 * @param expertIndices - `[N, K]` int32 chosen experts (before capacity)
 * @param numExperts - `E`
 * @param tokenMask - `[N]` float32, optional
 * @param selection - `[N, K, E]` float32 one-hot of `expertIndices` if the caller already has it
 *   (routers compute it once per call); optional, computed here otherwise
 * @returns `[E]` float32
 * @throws ShapeError for a mis-shaped `tokenMask` or `selection`
 */
export function selectionFractions(
  expertIndices: tf.Tensor2D,
  numExperts: number,
  tokenMask?: tf.Tensor1D,
  selection?: tf.Tensor3D,
): tf.Tensor1D {
  return tf.tidy(() => {
    const [numTokens, topK] = expertIndices.shape;
    if (tokenMask) checkShape('selectionFractions', 'tokenMask', tokenMask, [numTokens], 'float32');
    if (selection) checkShape('selectionFractions', 'selection', selection, [numTokens, topK, numExperts], 'float32');
    const selections = tf.sum(selection ?? oneHotFloat(expertIndices, numExperts), 1); // [N, E] 0/1
    const { sum, count } = sumOverTokens(selections, tokenMask);
    return tf.div(sum, count) as tf.Tensor1D;
  });
}

/**
 * Mean router probability per expert over real tokens: `P_i = (1/T)·Σ_t p_t,i` (Switch Eq. 6,
 * MoE++ Eq. 7). Differentiable.
 *
 * @param probabilities - `[N, E]` float32 softmax over experts
 * @param tokenMask - `[N]` float32, optional
 * @returns `[E]` float32
 */
export function meanProbabilities(probabilities: tf.Tensor2D, tokenMask?: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => {
    const numTokens = probabilities.shape[0];
    if (tokenMask) checkShape('meanProbabilities', 'tokenMask', tokenMask, [numTokens], 'float32');
    const { sum, count } = sumOverTokens(probabilities, tokenMask);
    return tf.div(sum, count) as tf.Tensor1D;
  });
}

/**
 * Switch Transformer load-balancing loss (Fedus et al. 2021, Eq. 4–6), generalised to top-K as
 * Hugging Face Mixtral does: `E · Σ_i f_i · P_i` with `f_i` from {@link selectionFractions}
 * (`Σ f = K`) and `P_i` from {@link meanProbabilities}. Minimum `K` at perfectly uniform routing.
 * Multiply by `α` (1e-2 in the paper) in the trainer.
 *
 * @param probabilities - `[N, E]` float32
 * @param expertIndices - `[N, K]` int32 (before capacity)
 * @param tokenMask - `[N]` float32, optional
 * @param selection - `[N, K, E]` float32 one-hot of `expertIndices`, optional (see {@link selectionFractions})
 * @returns scalar float32, differentiable w.r.t. `probabilities`
 * @throws ShapeError when the shapes disagree
 */
export function switchLoadBalanceLoss(
  probabilities: tf.Tensor2D,
  expertIndices: tf.Tensor2D,
  tokenMask?: tf.Tensor1D,
  selection?: tf.Tensor3D,
): tf.Scalar {
  checkShapes('switchLoadBalanceLoss', {
    probabilities: [probabilities, ['N', 'E'], 'float32'],
    expertIndices: [expertIndices, ['N', 'K'], 'int32'],
  });
  return tf.tidy(() => {
    const numExperts = probabilities.shape[1];
    const fractions = selectionFractions(expertIndices, numExperts, tokenMask, selection);
    return tf.mul(tf.sum(tf.mul(fractions, meanProbabilities(probabilities, tokenMask))), numExperts) as tf.Scalar;
  });
}

/**
 * MoE++ heterogeneous load-balance loss (arXiv 2410.07348, Eq. 7):
 * `L_b = Σ_i η_i · f_i · P_i`, `η_i = 1` for FFN experts and `τ` for zero-computation experts, `f_i`
 * the fraction of tokens selecting expert `i` among their top-K (`Σ f = K`), `P_i` the mean softmax
 * probability. No factor `E` (unlike Switch). Multiply by `β` (0.01, Eq. 9) in the trainer.
 *
 * @param probabilities - `[N, E]` float32, the router softmax
 * @param expertIndices - `[N, K]` int32 (before capacity)
 * @param expertKinds - the kind of each of the `E` experts
 * @param tau - `τ >= 0`; smaller sends more tokens to the zero-computation experts (paper default 0.75)
 * @param tokenMask - `[N]` float32, optional
 * @param selection - `[N, K, E]` float32 one-hot of `expertIndices`, optional (see {@link selectionFractions})
 * @returns scalar float32, differentiable w.r.t. `probabilities`
 * @throws ConfigError for a negative `tau` or `expertKinds` of the wrong length; ShapeError for shapes
 */
export function heterogeneousLoadBalanceLoss(
  probabilities: tf.Tensor2D,
  expertIndices: tf.Tensor2D,
  expertKinds: readonly ExpertKind[],
  tau: number,
  tokenMask?: tf.Tensor1D,
  selection?: tf.Tensor3D,
): tf.Scalar {
  const op = 'heterogeneousLoadBalanceLoss';
  checkNumber(op, 'tau', tau, { min: 0 });
  checkShapes(op, {
    probabilities: [probabilities, ['N', expertKinds.length], 'float32'],
    expertIndices: [expertIndices, ['N', 'K'], 'int32'],
  });
  return tf.tidy(() => {
    const eta = tf.tensor1d(expertKinds.map((kind) => (isZeroComputation(kind) ? tau : 1)), 'float32'); // [E]
    const fractions = selectionFractions(expertIndices, expertKinds.length, tokenMask, selection); // [E]
    return tf.sum(tf.mul(tf.mul(eta, fractions), meanProbabilities(probabilities, tokenMask))) as tf.Scalar;
  });
}

/**
 * Router z-loss (ST-MoE, Zoph et al. 2022, Eq. 5): `(1/T)·Σ_t (log Σ_j exp(x_t,j))²`, on the logits that
 * enter the router softmax. Keeps logits small for numerical stability. Multiply by 1e-3 (paper).
 *
 * @param logits - `[N, E]` float32
 * @param tokenMask - `[N]` float32, optional
 * @returns scalar float32, differentiable
 */
export function routerZLoss(logits: tf.Tensor2D, tokenMask?: tf.Tensor1D): tf.Scalar {
  checkShape('routerZLoss', 'logits', logits, ['N', null], 'float32');
  return tf.tidy(() => {
    const numTokens = logits.shape[0];
    if (tokenMask) checkShape('routerZLoss', 'tokenMask', tokenMask, [numTokens], 'float32');
    const logSumExp = tf.logSumExp(logits, 1); // [N]
    const { sum, count } = sumOverTokens(tf.square(logSumExp), tokenMask);
    return tf.div(sum, count) as tf.Scalar;
  });
}

/**
 * Squared coefficient of variation `Var(x) / Mean(x)²` of a positive vector (population variance, with
 * small epsilons as tensor2tensor's `CVSquared`). Used by Shazeer et al. 2017's importance and load losses.
 *
 * @param values - `[E]` float32
 * @returns scalar float32, differentiable
 */
export function coefficientOfVariationSquared(values: tf.Tensor1D): tf.Scalar {
  checkShape('coefficientOfVariationSquared', 'values', values, [null], 'float32');
  return tf.tidy(() => {
    const mean = tf.mean(values);
    const variance = tf.mean(tf.square(tf.sub(values, mean)));
    return tf.div(variance, tf.add(tf.square(mean), SMALL)) as tf.Scalar;
  });
}

/**
 * Importance loss (Shazeer et al. 2017, §4, Eq. 6–7): `CV(Importance(X))²` with
 * `Importance(X)_i = Σ_x G(x)_i`, the batch sum of each expert's gate. Multiply by `w_importance`
 * (0.1 in the paper) in the trainer.
 *
 * @param gates - `[N, E]` float32 sparse gates `G(x)` (0 for unselected experts)
 * @param tokenMask - `[N]` float32, optional
 * @returns scalar float32, differentiable w.r.t. `gates`
 */
export function importanceLoss(gates: tf.Tensor2D, tokenMask?: tf.Tensor1D): tf.Scalar {
  checkShape('importanceLoss', 'gates', gates, ['N', null], 'float32');
  return tf.tidy(() => {
    const numTokens = gates.shape[0];
    if (tokenMask) checkShape('importanceLoss', 'tokenMask', tokenMask, [numTokens], 'float32');
    const mask = tokenMask ?? tf.ones([numTokens]);
    return coefficientOfVariationSquared(tf.sum(tf.mul(gates, tf.expandDims(mask, 1)), 0) as tf.Tensor1D);
  });
}

/**
 * Load loss (Shazeer et al. 2017, Appendix A, Eq. 10–11): `CV(Load(X))²` with
 * `Load(X)_i = Σ_x P(x, i)`, the smooth estimate of how many tokens each expert receives
 * (see {@link probabilityInTopK}). Multiply by `w_load` (0.1 in the paper) in the trainer.
 *
 * @param probabilityInTopKPerToken - `[N, E]` float32 `P(x, i)` (or 0/1 selections at evaluation time)
 * @param tokenMask - `[N]` float32, optional
 * @returns scalar float32, differentiable w.r.t. its input
 */
export function loadLoss(probabilityInTopKPerToken: tf.Tensor2D, tokenMask?: tf.Tensor1D): tf.Scalar {
  return importanceLoss(probabilityInTopKPerToken, tokenMask);
}

/**
 * The standard normal CDF `Φ(z) = ½·(1 + erf(z / √2))`. Differentiable (`Erf` has a gradient).
 *
 * @param z - any float32 tensor
 * @returns `Φ(z)`, same shape
 */
export function normalCdf<T extends tf.Tensor>(z: T): T {
  return tf.tidy(() => tf.mul(0.5, tf.add(1, tf.erf(tf.div(z, Math.SQRT2)))) as T);
}

/**
 * Probability that expert `i` stays in a token's top-k under re-drawn noise (Shazeer et al. 2017,
 * Appendix A, Eq. 8–9):
 *
 *     P(x, i) = Φ( ((x·W_g)_i − kth_excluding(H(x), k, i)) / Softplus((x·W_noise)_i) )
 *
 * where `H(x) = x·W_g + noise` are the noisy logits and `kth_excluding(v, k, i)` is the k-th largest
 * component of `v` without component `i`: the (k+1)-th largest of `H(x)` when `i` is in the top k, else
 * the k-th largest (as tensor2tensor's `_ProbInTopK`). Differentiable w.r.t. the clean logits, the noisy
 * logits (through the thresholds) and the noise scale.
 *
 * @param cleanLogits - `[N, E]` float32 `x·W_g`
 * @param noisyLogits - `[N, E]` float32 `H(x)`
 * @param noiseStd - `[N, E]` float32 `Softplus(x·W_noise)` (+ ε), > 0
 * @param topK - `k`, must be < E (with k = E every expert is always selected)
 * @returns `[N, E]` float32 in [0, 1]
 * @throws ConfigError if `topK` is not an integer in `[1, E)`; ShapeError for shapes
 */
export function probabilityInTopK(
  cleanLogits: tf.Tensor2D,
  noisyLogits: tf.Tensor2D,
  noiseStd: tf.Tensor2D,
  topK: number,
): tf.Tensor2D {
  const op = 'probabilityInTopK';
  const bindings = checkShapes(op, {
    cleanLogits: [cleanLogits, ['N', 'E'], 'float32'],
    noisyLogits: [noisyLogits, ['N', 'E'], 'float32'],
    noiseStd: [noiseStd, ['N', 'E'], 'float32'],
  });
  const numExperts = bindings.get('E') as number;
  checkNumber(op, 'topK', topK, { integer: true, min: 1, max: numExperts - 1 });
  return tf.tidy(() => {
    const top = tf.topk(detach(noisyLogits), topK + 1).indices as tf.Tensor2D; // [N, K+1]
    const [numTokens] = cleanLogits.shape;
    const kthIndex = tf.slice(top, [0, topK - 1], [numTokens, 1]) as tf.Tensor2D; // k-th largest
    const nextIndex = tf.slice(top, [0, topK], [numTokens, 1]) as tf.Tensor2D; // (k+1)-th largest
    const thresholdIfIn = gatherColumns(noisyLogits, nextIndex); // [N, 1]
    const thresholdIfOut = gatherColumns(noisyLogits, kthIndex); // [N, 1]
    const isIn = tf.greater(detach(noisyLogits), detach(thresholdIfIn)); // [N, E] bool, no gradient
    const probabilityIfIn = normalCdf(tf.div(tf.sub(cleanLogits, thresholdIfIn), noiseStd));
    const probabilityIfOut = normalCdf(tf.div(tf.sub(cleanLogits, thresholdIfOut), noiseStd));
    return tf.where(isIn, probabilityIfIn, probabilityIfOut) as tf.Tensor2D;
  });
}
