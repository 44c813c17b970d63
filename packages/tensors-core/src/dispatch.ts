/**
 * Dispatch primitives for sparse MoE layers: group the (token, slot) assignments by expert, gather the
 * rows routed to one expert, and scatter-add the experts' outputs back into token order.
 *
 * Grouping runs on the host: the `[N, K]` expert indices (and keep mask) are read back once and
 * grouped by a counting sort. The host needs the E group sizes anyway (each expert's batch has a
 * data-dependent shape), and reading `N·K` numbers costs no more than reading E on cpu and wasm; on the
 * tensors it took a full sort, a segment sum and `2·E` slices per layer, forward and backward.
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
  /**
   * The groups of several experts, one after the other in the order given, as two new tensors (the
   * caller owns them): what `concat` of their `tokenIds` / `slotIds` gives, without the concat.
   *
   * @param experts - expert indices in `[0, E)`
   * @returns `[Σ counts[e]]` int32 token rows and flat slots
   * @throws RangeError for an expert outside `[0, E)`
   */
  groupIds(experts: readonly number[]): { readonly tokenIds: tf.Tensor1D; readonly slotIds: tf.Tensor1D };
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
  const experts = expertIndices.dataSync() as Int32Array; // [N·K]
  const keep = keepMask ? (keepMask.dataSync() as Float32Array) : null; // [N·K]

  // Counting sort, stable: expert ascending, then flat slot ascending. A dropped slot is in no group.
  const counts = new Array<number>(numExperts).fill(0);
  for (let slot = 0; slot < slots; slot++) {
    const expert = experts[slot] as number;
    if (!(expert >= 0 && expert < numExperts)) throw new RangeError(`${op}: 'expertIndices' must lie in [0, ${numExperts}), found ${expert}`);
    if (keep === null || (keep[slot] as number) > 0) counts[expert] = (counts[expert] as number) + 1;
  }
  const starts = new Array<number>(numExperts + 1).fill(0);
  counts.forEach((count, e) => (starts[e + 1] = (starts[e] as number) + count));
  const kept = starts[numExperts] as number;
  const sortedSlots = new Int32Array(kept);
  const next = starts.slice(0, numExperts);
  for (let slot = 0; slot < slots; slot++) {
    if (keep !== null && !((keep[slot] as number) > 0)) continue;
    const expert = experts[slot] as number;
    sortedSlots[next[expert] as number] = slot;
    next[expert] = (next[expert] as number) + 1;
  }
  const sortedTokens = sortedSlots.map((slot) => Math.floor(slot / topK));
  const group = (values: Int32Array, e: number) => values.subarray(starts[e] as number, starts[e + 1] as number);

  const allSlotIds = tf.tensor1d(sortedSlots, 'int32'); // [M]
  const allTokenIds = tf.tensor1d(sortedTokens, 'int32'); // [M]
  const tokenIds = counts.map((_, e) => tf.tensor1d(group(sortedTokens, e), 'int32'));
  const slotIds = counts.map((_, e) => tf.tensor1d(group(sortedSlots, e), 'int32'));
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
    groupIds: (chosen) => {
      chosen.forEach((e) => {
        if (!(Number.isInteger(e) && e >= 0 && e < numExperts)) throw new RangeError(`${op}: groupIds: expert ${e} is outside [0, ${numExperts})`);
      });
      const join = (values: Int32Array): Int32Array => {
        const out = new Int32Array(chosen.reduce((total, e) => total + (counts[e] as number), 0));
        let at = 0;
        for (const e of chosen) {
          out.set(group(values, e), at);
          at += counts[e] as number;
        }
        return out;
      };
      return { tokenIds: tf.tensor1d(join(sortedTokens), 'int32'), slotIds: tf.tensor1d(join(sortedSlots), 'int32') };
    },
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
