/**
 * The expert contract the MoE / MoE++ layer in `@moepp/models` is written against.
 *
 * Shape legend: `N` tokens, `D` model width, `F` FFN width.
 */
import type * as tf from '@tensorflow/tfjs';
import type { ExpertKind } from '@moepp/tensors-core';

/**
 * One expert: a map `[N, D] -> [N, D]` applied to the tokens routed to it.
 *
 * FLOP convention for {@link Expert.flopsPerToken}: forward pass only, a multiply-add is 2 FLOPs,
 * every other elementwise op (including a transcendental such as `exp` or `erf`) is 1.
 */
export interface Expert {
  /** `ffn`, or one of MoE++'s zero-computation kinds `zero`, `copy`, `constant`. */
  readonly kind: ExpertKind;
  /** Name unique within a pool, e.g. `'ffn-3'`, `'constant-0'`. */
  readonly name: string;
  /** `D`, the token width in and out. */
  readonly dim: number;
  /**
   * Applies the expert to a batch of tokens. Pure; returns a new tensor the caller owns; leaks nothing.
   *
   * @param x - `[N, D]` float32 tokens
   * @returns `[N, D]` float32
   * @throws ShapeError when `x` is not `[N, D]` float32
   */
  apply(x: tf.Tensor2D): tf.Tensor2D;
  /**
   * Trainable variables by stable local name, tfjs `[in, out]` layout (PyTorch `Linear` weights are the
   * transposes), e.g. `{ upProj: [D, 2F], downProj: [F, D] }` for SwiGLU. Empty for zero and copy experts.
   */
  readonly weights: Readonly<Record<string, tf.Variable>>;
  /** @returns the number of trainable parameters */
  parameterCount(): number;
  /** @returns forward FLOPs per token (see the convention above) */
  flopsPerToken(): number;
  /** Disposes the expert's variables. */
  dispose(): void;
}
