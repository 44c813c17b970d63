import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
tf.enableProdMode();
await tf.setBackend('wasm'); await tf.ready();
const run = async (be: string, f: () => tf.Tensor) => { await tf.setBackend(be); try { const r = f(); const v = Array.from(r.dataSync()).map(x=>+x.toFixed(3)); return `${r.shape} ${v.join(',')}`; } catch (e) { return 'throws ' + (e as Error).message; } };
const A = [[1,2,3],[4,5,6]]; const B = [[1,0],[0,1],[1,1]];
for (const be of ['cpu','wasm']) {
  console.log(be, 'broadcast [2,1,2,3]x[1,3,3,2]', await run(be, () => tf.matMul(tf.ones([2,1,2,3]).mul(tf.range(0,12).reshape([2,1,2,3])), tf.ones([1,3,3,2]).mul(tf.range(0,18).reshape([1,3,3,2])))));
  console.log(be, 'rank mismatch [2,3] x [4,3,2]', await run(be, () => tf.matMul(tf.tensor2d(A), tf.range(0,24).reshape([4,3,2]).toFloat())));
  console.log(be, 'bias [1]', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A), b: tf.tensor2d(B), bias: tf.tensor1d([10])})));
  console.log(be, 'bias [2]', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A), b: tf.tensor2d(B), bias: tf.tensor1d([10, 20])})));
  console.log(be, 'bias [2,1]', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A), b: tf.tensor2d(B), bias: tf.tensor2d([[10],[20]])})));
  console.log(be, 'bias scalar', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A), b: tf.tensor2d(B), bias: tf.scalar(10)})));
  console.log(be, 'prelu [2]', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A).neg(), b: tf.tensor2d(B), activation: 'prelu', preluActivationWeights: tf.tensor1d([0.5, 0.25])})));
  console.log(be, 'prelu [2,2]', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A).neg(), b: tf.tensor2d(B), activation: 'prelu', preluActivationWeights: tf.tensor2d([[0.5, 0.25],[1,2]])})));
  console.log(be, 'prelu scalar', await run(be, () => tf.fused.matMul({a: tf.tensor2d(A).neg(), b: tf.tensor2d(B), activation: 'prelu', preluActivationWeights: tf.scalar(0.5)})));
  for (const act of ['relu','relu6','leakyrelu','sigmoid','elu'] as const) console.log(be, act, await run(be, () => tf.fused.matMul({a: tf.tensor2d(A).sub(3), b: tf.tensor2d(B), activation: act, bias: tf.tensor1d([1,-1])})));
  console.log(be, 'topk ties', await run(be, () => { const r = tf.topk(tf.tensor2d([[1,3,3,2,3],[5,5,5,5,5]]), 3); return r.indices; }));
  console.log(be, 'topk ties unsorted', await run(be, () => { const r = tf.topk(tf.tensor2d([[1,3,3,2,3],[5,5,5,5,5]]), 3, false); return r.indices; }));
  console.log(be, 'gatherNd oor', await run(be, () => tf.gatherND(tf.tensor2d([[1,2],[3,4]]), tf.tensor2d([[0,1],[2,0]],[2,2],'int32'))));
  console.log(be, 'int32 USS', await run(be, () => tf.unsortedSegmentSum(tf.tensor1d([1,2,3],'int32'), tf.tensor1d([0,0,1],'int32'), 2)));
}
