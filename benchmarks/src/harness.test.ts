/**
 * Smoke tests of the harness and the kernels benchmark on tiny shapes. No timing assertions:
 * only that the benchmark runs, records what it should and writes valid files.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBenchmarkArgs } from './cli.js';
import {
  CONFIGURATIONS,
  median,
  renderMarkdown,
  runBenchmark,
  summarise,
  timeInterleaved,
  writeFileAtomic,
  type BenchmarkDefinition,
  type BenchmarkResult,
  type PreparedCase,
} from './harness.js';
import { kernelsBenchmark, type KernelsBenchmarkSizes } from './kernels.js';

const TINY: KernelsBenchmarkSizes = { matmul: [6, 4, 5], batched: [2, 3, 4, 5], tokens: 8, model: 4, hidden: 6, experts: 3, topK: 2 };

let outDir = '';
beforeAll(async () => {
  outDir = await mkdtemp(path.join(os.tmpdir(), 'moepp-bench-'));
});
afterAll(async () => {
  await rm(outDir, { recursive: true, force: true });
});

describe('kernels benchmark on tiny shapes', () => {
  it('runs every case on every configuration and writes JSON and markdown', async () => {
    const backendBefore = tf.getBackend();
    const tensorsBefore = tf.memory().numTensors;
    const definition = kernelsBenchmark({ sizes: TINY, name: 'kernels-smoke', timing: { warmup: 1, minRepetitions: 2, maxRepetitions: 2 } });
    const { jsonPath, markdownPath } = await runBenchmark(definition, { outDir, log: () => {} });
    expect(tf.getBackend()).toBe(backendBefore);

    expect(jsonPath).toBe(path.join(outDir, 'kernels-smoke.json'));
    const result = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    expect(result.schema).toBe(1);
    expect(result.name).toBe('kernels-smoke');
    expect(result.quick).toBe(false);
    const env = result.environment;
    expect(Number.isNaN(Date.parse(env.date))).toBe(false);
    expect(env.node).toBe(process.version);
    expect(env.tfjs).toBe(tf.version_core);
    expect(env.cores).toBe(os.cpus().length);
    expect(env.cpuModel.length).toBeGreaterThan(0);
    expect(env.totalMemoryBytes).toBe(os.totalmem());
    expect(env.loadAverage).toHaveLength(3);

    expect(result.configurations.map((c) => c.id)).toEqual(['cpu-stock', 'cpu-fixes', 'wasm-stock', 'wasm-fixes']);
    const byId = new Map(result.configurations.map((c) => [c.id, c]));
    expect(byId.get('wasm-stock')?.activeKernelFixes).toEqual([]);
    expect(byId.get('wasm-fixes')?.activeKernelFixes).toContain('wasm-batch-matmul');
    expect(byId.get('cpu-fixes')?.activeKernelFixes).toContain('unsorted-segment-sum');
    expect(byId.get('cpu-stock')?.activeBackend).toBe('cpu');

    // one result per case and configuration
    expect(result.results.length).toBe(result.cases.length * result.configurations.length);
    for (const r of result.results) {
      if (r.status === 'ok') {
        expect(r.stats?.repetitions).toBe(2);
        expect(r.stats?.samplesMs.length).toBe(2);
        expect(r.stats?.minMs).toBeLessThanOrEqual(r.stats?.medianMs ?? Number.NaN);
        expect(r.stats?.medianMs).toBeLessThanOrEqual(r.stats?.maxMs ?? Number.NaN);
        expect(r.stats?.cpuSamplesMs?.length).toBe(2);
        expect(r.leakedTensors).toBe(0);
      }
    }
    const status = (caseName: string, configuration: string): string | undefined =>
      result.results.find((r) => r.case.startsWith(caseName) && r.configuration === configuration)?.status;
    // Stock wasm has no UnsortedSegmentSum: recorded as a throw, not a crash.
    for (const caseName of ['unsortedSegmentSum', 'MoE train step']) {
      const r = result.results.find((x) => x.case.startsWith(caseName) && x.configuration === 'wasm-stock');
      expect(r?.status).toBe('throws');
      expect(r?.message).toContain("Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'");
      expect(status(caseName, 'wasm-fixes')).toBe('ok');
      expect(status(caseName, 'cpu-stock')).toBe('ok');
    }
    // Cases no cpu fix changes are skipped on cpu-with-fixes, with the reason.
    expect(result.results.find((r) => r.case.startsWith('matmul NN') && r.configuration === 'cpu-fixes')?.message).toMatch(/no cpu fix/);
    // every matmul-based case reports GFLOP/s where it ran
    const ffn = result.results.find((r) => r.case.startsWith('FFN GELU') && r.configuration === 'wasm-fixes');
    expect(ffn?.gflopsPerSecond).toBeGreaterThan(0);

    // Nothing leaked but what tfjs keeps when a gradient computation throws (counted on those results).
    const keptByThrows = result.results.reduce((sum, r) => sum + (r.status === 'throws' ? (r.leakedTensors ?? 0) : 0), 0);
    expect(tf.memory().numTensors).toBe(tensorsBefore + keptByThrows);

    expect(result.speedups.length).toBe(result.cases.length);
    expect(result.speedups.find((s) => s.case.startsWith('matmul NT'))?.speedup).toBeGreaterThan(0);
    expect(result.speedups.find((s) => s.case.startsWith('MoE'))).toMatchObject({ speedup: null, note: 'wasm stock throws' });

    const markdown = await readFile(markdownPath, 'utf8');
    expect(markdown).toContain('| case | GFLOP | cpu stock | cpu with fixes | wasm stock | wasm with fixes | speed-up wasm with fixes vs wasm stock | reference |');
    expect(markdown).toContain("throws: Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'");
    // no temp files left behind
    expect((await readdir(outDir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('skips long stock-cpu cases in quick mode, and the minutes-long cpu cases in full mode', async () => {
    const definition = kernelsBenchmark({ sizes: TINY, name: 'kernels-quick' });
    const timingOf = (prefix: string) => definition.cases.find((c) => c.name.startsWith(prefix))?.timing;
    expect(timingOf('MoE')?.(CONFIGURATIONS.cpuStock, true)).toMatch(/skipped in --quick mode/);
    expect(typeof timingOf('MoE')?.(CONFIGURATIONS.wasmFixes, true)).toBe('object');
    expect(timingOf('matmul NN')?.(CONFIGURATIONS.cpuStock, true)).toMatch(/skipped in --quick mode/);
    // Full mode: the cases that take minutes on cpu are skipped, citing their last measured time.
    expect(timingOf('MoE')?.(CONFIGURATIONS.cpuStock, false)).toMatch(/263\.5 s/);
    expect(timingOf('MoE')?.(CONFIGURATIONS.cpuFixes, false)).toMatch(/24\.1 s/);
    expect(timingOf('unsortedSegmentSum')?.(CONFIGURATIONS.cpuStock, false)).toMatch(/119\.5 s/);
    // ...and the others run once on cpu.
    expect(timingOf('FFN GELU')?.(CONFIGURATIONS.cpuStock, false)).toEqual({ warmup: 0, minRepetitions: 1, maxRepetitions: 1 });
    expect(typeof timingOf('unsortedSegmentSum')?.(CONFIGURATIONS.cpuFixes, true)).toBe('object');
  });
});

describe('harness', () => {
  it('records a case that throws instead of crashing, and still writes its files', async () => {
    const definition: BenchmarkDefinition = {
      name: 'throwing',
      description: 'a case that throws',
      configurations: [CONFIGURATIONS.wasmFixes],
      timing: () => ({ warmup: 0, minRepetitions: 1, maxRepetitions: 1 }),
      cases: [
        {
          name: 'boom',
          prepare: () => ({
            run: () => {
              throw new Error('boom\nsecond line');
            },
            dispose: () => {},
          }),
        },
        { name: 'fine', flops: 2, prepare: () => ({ run: () => tf.add(tf.scalar(1), tf.scalar(1)), dispose: () => {} }) },
      ],
    };
    const { result } = await runBenchmark(definition, { outDir, log: () => {} });
    expect(result.results.map((r) => [r.case, r.status, r.message])).toEqual([
      ['boom', 'throws', 'boom'],
      ['fine', 'ok', undefined],
    ]);
    expect(renderMarkdown(result, definition)).toContain('| boom |  | throws: boom |');
  });

  it('times a group round-robin, one case later each round, and drops a case that throws', async () => {
    const calls: string[] = [];
    const make = (name: string, failAt = -1): PreparedCase => {
      let runs = 0;
      return {
        run: () => {
          calls.push(name);
          if (runs++ === failAt) throw new Error(`${name} failed`);
          return tf.scalar(1);
        },
        dispose: () => {},
      };
    };
    const outcomes = await timeInterleaved([make('a'), make('b'), make('c')], { warmup: 1, minRepetitions: 2, maxRepetitions: 2 });
    expect(calls).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'b', 'c', 'a']);
    for (const outcome of outcomes) {
      expect('stats' in outcome && outcome.stats.repetitions).toBe(2);
      expect('stats' in outcome && outcome.stats.cpuSamplesMs?.length).toBe(2);
    }
    calls.length = 0;
    const withFailure = await timeInterleaved([make('a'), make('b', 2)], { warmup: 1, minRepetitions: 3, maxRepetitions: 3 });
    // b fails on its third run (the second timed one) and leaves the rotation.
    expect(calls).toEqual(['a', 'b', 'a', 'b', 'b', 'a', 'a']);
    expect(withFailure[0] && 'stats' in withFailure[0] ? withFailure[0].stats.repetitions : null).toBe(3);
    expect(withFailure[1] && 'error' in withFailure[1] ? (withFailure[1].error as Error).message : null).toBe('b failed');
  });

  it('runs setup, interleaved groups, case info, afterCases and summarize, and writes them', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const events: string[] = [];
    let shared: tf.Tensor | null = null;
    const definition: BenchmarkDefinition = {
      name: 'hooks',
      description: 'hooks of the harness',
      configurations: [CONFIGURATIONS.wasmFixes],
      timing: () => ({ warmup: 1, minRepetitions: 2, maxRepetitions: 2 }),
      interleave: true,
      setup: (configuration, { quick }) => {
        shared = tf.ones([4]); // made in setup: not a leak of any case
        events.push(`setup ${configuration.id} quick=${quick}`);
        return {
          afterCases: (results) => {
            events.push(`afterCases ${results.length}`);
            return { seen: results.map((r) => r.case) };
          },
          dispose: () => {
            shared?.dispose();
            events.push('dispose');
          },
        };
      },
      cases: ['x', 'y', 'z'].map((name) => ({
        name,
        group: name === 'z' ? 'other' : 'pair',
        prepare: () => {
          let runs = 0;
          return {
            run: () => {
              runs++;
              return tf.mul(shared as tf.Tensor, 2);
            },
            dispose: () => {},
            info: (stats) => ({ runs, timed: stats.repetitions }),
          };
        },
      })),
      summarize: (result) => ({ data: { cases: result.results.length }, markdown: '## Extra section\n\nmade by summarize' }),
    };
    const { result, markdownPath, jsonPath } = await runBenchmark(definition, { outDir, log: () => {} });
    expect(events).toEqual(['setup wasm-fixes quick=false', 'afterCases 3', 'dispose']);
    expect(result.results.map((r) => [r.case, r.status, r.info, r.leakedTensors])).toEqual([
      ['x', 'ok', { runs: 3, timed: 2 }, 0],
      ['y', 'ok', { runs: 3, timed: 2 }, 0],
      ['z', 'ok', { runs: 3, timed: 2 }, 0],
    ]);
    expect(result.sessions).toEqual({ 'wasm-fixes': { seen: ['x', 'y', 'z'] } });
    expect(result.summary).toEqual({ cases: 3 });
    expect(result.environment.loadAverage).toHaveLength(3);
    expect(result.loadAverageEnd).toHaveLength(3);
    for (const r of result.results) expect(r.stats?.cpuMedianMs).toBeGreaterThanOrEqual(0);
    const written = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    expect(written.summary).toEqual({ cases: 3 });
    const markdown = await readFile(markdownPath, 'utf8');
    expect(markdown).toContain('## Extra section');
    expect(markdown).toMatch(/load average \(1, 5, 15 min/);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('summarises samples: median, min, max, spread', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const stats = summarise([10, 12, 11, 20], 1);
    expect(stats).toMatchObject({ warmup: 1, repetitions: 4, medianMs: 11.5, minMs: 10, maxMs: 20, meanMs: 13.25 });
    expect(stats.spreadPercent).toBeCloseTo((10 / 11.5) * 100);
    expect(() => summarise([], 0)).toThrow('summarise: argument samplesMs must hold at least one run, got none');
    expect(summarise([10, 30, 20], 0, [5, 9, 7])).toMatchObject({ medianMs: 20, cpuSamplesMs: [5, 9, 7], cpuMedianMs: 7 });
    expect(() => summarise([10, 30], 0, [5])).toThrow('summarise: argument cpuSamplesMs must hold 2 runs like samplesMs, got 1');
  });

  it('writes files atomically, leaving no temp file', async () => {
    const file = path.join(outDir, 'atomic.json');
    await writeFileAtomic(file, '{"a":1}\n');
    await writeFileAtomic(file, '{"a":2}\n');
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ a: 2 });
    expect((await readdir(outDir)).filter((f) => f.startsWith('atomic.json') && f.endsWith('.tmp'))).toEqual([]);
  });

  it('parses --quick, --only and --out', () => {
    const options = parseBenchmarkArgs(['--quick', '--only', 'kernels,layers', '--only', 'routers', '--out', 'some/dir']);
    expect(options).toMatchObject({ quick: true, only: ['kernels', 'layers', 'routers'], help: false });
    expect(options.outDir).toBe(path.resolve('some/dir'));
    expect(parseBenchmarkArgs([]).outDir).toMatch(/benchmarks[/\\]results[/\\]?$/);
    expect(() => parseBenchmarkArgs(['--fast'])).toThrow(/--fast/);
  });
});
