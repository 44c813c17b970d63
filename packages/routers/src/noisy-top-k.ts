/**
 * Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks", §2.1, Eq. 3–5):
 *
 *     H(x)_i = (x·W_g)_i + StandardNormal() · Softplus((x·W_noise)_i)      (training only)
 *     G(x)   = Softmax(KeepTopK(H(x), k))
 *
 * with the importance and load losses of §4 and Appendix A ({@link importanceLoss}, {@link loadLoss},
 * {@link probabilityInTopK}).
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkOneOf, ConfigError, randomNormal, type ExpertKind, type SeededRandom } from '@moepp/tensors-core';
import { checkCapacityConfig, CAPACITY_PRIORITIES, type CapacityConfig, type CapacityPriority } from './capacity.js';
import {
  checkExpertKinds,
  checkPositiveInteger,
  checkRouteInputs,
  checkTopK,
  createWeight,
  scatterColumns,
  selectTopK,
  tidyRecord,
} from './common.js';
import { importanceLoss, loadLoss, probabilityInTopK } from './losses.js';
import { finishTokenChoice } from './token-choice.js';
import type { RouteOptions, Router, RouterOutput } from './types.js';

/** Configuration of a {@link NoisyTopKRouter}. */
export interface NoisyTopKRouterConfig {
  /** `D`, the token width. */
  readonly dim: number;
  /** `E`, the number of experts. */
  readonly numExperts: number;
  /** `k`, experts per token, in `[1, E]`. Default 2. */
  readonly topK?: number;
  /**
   * Added to the softplus noise scale, as tensor2tensor's `noise_epsilon` does (default there 1e-2), so
   * the scale never reaches 0. The paper has no epsilon: pass 0 for the paper's formula. Default 1e-2.
   */
  readonly noiseEpsilon?: number;
  /**
   * Initial `W_g` and `W_noise`: `'zeros'` as the paper's Appendix A does so that every expert starts
   * with equal load, or `'normal'` (std {@link NoisyTopKRouterConfig.initializerRange}). Default `'zeros'`.
   */
  readonly initialization?: 'zeros' | 'normal';
  /** Std for `'normal'` initialisation. Default 0.02. */
  readonly initializerRange?: number;
  /** The kind of each expert (for the FFN-per-token statistic). Default all `'ffn'`. */
  readonly expertKinds?: readonly ExpertKind[];
  /** Expert capacity. Default `{ mode: 'dropless' }`. */
  readonly capacity?: CapacityConfig;
  /** Who wins when an expert overflows. Default `'slot-major'`. */
  readonly capacityPriority?: CapacityPriority;
  /** Generator for the initial weights and, unless a route call passes one, the training noise. */
  readonly rng: SeededRandom;
}

/**
 * Noisy top-k router. Weights `{ wg: [D, E], wNoise: [D, E] }`. Aux losses (unweighted; the paper uses
 * `w_importance = w_load = 0.1`): `importance` = `CV(Σ_x G(x))²`, `load` = `CV(Σ_x P(x, i))²`, the
 * smooth load estimate in training (differentiable w.r.t. both weights) and the hard selection counts
 * otherwise (no gradient; also when `k = E`).
 *
 * `logits` in the output are the clean logits `x·W_g`; `probabilities` are `softmax(H(x))`, the
 * softmax over all experts of the logits that routed (noisy in training).
 */
export class NoisyTopKRouter implements Router {
  readonly numExperts: number;
  readonly topK: number;
  /** `D`, the token width. */
  readonly dim: number;
  /** See {@link NoisyTopKRouterConfig.noiseEpsilon}. */
  readonly noiseEpsilon: number;
  /** The kind of each expert. */
  readonly expertKinds: readonly ExpertKind[];
  /** The validated capacity config. */
  readonly capacity: CapacityConfig;
  /** Who wins when an expert overflows. */
  readonly capacityPriority: CapacityPriority;
  readonly weights: Readonly<{
    /** `[D, E]` `W_g`. */
    wg: tf.Variable;
    /** `[D, E]` `W_noise`. */
    wNoise: tf.Variable;
  }>;
  private readonly noiseRng: SeededRandom;

