/**
 * The end-to-end benchmark: training tokens/s of the preset models (dense, MoE, MoE++) through
 * `Trainer.trainStep` of `@moepp/trainers`, i.e. full optimiser steps: batch, forward, loss
 * (cross-entropy + β·load balance + z-loss), backward, clipping, AdamW, the loss read back.
 *
 * - Presets `tiny` (D=192, 4 layers, (8+4) experts, T=128) and `smoke` (D=64, 2 layers, (4+4), T=64),
 *   untrained (MoE++ routing is that of a random router; the FFN experts per token are reported);
 *   byte-level Moby-Dick, B = 8, T = the preset's `maxSeqLen`.
 * - wasm with the kit's fixes: warm-up steps, then timed steps (median and spread). `--quick` runs only
 *   this configuration, at B = 2.
 * - Full mode only: the same with native acceleration (OpenBLAS; skipped with the reason where it is not
 *   available), stock wasm (it throws at once: `gather` has no gradient there), and cpu with the kit's
 *   fixes (stock cpu takes as long per step; its kernels are compared in the kernels benchmark). One cpu
 *   step of `tiny` at B = 8, T = 128 takes minutes (at B = 1, T = 128: 10–20 s of CPU), so cpu runs
 *   **one step at B = 1, T = 32, without warm-up** (the case result says so in `info.note`).
 *
 * Tokens/s = B·T / step time. This replaces `packages/trainers/scripts/bench-train.ts`.
 *
 * Run alone: `tsx --conditions=source src/e2e.ts [--quick] [--out <dir>]`.
 */
import * as tf from '@tensorflow/tfjs';
import { countModelParameters, createModel, presetConfig, PRESET_VARIANTS, type PresetSize, type PresetVariant } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { Trainer, type StepRecord } from '@moepp/trainers';
import { isMainModule, parseBenchmarkArgs, USAGE } from './cli.js';
import {
  CONFIGURATIONS,
  formatMs,
  median,
  runBenchmark,
  type BenchmarkCase,
  type BenchmarkDefinition,
  type BenchmarkResult,
  type BenchmarkSummary,
  type Configuration,
  type TimingPlan,
  type TimingStats,
} from './harness.js';

/** Options of {@link e2eBenchmark}. */
export interface E2eBenchmarkOptions {
  /** The results' file name. Default `'e2e'`. */
  readonly name?: string;
  /** Preset sizes. Default `['smoke', 'tiny']`. */
  readonly sizes?: readonly PresetSize[];
  /** Variants. Default dense, MoE, MoE++. */
  readonly variants?: readonly PresetVariant[];
  /** B on wasm with fixes (and stock wasm). Default 8. */
  readonly batchSize?: number;
  /** B on cpu. Default 1. */
  readonly cpuBatchSize?: number;
  /** T on cpu. Default 32. */
  readonly cpuSeqLen?: number;
  /** B in `--quick` mode (wasm with fixes only). Default 2. */
  readonly quickBatchSize?: number;
  /** T; default each preset's `maxSeqLen`. */
  readonly seqLen?: number;
  /**
   * Configurations. Default wasm with fixes, wasm with fixes + native acceleration, stock wasm, and cpu
   * with fixes (the kit's cpu backend; stock cpu kernels are compared in the kernels benchmark).
   */
  readonly configurations?: readonly Configuration[];
  /** One timing plan for every case and configuration (tests). */
  readonly timing?: TimingPlan;
  /** Seed of the weights and the batches. Default 1. */
  readonly seed?: number;
}

const CPU_NOTE = 'cpu: one step at B=1, T=32, without warm-up (a tiny step at B=8, T=128 takes minutes on cpu)';

/**
 * Builds the end-to-end benchmark.
 *
 * @param options - sizes, variants, batch sizes, configurations, fixed timing, seed
 * @returns the benchmark definition, ready for `runBenchmark`
 */
