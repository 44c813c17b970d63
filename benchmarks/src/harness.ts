/**
 * The benchmark harness: every benchmark of the kit (kernels, MoE vs MoE++ layers, routers, end-to-end
 * training) is a {@link BenchmarkDefinition} run by {@link runBenchmark}.
 *
 * For each configuration (a backend, with or without the kit's kernel fixes) and each case, the
 * harness prepares the inputs, runs the case a few times to warm up, then times repetitions. The
 * clock stops only after the results are read back (`await tensor.data()`), so lazy or asynchronous
 * backends cannot flatter a case. Each run records wall time and the process's CPU time (user +
 * system): on a machine shared with other jobs the CPU time is the steadier of the two. It records
 * median, min, max and spread, and the environment (date, Node and tfjs versions, backend, kernel
 * fixes, CPU model, cores, memory, load average at the start and the end), then writes
 * `<outDir>/<name>.json` (atomically: temp file, then rename) and a markdown table `<outDir>/<name>.md`.
 *
 * Cases that are compared with each other (an MoE layer and its MoE++ variants) can share a `group`;
 * with `interleave`, the harness prepares a group's cases together and times them round-robin
 * (case A, B, C, then A, B, C, ...), so a change in the machine's load hits every case alike.
 * A benchmark may also hold resources across cases (`setup`, e.g. trained routers), and add its own
 * analysis to the JSON and the markdown (`summarize`).
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
  /**
   * Native acceleration (OpenBLAS `sgemm` on the wasm heap, see `initBackend`): `true` asks for it (the
   * configuration's cases are skipped, with the reason, when it is not available), `false` turns it off,
   * absent leaves `initBackend`'s default (on when available).
   */
  readonly acceleration?: boolean;
}

/**
 * The configurations the kit's benchmarks compare. `wasmFixes` is the kit's wasm kernels alone (native
 * acceleration off); `wasmNative` adds native acceleration, the kit's default where OpenBLAS is installed.
 */
export const CONFIGURATIONS = {
  cpuStock: { id: 'cpu-stock', label: 'cpu stock', backend: 'cpu', kernelFixes: false },
  cpuFixes: { id: 'cpu-fixes', label: 'cpu with fixes', backend: 'cpu', kernelFixes: true },
  wasmStock: { id: 'wasm-stock', label: 'wasm stock', backend: 'wasm', kernelFixes: false },
  wasmFixes: { id: 'wasm-fixes', label: 'wasm with fixes', backend: 'wasm', kernelFixes: true, acceleration: false },
  wasmNative: { id: 'wasm-native', label: 'wasm with fixes + native (OpenBLAS)', backend: 'wasm', kernelFixes: true, acceleration: true },
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
  /** The process's CPU time (user + system) of every timed run, in order; absent when not measured. */
  readonly cpuSamplesMs?: readonly number[];
  /** Median of {@link TimingStats.cpuSamplesMs}. */
  readonly cpuMedianMs?: number;
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
  /**
   * Measurements the case collected during its runs (e.g. the layer's own expert-forward time), copied
   * into the result's `info`. Called after the timed runs, before `dispose`.
   *
   * @param stats - the timing of the timed runs (the last `stats.repetitions` runs were timed)
   */
  info?(stats: TimingStats): Readonly<Record<string, unknown>>;
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
  /**
   * Cases with the same group are compared with each other; with {@link BenchmarkDefinition.interleave}
   * they are timed round-robin. Default: the case's own name (a group of one).
   */
  readonly group?: string;
}

