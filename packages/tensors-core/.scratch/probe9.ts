import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { initBackend, randomNormal, SeededRandom } from '../src/index.js';
await initBackend({ backend: 'wasm' });
const T = 1024, D = 256, F = 1024;
const rng = new SeededRandom(1);
const x = randomNormal([T, D], rng), w1 = randomNormal([D, F], rng, 0.06), w2 = randomNormal([F, D], rng, 0.03), dy = randomNormal([T, D], rng);
const gelu = (h: tf.Tensor) => tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.mul(h, Math.SQRT1_2))));
const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(gelu(tf.matMul(x, a)), b));
const bench = (label: string) => {
  for (let i = 0; i < 3; i++) { const r = g([w1, w2], dy); r.forEach(t => t.dataSync()); tf.dispose(r); }
  const s: number[] = [];
  for (let i = 0; i < 15; i++) { const t0 = performance.now(); const r = g([w1, w2], dy); r.forEach(t => t.dataSync()); tf.dispose(r); s.push(performance.now() - t0); }
  s.sort((a, b) => a - b); console.log(label, 'median', s[7]!.toFixed(1), 'min', s[0]!.toFixed(1));
};
bench('fixes');
const stockIdentity = tf.getKernel('Identity', 'wasm');
tf.unregisterKernel('Identity', 'wasm');
tf.registerKernel({ ...stockIdentity, kernelFunc: ({ inputs, backend }) => { const x = inputs.x as tf.TensorInfo; if (x.dtype === 'string') return stockIdentity.kernelFunc({ inputs, backend }); (backend as BackendWasm).incRef(x.dataId); return { dataId: x.dataId, shape: x.shape, dtype: x.dtype }; } });
bench('fixes + sharing identity');
const prof = await tf.profile(() => { const r = g([w1, w2], dy); r.forEach(t => t.dataSync()); return r; });
const agg = new Map<string, number>();
for (const k of prof.kernels) agg.set(k.name, (agg.get(k.name) ?? 0) + (k.kernelTimeMs as number));
console.log([...agg.entries()].sort((a, b) => b[1] - a[1]).map(([n, t]) => `${n}: ${t.toFixed(1)}`).join(', '));
