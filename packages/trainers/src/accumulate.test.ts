import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { GradientAccumulator } from './accumulate.js';

describe('GradientAccumulator', () => {
  it('averages gradients over micro-batches; a name missing from one counts as zero there', async () => {
    const accumulator = new GradientAccumulator();
    const mean = await expectNoLeak(() => {
      accumulator.add(new Map([['a', tf.tensor1d([1, 2])], ['b', tf.tensor1d([4])]]));
      accumulator.add(new Map([['a', tf.tensor1d([3, 6])]]));
      expect(accumulator.count).toBe(2);
      return accumulator.takeMean();
    }, 2);
    expect(Array.from(mean.get('a')!.dataSync())).toEqual([2, 4]);
    expect(Array.from(mean.get('b')!.dataSync())).toEqual([2]);
    expect(accumulator.count).toBe(0);
    tf.dispose([...mean.values()]);
  });

  it('passes a single micro-batch through unchanged', () => {
    const accumulator = new GradientAccumulator();
    accumulator.add(new Map([['a', tf.tensor1d([1, 2])]]));
    const mean = accumulator.takeMean();
    expect(Array.from(mean.get('a')!.dataSync())).toEqual([1, 2]);
    tf.dispose([...mean.values()]);
  });

  it('rejects a shape change and an empty mean, freeing what it holds', async () => {
    const accumulator = new GradientAccumulator();
    await expectNoLeak(() => {
      accumulator.add(new Map([['a', tf.tensor1d([1, 2])]]));
      expect(() => accumulator.add(new Map([['a', tf.tensor1d([1, 2, 3])]]))).toThrow(/gradient 'a' has shape \[3\], earlier \[2\]/);
      accumulator.dispose();
    });
    expect(() => accumulator.takeMean()).toThrow(/no micro-batch was added/);
  });
});
