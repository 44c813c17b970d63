/**
 * The native-acceleration benchmark: the kit on wasm with its kernel fixes, without and with native
 * acceleration (OpenBLAS `sgemm` and fused kernels on the wasm heap, see `@moepp/tensors-core`'s
 * `initBackend` report), next to PyTorch on the same CPU in the same run.
 *
 * Cases (default sizes: D = 256, F = 1024, E = 8 experts, top-2):
 * - `matmul` `[1024, 256] x [256, 1024]`: the raw GEMM rate;
 * - FFN GELU forward+backward, T = 1024 (gradients over both weights; the kernels benchmark's case,
 *   with the kit's fused `gelu`);
 * - FFN SwiGLU forward+backward, T = 1024, in the experts' fused layout (`up [D, 2F]`, `down [F, D]`;
 *   gradients over x and both weights);
 * - RMSNorm + SwiGLU block forward+backward, T = 4096: `x + swiglu(rmsNorm(x)·up)·down`;
 * - MoE layer train step, T = 4096: softmax router, top-2 with renormalised gates, per-expert gather,
 *   SwiGLU expert, gate scaling and one scatter-add (as `@moepp/models`' MoE layer does); gradients over
 *   x, the router and every expert weight.
 * - E = 8 SwiGLU experts on 512 rows each (D = 256, F = 512), forward+backward, two ways timed
 *   round-robin: a per-expert loop (`split`, per expert `matMul` / `swiglu` / `matMul`, `concat`) and
 *   `groupedSwigluFfn` (one kernel forward and one backward with native acceleration); gradients over
 *   the rows and every expert weight. The peer runs the per-expert loop (PyTorch has no grouped op).
 *
 * The PyTorch peer (`native_peer.py`) runs the same cases, written as one would in PyTorch (`@`,
 * `F.gelu`, `F.silu`, `chunk`, `index_add`), with 1 thread and with OpenBLAS's thread count here,
 * keeping the faster per case (its OpenMP workers spin, and lose badly when the other core is busy). It runs when
 * `python3 -c "import torch"` works (Debian: `apt-get install python3-torch`); the markdown's
 * reference column then gives our time over PyTorch's. Each side reads its results before the clock
 * stops (ours: `await tensor.data()`; PyTorch is synchronous on CPU).
 *
 * Run alone: `tsx --conditions=source src/native.ts [--quick] [--out <dir>]`.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import {
  accelerationStatus,
  gatherRows,
  gelu,
  groupedSwigluFfn,
  planDispatch,
  randomNormal,
  rmsNorm,
  SeededRandom,
  swiglu,
} from '@moepp/tensors-core';
import { parseBenchmarkArgs, runWhenMain, USAGE } from './cli.js';
import {
  CONFIGURATIONS,
  runBenchmark,
  type BenchmarkCase,
  type BenchmarkDefinition,
  type Configuration,
  type PreparedCase,
  type ReferenceTime,
  type TimingPlan,
} from './harness.js';

/** The sizes of the native benchmark's cases. */
export interface NativeBenchmarkSizes {
  /** `[M, K, N]` of the raw matmul. Default `[1024, 256, 1024]`. */
  readonly matmul: readonly [number, number, number];
  /** T of the FFN cases. Default 1024. */
  readonly ffnTokens: number;
  /** T of the RMSNorm + SwiGLU block. Default 4096. */
  readonly blockTokens: number;
  /** T of the MoE step. Default 4096. */
  readonly moeTokens: number;
  /** D. Default 256. */
  readonly model: number;
  /** F (one expert's, and the FFNs'). Default 1024. */
  readonly hidden: number;
  /** E. Default 8. */
  readonly experts: number;
  /** K. Default 2. */
  readonly topK: number;
  /** Rows per expert of the grouped-FFN cases (E groups). Default 512; absent: `moeTokens·topK / experts`. */
  readonly groupRows?: number;
  /** F of the grouped-FFN cases. Default 512; absent: `hidden`. */
  readonly groupHidden?: number;
}

