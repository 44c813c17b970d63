/**
 * Example: sparse upcycling (Komatsuzaki et al. 2022, arXiv 2212.05055) of a dense language model to
 * MoE++ with `upcycle` from `@moepp/models`, on real text (Moby-Dick, byte tokenizer, `@moepp/data`).
 *
 *   1. Train a small dense decoder (2 blocks, D = 64, MLP width F = 256) for a few steps.
 *   2. Upcycle it twice. Every FFN expert is a copy of the dense MLP; attention, norms and embeddings
 *      are copied; routers and zero-computation experts start fresh.
 *      a. MoE++ with 4 FFN experts and 1 zero expert. This upcycle computes exactly the dense model's
 *         function at step 0: the experts are identical and the official gate rule
 *         (`zeroGateRule: 'drop-and-renormalize'`, the default) renormalises the gates of the
 *         non-zero experts to sum to 1, so a token routed to {FFN a, FFN b} or {FFN a, zero} gets the
 *         dense MLP's output with weight 1. Its validation loss starts at the dense model's.
 *      b. MoE++ with the paper's full layout: 4 FFN, 1 zero, 1 copy, 2 constant experts. Copy and
 *         constant experts output `x` and `a1·x + a2·v`, which the dense model never did, so the loss
 *         starts higher and has to recover.
 *   3. Train each upcycled model on, and, as the baseline, the dense model for the same steps.
 *   4. Print the validation losses and the FFN experts each token used.
 *
 * Run it:   npm run example:upcycling -w @moepp/examples             (about 1–2 min on 2 cores)
 *           npm run example:upcycling -w @moepp/examples -- --quick  (the shorter run the test uses)
 *
 * Shapes: `B` windows per batch (8), `T` tokens per window (64), `V` vocabulary (256 bytes),
 * `D` model width (64), `F` MLP / FFN-expert width (256), `E` experts per MoE++ layer.
 */
import { fileURLToPath } from 'node:url';
import { initBackend } from '@moepp/tensors-core';
import { createModel, upcycle, type DecoderLM, type ExpertCounts } from '@moepp/models';
import { prepareTextData, TrainBatcher, type TextData } from '@moepp/data';
import { evaluate, train } from '@moepp/trainers';

/** Settings of {@link runUpcycling}. */
export interface UpcyclingOptions {
  /** Fewer steps and validation windows (what the test runs). Default false. */
  readonly quick?: boolean;
  /** Seeds the weights and the batch order. Default 0. */
  readonly seed?: number;
  /** Where the table goes. Default: nowhere. */
  readonly log?: (line: string) => void;
}

/** One model trained on after the dense phase. */
export interface ContinuedRun {
  /** A display name. */
  readonly name: string;
  /** Expert counts of the MoE++ layers, or null for the dense baseline. */
  readonly experts: ExpertCounts | null;
  /** Validation loss at each evaluation, the first at step 0 (right after upcycling). */
  readonly validationLosses: readonly number[];
  /** The steps of those evaluations. */
  readonly steps: readonly number[];
  /** Mean FFN experts per token over the MoE++ layers, measured on the validation set at the end (null for dense). */
  readonly ffnExpertsPerToken: number | null;
}

/** What {@link runUpcycling} measured. */
export interface UpcyclingResult {
  /** Validation loss of the dense model after its own training, before upcycling. */
  readonly denseLoss: number;
  /** Validation losses of the dense model during its own training (first at step 0). */
  readonly densePretrainLosses: readonly number[];
  /** The upcycled models and the dense baseline, trained on for the same steps. */
  readonly runs: readonly ContinuedRun[];
}

/** The two upcycles: function-preserving (zero experts only) and the paper's full layout. */
const UPCYCLES: readonly { readonly name: string; readonly experts: ExpertCounts }[] = [
  { name: 'MoE++ (4 FFN + 1 zero)', experts: { ffn: 4, zero: 1, copy: 0, constant: 0 } },
  { name: 'MoE++ (4 FFN + 1 zero, 1 copy, 2 constant)', experts: { ffn: 4, zero: 1, copy: 1, constant: 2 } },
];

