/**
 * The benchmark harness: every benchmark of the kit (kernels now; MoE layers, routers and end-to-end
 * training later) is a {@link BenchmarkDefinition} run by {@link runBenchmark}.
 *
 * For each configuration (a backend, with or without the kit's kernel fixes) and each case, the
 * harness prepares the inputs, runs the case a few times to warm up, then times repetitions. The
 * clock stops only after the results are read back (`await tensor.data()`), so lazy or asynchronous
 * backends cannot flatter a case. It records median, min, max and spread, and the environment
 * (date, Node and tfjs versions, backend, kernel fixes, CPU model, cores, memory), then writes
 * `<outDir>/<name>.json` (atomically: temp file, then rename) and a markdown table `<outDir>/<name>.md`.
 *
 * A case that throws on a configuration (stock wasm has no `UnsortedSegmentSum`) is recorded as
 * `throws: <message>`, not fatal. Timing belongs here, never in tests.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { version_wasm } from '@tensorflow/tfjs-backend-wasm';
import { initBackend } from '@moepp/tensors-core';

/** One way to run a case: a backend, with or without the kit's kernel fixes. */
export interface Configuration {
  /** Short id used in JSON and speed-up records, e.g. `'wasm-fixes'`. */
  readonly id: string;
  /** Column heading, e.g. `'wasm with fixes'`. */
  readonly label: string;
  /** The tfjs backend. */
  readonly backend: 'cpu' | 'wasm';
  /** Register the kit's kernel fixes (`true`) or run stock tfjs (`false`: no kit kernels or gradients). */
  readonly kernelFixes: boolean;
}

/** The configurations the kit's benchmarks compare. */
export const CONFIGURATIONS = {
  cpuStock: { id: 'cpu-stock', label: 'cpu stock', backend: 'cpu', kernelFixes: false },
  cpuFixes: { id: 'cpu-fixes', label: 'cpu with fixes', backend: 'cpu', kernelFixes: true },
  wasmStock: { id: 'wasm-stock', label: 'wasm stock', backend: 'wasm', kernelFixes: false },
  wasmFixes: { id: 'wasm-fixes', label: 'wasm with fixes', backend: 'wasm', kernelFixes: true },
} as const satisfies Record<string, Configuration>;

/**
 * How many times to run a case. After `warmup` untimed runs, the harness times enough repetitions
 * to fill `budgetMs` (estimated from the last warm-up run), at least `minRepetitions` and at most
 * `maxRepetitions`. With no warm-up, it times `minRepetitions`.
 */
export interface TimingPlan {
  /** Untimed runs first (JIT, XNNPACK weight packing, heap growth). Default 1. */
  readonly warmup?: number;
  /** At least this many timed runs. Default 3. */
  readonly minRepetitions?: number;
  /** At most this many timed runs. Default 20. */
  readonly maxRepetitions?: number;
  /** Target total time of the timed runs, in ms. Default 3000. */
  readonly budgetMs?: number;
}

/** Timing statistics of one case on one configuration. All times in milliseconds. */
export interface TimingStats {
  /** Untimed warm-up runs done. */
  readonly warmup: number;
  /** Timed runs. */
  readonly repetitions: number;
  /** Every timed run, in order. */
  readonly samplesMs: readonly number[];
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
  readonly meanMs: number;
  /** `(max - min) / median`, in percent: how much to trust the median. */
  readonly spreadPercent: number;
}

/** What a prepared case runs. Inputs live on the configuration's backend until `dispose`. */
export interface PreparedCase {
  /**
   * One run. Returns the tensors to read back (the harness reads and disposes them); everything
   * else it makes must be disposed inside (use `tf.tidy`).
   */
  run(): tf.Tensor | tf.Tensor[] | Promise<tf.Tensor | tf.Tensor[]>;
  /** Frees the inputs made by `prepare`. */
  dispose(): void;
}

