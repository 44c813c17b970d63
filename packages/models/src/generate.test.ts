import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { createModel, type DecoderLM } from './decoder.js';
import { generate } from './generate.js';
import { sampleToken, type SamplingOptions } from './sampling.js';

const VOCAB = 13;
const tinyMoepp = {
  vocabSize: VOCAB,
  hiddenSize: 16,
  intermediateSize: 12,
  numLayers: 2,
  numHeads: 2,
  maxSeqLen: 8,
  initializerRange: 0.5, // large weights: logits far from uniform, so greedy and sampling are easy to tell apart
  moe: { experts: { ffn: 2, zero: 1, copy: 1, constant: 1 } },
} as const;

/** The last position's logits for `tokens` (all of them: the caller keeps T <= maxSeqLen). */
function lastLogits(model: DecoderLM, tokens: readonly number[]): Float32Array {
  const logits = tf.tidy(() => {
    const out = model.forward(tf.tensor2d([...tokens], [1, tokens.length], 'int32')).logits; // [1, T, V]
    return out.slice([0, tokens.length - 1, 0], [1, 1, VOCAB]).reshape([VOCAB]);
  });
  const values = logits.dataSync() as Float32Array;
  logits.dispose();
  return values;
}

function argmax(values: Float32Array): number {
  let best = 0;
  values.forEach((v, i) => {
    if (v > (values[best] as number)) best = i;
  });
  return best;
}

/** Generation written out step by step with model.forward, the window and sampleToken. */
function handGenerate(model: DecoderLM, prompt: number[], steps: number, choose: (logits: Float32Array) => number): number[] {
  const tokens = [...prompt];
  for (let step = 0; step < steps; step++) tokens.push(choose(lastLogits(model, tokens.slice(-model.config.maxSeqLen))));
  return tokens.slice(prompt.length);
}

