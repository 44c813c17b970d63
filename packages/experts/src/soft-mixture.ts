/**
 * The classic dense mixture of experts (Jacobs, Jordan, Nowlan & Hinton 1991, "Adaptive Mixtures of
 * Local Experts", Neural Computation 3(1)): every expert sees every input, and a small gating network
 * weights their outputs with a softmax,
 *
 *     y(x) = Σ_i p_i(x) · o_i(x),      p(x) = softmax(gate(x))
 *
 * Meant for small classifiers and regressors, not for sparse LLM layers. The paper's training signal is
 * {@link mixtureNegativeLogLikelihood}, which makes the experts compete for inputs (specialise) instead of
 * cooperating on a blended output.
 *
 * Shape legend: `N` inputs, `D` input width, `O` output width, `E` experts.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, ConfigError, randomNormal, ShapeError, type SeededRandom } from '@moepp/tensors-core';
import { checkPositiveInteger } from './common.js';

/** Configuration of a {@link SoftMixture}. */
export interface SoftMixtureConfig {
  /** The gating network: `[N, D] -> [N, E]` logits (softmaxed by the mixture). */
  readonly gate: (x: tf.Tensor2D) => tf.Tensor2D;
  /** The experts: each `[N, D] -> [N, O]`, all with the same `O`. At least one. */
  readonly experts: readonly ((x: tf.Tensor2D) => tf.Tensor2D)[];
  /** Every trainable variable the gate and experts read (for optimisers); disposed by `dispose()`. */
  readonly weights?: Readonly<Record<string, tf.Variable>>;
}

/** What {@link SoftMixture.apply} returns; the caller owns the tensors. */
export interface SoftMixtureOutput {
  /** `[N, O]` float32 `Σ_i p_i · o_i`. */
  readonly output: tf.Tensor2D;
  /** `[N, E]` float32 softmax gate probabilities. */
  readonly gateProbabilities: tf.Tensor2D;
  /** `[E, N, O]` float32 each expert's output (for {@link mixtureNegativeLogLikelihood} and analyses). */
  readonly expertOutputs: tf.Tensor3D;
}

/** A dense softmax-gated mixture of experts; see the module notes. */
export class SoftMixture {
  /** `E`. */
  readonly numExperts: number;
  /** The variables given in the config. */
  readonly weights: Readonly<Record<string, tf.Variable>>;
  private readonly gate: (x: tf.Tensor2D) => tf.Tensor2D;
  private readonly experts: readonly ((x: tf.Tensor2D) => tf.Tensor2D)[];

  /**
   * @param config - see {@link SoftMixtureConfig}
   * @throws ConfigError when there is no expert or `gate` / an expert is not a function
   */
  constructor(config: SoftMixtureConfig) {
    if (typeof config.gate !== 'function') throw new ConfigError(`SoftMixture: 'gate' must be a function [N, D] -> [N, E]`);
    if (!Array.isArray(config.experts) || config.experts.length === 0) {
      throw new ConfigError(`SoftMixture: 'experts' must be a non-empty array of functions, got ${Array.isArray(config.experts) ? 'an empty array' : typeof config.experts}`);
    }
    config.experts.forEach((expert, i) => {
      if (typeof expert !== 'function') throw new ConfigError(`SoftMixture: 'experts[${i}]' must be a function [N, D] -> [N, O]`);
    });
    this.gate = config.gate;
    this.experts = [...config.experts];
    this.numExperts = config.experts.length;
    this.weights = config.weights ?? {};
  }

  /**
   * Runs every expert and the gate on `x` and mixes.
   *
   * @param x - `[N, D]` float32
   * @returns see {@link SoftMixtureOutput}
   * @throws ShapeError when `x` is not 2-D float32, the gate does not return `[N, E]` or the experts'
   *   outputs are not all `[N, O]`
   */
  apply(x: tf.Tensor2D): SoftMixtureOutput {
    checkShape('SoftMixture.apply', 'x', x, [null, null], 'float32');
    return tf.tidy(() => {
      const numInputs = x.shape[0];
      const logits = this.gate(x); // [N, E]
      checkShape('SoftMixture.apply', 'gate(x)', logits, [numInputs, this.numExperts], 'float32');
      const gateProbabilities = tf.softmax(logits) as tf.Tensor2D; // [N, E]
      const outputs = this.experts.map((expert) => expert(x)); // E × [N, O]
      const outputWidth = (outputs[0] as tf.Tensor).shape[1];
      outputs.forEach((o, i) => {
        if (o.rank !== 2 || o.shape[0] !== numInputs || o.shape[1] !== outputWidth) {
          throw new ShapeError(`SoftMixture.apply: expert ${i} must return [${numInputs}, ${outputWidth}] like expert 0, got [${o.shape.join(', ')}]`);
        }
      });
      const expertOutputs = tf.stack(outputs) as tf.Tensor3D; // [E, N, O]
      const weights = tf.expandDims(tf.transpose(gateProbabilities), 2); // [E, N, 1]
      const output = tf.sum(tf.mul(weights, expertOutputs), 0) as tf.Tensor2D; // [N, O]
      return { output, gateProbabilities, expertOutputs };
    });
  }

