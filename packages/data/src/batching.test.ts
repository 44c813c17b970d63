import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { TrainBatcher, countWindows, validationBatches, type TokenBatch } from './batching.js';

/** A stream whose token at position p is p, so every window is readable by hand. */
const positions = (length: number): Int32Array => Int32Array.from({ length }, (_, i) => i);

const rows = (batch: TokenBatch, field: 'tokens' | 'inputs' | 'targets'): number[][] => {
  const width = field === 'tokens' ? batch.seqLen + 1 : batch.seqLen;
  return Array.from({ length: batch.batchSize }, (_, b) => Array.from(batch[field].subarray(b * width, (b + 1) * width)));
};

describe('windows', () => {
  it('cuts ⌊(L − 1) / T⌋ windows of T + 1 tokens with stride T', () => {
    expect(countWindows(129, 128)).toBe(1);
    expect(countWindows(128, 128)).toBe(0);
    expect(countWindows(21, 4)).toBe(5); // windows start at 0, 4, 8, 12, 16; the last ends at 20
    expect(countWindows(24, 4)).toBe(5); // tokens 21–23 are never targets
  });
});

describe('TrainBatcher', () => {
  it('gives [B, T+1] windows whose targets are the inputs shifted by one', () => {
    const batcher = new TrainBatcher(positions(41), { batchSize: 3, seqLen: 4, seed: 0 });
    expect(batcher.windowCount).toBe(10);
    expect(batcher.batchesPerEpoch).toBe(3);
    const batch = batcher.next();
    expect(batch.shape).toEqual([3, 5]);
    expect(batch.tokens).toHaveLength(15);
    expect(batch.inputs).toHaveLength(12);
    expect(batch.targets).toHaveLength(12);
    rows(batch, 'tokens').forEach((window, b) => {
      const w = batch.windowIndices[b] as number;
      expect(window).toEqual([4 * w, 4 * w + 1, 4 * w + 2, 4 * w + 3, 4 * w + 4]);
      expect(rows(batch, 'inputs')[b]).toEqual(window.slice(0, 4));
      expect(rows(batch, 'targets')[b]).toEqual(window.slice(1));
    });
  });

  it('visits each window at most once per epoch, in a seeded order that changes per epoch', () => {
    const batcher = new TrainBatcher(positions(41), { batchSize: 3, seqLen: 4, seed: 7 });
    const epochs: number[][] = [[], []];
    for (let i = 0; i < 6; i++) {
      const batch = batcher.next();
      epochs[batch.epoch]?.push(...batch.windowIndices);
    }
    for (const seen of epochs) {
      expect(seen).toHaveLength(9); // 3 full batches; one of the 10 windows sits out
      expect(new Set(seen).size).toBe(9);
    }
    expect(epochs[0]).not.toEqual(epochs[1]);
    const again = new TrainBatcher(positions(41), { batchSize: 3, seqLen: 4, seed: 7 });
    expect(Array.from(again.next().windowIndices)).toEqual(epochs[0]?.slice(0, 3));
    const otherSeed = new TrainBatcher(positions(41), { batchSize: 3, seqLen: 4, seed: 8 });
    expect(Array.from(otherSeed.next().windowIndices)).not.toEqual(epochs[0]?.slice(0, 3));
  });

  it('resumes from a saved cursor exactly as an uninterrupted run, across epochs', () => {
    const stream = positions(1001);
    const config = { batchSize: 4, seqLen: 8, seed: 123 };
    const uninterrupted = new TrainBatcher(stream, config);
    const expected = Array.from({ length: 100 }, () => Array.from(uninterrupted.next().windowIndices));
    expect(new TrainBatcher(stream, config).batchesPerEpoch).toBe(31); // 100 batches span 4 epochs

    for (const stopAt of [0, 1, 30, 31, 62, 77]) {
      const first = new TrainBatcher(stream, config);
      for (let i = 0; i < stopAt; i++) first.next();
      const saved = JSON.stringify(first.getCursor());
      const resumed = new TrainBatcher(stream, { ...config, cursor: JSON.parse(saved) });
      const rest = Array.from({ length: 100 - stopAt }, () => Array.from(resumed.next().windowIndices));
      expect(rest, `stopped after ${stopAt}`).toEqual(expected.slice(stopAt));
    }
  });

  it('checks B, T, the stream and the cursor', () => {
    expect(() => new TrainBatcher(positions(100), { batchSize: 1, seqLen: 128, seed: 0 })).toThrow(ConfigError);
    expect(() => new TrainBatcher(positions(100), { batchSize: 1, seqLen: 128, seed: 0 })).toThrow(
      'TrainBatcher: stream of 100 tokens is too short for one window of T+1 = 129 tokens',
    );
    expect(() => new TrainBatcher(positions(100), { batchSize: 1, seqLen: 0, seed: 0 })).toThrow(/'seqLen' must be an integer >= 1, got 0/);
    expect(() => new TrainBatcher(positions(100), { batchSize: 0, seqLen: 4, seed: 0 })).toThrow(/'batchSize' must be an integer >= 1, got 0/);
    expect(() => new TrainBatcher(positions(41), { batchSize: 11, seqLen: 4, seed: 0 })).toThrow(
      /stream of 41 tokens holds 10 windows of T\+1 = 5 tokens, fewer than batchSize = 11/,
    );
    expect(() => new TrainBatcher([1, 2, 3] as unknown as Int32Array, { batchSize: 1, seqLen: 1, seed: 0 })).toThrow(/must be an Int32Array/);
    const batcher = new TrainBatcher(positions(41), { batchSize: 3, seqLen: 4, seed: 0 });
    expect(() => batcher.setCursor({ ...batcher.getCursor(), position: 11 })).toThrow(/'position' must be an integer >= 0 <= 10, got 11/);
  });
});

describe('validationBatches', () => {
  it('takes the first M windows in order, the last batch holding the remainder', () => {
    const batches = validationBatches(positions(41), { batchSize: 3, seqLen: 4, windows: 7 });
    expect(batches.map((b) => b.shape)).toEqual([
      [3, 5],
      [3, 5],
      [1, 5],
    ]);
    expect(batches.flatMap((b) => Array.from(b.windowIndices))).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(rows(batches[2] as TokenBatch, 'tokens')).toEqual([[24, 25, 26, 27, 28]]);
    expect(validationBatches(positions(41), { batchSize: 3, seqLen: 4, windows: 7 })).toEqual(batches);
  });

  it('says how many windows the stream holds when M is too large', () => {
    expect(() => validationBatches(positions(41), { batchSize: 3, seqLen: 4, windows: 11 })).toThrow(
      "validationBatches: 'windows' is 11 but the validation stream of 41 tokens holds only 10 windows of T+1 = 5 tokens",
    );
    expect(() => validationBatches(positions(41), { batchSize: 3, seqLen: 4, windows: 0 })).toThrow(/'windows' must be an integer >= 1, got 0/);
  });
});
