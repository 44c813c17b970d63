/**
 * MoE++'s zero-computation experts (arXiv 2410.07348, §3.1; official `ZeroExpert`, `CopyExpert`,
 * `ConstantExpert` in `moe_plus_plus_layer.py`):
 *
 * | expert | formula | paper | weights | FLOPs per token |
 * |---|---|---|---|---|
 * | zero ("discard") | `E(x) = 0` | Eq. 3 | none | 0 |
 * | copy ("skip") | `E(x) = x` | Eq. 4 | none | 0 |
 * | constant ("replace") | `E(x) = a1·x + a2·v`, `[a1, a2] = softmax(W_c x)` | Eq. 5 | `W_c`, `v` | `7D + 5` |
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, type SeededRandom } from '@moepp/tensors-core';
import { checkPositiveInteger, checkTokens, countParameters, normalVariable } from './common.js';
import type { Expert } from './types.js';

/** Options shared by the zero-computation experts. */
export interface ZeroComputationExpertConfig {
  /** `D`, the token width. */
  readonly dim: number;
  /** Name within a pool, e.g. `'zero-0'`. Default the kind. */
  readonly name?: string;
}

/**
 * The zero expert, `E(x) = 0` (Eq. 3): returns zeros without touching `x` (no matmul, no variables).
 * A token routed here needs no compute at all; in a top-2 layer it reduces the token to top-1.
 */
export class ZeroExpert implements Expert {
  readonly kind = 'zero' as const;
  readonly name: string;
  readonly dim: number;
  readonly weights: Readonly<Record<string, tf.Variable>> = Object.freeze({});

  /**
   * @param config - `dim` and an optional name
   * @throws ConfigError for a bad `dim`
   */
  constructor(config: ZeroComputationExpertConfig) {
    this.dim = checkPositiveInteger('ZeroExpert', 'dim', config.dim);
    this.name = config.name ?? 'zero';
  }

  /**
   * @param x - `[N, D]` float32 (only its shape is read)
   * @returns `[N, D]` float32 zeros
   * @throws ShapeError unless `x` is `[N, D]` float32
   */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    checkTokens(`ZeroExpert(${this.name}).apply`, x, this.dim);
    return tf.zeros(x.shape, 'float32');
  }

  /** @returns 0 */
  parameterCount(): number {
    return 0;
  }

  /** @returns 0 */
  flopsPerToken(): number {
    return 0;
  }

  /** Nothing to dispose. */
  dispose(): void {}
}

/** The copy expert, `E(x) = x` (Eq. 4): the token skips the layer. No variables, no compute. */
export class CopyExpert implements Expert {
  readonly kind = 'copy' as const;
  readonly name: string;
  readonly dim: number;
  readonly weights: Readonly<Record<string, tf.Variable>> = Object.freeze({});

  /**
   * @param config - `dim` and an optional name
   * @throws ConfigError for a bad `dim`
   */
  constructor(config: ZeroComputationExpertConfig) {
    this.dim = checkPositiveInteger('CopyExpert', 'dim', config.dim);
    this.name = config.name ?? 'copy';
  }

  /**
   * @param x - `[N, D]` float32
   * @returns `[N, D]` a new tensor with `x`'s values (`tf.clone`: shares the buffer, no copy), so
   *   disposing it never disposes `x`
   * @throws ShapeError unless `x` is `[N, D]` float32
   */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    checkTokens(`CopyExpert(${this.name}).apply`, x, this.dim);
    return tf.clone(x);
  }

  /** @returns 0 */
  parameterCount(): number {
    return 0;
  }

  /** @returns 0 */
  flopsPerToken(): number {
    return 0;
  }

  /** Nothing to dispose. */
  dispose(): void {}
}

/** Configuration of a {@link ConstantExpert}. */
export interface ConstantExpertConfig extends ZeroComputationExpertConfig {
  /** Std of the normal initialisation of `W_c` (an `nn.Linear`, so `initializer_range`). Default 0.02. */
  readonly initializerRange?: number;
  /** Generator for `W_c` and `v` (`v ~ N(0, 1)`, as the official `torch.nn.init.normal_`). */
  readonly rng: SeededRandom;
}

/** The weights of a {@link ConstantExpert}. */
export interface ConstantExpertWeights {
  /** `W_c`, `[D, 2]` (official `experts.{c}.wg.weight` `[2, D]` transposed). */
  readonly wg: tf.Variable;
  /** `v`, `[D]` (official `experts.{c}.constant`). */
  readonly constant: tf.Variable;
}

/**
 * The constant expert (Eq. 5): `E(x) = a1·x + a2·v` with `[a1, a2] = softmax(W_c x)`, a trainable
 * vector `v` mixed in by a token-dependent proportion.
 */
export class ConstantExpert implements Expert {
  readonly kind = 'constant' as const;
  readonly name: string;
  readonly dim: number;
  readonly weights: Readonly<ConstantExpertWeights & Record<string, tf.Variable>>;

  /**
   * @param config - see {@link ConstantExpertConfig}
   * @throws ConfigError for a bad `dim` or a negative std
   */
  constructor(config: ConstantExpertConfig) {
    const op = 'ConstantExpert';
    this.dim = checkPositiveInteger(op, 'dim', config.dim);
    const std = checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 });
    this.name = config.name ?? 'constant';
    this.weights = {
      constant: normalVariable([this.dim], config.rng, 1),
      wg: normalVariable([this.dim, 2], config.rng, std),
    };
  }

  /**
   * @param x - `[N, D]` float32
   * @returns `[N, D]` float32 `a1·x + a2·v`
   * @throws ShapeError unless `x` is `[N, D]` float32
   */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    checkTokens(`ConstantExpert(${this.name}).apply`, x, this.dim);
    return tf.tidy(() => {
      const mix = tf.softmax(tf.matMul(x, this.weights.wg)); // [N, 2] [a1, a2]
      const [keepInput, takeConstant] = tf.split(mix, 2, 1) as [tf.Tensor2D, tf.Tensor2D]; // [N, 1] each
      return tf.add(tf.mul(keepInput, x), tf.mul(takeConstant, tf.expandDims(this.weights.constant, 0))) as tf.Tensor2D;
    });
  }

  /** @returns `3D` (`W_c` is `2D`, `v` is `D`) */
  parameterCount(): number {
    return countParameters(this.weights);
  }

  /**
   * @returns `7D + 5`: the projection `W_c x` (2·D·2 = 4D), the 2-way softmax (2 exp, 1 add, 2 div = 5)
   *   and `a1·x + a2·v` (3D)
   */
  flopsPerToken(): number {
    return 7 * this.dim + 5;
  }

  /** Disposes `W_c` and `v`. */
  dispose(): void {
    this.weights.wg.dispose();
    this.weights.constant.dispose();
  }
}