  /**
   * @param config - see {@link NoisyTopKRouterConfig}
   * @throws ConfigError for a bad size, `topK` outside `[1, E]`, a negative `noiseEpsilon`, an unknown
   *   initialisation or capacity mode, a negative capacity factor
   */
  constructor(config: NoisyTopKRouterConfig) {
    const op = 'NoisyTopKRouter';
    this.dim = checkPositiveInteger(op, 'dim', config.dim);
    this.numExperts = checkPositiveInteger(op, 'numExperts', config.numExperts);
    this.topK = checkTopK(op, config.topK ?? 2, this.numExperts);
    this.noiseEpsilon = checkNumber(op, 'noiseEpsilon', config.noiseEpsilon ?? 1e-2, { min: 0 });
    const initialization = checkOneOf(op, 'initialization', config.initialization ?? 'zeros', ['zeros', 'normal'] as const);
    const std = initialization === 'zeros' ? 0 : checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 });
    this.expertKinds = checkExpertKinds(op, config.expertKinds, this.numExperts);
    this.capacity = checkCapacityConfig(op, config.capacity);
    this.capacityPriority = checkOneOf(op, 'capacityPriority', config.capacityPriority ?? 'slot-major', CAPACITY_PRIORITIES);
    this.weights = {
      wg: createWeight([this.dim, this.numExperts], config.rng, std),
      wNoise: createWeight([this.dim, this.numExperts], config.rng, std),
    };
    this.noiseRng = config.rng.fork();
  }

  /**
   * Routes `[N, D]` tokens; adds noise when `options.training`. See {@link Router.route}.
   *
   * @param x - `[N, D]` float32
   * @param options - `training` turns noise on (drawn from `options.rng`, else the router's generator);
   *   `tokenMask` and `auxiliary` (false: no `importance` / `load`) are honoured; `previousLogits` is ignored
   * @returns the routing decision; the caller owns its tensors
   * @throws ShapeError for a mis-shaped `x` or `tokenMask`; ConfigError when the noise scale would be 0
   *   with noise on and aux losses asked for (`noiseEpsilon` 0 and a softplus that underflows)
   */
  route(x: tf.Tensor2D, options: RouteOptions = {}): RouterOutput {
    const numTokens = checkRouteInputs('NoisyTopKRouter.route', x, this.dim, this.numExperts, options);
    const training = options.training ?? false;
    const rng = options.rng ?? this.noiseRng;
    return tidyRecord(() => {
      const cleanLogits = tf.matMul(x, this.weights.wg) as tf.Tensor2D; // [N, E]
      let noisyLogits = cleanLogits; // [N, E] H(x)
      let noiseStd: tf.Tensor2D | null = null; // [N, E]
      if (training) {
        noiseStd = tf.add(tf.softplus(tf.matMul(x, this.weights.wNoise)), this.noiseEpsilon) as tf.Tensor2D;
        const noise = randomNormal([numTokens, this.numExperts], rng) as tf.Tensor2D; // [N, E] StandardNormal()
        noisyLogits = tf.add(cleanLogits, tf.mul(noise, noiseStd)) as tf.Tensor2D;
      }
      const top = selectTopK(noisyLogits, this.topK); // KeepTopK(H(x), k); top.selection [N, K, E] one-hot
      const gates = tf.softmax(top.values) as tf.Tensor2D; // [N, K]
      const probabilities = tf.softmax(noisyLogits) as tf.Tensor2D; // [N, E]
      const auxLosses = (options.auxiliary ?? true) ? this.auxLosses(top, gates, cleanLogits, noisyLogits, noiseStd, options.tokenMask) : {};
      return finishTokenChoice(
        { logits: cleanLogits, probabilities, expertIndices: top.indices, selection: top.selection, gates, auxLosses },
        {
          expertKinds: this.expertKinds,
          topK: this.topK,
          capacity: this.capacity,
          capacityPriority: this.capacityPriority,
          tokenMask: options.tokenMask,
          expertInputScale: 1,
        },
      );
    });
  }

  /**
   * The importance and load losses of one route call (see the class notes).
   *
   * @param top - the top-k selection: indices `[N, K]`, their one-hot `[N, K, E]`
   * @param gates - `[N, K]` the softmax over the kept logits
   * @param cleanLogits - `[N, E]` `x·W_g`
   * @param noisyLogits - `[N, E]` `H(x)`
   * @param noiseStd - `[N, E]` the noise scale in training, null otherwise
   * @param tokenMask - `[N]` float32, optional
   * @returns `{ importance, load }`
   */
  private auxLosses(
    top: { readonly indices: tf.Tensor2D; readonly selection: tf.Tensor3D },
    gates: tf.Tensor2D,
    cleanLogits: tf.Tensor2D,
    noisyLogits: tf.Tensor2D,
    noiseStd: tf.Tensor2D | null,
    tokenMask: tf.Tensor1D | undefined,
  ): Record<string, tf.Scalar> {
    const sparseGates = scatterColumns(gates, top.indices, this.numExperts, top.selection); // [N, E] G(x)
    let loadPerToken: tf.Tensor2D; // [N, E] P(x, i), or hard selections
    if (noiseStd !== null && this.topK < this.numExperts) {
      if (this.noiseEpsilon === 0 && tf.min(noiseStd).dataSync()[0] === 0) {
        throw new ConfigError("NoisyTopKRouter.route: the noise scale softplus(x·W_noise) underflowed to 0; set 'noiseEpsilon' > 0");
      }
      loadPerToken = probabilityInTopK(cleanLogits, noisyLogits, noiseStd, this.topK);
    } else {
      loadPerToken = tf.sum(top.selection, 1) as tf.Tensor2D;
    }
    return { importance: importanceLoss(sparseGates, tokenMask), load: loadLoss(loadPerToken, tokenMask) };
  }

  /** Disposes the router's variables. */
  dispose(): void {
    this.weights.wg.dispose();
    this.weights.wNoise.dispose();
  }
}
