/**
 * The layer benchmark: the MoE++ throughput claim (arXiv 2410.07348, §3–4, Table 3), measured.
 *
 * One `MoeLayer` of `@moepp/models` at the same width for both families (default D = 256, F = 512, the
 * `small` preset's layer; SwiGLU experts, top-2, dropless):
 * - MoE: E FFN experts (E = 8 and 16);
 * - MoE++: the same E FFN experts plus 1 zero, 1 copy and 2 constant experts, the paper's (E+4) layout.
 *
 * Two kinds of routing:
 * - **forced** (`uniformRouting: { ffnShare: r }`): balanced routing with exactly the share
 *   `r = tau·E / (tau·E + 4)` of the slots on FFN experts (moepp.md §3), for tau in
 *   {0.1, 0.25, 0.5, 0.75, 1}; the MoE gets `ffnShare: 1`;
 * - **trained**: the layer's own router, trained for a few hundred steps on the router's own objective
 *   (`0.01·L_b + 0.001·L_z`: the heterogeneous load-balance loss of Eq. 7 with that tau, and the z-loss;
 *   no task loss, experts untouched) on tokens drawn from 64 clusters, then run as it routes on fresh
 *   tokens from the same clusters. The JSON reports the FFN share it reached; the MoE's router is
 *   trained the same way (tau is moot without zero-computation experts).
 *
 * Each case times the whole layer, forward alone (inference: `auxiliary: false`, no aux losses) or
 * forward + backward (a training step: the router computes its aux losses; `tf.variableGrads` of
 * `sum(output · dy)` over the input and every layer weight, all gradients read back), for T = 1024 and
 * 4096 tokens. The cases of one (E, T, pass) are timed round-robin so that the machine's load hits
 * MoE and MoE++ alike. The summary gives tokens/s, the layer's own expert-forward time, the speed-up over
 * the MoE at the same E (medians of wall time; also from CPU time and from the fastest runs), the ideal
 * `1/r` and measured/ideal.
 *
 * Configurations: wasm with the kit's fixes, and the same with native acceleration (OpenBLAS `sgemm` on
 * the wasm heap, the kit's default where OpenBLAS is installed; skipped with the reason elsewhere). To
 * fit the time budget, the trained-router cases run on wasm with fixes only and (in full mode) at
 * T = 4096 only, and `--quick` runs wasm with fixes at T = 1024 and E = 8 only, with the routers of the
 * smallest and largest tau trained for 60 steps.
 *
 * Which clock: the process's CPU time where the work runs on one thread (wasm with fixes: the time the
 * process waited for a core while other jobs ran does not count), wall time where OpenBLAS runs two
 * threads (native acceleration). Both are in the JSON, with the speed-up from each case's fastest run.
 *
 * After the timed runs, a profile of the largest T splits the forward pass into the layer's steps,
 * timed one call at a time with the same ops (`router`, `dispatch plan`, `gather` of the FFN rows,
 * `FFN experts`, `scale by gates`, `copy/constant experts` (per token, no scatter), `combine` (the FFN
 * rows' scatter-add and the sum with the copy/constant part)), and lists the kernels of the router and of
 * forward + backward with `tf.profile`. Where measured/ideal < 0.9 the summary says which steps and
 * kernels take the time that did not shrink with r.
 *
 * Run alone: `tsx --conditions=source src/layer.ts [--quick] [--out <dir>]`.
 */
import * as tf from '@tensorflow/tfjs';
import { accelerationStatus, planDispatch, randomNormal, SeededRandom } from '@moepp/tensors-core';
import { DEFAULT_MOE_SETTINGS, ffnShare, MoeLayer, uniformAssignment, type MoeForwardOptions, type MoeSettings } from '@moepp/models';
import { benchmarkMain, runWhenMain } from './cli.js';
import {
  CONFIGURATIONS,
  formatMs,
  median,
  type BenchmarkCase,
  type BenchmarkDefinition,
  type BenchmarkResult,
  type BenchmarkSession,
  type BenchmarkSummary,
  type Configuration,
  type PreparedCase,
  type TimingPlan,
  type TimingStats,
} from './harness.js';

/** A timed pass: the forward pass alone, or forward and backward. */
export type LayerPass = 'forward' | 'forward+backward';

/** The zero-computation experts of every MoE++ layer here: the paper's 1 zero, 1 copy, 2 constant. */
export const ZERO_COMPUTATION_EXPERTS = { zero: 1, copy: 1, constant: 2 } as const;

/** The paper's Table 3 (expert forward time, 100B tokens; moepp.md §4): speed-up of MoE++ over MoE. */
export const PAPER_TABLE3: Readonly<Record<number, Readonly<Record<string, number>>>> = {
  8: { '0.1': 2.65, '0.25': 1.93, '0.5': 1.38, '0.75': 1.25, '1': 1.19 },
  16: { '0.1': 2.11, '0.25': 1.59, '0.5': 1.3, '0.75': 1.22, '1': 1.15 },
};

/** How the routers of the trained-routing cases are trained. */
export interface RouterTrainingOptions {
  /** Optimiser steps (Adam). Default 200. */
  readonly steps: number;
  /** Steps in `--quick` mode. Default 60. */
  readonly quickSteps: number;
  /** Tokens per step. Default 256. */
  readonly batchTokens: number;
  /** Adam learning rate. Default 0.01. */
  readonly learningRate: number;
  /** Clusters the tokens are drawn from (centre ~ N(0, I), noise std 0.5, then RMS-normalised). Default 64. */
  readonly clusters: number;
}

/** Options of {@link layerBenchmark}. */
export interface LayerBenchmarkOptions {
  /** The results' file name. Default `'layer'`. */
  readonly name?: string;
  /** D. Default 256. */
  readonly hiddenSize?: number;
  /** F, the width of one FFN expert. Default 512 (F = 2·D, as the kit's presets; the paper has F ≈ 2.67·D). */
  readonly intermediateSize?: number;
  /** FFN experts E of the compared layers. Default `[8, 16]` (the paper's (8+4) and (16+4)). */
  readonly ffnExperts?: readonly number[];
  /** tau values of the MoE++ layers. Default `[0.1, 0.25, 0.5, 0.75, 1]` (Table 3). */
  readonly taus?: readonly number[];
  /** Token counts T. Default `[1024, 4096]`. */
  readonly tokens?: readonly number[];
  /** The token counts that also run in `--quick` mode. Default: the smallest of `tokens`. */
  readonly quickTokens?: readonly number[];
  /** The FFN expert counts that run in `--quick` mode. Default `[8]`. */
  readonly quickFfnExperts?: readonly number[];
  /** Passes. Default both. */
  readonly passes?: readonly LayerPass[];
  /** Router training of the trained-routing cases; `null` for no such cases. */
  readonly training?: Partial<RouterTrainingOptions> | null;
  /** One timing plan for every case (tests); default per mode. */
  readonly timing?: TimingPlan;
  /** Profile the largest T after the timed runs. Default true. */
  readonly profile?: boolean;
  /** Seed of every weight and input. Default 1. */
  readonly seed?: number;
  /** Configurations. Default wasm with fixes, and wasm with fixes + native acceleration. */
  readonly configurations?: readonly Configuration[];
  /** Configurations (ids) the trained-router cases run on. Default wasm with fixes only (time budget). */
  readonly trainedOn?: readonly string[];
  /** Configurations (ids) that run in `--quick` mode. Default wasm with fixes only. */
  readonly quickConfigurations?: readonly string[];
}

/** Default router training. */
export const DEFAULT_ROUTER_TRAINING: RouterTrainingOptions = {
  steps: 200,
  quickSteps: 60,
  batchTokens: 256,
  learningRate: 0.01,
  clusters: 64,
};

/** Which layer a case runs. */
interface Variant {
  readonly family: 'moe' | 'moepp';
  /** FFN experts. */
  readonly ffnExperts: number;
  /** MoE++ only. */
  readonly tau: number | null;
  readonly routing: 'forced' | 'trained';
}

