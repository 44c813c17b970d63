import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { planDispatch, gatherRows, scatterAddRows } from './dispatch.js';
import { ShapeError } from './errors.js';
import { checkGradients, expectNoLeak, expectTensorClose } from './testing.js';

const backends = ['cpu', 'wasm'] as const;

describe.each(backends)('dispatch on %s', (backend) => {
  let previous: string;
  beforeEach(async () => {
    previous = tf.getBackend();
    await tf.setBackend(backend);
  });
  afterEach(async () => {
    await tf.setBackend(previous);
  });

  it('groups assignments by expert in stable slot order', async () => {
    // 4 tokens, top-2, 3 experts. Flat slots: t0:(2,0) t1:(0,1) t2:(1,2) t3:(0,2)
    const indices = tf.tensor2d([[2, 0], [0, 1], [1, 2], [0, 2]], [4, 2], 'int32');
    const plan = await expectNoLeak(() => planDispatch(indices, 3), 8); // 2 + 2·E tensors
    expect(plan.counts).toEqual([3, 2, 3]);
    expect(plan.tokenIds.map((t) => Array.from(t.dataSync()))).toEqual([[0, 1, 3], [1, 2], [0, 2, 3]]);
    expect(plan.slotIds.map((t) => Array.from(t.dataSync()))).toEqual([[1, 2, 6], [3, 4], [0, 5, 7]]);
    expect(Array.from(plan.allTokenIds.dataSync())).toEqual([0, 1, 3, 1, 2, 0, 2, 3]);
    plan.dispose();
    indices.dispose();
  });

  it('leaves dropped assignments out of every group', () => {
    const indices = tf.tensor2d([[2, 0], [0, 1], [1, 2], [0, 2]], [4, 2], 'int32');
    const keep = tf.tensor2d([[1, 1], [0, 1], [1, 0], [1, 1]], [4, 2], 'float32');
    const plan = planDispatch(indices, 3, keep);
    // kept: t0 -> {2, 0}, t1 -> {1}, t2 -> {1}, t3 -> {0, 2}
    expect(plan.counts).toEqual([2, 2, 2]);
    expect(plan.tokenIds.map((t) => Array.from(t.dataSync()))).toEqual([[0, 3], [1, 2], [0, 3]]);
    expect(plan.allSlotIds.shape).toEqual([6]);
    plan.dispose();
    tf.dispose([indices, keep]);
  });

  it('groupIds joins the groups of the experts asked for, in that order, as two new tensors', async () => {
    const indices = tf.tensor2d([[2, 0], [0, 1], [1, 2], [0, 2]], [4, 2], 'int32');
    const keep = tf.tensor2d([[1, 1], [0, 1], [1, 1], [1, 1]], [4, 2], 'float32');
    const plan = planDispatch(indices, 3, keep);
    const joined = await expectNoLeak(() => plan.groupIds([2, 0]), 2);
    // expert 2: slots 0, 5, 7 (tokens 0, 2, 3); expert 0: slots 1, 6 (tokens 0, 3) (slot 2 dropped)
    expect(Array.from(joined.slotIds.dataSync())).toEqual([0, 5, 7, 1, 6]);
    expect(Array.from(joined.tokenIds.dataSync())).toEqual([0, 2, 3, 0, 3]);
    const none = plan.groupIds([]);
    expect(none.tokenIds.shape).toEqual([0]);
    expect(() => plan.groupIds([3])).toThrow('planDispatch: groupIds: expert 3 is outside [0, 3)');
    tf.dispose([joined.tokenIds, joined.slotIds, none.tokenIds, none.slotIds, indices, keep]);
    plan.dispose();
  });

  it('matches a reference grouping on a random routing with drops', () => {
    const [numTokens, topK, numExperts] = [97, 3, 7];
    let seed = 5;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const experts = Array.from({ length: numTokens * topK }, () => Math.floor(next() * numExperts));
    const kept = experts.map(() => (next() < 0.8 ? 1 : 0));
    const indices = tf.tensor2d(experts, [numTokens, topK], 'int32');
    const keep = tf.tensor2d(kept, [numTokens, topK], 'float32');
    const plan = planDispatch(indices, numExperts, keep);
    for (let e = 0; e < numExperts; e++) {
      const slots = experts.flatMap((x, slot) => (x === e && kept[slot] === 1 ? [slot] : []));
      expect(plan.counts[e]).toBe(slots.length);
      expect(Array.from(plan.slotIds[e]!.dataSync())).toEqual(slots);
      expect(Array.from(plan.tokenIds[e]!.dataSync())).toEqual(slots.map((slot) => Math.floor(slot / topK)));
    }
    plan.dispose();
    tf.dispose([indices, keep]);
  });

  it('handles an expert with no tokens', () => {
    const indices = tf.tensor2d([[0], [0], [2]], [3, 1], 'int32');
    const plan = planDispatch(indices, 4);
    expect(plan.counts).toEqual([2, 0, 1, 0]);
    expect(plan.tokenIds[1]?.shape).toEqual([0]);
    plan.dispose();
    indices.dispose();
  });

  it('rejects indices out of range and wrong dtypes, naming the argument', () => {
    const bad = tf.tensor2d([[0, 3]], [1, 2], 'int32');
    expect(() => planDispatch(bad, 3)).toThrow(/'expertIndices' must lie in \[0, 3\), found 3/);
    const floats = tf.tensor2d([[0, 1]], [1, 2], 'float32');
    expect(() => planDispatch(floats, 3)).toThrow(ShapeError);
    const keep = tf.ones([2, 2]) as tf.Tensor2D;
    expect(() => planDispatch(tf.tensor2d([[0, 1]], [1, 2], 'int32'), 3, keep)).toThrow(/'keepMask' must have shape \[1, 2\]/);
    tf.dispose([bad, floats, keep]);
  });

  it('gather -> scale -> scatter-add equals the dense computation, values and gradients', () => {
    const x = tf.tensor2d([[1, 2], [3, 4], [5, 6]]); // [N=3, D=2]
    const ids = tf.tensor1d([2, 0, 2], 'int32'); // token 2 twice
    const scale = tf.tensor2d([[0.5], [2], [1]]); // [M, 1]
    const out = tf.tidy(() => scatterAddRows(gatherRows(x, ids).mul(scale) as tf.Tensor2D, ids, 3));
    // row 0: 2·[1,2]; row 1: 0; row 2: 0.5·[5,6] + 1·[5,6]
    expectTensorClose(out, [[2, 4], [0, 0], [7.5, 9]]);
    checkGradients(
      (xs: tf.Tensor, s: tf.Tensor) => scatterAddRows(gatherRows(xs as tf.Tensor2D, ids).mul(s) as tf.Tensor2D, ids, 3).square().sum(),
      [x, scale],
    );
    tf.dispose([x, ids, scale, out]);
  });
});
