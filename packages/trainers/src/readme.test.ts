/**
 * Keeps the README's example compiled and running: the block below must match the README's `ts` block.
 * It runs in a temporary folder, because the example writes `runs/moby/`. (The full 200 steps, as the
 * README says: about half a minute on 2 cores.)
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { expectReadmeExample, startReadmeExample } from '@moepp/tensors-core/testing';

const run = startReadmeExample({ temporaryFolderPrefix: 'moepp-trainers-readme-' }); // records console.log in run.printed
afterAll(run.cleanup);
// example:start
import { initBackend } from '@moepp/tensors-core';
import { createModel, presetConfig } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { resolveCheckpointDir, train } from '@moepp/trainers';

await initBackend({ backend: 'wasm' }); // wasm with the kit's kernel fixes
const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed: 1, validationWindows: 32 });
const model = createModel(presetConfig('smoke', 'moepp', { vocabSize: 256 }), 1);
const checkpointDir = 'runs/moby/checkpoint'; // Ctrl-C writes it; running again continues the same run
const config = { totalSteps: 200, evalInterval: 50, checkpointDir, checkpointInterval: 50, metricsPath: 'runs/moby/metrics.jsonl' };
const result = await train(model, data, config, { resumeFrom: resolveCheckpointDir(checkpointDir) ? checkpointDir : undefined });
console.log(result.stopReason, result.evals.at(-1)); // completed { type: 'eval', step: 200, loss, perplexity, accuracy, … }
// example:end
run.endExample();

it('matches the README and runs: 200 steps, validation loss from ln 256 to about 2.9', () => {
  expectReadmeExample(import.meta.url);
  expect(result.stopReason).toBe('completed');
  expect(result.step).toBe(200);
  expect(result.evals.map((e) => e.step)).toEqual([0, 50, 100, 150, 200]);
  expect(result.evals[0]!.loss).toBeCloseTo(Math.log(256), 1);
  expect(result.evals.at(-1)!.loss).toBeLessThan(3.2);
  expect(run.printed.at(-1)).toEqual(['completed', result.evals.at(-1)]);
  expect(readdirSync(join(run.workDir, 'runs/moby/checkpoint')).sort()).toEqual([
    'config.json',
    'model.safetensors',
    'optimizer.safetensors',
    'trainer-state.json',
  ]);
  expect(existsSync(join(run.workDir, 'runs/moby/metrics.jsonl'))).toBe(true);
  expect(resolveCheckpointDir(checkpointDir)).toBeTruthy(); // so running the example again resumes (and stops at once)
  model.dispose();
});