/** Options handed to {@link BenchmarkDefinition.setup}. */
export interface SetupOptions {
  /** `--quick`. */
  readonly quick: boolean;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/** Resources a benchmark holds on one configuration while its cases run (see {@link BenchmarkDefinition.setup}). */
export interface BenchmarkSession {
  /**
   * Called after every case of the configuration ran, while the resources still exist (e.g. to profile).
   *
   * @param results - this configuration's case results
   * @returns data stored in the JSON under `sessions[configuration id]`
   */
  afterCases?(results: readonly CaseResult[]): Promise<Readonly<Record<string, unknown>>> | Readonly<Record<string, unknown>>;
  /** Frees the resources. */
  dispose(): void;
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
  /** Time the cases of a group round-robin (see {@link BenchmarkCase.group}). Default false. */
  readonly interleave?: boolean;
  /**
   * Builds resources shared by the cases on one configuration (after the backend is set up, before the
   * first case); they are freed after the last case. Tensors made here are not counted as leaks.
   */
  readonly setup?: (configuration: Configuration, options: SetupOptions) => Promise<BenchmarkSession> | BenchmarkSession;
  /**
   * The benchmark's own analysis of a finished run (e.g. speed-ups between cases), stored in the JSON
   * under `summary` and appended to the markdown.
   */
  readonly summarize?: (result: BenchmarkResult) => BenchmarkSummary;
}

/** What {@link BenchmarkDefinition.summarize} returns. */
export interface BenchmarkSummary {
  /** Stored in the JSON under `summary`. */
  readonly data: Readonly<Record<string, unknown>>;
  /** Markdown appended after the table of cases. */
  readonly markdown: string;
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
  /** `os.loadavg()` when the run started: 1, 5 and 15 minute load averages (other jobs on the machine). */
  readonly loadAverage: readonly number[];
}

/** A configuration as it was set up for the run. */
export interface ConfigurationRecord extends Configuration {
  /** The tfjs backend actually active. */
  readonly activeBackend: string;
  /** The kernel fixes that were active (empty for stock). */
  readonly activeKernelFixes: readonly string[];
  /** Native acceleration as `initBackend` reported it: active or not, why, threads, library. */
  readonly accelerationStatus?: Readonly<{ active: boolean; reason: string; threads?: number; library?: string }>;
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
  /** What the case reported about its runs (see {@link PreparedCase.info}). */
  readonly info?: Readonly<Record<string, unknown>>;
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
  /** What each configuration's {@link BenchmarkSession.afterCases} returned, by configuration id. */
  readonly sessions?: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  /** The benchmark's own analysis (see {@link BenchmarkDefinition.summarize}). */
  readonly summary?: Readonly<Record<string, unknown>>;
  /** `os.loadavg()` when the run ended. */
  readonly loadAverageEnd?: readonly number[];
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
    loadAverage: os.loadavg().map((value) => Math.round(value * 100) / 100),
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
  const report = await initBackend({
    backend: configuration.backend,
    kernelFixes: configuration.kernelFixes,
    ...(configuration.acceleration !== undefined ? { acceleration: configuration.acceleration } : {}),
  });
  const { active, reason, threads, library } = report.acceleration;
  return {
    ...configuration,
    activeBackend: report.backend,
    activeKernelFixes: report.kernelFixes,
    accelerationStatus: { active, reason, ...(threads !== undefined ? { threads } : {}), ...(library !== undefined ? { library } : {}) },
  };
}

/**
 * @param configuration - a configuration as set up
 * @returns why its cases cannot run (native acceleration asked for but unavailable), or null
 */
function unavailable(configuration: ConfigurationRecord): string | null {
  if (configuration.acceleration !== true || configuration.accelerationStatus?.active !== false) return null;
  return `native acceleration is off here: ${configuration.accelerationStatus.reason}`;
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
 * @param cpuSamplesMs - the process's CPU time of the same runs, in ms (optional; same length)
 * @returns the statistics
 * @throws Error if there are no samples, or CPU samples of another length
 */
export function summarise(samplesMs: readonly number[], warmup: number, cpuSamplesMs?: readonly number[]): TimingStats {
  if (samplesMs.length === 0) throw new Error('summarise: argument samplesMs must hold at least one run, got none');
  if (cpuSamplesMs !== undefined && cpuSamplesMs.length !== samplesMs.length) {
    throw new Error(`summarise: argument cpuSamplesMs must hold ${samplesMs.length} runs like samplesMs, got ${cpuSamplesMs.length}`);
  }
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
    ...(cpuSamplesMs !== undefined ? { cpuSamplesMs: [...cpuSamplesMs], cpuMedianMs: median(cpuSamplesMs) } : {}),
  };
}

/** Wall and CPU time of one run, in ms. */
interface RunTime {
  readonly wallMs: number;
  readonly cpuMs: number;
}

async function runOnce(run: PreparedCase['run']): Promise<RunTime> {
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const output = await run();
  const tensors = Array.isArray(output) ? output : [output];
  try {
    // Read every result back before stopping the clock.
    await Promise.all(tensors.map((t) => t.data()));
    const wallMs = performance.now() - start;
    const cpu = process.cpuUsage(cpuStart);
    return { wallMs, cpuMs: (cpu.user + cpu.system) / 1000 };
  } finally {
    tf.dispose(tensors);
  }
}

interface ResolvedPlan {
  readonly warmup: number;
  readonly minRepetitions: number;
  readonly maxRepetitions: number;
  readonly budgetMs: number;
}

function resolvePlan(plan: TimingPlan): ResolvedPlan {
  const minRepetitions = Math.max(1, plan.minRepetitions ?? 3);
  return {
    warmup: plan.warmup ?? 1,
    minRepetitions,
    maxRepetitions: Math.max(minRepetitions, plan.maxRepetitions ?? 20),
    budgetMs: plan.budgetMs ?? 3000,
  };
}

/** Timed runs that fit the budget, given the wall time of one run (0 = unknown: the minimum). */
function repetitionsFor(plan: ResolvedPlan, runMs: number): number {
  const fitting = plan.warmup > 0 && runMs > 0 ? Math.floor(plan.budgetMs / runMs) : plan.minRepetitions;
  return Math.min(plan.maxRepetitions, Math.max(plan.minRepetitions, fitting));
}

/**
 * Times a prepared case: warm-up runs, then repetitions (see {@link TimingPlan}).
 *
 * @param prepared - the case to run
 * @param plan - warm-up, repetitions and time budget
 * @returns the statistics (wall and CPU time)
 * @throws whatever the case throws
 */
export async function timeCase(prepared: PreparedCase, plan: TimingPlan): Promise<TimingStats> {
  const resolved = resolvePlan(plan);
  let lastMs = 0;
  for (let i = 0; i < resolved.warmup; i++) lastMs = (await runOnce(() => prepared.run())).wallMs;
  const repetitions = repetitionsFor(resolved, lastMs);
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < repetitions; i++) {
    const time = await runOnce(() => prepared.run());
    wall.push(time.wallMs);
    cpu.push(time.cpuMs);
  }
  return summarise(wall, resolved.warmup, cpu);
}

