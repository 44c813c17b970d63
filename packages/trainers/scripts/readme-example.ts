/** The README's example, kept here so that `tsc` checks it. Run: `npx tsx --conditions=source scripts/readme-example.ts`. */
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