/** The ideal FFN share of a variant: 1 for MoE, `r` for MoE++. */
function idealShare(variant: Variant): number {
  if (variant.family === 'moe' || variant.tau === null) return 1;
  return ffnShare({ tau: variant.tau, experts: { ffn: variant.ffnExperts, ...ZERO_COMPUTATION_EXPERTS } });
}

function variantKey(variant: Variant): string {
  return variant.family === 'moe' ? `moe-${variant.ffnExperts}-${variant.routing}` : `moepp-${variant.ffnExperts}-${variant.tau}-${variant.routing}`;
}

function variantLabel(variant: Variant): string {
  const routing = variant.routing === 'forced' ? 'forced routing' : 'trained router';
  if (variant.family === 'moe') return `MoE ${variant.ffnExperts}E, ${routing}`;
  return `MoE++ (${variant.ffnExperts}+4)E tau=${variant.tau}, ${routing}`;
}

function groupName(ffnExperts: number, tokens: number, pass: LayerPass): string {
  return `E=${ffnExperts} T=${tokens} ${pass}`;
}

/** The MoE settings of a variant (the kit's defaults: the released 7B's switches, dropless). */
function moeSettings(variant: Variant): MoeSettings {
  return variant.family === 'moe'
    ? { ...DEFAULT_MOE_SETTINGS, experts: { ffn: variant.ffnExperts, zero: 0, copy: 0, constant: 0 }, gatingResidual: false, tau: 1 }
    : {
        ...DEFAULT_MOE_SETTINGS,
        experts: { ffn: variant.ffnExperts, ...ZERO_COMPUTATION_EXPERTS },
        gatingResidual: true,
        tau: variant.tau ?? DEFAULT_MOE_SETTINGS.tau,
      };
}

/**
 * Tokens drawn from clusters: `x = c_j + 0.5·noise`, RMS-normalised (as the layer sees them after RMSNorm).
 *
 * @param centres - `[C, D]` cluster centres
 * @param count - N
 * @param rng - draws the clusters and the noise
 * @returns `[N, D]` float32
 */
function clusteredTokens(centres: tf.Tensor2D, count: number, rng: SeededRandom): tf.Tensor2D {
  return tf.tidy(() => {
    const [clusters, width] = centres.shape;
    const ids = tf.tensor1d(Array.from({ length: count }, () => rng.int(clusters)), 'int32'); // [N]
    const x = tf.add(tf.gather(centres, ids), randomNormal([count, width], rng, 0.5)); // [N, D]
    return tf.div(x, tf.sqrt(tf.mean(tf.square(x), 1, true))) as tf.Tensor2D;
  });
}

/** What router training reached. */
export interface RouterTrainingRecord {
  readonly variant: string;
  readonly ffnExperts: number;
  readonly tau: number | null;
  readonly steps: number;
  readonly batchTokens: number;
  /** `0.01·L_b + 0.001·L_z` at the first and the last step. */
  readonly firstLoss: number;
  readonly lastLoss: number;
  /** Ideal FFN share `r` (1 for MoE). */
  readonly idealShare: number;
  /** FFN share of the slots on the held-out tokens the benchmark then runs on, per T. */
  readonly achievedShare: Readonly<Record<string, number>>;
  /** Wall time of the training, ms. */
  readonly trainingMs: number;
}

/**
 * Trains a layer's router on its own objective (see the module notes).
 *
 * @param layer - the layer whose router weights are trained in place
 * @param centres - `[C, D]` cluster centres of the token distribution
 * @param options - steps, batch, learning rate
 * @param steps - how many steps to run
 * @param seed - seeds the batches
 * @returns the loss at the first and the last step
 */
function trainRouter(
  layer: MoeLayer,
  centres: tf.Tensor2D,
  options: RouterTrainingOptions,
  steps: number,
  seed: number,
): { firstLoss: number; lastLoss: number } {
  // The gate map only matters with a previous layer's logits; a lone layer never uses it.
  const variables = Object.entries(layer.router.weights)
    .filter(([name]) => name !== 'gateMap')
    .map(([, variable]) => variable);
  const optimizer = tf.train.adam(options.learningRate);
  const rng = new SeededRandom(seed);
  let firstLoss = Number.NaN;
  let lastLoss = Number.NaN;
  try {
    for (let step = 0; step < steps; step++) {
      const x = clusteredTokens(centres, options.batchTokens, rng); // [n, D]
      const loss = optimizer.minimize(
        () => {
          const routed = layer.router.route(x, { training: true });
          const { loadBalance, zLoss } = routed.auxLosses;
          if (loadBalance === undefined || zLoss === undefined) throw new Error('layer benchmark: the router reports no loadBalance or zLoss');
          return tf.add(tf.mul(0.01, loadBalance), tf.mul(0.001, zLoss)) as tf.Scalar;
        },
        true,
        variables,
      );
      if (step === 0 || step === steps - 1) {
        const value = loss?.dataSync()[0] ?? Number.NaN;
        if (step === 0) firstLoss = value;
        lastLoss = value;
      }
      tf.dispose([x, loss as tf.Scalar]);
    }
  } finally {
    optimizer.dispose();
  }
  return { firstLoss, lastLoss };
}

/** The share of routed slots that reached FFN experts, from the layer's counts. */
function achievedShareOf(layer: MoeLayer, tokensPerExpert: readonly number[], tokens: number): number {
  const ffnSlots = tokensPerExpert.reduce((sum, count, e) => sum + (layer.kinds[e] === 'ffn' ? count : 0), 0);
  return ffnSlots / (tokens * layer.config.topK);
}

/** The resources of a run on one configuration: layers, inputs, trained routers. */
interface LayerSession {
  readonly layers: Map<string, MoeLayer>;
  /** Per T: `[T, D]` tokens and `[T, D]` upstream gradient. */
  readonly inputs: Map<number, { x: tf.Tensor2D; dy: tf.Tensor2D }>;
  readonly training: RouterTrainingRecord[];
  readonly tokensRun: readonly number[];
}

/** One forward pass split into the layer's steps (ms, wall and CPU). */
interface PhaseTimes {
  readonly wallMs: Readonly<Record<string, number>>;
  readonly cpuMs: Readonly<Record<string, number>>;
}

/** The steps of `MoeLayer.forward`, in order. */
export const FORWARD_PHASES = [
  'router',
  'forced assignment',
  'dispatch plan',
  'gather',
  'FFN experts',
  'copy/constant experts',
  'scale by gates',
  'combine',
] as const;

/**
 * One forward pass of a layer, step by step, with the ops `MoeLayer.forward` uses (wasm and cpu run a
 * kernel inside the op call, so timing each call times its kernels).
 *
 * @param layer - the layer
 * @param x - `[N, D]` tokens
 * @param forcedShare - the FFN share of forced routing, or null for the layer's router
 * @returns the time of each step
 */
