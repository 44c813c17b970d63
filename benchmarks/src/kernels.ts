/**
 * The kernels benchmark: the products and scatter-adds an MoE training step is made of, on stock
 * cpu, stock wasm and wasm with the kit's kernel fixes (and cpu with fixes where a cpu fix applies).
 *
 * Cases (default sizes: T = 1024 tokens, D = 256, F = 1024, E = 8 experts, top-2):
 * - `matmul` `[T, D] x [D, F]` with each of the four transpose combinations, and two batched
 *   products (`[8, 128, 256] x [8, 256, 1024]`, and the same `x` times one shared `[256, 1024]` weight);
 * - `unsortedSegmentSum` of `[T·K, D]` rows into `T` segments (the scatter-add and `gather`'s gradient);
 * - FFN forward + backward (`tf.grads` over the weights, an explicit upstream gradient), GELU and SwiGLU;
 * - one MoE train step: for each of E SwiGLU experts, gather its rows (`gatherRows`, a fixed random
 *   top-2 assignment), run the FFN, scale by the gates, scatter-add into `[T, D]` (`scatterAddRows`);
 *   gradients over the input, the gates and every weight.
 *
 * GFLOP counts only the matmuls (`2·M·K·N` each); elementwise work is not counted.
 *
 * Time budget: the whole `npm run bench` must finish in 10 minutes on 2 cores, so full mode times cpu
 * once per case and stock wasm with few runs, and skips the cpu cases that take minutes or tens of
 * seconds per run (stock `unsortedSegmentSum`: 119.5 s; the MoE step: 263.5 s stock, 24.1 s with the
 * fixes; last measured on 2026-11-25); their skip messages cite those numbers. `--quick` skips cpu
 * altogether and the FFN cases on stock wasm.
 *
 * Run alone: `tsx --conditions=source src/kernels.ts [--quick] [--out <dir>]`.
 */
import * as tf from '@tensorflow/tfjs';
import { gatherRows, randomNormal, scatterAddRows, SeededRandom } from '@moepp/tensors-core';
import { benchmarkMain, runWhenMain } from './cli.js';
import {
  CONFIGURATIONS,
  type BenchmarkCase,
  type BenchmarkDefinition,
  type Configuration,
  type PreparedCase,
  type TimingPlan,
} from './harness.js';

/** The sizes of the kernels benchmark's cases. */
export interface KernelsBenchmarkSizes {
  /** `[M, K, N]` of the single products. Default `[1024, 256, 1024]`. */
  readonly matmul: readonly [number, number, number];
  /** `[B, M, K, N]` of the batched products. Default `[8, 128, 256, 1024]`. */
  readonly batched: readonly [number, number, number, number];
  /** Tokens `T`, model width `D`, FFN width `F` of the FFN and MoE cases. Default 1024, 256, 1024. */
  readonly tokens: number;
  readonly model: number;
  readonly hidden: number;
  /** Experts `E` and experts per token `K` of the MoE step. Default 8 and 2. */
  readonly experts: number;
  readonly topK: number;
}

/** The sizes of DESIGN.md's measurements. */
export const DEFAULT_SIZES: KernelsBenchmarkSizes = {
  matmul: [1024, 256, 1024],
  batched: [8, 128, 256, 1024],
  tokens: 1024,
  model: 256,
  hidden: 1024,
  experts: 8,
  topK: 2,
};

/** Options of {@link kernelsBenchmark}. */
export interface KernelsBenchmarkOptions {
  /** Case sizes. Default {@link DEFAULT_SIZES}. */
  readonly sizes?: KernelsBenchmarkSizes;
  /** The results' file name. Default `'kernels'`. */
  readonly name?: string;
  /** One timing plan for every case and configuration (tests use one run); default per configuration. */
  readonly timing?: TimingPlan;
  /** Seed of every input and of the expert assignment. Default 1. */
  readonly seed?: number;
}

