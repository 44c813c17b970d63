/**
 * Training metrics as JSON lines (`metrics.jsonl`): one `start` line each time a run starts or resumes,
 * one `step` line per optimiser step, one `eval` line per evaluation. Each line is written (and
 * flushed to the OS) as soon as it exists, so a crashed run keeps its metrics up to the crash.
 *
 * Expert timing follows the MoE++ paper (Table 3: "expert forward time"): the wall time of the expert
 * computation (dispatch, experts, combine) in the forward pass, summed over MoE layers, as the layer
 * measures it. Expert throughput is the tokens that pass through the MoE layers per second of that time.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ConfigError } from '@moepp/tensors-core';

/** Written when a run starts (`step` 0) or resumes (`step` = the checkpoint's step). */
export interface StartRecord {
  /** Line type. */
  readonly type: 'start';
  /** The step the run starts from. */
  readonly step: number;
  /** Whether this start resumes a checkpoint. */
  readonly resumed: boolean;
  /** The tfjs backend. */
  readonly backend: string;
  /** Wall-clock time, ISO 8601. */
  readonly time: string;
  /** Block indices of the MoE layers, in the order of the per-layer arrays of {@link StepRecord}. */
  readonly moeBlocks: readonly number[];
  /** B, windows per micro-batch. */
  readonly batchSize: number;
  /** T, tokens per window input. */
  readonly seqLen: number;
  /** Free-form details (the trainer writes its config and the model config). */
  readonly details: Readonly<Record<string, unknown>>;
}

/** One optimiser step. Per-layer arrays are in MoE-layer order (see {@link StartRecord.moeBlocks}). */
export interface StepRecord {
  /** Line type. */
  readonly type: 'step';
  /** Optimiser steps completed, counting this one (1 for the first step). */
  readonly step: number;
  /** The data epoch of this step's last micro-batch. */
  readonly epoch: number;
  /** Learning rate used. */
  readonly lr: number;
  /** Total loss `L_ce + β·loadBalance + w_z·zLoss`, mean over micro-batches. */
  readonly loss: number;
  /** Mean next-token cross-entropy, nats. */
  readonly crossEntropy: number;
  /** Σ over MoE layers of the unweighted load-balance loss, mean over micro-batches. */
  readonly loadBalance: number;
  /** Σ over MoE layers of the unweighted router z-loss, mean over micro-batches. */
  readonly zLoss: number;
  /** Global gradient norm before clipping. */
  readonly gradNorm: number;
  /** Tokens trained on in this step (`A·B·T`). */
  readonly tokens: number;
  /** Wall time of the step (batches, forward, backward, clip, update, loss read back), ms. */
  readonly stepMs: number;
  /** `tokens / stepMs`, per second. */
  readonly tokensPerSecond: number;
  /** Expert forward time summed over MoE layers and micro-batches, ms (0 for a dense model). */
  readonly expertForwardMs: number;
  /** Expert forward time per MoE layer, summed over micro-batches, ms. */
  readonly expertForwardMsByLayer: readonly number[];
  /** Tokens through the MoE layers per second of expert forward time (`A·B·T·L_moe / expert s`); null if dense. */
  readonly expertTokensPerSecond: number | null;
  /** Kept FFN-expert assignments per token, mean over MoE layers (MoE++ Fig. 5); null if dense. */
  readonly ffnExpertsPerToken: number | null;
  /** FFN experts per token per MoE layer. */
  readonly ffnExpertsPerTokenByLayer: readonly number[];
  /** Assignments per expert per MoE layer, summed over micro-batches: `[L_moe][E]`. */
  readonly tokensPerExpert: readonly (readonly number[])[];
  /** Assignments dropped by capacity, summed over layers and micro-batches. */
  readonly droppedAssignments: number;
  /** Dropped assignments per MoE layer. */
  readonly droppedAssignmentsByLayer: readonly number[];
  /** Mean router entropy per MoE layer, nats. */
  readonly routerEntropyByLayer: readonly number[];
  /** Live tensors after the update (`tf.memory().numTensors`). */
  readonly liveTensors: number;
  /** Wall time since this run (or resume) started, ms. */
  readonly elapsedMs: number;
}

/** One evaluation on the validation windows. */
export interface EvalRecord {
  /** Line type. */
  readonly type: 'eval';
  /** Optimiser steps completed when evaluated (0: before training). */
  readonly step: number;
  /** Mean next-token cross-entropy, nats. */
  readonly loss: number;
  /** `exp(loss)`. */
  readonly perplexity: number;
  /** Next-token accuracy, in [0, 1]. */
  readonly accuracy: number;
  /** Tokens scored. */
  readonly tokens: number;
  /** FFN experts per token, mean over MoE layers; null if dense. */
  readonly ffnExpertsPerToken: number | null;
  /** Wall time of the evaluation, ms. */
  readonly evalMs: number;
}

/** Any line of `metrics.jsonl`. */
export type MetricsRecord = StartRecord | StepRecord | EvalRecord;

/**
 * Appends metrics records to a JSON-lines file.
 */
export class MetricsLog {
  /** The file written. */
  readonly path: string;
  private fd: number | null;

  /**
   * Opens the file. A fresh run (`resumeStep` undefined) truncates it. A resumed run keeps the lines
   * whose `step` is at most `resumeStep` and drops the later ones (steps the interrupted run logged
   * after its last checkpoint, which the resumed run will log again); the rewrite is atomic.
   *
   * @param path - the file; its folder is created if needed
   * @param resumeStep - the step the run resumes from, if it resumes
   * @throws Error from the file system when the file cannot be opened
   */
  constructor(path: string, resumeStep?: number) {
    this.path = path;
    mkdirSync(dirname(path), { recursive: true });
    if (resumeStep !== undefined && existsSync(path)) {
      const kept = readFileSync(path, 'utf8')
        .split('\n')
        .filter((line) => {
          if (line.trim() === '') return false;
          try {
            const record = JSON.parse(line) as { step?: unknown };
            return typeof record.step === 'number' && record.step <= resumeStep;
          } catch {
            return false; // a line cut off by a crash
          }
        });
      const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
      const fd = openSync(temporary, 'w');
      try {
        if (kept.length > 0) writeSync(fd, `${kept.join('\n')}\n`);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, path);
      this.fd = openSync(path, 'a');
    } else {
      this.fd = openSync(path, 'w');
    }
  }

  /**
   * Appends one record as one line.
   *
   * @param record - the record
   * @throws `ConfigError` after {@link MetricsLog.close}
   */
  write(record: MetricsRecord): void {
    if (this.fd === null) throw new ConfigError(`MetricsLog.write: '${this.path}' is closed`);
    writeSync(this.fd, `${JSON.stringify(record)}\n`);
  }

  /** Closes the file (idempotent). */
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/**
 * Reads a `metrics.jsonl` file.
 *
 * @param path - the file
 * @returns the records in file order; a trailing line cut off by a crash is skipped
 * @throws `ConfigError` naming the file and the line for a malformed line other than the last
 */
export function readMetricsFile(path: string): MetricsRecord[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  const records: MetricsRecord[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    try {
      records.push(JSON.parse(line) as MetricsRecord);
    } catch (error) {
      const isLast = lines.slice(index + 1).every((rest) => rest.trim() === '');
      if (!isLast) throw new ConfigError(`readMetricsFile: '${path}' line ${index + 1} is not JSON: ${(error as Error).message}`);
    }
  });
  return records;
}
