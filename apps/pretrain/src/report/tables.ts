/**
 * The tables of a report, as header + formatted rows, shared by the console output and report.md.
 */
import type { AnalysisResults, ModelResult } from '../results.js';
import { formatCount, formatFixed, formatLoss, formatPercent, formatRatio } from './format.js';

/** A table: a title, column headers and formatted rows. */
export interface Table {
  readonly title: string;
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

/** The side-by-side comparison of trained models (the `compare` command's main table). */
export function comparisonTable(models: readonly ModelResult[], title = 'Side by side'): Table {
  return {
    title,
    header: [
      'model',
      'params',
      'activated',
      'FLOPs/token',
      'train tok/s',
      'expert tok/s',
      'expert vs MoE',
      'val loss',
      'perplexity',
      'accuracy',
      'FFN experts/token',
      'zero',
      'copy',
      'constant',
    ],
    rows: models.map((m) => [
      m.name,
      formatCount(m.parameters.total),
      formatCount(m.parameters.activated),
      formatCount(m.flopsPerToken.activated),
      formatCount(m.training.tokensPerSecond),
      m.routing ? formatCount(m.expert.tokensPerSecond) : '–',
      formatRatio(m.expert.ratioToMoe),
      formatLoss(m.evaluation.loss),
      formatFixed(m.evaluation.perplexity),
      formatPercent(m.evaluation.accuracy),
      m.routing ? formatFixed(m.routing.ffnExpertsPerToken) : '–',
      m.routing ? formatPercent(m.routing.zeroComputationShare.zero) : '–',
      m.routing ? formatPercent(m.routing.zeroComputationShare.copy) : '–',
      m.routing ? formatPercent(m.routing.zeroComputationShare.constant) : '–',
    ]),
  };
}

/** A sweep's table: each setting with its ideal and measured expert speed-up over the MoE. */
export function sweepTable(models: readonly ModelResult[], title: string): Table {
  return {
    title,
    header: ['setting', 'ideal 1/r', 'measured speed-up', 'measured/ideal', 'FFN experts/token', 'val loss', 'accuracy'],
    rows: models.map((m) => [
      m.name,
      formatRatio(m.idealSpeedup),
      formatRatio(m.expert.ratioToMoe),
      m.idealSpeedup !== null && m.expert.ratioToMoe !== null ? formatFixed(m.expert.ratioToMoe / m.idealSpeedup) : '–',
      m.routing ? formatFixed(m.routing.ffnExpertsPerToken) : '–',
      formatLoss(m.evaluation.loss),
      formatPercent(m.evaluation.accuracy),
    ]),
  };
}

/** FFN experts per token by part of speech and layer. */
export function partOfSpeechTable(analysis: AnalysisResults): Table {
  const pos = analysis.partOfSpeech;
  return {
    title: 'FFN experts per token by part of speech',
    header: ['layer', ...pos.classes],
    rows: [
      ...pos.byLayer.map((row, layer) => [`layer ${layer}`, ...row.map((v) => formatFixed(v))]),
      ['mean', ...pos.mean.map((v) => formatFixed(v))],
      ['tokens', ...pos.counts.map((v) => String(v))],
    ],
  };
}

/** Routing-score spread with and without gating residuals. */
export function scoreSpreadTable(analysis: AnalysisResults): Table {
  return {
    title: 'Top-1 routing score per layer: with and without gating residuals',
    header: ['model', 'layer', 'mean', 'variance', 'min', 'max'],
    rows: analysis.scoreSpread.flatMap((s) =>
      s.byLayer.map((l, layer) => [s.label, String(layer), formatFixed(l.mean, 4), formatFixed(l.variance, 5), formatFixed(l.min, 4), formatFixed(l.max, 4)]),
    ),
  };
}

/**
 * One sentence that says who won: the lowest validation loss and the fastest experts.
 *
 * @param models - the compared models
 * @returns the headline, or an empty string for fewer than two models
 */
export function headline(models: readonly ModelResult[]): string {
  if (models.length < 2) return '';
  const best = [...models].sort((a, b) => a.evaluation.loss - b.evaluation.loss)[0]!;
  const parts = [`Lowest validation loss: **${best.name}** (${formatLoss(best.evaluation.loss)})`];
  const moe = models.find((m) => m.variant === 'moe');
  const fastest = [...models].filter((m) => m.expert.ratioToMoe !== null).sort((a, b) => b.expert.ratioToMoe! - a.expert.ratioToMoe!)[0];
  if (moe && fastest && fastest !== moe) {
    parts.push(`fastest experts: **${fastest.name}** (${formatRatio(fastest.expert.ratioToMoe)} the MoE's expert throughput)`);
  }
  return `${parts.join('; ')}.`;
}
