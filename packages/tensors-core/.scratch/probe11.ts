import * as tf from '@tensorflow/tfjs';
import { initBackend, randomNormal, SeededRandom } from '../src/index.js';
await initBackend({ backend: 'wasm' });
const T = 1024, D = 256, F = 1024;
const rng = new SeededRandom(1);
const x = randomNormal([T, D], rng), w1 = randomNormal([D, F], rng, 0.06), w2 = randomNormal([F, D], rng, 0.03), dy = randomNormal([T, D], rng);
const gelu = (h: tf.Tensor) => tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.mul(h, Math.SQRT1_2))));
const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(gelu(tf.matMul(x, a)), b));
const h = randomNormal([T, F], rng);
const cases: Record<string, () => tf.Tensor[]> = {
  ffn: () => g([w1, w2], dy),
  'hT·dy': () => [tf.matMul(h, dy, true, false)],
  'TT [256,1024]T[1024,256]T': () => [tf.matMul(randomNormal([256,1024], rng), randomNormal([1024,256], rng), true, true)],
};
for (const [name, f] of Object.entries(cases)) {
  const res: Record<string, number[]> = { swap: [], noswap: [] };
  for (let round = 0; round < 12; round++) for (const mode of ['swap', 'noswap']) {
    (globalThis as any).NOSWAP = mode === 'noswap';
    if (round === 0) { const r = f(); r.forEach(t => t.dataSync()); tf.dispose(r); continue; }
    const t0 = performance.now(); const r = f(); r.forEach(t => t.dataSync()); tf.dispose(r); res[mode]!.push(performance.now() - t0);
  }
  const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)]!.toFixed(1);
  console.log(name, 'swap', med(res.swap!), 'noswap', med(res.noswap!));
}