/**
 * Trains a model on for `steps` steps with its own batcher (same seed for every model, so all see the
 * same batches), evaluating `evaluations` times.
 */
async function trainOn(model: DecoderLM, data: TextData, steps: number, evaluations: number, seed: number) {
  const batches = new TrainBatcher(data.trainTokens, { batchSize: 8, seqLen: 64, seed: seed + 1 });
  const result = await train(
    model,
    { train: batches, validation: data.validation },
    { totalSteps: steps, evalInterval: Math.max(1, Math.floor(steps / evaluations)), schedule: { peakLr: 1e-3, minLr: 1e-4, warmupSteps: 0 } },
    { progress: 'silent' },
  );
  return result.evals;
}

/**
 * Trains the dense model, upcycles it twice, trains all three on and reports their validation losses.
 *
 * @param options - see {@link UpcyclingOptions}
 * @returns the losses
 */
export async function runUpcycling(options: UpcyclingOptions = {}): Promise<UpcyclingResult> {
  const quick = options.quick ?? false;
  const log = options.log ?? (() => {});
  const seed = options.seed ?? 0;
  const budget = quick ? { dense: 40, onward: 16, evaluations: 4, validationWindows: 16 } : { dense: 150, onward: 80, evaluations: 4, validationWindows: 32 };
  const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed, validationWindows: budget.validationWindows });
  log(`data: ${data.corpus.name}, ${data.trainTokens.length} training bytes; ${budget.validationWindows} validation windows of 64`);

  // 1. The dense model (LLaMA-style blocks with a SwiGLU MLP of width 256).
  const dense = createModel({ vocabSize: 256, hiddenSize: 64, intermediateSize: 256, numLayers: 2, numHeads: 2, maxSeqLen: 64 }, seed);
  const pretrain = await train(
    dense,
    data,
    { totalSteps: budget.dense, evalInterval: budget.dense, schedule: { peakLr: 3e-3, minLr: 3e-4, warmupSteps: 5 } },
    { progress: 'silent' },
  );
  const denseLoss = (await evaluate(dense, data.validation)).loss;
  log(`dense model trained for ${budget.dense} steps: validation loss ${pretrain.evals.map((e) => e.loss.toFixed(4)).join(' -> ')}`);

  // 2–3. Upcycle (the dense model is left untouched), then train on.
  const runs: ContinuedRun[] = [];
  for (const { name, experts } of UPCYCLES) {
    const model = upcycle(dense, { experts }, seed);
    try {
      const evals = await trainOn(model, data, budget.onward, budget.evaluations, seed);
      const last = await evaluate(model, data.validation);
      runs.push({ name, experts, validationLosses: evals.map((e) => e.loss), steps: evals.map((e) => e.step), ffnExpertsPerToken: last.ffnExpertsPerToken });
    } finally {
      model.dispose();
    }
  }
  // The baseline: the dense model itself, trained on for the same steps on the same batches.
  const denseEvals = await trainOn(dense, data, budget.onward, budget.evaluations, seed);
  runs.push({ name: 'dense, trained on', experts: null, validationLosses: denseEvals.map((e) => e.loss), steps: denseEvals.map((e) => e.step), ffnExpertsPerToken: null });
  dense.dispose();

  // 4. The table.
  const steps = runs[0]!.steps;
  log('');
  log(`validation loss after upcycling (dense model before: ${denseLoss.toFixed(4)})`);
  log(`${'model'.padEnd(44)}${steps.map((s) => `step ${s}`.padStart(10)).join('')}${'FFN/token'.padStart(11)}`);
  for (const run of runs) {
    const ffn = run.ffnExpertsPerToken === null ? '–' : run.ffnExpertsPerToken.toFixed(2);
    log(`${run.name.padEnd(44)}${run.validationLosses.map((l) => l.toFixed(4).padStart(10)).join('')}${ffn.padStart(11)}`);
  }
  return { denseLoss, densePretrainLosses: pretrain.evals.map((e) => e.loss), runs };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const backend = await initBackend({ backend: 'wasm' });
  console.log(`backend: ${backend.summary}`);
  await runUpcycling({ quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
}