/** The sizes of the native-acceleration issue's measurements. */
export const NATIVE_DEFAULT_SIZES: NativeBenchmarkSizes = {
  matmul: [1024, 256, 1024],
  ffnTokens: 1024,
  blockTokens: 4096,
  moeTokens: 4096,
  model: 256,
  hidden: 1024,
  experts: 8,
  topK: 2,
  groupRows: 512,
  groupHidden: 512,
};

/** The two columns: wasm with the kit's fixes, without and with native acceleration. */
export const NATIVE_CONFIGURATIONS = {
  wasmFixes: CONFIGURATIONS.wasmFixes,
  wasmNative: CONFIGURATIONS.wasmNative,
} as const satisfies Record<string, Configuration>;

/** What the PyTorch peer measured: per case, the best of the thread counts tried. */
export interface PeerResult {
  readonly torch: string;
  readonly threadCounts: readonly number[];
  readonly cases: Readonly<
    Record<string, { readonly medianMs: number; readonly minMs: number; readonly maxMs: number; readonly repetitions: number; readonly threads: number }>
  >;
}

/** Options of {@link nativeBenchmark}. */
export interface NativeBenchmarkOptions {
  readonly sizes?: NativeBenchmarkSizes;
  /** The results' file name. Default `'native'`. */
  readonly name?: string;
  /** One timing plan for every case and configuration (tests use one run); default per configuration. */
  readonly timing?: TimingPlan;
  readonly seed?: number;
  /**
   * The PyTorch peer: `true` (default) runs `native_peer.py` if `import torch` works, `false` skips
   * it, or pass results measured elsewhere.
   */
  readonly peer?: boolean | PeerResult;
  /** Quick mode for the peer's repetitions. Default false. */
  readonly quick?: boolean;
}

/**
 * One case as both sides see it: a name, a kind `native_peer.py` knows, sizes (`lm` is a whole
 * training step of a preset language model, used by the end-to-end benchmark).
 */
export interface PeerCase {
  readonly name: string;
  readonly kind: 'matmul' | 'ffn_gelu' | 'ffn_swiglu' | 'block' | 'moe' | 'grouped_ffn' | 'lm';
  readonly [size: string]: number | string | boolean;
}

const PEER_SCRIPT = fileURLToPath(new URL('./native_peer.py', import.meta.url));

/** @returns the first Python that can `import torch` (Debian's is /usr/bin/python3), or null */
export function findTorchPython(): string | null {
  for (const python of [process.env.MOEPP_TORCH_PYTHON, 'python3', '/usr/bin/python3', 'python']) {
    if (python === undefined || python === '') continue;
    const probe = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8', timeout: 60_000 });
    if (probe.status === 0) return python;
  }
  return null;
}

/**
 * Runs the PyTorch peer on the given cases.
 *
 * @param cases - names, kinds and sizes
 * @param threads - the thread count of OpenBLAS here; the peer tries 1 and this many and keeps the faster per case
 * @param quick - fewer repetitions
 * @returns the peer's medians, or a string saying why there are none
 */
export function runPytorchPeer(cases: readonly PeerCase[], threads: number, quick: boolean): PeerResult | string {
  const python = findTorchPython();
  if (python === null) return 'PyTorch not found (`python3 -c "import torch"` fails; on Debian: apt-get install python3-torch)';
  const config = {
    threadCounts: [...new Set([1, threads])],
    cases,
    ...(quick ? { warmup: 1, minRepetitions: 2, maxRepetitions: 5, budgetMs: 1000 } : { warmup: 2, minRepetitions: 5, maxRepetitions: 20, budgetMs: 4000 }),
  };
  const result = spawnSync(python, [PEER_SCRIPT, JSON.stringify(config)], { encoding: 'utf8', timeout: 20 * 60_000 });
  if (result.status !== 0) return `the PyTorch peer failed: ${(result.stderr || result.error?.message || '').trim().split('\n').pop() ?? ''}`;
  return JSON.parse(result.stdout) as PeerResult;
}

