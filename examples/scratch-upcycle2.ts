import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@moepp/tensors-core';
import { createModel, upcycle, MoeLayer } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { evaluate, train } from '@moepp/trainers';

await initBackend({ backend: 'wasm' });
const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed: 1, validationWindows: 32 });
const dense = createModel({ vocabSize: 256, hiddenSize: 64, intermediateSize: 256, numLayers: 2, numHeads: 2, maxSeqLen: 64 }, 1);
await train(dense, data, { totalSteps: 60, schedule: { peakLr: 3e-3, minLr: 3e-4, warmupSteps: 5 } }, { progress: 'silent' });
const base = (await evaluate(dense, data.validation)).loss;
for (const lr of [1e-3, 3e-4]) {
  const m = upcycle(dense, { experts: { ffn: 4 }, logitsNorm: false }, 2);
  for (const b of m.blocks) if (b.ffn instanceof MoeLayer) for (const v of Object.values(b.ffn.router.weights)) v.assign(tf.zerosLike(v));
  const e0 = (await evaluate(m, data.validation)).loss;
  const data2 = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed: 2, validationWindows: 32 });
  const r2 = await train(m, data2, { totalSteps: 30, evalInterval: 3, schedule: { peakLr: lr, minLr: lr/10, warmupSteps: 0 } }, { progress: 'silent' });
  console.log('zero-router lr', lr, 'dense', base.toFixed(4), 'upcycled@0', e0.toFixed(4), r2.evals.map(e => e.loss.toFixed(4)).join(' '), 'ffn/tok', r2.lastStep?.ffnExpertsPerToken);
  m.dispose();
}
