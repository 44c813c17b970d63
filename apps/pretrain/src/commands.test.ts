import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveRunConfig } from './config.js';
import { runSweep, sweepSettings, SWEEPS, TAU_VALUES } from './sweep.js';
import { POS_CLASSES, runAnalysis } from './analyze.js';
import type { Output } from './compare.js';

const root = mkdtempSync(join(tmpdir(), 'moepp-commands-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const quiet: Output = { log: () => undefined, stream: { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream };
const tinyBudget = { preset: 'smoke', batchSize: 4, seqLen: 32, steps: 6, evalEvery: 6, validationWindows: 8, backend: 'wasm' };

describe('sweep', () => {
  it('defines the paper ablations', () => {
    expect(SWEEPS).toEqual(['tau', 'experts', 'residual', 'gating']);
    expect(sweepSettings('tau').map((s) => s.moe.tau)).toEqual([...TAU_VALUES]);
    expect(sweepSettings('experts').map((s) => s.label)).toContain('zero only');
  });

  it('trains the baseline once, shares identical configs and reports ideal vs measured speed-up', async () => {
    const run = resolveRunConfig([{ ...tinyBudget, corpus: 'moby-dick', out: join(root, 'sweep') }]);
    const { sweeps, files } = await runSweep(run, ['residual', 'gating'], { output: quiet });
    // residual-on and the code gate rule are the same config: 1 baseline + 3 unique MoE++ models.
    const trained = new Set(sweeps.flatMap((s) => s.models.map((m) => JSON.stringify(m.curve))));
    expect(trained.size).toBe(4);
    for (const sweep of sweeps) {
      expect(sweep.models[0]!.name).toBe('MoE (baseline)');
      expect(sweep.models[0]!.expert.ratioToMoe).toBe(1);
      for (const m of sweep.models.slice(1)) {
        expect(m.idealSpeedup).toBeCloseTo(1 / ((0.75 * 4) / (0.75 * 4 + 4)), 10);
        expect(m.expert.ratioToMoe).toBeGreaterThan(0);
      }
    }
    const markdown = readFileSync(files.markdown, 'utf8');
    expect(markdown).toContain('### Sweep: residual');
    expect(markdown).toContain('### Sweep: gating');
    expect(markdown).toContain('| setting | ideal 1/r | measured speed-up | measured/ideal |');
  }, 180_000);
});

describe('analyze', () => {
  it('reports FFN experts per part of speech, score spread and load on Brown', async () => {
    const run = resolveRunConfig([{ ...tinyBudget, tokenizer: 512, corpus: 'brown', out: join(root, 'analyze') }]);
    const { analysis, files } = await runAnalysis(run, { output: quiet });
    const pos = analysis.partOfSpeech;
    expect(pos.classes).toEqual([...POS_CLASSES]);
    expect(pos.byLayer).toHaveLength(2);
    for (const row of pos.byLayer) for (const v of row) expect(v >= 0 && v <= 2).toBe(true);
    expect(pos.counts.reduce((a, b) => a + b, 0)).toBe(8 * 32);
    expect(pos.counts.every((c) => c > 0)).toBe(true);
    expect(analysis.scoreSpread.map((s) => s.label)).toEqual(['with gating residuals', 'without gating residuals']);
    for (const s of analysis.scoreSpread) {
      for (const l of s.byLayer) {
        expect(l.min).toBeLessThanOrEqual(l.mean);
        expect(l.mean).toBeLessThanOrEqual(l.max);
        expect(l.variance).toBeGreaterThanOrEqual(0);
      }
    }
    for (const row of analysis.load.loadByLayer) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    for (const chart of ['part-of-speech.svg', 'load.svg', 'loss.svg']) expect(existsSync(join(files.dir, 'charts', chart))).toBe(true);
    expect(readFileSync(files.markdown, 'utf8')).toContain('FFN experts per token by part of speech');
  }, 180_000);
});
