import * as tf from '@tensorflow/tfjs';
import { initBackend, unregisterKernelFixes, registerKernelFixes, activeKernelFixes } from '../src/index.js';
const r = await initBackend({ backend: 'wasm' });
console.log(r.summary);
function time(name: string, f: () => tf.Tensor | tf.Tensor[], reps = 3) {
  const go = () => { const r = f(); const arr = Array.isArray(r) ? r : [r]; arr.forEach(t => t.dataSync()); arr.forEach(t => t.dispose()); };
  go();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) go();
  console.log(name, ((performance.now() - t0) / reps).toFixed(1), 'ms');
}
const a = tf.randomNormal([1024, 256]); const b = tf.randomNormal([256, 1024]); const bt = tf.randomNormal([1024, 256]); const at = tf.randomNormal([256, 1024]);
const x = tf.randomNormal([8, 128, 256]); const xb = tf.randomNormal([8, 256, 128]);
for (const mode of ['fixed', 'stock']) {
  if (mode === 'stock') unregisterKernelFixes('wasm');
  console.log(mode, activeKernelFixes('wasm'));
  time('nn', () => tf.matMul(a, b));
  time('nt', () => tf.matMul(a, bt, false, true));
  time('tn', () => tf.matMul(at, b, true, false));
  time('tt', () => tf.matMul(at, bt, true, true));
  time('batch8 shared b', () => tf.matMul(x, b));
  time('batch8 both', () => tf.matMul(x, xb));
}
registerKernelFixes('wasm');
// correctness vs cpu
const check = async (name: string, f: () => tf.Tensor) => {
  await tf.setBackend('wasm'); const w = f(); const wv = w.dataSync().slice(); const ws = w.shape;
  await tf.setBackend('cpu'); const c = f(); const cv = c.dataSync();
  let worst = 0; for (let i = 0; i < cv.length; i++) worst = Math.max(worst, Math.abs(cv[i]! - wv[i]!));
  console.log(name, ws.join('x'), c.shape.join('x'), 'maxdiff', worst, wv.length, cv.length);
};
const A = tf.randomNormal([3, 5, 7], 0, 1, 'float32', 1).arraySync(); const B = tf.randomNormal([3, 7, 4], 0, 1, 'float32', 2).arraySync();
for (const ta of [false, true]) for (const tb of [false, true]) {
  await check(`mm ${ta} ${tb}`, () => { let a = tf.tensor(A); let b = tf.tensor(B); if (ta) a = a.transpose([0,2,1]); if (tb) b = b.transpose([0,2,1]); return tf.matMul(a, b, ta, tb); });
  await check(`mm shared ${ta} ${tb}`, () => { let a = tf.tensor(A); let b = tf.tensor(B).slice([0,0,0],[1,7,4]).reshape([7,4]); if (ta) a = a.transpose([0,2,1]); if (tb) b = b.transpose([1,0]); return tf.matMul(a, b, ta, tb); });
  await check(`fused ${ta} ${tb}`, () => { let a = tf.tensor(A); let b = tf.tensor(B); if (ta) a = a.transpose([0,2,1]); if (tb) b = b.transpose([0,2,1]); return tf.fused.matMul({a, b, transposeA: ta, transposeB: tb, bias: tf.tensor1d([1,2,3,4]), activation: 'relu'}); });
}
await tf.setBackend('wasm');
tf.unsortedSegmentSum(tf.tensor2d([[1,2],[3,4],[5,6]]), tf.tensor1d([0, 5, 0], 'int32'), 2).print();
tf.oneHot(tf.tensor1d([0,2,-1],'int32'), 3, 0.9, 0.1, 'float32').print();