  /** Disposes the variables given in the config. */
  dispose(): void {
    for (const variable of Object.values(this.weights)) variable.dispose();
  }
}

/**
 * The competitive error function of Jacobs et al. 1991 (§1): the negative log-likelihood of the target
 * under a mixture of unit-variance Gaussians centred on the expert outputs, averaged over inputs,
 *
 *     L = (1/N) Σ_n −log Σ_i p_i · exp(−½ ‖d_n − o_i,n‖²)
 *
 * Unlike the squared error of the blended output, its gradient pushes each expert towards the targets
 * of the inputs it is responsible for.
 *
 * @param target - `[N, O]` float32 desired outputs `d`
 * @param mixture - the {@link SoftMixtureOutput} for the same inputs
 * @returns scalar float32, differentiable w.r.t. the gate and the experts
 * @throws ShapeError when `target` does not match the experts' outputs
 */
export function mixtureNegativeLogLikelihood(target: tf.Tensor2D, mixture: SoftMixtureOutput): tf.Scalar {
  const [, numInputs, outputWidth] = mixture.expertOutputs.shape;
  checkShape('mixtureNegativeLogLikelihood', 'target', target, [numInputs, outputWidth], 'float32');
  return tf.tidy(() => {
    const squaredDistance = tf.sum(tf.square(tf.sub(mixture.expertOutputs, tf.expandDims(target, 0))), 2); // [E, N]
    const logPrior = tf.log(tf.maximum(tf.transpose(mixture.gateProbabilities), 1e-30)); // [E, N]
    const logLikelihood = tf.logSumExp(tf.sub(logPrior, tf.mul(0.5, squaredDistance)), 0); // [N]
    return tf.neg(tf.mean(logLikelihood)) as tf.Scalar;
  });
}

/** Configuration of {@link createLinearSoftMixture}. */
export interface LinearSoftMixtureConfig {
  /** `D`. */
  readonly inputDim: number;
  /** `O`. */
  readonly outputDim: number;
  /** `E`. */
  readonly numExperts: number;
  /** Std of the normal initialisation of the kernels (biases start at 0). Default 0.1. */
  readonly initializerRange?: number;
  /** Generator for the initial weights. */
  readonly rng: SeededRandom;
}

/**
 * A {@link SoftMixture} of affine experts `o_i = x·W_i + b_i` with an affine gate `x·G + c`, as in the
 * 1991 vowel experiments. Weights: `gateKernel [D, E]`, `gateBias [E]`, `expert{i}Kernel [D, O]`,
 * `expert{i}Bias [O]`.
 *
 * @param config - see {@link LinearSoftMixtureConfig}
 * @returns the mixture
 * @throws ConfigError for a size that is not an integer >= 1 or a negative std
 */
export function createLinearSoftMixture(config: LinearSoftMixtureConfig): SoftMixture {
  const op = 'createLinearSoftMixture';
  const inputDim = checkPositiveInteger(op, 'inputDim', config.inputDim);
  const outputDim = checkPositiveInteger(op, 'outputDim', config.outputDim);
  const numExperts = checkPositiveInteger(op, 'numExperts', config.numExperts);
  const std = checkNumber(op, 'initializerRange', config.initializerRange ?? 0.1, { min: 0 });
  const kernel = (shape: number[]): tf.Variable => tf.tidy(() => tf.variable(randomNormal(shape, config.rng, std), true));
  const bias = (size: number): tf.Variable => tf.variable(tf.zeros([size]), true);
  const weights: Record<string, tf.Variable> = { gateKernel: kernel([inputDim, numExperts]), gateBias: bias(numExperts) };
  const experts: ((x: tf.Tensor2D) => tf.Tensor2D)[] = [];
  for (let i = 0; i < numExperts; i++) {
    const w = kernel([inputDim, outputDim]);
    const b = bias(outputDim);
    weights[`expert${i}Kernel`] = w;
    weights[`expert${i}Bias`] = b;
    experts.push((x) => tf.add(tf.matMul(x, w), b));
  }
  const gateKernel = weights.gateKernel as tf.Variable;
  const gateBias = weights.gateBias as tf.Variable;
  return new SoftMixture({ gate: (x) => tf.add(tf.matMul(x, gateKernel), gateBias), experts, weights });
}
