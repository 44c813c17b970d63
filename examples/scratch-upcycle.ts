import { initBackend } from '@moepp/tensors-core';
import { createModel, upcycle } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { evaluate, train } from '@moepp/trainers';

await initBackend({ backend: 'wasm' });
const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed: 1, validationWindows: 32 });
const dense = createModel({ vocabSize: 256, hiddenSize: 64, intermediateSize: Number(process.env.F ?? 256), numLayers: 2, numHeads: 2, maxSeqLen: 64 }, 1);
let t = performance.now();
const steps = Number(process.env.STEPS ?? 60);
const r = await train(dense, data, { totalSteps: steps, schedule: { peakLr: 3e-3, minLr: 3e-4, warmupSteps: 5 } } as never, { progress: 'silent' } as never);
console.log('dense', r.evals.map(e => e.loss.toFixed(4)), ((performance.now()-t)/1000).toFixed(1), 's');
const base = (await evaluate(dense, data.validation)).loss;
for (const [name, experts, extra] of [
  ['vanilla', { ffn: 4, zero: 0, copy: 0, constant: 0 }, {}],
  ['zero-only', { ffn: 4, zero: 1, copy: 0, constant: 0 }, {}],
  ['full', { ffn: 4 }, {}],
  ['full-lognorm-off', { ffn: 4 }, { logitsNorm: false }],
] as const) {
  const m = upcycle(dense, { experts, ...extra } as never, 2);
  const e0 = (await evaluate(m, data.validation)).loss;
  t = performance.now();
  const data2 = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed: 2, validationWindows: 32 });
  const r2 = await train(m, data2, { totalSteps: 40, evalInterval: 10, schedule: { peakLr: 1e-3, minLr: 1e-4, warmupSteps: 0 } }, { progress: 'silent' } as never);
  console.log(name, 'dense', base.toFixed(4), 'upcycled@0', e0.toFixed(4), r2.evals.map(e => e.loss.toFixed(4)).join(' '), ((performance.now()-t)/1000).toFixed(1), 's');
  m.dispose();
}