function timeForwardPhases(layer: MoeLayer, x: tf.Tensor2D, forcedShare: number | null): PhaseTimes {
  const wallMs: Record<string, number> = Object.fromEntries(FORWARD_PHASES.map((p) => [p, 0]));
  const cpuMs: Record<string, number> = Object.fromEntries(FORWARD_PHASES.map((p) => [p, 0]));
  const timed = <T>(phase: (typeof FORWARD_PHASES)[number], fn: () => T): T => {
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    const value = fn();
    wallMs[phase] = (wallMs[phase] as number) + performance.now() - start;
    const cpu = process.cpuUsage(cpuStart);
    cpuMs[phase] = (cpuMs[phase] as number) + (cpu.user + cpu.system) / 1000;
    return value;
  };
  tf.tidy(() => {
    const numTokens = x.shape[0];
    const topK = layer.config.topK;
    const routed = timed('router', () => layer.router.route(x, { training: false, previousLogits: null }));
    let { expertIndices, combineWeights, keepMask } = routed; // [N, K] each
    if (forcedShare !== null) {
      ({ expertIndices, combineWeights, keepMask } = timed('forced assignment', () => {
        const indices = uniformAssignment(numTokens, topK, layer.kinds, forcedShare);
        const weights = tf.fill([numTokens, topK], 1 / topK) as tf.Tensor2D;
        return { expertIndices: indices, combineWeights: weights, keepMask: tf.onesLike(weights) };
      }));
    }
    const plan = timed('dispatch plan', () => planDispatch(expertIndices, layer.numExperts, keepMask));
    const picked = (kind: string) => layer.kinds.flatMap((k, e) => (k === kind && (plan.counts[e] as number) > 0 ? [e] : []));
    // FFN experts: their rows gathered once in expert order, run per expert, scaled, scattered.
    const ffn = picked('ffn');
    let ffnOutput: tf.Tensor2D | null = null; // [N, D] the FFN rows scatter-added
    if (ffn.length > 0) {
      const concatIds = (ids: tf.Tensor1D[]) => (ids.length === 1 ? (ids[0] as tf.Tensor1D) : (tf.concat(ids) as tf.Tensor1D));
      const { tokenIds, rows, gates } = timed('gather', () => {
        const tokenIds = concatIds(ffn.map((e) => plan.tokenIds[e] as tf.Tensor1D)); // [M]
        const slotIds = concatIds(ffn.map((e) => plan.slotIds[e] as tf.Tensor1D)); // [M]
        return {
          tokenIds,
          rows: tf.gather(x, tokenIds) as tf.Tensor2D, // [M, D]
          gates: tf.gather(combineWeights.reshape([numTokens * topK]), slotIds).reshape([-1, 1]), // [M, 1]
        };
      });
      const y = timed('FFN experts', () => {
        if (ffn.length === 1) return layer.experts[ffn[0] as number]!.apply(rows);
        const blocks = tf.split(rows, ffn.map((e) => plan.counts[e] as number), 0) as tf.Tensor2D[];
        return tf.concat(blocks.map((block, i) => layer.experts[ffn[i] as number]!.apply(block)), 0); // [M, D]
      });
      const scaled = timed('scale by gates', () => tf.mul(y, gates) as tf.Tensor2D);
      ffnOutput = timed('combine', () => tf.unsortedSegmentSum(scaled, tokenIds, numTokens) as tf.Tensor2D);
    }
    // Copy and constant experts, per token (no gather, no scatter): the terms x ⊙ w and G·V.
    const copies = picked('copy');
    const constants = picked('constant');
    const terms: tf.Tensor2D[] = ffnOutput ? [ffnOutput] : []; // [N, D] each
    if (copies.length + constants.length > 0) {
      terms.push(
        ...timed('copy/constant experts', (): tf.Tensor2D[] => {
          const columns = [...(copies.length > 0 ? [copies] : []), ...constants.map((e) => [e])];
          const table = tf.tensor2d(layer.kinds.map((_, e) => columns.map((members) => (members.includes(e) ? 1 : 0))), [layer.numExperts, columns.length]); // [E, J]
          const slotWeights = tf.mul(combineWeights, keepMask); // [N, K]
          const gates = tf.sum(tf.mul(tf.gather(table, expertIndices), tf.expandDims(slotWeights, 2)), 1) as tf.Tensor2D; // [N, J]
          if (constants.length === 0) return [tf.mul(x, gates) as tf.Tensor2D];
          const count = constants.length;
          const mixWeight = count === 1 ? layer.experts[constants[0]!]!.weights.wg! : tf.concat(constants.map((e) => layer.experts[e]!.weights.wg!), 1); // [D, 2C]
          const mix = tf.softmax(tf.matMul(x, mixWeight).reshape([numTokens, count, 2])); // [N, C, 2]
          const [keepInput, takeConstant] = tf.split(mix, 2, 2).map((a) => a.reshape([numTokens, count]));
          const constantGates = copies.length > 0 ? tf.slice(gates, [0, 1], [numTokens, count]) : gates; // [N, C]
          let inputWeight = tf.sum(tf.mul(constantGates, keepInput!), 1, true); // [N, 1]
          if (copies.length > 0) inputWeight = tf.add(inputWeight, tf.slice(gates, [0, 0], [numTokens, 1]));
          const vectors = tf.stack(constants.map((e) => layer.experts[e]!.weights.constant!)) as tf.Tensor2D; // [C, D]
          return [tf.mul(x, inputWeight) as tf.Tensor2D, tf.matMul(tf.mul(constantGates, takeConstant!) as tf.Tensor2D, vectors) as tf.Tensor2D];
        }),
      );
    }
    timed('combine', () => {
      const output = terms.length === 0 ? tf.zerosLike(x) : terms.length === 1 ? terms[0]! : tf.addN(terms);
      output.dataSync();
    });
    plan.dispose();
  });
  return { wallMs, cpuMs };
}

/** Kernel totals of one call under `tf.profile`, ms by kernel name, largest first. */
async function kernelTimes(fn: () => tf.TensorContainer): Promise<Record<string, number>> {
  const info = await tf.profile(() => {
    const out = tf.tidy(fn);
    tf.dispose(out);
  });
  const totals = new Map<string, number>();
  for (const kernel of info.kernels) {
    const ms = typeof kernel.kernelTimeMs === 'number' ? kernel.kernelTimeMs : 0;
    totals.set(kernel.name, (totals.get(kernel.name) ?? 0) + ms);
  }
  return Object.fromEntries([...totals.entries()].sort((a, b) => b[1] - a[1]).map(([name, ms]) => [name, round(ms, 3)]));
}

function round(value: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** The variables a forward+backward case differentiates: every layer weight. */
function layerVariables(layer: MoeLayer): tf.Variable[] {
  return [...Object.values(layer.router.weights), ...layer.experts.flatMap((expert) => Object.values(expert.weights))];
}

/**
 * One forward + backward pass: `sum(output · dy)` differentiated w.r.t. `x` and every layer weight.
 *
 * @returns the loss and one sum per gradient (so that every gradient is computed and read back)
 */
function forwardBackward(
  layer: MoeLayer,
  x: tf.Variable,
  dy: tf.Tensor2D,
  options: MoeForwardOptions,
  onForward: (output: { expertForwardMs: number; tokensPerExpert: readonly number[] }) => void,
): tf.Tensor[] {
  return tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => {
      const out = layer.forward(x as unknown as tf.Tensor2D, options);
      onForward(out);
      return tf.sum(tf.mul(out.output, dy)) as tf.Scalar;
    }, [x, ...layerVariables(layer)]);
    return [value, tf.stack(Object.values(grads).map((g) => tf.sum(g)))];
  });
}

/**
 * Builds the layer benchmark.
 *
 * @param options - sizes, experts, taus, tokens, passes, router training, fixed timing, profile, seed
 * @returns the benchmark definition, ready for `runBenchmark`
 */
