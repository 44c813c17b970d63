import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { computeRoutingStats, readRoutingStats, readRoutingStatsSync } from './stats.js';

describe('computeRoutingStats', () => {
  it('counts kept assignments, drops, FFN experts per real token and entropy (hand example)', async () => {
    const inputs = {
      expertIndices: tf.tensor2d([[0, 3], [1, 2], [0, 1]], undefined, 'int32'),
      keepMask: tf.tensor2d([[1, 1], [1, 0], [1, 1]]),
      probabilities: tf.tensor2d([[0.5, 0, 0, 0.5], [0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0]]),
      tokenMask: tf.tensor1d([1, 1, 0]),
    };
    const stats = computeRoutingStats({ ...inputs, expertKinds: ['ffn', 'ffn', 'copy', 'zero'] });
    tf.dispose(Object.values(inputs));
    const values = await readRoutingStats(stats);
    expect(values.tokensPerExpert).toEqual([1, 1, 0, 1]);
    expect(values.droppedAssignments).toBe(1);
    expect(values.ffnExpertsPerToken).toBeCloseTo(1, 6); // token 0: 1 FFN (expert 0), token 1: 1 FFN (expert 1)
    expect(values.entropy).toBeCloseTo((Math.LN2 + Math.log(4)) / 2, 5);
    expect(readRoutingStatsSync(stats)).toEqual(values);
    tf.dispose(Object.values(stats));
  });

  it('counts tokens no expert picked as dropped for expert choice', () => {
    const inputs = {
      expertIndices: tf.tensor2d([[0, 1], [0, 1], [0, 1]], undefined, 'int32'),
      keepMask: tf.tensor2d([[1, 1], [0, 0], [0, 1]]),
      probabilities: tf.fill([3, 2], 0.5) as tf.Tensor2D,
    };
    const stats = computeRoutingStats({ ...inputs, expertKinds: ['ffn', 'ffn'], choice: 'expert' });
    tf.dispose(Object.values(inputs));
    expect(readRoutingStatsSync(stats)).toMatchObject({ tokensPerExpert: [1, 2], droppedAssignments: 1, ffnExpertsPerToken: 1 });
    tf.dispose(Object.values(stats));
  });

  it('does not leak', async () => {
    const inputs = {
      expertIndices: tf.tensor2d([[0], [1]], undefined, 'int32'),
      keepMask: tf.tensor2d([[1], [0]]),
      probabilities: tf.tensor2d([[0.5, 0.5], [0.5, 0.5]]),
    };
    const stats = await expectNoLeak(() => computeRoutingStats({ ...inputs, expertKinds: ['ffn', 'zero'] }), 4);
    tf.dispose([...Object.values(stats), ...Object.values(inputs)]);
  });
});
