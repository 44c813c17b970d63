/**
 * Keeps the README's example compiled and running: the block below must match the README's `ts` block.
 * It runs in a temporary folder, because the example caches its tokenizer under `runs/`.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it, vi } from 'vitest';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const source = readFileSync(new URL(import.meta.url), 'utf8');
const originalDir = process.cwd();
const workDir = mkdtempSync(join(tmpdir(), 'moepp-data-readme-'));
process.chdir(workDir);
afterAll(() => {
  process.chdir(originalDir);
  rmSync(workDir, { recursive: true, force: true });
});
const printed: unknown[][] = [];
vi.spyOn(console, 'log').mockImplementation((...values: unknown[]) => void printed.push(values));
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
vi.mocked(console.log).mockRestore();

it('matches the README and runs', () => {
  const example = source.slice(source.indexOf('// example:start\n') + 17, source.indexOf('// example:end'));
  expect(readme).toContain('```ts\n' + example + '```');
  expect(batch.inputs).toBeInstanceOf(Int32Array);
  expect(batch.inputs).toHaveLength(16 * 128);
  expect(batch.targets).toHaveLength(16 * 128);
  // targets are the inputs shifted by one token
  expect(Array.from(batch.targets.subarray(0, 127))).toEqual(Array.from(batch.inputs.subarray(1, 128)));
  expect(data.tokenizer.vocabSize).toBe(2048);
  expect(data.validation).toHaveLength(4);
  expect(printed.slice(0, 4)).toEqual(new Array(4).fill([[16, 129]]));
  expect(printed[4]).toEqual([data.tokenizer.decode(batch.inputs.subarray(0, 128)), JSON.stringify(cursor).length]);
  expect(JSON.parse(JSON.stringify(cursor))).toEqual(cursor);
  expect(existsSync(join(workDir, 'runs', 'sotu-2048.tokenizer.json'))).toBe(true);
});