/** A measured peer (e.g. PyTorch on the same machine) to print the ratio to, in the markdown. */
export interface ReferenceTime {
  /** Who, e.g. `'PyTorch 1.13 CPU'`. */
  readonly label: string;
  /** Time of one run, in ms (a range: the low and high ends). */
  readonly ms: readonly [number, number];
  /** Where the number comes from. */
  readonly source: string;
}

/** One row of a benchmark. */
export interface BenchmarkCase {
  /** Unique within the benchmark, e.g. `'matmul NT [1024,256]x[1024,256]ᵀ'`. */
  readonly name: string;
  /** Floating-point operations of one run (for GFLOP/s); omit when meaningless. */
  readonly flops?: number;
  /** Shapes and settings, copied into the JSON. */
  readonly details?: Readonly<Record<string, unknown>>;
  /**
   * How to time this case on a configuration, or a string saying why it is skipped there
   * (e.g. `'skipped in --quick mode'`). Default: the benchmark's `timing`.
   */
  readonly timing?: (configuration: Configuration, quick: boolean) => TimingPlan | string;
  /** Builds the inputs on the active backend. */
  prepare(configuration: Configuration): PreparedCase;
  /** A peer's time for the same work, if one was measured. */
  readonly reference?: ReferenceTime;
}

/** A benchmark: cases run on each configuration. */
export interface BenchmarkDefinition {
  /** File name of the results: `<outDir>/<name>.json` and `.md`. */
  readonly name: string;
  /** One paragraph for the markdown header. */
  readonly description: string;
  /** Columns, in order. */
  readonly configurations: readonly Configuration[];
  readonly cases: readonly BenchmarkCase[];
  /** Default timing, per configuration (see {@link BenchmarkCase.timing}). */
  readonly timing: (configuration: Configuration, quick: boolean) => TimingPlan | string;
  /** Speed-up column: `baseline` time / `candidate` time, by configuration id. */
  readonly speedup?: { readonly baseline: string; readonly candidate: string };
}

/** The machine and software a benchmark ran on. */
export interface EnvironmentRecord {
  /** ISO 8601 start time. */
  readonly date: string;
  readonly node: string;
  /** `@tensorflow/tfjs-core` version. */
  readonly tfjs: string;
  /** `@tensorflow/tfjs-backend-wasm` version. */
  readonly tfjsBackendWasm: string;
  readonly platform: string;
  readonly arch: string;
  /** `os.cpus()[0].model`. */
  readonly cpuModel: string;
  /** `os.cpus().length`. */
  readonly cores: number;
  readonly totalMemoryBytes: number;
}

/** A configuration as it was set up for the run. */
export interface ConfigurationRecord extends Configuration {
  /** The tfjs backend actually active. */
  readonly activeBackend: string;
  /** The kernel fixes that were active (empty for stock). */
  readonly activeKernelFixes: readonly string[];
}

/** The outcome of one case on one configuration. */
export interface CaseResult {
  readonly case: string;
  /** Configuration id. */
  readonly configuration: string;
  readonly status: 'ok' | 'throws' | 'skipped';
  /** For `throws` and `skipped`: why. */
  readonly message?: string;
  readonly stats?: TimingStats;
  /** `flops / median`, when the case has a FLOP count. */
  readonly gflopsPerSecond?: number;
  /**
   * Tensors left alive by the case: should be 0 for `ok`. For `throws` inside `tf.grads`, tfjs itself
   * keeps the tensors it saved for the backward pass, and they are counted here.
   */
  readonly leakedTensors?: number;
}

/** The speed-up of one configuration over another on one case. */
export interface SpeedupRecord {
  readonly case: string;
  readonly baseline: string;
  readonly candidate: string;
  /** `baseline median / candidate median`; `null` when either did not run. */
  readonly speedup: number | null;
  /** Why there is no number, e.g. `'wasm stock throws'`. */
  readonly note?: string;
}

