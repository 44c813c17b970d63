/**
 * The results every command writes to `results.json`, and that the report is rendered from. The report
 * never computes a number of its own: every figure in `report.md` is formatted from these records.
 */

/** Where and how a run was made. */
export interface RunEnvironment {
  /** ISO date-time the run started. */
  readonly date: string;
  /** The tfjs backend summary from `initBackend`. */
  readonly backend: string;
  /** `os.cpus()[0].model` and the core count. */
  readonly machine: string;
  /** Node.js version. */
  readonly node: string;
}

/** One point of a training curve. */
export interface CurvePoint {
  /** Optimiser step (1-based). */
  readonly step: number;
  /** Tokens seen so far. */
  readonly tokens: number;
  /** Training loss (cross-entropy) at this step. */
  readonly loss: number;
  /** Validation loss, where evaluated. */
  readonly validationLoss?: number;
}

/** Routing summary of one MoE model, averaged over its training or evaluation. */
export interface RoutingSummary {
  /** Mean FFN experts per token over MoE layers (K for a vanilla MoE; < K for MoE++). */
  readonly ffnExpertsPerToken: number;
  /** Per MoE layer, the same. */
  readonly ffnExpertsPerTokenByLayer: readonly number[];
  /** Share of all routed slots sent to each zero-computation kind (0 when absent). */
  readonly zeroComputationShare: { readonly zero: number; readonly copy: number; readonly constant: number };
  /** Per MoE layer, share of slots per expert (rows sum to 1). */
  readonly loadByLayer: readonly (readonly number[])[];
  /** Expert kinds, same order as the load columns. */
  readonly expertKinds: readonly string[];
  /** Dropped assignments per step, mean. */
  readonly droppedPerStep: number;
}

/** One trained model's results. */
export interface ModelResult {
  /** Display name, e.g. `'moepp'` or `'tau=0.25'`. */
  readonly name: string;
  /** Preset variant (`dense`, `moe`, `moepp`). */
  readonly variant: string;
  /** Total and activated parameters. */
  readonly parameters: { readonly total: number; readonly activated: number };
  /** Forward FLOPs per token at the training sequence length, total and activated (measured routing). */
  readonly flopsPerToken: { readonly total: number; readonly activated: number };
  /** Training throughput. */
  readonly training: { readonly steps: number; readonly tokens: number; readonly seconds: number; readonly tokensPerSecond: number };
  /**
   * Expert-forward throughput as the paper measures it: tokens through the MoE layers per second of
   * expert computation (FFN + zero-computation experts, dispatch and combine). `ratioToMoe` divides it by
   * the vanilla MoE's in the same comparison (null when there is none).
   */
  readonly expert: { readonly forwardSeconds: number; readonly tokensPerSecond: number; readonly ratioToMoe: number | null };
  /** Validation results before and after training. */
  readonly evaluation: {
    readonly initialLoss: number;
    readonly loss: number;
    readonly perplexity: number;
    readonly accuracy: number;
  };
  /** Routing summary, null for a dense model. */
  readonly routing: RoutingSummary | null;
  /** The ideal expert speed-up over the vanilla MoE, `1/r` (null for dense). */
  readonly idealSpeedup: number | null;
  /** Loss curve. */
  readonly curve: readonly CurvePoint[];
}

/** A comparison's results: `compare`, `run` and each table of `sweep`. */
export interface ComparisonResults {
  /** What was run: `'compare'`, `'run'` or `'sweep:<name>'`. */
  readonly command: string;
  /** A one-line title. */
  readonly title: string;
  /** The settings that apply to all models (preset, corpus, steps, batch, seq, lr, seed…). */
  readonly settings: Readonly<Record<string, string | number | boolean>>;
  /** The run's environment. */
  readonly environment: RunEnvironment;
  /** The models, in training order. */
  readonly models: readonly ModelResult[];
}

/** Part-of-speech analysis (the paper's Fig. on FFN experts per token by token type). */
export interface PosAnalysis {
  /** Classes, e.g. `['verb', 'noun', 'other', 'fragment']`. */
  readonly classes: readonly string[];
  /** Per MoE layer, per class: mean FFN experts per token. */
  readonly byLayer: readonly (readonly number[])[];
  /** Per class: mean over layers. */
  readonly mean: readonly number[];
  /** Tokens counted per class. */
  readonly counts: readonly number[];
}

/** Routing-score spread with and without gating residuals (the paper's variance analysis). */
export interface ScoreSpread {
  /** `'with gating residuals'` / `'without'`. */
  readonly label: string;
  /** Per MoE layer: mean, variance, min and max of the top-1 routing probability. */
  readonly byLayer: readonly { readonly mean: number; readonly variance: number; readonly min: number; readonly max: number }[];
}

/** What `analyze` writes. */
export interface AnalysisResults {
  /** `'analyze'`. */
  readonly command: string;
  /** A one-line title. */
  readonly title: string;
  /** Settings. */
  readonly settings: Readonly<Record<string, string | number | boolean>>;
  /** The run's environment. */
  readonly environment: RunEnvironment;
  /** FFN experts per part of speech. */
  readonly partOfSpeech: PosAnalysis;
  /** Score spread, one entry per model (with / without gating residuals). */
  readonly scoreSpread: readonly ScoreSpread[];
  /** Expert load per layer of the model with gating residuals. */
  readonly load: { readonly loadByLayer: readonly (readonly number[])[]; readonly expertKinds: readonly string[] };
  /** The two models trained for the analysis. */
  readonly models: readonly ModelResult[];
}