export function layerBenchmark(options: LayerBenchmarkOptions = {}): BenchmarkDefinition {
  const hiddenSize = options.hiddenSize ?? 256;
  const intermediateSize = options.intermediateSize ?? 512;
  const ffnExpertCounts = options.ffnExperts ?? [8, 16];
  const taus = options.taus ?? [0.1, 0.25, 0.5, 0.75, 1];
  const tokenCounts = options.tokens ?? [1024, 4096];
  const quickTokens = options.quickTokens ?? [Math.min(...tokenCounts)];
  const maxTokens = Math.max(...tokenCounts);
  const passes = options.passes ?? (['forward', 'forward+backward'] as const);
  const training: RouterTrainingOptions | null = options.training === null ? null : { ...DEFAULT_ROUTER_TRAINING, ...options.training };
  const seed = options.seed ?? 1;
  const profile = options.profile ?? true;
  const fixed = options.timing;
  const configurations = options.configurations ?? [CONFIGURATIONS.wasmFixes, CONFIGURATIONS.wasmNative];
  const trainedOn = options.trainedOn ?? [CONFIGURATIONS.wasmFixes.id];
  const quickConfigurations = options.quickConfigurations ?? [CONFIGURATIONS.wasmFixes.id];

  const variantsOf = (ffnExperts: number): Variant[] => {
    const forced: Variant[] = [
      { family: 'moe', ffnExperts, tau: null, routing: 'forced' },
      ...taus.map((tau): Variant => ({ family: 'moepp', ffnExperts, tau, routing: 'forced' })),
    ];
    const trained: Variant[] = training
      ? [
          { family: 'moe', ffnExperts, tau: null, routing: 'trained' },
          ...taus.map((tau): Variant => ({ family: 'moepp', ffnExperts, tau, routing: 'trained' })),
        ]
      : [];
    return [...forced, ...trained];
  };
  /** Forced-routing MoE++ cases share one layer per E (the forced share is a forward option). */
  const layerKey = (variant: Variant): string =>
    variant.routing === 'forced' ? `${variant.family}-${variant.ffnExperts}-forced` : variantKey(variant);
  const quickFfnExperts = options.quickFfnExperts ?? [8];
  // --quick trains the routers of the extreme taus only (and the MoE's).
  const quickTrainedTaus = [Math.min(...taus), Math.max(...taus)];
  const trainedInQuick = (variant: Variant): boolean => variant.tau === null || quickTrainedTaus.includes(variant.tau);

  let session: LayerSession | null = null;
  const caseMeta = new Map<string, { variant: Variant; tokens: number; pass: LayerPass }>();
  const cases: BenchmarkCase[] = [];
  for (const tokens of [...tokenCounts].sort((a, b) => a - b)) {
    for (const pass of passes) {
      for (const ffnExperts of ffnExpertCounts) {
        for (const variant of variantsOf(ffnExperts)) {
          const r = idealShare(variant);
          const name = `${groupName(ffnExperts, tokens, pass)}: ${variantLabel(variant)}`;
          caseMeta.set(name, { variant, tokens, pass });
          cases.push({
            name,
            group: groupName(ffnExperts, tokens, pass),
            details: {
              family: variant.family,
              ffnExperts,
              zeroComputationExperts: variant.family === 'moepp' ? ZERO_COMPUTATION_EXPERTS : null,
              tau: variant.tau,
              idealFfnShare: r,
              routing: variant.routing,
              tokens,
              pass,
              hiddenSize,
              intermediateSize,
              topK: DEFAULT_MOE_SETTINGS.topK,
            },
            timing: (configuration, quick) => {
              if (variant.routing === 'trained' && !trainedOn.includes(configuration.id)) {
                return `trained routers are timed on ${trainedOn.join(', ')} only (time budget)`;
              }
              if (fixed) return fixed;
              if (quick && !quickConfigurations.includes(configuration.id)) return 'skipped in --quick mode';
              if (quick && !quickTokens.includes(tokens)) return `skipped in --quick mode (T=${tokens})`;
              if (quick && !quickFfnExperts.includes(ffnExperts)) return `skipped in --quick mode (E=${quickFfnExperts.join(', ')} only)`;
              if (quick && variant.routing === 'trained' && !trainedInQuick(variant)) {
                return `skipped in --quick mode (trained routers: tau=${quickTrainedTaus.join(', ')} only)`;
              }
              if (!quick && variant.routing === 'trained' && tokens !== maxTokens) return `trained routers are timed at T=${maxTokens} in full mode (time budget)`;
              if (quick) return { warmup: 1, minRepetitions: 2, maxRepetitions: 3, budgetMs: 3000 };
              return tokens >= 4096 ? { warmup: 1, minRepetitions: 4, maxRepetitions: 4 } : { warmup: 1, minRepetitions: 3, maxRepetitions: 5, budgetMs: 5000 };
            },
            prepare: () => {
              const current = session;
              if (current === null) throw new Error('layer benchmark: no session (setup did not run)');
              const layer = current.layers.get(layerKey(variant));
              const input = current.inputs.get(tokens);
              if (layer === undefined || input === undefined) throw new Error(`layer benchmark: no layer or input for '${name}'`);
              // Forward alone is inference: no aux losses (as generation and evaluation run it). Forward+backward
              // is a training step: the router computes its losses as training does.
              const forwardOptions: MoeForwardOptions = {
                ...(variant.routing === 'forced' ? { uniformRouting: { ffnShare: r } } : {}),
                auxiliary: pass === 'forward+backward',
              };
              const expertMs: number[] = [];
              const shares: number[] = [];
              const record = (out: { expertForwardMs: number; tokensPerExpert: readonly number[] }) => {
                expertMs.push(out.expertForwardMs);
                shares.push(achievedShareOf(layer, out.tokensPerExpert, tokens));
              };
              const xVariable = pass === 'forward+backward' ? tf.variable(input.x, true) : null;
              const prepared: PreparedCase = {
                run:
                  xVariable === null
                    ? () =>
                        tf.tidy(() => {
                          const out = layer.forward(input.x, forwardOptions);
                          record(out);
                          return out.output;
                        })
                    : () => forwardBackward(layer, xVariable, input.dy, forwardOptions, record),
                dispose: () => xVariable?.dispose(),
                info: (stats: TimingStats) => {
                  const timed = expertMs.slice(-stats.repetitions);
                  return {
                    expertForwardMsMedian: round(median(timed), 3),
                    expertForwardMsSamples: timed.map((ms) => round(ms, 3)),
                    achievedFfnShare: round(shares.at(-1) ?? Number.NaN, 4),
                    idealFfnShare: round(r, 4),
                  };
                },
              };
              return prepared;
            },
          });
        }
      }
    }
  }

  return {
    name: options.name ?? 'layer',
    description:
      `One MoE layer vs one MoE++ layer at the same width (D=${hiddenSize}, F=${intermediateSize}, SwiGLU, top-2, dropless): ` +
      `MoE with E FFN experts vs MoE++ with the same E plus 1 zero, 1 copy and 2 constant experts, E in {${ffnExpertCounts.join(', ')}}; ` +
      `routing forced to the FFN share r = tau·E/(tau·E+4) for tau in {${taus.join(', ')}}` +
      (training ? `, and the layer's own router trained ${training.steps} steps on 0.01·L_b(tau) + 0.001·L_z` : '') +
      `; forward and forward+backward, T in {${tokenCounts.join(', ')}} tokens. Cases of one (E, T, pass) are timed round-robin. ` +
      `Trained routers run on ${trainedOn.join(', ')} only.`,
    configurations,
    cases,
    interleave: true,
    timing: () => fixed ?? { warmup: 1, minRepetitions: 3, maxRepetitions: 5 },
    setup: async (configuration, { quick, log }) => {
      const quickRun = quick && !fixed;
      // Nothing runs here in --quick mode: build no layers, profile nothing.
      if (quickRun && !quickConfigurations.includes(configuration.id)) return { dispose: () => {} };
      const tokensRun = quickRun ? quickTokens : tokenCounts;
      const expertCountsRun = quickRun ? ffnExpertCounts.filter((e) => quickFfnExperts.includes(e)) : ffnExpertCounts;
      const rng = new SeededRandom(seed);
      const centres = randomNormal([training?.clusters ?? DEFAULT_ROUTER_TRAINING.clusters, hiddenSize], rng) as tf.Tensor2D; // [C, D]
      const inputs = new Map<number, { x: tf.Tensor2D; dy: tf.Tensor2D }>();
      for (const tokens of tokensRun) {
        inputs.set(tokens, { x: clusteredTokens(centres, tokens, rng.fork()), dy: randomNormal([tokens, hiddenSize], rng.fork()) as tf.Tensor2D });
      }
      const layers = new Map<string, MoeLayer>();
      const trainingRecords: RouterTrainingRecord[] = [];
      try {
        for (const ffnExperts of expertCountsRun) {
          for (const variant of variantsOf(ffnExperts)) {
            const key = layerKey(variant);
            if (layers.has(key)) continue;
            if (variant.routing === 'trained' && !trainedOn.includes(configuration.id)) continue;
            if (variant.routing === 'trained' && quickRun && !trainedInQuick(variant)) continue;
            // The same seed per E: every layer of one E starts from the same FFN expert weights.
            const layer = new MoeLayer(
              { hiddenSize, intermediateSize, initializerRange: 0.02, ...moeSettings(variant) },
              new SeededRandom(seed + ffnExperts),
            );
            layers.set(key, layer);
            if (variant.routing === 'trained' && training) {
              const steps = quickRun ? training.quickSteps : training.steps;
              const started = performance.now();
              const { firstLoss, lastLoss } = trainRouter(layer, centres, training, steps, seed + 100);
              const achievedShare: Record<string, number> = {};
              for (const [tokens, input] of inputs) {
                const counts = tf.tidy(() => layer.router.route(input.x).stats.tokensPerExpert.dataSync());
                achievedShare[String(tokens)] = round(achievedShareOf(layer, Array.from(counts), tokens), 4);
              }
              const record: RouterTrainingRecord = {
                variant: variantLabel(variant),
                ffnExperts,
                tau: variant.tau,
                steps,
                batchTokens: training.batchTokens,
                firstLoss: round(firstLoss, 6),
                lastLoss: round(lastLoss, 6),
                idealShare: round(idealShare(variant), 4),
                achievedShare,
                trainingMs: round(performance.now() - started, 1),
              };
              trainingRecords.push(record);
              log(
                `  trained ${record.variant}: ${steps} steps in ${formatMs(record.trainingMs)}, loss ${record.firstLoss} -> ${record.lastLoss}, ` +
                  `FFN share ${Object.values(achievedShare).join(' / ')} (r = ${record.idealShare})`,
              );
            }
          }
        }
      } catch (error) {
        centres.dispose();
        layers.forEach((layer) => layer.dispose());
        inputs.forEach((input) => tf.dispose([input.x, input.dy]));
        throw error;
      }
      centres.dispose();
      session = { layers, inputs, training: trainingRecords, tokensRun };
      const handle: BenchmarkSession = {
        afterCases: async () => {
          const data: Record<string, unknown> = { routerTraining: trainingRecords };
          const status = accelerationStatus();
          const clock = status.active && (status.threads ?? 1) > 1 ? 'wall' : 'cpu';
          const runs = quickRun ? 1 : 3;
          if (profile && session) data.profile = await profileLayers(session, expertCountsRun, variantsOf, layerKey, clock, runs, log);
          return data;
        },
        dispose: () => {
          layers.forEach((layer) => layer.dispose());
          inputs.forEach((input) => tf.dispose([input.x, input.dy]));
          session = null;
        },
      };
      return handle;
    },
    summarize: (result) => summarizeLayer(result, caseMeta),
  };
}

