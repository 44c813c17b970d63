/**
 * Smoke test of the native benchmark on tiny sizes, without the PyTorch peer. No timing assertions.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { accelerationStatus } from '@moepp/tensors-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBenchmark, type BenchmarkResult } from './harness.js';
import { nativeBenchmark, NATIVE_CONFIGURATIONS, type PeerResult } from './native.js';

let outDir = '';
beforeAll(async () => {
  outDir = await mkdtemp(path.join(os.tmpdir(), 'moepp-bench-native-'));
});
afterAll(async () => {
  await rm(outDir, { recursive: true, force: true });
});

const SIZES = { matmul: [16, 8, 12], ffnTokens: 16, blockTokens: 24, moeTokens: 32, model: 8, hidden: 12, experts: 4, topK: 2 } as const;

describe('native benchmark on tiny sizes', () => {
  it('runs every case without and with native acceleration (or says why not), without leaks', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const definition = nativeBenchmark({ name: 'native-tiny', sizes: SIZES, peer: false, timing: { warmup: 1, minRepetitions: 1, maxRepetitions: 1 } });
    expect(definition.configurations.map((c) => c.id)).toEqual(['wasm-fixes', 'wasm-native']);
    const { jsonPath } = await runBenchmark(definition, { outDir, log: () => {} });
    const result = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchmarkResult;
    expect(result.results).toHaveLength(14);
    for (const r of result.results) {
      if (r.configuration === NATIVE_CONFIGURATIONS.wasmNative.id && !accelerationStatus().active && r.status !== 'ok') {
        expect(r.status).toBe('skipped');
        expect(r.message).toMatch(/native acceleration|OpenBLAS|MOEPP_ACCEL/);
        continue;
      }
      expect(r.status).toBe('ok');
      expect(r.leakedTensors).toBe(0);
    }
    expect(result.description).toContain('PyTorch peer: not run (peer: false)');
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('puts the peer times in each case reference, with the thread count that won', () => {
    const peer: PeerResult = {
      torch: '1.13.1',
      threadCounts: [1, 2],
      cases: { 'matmul [16,8]·[8,12]': { medianMs: 2, minMs: 1.5, maxMs: 3, repetitions: 5, threads: 1 } },
    };
    const definition = nativeBenchmark({ name: 'native-tiny', sizes: SIZES, peer });
    const matmul = definition.cases.find((c) => c.name === 'matmul [16,8]·[8,12]');
    expect(matmul?.reference).toMatchObject({ label: 'PyTorch 1.13.1 CPU, 1 thread (best of 1 and 2)', ms: [2, 2] });
    expect(definition.cases.filter((c) => c.reference !== undefined)).toHaveLength(1);
  });
});
