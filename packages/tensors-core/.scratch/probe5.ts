import * as tf from '@tensorflow/tfjs';
await tf.setBackend('cpu');
const tryit = (name: string, f: () => void) => { try { f(); console.log(name, 'ok'); } catch (e) { console.log(name, 'throws', (e as Error).message); } };
tryit('batched x 2d', () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(a, b).sum())([tf.ones([3,5,7]), tf.ones([7,4])]));
tryit('2d x batched', () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(a, b).sum())([tf.ones([5,7]), tf.ones([3,7,4])]));
tryit('[3,1] x [1,2]', () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(a, b).sum())([tf.ones([3,1,5,7]), tf.ones([1,1,7,4])]));
tryit('fused batched x 2d', () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.fused.matMul({a, b}).sum())([tf.ones([3,5,7]), tf.ones([7,4])]));