/** The profile written to the JSON under `sessions['wasm-fixes'].profile`. */
export interface LayerProfile {
  /** T of the profiled runs (the largest T run). */
  readonly tokens: number;
  /** Forward passes per layer whose step times are medianed. */
  readonly runs: number;
  readonly variants: readonly VariantProfile[];
  /** The clock of the step times and rates (`cpu` on one thread, `wall` with OpenBLAS threads). */
  readonly clock: 'cpu' | 'wall';
  /** One FFN expert's speed on the batch it gets at each share (see {@link expertRate}). */
  readonly expertRates: readonly ExpertRate[];
  /** The routers' one-hot comparison at this T, per E (see {@link oneHotCheck}). */
  readonly oneHotChecks: readonly OneHotCheck[];
}

/** The profile of one variant at one T. */
export interface VariantProfile {
  readonly variant: string;
  readonly family: 'moe' | 'moepp';
  readonly ffnExperts: number;
  readonly tau: number | null;
  readonly routing: 'forced' | 'trained';
  readonly tokens: number;
  /** Median over the profiled runs of each forward step, wall ms. */
  readonly forwardPhasesMs: Readonly<Record<string, number>>;
  /** The same, CPU ms of the process (all threads). */
  readonly forwardPhasesCpuMs: Readonly<Record<string, number>>;
  /** Kernels of the router alone (`tf.profile`), ms by kernel. */
  readonly routerKernelsMs: Readonly<Record<string, number>>;
  /** Kernels of one forward + backward (`tf.profile`), ms by kernel. */
  readonly forwardBackwardKernelsMs: Readonly<Record<string, number>>;
}

async function profileLayers(
  session: LayerSession,
  ffnExpertCounts: readonly number[],
  variantsOf: (ffnExperts: number) => Variant[],
  layerKey: (variant: Variant) => string,
  clock: 'cpu' | 'wall',
  runs: number,
  log: (line: string) => void,
): Promise<LayerProfile> {
  const tokens = Math.max(...session.tokensRun);
  const input = session.inputs.get(tokens) as { x: tf.Tensor2D; dy: tf.Tensor2D };
  const profiles: VariantProfile[] = [];
  const expertRates: ExpertRate[] = [];
  const started = performance.now();
  for (const ffnExperts of ffnExpertCounts) {
    for (const variant of variantsOf(ffnExperts)) {
      if (variant.routing !== 'forced') continue;
      const layer = session.layers.get(layerKey(variant));
      if (layer === undefined) continue;
      const share = idealShare(variant);
      const rows = Math.round((tokens * layer.config.topK * share) / ffnExperts);
      if (!expertRates.some((rate) => rate.ffnExperts === ffnExperts && rate.rows === rows)) {
        expertRates.push({ ffnExperts, share: round(share, 4), ...expertRate(layer, rows, clock) });
      }
      const samples = Array.from({ length: runs }, () => timeForwardPhases(layer, input.x, share));
      const medianOf = (pick: (p: PhaseTimes) => Readonly<Record<string, number>>) =>
        Object.fromEntries(FORWARD_PHASES.map((phase) => [phase, round(median(samples.map((s) => pick(s)[phase] ?? 0)), 3)]));
      const routerKernelsMs = await kernelTimes(() => {
        const routed = layer.router.route(input.x);
        return [routed.expertIndices, routed.combineWeights];
      });
      const xVariable = tf.variable(input.x, true);
      const forwardBackwardKernelsMs = await kernelTimes(() =>
        forwardBackward(layer, xVariable, input.dy, { uniformRouting: { ffnShare: share } }, () => {}),
      );
      xVariable.dispose();
      profiles.push({
        variant: variantLabel(variant),
        family: variant.family,
        ffnExperts,
        tau: variant.tau,
        routing: variant.routing,
        tokens,
        forwardPhasesMs: medianOf((p) => p.wallMs),
        forwardPhasesCpuMs: medianOf((p) => p.cpuMs),
        routerKernelsMs,
        forwardBackwardKernelsMs,
      });
    }
  }
  const oneHotChecks = ffnExpertCounts.map((ffnExperts) => oneHotCheck(tokens, 2, ffnExperts + 4));
  log(`  profiled ${profiles.length} layers at T=${tokens} in ${formatMs(performance.now() - started)}`);
  return { tokens, runs, clock, variants: profiles, expertRates, oneHotChecks };
}

/** How fast one FFN expert runs on the batch it gets at a given FFN share. */
export interface ExpertRate {
  readonly ffnExperts: number;
  /** The FFN share the batch size follows from. */
  readonly share: number;
  /** Rows of one expert's batch: `T·K·share / E`. */
  readonly rows: number;
  /** One forward of the expert (`up`, SwiGLU, `down`), ms on the profile's clock, median of 5 after 2 warm-ups. */
  readonly ms: number;
  /** Its matmul FLOPs (`6·D·F` per row) over that time. */
  readonly gflopsPerSecond: number;
  /** Time per row, µs. */
  readonly microsecondsPerRow: number;
}

/**
 * Times the first FFN expert of a layer on a batch of `rows` tokens.
 *
 * @param layer - the layer
 * @param rows - the batch size
 * @param clock - which clock to read
 * @returns the rate
 */
function expertRate(layer: MoeLayer, rows: number, clock: 'cpu' | 'wall'): Omit<ExpertRate, 'ffnExperts' | 'share'> {
  const expert = layer.experts.find((e) => e.kind === 'ffn');
  if (expert === undefined || rows < 1) return { rows, ms: Number.NaN, gflopsPerSecond: Number.NaN, microsecondsPerRow: Number.NaN };
  const { hiddenSize, intermediateSize } = layer.config;
  const x = randomNormal([rows, hiddenSize], new SeededRandom(rows)) as tf.Tensor2D; // [n, D]
  const samples: number[] = [];
  try {
    for (let i = 0; i < 7; i++) {
      const cpuStart = process.cpuUsage();
      const start = performance.now();
      const y = expert.apply(x);
      y.dataSync();
      const wall = performance.now() - start;
      const cpu = process.cpuUsage(cpuStart);
      y.dispose();
      if (i >= 2) samples.push(clock === 'cpu' ? (cpu.user + cpu.system) / 1000 : wall);
    }
  } finally {
    x.dispose();
  }
  const ms = median(samples);
  return {
    rows,
    ms: round(ms, 3),
    gflopsPerSecond: round((6 * hiddenSize * intermediateSize * rows) / (ms * 1e6), 2),
    microsecondsPerRow: round((1000 * ms) / rows, 3),
  };
}