describe('generate', () => {
  it('greedy: deterministic, draws nothing, equals the argmax of model.forward step by step', () => {
    const model = createModel(tinyMoepp, 1);
    const rng = new SeededRandom(4);
    const state = rng.getState();
    const options = { maxNewTokens: 6, sampling: { strategy: 'greedy' } as const, rng };
    const first = generate(model, [3, 1, 4], options);
    const second = generate(model, Int32Array.from([3, 1, 4]), options);
    expect(first.newTokens).toHaveLength(6);
    expect(first.tokens).toEqual([3, 1, 4, ...first.newTokens]);
    expect(second).toEqual(first);
    expect(rng.getState()).toEqual(state);
    expect(first.newTokens).toEqual(handGenerate(model, [3, 1, 4], 6, argmax));
    // Not a constant sequence, or the comparison would prove little.
    expect(new Set(first.newTokens).size).toBeGreaterThan(1);
    model.dispose();
  });

  it('sampling: reproducible with the same seed, one draw per token, matching sampleToken by hand', () => {
    const model = createModel(tinyMoepp, 2);
    const sampling: SamplingOptions = { strategy: 'sample', temperature: 1.5, topK: 8 };
    const run = (seed: number) => generate(model, [5], { maxNewTokens: 7, sampling, rng: new SeededRandom(seed) }).newTokens;
    const a = run(10);
    expect(run(10)).toEqual(a);
    expect([run(11), run(12), run(13)].some((other) => other.join() !== a.join())).toBe(true);
    const handRng = new SeededRandom(10);
    expect(a).toEqual(handGenerate(model, [5], 7, (logits) => sampleToken(logits, sampling, handRng)));
    model.dispose();
  });

  it('stops after the first stop token, which is included', () => {
    const model = createModel(tinyMoepp, 3);
    const rng = new SeededRandom(0);
    const full = generate(model, [2, 7], { maxNewTokens: 6, sampling: { strategy: 'greedy' }, rng }).newTokens;
    const stop = full[2]!;
    const cut = full.indexOf(stop) + 1;
    const stopped = generate(model, [2, 7], { maxNewTokens: 6, sampling: { strategy: 'greedy' }, rng, stopTokens: [stop] });
    expect(stopped.newTokens).toEqual(full.slice(0, cut));
    expect(stopped.newTokens.length).toBeLessThanOrEqual(3);
    expect(stopped.tokens).toEqual([2, 7, ...stopped.newTokens]);
    // A stop token in the prompt does not stop anything.
    const fromStop = generate(model, [2, 7, ...full.slice(0, cut)], { maxNewTokens: 2, sampling: { strategy: 'greedy' }, rng, stopTokens: [stop] });
    expect(fromStop.newTokens.length).toBeGreaterThan(0);
    model.dispose();
  });

  it('windows a prompt longer than maxSeqLen to the last maxSeqLen tokens', () => {
    const model = createModel(tinyMoepp, 4);
    const prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]; // 12 > maxSeqLen 8
    const out = generate(model, prompt, { maxNewTokens: 4, sampling: { strategy: 'greedy' }, rng: new SeededRandom(0) });
    expect(out.newTokens).toEqual(handGenerate(model, prompt, 4, argmax));
    // Only the window matters: a different beginning gives the same continuation.
    const other = generate(model, [0, 0, 0, 0, ...prompt.slice(4)], { maxNewTokens: 4, sampling: { strategy: 'greedy' }, rng: new SeededRandom(0) });
    expect(other.newTokens).toEqual(out.newTokens);
    model.dispose();
  });

  it('leaks no tensors', async () => {
    const model = createModel(tinyMoepp, 5);
    const options = { maxNewTokens: 10, sampling: { strategy: 'sample', topP: 0.9 } as const, rng: new SeededRandom(1) };
    generate(model, [1, 2], options); // warm-up: attention caches its position tables on first use
    await expectNoLeak(() => generate(model, [1, 2], options));
    model.dispose();
  });

  it('validates the prompt, maxNewTokens, the rng, stop tokens and the sampling options', () => {
    const model = createModel(tinyMoepp, 6);
    const ok = { maxNewTokens: 2, sampling: { strategy: 'greedy' } as const, rng: new SeededRandom(0) };
    expect(() => generate(model, [], ok)).toThrow(/'prompt' must hold at least one token/);
    expect(() => generate(model, [1, VOCAB], ok)).toThrow(/'prompt\[1\]' must be a token id, an integer in \[0, 13\), got 13/);
    expect(() => generate(model, [-1], ok)).toThrow(ConfigError);
    expect(() => generate(model, [1.5], ok)).toThrow(ConfigError);
    expect(() => generate(model, [Number.NaN], ok)).toThrow(ConfigError);
    expect(() => generate(model, [1], { ...ok, maxNewTokens: -1 })).toThrow(/maxNewTokens/);
    expect(() => generate(model, [1], { ...ok, maxNewTokens: 1.5 })).toThrow(/maxNewTokens/);
    expect(() => generate(model, [1], { ...ok, rng: undefined as unknown as SeededRandom })).toThrow(/'rng'/);
    expect(() => generate(model, [1], { ...ok, stopTokens: [99] })).toThrow(/'stopTokens\[0\]'/);
    // Sampling options are checked up front, even when nothing is generated.
    expect(() => generate(model, [1], { ...ok, maxNewTokens: 0, sampling: { strategy: 'sample', topK: VOCAB + 1 } })).toThrow(/topK/);
    expect(generate(model, [4, 2], { ...ok, maxNewTokens: 0 })).toEqual({ tokens: [4, 2], newTokens: [] });
    model.dispose();
  });

  it('end to end: a tiny MoE++ model trained on 1 2 3 4 1 2 3 4 … greedily continues the pattern', () => {
    const pattern = [1, 2, 3, 4];
    const config = {
      vocabSize: 6,
      hiddenSize: 16,
      intermediateSize: 16,
      numLayers: 1,
      numHeads: 2,
      maxSeqLen: 12,
      initializerRange: 0.1,
      moe: { experts: { ffn: 2, zero: 1, copy: 1, constant: 1 } },
    } as const;
    const model = createModel(config, 7);
    const expected = Array.from({ length: 9 }, (_, i) => pattern[(i + 3) % 4]!); // after [1, 2, 3]: 4 1 2 3 …
    const continueGreedy = () => generate(model, [1, 2, 3], { maxNewTokens: 9, sampling: { strategy: 'greedy' }, rng: new SeededRandom(0) }).newTokens;
    expect(continueGreedy()).not.toEqual(expected); // the untrained model does not know the pattern

    // Four windows of the repeating pattern, one per phase: [B = 4, T = 12].
    const rows = [0, 1, 2, 3].map((offset) => Array.from({ length: 12 }, (_, t) => pattern[(t + offset) % 4]!));
    const inputs = tf.tensor2d(rows.map((r) => r.slice(0, 11)), [4, 11], 'int32');
    const targets = tf.oneHot(tf.tensor1d(rows.flatMap((r) => r.slice(1)), 'int32'), config.vocabSize); // [B·11, V]
    const optimizer = tf.train.adam(0.02);
    let finalLoss = Infinity;
    for (let step = 0; step < 100; step++) {
      const loss = optimizer.minimize(
        () => {
          const logits = model.forward(inputs, { training: true }).logits.reshape([4 * 11, config.vocabSize]); // [B·T, V]
          return tf.losses.softmaxCrossEntropy(targets, logits) as tf.Scalar;
        },
        true,
        model.trainableVariables(),
      ) as tf.Scalar;
      finalLoss = loss.dataSync()[0] as number;
      loss.dispose();
    }
    expect(finalLoss).toBeLessThan(0.1);
    expect(continueGreedy()).toEqual(expected);
    // Any phase of the pattern continues correctly, including a prompt of one token.
    expect(generate(model, [3], { maxNewTokens: 5, sampling: { strategy: 'greedy' }, rng: new SeededRandom(0) }).newTokens).toEqual([4, 1, 2, 3, 4]);
    tf.dispose([inputs, targets]);
    optimizer.dispose();
    model.dispose();
  });
});
