/**
 * `analyze`: the paper's routing analyses on the Brown corpus. Two MoE++ models are trained on Brown
 * (gating residuals on and off); then, on held-out Brown text:
 *
 * - FFN experts per token by part of speech (verbs, nouns, other words, word fragments) and layer;
 * - the spread of the top-1 routing score with and without gating residuals;
 * - the expert load per layer.
 *
 * A word split into several tokens counts its first token under the word's class and the later
 * pieces as word fragments.
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@moepp/tensors-core';
import { encodeTagged, posClassOf, type BrownDocument, type TaggedWord } from '@moepp/data';
import { importCheckpoint, MoeLayer, presetConfig, type DecoderLM } from '@moepp/models';
import type { RunConfig } from './config.js';
import { prepareRunData } from './data.js';
import { describeEnvironment } from './environment.js';
import { reportSettings, STDOUT, trainAll, type Output } from './compare.js';
import { modelFolderName } from './train-model.js';
import type { AnalysisResults, PosAnalysis, ScoreSpread } from './results.js';
import { partOfSpeechTable, scoreSpreadTable } from './report/tables.js';
import { textTable } from './report/format.js';
import { writeAnalysisReport, type ReportFiles } from './report/write.js';

/** The token classes of the part-of-speech analysis. */
export const POS_CLASSES = ['verb', 'noun', 'other', 'fragment'] as const;

/** Per-token routing of one model over the analysis text. */
interface RoutingTrace {
  /** [layer][token] FFN experts used. */
  readonly ffnPerToken: number[][];
  /** [layer][token] top-1 routing probability. */
  readonly topScore: number[][];
  /** [layer][expert] kept assignments. */
  readonly load: number[][];
  readonly kinds: readonly string[];
}

/**
 * Runs a model over token windows and records, per MoE layer and token, the FFN experts used and the
 * top-1 routing score.
 *
 * @param model - a trained model
 * @param ids - int32 token ids, cut into windows of `seqLen`
 * @param seqLen - T
 * @param batchSize - windows per forward pass
 * @returns the trace, over the first `floor(ids.length / seqLen) · seqLen` tokens
 */
export function traceRouting(model: DecoderLM, ids: Int32Array, seqLen: number, batchSize: number): RoutingTrace {
  const layer = model.blocks.find((b) => b.ffn instanceof MoeLayer)?.ffn as MoeLayer | undefined;
  if (!layer) throw new Error('traceRouting: the model has no MoE layer');
  const kinds = layer.kinds;
  const windows = Math.floor(ids.length / seqLen);
  const moeCount = model.blocks.filter((b) => b.ffn instanceof MoeLayer).length;
  const trace: RoutingTrace = {
    ffnPerToken: Array.from({ length: moeCount }, () => []),
    topScore: Array.from({ length: moeCount }, () => []),
    load: Array.from({ length: moeCount }, () => new Array<number>(kinds.length).fill(0)),
    kinds,
  };
  for (let start = 0; start < windows; start += batchSize) {
    const count = Math.min(batchSize, windows - start);
    tf.tidy(() => {
      const tokens = tf.tensor2d(ids.subarray(start * seqLen, (start + count) * seqLen), [count, seqLen], 'int32');
      const out = model.forward(tokens, { auxiliary: false }); // routing only, no aux losses
      out.moeLayers.forEach((report, l) => {
        const indices = report.expertIndices.dataSync();
        const keep = report.keepMask.dataSync();
        const topK = report.expertIndices.shape[1];
        const numTokens = report.expertIndices.shape[0];
        for (let n = 0; n < numTokens; n++) {
          let ffn = 0;
          for (let k = 0; k < topK; k++) {
            const e = indices[n * topK + k]!;
            if (keep[n * topK + k]! > 0) {
              trace.load[l]![e]! += 1;
              if (kinds[e] === 'ffn') ffn += 1;
            }
          }
          trace.ffnPerToken[l]!.push(ffn);
        }
        const top = report.probabilities.max(1).dataSync();
        for (const v of top) trace.topScore[l]!.push(v);
      });
    });
  }
  return trace;
}

function spread(label: string, trace: RoutingTrace): ScoreSpread {
  return {
    label,
    byLayer: trace.topScore.map((scores) => {
      const mean = scores.reduce((a, b) => a + b, 0) / scores.length;
      const variance = scores.reduce((a, b) => a + (b - mean) ** 2, 0) / scores.length;
      return { mean, variance, min: Math.min(...scores), max: Math.max(...scores) };
    }),
  };
}

