/**
 * Writes a run's report folder: `results.json`, `report.md`, SVG charts and an `index.html` that shows
 * them together. Every number in report.md is formatted from the same records as results.json.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { writeFileAtomically } from '@moepp/models';
import type { AnalysisResults, ComparisonResults } from '../results.js';
import { lossCurveChart, loadHeatmapChart, partOfSpeechChart, renderSvg, tauChart, throughputChart } from './charts.js';
import { markdownTable } from './format.js';
import { comparisonTable, headline, partOfSpeechTable, scoreSpreadTable, sweepTable, type Table } from './tables.js';

/** What a report folder holds, for callers and tests. */
export interface ReportFiles {
  /** The folder. */
  readonly dir: string;
  /** Paths of report.md, results.json, index.html. */
  readonly markdown: string;
  readonly json: string;
  readonly html: string;
  /** Chart file names (inside `dir/charts`). */
  readonly charts: readonly string[];
}

function settingsTable(settings: Readonly<Record<string, string | number | boolean>>): string {
  return markdownTable(['setting', 'value'], Object.entries(settings).map(([k, v]) => [k, String(v)]));
}

function tableMarkdown(table: Table): string {
  return `### ${table.title}\n\n${markdownTable(table.header, table.rows)}\n`;
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function tableHtml(table: Table): string {
  const head = table.header.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const body = table.rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('\n');
  return `<h3>${escapeHtml(table.title)}</h3>\n<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

interface Section {
  readonly tables: readonly Table[];
  readonly charts: readonly { readonly file: string; readonly title: string; readonly spec: TopLevelSpec }[];
}

async function writeFolder(
  dir: string,
  title: string,
  intro: string,
  settings: Readonly<Record<string, string | number | boolean>>,
  environment: { date: string; backend: string; machine: string; node: string },
  section: Section,
  json: unknown,
): Promise<ReportFiles> {
  await mkdir(join(dir, 'charts'), { recursive: true });
  const svgs = await Promise.all(section.charts.map((c) => renderSvg(c.spec)));
  await Promise.all(section.charts.map((c, i) => writeFileAtomically(join(dir, 'charts', c.file), svgs[i]!)));
  const env = `${environment.date} · ${environment.machine} · Node ${environment.node} · ${environment.backend}`;
  const markdown = [
    `# ${title}`,
    '',
    intro,
    '',
    ...section.tables.map(tableMarkdown),
    '## Charts',
    '',
    ...section.charts.map((c) => `![${c.title}](charts/${c.file})`),
    '',
    '## Settings',
    '',
    settingsTable(settings),
    '',
    `Machine and backend: ${env}`,
    '',
    'Numbers here are formatted from `results.json` in this folder; per-step metrics are in each model\'s `metrics.jsonl`.',
    '',
  ].join('\n');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}figure{margin:1.5em 0}.intro{font-size:1.1em}</style></head>
<body><h1>${escapeHtml(title)}</h1>
<p class="intro">${escapeHtml(intro).replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>')}</p>
${section.tables.map(tableHtml).join('\n')}
${section.charts.map((c, i) => `<figure><figcaption>${escapeHtml(c.title)}</figcaption>${svgs[i]}</figure>`).join('\n')}
<h2>Settings</h2>
${tableHtml({ title: '', header: ['setting', 'value'], rows: Object.entries(settings).map(([k, v]) => [k, String(v)]) })}
<p>${escapeHtml(env)}</p>
</body></html>
`;
  const files: ReportFiles = {
    dir,
    markdown: join(dir, 'report.md'),
    json: join(dir, 'results.json'),
    html: join(dir, 'index.html'),
    charts: section.charts.map((c) => c.file),
  };
  await writeFileAtomically(files.json, `${JSON.stringify(json, null, 2)}\n`);
  await writeFileAtomically(files.markdown, markdown);
  await writeFileAtomically(files.html, html);
  return files;
}

/**
 * Writes the report of `compare` or `run`.
 *
 * @param dir - the run folder (created if needed)
 * @param results - the comparison
 * @returns the files written
 */
export async function writeComparisonReport(dir: string, results: ComparisonResults): Promise<ReportFiles> {
  const charts = [
    { file: 'loss.svg', title: 'Training loss', spec: lossCurveChart(results.models) },
    { file: 'throughput.svg', title: 'Throughput', spec: throughputChart(results.models) },
  ];
  const moepp = results.models.find((m) => m.routing && m.routing.expertKinds.some((k) => k !== 'ffn'));
  if (moepp?.routing) {
    charts.push({ file: 'load.svg', title: `Expert load per layer (${moepp.name})`, spec: loadHeatmapChart(moepp.routing.loadByLayer, moepp.routing.expertKinds) });
  }
  return writeFolder(
    dir,
    results.title,
    headline(results.models),
    results.settings,
    results.environment,
    { tables: [comparisonTable(results.models)], charts },
    results,
  );
}

/**
 * Writes the report of `sweep`: one table per ablation, plus the tau chart when a tau sweep ran.
 *
 * @param dir - the run folder
 * @param sweeps - one comparison per ablation (command `'sweep:<name>'`)
 * @param title - the report title
 * @returns the files written
 */
export async function writeSweepReport(dir: string, sweeps: readonly ComparisonResults[], title: string): Promise<ReportFiles> {
  const first = sweeps[0];
  if (!first) throw new Error('writeSweepReport: no sweep results to write');
  const tables = sweeps.map((s) => sweepTable(s.models, s.title));
  const charts: Section['charts'][number][] = [];
  const tau = sweeps.find((s) => s.command === 'sweep:tau');
  if (tau) {
    const rows = tau.models
      .filter((m) => m.idealSpeedup !== null && m.expert.ratioToMoe !== null)
      .map((m) => ({ tau: Number(m.name.replace('tau=', '')), measured: m.expert.ratioToMoe!, ideal: m.idealSpeedup!, accuracy: m.evaluation.accuracy }));
    charts.push({ file: 'tau.svg', title: 'tau against speed-up and accuracy', spec: tauChart(rows) });
  }
  charts.push({ file: 'loss.svg', title: 'Training loss', spec: lossCurveChart(sweeps.flatMap((s) => s.models)) });
  return writeFolder(
    dir,
    title,
    'Each table trains one model per setting on the same data, seed and token budget; the speed-up is expert-forward throughput over the vanilla MoE trained alongside.',
    first.settings,
    first.environment,
    { tables, charts },
    { command: 'sweep', title, sweeps },
  );
}

/**
 * Writes the report of `analyze`.
 *
 * @param dir - the run folder
 * @param analysis - the analysis results
 * @returns the files written
 */
export async function writeAnalysisReport(dir: string, analysis: AnalysisResults): Promise<ReportFiles> {
  return writeFolder(
    dir,
    analysis.title,
    'Routing of a trained MoE++ model on the Brown corpus, by part of speech, and the spread of routing scores with and without gating residuals.',
    analysis.settings,
    analysis.environment,
    {
      tables: [partOfSpeechTable(analysis), scoreSpreadTable(analysis), comparisonTable(analysis.models, 'Models')],
      charts: [
        { file: 'part-of-speech.svg', title: 'FFN experts per token by part of speech', spec: partOfSpeechChart(analysis.partOfSpeech) },
        { file: 'load.svg', title: 'Expert load per layer', spec: loadHeatmapChart(analysis.load.loadByLayer, analysis.load.expertKinds) },
        { file: 'loss.svg', title: 'Training loss', spec: lossCurveChart(analysis.models) },
      ],
    },
    analysis,
  );
}
