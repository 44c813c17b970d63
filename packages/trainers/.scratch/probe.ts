import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@moepp/tensors-core';
import { createModel, presetConfig, type PresetSize, type PresetVariant } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
await initBackend({ backend: 'wasm' });
const size = (process.argv[2] ?? 'smoke') as PresetSize;
const B = Number(process.argv[3] ?? 8), T = Number(process.argv[4] ?? 64);
const t0 = performance.now();
const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: T, batchSize: B, seed: 1, validationWindows: 16 });
console.log('data ms', (performance.now() - t0).toFixed(0), data.trainTokens.length, data.validationTokens.length);
for (const variant of ['dense', 'moe', 'moepp'] as PresetVariant[]) {
  const model = createModel(presetConfig(size, variant, { vocabSize: 256 }), 1);
  const vars = model.trainableVariables();
  const times: number[] = [];
  for (let s = 0; s < 8; s++) {
    const start = performance.now();
    const batch = data.train.next();
    const inputs = tf.tensor2d(batch.inputs, [B, T], 'int32');
    const targets = tf.tensor1d(Int32Array.from(batch.targets, (t, i) => i * 256 + t), 'int32');
    const { value, grads } = tf.variableGrads(() => {
      const out = model.forward(inputs, { training: true });
      const logits = out.logits.reshape([B * T, 256]);
      const lse = tf.logSumExp(logits, -1);
      const picked = tf.gather(logits.reshape([B * T * 256]), targets);
      let loss = tf.mean(tf.sub(lse, picked));
      for (const m of out.moeLayers) loss = tf.add(loss, tf.mul(0.01, m.auxLosses.loadBalance!));
      return loss as tf.Scalar;
    }, vars);
    const l = value.dataSync()[0];
    tf.tidy(() => { for (const v of vars) { const g = grads[v.name]; if (g) v.assign(tf.sub(v, tf.mul(g, 1e-3))); } });
    tf.dispose([value, inputs, targets]); tf.dispose(Object.values(grads));
    times.push(performance.now() - start);
    if (s === 7) console.log(size, variant, 'loss', l?.toFixed(3), 'ms/step', times.slice(2).map(t => t.toFixed(0)).join(' '), 'tensors', tf.memory().numTensors);
  }
  model.dispose();
}