export function e2eBenchmark(options: E2eBenchmarkOptions = {}): BenchmarkDefinition {
  const sizes = options.sizes ?? (['smoke', 'tiny'] as const);
  const variants = options.variants ?? PRESET_VARIANTS;
  const batchSize = options.batchSize ?? 8;
  const cpuBatchSize = options.cpuBatchSize ?? 1;
  const cpuSeqLen = options.cpuSeqLen ?? 32;
  const quickBatchSize = options.quickBatchSize ?? 2;
  let quickRun = false;
  const seed = options.seed ?? 1;
  const fixed = options.timing;
  const configurations = options.configurations ?? [CONFIGURATIONS.wasmFixes, CONFIGURATIONS.wasmNative, CONFIGURATIONS.wasmStock, CONFIGURATIONS.cpuFixes];
  const caseMeta = new Map<string, { size: PresetSize; variant: PresetVariant }>();

  const cases: BenchmarkCase[] = [];
  for (const size of sizes) {
    for (const variant of variants) {
      const config = presetConfig(size, variant, { vocabSize: 256 });
      const presetSeqLen = options.seqLen ?? config.maxSeqLen;
      const parameters = countModelParameters(config);
      const name = `${size} ${variant}`;
      caseMeta.set(name, { size, variant });
      cases.push({
        name,
        details: {
          size,
          variant,
          hiddenSize: config.hiddenSize,
          intermediateSize: config.intermediateSize,
          numLayers: config.numLayers,
          experts: config.moe?.experts ?? null,
          tau: config.moe?.tau ?? null,
          seqLen: `${presetSeqLen} (cpu: ${cpuSeqLen})`,
          batchSize: `${batchSize} (cpu: ${cpuBatchSize})`,
          parameters: parameters.total,
          activatedParameters: parameters.activated,
          corpus: 'moby-dick, bytes',
        },
        timing: (configuration, quick) => {
          if (fixed) return fixed;
          if (quick && configuration.id !== CONFIGURATIONS.wasmFixes.id) return 'skipped in --quick mode';
          if (configuration.backend === 'cpu') return { warmup: 0, minRepetitions: 1, maxRepetitions: 1 };
          if (configuration.id === CONFIGURATIONS.wasmStock.id) return { warmup: 0, minRepetitions: 1, maxRepetitions: 1 };
          if (quick) return { warmup: 1, minRepetitions: 2, maxRepetitions: 4, budgetMs: 1000 };
          return { warmup: 1, minRepetitions: 3, maxRepetitions: 8, budgetMs: 4000 };
        },
        prepare: (configuration) => {
          const batch = configuration.backend === 'cpu' ? cpuBatchSize : quickRun && !fixed ? quickBatchSize : batchSize;
          const seqLen = configuration.backend === 'cpu' ? cpuSeqLen : presetSeqLen;
          const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen, batchSize: batch, seed, validationWindows: 1 });
          const model = createModel(config, seed);
          let trainer: Trainer | null = null;
          try {
            trainer = new Trainer(model, data, { totalSteps: 1_000_000, evalAtStart: false, handleSignals: false, leakCheck: false, seed });
          } catch (error) {
            model.dispose();
            throw error;
          }
          const records: StepRecord[] = [];
          const cpuNote = configuration.backend === 'cpu' ? { note: CPU_NOTE } : {};
          return {
            run: async () => {
              records.push(await (trainer as Trainer).trainStep());
              return [];
            },
            dispose: () => {
              trainer?.dispose();
              model.dispose();
            },
            info: (stats: TimingStats) => {
              const timed = records.slice(-stats.repetitions);
              const tokensPerStep = batch * seqLen;
              const expertMs = timed.map((r) => r.expertForwardMs);
              const ffn = timed.map((r) => r.ffnExpertsPerToken).filter((v): v is number => v !== null);
              return {
                ...cpuNote,
                batchSize: batch,
                seqLen,
                tokensPerStep,
                tokensPerSecond: Math.round((tokensPerStep * 1000) / stats.medianMs),
                tokensPerCpuSecond: Math.round((tokensPerStep * 1000) / (stats.cpuMedianMs ?? stats.medianMs)),
                bestTokensPerSecond: Math.round((tokensPerStep * 1000) / stats.minMs),
                stepsPerSecond: Math.round((1000 / stats.medianMs) * 1000) / 1000,
                expertForwardMsMedian: expertMs.length > 0 ? Math.round(median(expertMs) * 100) / 100 : null,
                ffnExpertsPerToken: ffn.length > 0 ? Math.round(median(ffn) * 1000) / 1000 : null,
                losses: timed.map((r) => Math.round(r.loss * 1000) / 1000),
                stepsRun: records.length,
              };
            },
          };
        },
      });
    }
  }

  return {
    name: options.name ?? 'e2e',
    description:
      `Training tokens/s of the ${sizes.join(' and ')} presets (${variants.join(', ')}) through Trainer.trainStep (forward, backward, clip, AdamW, ` +
      `loss read back), byte-level Moby-Dick, B=${batchSize} (${quickBatchSize} in --quick mode), T = the preset's maxSeqLen, untrained models. Full mode adds native acceleration, stock wasm and cpu with fixes (${CPU_NOTE}).`,
    configurations,
    cases,
    timing: () => fixed ?? { warmup: 1, minRepetitions: 3 },
    setup: (_configuration, { quick }) => {
      quickRun = quick;
      return { dispose: () => {} };
    },
    summarize: (result) => summarizeE2e(result, caseMeta),
  };
}

