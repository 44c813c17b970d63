/**
 * Smoke test of the end-to-end benchmark on the smoke presets with short sequences. No timing assertions.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIGURATIONS, runBenchmark, type BenchmarkResult } from './harness.js';
import { e2eBenchmark, type E2eComparisonRow, type E2eRow } from './e2e.js';

let outDir = '';
beforeAll(async () => {
  outDir = await mkdtemp(path.join(os.tmpdir(), 'moepp-bench-e2e-'));
});
afterAll(async () => {
  await rm(outDir, { recursive: true, force: true });
});

describe('end-to-end benchmark on the smoke presets', () => {
  it('trains dense, MoE and MoE++ a few steps per configuration and reports tokens/s', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const definition = e2eBenchmark({
      name: 'e2e-smoke',
      sizes: ['smoke'],
      batchSize: 2,
      seqLen: 16,
      cpuSeqLen: 8,
      configurations: [CONFIGURATIONS.wasmFixes, CONFIGURATIONS.wasmStock, CONFIGURATIONS.cpuFixes],
      timing: { warmup: 1, minRepetitions: 2, maxRepetitions: 2 },
      peer: false,
    });
    const { jsonPath, markdownPath } = await runBenchmark(definition, { outDir, log: () => {} });
    const result = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    expect(result.results).toHaveLength(9);
    const byConfiguration = (id: string) => result.results.filter((r) => r.configuration === id);
    for (const r of [...byConfiguration('wasm-fixes'), ...byConfiguration('cpu-fixes')]) {
      expect(r.status).toBe('ok');
      expect(r.leakedTensors).toBe(0);
      expect(r.info?.tokensPerSecond).toBeGreaterThan(0);
      expect(r.info?.stepsRun).toBe(3);
      expect((r.info?.losses as number[]).every(Number.isFinite)).toBe(true);
    }
    expect(byConfiguration('wasm-fixes').map((r) => [r.info?.batchSize, r.info?.seqLen, r.info?.tokensPerStep])).toEqual([
      [2, 16, 32],
      [2, 16, 32],
      [2, 16, 32],
    ]);
    expect(byConfiguration('cpu-fixes')[0]?.info).toMatchObject({ batchSize: 1, seqLen: 8, note: expect.stringMatching(/B=1/) });
    const ffn = (variant: string) => byConfiguration('wasm-fixes').find((r) => r.case === `smoke ${variant}`)?.info?.ffnExpertsPerToken;
    expect(ffn('dense')).toBeNull();
    expect(ffn('moe')).toBe(2);
    expect(ffn('moepp')).toBeGreaterThanOrEqual(0);
    // Stock wasm has no UnsortedSegmentSum, so the embedding's gather has no gradient: recorded, not fatal.
    for (const r of byConfiguration('wasm-stock')) {
      expect(r.status).toBe('throws');
      expect(r.message).toContain("Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'");
    }
    const keptByThrows = result.results.reduce((sum, r) => sum + (r.status === 'throws' ? (r.leakedTensors ?? 0) : 0), 0);
    expect(tf.memory().numTensors).toBe(tensorsBefore + keptByThrows);
    const rows = (result.summary as { rows: E2eRow[] }).rows;
    expect(rows).toHaveLength(9);
    expect(rows.find((row) => row.configuration === 'wasm-fixes' && row.variant === 'moepp')?.tokensPerSecond).toBeGreaterThan(0);
    expect(await readFile(markdownPath, 'utf8')).toContain('## Training throughput (tokens/s)');
  });

  it('compares native acceleration with wasm alone and with a PyTorch peer', async () => {
    const peer = { torch: '1.13.0', threadCounts: [1, 2], cases: { 'smoke moepp': { medianMs: 40, minMs: 38, maxMs: 45, repetitions: 5, threads: 1 } } };
    const definition = e2eBenchmark({
      name: 'e2e-compare',
      sizes: ['smoke'],
      variants: ['moepp'],
      batchSize: 2,
      seqLen: 16,
      configurations: [CONFIGURATIONS.wasmFixes, CONFIGURATIONS.wasmNative],
      timing: { warmup: 1, minRepetitions: 2, maxRepetitions: 2 },
      peer,
    });
    const { jsonPath, markdownPath } = await runBenchmark(definition, { outDir, log: () => {} });
    const result = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    const [row] = (result.summary as { comparison: E2eComparisonRow[] }).comparison;
    const median = (configuration: string) => result.results.find((r) => r.configuration === configuration)?.stats?.medianMs ?? null;
    const wasm = median('wasm-fixes') as number;
    expect(row).toMatchObject({ size: 'smoke', variant: 'moepp', pytorchMs: 40, pytorchThreads: 1 });
    expect(row?.wasmFixesMs).toBeCloseTo(wasm, 1);
    const native = median('wasm-native');
    if (native === null) {
      // No OpenBLAS here: the native row is skipped and so are the ratios that need it.
      expect([row?.nativeMs, row?.nativeSpeedup, row?.nativeOverPytorch]).toEqual([null, null, null]);
    } else {
      expect(row?.nativeSpeedup).toBeCloseTo(wasm / native, 1);
      expect(row?.nativeOverPytorch).toBeCloseTo(native / 40, 1);
    }
    expect(await readFile(markdownPath, 'utf8')).toContain('## Native acceleration and PyTorch');
  });

  it('runs only wasm with fixes in --quick mode', () => {
    const definition = e2eBenchmark();
    const tiny = definition.cases.find((c) => c.name === 'tiny moepp');
    expect(tiny?.timing?.(CONFIGURATIONS.cpuFixes, true)).toBe('skipped in --quick mode');
    expect(tiny?.timing?.(CONFIGURATIONS.cpuFixes, false)).toEqual({ warmup: 0, minRepetitions: 1, maxRepetitions: 1 });
    expect(definition.configurations.map((c) => c.id)).toEqual(['wasm-fixes', 'wasm-native', 'wasm-stock', 'cpu-fixes']);
    expect(typeof tiny?.timing?.(CONFIGURATIONS.wasmFixes, true)).toBe('object');
  });
});
