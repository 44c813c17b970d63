/**
 * Keeps the README's example compiled and running: the block below must match the README's `ts` block.
 * It runs in a temporary folder, because the example caches its tokenizer under `runs/`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { expectReadmeExample, startReadmeExample } from '@moepp/tensors-core/testing';

const run = startReadmeExample({ temporaryFolderPrefix: 'moepp-data-readme-' }); // records console.log in run.printed
afterAll(run.cleanup);
// example:start
import { prepareTextData } from '@moepp/data';

const data = prepareTextData({
  corpus: 'sotu', tokenizer: { bpe: 2048 }, tokenizerCache: 'runs/sotu-2048.tokenizer.json',
  seqLen: 128, batchSize: 16, seed: 1, validationWindows: 64,
});
const batch = data.train.next(); // inputs, targets: int32 [16, 128] → tf.tensor2d(batch.inputs, [16, 128], 'int32')
const cursor = data.train.getCursor(); // JSON for the checkpoint; resume with prepareTextData({ ...options, cursor })
for (const validationBatch of data.validation) console.log(validationBatch.shape); // [16, 129], 4 batches
console.log(data.tokenizer.decode(batch.inputs.subarray(0, 128)), JSON.stringify(cursor).length);
// example:end
run.endExample();

it('matches the README and runs', () => {
  expectReadmeExample(import.meta.url);
  expect(batch.inputs).toBeInstanceOf(Int32Array);
  expect(batch.inputs).toHaveLength(16 * 128);
  expect(batch.targets).toHaveLength(16 * 128);
  // targets are the inputs shifted by one token
  expect(Array.from(batch.targets.subarray(0, 127))).toEqual(Array.from(batch.inputs.subarray(1, 128)));
  expect(data.tokenizer.vocabSize).toBe(2048);
  expect(data.validation).toHaveLength(4);
  expect(run.printed.slice(0, 4)).toEqual(new Array(4).fill([[16, 129]]));
  expect(run.printed[4]).toEqual([data.tokenizer.decode(batch.inputs.subarray(0, 128)), JSON.stringify(cursor).length]);
  expect(JSON.parse(JSON.stringify(cursor))).toEqual(cursor);
  expect(existsSync(join(run.workDir, 'runs', 'sotu-2048.tokenizer.json'))).toBe(true);
});