/** Everything one benchmark run wrote to its JSON file. */
export interface BenchmarkResult {
  /** Version of this layout. */
  readonly schema: 1;
  readonly name: string;
  readonly description: string;
  readonly quick: boolean;
  readonly environment: EnvironmentRecord;
  readonly configurations: readonly ConfigurationRecord[];
  readonly cases: ReadonlyArray<{
    readonly name: string;
    readonly flops?: number;
    readonly details?: Readonly<Record<string, unknown>>;
    readonly reference?: ReferenceTime;
  }>;
  readonly results: readonly CaseResult[];
  readonly speedups: readonly SpeedupRecord[];
  /** Wall time of the whole run, in seconds. */
  readonly durationSeconds: number;
}

/** Options of {@link runBenchmark}. */
export interface RunOptions {
  /** Folder for `<name>.json` and `<name>.md`; created if missing. */
  readonly outDir: string;
  /** Fewer repetitions; long stock configurations skipped or shrunk. Default false. */
  readonly quick?: boolean;
  /** Progress lines. Default: `console.log`; pass `() => {}` for silence. */
  readonly log?: (line: string) => void;
}

/**
 * @returns the machine and software record for a benchmark run starting now
 */
export function environmentRecord(): EnvironmentRecord {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    tfjs: tf.version_core,
    tfjsBackendWasm: version_wasm,
    platform: process.platform,
    arch: process.arch,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    totalMemoryBytes: os.totalmem(),
  };
}

/**
 * Switches tfjs to a configuration: its backend, with the kit's kernel fixes or stock tfjs.
 *
 * @param configuration - the configuration to set up
 * @returns the configuration with the backend and kernel fixes now active
 * @throws ConfigError from `initBackend` if the backend cannot be initialised
 */
export async function useConfiguration(configuration: Configuration): Promise<ConfigurationRecord> {
  const report = await initBackend({ backend: configuration.backend, kernelFixes: configuration.kernelFixes });
  return { ...configuration, activeBackend: report.backend, activeKernelFixes: report.kernelFixes };
}

/**
 * @param samples - timed runs in ms (at least one)
 * @returns the median (mean of the middle two for an even count)
 */
export function median(samples: readonly number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/**
 * Summarises timed runs.
 *
 * @param samplesMs - the timed runs, in ms (at least one)
 * @param warmup - the number of untimed runs before them
 * @returns the statistics
 * @throws Error if there are no samples
 */
export function summarise(samplesMs: readonly number[], warmup: number): TimingStats {
  if (samplesMs.length === 0) throw new Error('summarise: argument samplesMs must hold at least one run, got none');
  const medianMs = median(samplesMs);
  const minMs = Math.min(...samplesMs);
  const maxMs = Math.max(...samplesMs);
  return {
    warmup,
    repetitions: samplesMs.length,
    samplesMs: [...samplesMs],
    medianMs,
    minMs,
    maxMs,
    meanMs: samplesMs.reduce((a, b) => a + b, 0) / samplesMs.length,
    spreadPercent: medianMs > 0 ? ((maxMs - minMs) / medianMs) * 100 : 0,
  };
}

async function runOnce(run: PreparedCase['run']): Promise<number> {
  const start = performance.now();
  const output = await run();
  const tensors = Array.isArray(output) ? output : [output];
  try {
    // Read every result back before stopping the clock.
    await Promise.all(tensors.map((t) => t.data()));
    return performance.now() - start;
  } finally {
    tf.dispose(tensors);
  }
}

/**
 * Times a prepared case: warm-up runs, then repetitions (see {@link TimingPlan}).
 *
 * @param prepared - the case to run
 * @param plan - warm-up, repetitions and time budget
 * @returns the statistics
 * @throws whatever the case throws
 */
export async function timeCase(prepared: PreparedCase, plan: TimingPlan): Promise<TimingStats> {
  const warmup = plan.warmup ?? 1;
  const minRepetitions = Math.max(1, plan.minRepetitions ?? 3);
  const maxRepetitions = Math.max(minRepetitions, plan.maxRepetitions ?? 20);
  const budgetMs = plan.budgetMs ?? 3000;
  let lastMs = 0;
  for (let i = 0; i < warmup; i++) lastMs = await runOnce(() => prepared.run());
  const fitting = warmup > 0 && lastMs > 0 ? Math.floor(budgetMs / lastMs) : minRepetitions;
  const repetitions = Math.min(maxRepetitions, Math.max(minRepetitions, fitting));
  const samples: number[] = [];
  for (let i = 0; i < repetitions; i++) samples.push(await runOnce(() => prepared.run()));
  return summarise(samples, warmup);
}

function errorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const firstLine = message.split('\n')[0] ?? message;
  return firstLine.length > 200 ? `${firstLine.slice(0, 197)}...` : firstLine;
}