const STOCK_CPU_IS_SLOW = 'skipped in --quick mode (cpu takes seconds to minutes here)';
const NO_CPU_FIX = 'n/a (no cpu fix applies)';
const STOCK_WASM_FFN_IS_SLOW = 'skipped in --quick mode (seconds per run on stock wasm)';
/** Full-mode skip of the MoE step on cpu with fixes (the fixes make the scatter fast, not the matmuls). */
const MINUTES_ON_CPU_WITH_FIXES =
  'skipped: 24.1 s for one run on 2026-11-25 (the cpu matmuls stay slow), too long for the 10-minute budget of npm run bench';
/** Full-mode skips of the stock-cpu cases that take minutes, with the last measured time. */
const MINUTES_ON_STOCK_CPU = (lastRun: string): string =>
  `skipped: one run takes minutes on stock cpu (${lastRun} for one run on 2026-11-25), too long for the 10-minute budget of npm run bench`;

/** DESIGN.md's peer measurements (PyTorch 1.13 CPU, same kind of machine). */
const PYTORCH_FFN = {
  label: 'PyTorch 1.13 CPU',
  ms: [11, 11] as const,
  source: 'DESIGN.md "Backends and speed" (FFN forward+backward, T=1024, D=256, F=1024; measured separately, not by this harness)',
};
const PYTORCH_MOE = {
  label: 'PyTorch 1.13 CPU',
  ms: [30, 100] as const,
  source: 'DESIGN.md "Backends and speed" (one MoE layer train step, E=8, top-2; measured separately, not by this harness)',
};

function matmulFlops(m: number, k: number, n: number): number {
  return 2 * m * k * n;
}

/** GELU, exact form: `0.5·h·(1 + erf(h/√2))`. */
function gelu(h: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.mul(h, Math.SQRT1_2))));
}

/**
 * GELU MLP: `gelu(x·W1)·W2`.
 *
 * @param x - [T, D]
 * @param w1 - [D, F]
 * @param w2 - [F, D]
 * @returns [T, D]
 */
function ffnGelu(x: tf.Tensor, w1: tf.Tensor, w2: tf.Tensor): tf.Tensor {
  return tf.matMul(gelu(tf.matMul(x, w1)), w2);
}

/**
 * SwiGLU MLP (LLaMA): `(silu(x·Wg) ⊙ x·Wu)·Wd`.
 *
 * @param x - [T, D]
 * @param wGate - [D, F]
 * @param wUp - [D, F]
 * @param wDown - [F, D]
 * @returns [T, D]
 */
function ffnSwiglu(x: tf.Tensor, wGate: tf.Tensor, wUp: tf.Tensor, wDown: tf.Tensor): tf.Tensor {
  const gate = tf.matMul(x, wGate); // [T, F]
  const up = tf.matMul(x, wUp); // [T, F]
  return tf.matMul(tf.mul(tf.mul(gate, tf.sigmoid(gate)), up), wDown); // [T, D]
}

/** A fixed random top-K assignment: per expert, its token ids and the slots (`token·K + k`) of their gates. */
function topKAssignment(tokens: number, experts: number, topK: number, rng: SeededRandom): { tokenIds: number[][]; gateSlots: number[][] } {
  const tokenIds: number[][] = Array.from({ length: experts }, () => []);
  const gateSlots: number[][] = Array.from({ length: experts }, () => []);
  const all = Array.from({ length: experts }, (_, e) => e);
  for (let token = 0; token < tokens; token++) {
    rng.shuffle(all).slice(0, topK).forEach((expert, k) => {
      (tokenIds[expert] as number[]).push(token);
      (gateSlots[expert] as number[]).push(token * topK + k);
    });
  }
  return { tokenIds, gateSlots };
}

function prepared(inputs: tf.Tensor[], run: () => tf.Tensor | tf.Tensor[]): PreparedCase {
  return { run, dispose: () => tf.dispose(inputs) };
}

function matmulCase(
  name: string,
  aShape: number[],
  bShape: number[],
  transposeA: boolean,
  transposeB: boolean,
  flops: number,
  seed: number,
): BenchmarkCase {
  return {
    name,
    flops,
    details: { a: aShape, b: bShape, transposeA, transposeB },
    prepare: () => {
      const rng = new SeededRandom(seed);
      const a = randomNormal(aShape, rng);
      const b = randomNormal(bShape, rng);
      return prepared([a, b], () => tf.matMul(a, b, transposeA, transposeB));
    },
  };
}

