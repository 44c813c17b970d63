import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { createModel, presetConfig } from '@moepp/models';
import { validationBatches } from '@moepp/data';
import { evaluate } from './evaluate.js';
import { crossEntropyLoss } from './loss.js';

// 7 windows of T = 8 in batches of 3: 3, 3 and a short last batch of 1.
const stream = Int32Array.from({ length: 200 }, (_, i) => (i * 7 + (i >> 3)) % 32);
const batches = validationBatches(stream, { batchSize: 3, seqLen: 8, windows: 7 });

describe('evaluate', () => {
  it('gives the token-weighted mean cross-entropy, its exp and the argmax accuracy', async () => {
    const model = createModel(presetConfig('smoke', 'moepp', { vocabSize: 32 }), 3);
    expect(batches.map((b) => b.batchSize)).toEqual([3, 3, 1]);
    const result = await evaluate(model, batches); // the first call also fills the attention's position-table cache
    // By hand: per-batch means weighted by their token counts, and argmax hits.
    let lossSum = 0;
    let hits = 0;
    for (const batch of batches) {
      tf.tidy(() => {
        const inputs = tf.tensor2d(batch.inputs, [batch.batchSize, 8], 'int32');
        const targets = tf.tensor2d(batch.targets, [batch.batchSize, 8], 'int32');
        const logits = model.forward(inputs).logits;
        lossSum += (crossEntropyLoss(logits, targets).dataSync()[0] as number) * batch.batchSize * 8;
        const predicted = tf.argMax(logits, 2).dataSync();
        batch.targets.forEach((t, i) => (hits += predicted[i] === t ? 1 : 0));
      });
    }
    expect(result.tokens).toBe(56);
    expect(result.batches).toBe(3);
    expect(result.loss).toBeCloseTo(lossSum / 56, 5);
    expect(result.perplexity).toBeCloseTo(Math.exp(result.loss), 6);
    expect(result.accuracy).toBeCloseTo(hits / 56, 10);
    expect(result.ffnExpertsPerToken).toBeGreaterThan(0);
    expect(result.ffnExpertsPerToken).toBeLessThanOrEqual(2);
    // Deterministic and leak-free: the same numbers again, no tensor left behind.
    const again = await expectNoLeak(() => evaluate(model, batches));
    expect([again.loss, again.accuracy, again.ffnExpertsPerToken]).toEqual([result.loss, result.accuracy, result.ffnExpertsPerToken]);
    model.dispose();
  });

  it('reports no FFN experts per token for a dense model', async () => {
    const model = createModel(presetConfig('smoke', 'dense', { vocabSize: 32 }), 3);
    const result = await evaluate(model, batches.slice(0, 1));
    expect(result.ffnExpertsPerToken).toBeNull();
    expect(result.loss).toBeGreaterThan(0);
    model.dispose();
  });

  it('rejects an empty batch list and token ids outside the vocabulary', async () => {
    const model = createModel(presetConfig('smoke', 'dense', { vocabSize: 16 }), 3);
    await expect(evaluate(model, [])).rejects.toThrow(/at least one batch/);
    await expect(evaluate(model, batches)).rejects.toThrow(/evaluate: batch 0: token id 2\d at position \d+ is outside the model's vocabulary \[0, 16\)/);
    model.dispose();
  });
});
