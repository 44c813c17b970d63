import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
tf.enableProdMode();
await tf.setBackend('wasm'); await tf.ready();
console.log('wasm simd?', await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'), 'threads', await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'));
const idx = tf.tensor1d([0, 2, 1, 3, -1, 5], 'int32');
for (const dtype of ['float32', 'int32'] as const) {
  for (const be of ['cpu', 'wasm']) {
    await tf.setBackend(be);
    const o = tf.oneHot(tf.tensor1d([0, 2, 1, 3, -1, 5], 'int32'), 4, 1, 0, dtype);
    console.log(be, dtype, Array.from(o.dataSync()).join(','));
    const o2 = tf.oneHot(tf.tensor1d([0, 2, 1], 'int32'), 4, 0.9, 0.1, dtype);
    console.log(be, dtype, Array.from(o2.dataSync()).join(','));
  }
}
idx.dispose();
// timings
function time(name: string, f: () => tf.Tensor, reps = 3) {
  const r0 = f(); r0.dataSync(); r0.dispose();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) { const r = f(); r.dataSync(); r.dispose(); }
  console.log(name, ((performance.now() - t0) / reps).toFixed(1), 'ms');
}
await tf.setBackend('wasm');
const a = tf.randomNormal([1024, 256]); const b = tf.randomNormal([256, 1024]); const bt = tf.randomNormal([1024, 256]);
time('wasm nn', () => tf.matMul(a, b));
time('wasm nt', () => tf.matMul(a, bt, false, true));
time('wasm fused nn', () => tf.fused.matMul({a, b, bias: tf.zeros([1024]), activation: 'relu'}));
const x = tf.randomNormal([8, 128, 256]);
time('wasm batch8 x shared', () => tf.matMul(x, b));
const tr = tf.randomNormal([1024,1024]);
time('wasm transpose 1024^2', () => tf.transpose(tr));
try { tf.unsortedSegmentSum(tf.ones([3, 2]), tf.tensor1d([0, 1, 0], 'int32'), 2).print(); } catch (e) { console.log('USS wasm:', (e as Error).message); }
try { const g = tf.grad((p: tf.Tensor) => tf.gather(p, tf.tensor1d([0,1,1],'int32')).sum())(tf.ones([3,2])); g.print(); } catch (e) { console.log('gather grad wasm:', (e as Error).message); }
try { const g = tf.grad((p: tf.Tensor) => tf.topk(p, 2).values.sum())(tf.tensor2d([[1,3,2],[4,4,1]])); g.print(); } catch (e) { console.log('topk grad:', (e as Error).message); }
try { const g = tf.grad((p: tf.Tensor) => tf.gatherND(p, tf.tensor2d([[0,1],[0,1]],[2,2],'int32')).sum())(tf.tensor2d([[1,3,2],[4,4,1]])); g.print(); } catch (e) { console.log('gatherNd grad:', (e as Error).message); }
// scatterND dup sum on wasm
tf.scatterND(tf.tensor2d([[0],[0],[2]],[3,1],'int32'), tf.tensor1d([1,2,3]), [4]).print();
await tf.setBackend('cpu');
tf.scatterND(tf.tensor2d([[0],[0],[2]],[3,1],'int32'), tf.tensor1d([1,2,3]), [4]).print();
tf.unsortedSegmentSum(tf.tensor2d([[1,2],[3,4],[5,6]]), tf.tensor1d([0, 5, -1], 'int32'), 2).print();
try { const g = tf.grad((p: tf.Tensor) => tf.unsortedSegmentSum(p, tf.tensor1d([0, 5, -1], 'int32'), 2).sum())(tf.ones([3,2])); g.print(); } catch (e) { console.log('USS grad OOR cpu:', (e as Error).message); }
