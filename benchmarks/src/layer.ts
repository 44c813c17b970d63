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
 * Each case times the whole layer, forward alone or forward + backward (`tf.variableGrads` of
 * `sum(output · dy)` over the input and every layer weight, all gradients read back), for T = 1024 and
 * 4096 tokens. The cases of one (E, T, pass) are timed round-robin so that the machine's load hits
 * MoE and MoE++ alike. The summary gives tokens/s, the layer's own expert-forward time, the speed-up over
 * the MoE at the same E (by CPU time, the steadier clock on a shared machine, and by wall time), the
 * ideal `1/r` and measured/ideal.
 *
 * After the timed runs, a profile of the largest T splits the forward pass into the layer's steps,
 * timed one call at a time with the same ops (`router`, `dispatch plan`, `gather`, `FFN experts`,
 * `copy/constant experts`, `scale by gates`, `combine`), and lists the kernels of the router and of
 * forward + backward with `tf.profile`. Where measured/ideal < 0.9 the summary says which steps and
 * kernels take the time that did not shrink with r.
 *
 * Run alone: `tsx --conditions=source src/layer.ts [--quick] [--out <dir>]`.
 */
import * as tf from '@tensorflow/tfjs';
import { planDispatch, randomNormal, SeededRandom } from '@moepp/tensors-core';
import { DEFAULT_MOE_SETTINGS, ffnShare, MoeLayer, uniformAssignment, type MoeForwardOptions, type MoeSettings } from '@moepp/models';
import { isMainModule, parseBenchmarkArgs, USAGE } from './cli.js';
import {
  CONFIGURATIONS,
  formatMs,
  median,
  runBenchmark,
  type BenchmarkCase,
  type BenchmarkDefinition,
  type BenchmarkResult,
  type BenchmarkSession,
  type BenchmarkSummary,
  type CaseResult,
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
  /** Steps in `--quick` mode. Default 100. */
  readonly quickSteps: number;
  /** Tokens per step. Default 256. */
  readonly batchTokens: number;
  /** Adam learning rate. Default 0.01. */
  readonly learningRate: number;
  /** Clusters the tokens are drawn from (centre ~ N(0, I), noise std 0.5, then RMS-normalised). Default 64. */
  readonly clusters: number;
  /** FFN expert counts whose routers are trained in `--quick` mode. Default `[8]`. */
  readonly quickFfnExperts: readonly number[];
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
}

