/**
 * The routers benchmark: what each router of `@moepp/routers` costs per token as the number of
 * experts grows (E = 8, 16, 32, 64), T = 4096 tokens (2048 in `--quick` mode), D = 256, top-2.
 *
 * - `TopKRouter`: softmax, top-2 (raw probabilities), Switch load-balance loss and z-loss;
 * - `NoisyTopKRouter`: in training mode (noise on, `W_g` and `W_noise` initialised normal), with the
 *   importance and (smooth) load losses;
 * - `ExpertChoiceRouter`: capacity factor 2 (each token sees 2 experts on average). Its one-hot of the
 *   chosen tokens is `[E, C, N]` with `C ≈ 2N/E`, i.e. 2N² elements, so it costs O(N²) (1–2 s per forward
 *   at N = 2048 on wasm where the broadcast int32 comparison is not fixed). It runs at T = 1024 (512 in
 *   `--quick` mode), plus one forward at the full T (one run, full mode only) to show the growth;
 * - `MoEPlusPlusRouter`: the kit's defaults (logit normalisation, drop-and-renormalize), E − 4 FFN
 *   experts plus 2 constant, 1 copy and 1 zero expert, with the gating residual of a later layer
 *   (`previousLogits` given).
 *
 * Forward: one `route` call, the indices and gates read back. Forward + backward: `tf.variableGrads`
 * of `sum(gates · w) + Σ aux losses` over the token states and every router weight, all gradients
 * read back. The summary gives µs per token and the growth from E = 8.
 *
 * Run alone: `tsx --conditions=source src/routers.ts [--quick] [--out <dir>]`.
 */
import * as tf from '@tensorflow/tfjs';
import { randomNormal, SeededRandom, type ExpertKind } from '@moepp/tensors-core';
import { ExpertChoiceRouter, MoEPlusPlusRouter, NoisyTopKRouter, TopKRouter, type RouteOptions, type Router } from '@moepp/routers';
import { benchmarkMain, runWhenMain } from './cli.js';
import {
  CONFIGURATIONS,
  type BenchmarkDefinition,
  type BenchmarkResult,
  type BenchmarkSummary,
  type BenchmarkCase,
  type TimingPlan,
  type TimingStats,
} from './harness.js';

/** The routers compared. */
export const ROUTER_KINDS = ['TopKRouter', 'NoisyTopKRouter', 'ExpertChoiceRouter', 'MoEPlusPlusRouter'] as const;

/** One of {@link ROUTER_KINDS}. */
export type RouterKind = (typeof ROUTER_KINDS)[number];

/** A timed pass. */
export type RouterPass = 'forward' | 'forward+backward';

/** Options of {@link routersBenchmark}. */
export interface RoutersBenchmarkOptions {
  /** The results' file name. Default `'routers'`. */
  readonly name?: string;
  /** D. Default 256. */
  readonly hiddenSize?: number;
  /** E values. Default `[8, 16, 32, 64]`. */
  readonly experts?: readonly number[];
  /** T. Default 4096. */
  readonly tokens?: number;
  /** T in `--quick` mode. Default 2048. */
  readonly quickTokens?: number;
  /** T of the expert-choice router (its cost is O(T²)). Default 1024. */
  readonly expertChoiceTokens?: number;
  /** The same in `--quick` mode. Default 512. */
  readonly expertChoiceQuickTokens?: number;
  /** Add one expert-choice forward at the full T (one run, full mode only). Default true. */
  readonly expertChoiceAtFullTokens?: boolean;
  /** Routers. Default all four. */
  readonly routers?: readonly RouterKind[];
  /** Passes. Default both. */
  readonly passes?: readonly RouterPass[];
  /** One timing plan for every case (tests). */
  readonly timing?: TimingPlan;
  /** Seed of weights and inputs. Default 1. */
  readonly seed?: number;
}

/**
 * The kinds of the MoE++ router's experts: `[ffn × (E−4), constant × 2, copy, zero]` (the official layout).
 *
 * @param experts - E, at least 5
 * @returns the kinds
 */
export function moeppKinds(experts: number): ExpertKind[] {
  return [...Array.from({ length: experts - 4 }, (): ExpertKind => 'ffn'), 'constant', 'constant', 'copy', 'zero'];
}

function makeRouter(kind: RouterKind, dim: number, numExperts: number, rng: SeededRandom): Router {
  switch (kind) {
    case 'TopKRouter':
      return new TopKRouter({ dim, numExperts, topK: 2, rng });
    case 'NoisyTopKRouter':
      return new NoisyTopKRouter({ dim, numExperts, topK: 2, initialization: 'normal', rng });
    case 'ExpertChoiceRouter':
      return new ExpertChoiceRouter({ dim, numExperts, capacityFactor: 2, rng });
    case 'MoEPlusPlusRouter':
      return new MoEPlusPlusRouter({ dim, numExperts, topK: 2, expertKinds: moeppKinds(numExperts), gatingResidual: true, rng });
  }
}

