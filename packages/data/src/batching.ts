/**
 * Deterministic batches of token windows for language-model training.
 *
 * A token stream of length L is cut into windows of T + 1 tokens with stride T:
 * window w = `stream[w·T … w·T + T]` (inclusive), for w = 0 … W − 1, W = ⌊(L − 1) / T⌋.
 * Consecutive windows share one token, so every token after the first is a target exactly once per
 * epoch (the last (L − 1) mod T tokens are never targets).
 *
 * From a window, the inputs are its first T tokens and the targets its last T (the inputs shifted left
 * by one): `targets[b, t] = inputs[b, t + 1]` for t < T − 1 and `targets[b, T − 1] = window[T]`. The
 * model predicts `targets[b, t]` from `inputs[b, 0..t]`.
 *
 * Training order: each epoch visits the windows in a fresh seeded permutation (Fisher–Yates with
 * {@link SeededRandom}), B at a time; the last W mod B windows of a permutation are skipped that epoch
 * (every batch is full). A {@link BatchCursor} records where the next batch starts, and restoring it
 * continues the exact sequence.
 *
 * Validation: the first M windows of the held-out stream, in order, never shuffled.
 */
import { ConfigError, SeededRandom, checkNumber, describe, type RandomState } from '@moepp/tensors-core';

/** Where a {@link TrainBatcher} is: JSON-serialisable, for checkpoints. */
export interface BatchCursor {
  /** The current epoch, from 0. */
  readonly epoch: number;
  /** Index, in this epoch's permutation, of the first window of the next batch. */
  readonly position: number;
  /** The generator state at the start of this epoch, before its permutation was drawn. */
  readonly rngState: RandomState;
}

/** One batch of windows. `B` batch size, `T` sequence length. */
export interface TokenBatch {
  /** int32 [B, T+1] the windows, row-major. */
  readonly tokens: Int32Array;
  /** int32 [B, T] the first T tokens of each window. */
  readonly inputs: Int32Array;
  /** int32 [B, T] the last T tokens of each window (the inputs shifted left by one). */
  readonly targets: Int32Array;
  /** The shape of `tokens`: [B, T+1]. */
  readonly shape: readonly [number, number];
  /** B. */
  readonly batchSize: number;
  /** T. */
  readonly seqLen: number;
  /** int32 [B] which window each row is (window w starts at stream position w·T). */
  readonly windowIndices: Int32Array;
  /** The epoch the batch belongs to (0 for validation batches). */
  readonly epoch: number;
}

/** Configuration of a {@link TrainBatcher}. */
export interface TrainBatcherConfig {
  /** B, windows per batch (an integer >= 1). */
  readonly batchSize: number;
  /** T, tokens per input row (an integer >= 1); windows hold T + 1 tokens. */
  readonly seqLen: number;
  /** Seed of the per-epoch shuffles (an integer in [0, 2^32)). */
  readonly seed: number;
  /**
   * Where to resume (from {@link TrainBatcher.getCursor}); its generator state takes the place of the
   * seed's. Default: the start of epoch 0.
   */
  readonly cursor?: BatchCursor;
}

/**
 * The number of windows of T + 1 tokens (stride T) in a stream of L tokens: ⌊(L − 1) / T⌋ (0 if L < T + 1).
 *
 * @param streamLength - L
 * @param seqLen - T
 * @returns W
 * @throws `ConfigError` if L or T is not a valid count
 */
export function countWindows(streamLength: number, seqLen: number): number {
  checkNumber('countWindows', 'streamLength', streamLength, { integer: true, min: 0 });
  checkNumber('countWindows', 'seqLen', seqLen, { integer: true, min: 1 });
  return streamLength < seqLen + 1 ? 0 : Math.floor((streamLength - 1) / seqLen);
}

function checkStream(op: string, argument: string, stream: unknown, seqLen: number): number {
  if (!(stream instanceof Int32Array)) throw new ConfigError(`${op}: '${argument}' must be an Int32Array of token ids, got ${describe(stream)}`);
  const windows = countWindows(stream.length, seqLen);
  if (windows === 0) {
    throw new ConfigError(`${op}: ${argument} of ${stream.length} tokens is too short for one window of T+1 = ${seqLen + 1} tokens`);
  }
  return windows;
}

/** Copies the given windows into a batch. */
function gatherBatch(stream: Int32Array, windowIndices: Int32Array, seqLen: number, epoch: number): TokenBatch {
  const batchSize = windowIndices.length;
  const width = seqLen + 1;
  const tokens = new Int32Array(batchSize * width); // [B, T+1]
  const inputs = new Int32Array(batchSize * seqLen); // [B, T]
  const targets = new Int32Array(batchSize * seqLen); // [B, T]
  for (let b = 0; b < batchSize; b++) {
    const start = (windowIndices[b] as number) * seqLen;
    const window = stream.subarray(start, start + width); // [T+1]
    tokens.set(window, b * width);
    inputs.set(window.subarray(0, seqLen), b * seqLen);
    targets.set(window.subarray(1), b * seqLen);
  }
  return { tokens, inputs, targets, shape: [batchSize, width], batchSize, seqLen, windowIndices, epoch };
}

/**
 * Training batches: seeded per-epoch shuffles of the windows of a token stream, resumable from a
 * {@link BatchCursor}. The stream is not copied; do not modify it while batching.
 */