/** How long the routers' one-hot comparison takes, against two ways to get the same values. */
export interface OneHotCheck {
  /** `[N, K, E]`. */
  readonly shape: readonly [number, number, number];
  /** `tf.equal(expandDims(indices, -1), range(E))`: int32, broadcast (what `oneHotFloat` in `@moepp/routers` does). CPU ms. */
  readonly equalBroadcastMs: number;
  /** The same comparison on two `[N, K, E]` int32 tensors (no broadcasting). CPU ms. */
  readonly equalSameShapeMs: number;
  /** `tf.oneHot(indices, E)`. CPU ms. */
  readonly oneHotMs: number;
}

/**
 * Times the one-hot comparison the routers use (median of 5 after 2 warm-ups, CPU ms).
 *
 * @param tokens - N
 * @param topK - K
 * @param experts - E
 * @returns the three timings
 */
export function oneHotCheck(tokens: number, topK: number, experts: number): OneHotCheck {
  const indices = tf.tensor2d(Array.from({ length: tokens * topK }, (_, i) => i % experts), [tokens, topK], 'int32'); // [N, K]
  const expanded = tf.expandDims(indices, -1); // [N, K, 1]
  const range = tf.range(0, experts, 1, 'int32'); // [E]
  const tiledIndices = tf.tile(expanded, [1, 1, experts]); // [N, K, E]
  const tiledRange = tf.tidy(() => tf.tile(tf.reshape(range, [1, 1, experts]), [tokens, topK, 1])); // [N, K, E]
  const time = (fn: () => tf.Tensor): number => {
    const samples: number[] = [];
    for (let i = 0; i < 7; i++) {
      const cpuStart = process.cpuUsage();
      const out = fn();
      out.dataSync();
      const cpu = process.cpuUsage(cpuStart);
      out.dispose();
      if (i >= 2) samples.push((cpu.user + cpu.system) / 1000);
    }
    return round(median(samples), 3);
  };
  try {
    return {
      shape: [tokens, topK, experts],
      equalBroadcastMs: time(() => tf.equal(expanded, range)),
      equalSameShapeMs: time(() => tf.equal(tiledIndices, tiledRange)),
      oneHotMs: time(() => tf.oneHot(indices, experts)),
    };
  } finally {
    tf.dispose([indices, expanded, range, tiledIndices, tiledRange]);
  }
}

/** One row of the layer-throughput summary. */
export interface LayerThroughputRow {
  /** Configuration id (`wasm-fixes`, `wasm-native`). */
  readonly configuration: string;
  readonly ffnExperts: number;
  readonly tokens: number;
  readonly pass: LayerPass;
  readonly routing: 'forced' | 'trained';
  readonly family: 'moe' | 'moepp';
  readonly tau: number | null;
  /** `r` from tau (1 for MoE). */
  readonly idealFfnShare: number;
  /** The share of slots that reached FFN experts in the timed runs. */
  readonly achievedFfnShare: number;
  /** Median wall time of one pass, ms, and its spread `(max − min) / median` in percent. */
  readonly medianMs: number;
  readonly spreadPercent: number;
  /** Median CPU time of the process during one pass, ms (all threads: OpenBLAS's too). */
  readonly cpuMedianMs: number;
  readonly repetitions: number;
  /** Tokens per second (median wall time). */
  readonly tokensPerSecond: number;
  /** The layer's own `expertForwardMs` (dispatch plan, gathers, experts, combine; forward part only), median. */
  readonly expertForwardMs: number | null;
  /**
   * The measured speed-up: MoE time / this time at the same configuration, E, T, pass and kind of routing,
   * medians on the configuration's clock (see `clock`).
   */
  readonly speedup: number | null;
  /** `'cpu'` (one thread: the process's CPU time) or `'wall'` (OpenBLAS threads: wall time). */
  readonly clock: 'cpu' | 'wall';
  /** The speed-up from median wall times, and from median CPU times. */
  readonly speedupWall: number | null;
  readonly speedupCpu: number | null;
  /** The speed-up from each case's fastest run (wall time; the least disturbed by other jobs). */
  readonly speedupBest: number | null;
  /** MoE expert-forward ms / this expert-forward ms (the paper's Table 3 measure). */
  readonly expertForwardSpeedup: number | null;
  /** `1 / r` (forced) or `1 / achieved share` (trained). */
  readonly idealSpeedup: number;
  /** `speedup / idealSpeedup`. */
  readonly measuredOverIdeal: number | null;
  /** The paper's Table 3 speed-up for this E and tau, if any. */
  readonly paperSpeedup: number | null;
}

/** Where measured/ideal fell below the target, and why. */
export interface Shortfall {
  readonly configuration: string;
  readonly row: string;
  readonly measuredOverIdeal: number;
  /** The steps (forward) or kernels (forward+backward) whose time did not shrink with r, largest excess first. */
  readonly excess: ReadonlyArray<{ readonly name: string; readonly moeMs: number; readonly moeppMs: number; readonly excessMs: number }>;
  /** How much faster the FFN experts themselves ran (forward steps) or the matmuls (forward+backward kernels), vs 1/r. */
  readonly ffnExpertSpeedup: number | null;
  readonly text: string;
}

/** Target of the issue: measured/ideal at least this at every tau. */
export const TARGET_MEASURED_OVER_IDEAL = 0.9;

type CaseMeta = ReadonlyMap<string, { variant: Variant; tokens: number; pass: LayerPass }>;

function summarizeLayer(result: BenchmarkResult, caseMeta: CaseMeta): BenchmarkSummary {
  const ok = result.results.filter((r) => r.status === 'ok' && r.stats);
  const rows: LayerThroughputRow[] = [];
  const baselineOf = (configuration: string, ffnExperts: number, tokens: number, pass: LayerPass, routing: Variant['routing']) =>
    ok.find((r) => {
      const meta = caseMeta.get(r.case);
      return (
        r.configuration === configuration &&
        meta !== undefined &&
        meta.variant.family === 'moe' &&
        meta.variant.ffnExperts === ffnExperts &&
        meta.tokens === tokens &&
        meta.pass === pass &&
        meta.variant.routing === routing
      );
    });
  for (const r of ok) {
    const meta = caseMeta.get(r.case);
    if (meta === undefined) continue;
    const { variant, tokens, pass } = meta;
    const stats = r.stats as TimingStats;
    const info = r.info ?? {};
    const expertForwardMs = typeof info.expertForwardMsMedian === 'number' ? info.expertForwardMsMedian : null;
    const achieved = typeof info.achievedFfnShare === 'number' ? info.achievedFfnShare : idealShare(variant);
    const baseline = baselineOf(r.configuration, variant.ffnExperts, tokens, pass, variant.routing);
    const baselineStats = baseline?.stats;
    const baselineExpert = typeof baseline?.info?.expertForwardMsMedian === 'number' ? baseline.info.expertForwardMsMedian : null;
    const clock = clockOf(result, r.configuration);
    const speedupWall = baselineStats ? baselineStats.medianMs / stats.medianMs : null;
    const speedupCpu = baselineStats?.cpuMedianMs !== undefined && stats.cpuMedianMs ? baselineStats.cpuMedianMs / stats.cpuMedianMs : null;
    const speedup = clock === 'cpu' ? speedupCpu : speedupWall;
    const idealSpeedup = 1 / (variant.routing === 'forced' ? idealShare(variant) : achieved);
    rows.push({
      configuration: r.configuration,
      ffnExperts: variant.ffnExperts,
      tokens,
      pass,
      routing: variant.routing,
      family: variant.family,
      tau: variant.tau,
      idealFfnShare: round(idealShare(variant), 4),
      achievedFfnShare: round(achieved, 4),
      medianMs: round(stats.medianMs, 3),
      spreadPercent: round(stats.spreadPercent, 1),
      cpuMedianMs: round(stats.cpuMedianMs ?? Number.NaN, 3),
      repetitions: stats.repetitions,
      tokensPerSecond: round((tokens * 1000) / stats.medianMs, 0),
      expertForwardMs,
      speedup: speedup === null ? null : round(speedup, 3),
      clock,
      speedupWall: speedupWall === null ? null : round(speedupWall, 3),
      speedupCpu: speedupCpu === null ? null : round(speedupCpu, 3),
      speedupBest: baselineStats ? round(baselineStats.minMs / stats.minMs, 3) : null,
      expertForwardSpeedup: baselineExpert !== null && expertForwardMs !== null && expertForwardMs > 0 ? round(baselineExpert / expertForwardMs, 3) : null,
      idealSpeedup: round(idealSpeedup, 3),
      measuredOverIdeal: speedup === null ? null : round(speedup / idealSpeedup, 3),
      paperSpeedup: variant.tau === null ? null : (PAPER_TABLE3[variant.ffnExperts]?.[String(variant.tau)] ?? null),
    });
  }

  const profiles = new Map<string, LayerProfile>();
  for (const [configuration, session] of Object.entries(result.sessions ?? {})) {
    if (session.profile) profiles.set(configuration, session.profile as LayerProfile);
  }
  const shortfalls = rows
    .filter((row) => row.family === 'moepp' && row.measuredOverIdeal !== null && row.measuredOverIdeal < TARGET_MEASURED_OVER_IDEAL)
    .map((row) => explainShortfall(row, profiles.get(row.configuration)));

  const data = { target: TARGET_MEASURED_OVER_IDEAL, rows, shortfalls };
  return { data, markdown: layerMarkdown(result, rows, shortfalls, profiles) };
}

