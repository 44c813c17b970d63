import * as tf from '@tensorflow/tfjs';
import { initBackend, randomNormal, SeededRandom } from '../src/index.js';
await initBackend({ backend: 'wasm' });
const rng = new SeededRandom(1);
function tr(src: Float32Array, dst: Float32Array, rows: number, cols: number, B = 32) {
  for (let i0 = 0; i0 < rows; i0 += B) { const iMax = Math.min(i0 + B, rows);
    for (let j0 = 0; j0 < cols; j0 += B) { const jMax = Math.min(j0 + B, cols);
      for (let i = i0; i < iMax; i++) { const rowOff = i * cols; for (let j = j0; j < jMax; j++) dst[j * rows + i] = src[rowOff + j]!; } } }
}
for (const [r, c] of [[1024, 1024], [1024, 256], [256, 1024]] as const) {
  const h = randomNormal([r, c], rng);
  for (let i = 0; i < 3; i++) tf.transpose(h).dispose();
  let t0 = performance.now(); for (let i = 0; i < 20; i++) { const o = tf.transpose(h); o.dataSync(); o.dispose(); }
  const wasmMs = (performance.now() - t0) / 20;
  const s = h.dataSync() as Float32Array; const d = new Float32Array(r * c);
  for (let i = 0; i < 3; i++) tr(s, d, r, c);
  t0 = performance.now(); for (let i = 0; i < 20; i++) tr(s, d, r, c);
  console.log(r, c, 'wasm', wasmMs.toFixed(2), 'js', ((performance.now() - t0) / 20).toFixed(2));
  const a = randomNormal([r, 256], rng); const b = randomNormal([256, c], rng);
  for (let i = 0; i < 3; i++) tf.matMul(a, b).dispose();
  t0 = performance.now(); for (let i = 0; i < 10; i++) { const o = tf.matMul(a, b); o.dataSync(); o.dispose(); }
  console.log(`  matmul [${r},256]x[256,${c}]`, ((performance.now() - t0) / 10).toFixed(2));
}
