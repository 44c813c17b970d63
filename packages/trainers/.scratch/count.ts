import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@moepp/tensors-core';
import { createModel, presetConfig } from '@moepp/models';
await initBackend({ backend: 'wasm' });
const before = tf.memory().numTensors;
const model = createModel(presetConfig('smoke', 'moepp', { vocabSize: 256 }), 1);
console.log('tensors', tf.memory().numTensors - before, 'params', model.parameters().length);
model.dispose();
console.log('after dispose', tf.memory().numTensors - before);
