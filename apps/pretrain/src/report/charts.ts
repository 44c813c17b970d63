/**
 * Charts as vega-lite specs, rendered to SVG in Node (vega's headless renderer; no browser, no canvas).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ModelResult, PosAnalysis } from '../results.js';

const WIDTH = 520;
const HEIGHT = 260;

/**
 * Renders a vega-lite spec to an SVG string.
 *
 * @param spec - a vega-lite top-level spec with inline data
 * @returns the SVG markup
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Training loss of every model against tokens seen, on one chart. */
export function lossCurveChart(models: readonly ModelResult[]): TopLevelSpec {
  const values = models.flatMap((m) => m.curve.map((p) => ({ model: m.name, tokens: p.tokens, loss: p.loss })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Training loss',
    width: WIDTH,
    height: HEIGHT,
    data: { values },
    mark: { type: 'line', interpolate: 'monotone' },
    encoding: {
      x: { field: 'tokens', type: 'quantitative', title: 'training tokens' },
      y: { field: 'loss', type: 'quantitative', title: 'cross-entropy (nats)', scale: { zero: false } },
      color: { field: 'model', type: 'nominal', sort: models.map((m) => m.name) },
    },
  };
}

/** Training tokens/s and expert-forward tokens/s per model. */
export function throughputChart(models: readonly ModelResult[]): TopLevelSpec {
  const values = models.flatMap((m) => [
    { model: m.name, measure: 'training tokens/s', value: m.training.tokensPerSecond },
    ...(m.routing ? [{ model: m.name, measure: 'expert-forward tokens/s', value: m.expert.tokensPerSecond }] : []),
  ]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Throughput',
    data: { values },
    facet: { column: { field: 'measure', type: 'nominal', title: null } },
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: WIDTH / 2 - 20,
      height: HEIGHT,
      mark: 'bar',
      encoding: {
        x: { field: 'model', type: 'nominal', sort: models.map((m) => m.name), title: null },
        y: { field: 'value', type: 'quantitative', title: 'tokens / s' },
        color: { field: 'model', type: 'nominal', sort: models.map((m) => m.name), legend: null },
      },
    },
  };
}

/** Measured expert speed-up over the MoE against the ideal `1/r`, and accuracy, per tau. */
export function tauChart(rows: readonly { tau: number; measured: number; ideal: number; accuracy: number }[]): TopLevelSpec {
  const speed = rows.flatMap((r) => [
    { tau: r.tau, series: 'measured speed-up', value: r.measured },
    { tau: r.tau, series: 'ideal 1/r', value: r.ideal },
  ]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'tau: expert speed-up and accuracy',
    vconcat: [
      {
        width: WIDTH,
        height: HEIGHT / 1.5,
        data: { values: speed },
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'tau', type: 'quantitative' },
          y: { field: 'value', type: 'quantitative', title: 'speed-up over MoE (×)' },
          color: { field: 'series', type: 'nominal' },
        },
      },
      {
        width: WIDTH,
        height: HEIGHT / 1.5,
        data: { values: rows.map((r) => ({ tau: r.tau, accuracy: r.accuracy })) },
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'tau', type: 'quantitative' },
          y: { field: 'accuracy', type: 'quantitative', title: 'next-token accuracy', scale: { zero: false } },
        },
      },
    ],
  };
}

/** Mean FFN experts per token by part of speech, one bar group per MoE layer. */
export function partOfSpeechChart(pos: PosAnalysis): TopLevelSpec {
  const values = pos.byLayer.flatMap((row, layer) => row.map((v, c) => ({ layer: `layer ${layer}`, class: pos.classes[c], value: v })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'FFN experts per token by part of speech',
    data: { values },
    width: WIDTH,
    height: HEIGHT,
    mark: 'bar',
    encoding: {
      x: { field: 'layer', type: 'nominal', title: null },
      xOffset: { field: 'class', type: 'nominal', sort: [...pos.classes] },
      y: { field: 'value', type: 'quantitative', title: 'FFN experts per token' },
      color: { field: 'class', type: 'nominal', sort: [...pos.classes] },
    },
  };
}

/** Share of routed slots per expert (columns) and MoE layer (rows). */
export function loadHeatmapChart(loadByLayer: readonly (readonly number[])[], expertKinds: readonly string[]): TopLevelSpec {
  const values = loadByLayer.flatMap((row, layer) =>
    row.map((share, e) => ({ layer: `layer ${layer}`, expert: `${e} ${expertKinds[e] ?? ''}`.trim(), share })),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Expert load per layer (share of routed slots)',
    data: { values },
    width: Math.max(200, 36 * (expertKinds.length || 1)),
    height: Math.max(60, 28 * loadByLayer.length),
    mark: 'rect',
    encoding: {
      x: { field: 'expert', type: 'ordinal', sort: null, title: 'expert' },
      y: { field: 'layer', type: 'ordinal', sort: null, title: null },
      color: { field: 'share', type: 'quantitative', scale: { scheme: 'blues' } },
    },
  };
}