/** One row of the end-to-end summary. */
export interface E2eRow {
  readonly size: PresetSize;
  readonly variant: PresetVariant;
  readonly configuration: string;
  readonly status: string;
  readonly batchSize: number | null;
  readonly seqLen: number | null;
  readonly stepMs: number | null;
  readonly tokensPerSecond: number | null;
  readonly tokensPerCpuSecond: number | null;
  readonly steps: number | null;
  readonly ffnExpertsPerToken: number | null;
  readonly note: string | null;
}

function summarizeE2e(result: BenchmarkResult, caseMeta: ReadonlyMap<string, { size: PresetSize; variant: PresetVariant }>): BenchmarkSummary {
  const rows: E2eRow[] = result.results.flatMap((r) => {
    const meta = caseMeta.get(r.case);
    if (meta === undefined) return [];
    const info = r.info ?? {};
    const num = (key: string): number | null => (typeof info[key] === 'number' ? (info[key] as number) : null);
    return [
      {
        size: meta.size,
        variant: meta.variant,
        configuration: r.configuration,
        status: r.status,
        batchSize: num('batchSize'),
        seqLen: num('seqLen'),
        stepMs: r.stats ? Math.round(r.stats.medianMs * 10) / 10 : null,
        tokensPerSecond: num('tokensPerSecond'),
        tokensPerCpuSecond: num('tokensPerCpuSecond'),
        steps: r.stats?.repetitions ?? null,
        ffnExpertsPerToken: num('ffnExpertsPerToken'),
        note: typeof info.note === 'string' ? info.note : r.status === 'ok' ? null : (r.message ?? null),
      },
    ];
  });
  const labelOf = (id: string): string => result.configurations.find((c) => c.id === id)?.label ?? id;
  const lines = [
    '## Training throughput (tokens/s)',
    '',
    'Wall-clock tokens/s of the median step (tokens/s of CPU time in brackets); timed steps after the warm-up.',
    '',
    '| preset | variant | configuration | B × T | step (median) | tokens/s | timed steps | FFN experts/token | note |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (row) =>
        `| ${row.size} | ${row.variant} | ${labelOf(row.configuration)} | ${row.batchSize ?? '–'} × ${row.seqLen ?? '–'} | ` +
        `${row.stepMs === null ? '–' : formatMs(row.stepMs)} | ${row.tokensPerSecond === null ? '–' : `${row.tokensPerSecond} (${row.tokensPerCpuSecond ?? '–'})`} | ` +
        `${row.steps ?? '–'} | ${row.ffnExpertsPerToken === null ? '–' : row.ffnExpertsPerToken.toFixed(2)} | ${(row.note ?? (row.status === 'ok' ? '' : row.status)).replace(/\|/g, '\\|')} |`,
    ),
    '',
  ];
  return { data: { rows }, markdown: lines.join('\n') };
}

/**
 * Runs the end-to-end benchmark from the command line.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `e2e.json` and `e2e.md`
 */
export async function main(argv: readonly string[]): Promise<void> {
  const options = parseBenchmarkArgs(argv);
  if (options.help) {
    console.log(USAGE);
    return;
  }
  await runBenchmark(e2eBenchmark(), { outDir: options.outDir, quick: options.quick });
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(error instanceof Error ? error.stack : error);
    process.exitCode = 1;
  });
}
