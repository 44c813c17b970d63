/**
 * End-to-end training throughput of the preset models: steps/s and tokens/s of full optimiser steps
 * (batch, forward, backward, clip, AdamW, loss read back) through `Trainer`, on the backend the kit
 * picks (wasm with the kernel fixes unless MOEPP_BACKEND says otherwise). Timing lives here, never in tests.
 *
 *   npx tsx --conditions=source scripts/bench-train.ts [sizes=smoke,tiny] [steps=6] [out.json]
 *
 * Byte-level Moby-Dick, B = 8, T = the preset's maxSeqLen. The first 2 steps are warm-up and not counted;
 * each figure is the median over the measured steps (and the best, less disturbed by other jobs on a
 * shared machine), plus the process CPU time per step, which other jobs disturb less than wall time.
 * Models are untrained, so MoE++ routing is that of a random router (FFN experts per token is printed).
 */
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendChoice } from '@moepp/tensors-core';
import { createModel, presetConfig, PRESET_VARIANTS, type PresetSize } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { Trainer, type StepRecord } from '../src/index.js';

const sizes = (process.argv[2] ?? 'smoke,tiny').split(',') as PresetSize[];
const measured = Number(process.argv[3] ?? 6);
const output = process.argv[4];
const warmup = 2;
const batchSize = 8;

const report = await initBackend({ backend: (process.env.MOEPP_BACKEND as BackendChoice | undefined) ?? 'wasm' });
const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
console.log(`machine: ${machine.cpu} ×${machine.cores}, ${machine.memoryGiB} GiB, Node ${machine.node}; backend ${tf.getBackend()}`);
console.log(JSON.stringify(report));

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const results: Record<string, unknown>[] = [];
for (const size of sizes) {
  for (const variant of PRESET_VARIANTS) {
    const config = presetConfig(size, variant, { vocabSize: 256 });
    const seqLen = config.maxSeqLen;
    const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen, batchSize, seed: 1, validationWindows: 1 });
    const model = createModel(config, 1);
    const records: StepRecord[] = [];
    const cpuMs: number[] = [];
    let cpuBefore = process.cpuUsage();
    const trainer = new Trainer(model, data, { totalSteps: warmup + measured, evalAtStart: false, handleSignals: false });
    await trainer.run({
      progress: 'silent',
      hooks: {
        onStep: (record) => {
          const cpu = process.cpuUsage(cpuBefore);
          cpuBefore = process.cpuUsage();
          if (record.step > warmup) {
            records.push(record);
            cpuMs.push((cpu.user + cpu.system) / 1000);
          }
        },
      },
    });
    trainer.dispose();
    model.dispose();
    const tokens = batchSize * seqLen;
    const stepMs = median(records.map((r) => r.stepMs));
    const bestMs = Math.min(...records.map((r) => r.stepMs));
    const row = {
      size,
      variant,
      batchSize,
      seqLen,
      tokensPerStep: tokens,
      stepMs,
      bestStepMs: bestMs,
      cpuMsPerStep: median(cpuMs),
      stepsPerSecond: 1000 / stepMs,
      tokensPerSecond: (tokens * 1000) / stepMs,
      bestTokensPerSecond: (tokens * 1000) / bestMs,
      expertForwardMs: median(records.map((r) => r.expertForwardMs)),
      ffnExpertsPerToken: records[0]?.ffnExpertsPerToken ?? null,
    };
    results.push(row);
    console.log(
      `${size.padEnd(5)} ${variant.padEnd(5)} B=${batchSize} T=${seqLen}: ${row.stepsPerSecond.toFixed(2)} steps/s, ` +
        `${row.tokensPerSecond.toFixed(0)} tok/s (best ${row.bestTokensPerSecond.toFixed(0)}), step ${stepMs.toFixed(0)} ms ` +
        `(cpu ${row.cpuMsPerStep.toFixed(0)} ms), expert fwd ${row.expertForwardMs.toFixed(1)} ms` +
        (row.ffnExpertsPerToken === null ? '' : `, ffn/tok ${row.ffnExpertsPerToken.toFixed(2)}`),
    );
  }
}
if (output) writeFileSync(output, `${JSON.stringify({ machine, backend: tf.getBackend(), warmup, measured, results }, null, 2)}\n`);