/** Formats milliseconds for tables: `0.42 ms`, `33.1 ms`, `1.87 s`. */
export function formatMs(ms: number): string {
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10_000 ? 1 : 2)} s`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/**
 * Runs a benchmark on every configuration and writes `<outDir>/<name>.json` and `<outDir>/<name>.md`.
 *
 * @param definition - the benchmark
 * @param options - where to write, quick mode, logging
 * @returns the result and the paths written
 * @throws Error if the results cannot be written; a case that throws is recorded, not rethrown
 */
export async function runBenchmark(
  definition: BenchmarkDefinition,
  options: RunOptions,
): Promise<{ result: BenchmarkResult; jsonPath: string; markdownPath: string }> {
  const quick = options.quick ?? false;
  const log = options.log ?? ((line: string) => console.log(line));
  const started = performance.now();
  const environment = environmentRecord();
  const previousBackend = tf.getBackend();
  const configurations: ConfigurationRecord[] = [];
  const results: CaseResult[] = [];
  log(`# ${definition.name}${quick ? ' (quick)' : ''}: ${environment.cpuModel}, ${environment.cores} cores, node ${environment.node}, tfjs ${environment.tfjs}`);

  for (const configuration of definition.configurations) {
    const record = await useConfiguration(configuration);
    configurations.push(record);
    log(`## ${configuration.label}: backend '${record.activeBackend}', kernel fixes: ${record.activeKernelFixes.join(', ') || 'none'}`);
    for (const benchmarkCase of definition.cases) {
      const plan = (benchmarkCase.timing ?? definition.timing)(configuration, quick);
      if (typeof plan === 'string') {
        results.push({ case: benchmarkCase.name, configuration: configuration.id, status: 'skipped', message: plan });
        log(`  ${benchmarkCase.name}: ${plan}`);
        continue;
      }
      const tensorsBefore = tf.memory().numTensors;
      let prepared: PreparedCase | undefined;
      try {
        prepared = benchmarkCase.prepare(configuration);
        const stats = await timeCase(prepared, plan);
        prepared.dispose();
        prepared = undefined;
        const gflopsPerSecond =
          benchmarkCase.flops !== undefined && stats.medianMs > 0 ? benchmarkCase.flops / (stats.medianMs * 1e6) : undefined;
        const leakedTensors = tf.memory().numTensors - tensorsBefore;
        results.push({
          case: benchmarkCase.name,
          configuration: configuration.id,
          status: 'ok',
          stats,
          ...(gflopsPerSecond !== undefined ? { gflopsPerSecond } : {}),
          leakedTensors,
        });
        log(
          `  ${benchmarkCase.name}: ${formatMs(stats.medianMs)} median of ${stats.repetitions} ` +
            `(${formatMs(stats.minMs)}–${formatMs(stats.maxMs)})` +
            (gflopsPerSecond !== undefined ? `, ${gflopsPerSecond.toFixed(2)} GFLOP/s` : '') +
            (leakedTensors !== 0 ? `, ${leakedTensors} tensors leaked` : ''),
        );
      } catch (error) {
        prepared?.dispose();
        const message = errorMessage(error);
        // tfjs keeps the tensors saved for backprop when a gradient computation throws; count them.
        const leakedTensors = tf.memory().numTensors - tensorsBefore;
        results.push({ case: benchmarkCase.name, configuration: configuration.id, status: 'throws', message, leakedTensors });
        log(`  ${benchmarkCase.name}: throws: ${message}${leakedTensors !== 0 ? ` (${leakedTensors} tensors left alive by tfjs)` : ''}`);
      }
    }
  }
  // Leave tfjs as we found it: the previous backend, with the kit's fixes (the kit's default).
  if (previousBackend === 'cpu' || previousBackend === 'wasm') await initBackend({ backend: previousBackend });

  const speedups = definition.speedup ? computeSpeedups(definition, results, definition.speedup) : [];
  const result: BenchmarkResult = {
    schema: 1,
    name: definition.name,
    description: definition.description,
    quick,
    environment,
    configurations,
    cases: definition.cases.map((c) => ({
      name: c.name,
      ...(c.flops !== undefined ? { flops: c.flops } : {}),
      ...(c.details ? { details: c.details } : {}),
      ...(c.reference ? { reference: c.reference } : {}),
    })),
    results,
    speedups,
    durationSeconds: (performance.now() - started) / 1000,
  };
  await mkdir(options.outDir, { recursive: true });
  const jsonPath = path.join(options.outDir, `${definition.name}.json`);
  const markdownPath = path.join(options.outDir, `${definition.name}.md`);
  await writeFileAtomic(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
  await writeFileAtomic(markdownPath, renderMarkdown(result, definition));
  log(`wrote ${jsonPath} and ${markdownPath} (${result.durationSeconds.toFixed(1)} s)`);
  return { result, jsonPath, markdownPath };
}