function matmulFlops(m: number, k: number, n: number): number {
  return 2 * m * k * n;
}

/**
 * One MoE layer forward pass with SwiGLU experts, dispatched as `@moepp/models`' MoE layer does.
 *
 * @param x - [T, D]
 * @param router - [D, E]
 * @param ups - E × [D, 2F]
 * @param downs - E × [F, D]
 * @param topK - K
 * @returns [T, D]
 */
function moeForward(x: tf.Tensor2D, router: tf.Tensor, ups: readonly tf.Tensor[], downs: readonly tf.Tensor[], topK: number): tf.Tensor {
  const tokens = x.shape[0];
  const experts = ups.length;
  const probabilities = tf.softmax(tf.matMul(x, router)); // [T, E]
  const { values, indices } = tf.topk(probabilities, topK); // [T, K] each
  const gates = tf.div(values, tf.sum(values, -1, true)); // [T, K] renormalised (Mixtral)
  // The expert choice carries no gradient: a copy off the tape (planDispatch reads counts back anyway).
  const choice = tf.tensor2d(indices.dataSync() as Int32Array, [tokens, topK], 'int32'); // [T, K]
  const plan = planDispatch(choice, experts);
  const flatGates = tf.reshape(gates, [tokens * topK]); // [T·K]
  const outputs: tf.Tensor[] = [];
  const destinations: tf.Tensor[] = [];
  for (let e = 0; e < experts; e++) {
    if ((plan.counts[e] as number) === 0) continue;
    const tokenIds = plan.tokenIds[e] as tf.Tensor1D; // [n_e]
    const rows = gatherRows(x, tokenIds); // [n_e, D]
    const expertOut = tf.matMul(swiglu(tf.matMul(rows, ups[e] as tf.Tensor)), downs[e] as tf.Tensor); // [n_e, D]
    const expertGates = tf.reshape(tf.gather(flatGates, plan.slotIds[e] as tf.Tensor1D), [-1, 1]); // [n_e, 1]
    outputs.push(tf.mul(expertOut, expertGates));
    destinations.push(tokenIds);
  }
  return tf.unsortedSegmentSum(tf.concat(outputs, 0), tf.concat(destinations, 0) as tf.Tensor1D, tokens); // [T, D]
}

/**
 * Builds the native benchmark (runs the PyTorch peer first, when asked and available).
 *
 * @param options - sizes, name, a fixed timing plan, seed, the peer
 * @returns the benchmark definition, ready for `runBenchmark`
 */