/**
 * Averages FFN experts per token by token class.
 *
 * @param trace - the routing trace
 * @param classes - the class of each traced token
 * @returns the part-of-speech table
 */
export function partOfSpeech(trace: RoutingTrace, classes: readonly string[]): PosAnalysis {
  const byLayer = trace.ffnPerToken.map((perToken) =>
    POS_CLASSES.map((c) => {
      let sum = 0;
      let n = 0;
      perToken.forEach((v, t) => {
        if (classes[t] === c) {
          sum += v;
          n += 1;
        }
      });
      return n > 0 ? sum / n : 0;
    }),
  );
  return {
    classes: [...POS_CLASSES],
    byLayer,
    mean: POS_CLASSES.map((_, c) => byLayer.reduce((a, row) => a + row[c]!, 0) / byLayer.length),
    counts: POS_CLASSES.map((c) => classes.slice(0, trace.ffnPerToken[0]?.length ?? 0).filter((x) => x === c).length),
  };
}

/**
 * Runs the analysis and writes its report.
 *
 * @param run - the run config (`corpus` is ignored: the analysis needs Brown's tags)
 * @param options - resume and output
 * @returns the analysis and the report's files
 * @throws {@link InterruptedRun} on Ctrl-C
 */
export async function runAnalysis(run: RunConfig, options: { resume?: boolean; output?: Output } = {}): Promise<{ analysis: AnalysisResults; files: ReportFiles }> {
  const output = options.output ?? STDOUT;
  const { log } = output;
  const backend = await initBackend({ backend: run.backend });
  log(`backend: ${backend.summary}`);
  const data = prepareRunData(run, 'brown');
  const vocabSize = data.tokenizer.vocabSize;
  const specs = [
    { name: 'MoE++ (gating residuals on)', variant: 'moepp', config: presetConfig(run.preset, 'moepp', { vocabSize, moe: { ...run.moe, gatingResidual: true } }) },
    { name: 'MoE++ (gating residuals off)', variant: 'moepp', config: presetConfig(run.preset, 'moepp', { vocabSize, moe: { ...run.moe, gatingResidual: false } }) },
  ];
  const models = await trainAll(specs, data, run, options.resume ?? false, output);

  // Held-out Brown words, tagged, as one token stream.
  const words: TaggedWord[] = (data.split.validation as readonly BrownDocument[]).flatMap((d) => d.sentences.flat());
  const encoded = encodeTagged(data.tokenizer, words.map((w) => ({ word: w.word, tag: w.tag })));
  const limit = Math.min(encoded.ids.length, run.validationWindows * run.seqLen);
  const ids = encoded.ids.subarray(0, limit);
  const classes = Array.from({ length: limit }, (_, t) => (encoded.isWordStart[t] ? posClassOf(encoded.tags[t]!) : 'fragment'));

  const traces: RoutingTrace[] = [];
  for (const spec of specs) {
    const model = await importCheckpoint(join(run.out, modelFolderName(spec.name), 'checkpoint'));
    try {
      traces.push(traceRouting(model, ids, run.seqLen, run.batchSize));
    } finally {
      model.dispose();
    }
  }
  const [withResidual, withoutResidual] = traces as [RoutingTrace, RoutingTrace];
  const analysis: AnalysisResults = {
    command: 'analyze',
    title: `Routing analysis on the Brown corpus — preset '${run.preset}'`,
    settings: { ...reportSettings(run, data), 'analysed tokens': limit },
    environment: describeEnvironment(backend.summary),
    partOfSpeech: partOfSpeech(withResidual, classes),
    scoreSpread: [spread('with gating residuals', withResidual), spread('without gating residuals', withoutResidual)],
    load: {
      loadByLayer: withResidual.load.map((row) => {
        const sum = row.reduce((a, b) => a + b, 0);
        return row.map((c) => (sum > 0 ? c / sum : 0));
      }),
      expertKinds: withResidual.kinds,
    },
    models,
  };
  const files = await writeAnalysisReport(run.out, analysis);
  for (const table of [partOfSpeechTable(analysis), scoreSpreadTable(analysis)]) {
    log(`\n${table.title}\n${textTable(table.header, table.rows)}`);
  }
  log(`\nreport: ${files.markdown}`);
  return { analysis, files };
}
