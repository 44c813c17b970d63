import * as tf from '@tensorflow/tfjs';
import { initBackend, randomNormal, SeededRandom } from '../src/index.js';
await initBackend({ backend: 'wasm' });
const T = 1024, D = 256, F = 1024;
const rng = new SeededRandom(1);
const x = randomNormal([T, D], rng), w1 = randomNormal([D, F], rng, 0.06), w2 = randomNormal([F, D], rng, 0.03), dy = randomNormal([T, D], rng);
const gelu = (h: tf.Tensor) => tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.mul(h, Math.SQRT1_2))));
const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(gelu(tf.matMul(x, a)), b));
for (let i = 0; i < 3; i++) { const r = g([w1, w2], dy); r.forEach(t => t.dataSync()); tf.dispose(r); }
const prof = await tf.profile(() => { const r = g([w1, w2], dy); r.forEach(t => t.dataSync()); return r; });
const agg = new Map<string, number>();
for (const k of prof.kernels) agg.set(k.name, (agg.get(k.name) ?? 0) + (k.kernelTimeMs as number));
console.log([...agg.entries()].sort((a, b) => b[1] - a[1]).map(([n, t]) => `${n}: ${t.toFixed(1)}`).join('\n'));
console.log('total', prof.kernels.reduce((s, k) => s + (k.kernelTimeMs as number), 0).toFixed(1));
const t0 = performance.now(); for (let i = 0; i < 5; i++) { const r = g([w1, w2], dy); r.forEach(t => t.dataSync()); tf.dispose(r); } console.log('step', ((performance.now() - t0) / 5).toFixed(1));
// transposes alone
const h = randomNormal([T, F], rng);
const t1 = performance.now(); for (let i = 0; i < 10; i++) { const r = tf.transpose(h); r.dataSync(); r.dispose(); } console.log('transpose [1024,1024]', ((performance.now() - t1) / 10).toFixed(1));