/**
 * Builds the kernels benchmark.
 *
 * @param options - sizes, name, a fixed timing plan, seed
 * @returns the benchmark definition, ready for `runBenchmark`
 */
export function kernelsBenchmark(options: KernelsBenchmarkOptions = {}): BenchmarkDefinition {
  const sizes = options.sizes ?? DEFAULT_SIZES;
  const seed = options.seed ?? 1;
  const [m, k, n] = sizes.matmul;
  const [batch, bm, bk, bn] = sizes.batched;
  const { tokens: T, model: D, hidden: F, experts: E, topK: K } = sizes;
  const fixed = options.timing;

  // Stock cpu takes seconds per FFN step and minutes per MoE step: one run, or none (see the module notes).
  const slowOnStockCpu =
    (stockCpuSkip: string | null) =>
    (configuration: Configuration, quick: boolean): TimingPlan | string => {
      if (fixed) return fixed;
      if (configuration.backend === 'cpu' && quick) return STOCK_CPU_IS_SLOW;
      if (configuration.id === CONFIGURATIONS.cpuFixes.id) return stockCpuSkip === null ? NO_CPU_FIX : MINUTES_ON_CPU_WITH_FIXES;
      if (configuration.id === CONFIGURATIONS.cpuStock.id) return stockCpuSkip ?? { warmup: 0, minRepetitions: 1, maxRepetitions: 1 };
      return defaultTiming(configuration, quick);
    };
  // Cases no cpu fix changes: skip the cpu-with-fixes column.
  const noCpuFix = (configuration: Configuration, quick: boolean): TimingPlan | string =>
    configuration.id === CONFIGURATIONS.cpuFixes.id ? NO_CPU_FIX : (fixed ?? defaultTiming(configuration, quick));
  // The FFN cases: seconds per run on stock wasm too, so --quick leaves stock out.
  const noCpuFixSlow = (configuration: Configuration, quick: boolean): TimingPlan | string => {
    if (configuration.id === CONFIGURATIONS.cpuFixes.id) return NO_CPU_FIX;
    if (!fixed && quick && configuration.id === CONFIGURATIONS.wasmStock.id) return STOCK_WASM_FFN_IS_SLOW;
    return slowOnStockCpu(null)(configuration, quick);
  };

  const cases: BenchmarkCase[] = [
    matmulCase(`matmul NN [${m},${k}]·[${k},${n}]`, [m, k], [k, n], false, false, matmulFlops(m, k, n), seed),
    matmulCase(`matmul NT [${m},${k}]·[${n},${k}]ᵀ`, [m, k], [n, k], false, true, matmulFlops(m, k, n), seed + 1),
    matmulCase(`matmul TN [${k},${m}]ᵀ·[${k},${n}]`, [k, m], [k, n], true, false, matmulFlops(m, k, n), seed + 2),
    matmulCase(`matmul TT [${k},${m}]ᵀ·[${n},${k}]ᵀ`, [k, m], [n, k], true, true, matmulFlops(m, k, n), seed + 3),
    matmulCase(
      `batched matmul [${batch},${bm},${bk}]·[${batch},${bk},${bn}]`,
      [batch, bm, bk],
      [batch, bk, bn],
      false,
      false,
      batch * matmulFlops(bm, bk, bn),
      seed + 4,
    ),
    matmulCase(
      `batched matmul, shared weight [${batch},${bm},${bk}]·[${bk},${bn}]`,
      [batch, bm, bk],
      [bk, bn],
      false,
      false,
      batch * matmulFlops(bm, bk, bn),
      seed + 5,
    ),
  ].map((c) => ({ ...c, timing: noCpuFix }));

  cases.push({
    name: `unsortedSegmentSum [${T * K},${D}] into ${T} segments`,
    details: { rows: T * K, width: D, segments: T },
    timing: (configuration, quick) => {
      if (fixed) return fixed;
      if (configuration.id === CONFIGURATIONS.cpuStock.id) return quick ? STOCK_CPU_IS_SLOW : MINUTES_ON_STOCK_CPU('119.5 s');
      // With the fix, cpu takes milliseconds here: time it like wasm with fixes.
      if (configuration.id === CONFIGURATIONS.cpuFixes.id) return defaultTiming(CONFIGURATIONS.wasmFixes, quick);
      return defaultTiming(configuration, quick);
    },
    prepare: () => {
      const rng = new SeededRandom(seed + 6);
      const rows = randomNormal([T * K, D], rng); // [T·K, D]
      const ids = tf.tensor1d(
        topKAssignment(T, E, K, rng).tokenIds.flat(),
        'int32',
      ); // [T·K], each token K times
      return prepared([rows, ids], () => tf.unsortedSegmentSum(rows, ids, T));
    },
  });

  const ffnGeluFlops = 5 * matmulFlops(T, D, F); // forward 2, backward dW2, dH, dW1
  cases.push({
    name: `FFN GELU forward+backward T=${T} D=${D} F=${F}`,
    flops: ffnGeluFlops,
    details: { tokens: T, model: D, hidden: F, activation: 'gelu (erf)', gradientsOver: ['w1', 'w2'] },
    reference: PYTORCH_FFN,
    timing: noCpuFixSlow,
    prepare: () => {
      const rng = new SeededRandom(seed + 7);
      const x = randomNormal([T, D], rng); // [T, D]
      const w1 = randomNormal([D, F], rng, 1 / Math.sqrt(D)); // [D, F]
      const w2 = randomNormal([F, D], rng, 1 / Math.sqrt(F)); // [F, D]
      const dy = randomNormal([T, D], rng); // [T, D] upstream gradient
      const gradients = tf.grads((a: tf.Tensor, b: tf.Tensor) => ffnGelu(x, a, b));
      return prepared([x, w1, w2, dy], () => gradients([w1, w2], dy));
    },
  });

  const ffnSwigluFlops = 7 * matmulFlops(T, D, F); // forward 3, backward dWd, dH, dWg, dWu
  cases.push({
    name: `FFN SwiGLU forward+backward T=${T} D=${D} F=${F}`,
    flops: ffnSwigluFlops,
    details: { tokens: T, model: D, hidden: F, activation: 'swiglu', gradientsOver: ['wGate', 'wUp', 'wDown'] },
    timing: noCpuFixSlow,
    prepare: () => {
      const rng = new SeededRandom(seed + 8);
      const x = randomNormal([T, D], rng);
      const wGate = randomNormal([D, F], rng, 1 / Math.sqrt(D));
      const wUp = randomNormal([D, F], rng, 1 / Math.sqrt(D));
      const wDown = randomNormal([F, D], rng, 1 / Math.sqrt(F));
      const dy = randomNormal([T, D], rng);
      const gradients = tf.grads((g: tf.Tensor, u: tf.Tensor, d: tf.Tensor) => ffnSwiglu(x, g, u, d));
      return prepared([x, wGate, wUp, wDown, dy], () => gradients([wGate, wUp, wDown], dy));
    },
  });

  // forward 3 matmuls, backward dWd, dH, dWg, dWu, and dRows through Wg and Wu: 9 per routed token
  const moeFlops = 9 * matmulFlops(T * K, D, F);
  cases.push({
    name: `MoE train step E=${E} top-${K} T=${T} D=${D} F=${F} (SwiGLU experts)`,
    flops: moeFlops,
    details: {
      tokens: T,
      model: D,
      hidden: F,
      experts: E,
      topK: K,
      routing: 'fixed random top-K assignment',
      path: 'gather -> SwiGLU FFN -> gates -> unsortedSegmentSum',
      gradientsOver: ['x', 'gates', 'expert weights'],
    },
    reference: PYTORCH_MOE,
    timing: slowOnStockCpu(MINUTES_ON_STOCK_CPU('263.5 s')),
    prepare: () => {
      const rng = new SeededRandom(seed + 9);
      const { tokenIds, gateSlots } = topKAssignment(T, E, K, rng);
      const x = randomNormal([T, D], rng); // [T, D]
      const gates = tf.tensor1d(Float32Array.from({ length: T * K }, () => rng.uniform(0.1, 0.9))); // [T·K]
      const weights = Array.from({ length: E }, () => [
        randomNormal([D, F], rng, 1 / Math.sqrt(D)), // wGate [D, F]
        randomNormal([D, F], rng, 1 / Math.sqrt(D)), // wUp [D, F]
        randomNormal([F, D], rng, 1 / Math.sqrt(F)), // wDown [F, D]
      ]).flat();
      const ids = tokenIds.map((list) => tf.tensor1d(list, 'int32')); // [n_e] each
      const slots = gateSlots.map((list) => tf.tensor1d(list, 'int32')); // [n_e] each
      const dy = randomNormal([T, D], rng); // [T, D] upstream gradient
      const layer = (input: tf.Tensor, gateValues: tf.Tensor, ...expertWeights: tf.Tensor[]): tf.Tensor => {
        let output: tf.Tensor = tf.zeros([T, D]); // [T, D]
        for (let expert = 0; expert < E; expert++) {
          const tokensOfExpert = ids[expert] as tf.Tensor1D; // [n_e]
          const rows = gatherRows(input as tf.Tensor2D, tokensOfExpert); // [n_e, D]
          const expertOut = ffnSwiglu(
            rows,
            expertWeights[3 * expert] as tf.Tensor,
            expertWeights[3 * expert + 1] as tf.Tensor,
            expertWeights[3 * expert + 2] as tf.Tensor,
          ); // [n_e, D]
          const expertGates = tf.reshape(tf.gather(gateValues, slots[expert] as tf.Tensor1D), [-1, 1]); // [n_e, 1]
          output = tf.add(output, scatterAddRows(tf.mul(expertOut, expertGates) as tf.Tensor2D, tokensOfExpert, T));
        }
        return output;
      };
      const gradients = tf.grads(layer);
      return prepared([x, gates, ...weights, ...ids, ...slots, dy], () => gradients([x, gates, ...weights], dy));
    },
  });

  return {
    name: options.name ?? 'kernels',
    description:
      'Matmuls, the scatter-add, FFN forward+backward and one MoE train step, on stock cpu, stock wasm and wasm ' +
      "with the kit's kernel fixes (cpu with fixes where a cpu fix applies). GFLOP counts matmuls only.",
    configurations: [CONFIGURATIONS.cpuStock, CONFIGURATIONS.cpuFixes, CONFIGURATIONS.wasmStock, CONFIGURATIONS.wasmFixes],
    cases,
    timing: (configuration, quick) => fixed ?? defaultTiming(configuration, quick),
    speedup: { baseline: CONFIGURATIONS.wasmStock.id, candidate: CONFIGURATIONS.wasmFixes.id },
  };
}

