/**
 * Smoke test of the end-to-end benchmark on the smoke presets with short sequences. No timing assertions.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIGURATIONS, runBenchmark, type BenchmarkResult } from './harness.js';
import { e2eBenchmark, type E2eRow } from './e2e.js';

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

  it('runs only wasm with fixes in --quick mode', () => {
    const definition = e2eBenchmark();
    const tiny = definition.cases.find((c) => c.name === 'tiny moepp');
    expect(tiny?.timing?.(CONFIGURATIONS.cpuFixes, true)).toBe('skipped in --quick mode');
    expect(tiny?.timing?.(CONFIGURATIONS.cpuFixes, false)).toEqual({ warmup: 0, minRepetitions: 1, maxRepetitions: 1 });
    expect(definition.configurations.map((c) => c.id)).toEqual(['wasm-fixes', 'wasm-native', 'wasm-stock', 'cpu-fixes']);
    expect(typeof tiny?.timing?.(CONFIGURATIONS.wasmFixes, true)).toBe('object');
  });
});