function computeSpeedups(
  definition: BenchmarkDefinition,
  results: readonly CaseResult[],
  pair: { readonly baseline: string; readonly candidate: string },
): SpeedupRecord[] {
  const find = (caseName: string, configuration: string): CaseResult | undefined =>
    results.find((r) => r.case === caseName && r.configuration === configuration);
  const labelOf = (id: string): string => definition.configurations.find((c) => c.id === id)?.label ?? id;
  return definition.cases.map((c) => {
    const baseline = find(c.name, pair.baseline);
    const candidate = find(c.name, pair.candidate);
    const record = { case: c.name, baseline: pair.baseline, candidate: pair.candidate };
    if (baseline?.status === 'ok' && candidate?.status === 'ok' && baseline.stats && candidate.stats) {
      return { ...record, speedup: baseline.stats.medianMs / candidate.stats.medianMs };
    }
    const missing = [baseline, candidate].find((r) => r?.status !== 'ok');
    const what = missing === undefined ? 'not run' : missing.status;
    const who = missing?.configuration ?? (baseline === undefined ? pair.baseline : pair.candidate);
    return { ...record, speedup: null, note: `${labelOf(who)} ${what}` };
  });
}

/**
 * Writes a file atomically: a temp file beside it (`*.tmp`, git-ignored), then a rename, so a reader
 * never sees half a file.
 *
 * @param filePath - the destination
 * @param content - the text to write
 * @throws Error from the file system
 */
