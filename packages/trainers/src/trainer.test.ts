import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';
import { CheckpointError, createModel, presetConfig, type DecoderLM, type PresetVariant } from '@moepp/models';
import { prepareTextData } from '@moepp/data';
import { CHECKPOINT_FILES, readTrainerState } from './checkpoint.js';
import { NonFiniteLossError, TensorLeakError } from './guards.js';
import { readMetricsFile, type StepRecord } from './metrics.js';
import { Trainer, train } from './trainer.js';
import type { TrainConfigInput } from './config.js';
import { captureStream, temporaryFolder } from './test-helpers.js';

const folder = temporaryFolder();
afterAll(folder.remove);

/** Byte-level Moby-Dick in windows of T = 32, B = 4: small steps for testing the loop's mechanics. */
const makeData = (batchSize = 4) =>
  prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 32, batchSize, seed: 7, validationWindows: 8 });
const makeModel = (seed = 1, variant: PresetVariant = 'moepp') => createModel(presetConfig('smoke', variant, { vocabSize: 256 }), seed);
const base: TrainConfigInput = { totalSteps: 8, schedule: { peakLr: 2e-3, minLr: 2e-4, warmupSteps: 2 }, handleSignals: false };

function weights(model: DecoderLM): Float32Array[] {
  return model.parameters().map((p) => Float32Array.from(p.variable.dataSync()));
}

function snapshot(dir: string): Map<string, string> {
  return new Map(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name)).toString('base64')]));
}

function maxAbsDifference(a: readonly number[], b: readonly number[]): number {
  expect(a).toHaveLength(b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - (b[i] as number))));
}

