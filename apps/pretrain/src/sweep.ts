/**
 * `sweep`: the paper's ablations, each as a table with the ideal expert speed-up `1/r` beside the
 * measured one. A vanilla MoE is trained once as the baseline of every table; identical configs
 * (e.g. tau 0.75 with all expert types and gating residuals on) are trained once and shared.
 */
import { initBackend } from '@moepp/tensors-core';
import { presetConfig, type ModelConfig } from '@moepp/models';
import type { RunConfig } from './config.js';
import { prepareRunData } from './data.js';
import { describeEnvironment } from './environment.js';
import { reportSettings, STDOUT, trainAll, type Output } from './compare.js';
import type { ComparisonResults, ModelResult } from './results.js';
import type { ModelSpec } from './train-model.js';
import { sweepTable } from './report/tables.js';
import { textTable } from './report/format.js';
import { writeSweepReport, type ReportFiles } from './report/write.js';

/** The ablations `sweep` knows. */
export const SWEEPS = ['tau', 'experts', 'residual', 'gating'] as const;

/** One ablation's name. */
export type SweepName = (typeof SWEEPS)[number];

/** The tau values of the paper's Table 3. */
export const TAU_VALUES = [0.1, 0.25, 0.5, 0.75, 1.0] as const;

interface Setting {
  readonly label: string;
  readonly moe: RunConfig['moe'];
}

/** The settings of each ablation (MoE++ overrides on top of the run's own). */
export function sweepSettings(name: SweepName): Setting[] {
  switch (name) {
    case 'tau':
      return TAU_VALUES.map((tau) => ({ label: `tau=${tau}`, moe: { tau } }));
    case 'experts':
      return [
        { label: 'zero only', moe: { experts: { zero: 1, copy: 0, constant: 0 } } },
        { label: 'copy only', moe: { experts: { zero: 0, copy: 1, constant: 0 } } },
        { label: 'constant only', moe: { experts: { zero: 0, copy: 0, constant: 2 } } },
        { label: 'all (1 zero, 1 copy, 2 constant)', moe: {} },
      ];
    case 'residual':
      return [
        { label: 'gating residuals on', moe: { gatingResidual: true } },
        { label: 'gating residuals off', moe: { gatingResidual: false } },
      ];
    case 'gating':
      return [
        { label: 'drop zero gate + renormalise (code)', moe: { zeroGateRule: 'drop-and-renormalize' } },
        { label: 'raw softmax (paper Eq. 1)', moe: { zeroGateRule: 'raw-softmax' } },
      ];
  }
}

/**
 * Runs the chosen ablations and writes one report with a table each.
 *
 * @param run - the run config (preset, data, budget)
 * @param which - the ablations, in order
 * @param options - resume and output
 * @returns one comparison per ablation and the report's files
 * @throws {@link InterruptedRun} on Ctrl-C
 */
export async function runSweep(
  run: RunConfig,
  which: readonly SweepName[],
  options: { resume?: boolean; output?: Output } = {},
): Promise<{ sweeps: ComparisonResults[]; files: ReportFiles }> {
  const output = options.output ?? STDOUT;
  const { log } = output;
  const backend = await initBackend({ backend: run.backend });
  log(`backend: ${backend.summary}`);
  const data = prepareRunData(run);
  const vocabSize = data.tokenizer.vocabSize;
  const baseline: ModelSpec = { name: 'MoE (baseline)', variant: 'moe', config: presetConfig(run.preset, 'moe', { vocabSize, moe: {} }) };
  // Unique configs across all ablations, in first-use order; the baseline first.
  const unique = new Map<string, ModelSpec>([[JSON.stringify(baseline.config), baseline]]);
  const tables = which.map((name) => ({
    name,
    specs: sweepSettings(name).map((setting) => {
      const config: ModelConfig = presetConfig(run.preset, 'moepp', {
        vocabSize,
        moe: { ...run.moe, ...setting.moe, experts: { ...run.moe.experts, ...setting.moe.experts } },
      });
      const key = JSON.stringify(config);
      if (!unique.has(key)) unique.set(key, { name: setting.label, variant: 'moepp', config });
      return { label: setting.label, key };
    }),
  }));
  log(`sweep: ${which.join(', ')} — ${unique.size} models to train`);
  const trained = await trainAll([...unique.values()], data, run, options.resume ?? false, output);
  const byKey = new Map([...unique.keys()].map((key, i) => [key, trained[i]!]));
  const environment = describeEnvironment(backend.summary);
  const settings = reportSettings(run, data);
  const base = trained[0]!;
  const sweeps: ComparisonResults[] = tables.map((table) => ({
    command: `sweep:${table.name}`,
    title: `Sweep: ${table.name}`,
    settings,
    environment,
    models: [base, ...table.specs.map((s): ModelResult => ({ ...byKey.get(s.key)!, name: s.label }))],
  }));
  const files = await writeSweepReport(run.out, sweeps, `MoE++ ablations — preset '${run.preset}'`);
  for (const sweep of sweeps) {
    const table = sweepTable(sweep.models, sweep.title);
    log(`\n${table.title}\n${textTable(table.header, table.rows)}`);
  }
  log(`\nreport: ${files.markdown}`);
  return { sweeps, files };
}
