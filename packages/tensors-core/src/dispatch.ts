/**
 * Dispatch primitives for sparse MoE layers: group the (token, slot) assignments by expert, gather the
 * rows routed to one expert, and scatter-add the experts' outputs back into token order.
 *
 * Grouping runs on tensors (a stable sort by expert index); the host reads back only the E group sizes,
 * which it needs because each expert's batch has a data-dependent shape.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, checkShapes } from './errors.js';

/** Which token rows go to which expert, in one stable order (by expert, then by flat slot `n·K + k`). */
export interface DispatchPlan {
  /** E, the number of experts. */
  readonly numExperts: number;
  /** K, the assignments per token. */
  readonly topK: number;
  /** N, the number of tokens. */
  readonly numTokens: number;
  /** Kept assignments per expert (length E); a dropped or masked assignment is in no group. */
  readonly counts: readonly number[];
  /** Per expert: the token row of each assignment, `[counts[e]]` int32. */
  readonly tokenIds: readonly tf.Tensor1D[];
  /** Per expert: the flat slot `n·K + k` of each assignment, `[counts[e]]` int32 (index into `[N·K]` gates). */
  readonly slotIds: readonly tf.Tensor1D[];
  /** All kept assignments' token rows in group order, `[sum(counts)]` int32. */
  readonly allTokenIds: tf.Tensor1D;
  /** All kept assignments' flat slots in group order, `[sum(counts)]` int32. */
  readonly allSlotIds: tf.Tensor1D;
  /** Frees the plan's tensors (call it, or build the plan inside `tf.tidy`). */
  dispose(): void;
}

/**
 * Groups assignments by expert.
 *
 * @param expertIndices - `[N, K]` int32, the expert of each token's k-th slot
 * @param numExperts - E; indices must lie in `[0, E)`
 * @param keepMask - optional `[N, K]` float32, 1 to keep an assignment, 0 to drop it (capacity, padding)
 * @returns the plan (its tensors are new; dispose them or call inside `tf.tidy`)
 * @throws {@link ShapeError} for a wrong shape or dtype, {@link ConfigError} for a bad E or an index out of range
 */
export function planDispatch(expertIndices: tf.Tensor2D, numExperts: number, keepMask?: tf.Tensor2D): DispatchPlan {
  const op = 'planDispatch';
  checkNumber(op, 'numExperts', numExperts, { integer: true, min: 1 });
  checkShape(op, 'expertIndices', expertIndices, ['N', 'K'], 'int32');
  if (keepMask) checkShapes(op, { expertIndices: [expertIndices, ['N', 'K']], keepMask: [keepMask, ['N', 'K'], 'float32'] });
  const [numTokens, topK] = expertIndices.shape;
  const slots = numTokens * topK;

  const { sortedSlots, countsTensor, rangeOk } = tf.tidy(() => {
    const flatExperts = expertIndices.reshape([slots]); // [N·K] int32
    const inRange = tf.logicalAnd(tf.greaterEqual(flatExperts, 0), tf.less(flatExperts, numExperts)).all();
    // A dropped slot is sorted after every expert's group (key E).
    const keys = keepMask
      ? tf.where(tf.greater(keepMask.reshape([slots]), 0), flatExperts, tf.fill([slots], numExperts, 'int32'))
      : flatExperts; // [N·K] int32
    // tf.topk is stable (equal values keep index order), so sorting -key gives experts ascending, slots ascending.
    const order = tf.topk(tf.neg(keys.toFloat()), slots, true).indices; // [N·K] int32
    const counts = tf.unsortedSegmentSum(tf.onesLike(keys).toFloat(), keys as tf.Tensor1D, numExperts + 1); // [E + 1]
    return { sortedSlots: order, countsTensor: counts, rangeOk: inRange };
  });
  const valid = rangeOk.dataSync()[0] === 1;
  const countValues = Array.from(countsTensor.dataSync(), (c) => Math.round(c));
  rangeOk.dispose();
  countsTensor.dispose();
  if (!valid) {
    sortedSlots.dispose();
    const values = expertIndices.dataSync();
    const bad = values.find((v) => v < 0 || v >= numExperts);
    throw new RangeError(`${op}: 'expertIndices' must lie in [0, ${numExperts}), found ${bad}`);
  }
  const counts = countValues.slice(0, numExperts);
  const kept = counts.reduce((a, b) => a + b, 0);

  const allSlotIds = tf.tidy(() => sortedSlots.slice([0], [kept]) as tf.Tensor1D); // [M] int32
  sortedSlots.dispose();
  const allTokenIds = tf.tidy(() => tf.floorDiv(allSlotIds, tf.scalar(topK, 'int32')) as tf.Tensor1D); // [M] int32
  const tokenIds: tf.Tensor1D[] = [];
  const slotIds: tf.Tensor1D[] = [];
  let offset = 0;
  for (const count of counts) {
    tokenIds.push(allTokenIds.slice([offset], [count]));
    slotIds.push(allSlotIds.slice([offset], [count]));
    offset += count;
  }
  const tensors = [allSlotIds, allTokenIds, ...tokenIds, ...slotIds];
  return {
    numExperts,
    topK,
    numTokens,
    counts,
    tokenIds,
    slotIds,
    allTokenIds,
    allSlotIds,
    dispose: () => tf.dispose(tensors),
  };
}

/**
 * Gathers the rows routed to one expert.
 *
 * @param x - `[N, D]` token states
 * @param rowIds - `[M]` int32 token rows (from {@link DispatchPlan.tokenIds})
 * @returns `[M, D]`, differentiable with respect to `x` (its gradient is an unsorted segment sum)
 * @throws {@link ShapeError} for wrong ranks or dtypes
 */
export function gatherRows(x: tf.Tensor2D, rowIds: tf.Tensor1D): tf.Tensor2D {
  checkShape('gatherRows', 'x', x, [null, null]);
  checkShape('gatherRows', 'rowIds', rowIds, [null], 'int32');
  return tf.gather(x, rowIds) as tf.Tensor2D;
}

/**
 * Adds rows into a zero `[N, D]` output at the given row positions (repeated positions add up).
 *
 * @param rows - `[M, D]` expert outputs, already scaled by their gates
 * @param rowIds - `[M]` int32 destination rows in `[0, N)`
 * @param numRows - N
 * @returns `[N, D]`, differentiable with respect to `rows`
 * @throws {@link ShapeError} when `rows` and `rowIds` disagree on M
 */
export function scatterAddRows(rows: tf.Tensor2D, rowIds: tf.Tensor1D, numRows: number): tf.Tensor2D {
  checkNumber('scatterAddRows', 'numRows', numRows, { integer: true, min: 0 });
  checkShapes('scatterAddRows', { rows: [rows, ['M', null]], rowIds: [rowIds, ['M'], 'int32'] });
  return tf.unsortedSegmentSum(rows, rowIds, numRows) as tf.Tensor2D;
}
