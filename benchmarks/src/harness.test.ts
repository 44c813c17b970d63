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
  writeFileAtomic,
  type BenchmarkDefinition,
  type BenchmarkResult,
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

  it('skips long stock-cpu cases in quick mode', async () => {
    const definition = kernelsBenchmark({ sizes: TINY, name: 'kernels-quick' });
    const plan = definition.cases.find((c) => c.name.startsWith('MoE'))?.timing?.(CONFIGURATIONS.cpuStock, true);
    expect(plan).toMatch(/skipped in --quick mode/);
    const wasmPlan = definition.cases.find((c) => c.name.startsWith('MoE'))?.timing?.(CONFIGURATIONS.wasmFixes, true);
    expect(typeof wasmPlan).toBe('object');
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

  it('summarises samples: median, min, max, spread', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const stats = summarise([10, 12, 11, 20], 1);
    expect(stats).toMatchObject({ warmup: 1, repetitions: 4, medianMs: 11.5, minMs: 10, maxMs: 20, meanMs: 13.25 });
    expect(stats.spreadPercent).toBeCloseTo((10 / 11.5) * 100);
    expect(() => summarise([], 0)).toThrow('summarise: argument samplesMs must hold at least one run, got none');
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
