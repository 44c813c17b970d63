/**
 * Helpers shared by the routers of this package: argument checks, differentiable selection of
 * top-k values without a TopK gradient, and weight creation. Internal: not exported from the index.
 *
 * Why the selection helpers exist: tfjs registers no gradient for `TopK`, `Greater`, `Equal` or
 * `GatherNd`, and the gradient of `gather` needs `UnsortedSegmentSum`, which stock wasm lacks. tfjs's
 * backprop visits every op between the variables and the loss, including ops that only produce
 * indices or masks, so selection must run on a *detached* copy of the scores ({@link detach}); the
 * selected values are then picked out of the differentiable tensor with a one-hot product
 * ({@link gatherColumns}), which only needs `Mul` and `Sum`.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkNumber,
  checkShape,
  ConfigError,
  describe,
  EXPERT_KINDS,
  randomNormal,
  ShapeError,
  type ExpertKind,
  type SeededRandom,
} from '@moepp/tensors-core';
import type { RouteOptions } from './types.js';

/**
 * A copy of `x` that is not on the gradient tape (tfjs has no public `stopGradient`). It reads the
 * values back (a memcpy on cpu and wasm), so use it on small routing tensors (`[N, E]`), not activations.
 *
 * @param x - any tensor
 * @returns a new tensor with the same values, shape and dtype, and no gradient history
 */
export function detach<T extends tf.Tensor>(x: T): T {
  return tf.tensor(x.dataSync(), x.shape, x.dtype) as T;
}

/**
 * One-hot encoding as float32, built by comparing with `range(depth)`. (`tf.oneHot` refuses
 * `depth < 2`, which a 1-expert layer needs, and `tf.oneHot(…, 'float32')` gives wrong values on stock
 * wasm.) No gradient: the indices are integers.
 *
 * @param indices - int32 indices of any shape `S`
 * @param depth - the number of classes, >= 1
 * @returns `[...S, depth]` float32
 */
export function oneHotFloat(indices: tf.Tensor, depth: number): tf.Tensor {
  return tf.tidy(() => tf.cast(tf.equal(tf.expandDims(indices, -1), tf.range(0, depth, 1, 'int32')), 'float32'));
}

/**
 * Picks `values[n, indices[n, k]]` differentiably (w.r.t. `values`) without `gather`/`GatherNd`.
 *
 * @param values - `[N, E]` float32
 * @param indices - `[N, K]` int32 in `[0, E)`
 * @param selection - `[N, K, E]` float32, `oneHotFloat(indices, E)` if the caller already has it
 * @returns `[N, K]` float32
 */
export function gatherColumns(
  values: tf.Tensor2D,
  indices: tf.Tensor2D,
  selection: tf.Tensor = oneHotFloat(indices, values.shape[1]),
): tf.Tensor2D {
  return tf.sum(tf.mul(selection, tf.expandDims(values, 1)), 2) as tf.Tensor2D;
}

/**
 * The inverse of {@link gatherColumns}: places `values[n, k]` at column `indices[n, k]` of an `[N, E]`
 * zero matrix, differentiably w.r.t. `values` (indices of one row must be distinct).
 *
 * @param values - `[N, K]` float32
 * @param indices - `[N, K]` int32 in `[0, E)`
 * @param numExperts - `E`
 * @param selection - `[N, K, E]` float32, `oneHotFloat(indices, E)` if the caller already has it
 * @returns `[N, E]` float32
 */
export function scatterColumns(
  values: tf.Tensor2D,
  indices: tf.Tensor2D,
  numExperts: number,
  selection: tf.Tensor = oneHotFloat(indices, numExperts),
): tf.Tensor2D {
  return tf.sum(tf.mul(selection, tf.expandDims(values, 2)), 1) as tf.Tensor2D;
}

/**
 * Runs `fn` inside `tf.tidy` and keeps every tensor reachable from its (record) result.
 *
 * @param fn - builds the result
 * @returns what `fn` returned
 */
export function tidyRecord<T>(fn: () => T): T {
  return tf.tidy(() => fn() as unknown as tf.TensorContainer) as unknown as T;
}

/**
 * Validates `D` or `E`-like sizes.
 *
 * @param op - the component name for errors
 * @param argument - the field name
 * @param value - the value given
 * @returns the value
 * @throws ConfigError if it is not an integer >= 1
 */
export function checkPositiveInteger(op: string, argument: string, value: unknown): number {
  return checkNumber(op, argument, value, { integer: true, min: 1 });
}

/**
 * Validates `K` against `E`.
 *
 * @param op - the component name for errors
 * @param topK - `K`
 * @param numExperts - `E`
 * @returns `K`
 * @throws ConfigError if `K` is not an integer in `[1, E]`
 */