/**
 * The clock a configuration's speed-ups are read on: CPU time when the work runs on one thread, wall
 * time when OpenBLAS adds threads (their CPU time adds up, and idle workers spin).
 */
function clockOf(result: BenchmarkResult, configuration: string): 'cpu' | 'wall' {
  const status = result.configurations.find((c) => c.id === configuration)?.accelerationStatus;
  return status?.active && (status.threads ?? 1) > 1 ? 'wall' : 'cpu';
}

function rowLabel(row: LayerThroughputRow): string {
  return `E=${row.ffnExperts} T=${row.tokens} ${row.pass}, ${row.routing} routing, tau=${row.tau ?? '–'}`;
}

/** Excess of each part: MoE++ time minus what perfect scaling (MoE time · share) would leave. */
function excessOf(
  moe: Readonly<Record<string, number>>,
  moepp: Readonly<Record<string, number>>,
  share: number,
): Array<{ name: string; moeMs: number; moeppMs: number; excessMs: number }> {
  const names = new Set([...Object.keys(moe), ...Object.keys(moepp)]);
  return [...names]
    .map((name) => {
      const moeMs = moe[name] ?? 0;
      const moeppMs = moepp[name] ?? 0;
      return { name, moeMs: round(moeMs, 2), moeppMs: round(moeppMs, 2), excessMs: round(moeppMs - share * moeMs, 2) };
    })
    .sort((a, b) => b.excessMs - a.excessMs);
}

function explainShortfall(row: LayerThroughputRow, profile: LayerProfile | undefined): Shortfall {
  const label = rowLabel(row);
  const head = `${label}: measured ${row.speedup?.toFixed(2)}× vs ideal ${row.idealSpeedup.toFixed(2)}× (${row.measuredOverIdeal?.toFixed(2)})`;
  const moe = profile?.variants.find((v) => v.family === 'moe' && v.ffnExperts === row.ffnExperts);
  const moepp = profile?.variants.find((v) => v.family === 'moepp' && v.ffnExperts === row.ffnExperts && v.tau === row.tau);
  const base = { configuration: row.configuration, row: label, measuredOverIdeal: row.measuredOverIdeal ?? Number.NaN };
  if (!profile || !moe || !moepp) return { ...base, excess: [], ffnExpertSpeedup: null, text: `${head}; no profile of this layer.` };
  const share = row.routing === 'forced' ? row.idealFfnShare : row.achievedFfnShare;
  const at =
    (profile.tokens === row.tokens ? '' : `; profile at T=${profile.tokens}`) +
    (row.routing === 'trained' ? `; profile of forced routing at r=${row.idealFfnShare.toFixed(3)}, scaled by the achieved share ${share.toFixed(3)}` : '');
  if (row.pass === 'forward') {
    const phasesOf = (v: VariantProfile) => (row.clock === 'cpu' ? v.forwardPhasesCpuMs : v.forwardPhasesMs);
    const excess = excessOf(phasesOf(moe), phasesOf(moepp), share);
    const ffnMoe = phasesOf(moe)['FFN experts'] ?? 0;
    const ffnMoepp = phasesOf(moepp)['FFN experts'] ?? 0;
    const ffnExpertSpeedup = ffnMoepp > 0 ? ffnMoe / ffnMoepp : null;
    const totalMoepp = Object.values(phasesOf(moepp)).reduce((a, b) => a + b, 0);
    const top = excess.filter((e) => e.excessMs > 0).slice(0, 3);
    const routerKernels = Object.entries(moepp.routerKernelsMs).slice(0, 3);
    const rates = rateNote(profile, row.ffnExperts, moe, moepp);
    const text =
      `${head}${at}. Forward steps MoE → MoE++ (${row.clock} ms; perfect scaling would multiply each by ${share.toFixed(3)}): ` +
      top.map((e) => `${e.name} ${e.moeMs.toFixed(1)} → ${e.moeppMs.toFixed(1)} (+${e.excessMs.toFixed(1)} over share·MoE)`).join('; ') +
      `. The FFN experts alone run ${ffnExpertSpeedup?.toFixed(2)}× faster (ideal ${(1 / share).toFixed(2)}×)${rates}; the steps that do not shrink with the share ` +
      `take ${(totalMoepp - ffnMoepp).toFixed(1)} of the MoE++ layer's ${totalMoepp.toFixed(1)} ms. ` +
      `Router kernels (MoE++): ${routerKernels.map(([k, ms]) => `${k} ${ms.toFixed(1)} ms`).join(', ')}` +
      equalNote(profile, row.ffnExperts) +
      '.';
    return { ...base, excess: top, ffnExpertSpeedup: ffnExpertSpeedup === null ? null : round(ffnExpertSpeedup, 3), text };
  }
  const excess = excessOf(moe.forwardBackwardKernelsMs, moepp.forwardBackwardKernelsMs, share);
  const top = excess.filter((e) => e.excessMs > 0).slice(0, 4);
  const matmul = excess.find((e) => e.name === 'BatchMatMul' || e.name === '_FusedMatMul');
  const ffnExpertSpeedup = matmul && matmul.moeppMs > 0 ? matmul.moeMs / matmul.moeppMs : null;
  const text =
    `${head}${at}. Kernels of forward+backward MoE → MoE++ (tf.profile ms; perfect scaling would multiply each by ${share.toFixed(3)}): ` +
    top.map((e) => `${e.name} ${e.moeMs.toFixed(1)} → ${e.moeppMs.toFixed(1)} (+${e.excessMs.toFixed(1)})`).join('; ') +
    (matmul ? `. ${matmul.name} (the experts' and the router's products) shrinks ${ffnExpertSpeedup?.toFixed(2)}× (ideal ${(1 / share).toFixed(2)}×)` : '') +
    rateNote(profile, row.ffnExperts, moe, moepp) +
    '.';
  return { ...base, excess: top, ffnExpertSpeedup: ffnExpertSpeedup === null ? null : round(ffnExpertSpeedup, 3), text };
}

