import * as tf from '@tensorflow/tfjs';
import { kernelsBenchmark } from '../../../benchmarks/src/kernels.js';
import { initBackend } from '../src/index.js';
await initBackend({ backend: 'wasm' });
const def = kernelsBenchmark();
for (const prefix of ['MoE', 'FFN SwiGLU']) {
const moe = def.cases.find(c => c.name.startsWith(prefix))!;
const p = moe.prepare({ id: 'wasm-fixes', label: '', backend: 'wasm', kernelFixes: true });
for (let i = 0; i < 2; i++) { const r = await p.run(); (r as tf.Tensor[]).forEach(t => t.dataSync()); tf.dispose(r as tf.Tensor[]); }
const s: number[] = [];
for (let i = 0; i < 5; i++) { const t0 = performance.now(); const r = await p.run(); (r as tf.Tensor[]).forEach(t => t.dataSync()); tf.dispose(r as tf.Tensor[]); s.push(performance.now() - t0); }
console.log(prefix, 'step ms', s.map(x => x.toFixed(0)).join(' '));
const prof = await tf.profile(async () => { const r = await p.run() as tf.Tensor[]; r.forEach(t => t.dataSync()); return r; });
const agg = new Map<string, [number, number]>();
for (const k of prof.kernels) { const a = agg.get(k.name) ?? [0, 0]; agg.set(k.name, [a[0] + (k.kernelTimeMs as number), a[1] + 1]); }
console.log([...agg.entries()].sort((a, b) => b[1][0] - a[1][0]).slice(0, 10).map(([n, [t, c]]) => `${n}: ${t.toFixed(1)} ms (${c})`).join(', '));
p.dispose();
}