/**
 * Builds the routers benchmark.
 *
 * @param options - sizes, routers, passes, fixed timing, seed
 * @returns the benchmark definition, ready for `runBenchmark`
 */
export function routersBenchmark(options: RoutersBenchmarkOptions = {}): BenchmarkDefinition {
  const dim = options.hiddenSize ?? 256;
  const expertCounts = options.experts ?? [8, 16, 32, 64];
  const fullTokens = options.tokens ?? 4096;
  const quickTokens = options.quickTokens ?? 2048;
  const kinds = options.routers ?? ROUTER_KINDS;
  const passes = options.passes ?? (['forward', 'forward+backward'] as const);
  const seed = options.seed ?? 1;
  const fixed = options.timing;
  const ecTokens = options.expertChoiceTokens ?? 1024;
  const ecQuickTokens = options.expertChoiceQuickTokens ?? 512;
  let quickRun = false;
  const tokensOf = (router: RouterKind, atFullTokens: boolean): number => {
    if (atFullTokens) return fullTokens;
    if (router === 'ExpertChoiceRouter') return quickRun && !fixed ? ecQuickTokens : ecTokens;
    return quickRun && !fixed ? quickTokens : fullTokens;
  };
  const caseMeta = new Map<string, { router: RouterKind; experts: number; pass: RouterPass; atFullTokens: boolean }>();

  const plans: Array<{ router: RouterKind; experts: number; pass: RouterPass; atFullTokens: boolean }> = [];
  for (const router of kinds) {
    for (const pass of passes) {
      for (const experts of expertCounts) plans.push({ router, experts, pass, atFullTokens: false });
    }
  }
  const firstExperts = expertCounts[0];
  if ((options.expertChoiceAtFullTokens ?? true) && kinds.includes('ExpertChoiceRouter') && passes.includes('forward') && firstExperts !== undefined) {
    plans.push({ router: 'ExpertChoiceRouter', experts: firstExperts, pass: 'forward', atFullTokens: true });
  }
  const cases: BenchmarkCase[] = [];
  for (const { router, experts, pass, atFullTokens } of plans) {
    const name = `${router} E=${experts} ${pass}${atFullTokens ? ` at T=${fullTokens} (one run)` : ''}`;
    caseMeta.set(name, { router, experts, pass, atFullTokens });
    const tokensText =
      router === 'ExpertChoiceRouter' && !atFullTokens ? `${ecTokens} (${ecQuickTokens} in --quick mode)` : atFullTokens ? `${fullTokens}` : `${fullTokens} (${quickTokens} in --quick mode)`;
    cases.push({
      name,
      details: { router, experts, pass, hiddenSize: dim, topK: router === 'ExpertChoiceRouter' ? 'capacity factor 2' : 2, tokens: tokensText },
      ...(atFullTokens
        ? {
            timing: (_configuration: unknown, quick: boolean): TimingPlan | string =>
              fixed ?? (quick ? 'skipped in --quick mode (one expert-choice forward at the full T takes seconds)' : { warmup: 0, minRepetitions: 1, maxRepetitions: 1 }),
          }
        : {}),
      prepare: () => {
        const tokens = tokensOf(router, atFullTokens);
        const rng = new SeededRandom(seed + experts);
        const layer = makeRouter(router, dim, experts, rng);
        const x = randomNormal([tokens, dim], rng) as tf.Tensor2D; // [N, D]
        const previousLogits = router === 'MoEPlusPlusRouter' ? (randomNormal([tokens, experts], rng) as tf.Tensor2D) : null; // [N, E]
        const routeOptions: RouteOptions = { training: true, ...(previousLogits ? { previousLogits } : {}), rng };
        const gateWeights = randomNormal([tokens, router === 'ExpertChoiceRouter' ? experts : 2], rng); // [N, K] upstream weights
        const xVariable = pass === 'forward+backward' ? tf.variable(x, true) : null;
        const variables = [...(xVariable ? [xVariable] : []), ...Object.values(layer.weights)];
        return {
          run: () =>
            tf.tidy(() => {
              if (xVariable === null) {
                const routed = layer.route(x, routeOptions);
                return [routed.expertIndices, routed.combineWeights];
              }
              const { value, grads } = tf.variableGrads(() => {
                const routed = layer.route(xVariable as unknown as tf.Tensor2D, routeOptions);
                const aux = Object.values(routed.auxLosses);
                return tf.addN([tf.sum(tf.mul(routed.combineWeights, gateWeights)), ...aux]) as tf.Scalar;
              }, variables);
              return [value, tf.stack(Object.values(grads).map((g) => tf.sum(g)))];
            }),
          dispose: () => {
            tf.dispose([x, gateWeights, ...(previousLogits ? [previousLogits] : []), ...(xVariable ? [xVariable] : [])]);
            layer.dispose();
          },
          info: (stats: TimingStats) => ({
            tokens,
            microsecondsPerToken: (1000 * stats.medianMs) / tokens,
            cpuMicrosecondsPerToken: (1000 * (stats.cpuMedianMs ?? stats.medianMs)) / tokens,
          }),
        };
      },
    });
  }

  return {
    name: options.name ?? 'routers',
    description:
      `Each router's forward and forward+backward cost per token as E grows (E in {${expertCounts.join(', ')}}), ` +
      `T=${fullTokens} tokens (${quickTokens} in --quick mode), D=${dim}, top-2, on wasm with the kit's fixes. Expert choice (capacity factor 2) ` +
      `costs O(T²) and runs at T=${ecTokens} (${ecQuickTokens} in --quick mode), plus one forward at T=${fullTokens} in full mode.`,
    configurations: [CONFIGURATIONS.wasmFixes],
    cases,
    timing: (_configuration, quick) => fixed ?? (quick ? { warmup: 1, minRepetitions: 2, maxRepetitions: 5, budgetMs: 500 } : { warmup: 1, minRepetitions: 3, maxRepetitions: 8, budgetMs: 600 }),
    setup: (_configuration, { quick }) => {
      quickRun = quick;
      return { dispose: () => {} };
    },
    summarize: (result) => summarizeRouters(result, caseMeta, expertCounts),
  };
}

