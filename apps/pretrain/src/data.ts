/** Prepares a run's data: corpus, tokenizer (cached in the run folder) and batches. */
import { join } from 'node:path';
import { prepareTextData, type TextData } from '@moepp/data';
import type { RunConfig } from './config.js';

/**
 * @param run - the run config
 * @param corpus - overrides `run.corpus` (e.g. `analyze` always uses Brown)
 * @returns the prepared data; a trained BPE tokenizer is cached as `<out>/tokenizer.json`
 */
export function prepareRunData(run: RunConfig, corpus: string = run.corpus): TextData {
  const named = corpus === 'sotu' || corpus === 'moby-dick' || corpus === 'brown';
  return prepareTextData({
    corpus: named ? corpus : { path: corpus },
    tokenizer: run.tokenizer === 'bytes' ? 'bytes' : { bpe: run.tokenizer },
    seqLen: run.seqLen,
    batchSize: run.batchSize,
    seed: run.seed,
    validationWindows: run.validationWindows,
    ...(run.tokenizer === 'bytes' ? {} : { tokenizerCache: join(run.out, 'tokenizer.json') }),
  });
}
