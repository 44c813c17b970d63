/**
 * `generate`, `eval`, `export` and `import`: commands on a checkpoint folder (a run's
 * `<model>/checkpoint`, or any folder in the official MoE++ Hugging Face layout).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, SeededRandom, initBackend, type BackendChoice } from '@moepp/tensors-core';
import { loadTokenizer, ByteTokenizer, type Tokenizer, type TokenBatch } from '@moepp/data';
import { countModelParameters, exportCheckpoint, generate, importCheckpoint, totalExperts, type SamplingOptions } from '@moepp/models';
import { evaluate } from '@moepp/trainers';

/**
 * The tokenizer of a checkpoint: `tokenizer.json` in the checkpoint folder or its run folder (two levels
 * up), else bytes when the vocabulary is 256.
 *
 * @param dir - the checkpoint folder
 * @param vocabSize - the model's vocabulary
 * @returns the tokenizer
 * @throws `ConfigError` when none is found and the vocabulary is not 256
 */
export function checkpointTokenizer(dir: string, vocabSize: number): Tokenizer {
  for (const candidate of [join(dir, 'tokenizer.json'), join(dir, '..', 'tokenizer.json'), join(dir, '..', '..', 'tokenizer.json')]) {
    if (existsSync(candidate)) return loadTokenizer(candidate);
  }
  if (vocabSize === 256) return new ByteTokenizer();
  throw new ConfigError(`${dir}: no tokenizer.json found next to the checkpoint (or in its run folder), and the vocabulary (${vocabSize}) is not the byte tokenizer's 256`);
}

/** Options of {@link generateText}. */
export interface GenerateTextOptions {
  readonly checkpoint: string;
  readonly prompt: string;
  readonly maxNewTokens: number;
  readonly temperature: number;
  readonly topK?: number;
  readonly seed: number;
  readonly backend: BackendChoice;
}

/**
 * Generates text from a checkpoint (temperature 0 = greedy).
 *
 * @param options - checkpoint, prompt and sampling settings
 * @returns the prompt, the generated continuation and the token counts
 */
export async function generateText(options: GenerateTextOptions): Promise<{ prompt: string; completion: string; promptTokens: number; newTokens: number }> {
  await initBackend({ backend: options.backend });
  const model = await importCheckpoint(options.checkpoint);
  try {
    const tokenizer = checkpointTokenizer(options.checkpoint, model.config.vocabSize);
    const prompt = tokenizer.encode(options.prompt);
    if (prompt.length === 0) throw new ConfigError("generate: '--prompt' must encode to at least one token");
    const sampling: SamplingOptions =
      options.temperature === 0
        ? { strategy: 'greedy' }
        : { strategy: 'sample', temperature: options.temperature, ...(options.topK !== undefined ? { topK: options.topK } : {}) };
    const result = generate(model, prompt, { maxNewTokens: options.maxNewTokens, sampling, rng: new SeededRandom(options.seed) });
    return { prompt: options.prompt, completion: tokenizer.decode(result.newTokens), promptTokens: prompt.length, newTokens: result.newTokens.length };
  } finally {
    model.dispose();
  }
}

/**
 * Reads a JSON array of token ids.
 *
 * @param path - the file
 * @returns the ids
 * @throws `ConfigError` naming the file and the first bad entry
 */
export function readTokenFile(path: string): Int32Array {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new ConfigError(`--tokens ${path}: cannot read a JSON array of token ids (${(error as Error).message})`);
  }
  if (!Array.isArray(json)) throw new ConfigError(`--tokens ${path}: must hold a JSON array of token ids, got ${typeof json}`);
  const bad = json.findIndex((v) => typeof v !== 'number' || !Number.isInteger(v) || v < 0);
  if (bad >= 0) throw new ConfigError(`--tokens ${path}: entry ${bad} must be a non-negative integer, got ${JSON.stringify(json[bad])}`);
  return Int32Array.from(json as number[]);
}

/**
 * Loss, perplexity and accuracy of a checkpoint on a token sequence, in windows of up to `maxSeqLen`
 * tokens (each window predicts its own tokens 2..T+1 from 1..T).
 *
 * @param options - checkpoint, token file, backend
 * @returns `{ loss, perplexity, accuracy, tokens }` (tokens = predicted positions)
 * @throws `ConfigError` for fewer than 2 tokens or ids outside the vocabulary
 */
export async function evaluateTokens(options: { checkpoint: string; tokens: string; backend: BackendChoice; seqLen?: number }): Promise<{ loss: number; perplexity: number; accuracy: number; tokens: number }> {
  await initBackend({ backend: options.backend });
  const ids = readTokenFile(options.tokens);
  const model = await importCheckpoint(options.checkpoint);
  try {
    const vocab = model.config.vocabSize;
    const outside = ids.findIndex((id) => id >= vocab);
    if (outside >= 0) throw new ConfigError(`--tokens ${options.tokens}: entry ${outside} (${ids[outside]}) is outside the model's vocabulary of ${vocab}`);
    if (ids.length < 2) throw new ConfigError(`--tokens ${options.tokens}: needs at least 2 tokens, got ${ids.length}`);
    const seqLen = Math.min(options.seqLen ?? model.config.maxSeqLen, ids.length - 1);
    const batches: TokenBatch[] = [];
    for (let start = 0; start + 1 < ids.length; start += seqLen) {
      const length = Math.min(seqLen, ids.length - 1 - start);
      if (length < 1) break;
      const window = ids.slice(start, start + length + 1);
      batches.push({
        tokens: window,
        inputs: window.slice(0, length),
        targets: window.slice(1),
        shape: [1, length + 1],
        batchSize: 1,
        seqLen: length,
        windowIndices: Int32Array.of(batches.length),
        epoch: 0,
      } as TokenBatch);
    }
    const result = await evaluate(model, batches);
    return { loss: result.loss, perplexity: result.perplexity, accuracy: result.accuracy, tokens: result.tokens };
  } finally {
    model.dispose();
  }
}

/**
 * Copies a checkpoint into a clean official-layout folder (config.json + model.safetensors), validating
 * every tensor on the way. `export` writes a run's checkpoint for PyTorch; `import` brings an official
 * (or any HF-layout) checkpoint in, e.g. from bf16 to the kit's float32.
 *
 * @param from - the source folder
 * @param to - the destination folder (replaced atomically)
 * @param backend - the tfjs backend
 * @returns a summary of the model
 */
export async function convertCheckpoint(from: string, to: string, backend: BackendChoice): Promise<{ parameters: number; layers: number; experts: number | null }> {
  await initBackend({ backend });
  const model = await importCheckpoint(from);
  try {
    await exportCheckpoint(model, to);
    return {
      parameters: countModelParameters(model.config).total,
      layers: model.config.numLayers,
      experts: model.config.moe ? totalExperts(model.config.moe.experts) : null,
    };
  } finally {
    model.dispose();
  }
}
