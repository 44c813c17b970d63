/** The README's example, kept here so that `tsc` checks it. Run: `npx tsx --conditions=source scripts/readme-example.ts`. */
import { prepareTextData } from '@moepp/data';

const data = prepareTextData({
  corpus: 'sotu', tokenizer: { bpe: 2048 }, tokenizerCache: 'runs/sotu-2048.tokenizer.json',
  seqLen: 128, batchSize: 16, seed: 1, validationWindows: 64,
});
const batch = data.train.next(); // inputs, targets: int32 [16, 128] → tf.tensor2d(batch.inputs, [16, 128], 'int32')
const cursor = data.train.getCursor(); // JSON for the checkpoint; resume with prepareTextData({ ...options, cursor })
for (const validationBatch of data.validation) console.log(validationBatch.shape); // [16, 129], 4 batches
console.log(data.tokenizer.decode(batch.inputs.subarray(0, 128)), JSON.stringify(cursor).length);