export async function writeFileAtomic(filePath: string, content: string): Promise<void> {
  const temporary = `${filePath}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(temporary, content, 'utf8');
  await rename(temporary, filePath);
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/**
 * Renders a result as markdown: the environment, then one row per case with, per configuration,
 * `median (min–max), GFLOP/s`, the speed-up column and the reference peer.
 *
 * @param result - a benchmark result
 * @param definition - its definition (for labels and the speed-up pair)
 * @returns the markdown text
 */
export function renderMarkdown(result: BenchmarkResult, definition: Pick<BenchmarkDefinition, 'speedup'>): string {
  const env = result.environment;
  const lines: string[] = [];
  lines.push(`# Benchmark: ${result.name}${result.quick ? ' (quick)' : ''}`, '');
  lines.push(result.description, '');
  lines.push(
    `- date: ${env.date}`,
    `- machine: ${env.cpuModel}, ${env.cores} cores, ${(env.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB, ${env.platform}/${env.arch}`,
    `- software: node ${env.node}, tfjs ${env.tfjs}, tfjs-backend-wasm ${env.tfjsBackendWasm}`,
  );
  for (const c of result.configurations) {
    lines.push(`- ${c.label}: backend '${c.activeBackend}', kernel fixes ${c.activeKernelFixes.length > 0 ? c.activeKernelFixes.join(', ') : 'off'}`);
  }
  lines.push(
    `- each cell: median time of the timed runs (min–max) and GFLOP/s; results read back before the clock stops`,
    '',
  );
  const labelOf = (id: string): string => result.configurations.find((c) => c.id === id)?.label ?? id;
  const speedupHeading = definition.speedup
    ? [`speed-up ${labelOf(definition.speedup.candidate)} vs ${labelOf(definition.speedup.baseline)}`]
    : [];
  const hasReference = result.cases.some((c) => c.reference);
  const header = ['case', 'GFLOP', ...result.configurations.map((c) => c.label), ...speedupHeading, ...(hasReference ? ['reference'] : [])];
  lines.push(`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`);
  for (const c of result.cases) {
    const cells = [escapeCell(c.name), c.flops !== undefined ? (c.flops / 1e9).toFixed(2) : ''];
    let fastest: number | undefined;
    for (const configuration of result.configurations) {
      const r = result.results.find((x) => x.case === c.name && x.configuration === configuration.id);
      if (r === undefined) cells.push('');
      else if (r.status === 'ok' && r.stats) {
        fastest = fastest === undefined ? r.stats.medianMs : Math.min(fastest, r.stats.medianMs);
        const rate = r.gflopsPerSecond !== undefined ? `, ${r.gflopsPerSecond.toFixed(2)} GFLOP/s` : '';
        const range = r.stats.repetitions > 1 ? ` (${formatMs(r.stats.minMs)}–${formatMs(r.stats.maxMs)})` : ' (1 run)';
        cells.push(`${formatMs(r.stats.medianMs)}${range}${rate}`);
      } else if (r.status === 'skipped') cells.push(escapeCell(r.message ?? 'skipped'));
      else cells.push(escapeCell(`${r.status}${r.message ? `: ${r.message}` : ''}`));
    }
    if (definition.speedup) {
      const s = result.speedups.find((x) => x.case === c.name);
      cells.push(s?.speedup != null ? `${s.speedup.toFixed(1)}×` : escapeCell(s?.note ?? ''));
    }
    if (hasReference) {
      const ref = c.reference;
      if (ref === undefined) cells.push('');
      else {
        const [low, high] = ref.ms;
        const span = low === high ? formatMs(low) : `${formatMs(low)}–${formatMs(high)}`;
        const ratio =
          fastest === undefined
            ? ''
            : `; fastest here is ${(fastest / high).toFixed(1)}${low === high ? '' : `–${(fastest / low).toFixed(1)}`}× its time`;
        cells.push(escapeCell(`${ref.label}: ${span}${ratio}`));
      }
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  const references = result.cases.flatMap((c) => (c.reference ? [`- ${c.name}: ${c.reference.label}, ${c.reference.source}`] : []));
  if (references.length > 0) lines.push('', 'References:', ...[...new Set(references)]);
  lines.push('', `Total run time: ${result.durationSeconds.toFixed(1)} s.`, '');
  return lines.join('\n');
}