describe('Trainer: resume', () => {
  it('training to a crash, resuming in a fresh model and trainer, gives the loss curve of a straight run', async () => {
    const config: TrainConfigInput = { ...base, evalInterval: 4, checkpointInterval: 2 };

    // Straight: 8 steps.
    const straightModel = makeModel(1);
    const straight = await train(straightModel, makeData(), { ...config, checkpointDir: join(folder.dir, 'straight'), metricsPath: join(folder.dir, 'straight.jsonl') }, { progress: 'silent' });
    expect(straight.stopReason).toBe('completed');
    expect(straight.losses).toHaveLength(8);

    // Interrupted: a crash during step 5's hook, after its metrics line; the last checkpoint holds step 4.
    const dir = join(folder.dir, 'resumed');
    const metricsPath = join(folder.dir, 'resumed.jsonl');
    const crashingModel = makeModel(1);
    const crash = train(crashingModel, makeData(), { ...config, checkpointDir: dir, metricsPath }, {
      progress: 'silent',
      hooks: {
        onStep: (record) => {
          if (record.step === 5) throw new Error('simulated crash');
        },
      },
    });
    await expect(crash).rejects.toThrow('simulated crash');
    expect((await readTrainerState(dir)).state.step).toBe(4);
    expect(readMetricsFile(metricsPath).filter((r) => r.type === 'step').map((r) => r.step)).toEqual([1, 2, 3, 4, 5]);
    crashingModel.dispose();

    // Resumed in a fresh process-alike: other initial weights, fresh data and trainer.
    const resumedModel = makeModel(99);
    const resumed = await train(resumedModel, makeData(), { ...config, checkpointDir: dir, metricsPath }, { progress: 'silent', resumeFrom: dir });
    expect(resumed.stopReason).toBe('completed');
    expect(resumed.step).toBe(8);
    expect(maxAbsDifference(resumed.losses, straight.losses)).toBeLessThanOrEqual(1e-5);
    expect(resumed.evals.map((e) => e.step)).toEqual([0, 4, 8]);
    expect(maxAbsDifference(resumed.evals.map((e) => e.loss), straight.evals.map((e) => e.loss))).toBeLessThanOrEqual(1e-5);
    const finalDifference = Math.max(...weights(resumedModel).map((w, i) => maxAbsDifference(Array.from(w), Array.from(weights(straightModel)[i]!))));
    expect(finalDifference).toBeLessThanOrEqual(1e-5);

    // metrics.jsonl: the crashed run's step 5 was dropped and logged again; every step once, in order.
    const records = readMetricsFile(metricsPath);
    expect(records.filter((r) => r.type === 'step').map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(records.filter((r) => r.type === 'start').map((r) => r.step)).toEqual([0, 4]);
    const step = records.find((r): r is StepRecord => r.type === 'step' && r.step === 6)!;
    expect(step.loss).toBeCloseTo(straight.losses[5]!, 5);
    expect(step.tokens).toBe(4 * 32);
    expect(step.tokensPerExpert).toHaveLength(2); // [L_moe][E]
    expect(step.tokensPerExpert[0]!.reduce((a, b) => a + b, 0)).toBe(4 * 32 * 2); // every token's K = 2 slots
    expect(step.ffnExpertsPerTokenByLayer).toHaveLength(2);
    expect(step.expertForwardMs).toBeGreaterThan(0);
    expect(step.expertTokensPerSecond).toBeGreaterThan(0);
    expect(step.gradNorm).toBeGreaterThan(0);
    expect((await readTrainerState(dir)).state).toMatchObject({ step: 8, reason: 'final' });
    straightModel.dispose();
    resumedModel.dispose();
  });

  it('never touches a checkpoint it cannot resume: other config, other model, corrupt file', async () => {
    const dir = join(folder.dir, 'guarded');
    const model = makeModel(1);
    await train(model, makeData(), { ...base, checkpointDir: dir, stopAtStep: undefined } as TrainConfigInput, { progress: 'silent', stopAtStep: 2 });
    const onDisk = snapshot(dir);

    const attempt = async (config: TrainConfigInput, variant: PresetVariant = 'moepp') => {
      const fresh = makeModel(5, variant);
      const error = await train(fresh, makeData(), { ...config, checkpointDir: dir }, { progress: 'silent', resumeFrom: dir }).catch((e: unknown) => e);
      fresh.dispose();
      expect(snapshot(dir)).toEqual(onDisk);
      return error as Error;
    };
    expect((await attempt({ ...base, totalSteps: 9 })).message).toMatch(/trainer-state.json: the checkpoint belongs to a run with another config: totalSteps: 8 in the checkpoint, 9 now/);
    const otherModel = await attempt(base, 'moe');
    expect(otherModel).toBeInstanceOf(CheckpointError);
    expect(otherModel.message).toMatch(/config.json: the checkpoint's model differs/);
    writeFileSync(join(dir, CHECKPOINT_FILES.state), '{ not json');
    const corrupt = snapshot(dir);
    const error = await train(makeModel(5), makeData(), { ...base, checkpointDir: dir }, { progress: 'silent', resumeFrom: dir }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/guarded\/trainer-state.json: is not valid JSON/);
    expect(snapshot(dir)).toEqual(corrupt);
    // A fresh run does not overwrite an existing checkpoint either.
    await expect(train(makeModel(5), makeData(), { ...base, checkpointDir: dir }, { progress: 'silent' })).rejects.toThrow(/already exists; resume from it/);
    expect(snapshot(dir)).toEqual(corrupt);
    model.dispose();
  });
});

describe('Trainer: guards', () => {
  it('stops on a NaN loss naming the step and the terms, keeping the last good checkpoint', async () => {
    const dir = join(folder.dir, 'nan');
    const model = makeModel(1);
    let goodCheckpoint: Map<string, string> | null = null;
    const run = train(model, makeData(), { ...base, checkpointDir: dir, checkpointInterval: 2 }, {
      progress: 'silent',
      hooks: {
        onCheckpoint: (info) => {
          if (info.step === 2) goodCheckpoint = snapshot(info.dir);
        },
        onStep: (record) => {
          if (record.step === 3) tf.tidy(() => model.embedding.assign(tf.fill(model.embedding.shape, Number.NaN))); // the weights go bad
        },
      },
    });
    const error = (await run.catch((e: unknown) => e)) as NonFiniteLossError;
    expect(error).toBeInstanceOf(NonFiniteLossError);
    expect(error.kind).toBe('loss');
    expect(error.step).toBe(4);
    expect(error.message).toMatch(/the loss is not finite at step 4 \(total NaN, cross-entropy NaN, load balance .*, z-loss .*, lr .*\); stopped before the update, no checkpoint written; the last checkpoint \(step 2\) is left as it was/);
    expect(snapshot(dir)).toEqual(goodCheckpoint);
    expect((await readTrainerState(dir)).state.step).toBe(2);
    model.dispose();
  });

  it('stops when a learning rate of 1e30 blows the gradients up', async () => {
    const model = makeModel(1);
    const error = (await train(model, makeData(), { ...base, schedule: { peakLr: 1e30, minLr: 0, warmupSteps: 0 } }, { progress: 'silent' }).catch(
      (e: unknown) => e,
    )) as NonFiniteLossError;
    expect(error).toBeInstanceOf(NonFiniteLossError);
    // Step 1's update makes the weights ~1e30: step 2's forward still normalises them to a finite loss,
    // but its gradients overflow, so the guard on the gradient norm fires before the update.
    expect(error.step).toBe(2);
    expect(error.kind).toBe('gradient');
    expect(error.message).toMatch(/the gradient norm is not finite at step 2 \(total [\d.]+, cross-entropy [\d.]+, load balance [\d.]+, z-loss [\d.]+, grad norm NaN, lr 9.5e\+29\); stopped before the update/);
    model.dispose();
  });

  it('catches a hook that leaks a tensor every step', async () => {
    const model = makeModel(1);
    const leaked: tf.Tensor[] = [];
    const error = (await train(model, makeData(), base, { progress: 'silent', hooks: { onStep: () => void leaked.push(tf.ones([2])) } }).catch(
      (e: unknown) => e,
    )) as TensorLeakError;
    expect(error).toBeInstanceOf(TensorLeakError);
    expect(error.step).toBe(3); // the first step after the 2 warm-up steps
    expect(error.current - error.baseline).toBe(1);
    expect(error.message).toMatch(/1 tensor\(s\) leaked: \d+ live tensors after step 3/);
    tf.dispose(leaked);
    model.dispose();
  });
});

describe('Trainer: SIGINT, freezing, accumulation', () => {
  it('on SIGINT finishes the step, writes a checkpoint, stops and removes its handler', async () => {
    const dir = join(folder.dir, 'sigint');
    const model = makeModel(1);
    const listenersBefore = process.listeners('SIGINT');
    const { stream, text } = captureStream();
    const result = await train(model, makeData(), { ...base, handleSignals: true, checkpointDir: dir }, {
      progress: 'lines',
      progressStream: stream,
      hooks: {
        onStep: (record) => {
          if (record.step !== 2) return;
          const ours = process.listeners('SIGINT').filter((listener) => !listenersBefore.includes(listener));
          expect(ours).toHaveLength(1);
          // What Ctrl-C calls (emitting the signal would also reach the test runner's handlers). Twice at once,
          // as when a wrapper relays the terminal's signal: still one graceful stop, not a kill.
          (ours[0] as () => void)();
          (ours[0] as () => void)();
        },
      },
    });
    expect(result.stopReason).toBe('interrupted');
    expect(result.step).toBe(2);
    expect(result.checkpointDir).toBe(dir);
    expect((await readTrainerState(dir)).state).toMatchObject({ step: 2, reason: 'interrupt' });
    expect(process.listeners('SIGINT')).toEqual(listenersBefore);
    expect(text()).toMatch(/SIGINT: finishing the current step[\s\S]*Interrupted after step 2; checkpoint in .*sigint/);
    model.dispose();
  });

  it('trains only the parameters that are not frozen', async () => {
    const model = makeModel(1);
    const frozen = ['model.embed_tokens.weight', 'model.layers.*.self_attn.*'];
    const before = new Map(model.parameters().map((p) => [p.name, Float32Array.from(p.variable.dataSync())]));
    const trainer = new Trainer(model, makeData(), { ...base, totalSteps: 2, schedule: { warmupSteps: 0 }, frozen });
    expect(trainer.frozen.map((p) => p.name)).toHaveLength(1 + 2 * 4);
    expect(trainer.optimizer.parameterNames).not.toContain('model.embed_tokens.weight');
    await trainer.run({ progress: 'silent' });
    for (const p of model.parameters()) {
      const unchanged = Array.from(p.variable.dataSync()).every((v, i) => v === before.get(p.name)![i]);
      expect(unchanged, p.name).toBe(trainer.frozen.some((f) => f.name === p.name));
    }
    trainer.dispose();
    expect(() => new Trainer(model, makeData(), { ...base, frozen: ['model.layer.*'] })).toThrow(/frozen pattern 'model.layer.\*' matches no parameter/);
    expect(() => new Trainer(model, makeData(), { ...base, frozen: ['*'] })).toThrow(ConfigError);
    model.dispose();
  });

  it('accumulating 2 micro-batches of 2 equals one batch of 4 (dense model)', async () => {
    const run = async (batchSize: number, accumulationSteps: number) => {
      const model = makeModel(3, 'dense');
      const result = await train(model, makeData(batchSize), { ...base, totalSteps: 3, accumulationSteps, evalAtStart: false }, { progress: 'silent' });
      const final = weights(model);
      model.dispose();
      return { result, final };
    };
    const accumulated = await run(2, 2);
    const whole = await run(4, 1);
    expect(accumulated.result.lastStep?.tokens).toBe(4 * 32);
    expect(maxAbsDifference(accumulated.result.losses, whole.result.losses)).toBeLessThan(1e-4);
    expect(maxAbsDifference(Array.from(accumulated.final[1]!), Array.from(whole.final[1]!))).toBeLessThan(1e-4);
  });

  it('validates its inputs', async () => {
    const model = makeModel(1);
    const data = makeData();
    expect(() => new Trainer(model, { train: data.train } as never, base)).toThrow(/'data' must have 'train'/);
    expect(() => new Trainer(createModel({ ...presetConfig('smoke', 'dense', { vocabSize: 256 }), maxSeqLen: 16 }), data, base)).toThrow(
      /data seqLen 32 exceeds the model's maxSeqLen 16/,
    );
    const trainer = new Trainer(model, data, base);
    await expect(trainer.run({ stopAtStep: 9, progress: 'silent' })).rejects.toThrow(/'stopAtStep' must be an integer >= 0 <= 8, got 9/);
    await expect(trainer.saveCheckpoint(null)).rejects.toThrow(/no folder given/);
    trainer.dispose();
    expect(existsSync(join(folder.dir, 'nothing'))).toBe(false);
    model.dispose();
  });
});
