/**
 * FFN experts: the experts that do the real compute.
 *
 * - `swiglu`: the official MoE++ expert (`MLPMoE` in `modeling_moe_plus_plus.py`): one fused
 *   projection `up_proj: D -> 2F`, split into halves `a, b` along the last axis, `silu(a) · b`, then
 *   `down_proj: F -> D`; no biases. Stored as `upProj [D, 2F]`, `downProj [F, D]`; the official PyTorch
 *   weights `up_proj.weight [2F, D]` and `down_proj.weight [D, F]` are their transposes.
 * - `gelu`, `relu`: a two-layer MLP `down(act(up(x)))` with `upProj [D, F]`, `downProj [F, D]`, no biases.
 *   GELU is the exact erf form `½·x·(1 + erf(x/√2))` (PyTorch's and Hugging Face's `gelu`).
 *
 * Initialisation: every weight from `N(0, initializerRange²)`, as the official `_init_weights` does for
 * `nn.Linear` (`initializer_range`, default 0.02).
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkOneOf, gelu, swiglu, type SeededRandom } from '@moepp/tensors-core';
import { checkPositiveInteger, checkTokens, countParameters, normalVariable } from './common.js';
import type { Expert } from './types.js';

/** The FFN activations on offer. */
export type FfnActivation = 'swiglu' | 'gelu' | 'relu';

/** The accepted {@link FfnActivation} values. */
export const FFN_ACTIVATIONS: readonly FfnActivation[] = ['swiglu', 'gelu', 'relu'];

/**
 * Elementwise FLOPs per hidden unit of each activation (1 per elementwise op): SwiGLU = sigmoid, ×a,
 * ×b = 3; GELU = ÷√2, erf, +1, ×x, ×½ = 5; ReLU = 1.
 */
export const ACTIVATION_FLOPS_PER_UNIT: Readonly<Record<FfnActivation, number>> = { swiglu: 3, gelu: 5, relu: 1 };

/** Configuration of an {@link FfnExpert}. */
export interface FfnExpertConfig {
  /** `D`, the token width. */
  readonly dim: number;
  /** `F`, the hidden width (`intermediate_size`); SwiGLU's fused `up_proj` is `2F` wide. */
  readonly ffnDim: number;
  /** Default `'swiglu'`. */
  readonly activation?: FfnActivation;
  /** Std of the normal initialisation. Default 0.02. */
  readonly initializerRange?: number;
  /** Generator for the initial weights. */
  readonly rng: SeededRandom;
  /** Default `'ffn'`. */
  readonly name?: string;
}

/** The weights of an {@link FfnExpert}. */
export interface FfnWeights {
  /** `[D, 2F]` for SwiGLU (`up_proj.weight`ᵀ), `[D, F]` otherwise. */
  readonly upProj: tf.Variable;
  /** `[F, D]` (`down_proj.weight`ᵀ). */
  readonly downProj: tf.Variable;
}

/** An FFN expert (SwiGLU, GELU or ReLU MLP); see the module notes. */
export class FfnExpert implements Expert {
  readonly kind = 'ffn' as const;
  readonly name: string;
  readonly dim: number;
  /** `F`, the hidden width. */
  readonly ffnDim: number;
  /** The activation. */
  readonly activation: FfnActivation;
  readonly weights: Readonly<FfnWeights & Record<string, tf.Variable>>;

  /**
   * @param config - see {@link FfnExpertConfig}
   * @throws ConfigError for a non-positive or fractional width, an unknown activation or a negative std
   */
  constructor(config: FfnExpertConfig) {
    const op = 'FfnExpert';
    this.dim = checkPositiveInteger(op, 'dim', config.dim);
    this.ffnDim = checkPositiveInteger(op, 'ffnDim', config.ffnDim);
    this.activation = checkOneOf(op, 'activation', config.activation ?? 'swiglu', FFN_ACTIVATIONS);
    const std = checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 });
    this.name = config.name ?? 'ffn';
    const upWidth = this.activation === 'swiglu' ? 2 * this.ffnDim : this.ffnDim;
    this.weights = {
      upProj: normalVariable([this.dim, upWidth], config.rng, std),
      downProj: normalVariable([this.ffnDim, this.dim], config.rng, std),
    };
  }

  /**
   * @param x - `[N, D]` float32
   * @returns `[N, D]` float32 `down(act(up(x)))`
   * @throws ShapeError unless `x` is `[N, D]` float32
   */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    checkTokens(`FfnExpert(${this.name}).apply`, x, this.dim);
    return tf.tidy(() => {
      const up: tf.Tensor2D = tf.matMul(x, this.weights.upProj); // [N, 2F] (SwiGLU) or [N, F]
      let hidden: tf.Tensor2D; // [N, F]
      switch (this.activation) {
        case 'swiglu':
          // silu(a) · b for the halves a, b of up: one fused kernel (and one for its gradient) with
          // native acceleration, else split / sigmoid / mul (see @moepp/tensors-core's swiglu)
          hidden = swiglu(up) as tf.Tensor2D;
          break;
        case 'gelu':
          hidden = gelu(up) as tf.Tensor2D; // ½·x·(1 + erf(x/√2)), fused with native acceleration
          break;
        case 'relu':
          hidden = tf.relu(up);
          break;
      }
      return tf.matMul(hidden, this.weights.downProj); // [N, D]
    });
  }

  /** @returns `D·up + F·D` */
  parameterCount(): number {
    return countParameters(this.weights);
  }

  /**
   * @returns SwiGLU `2·D·2F + 2·F·D + 3F`; GELU `2·D·F + 2·F·D + 5F`; ReLU `2·D·F + 2·F·D + F`
   *   (see {@link ACTIVATION_FLOPS_PER_UNIT})
   */
  flopsPerToken(): number {
    const upWidth = this.activation === 'swiglu' ? 2 * this.ffnDim : this.ffnDim;
    return 2 * this.dim * upWidth + 2 * this.ffnDim * this.dim + ACTIVATION_FLOPS_PER_UNIT[this.activation] * this.ffnDim;
  }

  /** Disposes the expert's variables. */
  dispose(): void {
    this.weights.upProj.dispose();
    this.weights.downProj.dispose();
  }
}
