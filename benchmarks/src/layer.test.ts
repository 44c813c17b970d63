/**
 * Smoke test of the layer benchmark on a tiny layer. No timing assertions: only that every case runs,
 * the trained routers and the profile are recorded, and the JSON holds the expected fields.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ffnShare } from '@moepp/models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIGURATIONS, runBenchmark, type BenchmarkResult } from './harness.js';
import { layerBenchmark, type LayerProfile, type LayerThroughputRow, type RouterTrainingRecord } from './layer.js';

let outDir = '';
beforeAll(async () => {
  outDir = await mkdtemp(path.join(os.tmpdir(), 'moepp-bench-layer-'));
});
afterAll(async () => {
  await rm(outDir, { recursive: true, force: true });
});

const TINY = {
  name: 'layer-smoke',
  hiddenSize: 8,
  intermediateSize: 16,
  ffnExperts: [4],
  taus: [0.5, 1],
  tokens: [32],
  training: { steps: 3, batchTokens: 16, clusters: 4 },
  timing: { warmup: 1, minRepetitions: 2, maxRepetitions: 2 },
  configurations: [CONFIGURATIONS.wasmFixes],
} as const;

describe('layer benchmark on a tiny layer', () => {
  it('runs MoE and MoE++ with forced and trained routing, forward and forward+backward, and writes the summary', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const { result, markdownPath, jsonPath } = await runBenchmark(layerBenchmark(TINY), { outDir, log: () => {} });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    const written = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    expect(written.name).toBe('layer-smoke');
    expect(written.configurations.map((c) => c.id)).toEqual(['wasm-fixes']);

    // 2 passes × 2 routings × (MoE + 2 taus)
    expect(written.results).toHaveLength(12);
    for (const r of written.results) {
      expect(r.status).toBe('ok');
      expect(r.leakedTensors).toBe(0);
      expect(r.stats?.repetitions).toBe(2);
      expect(r.info?.expertForwardMsMedian).toBeGreaterThan(0);
      expect(r.info?.achievedFfnShare).toBeGreaterThan(0);
    }
    const forced = written.results.find((r) => r.case === 'E=4 T=32 forward: MoE++ (4+4)E tau=0.5, forced routing');
    // r = 0.5·4 / (0.5·4 + 4) = 1/3; forced routing sends 10 or 11 of the 64 slots to FFN experts.
    expect(forced?.info?.idealFfnShare).toBeCloseTo(1 / 3, 4);
    expect(Math.abs((forced?.info?.achievedFfnShare as number) - 1 / 3)).toBeLessThanOrEqual(1 / 64);

    const session = written.sessions?.['wasm-fixes'] as { routerTraining: RouterTrainingRecord[]; profile: LayerProfile };
    expect(session.routerTraining.map((t) => [t.ffnExperts, t.tau, t.steps])).toEqual([
      [4, null, 3],
      [4, 0.5, 3],
      [4, 1, 3],
    ]);
    for (const t of session.routerTraining) {
      expect(Number.isFinite(t.firstLoss) && Number.isFinite(t.lastLoss)).toBe(true);
      expect(t.achievedShare['32']).toBeGreaterThanOrEqual(0);
      expect(t.achievedShare['32']).toBeLessThanOrEqual(1);
    }
    expect(session.routerTraining[0]?.achievedShare['32']).toBe(1); // a vanilla MoE has only FFN experts

    expect(session.profile.tokens).toBe(32);
    expect(session.profile.variants.map((v) => v.variant)).toEqual([
      'MoE 4E, forced routing',
      'MoE++ (4+4)E tau=0.5, forced routing',
      'MoE++ (4+4)E tau=1, forced routing',
    ]);
    for (const v of session.profile.variants) {
      expect(Object.keys(v.forwardPhasesMs)).toEqual([
        'router',
        'forced assignment',
        'dispatch plan',
        'gather',
        'FFN experts',
        'copy/constant experts',
        'scale by gates',
        'combine',
      ]);
      expect(v.forwardPhasesMs['FFN experts']).toBeGreaterThan(0);
      expect(Object.keys(v.forwardPhasesCpuMs)).toHaveLength(8);
      expect(Object.keys(v.forwardBackwardKernelsMs)).toContain('BatchMatMul');
    }
    expect(session.profile.oneHotChecks[0]?.shape).toEqual([32, 2, 8]);
    expect(session.profile.clock).toBe('cpu');
    // One expert's batch: T·K·share / E rows = 64 (MoE), 64/3 (tau 0.5), 32 (tau 1) over 4 experts.
    expect(session.profile.expertRates.map((rate) => rate.rows)).toEqual([16, 5, 8]);
    for (const rate of session.profile.expertRates) expect(rate.gflopsPerSecond).toBeGreaterThan(0);

    const summary = written.summary as { target: number; rows: LayerThroughputRow[]; shortfalls: { text: string }[] };
    expect(summary.target).toBe(0.9);
    expect(summary.rows).toHaveLength(12);
    for (const row of summary.rows) {
      expect(row.tokensPerSecond).toBeGreaterThan(0);
      expect(row.clock).toBe('cpu'); // wasm with fixes runs on one thread
      if (row.family === 'moe') {
        expect(row.speedup).toBe(1);
        continue;
      }
      const r = ffnShare({ tau: row.tau as number, experts: { ffn: 4, zero: 1, copy: 1, constant: 2 } });
      expect(row.idealFfnShare).toBeCloseTo(r, 4);
      const ideal = row.routing === 'forced' ? 1 / r : 1 / row.achievedFfnShare;
      expect(row.idealSpeedup).toBeCloseTo(ideal, 2);
      expect(row.measuredOverIdeal).toBeCloseTo((row.speedup as number) / row.idealSpeedup, 2);
    }
    // every row below the target is explained
    const below = summary.rows.filter((row) => row.family === 'moepp' && (row.measuredOverIdeal as number) < 0.9);
    expect(summary.shortfalls).toHaveLength(below.length);
    const markdown = await readFile(markdownPath, 'utf8');
    expect(markdown).toContain('## Layer throughput on wasm with fixes: MoE++ vs MoE at the same E');
    expect(markdown).toContain('### Profile on wasm with fixes: one forward pass at T=32');
  });

  it('in --quick mode runs wasm with fixes, T=1024 and E=8 only', () => {
    const definition = layerBenchmark({ ffnExperts: [8, 16], taus: [0.5], tokens: [1024, 4096] });
    const plan = (name: string) => definition.cases.find((c) => c.name === name)?.timing?.(CONFIGURATIONS.wasmFixes, true);
    expect(plan('E=8 T=4096 forward: MoE 8E, forced routing')).toMatch(/skipped in --quick mode \(T=4096\)/);
    expect(typeof plan('E=8 T=1024 forward: MoE 8E, forced routing')).toBe('object');
    expect(typeof plan('E=8 T=1024 forward: MoE++ (8+4)E tau=0.5, trained router')).toBe('object');
    expect(plan('E=16 T=1024 forward: MoE++ (16+4)E tau=0.5, trained router')).toMatch(/skipped in --quick mode \(E=8 only\)/);
    expect(plan('E=16 T=1024 forward: MoE 16E, forced routing')).toMatch(/skipped in --quick mode \(E=8 only\)/);
    // Full mode: trained routers at the largest T only.
    const full = (name: string) => definition.cases.find((c) => c.name === name)?.timing?.(CONFIGURATIONS.wasmFixes, false);
    expect(full('E=8 T=1024 forward: MoE++ (8+4)E tau=0.5, trained router')).toMatch(/trained routers are timed at T=4096/);
    expect(typeof full('E=8 T=4096 forward: MoE++ (8+4)E tau=0.5, trained router')).toBe('object');
    expect(definition.cases.every((c) => c.group !== undefined)).toBe(true);
    expect(definition.interleave).toBe(true);
    // Native acceleration: forced routing in full mode only; trained routers on wasm with fixes only.
    expect(definition.configurations.map((c) => c.id)).toEqual(['wasm-fixes', 'wasm-native']);
    const native = (name: string, quick: boolean) => definition.cases.find((c) => c.name === name)?.timing?.(CONFIGURATIONS.wasmNative, quick);
    expect(native('E=8 T=1024 forward: MoE 8E, forced routing', true)).toBe('skipped in --quick mode');
    expect(typeof native('E=8 T=4096 forward: MoE 8E, forced routing', false)).toBe('object');
    expect(native('E=8 T=4096 forward: MoE++ (8+4)E tau=0.5, trained router', false)).toMatch(/trained routers are timed on wasm-fixes only/);
  });
});
