/** Helpers shared by the experts of this package. Internal: not exported from the index. */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, randomNormal, type SeededRandom } from '@moepp/tensors-core';

/**
 * Checks an expert input.
 *
 * @param op - e.g. `'FfnExpert(ffn-0).apply'`
 * @param x - the tensor given
 * @param dim - `D`
 * @throws ShapeError unless `x` is `[N, D]` float32
 */
export function checkTokens(op: string, x: tf.Tensor, dim: number): void {
  checkShape(op, 'x', x, [null, dim], 'float32');
}

/**
 * @param op - the component name for errors
 * @param argument - the field name
 * @param value - the value given
 * @returns the value
 * @throws ConfigError unless it is an integer >= 1
 */
export function checkPositiveInteger(op: string, argument: string, value: unknown): number {
  return checkNumber(op, argument, value, { integer: true, min: 1 });
}

/**
 * A trainable weight drawn from `N(0, std²)` with the given generator.
 *
 * @param shape - the weight's shape
 * @param rng - the generator
 * @param std - the standard deviation
 * @returns a new variable
 */
export function normalVariable(shape: readonly number[], rng: SeededRandom, std: number): tf.Variable {
  return tf.tidy(() => tf.variable(randomNormal(shape, rng, std), true));
}

/**
 * @param weights - variables
 * @returns the total number of elements
 */
export function countParameters(weights: Readonly<Record<string, tf.Variable>>): number {
  return Object.values(weights).reduce((total, variable) => total + variable.size, 0);
}