/**
 * Times prepared cases round-robin: each warm-up round runs every case once, then each timed round
 * runs every case once, starting one case later each round (so no case always runs first). The number
 * of rounds fits the budget to the sum of the cases' last warm-up times.
 *
 * @param prepared - the cases to run, in order
 * @param plan - warm-up, repetitions and time budget, shared by the group
 * @returns per case, its statistics or the error it threw (a case that throws leaves the rotation)
 */
export async function timeInterleaved(
  prepared: readonly PreparedCase[],
  plan: TimingPlan,
): Promise<Array<{ stats: TimingStats } | { error: unknown }>> {
  const resolved = resolvePlan(plan);
  const errors = new Map<number, unknown>();
  const wall: number[][] = prepared.map(() => []);
  const cpu: number[][] = prepared.map(() => []);
  const lastMs: number[] = prepared.map(() => 0);
  const runCase = async (index: number, timed: boolean): Promise<void> => {
    if (errors.has(index)) return;
    try {
      const time = await runOnce(() => (prepared[index] as PreparedCase).run());
      lastMs[index] = time.wallMs;
      if (timed) {
        (wall[index] as number[]).push(time.wallMs);
        (cpu[index] as number[]).push(time.cpuMs);
      }
    } catch (error) {
      errors.set(index, error);
    }
  };
  for (let round = 0; round < resolved.warmup; round++) {
    for (let index = 0; index < prepared.length; index++) await runCase(index, false);
  }
  const roundMs = lastMs.reduce((sum, ms, index) => sum + (errors.has(index) ? 0 : ms), 0);
  const repetitions = repetitionsFor(resolved, roundMs);
  for (let round = 0; round < repetitions; round++) {
    for (let offset = 0; offset < prepared.length; offset++) await runCase((round + offset) % prepared.length, true);
  }
  return prepared.map((_, index) =>
    errors.has(index) ? { error: errors.get(index) } : { stats: summarise(wall[index] as number[], resolved.warmup, cpu[index] as number[]) },
  );
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

/** The cases in groups, in order of each group's first case (see {@link BenchmarkCase.group}). */
function groupCases(cases: readonly BenchmarkCase[], interleave: boolean): BenchmarkCase[][] {
  if (!interleave) return cases.map((c) => [c]);
  const groups = new Map<string, BenchmarkCase[]>();
  for (const c of cases) {
    const key = c.group ?? c.name;
    const list = groups.get(key) ?? [];
    list.push(c);
    groups.set(key, list);
  }
  return [...groups.values()];
}

function okResult(
  benchmarkCase: BenchmarkCase,
  configuration: Configuration,
  stats: TimingStats,
  leakedTensors: number,
  info: Readonly<Record<string, unknown>> | undefined,
): CaseResult {
  const gflopsPerSecond =
    benchmarkCase.flops !== undefined && stats.medianMs > 0 ? benchmarkCase.flops / (stats.medianMs * 1e6) : undefined;
  return {
    case: benchmarkCase.name,
    configuration: configuration.id,
    status: 'ok',
    stats,
    ...(gflopsPerSecond !== undefined ? { gflopsPerSecond } : {}),
    leakedTensors,
    ...(info !== undefined ? { info } : {}),
  };
}

function okLine(result: CaseResult): string {
  const stats = result.stats as TimingStats;
  return (
    `  ${result.case}: ${formatMs(stats.medianMs)} median of ${stats.repetitions} ` +
    `(${formatMs(stats.minMs)}–${formatMs(stats.maxMs)}` +
    (stats.cpuMedianMs !== undefined ? `; cpu ${formatMs(stats.cpuMedianMs)}` : '') +
    ')' +
    (result.gflopsPerSecond !== undefined ? `, ${result.gflopsPerSecond.toFixed(2)} GFLOP/s` : '') +
    (result.leakedTensors ? `, ${result.leakedTensors} tensors leaked` : '')
  );
}

/**
 * Runs a benchmark on every configuration and writes `<outDir>/<name>.json` and `<outDir>/<name>.md`.
 *
 * @param definition - the benchmark
 * @param options - where to write, quick mode, logging
 * @returns the result and the paths written
 * @throws Error if the results cannot be written, or from the benchmark's `setup`; a case that throws
 *   is recorded, not rethrown
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
  const sessions: Record<string, Readonly<Record<string, unknown>>> = {};
  log(
    `# ${definition.name}${quick ? ' (quick)' : ''}: ${environment.cpuModel}, ${environment.cores} cores, node ${environment.node}, ` +
      `tfjs ${environment.tfjs}, load average ${environment.loadAverage.join(' ')}`,
  );

  for (const configuration of definition.configurations) {
    const record = await useConfiguration(configuration);
    configurations.push(record);
    log(
      `## ${configuration.label}: backend '${record.activeBackend}', kernel fixes: ${record.activeKernelFixes.join(', ') || 'none'}; ` +
        `native acceleration: ${record.accelerationStatus?.active ? record.accelerationStatus.reason : `off (${record.accelerationStatus?.reason ?? 'unknown'})`}`,
    );
    const missing = unavailable(record);
    if (missing !== null) {
      for (const c of definition.cases) results.push({ case: c.name, configuration: configuration.id, status: 'skipped', message: missing });
      log(`  every case skipped: ${missing}`);
      continue;
    }
    const session = definition.setup ? await definition.setup(configuration, { quick, log }) : undefined;
    const firstResult = results.length;
    try {
      for (const group of groupCases(definition.cases, definition.interleave ?? false)) {
        await runGroup(group, configuration, quick, definition, results, log);
      }
      if (session?.afterCases) sessions[configuration.id] = await session.afterCases(results.slice(firstResult));
    } finally {
      session?.dispose();
    }
  }
  // Leave tfjs as we found it: the previous backend, with the kit's fixes (the kit's default).
  if (previousBackend === 'cpu' || previousBackend === 'wasm') await initBackend({ backend: previousBackend });

  const speedups = definition.speedup ? computeSpeedups(definition, results, definition.speedup) : [];
  const unsummarised: BenchmarkResult = {
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
    ...(Object.keys(sessions).length > 0 ? { sessions } : {}),
    loadAverageEnd: os.loadavg().map((value) => Math.round(value * 100) / 100),
    durationSeconds: (performance.now() - started) / 1000,
  };
  const summary = definition.summarize?.(unsummarised);
  const result: BenchmarkResult = summary ? { ...unsummarised, summary: summary.data } : unsummarised;
  await mkdir(options.outDir, { recursive: true });
  const jsonPath = path.join(options.outDir, `${definition.name}.json`);
  const markdownPath = path.join(options.outDir, `${definition.name}.md`);
  await writeFileAtomic(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
  const markdown = renderMarkdown(result, definition);
  await writeFileAtomic(markdownPath, summary ? `${markdown.trimEnd()}\n\n${summary.markdown.trimEnd()}\n` : markdown);
  log(`wrote ${jsonPath} and ${markdownPath} (${result.durationSeconds.toFixed(1)} s)`);
  return { result, jsonPath, markdownPath };
}

/** Runs one group of cases on a configuration (a single case, or interleaved cases) and records the results. */
async function runGroup(
  group: readonly BenchmarkCase[],
  configuration: Configuration,
  quick: boolean,
  definition: BenchmarkDefinition,
  results: CaseResult[],
  log: (line: string) => void,
): Promise<void> {
  const runnable: Array<{ benchmarkCase: BenchmarkCase; plan: TimingPlan }> = [];
  for (const benchmarkCase of group) {
    const plan = (benchmarkCase.timing ?? definition.timing)(configuration, quick);
    if (typeof plan === 'string') {
      results.push({ case: benchmarkCase.name, configuration: configuration.id, status: 'skipped', message: plan });
      log(`  ${benchmarkCase.name}: ${plan}`);
    } else {
      runnable.push({ benchmarkCase, plan });
    }
  }
  if (runnable.length === 0) return;
  const throwsResult = (benchmarkCase: BenchmarkCase, error: unknown, leakedTensors: number): CaseResult => {
    const message = errorMessage(error);
    log(`  ${benchmarkCase.name}: throws: ${message}${leakedTensors !== 0 ? ` (${leakedTensors} tensors left alive by tfjs)` : ''}`);
    return { case: benchmarkCase.name, configuration: configuration.id, status: 'throws', message, leakedTensors };
  };

  if (runnable.length === 1) {
    const { benchmarkCase, plan } = runnable[0] as { benchmarkCase: BenchmarkCase; plan: TimingPlan };
    const tensorsBefore = tf.memory().numTensors;
    let prepared: PreparedCase | undefined;
    try {
      prepared = benchmarkCase.prepare(configuration);
      const stats = await timeCase(prepared, plan);
      const info = prepared.info?.(stats);
      prepared.dispose();
      prepared = undefined;
      const result = okResult(benchmarkCase, configuration, stats, tf.memory().numTensors - tensorsBefore, info);
      results.push(result);
      log(okLine(result));
    } catch (error) {
      prepared?.dispose();
      // tfjs keeps the tensors saved for backprop when a gradient computation throws; count them.
      results.push(throwsResult(benchmarkCase, error, tf.memory().numTensors - tensorsBefore));
    }
    return;
  }

  // Interleaved: prepare every case, time them round-robin with the first case's plan, dispose them all.
  // Leaks can only be counted for the group as a whole; each case's result carries the group's count.
  const tensorsBefore = tf.memory().numTensors;
  const prepared: Array<PreparedCase | { error: unknown }> = runnable.map(({ benchmarkCase }) => {
    try {
      return benchmarkCase.prepare(configuration);
    } catch (error) {
      return { error };
    }
  });
  const isPrepared = (p: PreparedCase | { error: unknown }): p is PreparedCase => !('error' in p);
  const ready = prepared.flatMap((p, index) => (isPrepared(p) ? [{ index, prepared: p }] : []));
  const outcomes = ready.length > 0 ? await timeInterleaved(ready.map((r) => r.prepared), (runnable[0] as { plan: TimingPlan }).plan) : [];
  const infos = ready.map((r, i) => {
    const outcome = outcomes[i];
    try {
      return outcome && 'stats' in outcome ? r.prepared.info?.(outcome.stats) : undefined;
    } catch (error) {
      return { infoError: errorMessage(error) };
    }
  });
  for (const r of ready) r.prepared.dispose();
  const leakedTensors = tf.memory().numTensors - tensorsBefore;
  runnable.forEach(({ benchmarkCase }, index) => {
    const preparedCase = prepared[index] as PreparedCase | { error: unknown };
    if (!isPrepared(preparedCase)) {
      results.push(throwsResult(benchmarkCase, preparedCase.error, leakedTensors));
      return;
    }
    const position = ready.findIndex((r) => r.index === index);
    const outcome = outcomes[position];
    if (outcome === undefined || 'error' in outcome) {
      results.push(throwsResult(benchmarkCase, outcome?.error ?? new Error('not run'), leakedTensors));
      return;
    }
    const result = okResult(benchmarkCase, configuration, outcome.stats, leakedTensors, infos[position]);
    results.push(result);
    log(okLine(result));
  });
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
    `- load average (1, 5, 15 min; other jobs share the machine): ${(env.loadAverage ?? []).join(', ')} at the start` +
      (result.loadAverageEnd ? `, ${result.loadAverageEnd.join(', ')} at the end` : ''),
  );
  for (const c of result.configurations) {
    const status = c.accelerationStatus;
    const native = status ? `; native acceleration ${status.active ? `on: ${status.reason}` : `off: ${status.reason}`}` : '';
    lines.push(`- ${c.label}: backend '${c.activeBackend}', kernel fixes ${c.activeKernelFixes.length > 0 ? c.activeKernelFixes.join(', ') : 'off'}${native}`);
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
