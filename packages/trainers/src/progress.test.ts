import { describe, expect, it } from 'vitest';
import { createProgressReporter, formatCount, formatEvalLine, formatStepLine } from './progress.js';
import { captureStream, fakeStepRecord } from './test-helpers.js';

describe('progress', () => {
  it('formats step and eval lines', () => {
    expect(formatStepLine(fakeStepRecord(40), 200)).toBe('step 40/200 loss 3.214 lr 4.1e-4 12.3k tok/s ffn/tok 1.52');
    expect(formatStepLine(fakeStepRecord(40, { ffnExpertsPerToken: null }), 200)).toBe('step 40/200 loss 3.214 lr 4.1e-4 12.3k tok/s');
    expect(
      formatEvalLine({ type: 'eval', step: 40, loss: 3.1017, perplexity: 22.24, accuracy: 0.4123, tokens: 1, ffnExpertsPerToken: null, evalMs: 1 }),
    ).toBe('eval step 40 loss 3.102 ppl 22.2 acc 41.2%');
    expect([formatCount(950), formatCount(12_345), formatCount(4_560_000)]).toEqual(['950', '12.3k', '4.56M']);
  });

  it('prints plain lines every logInterval steps (and the first and last) when the stream is not a TTY', () => {
    const { stream, text } = captureStream(false);
    const reporter = createProgressReporter({ stream, logInterval: 5 });
    reporter.start(12, 0);
    for (let step = 1; step <= 12; step++) reporter.step(fakeStepRecord(step));
    reporter.message('checkpoint written');
    reporter.stop();
    const lines = text().trim().split('\n');
    expect(lines.map((l) => l.split(' ')[1])).toEqual(['1/12', '5/12', '10/12', '12/12', 'written']);
  });

  it('prints nothing when silent', () => {
    const { stream, text } = captureStream(true);
    const reporter = createProgressReporter({ mode: 'silent', stream });
    reporter.start(3, 0);
    reporter.step(fakeStepRecord(1));
    reporter.message('hello');
    reporter.stop();
    expect(text()).toBe('');
  });

  it('draws a cli-progress bar on a TTY, with eval lines above it', () => {
    const { stream, text } = captureStream(true);
    (stream as unknown as { columns: number }).columns = 120;
    const reporter = createProgressReporter({ stream });
    reporter.start(3, 0);
    for (let step = 1; step <= 3; step++) reporter.step(fakeStepRecord(step));
    reporter.eval({ type: 'eval', step: 3, loss: 3, perplexity: 20.1, accuracy: 0.5, tokens: 1, ffnExpertsPerToken: null, evalMs: 1 });
    reporter.stop();
    expect(text()).toContain('3/3 | loss 3.214 | lr 4.1e-4 | 12.3k tok/s');
    expect(text()).toContain('eval step 3 loss 3.000 ppl 20.1 acc 50.0%');
  });

  it('rejects unknown modes and bad intervals', () => {
    expect(() => createProgressReporter({ mode: 'fancy' as never })).toThrow(/'mode' must be one of 'auto', 'bar', 'lines', 'silent', got 'fancy'/);
    expect(() => createProgressReporter({ logInterval: 0 })).toThrow(/'logInterval'/);
  });
});
