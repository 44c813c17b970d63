/**
 * Helpers shared by this package's tests (not part of the public surface; excluded from the build).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { StepRecord } from './metrics.js';

/** A temporary folder and a function that removes it. */
export function temporaryFolder(prefix = 'moepp-trainers-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A writable stream that keeps what is written. */
export function captureStream(isTTY = false): { stream: Writable & { isTTY: boolean }; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  }) as Writable & { isTTY: boolean };
  stream.isTTY = isTTY;
  return { stream, text: () => chunks.join('') };
}

/** A step record with plausible values, for formatting and logging tests. */
export function fakeStepRecord(step: number, overrides: Partial<StepRecord> = {}): StepRecord {
  return {
    type: 'step',
    step,
    epoch: 0,
    lr: 4.1e-4,
    loss: 3.2144,
    crossEntropy: 3.2,
    loadBalance: 1.44,
    zLoss: 5,
    gradNorm: 0.5,
    tokens: 512,
    stepMs: 41.6,
    tokensPerSecond: 12_300,
    expertForwardMs: 10,
    expertForwardMsByLayer: [5, 5],
    expertTokensPerSecond: 102_400,
    ffnExpertsPerToken: 1.52,
    ffnExpertsPerTokenByLayer: [1.5, 1.54],
    tokensPerExpert: [
      [1, 2],
      [3, 4],
    ],
    droppedAssignments: 0,
    droppedAssignmentsByLayer: [0, 0],
    routerEntropyByLayer: [1.9, 1.8],
    liveTensors: 100,
    elapsedMs: 1000,
    ...overrides,
  };
}