/** One row of the routers summary: a router and pass, cost per token at each E. */
export interface RouterCostRow {
  readonly router: RouterKind;
  readonly pass: RouterPass;
  readonly tokens: number | null;
  /** By E: µs per token, CPU time (median). */
  readonly cpuMicrosecondsPerToken: Readonly<Record<string, number | null>>;
  /** By E: µs per token, wall time (median). */
  readonly microsecondsPerToken: Readonly<Record<string, number | null>>;
  /** Cost at the largest E / cost at the smallest E (CPU). */
  readonly growth: number | null;
}

function summarizeRouters(
  result: BenchmarkResult,
  caseMeta: ReadonlyMap<string, { router: RouterKind; experts: number; pass: RouterPass; atFullTokens: boolean }>,
  expertCounts: readonly number[],
): BenchmarkSummary {
  const rows: RouterCostRow[] = [];
  const keys = new Map<string, { router: RouterKind; pass: RouterPass; atFullTokens: boolean }>();
  for (const meta of caseMeta.values()) {
    keys.set(`${meta.router} ${meta.pass} ${meta.atFullTokens}`, { router: meta.router, pass: meta.pass, atFullTokens: meta.atFullTokens });
  }
  for (const { router, pass, atFullTokens } of keys.values()) {
    const cpu: Record<string, number | null> = {};
    const wall: Record<string, number | null> = {};
    let tokens: number | null = null;
    for (const experts of expertCounts) {
      const r = result.results.find((x) => {
        const meta = caseMeta.get(x.case);
        return meta?.router === router && meta.pass === pass && meta.experts === experts && meta.atFullTokens === atFullTokens;
      });
      const info = r?.status === 'ok' ? r.info : undefined;
      cpu[String(experts)] = typeof info?.cpuMicrosecondsPerToken === 'number' ? Math.round(info.cpuMicrosecondsPerToken * 1000) / 1000 : null;
      wall[String(experts)] = typeof info?.microsecondsPerToken === 'number' ? Math.round(info.microsecondsPerToken * 1000) / 1000 : null;
      if (typeof info?.tokens === 'number') tokens = info.tokens;
    }
    if (atFullTokens && Object.values(cpu).every((v) => v === null)) continue;
    const first = cpu[String(expertCounts[0])];
    const last = cpu[String(expertCounts[expertCounts.length - 1])];
    rows.push({
      router,
      pass,
      tokens,
      cpuMicrosecondsPerToken: cpu,
      microsecondsPerToken: wall,
      growth: first != null && last != null && first > 0 ? Math.round((last / first) * 100) / 100 : null,
    });
  }
  const lines = [
    '## Cost per token (µs, CPU time, median; wall time in brackets)',
    '',
    `| router | pass | T | ${expertCounts.map((e) => `E=${e}`).join(' | ')} | E=${expertCounts[expertCounts.length - 1]} / E=${expertCounts[0]} |`,
    `|---|---|---|${expertCounts.map(() => '---').join('|')}|---|`,
    ...rows.map(
      (row) =>
        `| ${row.router} | ${row.pass} | ${row.tokens ?? '–'} | ${expertCounts
          .map((e) => {
            const c = row.cpuMicrosecondsPerToken[String(e)];
            const w = row.microsecondsPerToken[String(e)];
            return c == null ? '–' : `${c.toFixed(2)} (${w?.toFixed(2) ?? '–'})`;
          })
          .join(' | ')} | ${row.growth === null ? '–' : `${row.growth.toFixed(2)}×`} |`,
    ),
    '',
  ];
  return { data: { rows }, markdown: lines.join('\n') };
}

/**
 * Runs the routers benchmark from the command line.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `routers.json` and `routers.md`
 */
export const main = benchmarkMain(() => routersBenchmark());

runWhenMain(import.meta.url, main);