/** Default router training. */
export const DEFAULT_ROUTER_TRAINING: RouterTrainingOptions = {
  steps: 200,
  quickSteps: 100,
  batchTokens: 256,
  learningRate: 0.01,
  clusters: 64,
  quickFfnExperts: [8],
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
    const flatGates = combineWeights.reshape([numTokens * topK]); // [N·K]
    const outputs: tf.Tensor2D[] = [];
    const destinations: tf.Tensor1D[] = [];
    layer.experts.forEach((expert, e) => {
      const count = plan.counts[e] as number;
      if (count === 0 || expert.kind === 'zero') return;
      const tokenIds = plan.tokenIds[e] as tf.Tensor1D; // [n_e]
      const { rows, gates } = timed('gather', () => ({
        rows: tf.gather(x, tokenIds) as tf.Tensor2D, // [n_e, D]
        gates: tf.gather(flatGates, plan.slotIds[e] as tf.Tensor1D).reshape([count, 1]), // [n_e, 1]
      }));
      const y = timed(expert.kind === 'ffn' ? 'FFN experts' : 'copy/constant experts', () => expert.apply(rows)); // [n_e, D]
      outputs.push(timed('scale by gates', () => tf.mul(y, gates) as tf.Tensor2D));
      destinations.push(tokenIds);
    });
    timed('combine', () => {
      const output = tf.unsortedSegmentSum(
        outputs.length === 1 ? (outputs[0] as tf.Tensor2D) : tf.concat(outputs, 0),
        destinations.length === 1 ? (destinations[0] as tf.Tensor1D) : tf.concat(destinations, 0),
        numTokens,
      );
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
  const passes = options.passes ?? (['forward', 'forward+backward'] as const);
  const training: RouterTrainingOptions | null = options.training === null ? null : { ...DEFAULT_ROUTER_TRAINING, ...options.training };
  const seed = options.seed ?? 1;
  const profile = options.profile ?? true;
  const fixed = options.timing;

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
  const trainedInQuick = (variant: Variant): boolean => training !== null && training.quickFfnExperts.includes(variant.ffnExperts);

  let session: LayerSession | null = null;
  let quickRun = false;
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
            timing: (_configuration, quick) => {
              if (fixed) return fixed;
              if (quick && !quickTokens.includes(tokens)) return `skipped in --quick mode (T=${tokens})`;
              if (quick && variant.routing === 'trained' && !trainedInQuick(variant)) return `skipped in --quick mode (trained routers: E=${training?.quickFfnExperts.join(', ')} only)`;
              if (quick) return { warmup: 1, minRepetitions: 2, maxRepetitions: 3, budgetMs: 3000 };
              return tokens >= 4096 ? { warmup: 1, minRepetitions: 3, maxRepetitions: 3 } : { warmup: 1, minRepetitions: 3, maxRepetitions: 5, budgetMs: 8000 };
            },
            prepare: () => {
              const current = session;
              if (current === null) throw new Error('layer benchmark: no session (setup did not run)');
              const layer = current.layers.get(layerKey(variant));
              const input = current.inputs.get(tokens);
              if (layer === undefined || input === undefined) throw new Error(`layer benchmark: no layer or input for '${name}'`);
              const forwardOptions: MoeForwardOptions = variant.routing === 'forced' ? { uniformRouting: { ffnShare: r } } : {};
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
      `; forward and forward+backward, T in {${tokenCounts.join(', ')}} tokens. Cases of one (E, T, pass) are timed round-robin.`,
    configurations: [CONFIGURATIONS.wasmFixes],
    cases,
    interleave: true,
    timing: () => fixed ?? { warmup: 1, minRepetitions: 3, maxRepetitions: 5 },
    setup: async (_configuration, { quick, log }) => {
      quickRun = quick;
      const tokensRun = fixed || !quick ? tokenCounts : quickTokens;
      const rng = new SeededRandom(seed);
      const centres = randomNormal([training?.clusters ?? DEFAULT_ROUTER_TRAINING.clusters, hiddenSize], rng) as tf.Tensor2D; // [C, D]
      const inputs = new Map<number, { x: tf.Tensor2D; dy: tf.Tensor2D }>();
      for (const tokens of tokensRun) {
        inputs.set(tokens, { x: clusteredTokens(centres, tokens, rng.fork()), dy: randomNormal([tokens, hiddenSize], rng.fork()) as tf.Tensor2D });
      }
      const layers = new Map<string, MoeLayer>();
      const trainingRecords: RouterTrainingRecord[] = [];
      try {
        for (const ffnExperts of ffnExpertCounts) {
          for (const variant of variantsOf(ffnExperts)) {
            const key = layerKey(variant);
            if (layers.has(key)) continue;
            if (variant.routing === 'trained' && quick && !fixed && !trainedInQuick(variant)) continue;
            // The same seed per E: every layer of one E starts from the same FFN expert weights.
            const layer = new MoeLayer(
              { hiddenSize, intermediateSize, initializerRange: 0.02, ...moeSettings(variant) },
              new SeededRandom(seed + ffnExperts),
            );
            layers.set(key, layer);
            if (variant.routing === 'trained' && training) {
              const steps = quick ? training.quickSteps : training.steps;
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
        afterCases: async (results) => {
          const data: Record<string, unknown> = { routerTraining: trainingRecords };
          if (profile && session) data.profile = await profileLayers(session, ffnExpertCounts, taus, variantsOf, layerKey, results, log);
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
    summarize: (result) => summarizeLayer(result, caseMeta, quickRun),
  };
}

/** The profile of one variant at one T. */
export interface VariantProfile {
  readonly variant: string;
  readonly family: 'moe' | 'moepp';
  readonly ffnExperts: number;
  readonly tau: number | null;
  readonly routing: 'forced' | 'trained';
  readonly tokens: number;
  /** Median over the profiled runs of each forward step, CPU ms. */
  readonly forwardPhasesCpuMs: Readonly<Record<string, number>>;
  /** The same, wall ms. */
  readonly forwardPhasesWallMs: Readonly<Record<string, number>>;
  /** Kernels of the router alone (`tf.profile`), ms by kernel. */
  readonly routerKernelsMs: Readonly<Record<string, number>>;
  /** Kernels of one forward + backward (`tf.profile`), ms by kernel. */
  readonly forwardBackwardKernelsMs: Readonly<Record<string, number>>;
}

async function profileLayers(
  session: LayerSession,
  ffnExpertCounts: readonly number[],
  taus: readonly number[],
  variantsOf: (ffnExperts: number) => Variant[],
  layerKey: (variant: Variant) => string,
  results: readonly CaseResult[],
  log: (line: string) => void,
): Promise<{ tokens: number; runs: number; variants: VariantProfile[] }> {
  const tokens = Math.max(...session.tokensRun);
  const input = session.inputs.get(tokens) as { x: tf.Tensor2D; dy: tf.Tensor2D };
  const runs = 3;
  const profiles: VariantProfile[] = [];
  const started = performance.now();
  void taus;
  void results;
  for (const ffnExperts of ffnExpertCounts) {
    for (const variant of variantsOf(ffnExperts)) {
      if (variant.routing !== 'forced') continue;
      const layer = session.layers.get(layerKey(variant));
      if (layer === undefined) continue;
      const share = idealShare(variant);
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
        forwardPhasesCpuMs: medianOf((p) => p.cpuMs),
        forwardPhasesWallMs: medianOf((p) => p.wallMs),
        routerKernelsMs,
        forwardBackwardKernelsMs,
      });
    }
  }
  log(`  profiled ${profiles.length} layers at T=${tokens} in ${formatMs(performance.now() - started)}`);
  return { tokens, runs, variants: profiles };
}

/** One row of the layer-throughput summary. */
export interface LayerThroughputRow {
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
  readonly medianMs: number;
  readonly cpuMedianMs: number;
  readonly spreadPercent: number;
  readonly repetitions: number;
  /** Tokens per second of wall time, and of CPU time. */
  readonly tokensPerSecond: number;
  readonly tokensPerCpuSecond: number;
  /** The layer's own `expertForwardMs` (dispatch, experts, combine; forward part only), median. */
  readonly expertForwardMs: number | null;
  /** MoE time / this time at the same E, T, pass and routing kind: by CPU time (primary) and wall time. */
  readonly speedup: number | null;
  readonly speedupWall: number | null;
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
  readonly row: string;
  readonly measuredOverIdeal: number;
  /** The steps (forward) or kernels (forward+backward) whose time did not shrink with r, largest first. */
  readonly excess: ReadonlyArray<{ readonly name: string; readonly moeMs: number; readonly moeppMs: number; readonly excessMs: number }>;
  /** The FFN experts' own speed-up in the profile (forward), vs 1/r. */
  readonly ffnExpertSpeedup: number | null;
  readonly text: string;
}

/** Target of the issue: measured/ideal at least this at every tau. */
export const TARGET_MEASURED_OVER_IDEAL = 0.9;

function summarizeLayer(
  result: BenchmarkResult,
  caseMeta: ReadonlyMap<string, { variant: Variant; tokens: number; pass: LayerPass }>,
  quick: boolean,
): BenchmarkSummary {
  void quick;
  const ok = result.results.filter((r) => r.status === 'ok' && r.stats);
  const rows: LayerThroughputRow[] = [];
  const find = (ffnExperts: number, tokens: number, pass: LayerPass, variant: Partial<Variant>): CaseResult | undefined =>
    ok.find((r) => {
      const meta = caseMeta.get(r.case);
      return (
        meta !== undefined &&
        meta.variant.ffnExperts === ffnExperts &&
        meta.tokens === tokens &&
        meta.pass === pass &&
        meta.variant.family === variant.family &&
        meta.variant.routing === variant.routing &&
        (variant.tau === undefined || meta.variant.tau === variant.tau)
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
    const baseline = find(variant.ffnExperts, tokens, pass, { family: 'moe', routing: variant.routing });
    const baselineStats = baseline?.stats;
    const baselineExpert = typeof baseline?.info?.expertForwardMsMedian === 'number' ? baseline.info.expertForwardMsMedian : null;
    const cpu = stats.cpuMedianMs ?? stats.medianMs;
    const speedup = baselineStats ? (baselineStats.cpuMedianMs ?? baselineStats.medianMs) / cpu : null;
    const idealSpeedup = 1 / (variant.routing === 'forced' ? idealShare(variant) : achieved);
    rows.push({
      ffnExperts: variant.ffnExperts,
      tokens,
      pass,
      routing: variant.routing,
      family: variant.family,
      tau: variant.tau,
      idealFfnShare: round(idealShare(variant), 4),
      achievedFfnShare: round(achieved, 4),
      medianMs: round(stats.medianMs, 3),
      cpuMedianMs: round(cpu, 3),
      spreadPercent: round(stats.spreadPercent, 1),
      repetitions: stats.repetitions,
      tokensPerSecond: round((tokens * 1000) / stats.medianMs, 0),
      tokensPerCpuSecond: round((tokens * 1000) / cpu, 0),
      expertForwardMs,
      speedup: speedup === null ? null : round(speedup, 3),
      speedupWall: baselineStats ? round(baselineStats.medianMs / stats.medianMs, 3) : null,
      expertForwardSpeedup: baselineExpert !== null && expertForwardMs !== null && expertForwardMs > 0 ? round(baselineExpert / expertForwardMs, 3) : null,
      idealSpeedup: round(idealSpeedup, 3),
      measuredOverIdeal: speedup === null ? null : round(speedup / idealSpeedup, 3),
      paperSpeedup: variant.tau === null ? null : (PAPER_TABLE3[variant.ffnExperts]?.[String(variant.tau)] ?? null),
    });
  }

  const profile = Object.values(result.sessions ?? {})[0]?.profile as { tokens: number; variants: VariantProfile[] } | undefined;
  const shortfalls = rows
    .filter((row) => row.family === 'moepp' && row.measuredOverIdeal !== null && row.measuredOverIdeal < TARGET_MEASURED_OVER_IDEAL)
    .map((row) => explainShortfall(row, profile));

  const data = { target: TARGET_MEASURED_OVER_IDEAL, rows, shortfalls };
  return { data, markdown: layerMarkdown(rows, shortfalls, profile) };
}

function rowLabel(row: LayerThroughputRow): string {
  return `E=${row.ffnExperts} T=${row.tokens} ${row.pass} ${row.routing} tau=${row.tau ?? '–'}`;
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

function explainShortfall(row: LayerThroughputRow, profile: { tokens: number; variants: VariantProfile[] } | undefined): Shortfall {
  const label = rowLabel(row);
  const head = `${label}: measured ${row.speedup?.toFixed(2)}× vs ideal ${row.idealSpeedup.toFixed(2)}× (${row.measuredOverIdeal?.toFixed(2)})`;
  const moe = profile?.variants.find((v) => v.family === 'moe' && v.ffnExperts === row.ffnExperts);
  const moepp = profile?.variants.find((v) => v.family === 'moepp' && v.ffnExperts === row.ffnExperts && v.tau === row.tau);
  if (!profile || !moe || !moepp) {
    return { row: label, measuredOverIdeal: row.measuredOverIdeal ?? Number.NaN, excess: [], ffnExpertSpeedup: null, text: `${head}; no profile for this layer.` };
  }
  const share = row.idealFfnShare;
  const at = profile.tokens === row.tokens ? '' : ` (profile at T=${profile.tokens})`;
  if (row.pass === 'forward') {
    const excess = excessOf(moe.forwardPhasesCpuMs, moepp.forwardPhasesCpuMs, share);
    const ffnMoe = moe.forwardPhasesCpuMs['FFN experts'] ?? 0;
    const ffnMoepp = moepp.forwardPhasesCpuMs['FFN experts'] ?? 0;
    const ffnExpertSpeedup = ffnMoepp > 0 ? ffnMoe / ffnMoepp : null;
    const totalMoepp = Object.values(moepp.forwardPhasesCpuMs).reduce((a, b) => a + b, 0);
    const top = excess.filter((e) => e.excessMs > 0).slice(0, 3);
    const routerKernels = Object.entries(moepp.routerKernelsMs).slice(0, 3);
    const text =
      `${head}${at}. Forward steps MoE → MoE++ (CPU ms; perfect scaling would multiply each by r=${share.toFixed(3)}): ` +
      top.map((e) => `${e.name} ${e.moeMs.toFixed(1)} → ${e.moeppMs.toFixed(1)} (+${e.excessMs.toFixed(1)} over r·MoE)`).join('; ') +
      `. FFN experts alone scale ${ffnExpertSpeedup?.toFixed(2)}× (ideal ${(1 / share).toFixed(2)}×); the steps that do not shrink with r ` +
      `take ${(totalMoepp - ffnMoepp).toFixed(1)} of the MoE++ layer's ${totalMoepp.toFixed(1)} ms. ` +
      `Router kernels (MoE++): ${routerKernels.map(([k, ms]) => `${k} ${ms.toFixed(1)} ms`).join(', ')}.`;
    return { row: label, measuredOverIdeal: row.measuredOverIdeal ?? Number.NaN, excess: top, ffnExpertSpeedup: ffnExpertSpeedup === null ? null : round(ffnExpertSpeedup, 3), text };
  }
  const excess = excessOf(moe.forwardBackwardKernelsMs, moepp.forwardBackwardKernelsMs, share);
  const top = excess.filter((e) => e.excessMs > 0).slice(0, 4);
  const matmul = excess.find((e) => e.name === 'BatchMatMul');
  const ffnExpertSpeedup = matmul && matmul.moeppMs > 0 ? matmul.moeMs / matmul.moeppMs : null;
  const text =
    `${head}${at}. Kernels of forward+backward MoE → MoE++ (tf.profile ms; perfect scaling would multiply each by r=${share.toFixed(3)}): ` +
    top.map((e) => `${e.name} ${e.moeMs.toFixed(1)} → ${e.moeppMs.toFixed(1)} (+${e.excessMs.toFixed(1)})`).join('; ') +
    (matmul ? `. BatchMatMul (the experts' and router's matmuls) shrinks ${ffnExpertSpeedup?.toFixed(2)}× (ideal ${(1 / share).toFixed(2)}×).` : '.');
  return { row: label, measuredOverIdeal: row.measuredOverIdeal ?? Number.NaN, excess: top, ffnExpertSpeedup: ffnExpertSpeedup === null ? null : round(ffnExpertSpeedup, 3), text };
}

function fmt(value: number | null, digits = 2, suffix = ''): string {
  return value === null || !Number.isFinite(value) ? '–' : `${value.toFixed(digits)}${suffix}`;
}

function layerMarkdown(
  rows: readonly LayerThroughputRow[],
  shortfalls: readonly Shortfall[],
  profile: { tokens: number; variants: VariantProfile[] } | undefined,
): string {
  const lines: string[] = [];
  lines.push('## Layer throughput: MoE++ vs MoE at the same E', '');
  lines.push(
    'Speed-up = MoE time / MoE++ time at the same E, T, pass and kind of routing, by **CPU time** (median of the timed runs; ' +
      'the machine is shared, and CPU time is the steadier clock) and, in brackets, by wall time. Ideal = 1/r ' +
      '(forced routing) or 1/(achieved FFN share) (trained router). Expert fwd = the layer\'s own `expertForwardMs` ' +
      '(dispatch plan, gathers, experts, combine; not the router). Paper = Table 3 speed-up of expert forward time (trained 0.6B/1B models on GPUs).',
    '',
  );
  lines.push(
    '| E | T | pass | routing | tau | r | FFN share | tokens/s (CPU) | median wall | expert fwd | speed-up CPU (wall) | expert fwd speed-up | ideal | measured/ideal | paper |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  );
  const sorted = [...rows].sort(
    (a, b) =>
      a.routing.localeCompare(b.routing) ||
      a.ffnExperts - b.ffnExperts ||
      a.tokens - b.tokens ||
      a.pass.localeCompare(b.pass) ||
      (a.tau ?? -1) - (b.tau ?? -1),
  );
  for (const row of sorted) {
    const below = row.measuredOverIdeal !== null && row.family === 'moepp' && row.measuredOverIdeal < TARGET_MEASURED_OVER_IDEAL;
    lines.push(
      `| ${row.ffnExperts} | ${row.tokens} | ${row.pass} | ${row.routing} | ${row.tau ?? 'MoE'} | ${row.idealFfnShare.toFixed(3)} | ${row.achievedFfnShare.toFixed(3)} | ` +
        `${row.tokensPerCpuSecond.toFixed(0)} | ${formatMs(row.medianMs)} ±${row.spreadPercent.toFixed(0)}% | ${row.expertForwardMs === null ? '–' : formatMs(row.expertForwardMs)} | ` +
        `${row.family === 'moe' ? '1 (baseline)' : `${fmt(row.speedup, 2, '×')} (${fmt(row.speedupWall, 2, '×')})`} | ${row.family === 'moe' ? '–' : fmt(row.expertForwardSpeedup, 2, '×')} | ` +
        `${row.family === 'moe' ? '–' : fmt(row.idealSpeedup, 2, '×')} | ${row.family === 'moe' ? '–' : `${fmt(row.measuredOverIdeal)}${below ? ' ⚠' : ''}`} | ${fmt(row.paperSpeedup, 2, '×')} |`,
    );
  }
  lines.push('', `⚠: below the target measured/ideal ≥ ${TARGET_MEASURED_OVER_IDEAL}.`, '');
  if (profile) {
    lines.push(`### Profile of one forward pass at T=${profile.tokens}, forced routing (CPU ms per step, median of 3)`, '');
    lines.push(`| layer | ${FORWARD_PHASES.join(' | ')} | total |`, `|---|${FORWARD_PHASES.map(() => '---').join('|')}|---|`);
    for (const v of profile.variants) {
      const total = Object.values(v.forwardPhasesCpuMs).reduce((a, b) => a + b, 0);
      lines.push(`| ${v.variant} | ${FORWARD_PHASES.map((p) => (v.forwardPhasesCpuMs[p] ?? 0).toFixed(1)).join(' | ')} | ${total.toFixed(1)} |`);
    }
    lines.push('', `Top kernels of forward+backward (tf.profile, ms): `, '');
    for (const v of profile.variants) {
      lines.push(`- ${v.variant}: ${Object.entries(v.forwardBackwardKernelsMs).slice(0, 6).map(([k, ms]) => `${k} ${ms.toFixed(1)}`).join(', ')}`);
    }
    lines.push('');
  }
  if (shortfalls.length > 0) {
    lines.push(`### Where measured/ideal < ${TARGET_MEASURED_OVER_IDEAL}`, '');
    for (const s of shortfalls) lines.push(`- ${s.text}`);
    lines.push('');
  }
  return lines.join('\n');
}

/**
 * Runs the layer benchmark from the command line.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `layer.json` and `layer.md`
 */
export async function main(argv: readonly string[]): Promise<void> {
  const options = parseBenchmarkArgs(argv);
  if (options.help) {
    console.log(USAGE);
    return;
  }
  await runBenchmark(layerBenchmark(), { outDir: options.outDir, quick: options.quick });
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(error instanceof Error ? error.stack : error);
    process.exitCode = 1;
  });
}
