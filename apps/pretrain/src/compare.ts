/**
 * `compare` and `run`: train the preset's dense, MoE and MoE++ models (or a chosen subset) on the same
 * data, seed and token budget, then write the side-by-side report.
 */
import { initBackend } from '@moepp/tensors-core';
import { presetConfig, type PresetVariant } from '@moepp/models';
import type { TextData } from '@moepp/data';
import type { RunConfig } from './config.js';
import { prepareRunData } from './data.js';
import { describeEnvironment } from './environment.js';
import type { ComparisonResults, ModelResult, RunEnvironment } from './results.js';
import { trainModel, withRatioToMoe, type ModelSpec } from './train-model.js';
import { comparisonTable } from './report/tables.js';
import { textTable } from './report/format.js';
import { writeComparisonReport, type ReportFiles } from './report/write.js';

/** Thrown when a run stops on Ctrl-C; its message says how to resume. */
export class InterruptedRun extends Error {
  override readonly name = 'InterruptedRun';
}

/** Where a command's human-readable output goes: stdout normally, stderr under `--json`. */
export interface Output {
  /** Prints one line. */
  readonly log: (line: string) => void;
  /** The stream progress bars and lines are written to. */
  readonly stream: NodeJS.WriteStream;
}

/** The default {@link Output}: stdout. */
export const STDOUT: Output = { log: (line) => console.log(line), stream: process.stdout };

/** Output for `--json` runs: everything human-readable to stderr, so stdout holds only the JSON. */
export const STDERR: Output = { log: (line) => console.error(line), stream: process.stderr };

/** The settings shown in a report. */
export function reportSettings(run: RunConfig, data: TextData): Record<string, string | number | boolean> {
  return {
    preset: run.preset,
    corpus: `${data.corpus.name} (${data.trainTokens.length} train / ${data.validationTokens.length} validation tokens)`,
    tokenizer: `${data.tokenizer.type}, vocabulary ${data.tokenizer.vocabSize}`,
    steps: run.steps,
    'batch × sequence': `${run.batchSize} × ${run.seqLen}`,
    'tokens per model': run.steps * run.batchSize * run.seqLen,
    'learning rate': `${run.learningRate} → ${run.minLearningRate} (warm-up ${run.warmupSteps})`,
    'weight decay': run.weightDecay,
    'aux loss weight (beta)': run.auxLossWeight,
    'z-loss weight': run.zLossWeight,
    seed: run.seed,
    'MoE overrides': JSON.stringify(run.moe),
  };
}

/**
 * Trains a list of models in order, stopping at the first interrupted one.
 *
 * @param specs - the models
 * @param data - the prepared data
 * @param run - the run config
 * @param resume - continue an interrupted run
 * @param output - where progress goes
 * @returns the results with their ratio to the MoE filled in
 * @throws {@link InterruptedRun} when a training was interrupted
 */
export async function trainAll(specs: readonly ModelSpec[], data: TextData, run: RunConfig, resume: boolean, output: Output): Promise<ModelResult[]> {
  const { log } = output;
  const results: ModelResult[] = [];
  for (const [index, spec] of specs.entries()) {
    log(`\n== ${spec.name} (${index + 1}/${specs.length})`);
    const outcome = await trainModel(spec, data, run, run.out, resume, output.stream);
    if (!outcome.result) {
      throw new InterruptedRun(
        `interrupted while training ${spec.name}; a checkpoint is in ${outcome.dir}/checkpoint. ` +
          `Resume with: npm run pretrain -- resume ${run.out}`,
      );
    }
    log(`   validation loss ${outcome.result.evaluation.initialLoss.toFixed(4)} → ${outcome.result.evaluation.loss.toFixed(4)}`);
    results.push(outcome.result);
  }
  return withRatioToMoe(results);
}

/**
 * Runs a comparison and writes its report.
 *
 * @param run - the run config (its `variants` are trained in order)
 * @param options - resume, command name, output
 * @returns the results and the report's files
 * @throws {@link InterruptedRun} on Ctrl-C
 */
export async function runComparison(
  run: RunConfig,
  options: { resume?: boolean; command?: string; output?: Output; environment?: RunEnvironment } = {},
): Promise<{ results: ComparisonResults; files: ReportFiles }> {
  const output = options.output ?? STDOUT;
  const { log } = output;
  const backend = await initBackend({ backend: run.backend });
  log(`backend: ${backend.summary}`);
  const data = prepareRunData(run);
  log(`data: ${data.corpus.name}, ${data.trainTokens.length} training tokens, tokenizer ${data.tokenizer.type} (vocabulary ${data.tokenizer.vocabSize})`);
  const specs: ModelSpec[] = run.variants.map((variant: PresetVariant) => ({
    name: variant,
    variant,
    config: presetConfig(run.preset, variant, { vocabSize: data.tokenizer.vocabSize, moe: run.moe }),
  }));
  const models = await trainAll(specs, data, run, options.resume ?? false, output);
  const results: ComparisonResults = {
    command: options.command ?? 'compare',
    title: `Dense vs MoE vs MoE++ — preset '${run.preset}'`,
    settings: reportSettings(run, data),
    environment: options.environment ?? describeEnvironment(backend.summary),
    models,
  };
  const files = await writeComparisonReport(run.out, results);
  const table = comparisonTable(models);
  log(`\n${textTable(table.header, table.rows)}\n\nreport: ${files.markdown}\n        ${files.html}`);
  return { results, files };
}