export class TrainBatcher {
  /** W, windows in the stream. */
  readonly windowCount: number;
  /** ⌊W / B⌋, full batches per epoch. */
  readonly batchesPerEpoch: number;
  /** B. */
  readonly batchSize: number;
  /** T. */
  readonly seqLen: number;

  private readonly stream: Int32Array;
  private readonly rng: SeededRandom;
  private order: number[] = [];
  private epoch = 0;
  private position = 0;
  private epochStartState: RandomState;

  /**
   * @param stream - int32 [L] the training token stream
   * @param config - batch size, sequence length, seed and an optional cursor to resume from
   * @throws `ConfigError` if B, T or the seed is invalid, the stream is too short for one window
   *   or has fewer windows than B, or the cursor does not fit this stream
   */
  constructor(stream: Int32Array, config: TrainBatcherConfig) {
    const op = 'TrainBatcher';
    this.batchSize = checkNumber(op, 'batchSize', config?.batchSize, { integer: true, min: 1 });
    this.seqLen = checkNumber(op, 'seqLen', config.seqLen, { integer: true, min: 1 });
    this.windowCount = checkStream(op, 'stream', stream, this.seqLen);
    if (this.windowCount < this.batchSize) {
      throw new ConfigError(
        `${op}: stream of ${stream.length} tokens holds ${this.windowCount} windows of T+1 = ${this.seqLen + 1} tokens, fewer than batchSize = ${this.batchSize}`,
      );
    }
    this.batchesPerEpoch = Math.floor(this.windowCount / this.batchSize);
    this.stream = stream;
    this.rng = new SeededRandom(config.seed);
    this.epochStartState = this.rng.getState();
    if (config.cursor !== undefined) this.setCursor(config.cursor);
    else this.startEpoch(0);
  }

  /**
   * @returns the next batch: B windows of this epoch's permutation; a new epoch (and permutation)
   *   starts when fewer than B windows are left
   */
  next(): TokenBatch {
    if (this.position + this.batchSize > this.windowCount) {
      this.epochStartState = this.rng.getState();
      this.startEpoch(this.epoch + 1);
    }
    const windowIndices = Int32Array.from(this.order.slice(this.position, this.position + this.batchSize)); // [B]
    this.position += this.batchSize;
    return gatherBatch(this.stream, windowIndices, this.seqLen, this.epoch);
  }

  /** @returns where the next batch starts; save it (it is plain JSON) and pass it back to resume */
  getCursor(): BatchCursor {
    return { epoch: this.epoch, position: this.position, rngState: this.epochStartState };
  }

  /**
   * Resumes from a cursor: the following batches are exactly those an uninterrupted batcher would give.
   *
   * @param cursor - a cursor from {@link TrainBatcher.getCursor} of a batcher over the same stream, B and T
   * @throws `ConfigError` if a field is malformed or the position is beyond this stream's windows
   */
  setCursor(cursor: BatchCursor): void {
    const op = 'TrainBatcher.setCursor';
    const epoch = checkNumber(op, 'epoch', cursor?.epoch, { integer: true, min: 0 });
    const position = checkNumber(op, 'position', cursor.position, { integer: true, min: 0, max: this.windowCount });
    const rng = SeededRandom.fromState(cursor.rngState); // validates the state
    this.rng.setState(rng.getState());
    this.epochStartState = this.rng.getState();
    this.startEpoch(epoch);
    this.position = position;
  }

  private startEpoch(epoch: number): void {
    this.order = this.rng.shuffle(Array.from({ length: this.windowCount }, (_, i) => i));
    this.epoch = epoch;
    this.position = 0;
  }
}

/** Options of {@link validationBatches}. */
export interface ValidationBatchesConfig {
  /** B, windows per batch; the last batch holds the remaining M mod B windows if M is not a multiple of B. */
  readonly batchSize: number;
  /** T, tokens per input row. */
  readonly seqLen: number;
  /** M, the number of windows: the first M of the stream, in order. */
  readonly windows: number;
}

/**
 * The fixed validation set: the first M windows of the held-out stream, in order, in batches of B.
 * Never shuffled, so every evaluation sees the same tokens.
 *
 * @param stream - int32 [L] the held-out token stream
 * @param config - B, T and M
 * @returns ⌈M / B⌉ batches
 * @throws `ConfigError` if B, T or M is invalid or the stream holds fewer than M windows
 */
export function validationBatches(stream: Int32Array, config: ValidationBatchesConfig): TokenBatch[] {
  const op = 'validationBatches';
  const batchSize = checkNumber(op, 'batchSize', config?.batchSize, { integer: true, min: 1 });
  const seqLen = checkNumber(op, 'seqLen', config.seqLen, { integer: true, min: 1 });
  const windows = checkNumber(op, 'windows', config.windows, { integer: true, min: 1 });
  const available = checkStream(op, 'validation stream', stream, seqLen);
  if (windows > available) {
    throw new ConfigError(
      `${op}: 'windows' is ${windows} but the validation stream of ${stream.length} tokens holds only ${available} windows of T+1 = ${seqLen + 1} tokens`,
    );
  }
  const batches: TokenBatch[] = [];
  for (let start = 0; start < windows; start += batchSize) {
    const count = Math.min(batchSize, windows - start);
    batches.push(gatherBatch(stream, Int32Array.from({ length: count }, (_, i) => start + i), seqLen, 0));
  }
  return batches;
}