export function checkTopK(op: string, topK: unknown, numExperts: number): number {
  const k = checkNumber(op, 'topK', topK, { integer: true, min: 1 });
  if (k > numExperts) {
    throw new ConfigError(`${op}: 'topK' must be <= numExperts (${numExperts}), got ${k}`);
  }
  return k;
}

/**
 * Validates a per-expert kind list, defaulting to all `ffn`.
 *
 * @param op - the component name for errors
 * @param kinds - the list given, or undefined
 * @param numExperts - `E`
 * @returns a frozen copy of the list
 * @throws ConfigError if the length is not `E` or an entry is not an {@link ExpertKind}
 */
export function checkExpertKinds(op: string, kinds: readonly ExpertKind[] | undefined, numExperts: number): readonly ExpertKind[] {
  if (kinds === undefined) return Object.freeze(new Array<ExpertKind>(numExperts).fill('ffn'));
  if (!Array.isArray(kinds) || kinds.length !== numExperts) {
    throw new ConfigError(
      `${op}: 'expertKinds' must be an array of numExperts (${numExperts}) expert kinds, got ${Array.isArray(kinds) ? `length ${kinds.length}` : describe(kinds)}`,
    );
  }
  kinds.forEach((kind, i) => {
    if (!EXPERT_KINDS.includes(kind)) {
      throw new ConfigError(
        `${op}: 'expertKinds[${i}]' must be one of ${EXPERT_KINDS.map((k) => `'${k}'`).join(', ')}, got ${describe(kind)}`,
      );
    }
  });
  return Object.freeze([...kinds]);
}

/**
 * Checks the tensors of a route call.
 *
 * @param op - e.g. `'TopKRouter.route'`
 * @param x - `[N, D]` float32
 * @param dim - `D`
 * @param numExperts - `E`
 * @param options - the route options (checks `previousLogits` `[N, E]` and `tokenMask` `[N]`)
 * @returns `N`
 * @throws ShapeError naming the argument, the expected and the actual shape
 */
export function checkRouteInputs(op: string, x: tf.Tensor, dim: number, numExperts: number, options: RouteOptions): number {
  const bindings = checkShape(op, 'x', x, ['N', dim], 'float32');
  const numTokens = bindings.get('N') as number;
  if (numTokens < 1) throw new ShapeError(`${op}: argument 'x' must have at least one token (shape [N, ${dim}], N >= 1), got [${x.shape.join(', ')}]`);
  if (options.previousLogits !== undefined && options.previousLogits !== null) {
    checkShape(op, 'previousLogits', options.previousLogits, ['N', numExperts], 'float32', bindings);
  }
  if (options.tokenMask !== undefined) checkShape(op, 'tokenMask', options.tokenMask, ['N'], 'float32', bindings);
  return numTokens;
}

/**
 * A trainable `[in, out]` weight drawn from `N(0, std²)`, or zeros when `std` is 0.
 *
 * @param shape - the weight's shape
 * @param rng - the generator
 * @param std - the standard deviation
 * @returns a new variable
 */
export function createWeight(shape: readonly number[], rng: SeededRandom, std: number): tf.Variable {
  return tf.tidy(() => tf.variable(std === 0 ? tf.zeros([...shape]) : randomNormal(shape, rng, std), true));
}

/**
 * `[E]` float32 indicator of the experts of a given kind.
 *
 * @param kinds - the per-expert kinds
 * @param predicate - which kinds to mark
 * @returns `[E]` float32 0/1
 */
export function kindIndicator(kinds: readonly ExpertKind[], predicate: (kind: ExpertKind) => boolean): tf.Tensor1D {
  return tf.tensor1d(kinds.map((kind) => (predicate(kind) ? 1 : 0)), 'float32');
}

/**
 * The top-k scores of each row: the indices are picked on a detached copy (no TopK gradient needed),
 * the values are gathered from `scores` differentiably.
 *
 * @param scores - `[N, E]` float32, differentiable
 * @param topK - `K`
 * @returns indices `[N, K]` int32 (largest first), the selected scores `[N, K]` (differentiable) and
 *   `selection`, the `[N, K, E]` float32 one-hot of the indices, for the zero-expert gate rule, the
 *   load-balance loss and the statistics to share (one one-hot per route call)
 */
export function selectTopK(scores: tf.Tensor2D, topK: number): { indices: tf.Tensor2D; values: tf.Tensor2D; selection: tf.Tensor3D } {
  const indices = tf.topk(detach(scores), topK).indices as tf.Tensor2D; // [N, K] int32
  const selection = oneHotFloat(indices, scores.shape[1]) as tf.Tensor3D; // [N, K, E] float32
  return { indices, values: gatherColumns(scores, indices, selection), selection };
}