export function nativeBenchmark(options: NativeBenchmarkOptions = {}): BenchmarkDefinition {
  const sizes = options.sizes ?? NATIVE_DEFAULT_SIZES;
  const seed = options.seed ?? 1;
  const quick = options.quick ?? false;
  const fixed = options.timing;
  const { model: D, hidden: F, experts: E, topK: K } = sizes;
  const [m, k, n] = sizes.matmul;
  const threads = accelerationStatus().threads ?? 2;
  const groupRows = sizes.groupRows ?? Math.max(1, Math.round((sizes.moeTokens * K) / E));
  const groupHidden = sizes.groupHidden ?? F;
  const groupSizes: number[] = new Array(E).fill(groupRows);

  const names = {
    matmul: `matmul [${m},${k}]·[${k},${n}]`,
    ffnGelu: `FFN GELU forward+backward T=${sizes.ffnTokens} D=${D} F=${F}`,
    ffnSwiglu: `FFN SwiGLU (fused up [D,2F]) forward+backward T=${sizes.ffnTokens} D=${D} F=${F}`,
    block: `RMSNorm + SwiGLU block forward+backward T=${sizes.blockTokens} D=${D} F=${F}`,
    moe: `MoE layer train step E=${E} top-${K} T=${sizes.moeTokens} D=${D} F=${F} (SwiGLU experts)`,
    expertLoop: `E=${E} SwiGLU experts × ${groupRows} rows forward+backward D=${D} F=${groupHidden}: per-expert loop`,
    grouped: `E=${E} SwiGLU experts × ${groupRows} rows forward+backward D=${D} F=${groupHidden}: groupedSwigluFfn`,
  };
  const peerCases: PeerCase[] = [
    { name: names.matmul, kind: 'matmul', m, k, n },
    { name: names.ffnGelu, kind: 'ffn_gelu', tokens: sizes.ffnTokens, model: D, hidden: F },
    { name: names.ffnSwiglu, kind: 'ffn_swiglu', tokens: sizes.ffnTokens, model: D, hidden: F },
    { name: names.block, kind: 'block', tokens: sizes.blockTokens, model: D, hidden: F },
    { name: names.moe, kind: 'moe', tokens: sizes.moeTokens, model: D, hidden: F, experts: E, topK: K },
    { name: names.expertLoop, kind: 'grouped_ffn', rows: groupRows, model: D, hidden: groupHidden, experts: E },
  ];
  const peer = options.peer === false ? 'not run (peer: false)' : options.peer === undefined || options.peer === true ? runPytorchPeer(peerCases, threads, quick) : options.peer;
  const referenceOf = (name: string): ReferenceTime | undefined => {
    if (typeof peer === 'string') return undefined;
    const measured = peer.cases[name];
    if (measured === undefined) return undefined;
    return {
      label: `PyTorch ${peer.torch} CPU, ${measured.threads} thread${measured.threads === 1 ? '' : 's'} (best of ${peer.threadCounts.join(' and ')})`,
      ms: [measured.medianMs, measured.medianMs],
      source: `measured in this run by native_peer.py (median of ${measured.repetitions}, ${measured.minMs.toFixed(1)}–${measured.maxMs.toFixed(1)} ms)`,
    };
  };

  const timing = (configuration: Configuration, quickMode: boolean): TimingPlan | string => {
    if (configuration.id === NATIVE_CONFIGURATIONS.wasmNative.id && !accelerationStatus().active) {
      return `native acceleration is off: ${accelerationStatus().reason}`;
    }
    if (fixed) return fixed;
    return quickMode ? { warmup: 1, minRepetitions: 2, maxRepetitions: 5, budgetMs: 1000 } : { warmup: 2, minRepetitions: 5, maxRepetitions: 20, budgetMs: 4000 };
  };

  /** A prepared case: `compute` on the configuration's backend (the harness set acceleration on or off). */
  const prepared = (_configuration: Configuration, inputs: tf.Tensor[], compute: () => tf.Tensor | tf.Tensor[]): PreparedCase => ({
    run: compute,
    dispose: () => tf.dispose(inputs),
  });

  const withReference = (c: Omit<BenchmarkCase, 'reference'>, peerName: string = c.name): BenchmarkCase => {
    const reference = referenceOf(peerName);
    return reference ? { ...c, reference } : c;
  };

  const cases: BenchmarkCase[] = [
    withReference({
      name: names.matmul,
      flops: matmulFlops(m, k, n),
      details: { a: [m, k], b: [k, n] },
      prepare: (configuration) => {
        const rng = new SeededRandom(seed);
        const a = randomNormal([m, k], rng);
        const b = randomNormal([k, n], rng);
        return prepared(configuration, [a, b], () => tf.matMul(a, b));
      },
    }),
    withReference({
      name: names.ffnGelu,
      flops: 5 * matmulFlops(sizes.ffnTokens, D, F),
      details: { tokens: sizes.ffnTokens, model: D, hidden: F, activation: 'gelu (erf, fused op)', gradientsOver: ['w1', 'w2'] },
      prepare: (configuration) => {
        const rng = new SeededRandom(seed + 1);
        const x = randomNormal([sizes.ffnTokens, D], rng);
        const w1 = randomNormal([D, F], rng, 1 / Math.sqrt(D));
        const w2 = randomNormal([F, D], rng, 1 / Math.sqrt(F));
        const dy = randomNormal([sizes.ffnTokens, D], rng);
        const gradients = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.matMul(gelu(tf.matMul(x, a)), b));
        return prepared(configuration, [x, w1, w2, dy], () => gradients([w1, w2], dy));
      },
    }),
    withReference({
      name: names.ffnSwiglu,
      flops: 9 * matmulFlops(sizes.ffnTokens, D, F),
      details: { tokens: sizes.ffnTokens, model: D, hidden: F, activation: 'swiglu (fused op)', gradientsOver: ['x', 'up', 'down'] },
      prepare: (configuration) => {
        const rng = new SeededRandom(seed + 2);
        const x = randomNormal([sizes.ffnTokens, D], rng);
        const up = randomNormal([D, 2 * F], rng, 1 / Math.sqrt(D));
        const down = randomNormal([F, D], rng, 1 / Math.sqrt(F));
        const dy = randomNormal([sizes.ffnTokens, D], rng);
        const gradients = tf.grads((input: tf.Tensor, u: tf.Tensor, d: tf.Tensor) => tf.matMul(swiglu(tf.matMul(input, u)), d));
        return prepared(configuration, [x, up, down, dy], () => gradients([x, up, down], dy));
      },
    }),
    withReference({
      name: names.block,
      flops: 9 * matmulFlops(sizes.blockTokens, D, F),
      details: { tokens: sizes.blockTokens, model: D, hidden: F, path: 'x + swiglu(rmsNorm(x)·up)·down', gradientsOver: ['x', 'norm', 'up', 'down'] },
      prepare: (configuration) => {
        const rng = new SeededRandom(seed + 3);
        const x = randomNormal([sizes.blockTokens, D], rng);
        const norm = tf.ones([D]);
        const up = randomNormal([D, 2 * F], rng, 1 / Math.sqrt(D));
        const down = randomNormal([F, D], rng, 1 / Math.sqrt(F));
        const dy = randomNormal([sizes.blockTokens, D], rng);
        const gradients = tf.grads((input: tf.Tensor, w: tf.Tensor, u: tf.Tensor, d: tf.Tensor) =>
          tf.add(input, tf.matMul(swiglu(tf.matMul(rmsNorm(input, w), u)), d)),
        );
        return prepared(configuration, [x, norm, up, down, dy], () => gradients([x, norm, up, down], dy));
      },
    }),
    withReference({
      name: names.moe,
      flops: 9 * matmulFlops(sizes.moeTokens * K, D, F) + 3 * matmulFlops(sizes.moeTokens, D, E),
      details: {
        tokens: sizes.moeTokens,
        model: D,
        hidden: F,
        experts: E,
        topK: K,
        path: 'softmax router -> top-K -> gather -> SwiGLU expert -> gates -> unsortedSegmentSum',
        gradientsOver: ['x', 'router', 'expert weights'],
      },
      prepare: (configuration) => {
        const rng = new SeededRandom(seed + 4);
        const x = randomNormal([sizes.moeTokens, D], rng) as tf.Tensor2D;
        const router = randomNormal([D, E], rng, 1 / Math.sqrt(D));
        const ups = Array.from({ length: E }, () => randomNormal([D, 2 * F], rng, 1 / Math.sqrt(D)));
        const downs = Array.from({ length: E }, () => randomNormal([F, D], rng, 1 / Math.sqrt(F)));
        const dy = randomNormal([sizes.moeTokens, D], rng);
        const gradients = tf.grads((...weights: tf.Tensor[]) =>
          moeForward(weights[0] as tf.Tensor2D, weights[1] as tf.Tensor, weights.slice(2, 2 + E), weights.slice(2 + E), K),
        );
        return prepared(configuration, [x, router, ...ups, ...downs, dy], () => gradients([x, router, ...ups, ...downs], dy));
      },
    }),
    ...(['expertLoop', 'grouped'] as const).map((way) =>
      withReference(
        {
          name: names[way],
          group: 'grouped expert FFN',
          flops: 9 * matmulFlops(E * groupRows, D, groupHidden),
          details: {
            experts: E,
            rowsPerExpert: groupRows,
            model: D,
            hidden: groupHidden,
            path: way === 'grouped' ? 'groupedSwigluFfn' : 'split -> per expert matMul / swiglu / matMul -> concat',
            gradientsOver: ['rows', 'expert weights'],
          },
          prepare: (configuration) => {
            const rng = new SeededRandom(seed + 5); // the same inputs for both ways
            const rows = randomNormal([E * groupRows, D], rng) as tf.Tensor2D; // [E·n, D], expert 0's rows first
            const ups = Array.from({ length: E }, () => randomNormal([D, 2 * groupHidden], rng, 1 / Math.sqrt(D))); // E × [D, 2F]
            const downs = Array.from({ length: E }, () => randomNormal([groupHidden, D], rng, 1 / Math.sqrt(groupHidden))); // E × [F, D]
            const dy = randomNormal([E * groupRows, D], rng);
            const experts = (input: tf.Tensor2D, weights: readonly tf.Tensor[]): tf.Tensor => {
              const upWeights = weights.slice(0, E);
              const downWeights = weights.slice(E);
              if (way === 'grouped') return groupedSwigluFfn(input, groupSizes, upWeights, downWeights);
              const blocks = tf.split(input, groupSizes, 0); // E × [n, D]
              return tf.concat(blocks.map((block, e) => tf.matMul(swiglu(tf.matMul(block, upWeights[e] as tf.Tensor)), downWeights[e] as tf.Tensor)), 0);
            };
            const gradients = tf.grads((...inputs: tf.Tensor[]) => experts(inputs[0] as tf.Tensor2D, inputs.slice(1)));
            return prepared(configuration, [rows, ...ups, ...downs, dy], () => gradients([rows, ...ups, ...downs], dy));
          },
        },
        names.expertLoop,
      ),
    ),
  ];

  const peerNote =
    typeof peer === 'string' ? ` PyTorch peer: ${peer}.` : ` PyTorch peer: ${peer.torch}, same run, best of ${peer.threadCounts.join(' and ')} threads per case.`;
  return {
    name: options.name ?? 'native',
    description:
      'wasm with the kit\'s kernel fixes, without and with native acceleration (OpenBLAS sgemm and fused SwiGLU / RMSNorm ' +
      `kernels on the wasm heap; ${accelerationStatus().active ? accelerationStatus().reason : `here: off, ${accelerationStatus().reason}`}), ` +
      'next to PyTorch on the same CPU. GFLOP counts matmuls only.' +
      peerNote,
    configurations: [NATIVE_CONFIGURATIONS.wasmFixes, NATIVE_CONFIGURATIONS.wasmNative],
    cases,
    timing,
    speedup: { baseline: NATIVE_CONFIGURATIONS.wasmFixes.id, candidate: NATIVE_CONFIGURATIONS.wasmNative.id },
    interleave: true, // only the grouped-FFN cases share a group: they are timed round-robin
  };
}

/**
 * Runs the native benchmark from the command line and prints our time over PyTorch's per case.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `native.json` and `native.md`
 */
export async function main(argv: readonly string[]): Promise<void> {
  const options = parseBenchmarkArgs(argv);
  if (options.help) {
    console.log(USAGE);
    return;
  }
  const { result } = await runBenchmark(nativeBenchmark({ quick: options.quick }), { outDir: options.outDir, quick: options.quick });
  for (const c of result.cases) {
    const ours = result.results.find((r) => r.case === c.name && r.configuration === NATIVE_CONFIGURATIONS.wasmNative.id);
    const peerMs = c.reference?.ms[0];
    if (ours?.stats && peerMs !== undefined) console.log(`${c.name}: ours ${ours.stats.medianMs.toFixed(1)} ms / PyTorch ${peerMs.toFixed(1)} ms = ${(ours.stats.medianMs / peerMs).toFixed(2)}×`);
  }
}

runWhenMain(import.meta.url, main, false);
