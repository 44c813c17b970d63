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
 * - Full mode, where `python3 -c "import torch"` works: the PyTorch peer (`native_peer.py`, case kind
 *   `lm`) trains the same shapes (a LLaMA-style decoder, dense / MoE / MoE++ layers, the same B and T,
 *   AdamW and clipping) in the same run; the summary gives our step time over PyTorch's, and the
 *   speed-up of native acceleration over wasm with the fixes alone (issue 9's end-to-end figure).
 *
 * Tokens/s = B·T / step time. This replaces `packages/trainers/scripts/bench-train.ts`.
 *
 * Run alone: `tsx --conditions=source src/e2e.ts [--quick] [--out <dir>]`.
 */
import * as tf from '@tensorflow/tfjs';
import { countModelParameters, createModel, presetConfig, PRESET_VARIANTS, type PresetSize, type PresetVariant } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { Trainer, type StepRecord } from '@moepp/trainers';
import { benchmarkMain, runWhenMain } from './cli.js';
import { runPytorchPeer, type PeerCase, type PeerResult } from './native.js';
import {
  CONFIGURATIONS,
  formatMs,
  median,
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
  /**
   * The PyTorch peer (full mode only): `true` (default) runs `native_peer.py` when `import torch`
   * works, `false` skips it, or pass results measured elsewhere (keyed by case name, e.g. `'tiny moepp'`).
   */
  readonly peer?: boolean | PeerResult;
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
  const peerCases: PeerCase[] = [];
  // Set by `setup` in full mode (the peer takes a minute or two, and --quick has no native row to compare).
  let peer: PeerResult | string = options.peer === false ? 'not run (peer: false)' : typeof options.peer === 'object' ? options.peer : 'not run (--quick)';

  const cases: BenchmarkCase[] = [];
  for (const size of sizes) {
    for (const variant of variants) {
      const config = presetConfig(size, variant, { vocabSize: 256 });
      const presetSeqLen = options.seqLen ?? config.maxSeqLen;
      const parameters = countModelParameters(config);
      const name = `${size} ${variant}`;
      caseMeta.set(name, { size, variant });
      const experts = config.moe?.experts;
      peerCases.push({
        name,
        kind: 'lm',
        vocab: config.vocabSize,
        hidden: config.hiddenSize,
        intermediate: config.intermediateSize,
        layers: config.numLayers,
        heads: config.numHeads,
        seqLen: presetSeqLen,
        batch: batchSize,
        topK: config.moe?.topK ?? 0,
        ffnExperts: experts?.ffn ?? 0,
        zero: experts?.zero ?? 0,
        copy: experts?.copy ?? 0,
        constant: experts?.constant ?? 0,
        gatingResidual: config.moe?.gatingResidual ?? false,
      });
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
    ...(configurations.some((c) => c.id === CONFIGURATIONS.wasmNative.id) && configurations.some((c) => c.id === CONFIGURATIONS.wasmFixes.id)
      ? { speedup: { baseline: CONFIGURATIONS.wasmFixes.id, candidate: CONFIGURATIONS.wasmNative.id } }
      : {}),
    setup: (_configuration, { quick, log }) => {
      quickRun = quick;
      if (!quick && options.peer !== false && typeof options.peer !== 'object' && peer === 'not run (--quick)') {
        log('  PyTorch peer: training the same shapes with native_peer.py …');
        peer = runPytorchPeer(peerCases, 2, false);
        log(`  PyTorch peer: ${typeof peer === 'string' ? peer : `torch ${peer.torch}, done`}`);
      }
      return { dispose: () => {} };
    },
    summarize: (result) => summarizeE2e(result, caseMeta, peer),
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

/** One row of the end-to-end summary's comparison: native acceleration vs wasm alone, and vs PyTorch. */
export interface E2eComparisonRow {
  readonly size: PresetSize;
  readonly variant: PresetVariant;
  /** Median step, wasm with the kit's fixes, ms. */
  readonly wasmFixesMs: number | null;
  /** Median step, wasm with fixes + native acceleration, ms. */
  readonly nativeMs: number | null;
  /** wasmFixesMs / nativeMs (issue 9's target for tiny MoE++: at least 5). */
  readonly nativeSpeedup: number | null;
  /** The PyTorch peer's median step, ms, and its thread count. */
  readonly pytorchMs: number | null;
  readonly pytorchThreads: number | null;
  /** nativeMs / pytorchMs (below 1: faster than PyTorch). */
  readonly nativeOverPytorch: number | null;
}

function summarizeE2e(
  result: BenchmarkResult,
  caseMeta: ReadonlyMap<string, { size: PresetSize; variant: PresetVariant }>,
  peer: PeerResult | string,
): BenchmarkSummary {
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
  const stepOf = (name: string, configuration: string): number | null => {
    const r = result.results.find((x) => x.case === name && x.configuration === configuration);
    return r?.status === 'ok' && r.stats ? r.stats.medianMs : null;
  };
  const round = (value: number | null, digits: number): number | null => (value === null ? null : Math.round(value * 10 ** digits) / 10 ** digits);
  const comparison: E2eComparisonRow[] = [...caseMeta].map(([name, meta]) => {
    const wasmFixesMs = stepOf(name, CONFIGURATIONS.wasmFixes.id);
    const nativeMs = stepOf(name, CONFIGURATIONS.wasmNative.id);
    const measured = typeof peer === 'string' ? undefined : peer.cases[name];
    return {
      ...meta,
      wasmFixesMs: round(wasmFixesMs, 1),
      nativeMs: round(nativeMs, 1),
      nativeSpeedup: round(wasmFixesMs !== null && nativeMs !== null ? wasmFixesMs / nativeMs : null, 2),
      pytorchMs: round(measured?.medianMs ?? null, 1),
      pytorchThreads: measured?.threads ?? null,
      nativeOverPytorch: round(nativeMs !== null && measured !== undefined ? nativeMs / measured.medianMs : null, 2),
    };
  });
  if (comparison.some((row) => row.nativeMs !== null || row.pytorchMs !== null)) {
    const cell = (value: number | null, format: (v: number) => string): string => (value === null ? '–' : format(value));
    lines.push(
      '## Native acceleration and PyTorch',
      '',
      `Median step times from the table above; PyTorch: ${typeof peer === 'string' ? peer : `${peer.torch} in the same run (native_peer.py, case kind \`lm\`: the same shapes, B, T, AdamW and clipping; random tokens), best of ${peer.threadCounts.join(' and ')} threads`}.`,
      '',
      '| preset | variant | wasm with fixes | + native | native speed-up | PyTorch | ours (native) / PyTorch |',
      '|---|---|---|---|---|---|---|',
      ...comparison.map(
        (row) =>
          `| ${row.size} | ${row.variant} | ${cell(row.wasmFixesMs, formatMs)} | ${cell(row.nativeMs, formatMs)} | ${cell(row.nativeSpeedup, (v) => `${v.toFixed(2)}×`)} | ` +
          `${cell(row.pytorchMs, (v) => `${formatMs(v)} (${row.pytorchThreads ?? '?'} thr.)`)} | ${cell(row.nativeOverPytorch, (v) => `${v.toFixed(2)}×`)} |`,
      ),
      '',
    );
  }
  return { data: { rows, comparison, pytorch: typeof peer === 'string' ? peer : { torch: peer.torch, threadCounts: peer.threadCounts } }, markdown: lines.join('\n') };
}

/**
 * Runs the end-to-end benchmark from the command line.
 *
 * @param argv - the flags (`--quick`, `--out <dir>`)
 * @returns nothing; writes `e2e.json` and `e2e.md`
 */
export const main = benchmarkMain(() => e2eBenchmark());

runWhenMain(import.meta.url, main);
