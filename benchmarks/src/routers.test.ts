/**
 * Smoke test of the routers benchmark on tiny shapes. No timing assertions.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIGURATIONS, runBenchmark, type BenchmarkResult } from './harness.js';
import { moeppKinds, routersBenchmark, type RouterCostRow } from './routers.js';

let outDir = '';
beforeAll(async () => {
  outDir = await mkdtemp(path.join(os.tmpdir(), 'moepp-bench-routers-'));
});
afterAll(async () => {
  await rm(outDir, { recursive: true, force: true });
});

describe('routers benchmark on tiny shapes', () => {
  it('runs every router forward and forward+backward at each E and writes cost per token', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const definition = routersBenchmark({
      name: 'routers-smoke',
      hiddenSize: 8,
      experts: [5, 6],
      tokens: 16,
      expertChoiceTokens: 8,
      timing: { warmup: 1, minRepetitions: 2, maxRepetitions: 2 },
    });
    const { jsonPath, markdownPath } = await runBenchmark(definition, { outDir, log: () => {} });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    const result = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    // 4 routers × 2 passes × 2 E, plus one expert-choice forward at the full T
    expect(result.results).toHaveLength(17);
    for (const r of result.results) {
      expect(r.status).toBe('ok');
      expect(r.leakedTensors).toBe(0);
      expect(r.info?.cpuMicrosecondsPerToken).toBeGreaterThan(0);
    }
    const tokensOf = (name: string) => result.results.find((r) => r.case === name)?.info?.tokens;
    expect(tokensOf('TopKRouter E=5 forward')).toBe(16);
    expect(tokensOf('ExpertChoiceRouter E=5 forward')).toBe(8);
    expect(tokensOf('ExpertChoiceRouter E=5 forward at T=16 (one run)')).toBe(16);
    const rows = (result.summary as { rows: RouterCostRow[] }).rows;
    expect(rows.map((row) => `${row.router} ${row.pass}`)).toEqual([
      'TopKRouter forward',
      'TopKRouter forward+backward',
      'NoisyTopKRouter forward',
      'NoisyTopKRouter forward+backward',
      'ExpertChoiceRouter forward',
      'ExpertChoiceRouter forward+backward',
      'MoEPlusPlusRouter forward',
      'MoEPlusPlusRouter forward+backward',
      'ExpertChoiceRouter forward',
    ]);
    for (const row of rows.slice(0, 8)) {
      expect(row.cpuMicrosecondsPerToken['5']).toBeGreaterThan(0);
      expect(row.growth).toBeGreaterThan(0);
    }
    expect(await readFile(markdownPath, 'utf8')).toContain('## Cost per token');
  });

  it('lays out the MoE++ experts officially and shrinks T in --quick mode', () => {
    expect(moeppKinds(6)).toEqual(['ffn', 'ffn', 'constant', 'constant', 'copy', 'zero']);
    const definition = routersBenchmark();
    const full = definition.cases.find((c) => c.name.endsWith('(one run)'));
    expect(full?.timing?.(CONFIGURATIONS.wasmFixes, true)).toMatch(/skipped in --quick mode/);
    expect(full?.timing?.(CONFIGURATIONS.wasmFixes, false)).toEqual({ warmup: 0, minRepetitions: 1, maxRepetitions: 1 });
  });
});
