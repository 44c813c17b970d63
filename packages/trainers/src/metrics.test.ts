import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MetricsLog, readMetricsFile, type EvalRecord } from './metrics.js';
import { fakeStepRecord, temporaryFolder } from './test-helpers.js';

const folder = temporaryFolder();
afterAll(folder.remove);

const evalRecord = (step: number): EvalRecord => ({
  type: 'eval',
  step,
  loss: 3,
  perplexity: Math.exp(3),
  accuracy: 0.4,
  tokens: 100,
  ffnExpertsPerToken: 1.5,
  evalMs: 5,
});

describe('MetricsLog', () => {
  it('writes one JSON object per line, readable back', () => {
    const path = join(folder.dir, 'metrics.jsonl');
    const log = new MetricsLog(path);
    log.write(fakeStepRecord(1));
    log.write(evalRecord(1));
    log.close();
    log.close(); // idempotent
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toEqual(fakeStepRecord(1));
    expect(readMetricsFile(path)).toEqual([fakeStepRecord(1), evalRecord(1)]);
    expect(() => log.write(evalRecord(2))).toThrow(/is closed/);
  });

  it('on resume keeps the lines up to the resumed step and drops later ones (and a cut-off line)', () => {
    const path = join(folder.dir, 'resume.jsonl');
    const log = new MetricsLog(path);
    for (let step = 1; step <= 6; step++) log.write(fakeStepRecord(step));
    log.write(evalRecord(4));
    log.close();
    writeFileSync(path, `${readFileSync(path, 'utf8')}{"type":"step","st`); // a crash mid-line
    const resumed = new MetricsLog(path, 4);
    resumed.write(fakeStepRecord(5, { loss: 1 }));
    resumed.close();
    const records = readMetricsFile(path);
    expect(records.map((r) => [r.type, r.step])).toEqual([
      ['step', 1],
      ['step', 2],
      ['step', 3],
      ['step', 4],
      ['eval', 4],
      ['step', 5],
    ]);
    expect((records[5] as { loss: number }).loss).toBe(1);
  });

  it('a fresh run truncates; a malformed line in the middle is an error naming the line', () => {
    const path = join(folder.dir, 'fresh.jsonl');
    writeFileSync(path, 'old\n');
    new MetricsLog(path).close();
    expect(readFileSync(path, 'utf8')).toBe('');
    writeFileSync(path, '{"type":"eval","step":1}\nnot json\n{"type":"eval","step":2}\n');
    expect(() => readMetricsFile(path)).toThrow(/fresh.jsonl' line 2 is not JSON/);
  });
});