/** One expert's speed on the MoE's batch and on the MoE++'s (smaller) batch, as a clause. */
function rateNote(profile: LayerProfile, ffnExperts: number, moe: VariantProfile, moepp: VariantProfile): string {
  const rateOf = (v: VariantProfile) => {
    const share = v.family === 'moe' || v.tau === null ? 1 : ffnShare({ tau: v.tau, experts: { ffn: ffnExperts, ...ZERO_COMPUTATION_EXPERTS } });
    return profile.expertRates.find((r) => r.ffnExperts === ffnExperts && Math.abs(r.share - share) < 1e-3);
  };
  const big = rateOf(moe);
  const small = rateOf(moepp);
  if (!big || !small || !Number.isFinite(big.gflopsPerSecond) || !Number.isFinite(small.gflopsPerSecond)) return '';
  return ` (one expert runs at ${big.gflopsPerSecond.toFixed(1)} GFLOP/s on the MoE's ${big.rows} rows and ${small.gflopsPerSecond.toFixed(1)} GFLOP/s on the MoE++'s ${small.rows})`;
}

function equalNote(profile: LayerProfile, ffnExperts: number): string {
  const check = profile.oneHotChecks.find((c) => c.shape[2] === ffnExperts + 4);
  // Only worth a word when broadcasting makes the comparison slow (stock tfjs-wasm; the kit's compare fix removes it).
  if (!check || check.equalBroadcastMs < 2 * check.equalSameShapeMs) return '';
  return (
    ` (Equal is the broadcast int32 comparison of the routers' one-hot: ${check.equalBroadcastMs.toFixed(2)} ms per call at [${check.shape.join(', ')}], ` +
    `vs ${check.equalSameShapeMs.toFixed(2)} ms without broadcasting and ${check.oneHotMs.toFixed(2)} ms for tf.oneHot)`
  );
}

function fmt(value: number | null, digits = 2, suffix = ''): string {
  return value === null || !Number.isFinite(value) ? '–' : `${value.toFixed(digits)}${suffix}`;
}

function layerMarkdown(
  result: BenchmarkResult,
  rows: readonly LayerThroughputRow[],
  shortfalls: readonly Shortfall[],
  profiles: ReadonlyMap<string, LayerProfile>,
): string {
  const lines: string[] = [];
  for (const configuration of result.configurations) {
    const own = rows.filter((row) => row.configuration === configuration.id);
    if (own.length === 0) continue;
    lines.push(`## Layer throughput on ${configuration.label}: MoE++ vs MoE at the same E`, '');
    const clock = clockOf(result, configuration.id);
    const other = clock === 'cpu' ? 'wall' : 'CPU';
    lines.push(
      `Speed-up = MoE time / MoE++ time at the same E, T, pass and kind of routing, from the medians of the timed runs (which ran round-robin) ` +
        `on **${clock === 'cpu' ? 'CPU time (one thread: time spent waiting for a core while other jobs ran does not count)' : 'wall time (OpenBLAS runs two threads)'}**; ` +
        `in brackets the same from ${other} time and from each case's fastest run (wall). Ideal = 1/r (forced routing) or 1/(achieved FFN share) ` +
        `(trained router). Tokens/s and the median are wall time. Expert fwd = the layer's own \`expertForwardMs\` (dispatch plan, gathers, experts, ` +
        `combine; not the router). Paper = Table 3, speed-up of expert forward time (trained 0.6B/1B models).`,
      '',
    );
    lines.push(
      `| E | T | pass | routing | tau | r | FFN share | tokens/s | median ±spread | expert fwd | speed-up (${other}; best) | expert fwd speed-up | ideal | measured/ideal | paper |`,
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    const sorted = [...own].sort(
      (a, b) =>
        a.routing.localeCompare(b.routing) ||
        a.ffnExperts - b.ffnExperts ||
        a.tokens - b.tokens ||
        a.pass.localeCompare(b.pass) ||
        (a.tau ?? -1) - (b.tau ?? -1),
    );
    for (const row of sorted) {
      const moe = row.family === 'moe';
      const below = !moe && row.measuredOverIdeal !== null && row.measuredOverIdeal < TARGET_MEASURED_OVER_IDEAL;
      lines.push(
        `| ${row.ffnExperts} | ${row.tokens} | ${row.pass} | ${row.routing} | ${row.tau ?? 'MoE'} | ${row.idealFfnShare.toFixed(3)} | ${row.achievedFfnShare.toFixed(3)} | ` +
          `${row.tokensPerSecond.toFixed(0)} | ${formatMs(row.medianMs)} ±${row.spreadPercent.toFixed(0)}% | ${row.expertForwardMs === null ? '–' : formatMs(row.expertForwardMs)} | ` +
          `${moe ? 'baseline' : `${fmt(row.speedup, 2, '×')} (${fmt(row.clock === 'cpu' ? row.speedupWall : row.speedupCpu, 2, '×')}; ${fmt(row.speedupBest, 2, '×')})`} | ${moe ? '–' : fmt(row.expertForwardSpeedup, 2, '×')} | ` +
          `${moe ? '–' : fmt(row.idealSpeedup, 2, '×')} | ${moe ? '–' : `${fmt(row.measuredOverIdeal)}${below ? ' ⚠' : ''}`} | ${fmt(row.paperSpeedup, 2, '×')} |`,
      );
    }
    lines.push('', `⚠: below the target measured/ideal ≥ ${TARGET_MEASURED_OVER_IDEAL}.`, '');
    const profile = profiles.get(configuration.id);
    if (profile) {
      lines.push(
        `### Profile on ${configuration.label}: one forward pass at T=${profile.tokens}, forced routing (${clock} ms per step, ${profile.runs === 1 ? 'one run' : `median of ${profile.runs} runs`})`,
        '',
      );
      lines.push(`| layer | ${FORWARD_PHASES.join(' | ')} | total |`, `|---|${FORWARD_PHASES.map(() => '---').join('|')}|---|`);
      for (const v of profile.variants) {
        const phases = clock === 'cpu' ? v.forwardPhasesCpuMs : v.forwardPhasesMs;
        const total = Object.values(phases).reduce((a, b) => a + b, 0);
        lines.push(`| ${v.variant} | ${FORWARD_PHASES.map((p) => (phases[p] ?? 0).toFixed(1)).join(' | ')} | ${total.toFixed(1)} |`);
      }
      lines.push('', `One FFN expert's forward on the batch it gets at each FFN share (${clock} time; ${'`'}6·D·F${'`'} FLOPs per row):`, '');
      lines.push('| E | share | rows per expert | ms | GFLOP/s | µs per row |', '|---|---|---|---|---|---|');
      for (const rate of profile.expertRates) {
        lines.push(`| ${rate.ffnExperts} | ${rate.share.toFixed(3)} | ${rate.rows} | ${rate.ms.toFixed(2)} | ${rate.gflopsPerSecond.toFixed(1)} | ${rate.microsecondsPerRow.toFixed(2)} |`);
      }
      for (const check of profile.oneHotChecks) {
        lines.push(
          '',
          `One-hot comparison of the routers at [N, K, E] = [${check.shape.join(', ')}] (CPU ms): broadcast int32 \`tf.equal\` (what \`oneHotFloat\` in @moepp/routers does) ` +
            `${check.equalBroadcastMs.toFixed(2)}; the same comparison on equal shapes ${check.equalSameShapeMs.toFixed(2)}; \`tf.oneHot\` ${check.oneHotMs.toFixed(2)}.`,
        );
      }
      lines.push('', 'Top kernels of one forward+backward pass (tf.profile, ms):', '');
      for (const v of profile.variants) {
        lines.push(`- ${v.variant}: ${Object.entries(v.forwardBackwardKernelsMs).slice(0, 6).map(([k, ms]) => `${k} ${ms.toFixed(1)}`).join(', ')}`);
      }
      lines.push('');
    }
    const own_shortfalls = shortfalls.filter((s) => s.configuration === configuration.id);
    if (own_shortfalls.length > 0) {
      lines.push(`### Where measured/ideal < ${TARGET_MEASURED_OVER_IDEAL} on ${configuration.label}`, '');
      for (const shortfall of own_shortfalls) lines.push(`- ${shortfall.text}`);
      lines.push('');
    }
  }
  return lines.join('\n');
}

/**
 * Runs the layer benchmark from the command line.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `layer.json` and `layer.md`
 */
export const main = benchmarkMain(() => layerBenchmark());

runWhenMain(import.meta.url, main);
