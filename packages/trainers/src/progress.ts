/**
 * Progress output while training: a `cli-progress` bar on a terminal, plain periodic lines otherwise
 * (CI logs, files, pipes), or nothing (tests).
 *
 *     step 40/200 loss 3.214 lr 4.1e-4 12.3k tok/s
 *     eval step 40 loss 3.102 ppl 22.2 acc 41.2%
 */
import cliProgress from 'cli-progress';
import { checkNumber, checkOneOf } from '@moepp/tensors-core';
import type { EvalRecord, StepRecord } from './metrics.js';

/** `'auto'`: a bar if the stream is a TTY, lines otherwise; `'bar'`, `'lines'`, `'silent'`: as named. */
export type ProgressMode = 'auto' | 'bar' | 'lines' | 'silent';

/** All progress modes. */
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'bar', 'lines', 'silent'];

/** Receives the trainer's progress. Implement it to route progress elsewhere (a UI, a logger). */
export interface ProgressReporter {
  /** Called once when a run starts or resumes. */
  start(totalSteps: number, startStep: number): void;
  /** Called after every optimiser step. */
  step(record: StepRecord): void;
  /** Called after every evaluation. */
  eval(record: EvalRecord): void;
  /** A one-off message (checkpoint written, interrupted, …). */
  message(text: string): void;
  /** Called once when the run ends, normally or not. */
  stop(): void;
}

/** A writable text stream, such as `process.stdout`. */
export type ProgressStream = NodeJS.WritableStream & {
  /** True for a terminal (then `'auto'` draws a bar). */
  readonly isTTY?: boolean;
};

/** Options of {@link createProgressReporter}. */
export interface ProgressOptions {
  /** The mode. Default `'auto'`. */
  readonly mode?: ProgressMode;
  /** Where to write. Default `process.stdout`. */
  readonly stream?: ProgressStream;
  /** In `'lines'` mode, print every this many steps (and the first and last step). Default 10. */
  readonly logInterval?: number;
}

/**
 * @param count - a non-negative number
 * @returns a short rendering: `950`, `12.3k`, `4.56M`
 */
export function formatCount(count: number): string {
  if (!Number.isFinite(count)) return String(count);
  if (count < 1000) return count.toFixed(0);
  if (count < 1e6) return `${(count / 1e3).toFixed(1)}k`;
  return `${(count / 1e6).toFixed(2)}M`;
}

/**
 * @param record - a step record
 * @param totalSteps - the run's total steps
 * @returns e.g. `step 40/200 loss 3.214 lr 4.1e-4 12.3k tok/s` (plus `ffn/tok 1.52` for MoE models)
 */
export function formatStepLine(record: StepRecord, totalSteps: number): string {
  const ffn = record.ffnExpertsPerToken === null ? '' : ` ffn/tok ${record.ffnExpertsPerToken.toFixed(2)}`;
  return `step ${record.step}/${totalSteps} loss ${record.loss.toFixed(3)} lr ${record.lr.toExponential(1)} ${formatCount(record.tokensPerSecond)} tok/s${ffn}`;
}

/**
 * @param record - an eval record
 * @returns e.g. `eval step 40 loss 3.102 ppl 22.2 acc 41.2%`
 */
export function formatEvalLine(record: EvalRecord): string {
  return `eval step ${record.step} loss ${record.loss.toFixed(3)} ppl ${record.perplexity.toFixed(1)} acc ${(record.accuracy * 100).toFixed(1)}%`;
}

class SilentReporter implements ProgressReporter {
  start(): void {}
  step(): void {}
  eval(): void {}
  message(): void {}
  stop(): void {}
}

class LineReporter implements ProgressReporter {
  private totalSteps = 0;
  private startStep = 0;
  constructor(
    private readonly stream: ProgressStream,
    private readonly logInterval: number,
  ) {}
  start(totalSteps: number, startStep: number): void {
    this.totalSteps = totalSteps;
    this.startStep = startStep;
  }
  step(record: StepRecord): void {
    const due = record.step % this.logInterval === 0 || record.step === this.startStep + 1 || record.step === this.totalSteps;
    if (due) this.stream.write(`${formatStepLine(record, this.totalSteps)}\n`);
  }
  eval(record: EvalRecord): void {
    this.stream.write(`${formatEvalLine(record)}\n`);
  }
  message(text: string): void {
    this.stream.write(`${text}\n`);
  }
  stop(): void {}
}

class BarReporter implements ProgressReporter {
  private readonly bars: cliProgress.MultiBar;
  private bar: cliProgress.GenericBar | null = null;
  constructor(stream: ProgressStream) {
    this.bars = new cliProgress.MultiBar(
      {
        stream,
        format: '{bar} {value}/{total} | loss {loss} | lr {lr} | {speed} tok/s | ETA {eta_formatted}',
        noTTYOutput: true, // forced 'bar' mode on a non-terminal still prints, every notTTYSchedule ms
        notTTYSchedule: 10_000,
        hideCursor: false, // never leave the cursor hidden if the process is killed
        gracefulExit: false, // the trainer owns SIGINT
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
  }
  start(totalSteps: number, startStep: number): void {
    this.bar = this.bars.create(totalSteps, startStep, { loss: '-', lr: '-', speed: '-' });
  }
  step(record: StepRecord): void {
    this.bar?.update(record.step, {
      loss: record.loss.toFixed(3),
      lr: record.lr.toExponential(1),
      speed: formatCount(record.tokensPerSecond),
    });
  }
  eval(record: EvalRecord): void {
    this.bars.log(`${formatEvalLine(record)}\n`);
  }
  message(text: string): void {
    this.bars.log(`${text}\n`);
  }
  stop(): void {
    this.bars.update(); // flush queued log lines
    this.bars.stop();
  }
}

/**
 * Creates a progress reporter.
 *
 * @param options - mode, stream and line interval
 * @returns the reporter
 * @throws `ConfigError` for an unknown mode or a log interval that is not an integer >= 1
 */
export function createProgressReporter(options: ProgressOptions = {}): ProgressReporter {
  const mode = checkOneOf('createProgressReporter', 'mode', options.mode ?? 'auto', PROGRESS_MODES);
  const logInterval = checkNumber('createProgressReporter', 'logInterval', options.logInterval ?? 10, { integer: true, min: 1 });
  const stream: ProgressStream = options.stream ?? process.stdout;
  if (mode === 'silent') return new SilentReporter();
  if (mode === 'bar' || (mode === 'auto' && stream.isTTY === true)) return new BarReporter(stream);
  return new LineReporter(stream, logInterval);
}