/**
 * Default timing: cpu (a second or more per matmul, no JIT warm-up to speak of) gets one run and no
 * warm-up (none in quick mode); stock wasm (naive loops, 1–4 s per slow case) two runs without warm-up
 * (one in quick mode); wasm with fixes two warm-ups and at least 3 runs, up to a budget of 1.5 s (quick:
 * one warm-up, 2–3 runs).
 */
function defaultTiming(configuration: Configuration, quick: boolean): TimingPlan | string {
  if (configuration.backend === 'cpu') {
    return quick ? STOCK_CPU_IS_SLOW : { warmup: 0, minRepetitions: 1, maxRepetitions: 1 };
  }
  if (!configuration.kernelFixes) {
    return quick ? { warmup: 0, minRepetitions: 1, maxRepetitions: 1 } : { warmup: 0, minRepetitions: 2, maxRepetitions: 2 };
  }
  return quick ? { warmup: 1, minRepetitions: 2, maxRepetitions: 3, budgetMs: 500 } : { warmup: 2, minRepetitions: 3, maxRepetitions: 12, budgetMs: 1500 };
}

/**
 * Runs the kernels benchmark from the command line.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `kernels.json` and `kernels.md`
 */
export const main = benchmarkMain(() => kernelsBenchmark());

runWhenMain(import.meta.url, main, false);
