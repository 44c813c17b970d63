import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError, createModel, fromHfConfig, presetConfig, readSafetensorsFile, writeSafetensorsFile, type DecoderLM } from '@moepp/models';
import { TrainBatcher } from '@moepp/data';
import { CHECKPOINT_FILES, loadCheckpoint, readTrainerState, resolveCheckpointDir, writeCheckpoint } from './checkpoint.js';
import { Trainer } from './trainer.js';
import { temporaryFolder } from './test-helpers.js';

const folder = temporaryFolder();
afterAll(folder.remove);

const stream = Int32Array.from({ length: 2000 }, (_, i) => (i * 7 + (i >> 4)) % 32);
const smoke = presetConfig('smoke', 'moepp', { vocabSize: 32 });

function makeTrainer(seed = 1, variant: 'moepp' | 'moe' = 'moepp'): Trainer {
  const model = createModel(variant === 'moepp' ? smoke : presetConfig('smoke', 'moe', { vocabSize: 32 }), seed);
  const data = { train: new TrainBatcher(stream, { batchSize: 2, seqLen: 8, seed: 3 }), validation: [] };
  return new Trainer(model, data, { totalSteps: 10, leakCheck: false, handleSignals: false });
}

function weights(model: DecoderLM): Float32Array[] {
  return model.parameters().map((p) => Float32Array.from(p.variable.dataSync()));
}

function release(trainer: Trainer): void {
  trainer.dispose();
  trainer.model.dispose();
}

/** Every file of a folder with its bytes, to prove that a failed load changed nothing on disk. */
function snapshot(dir: string): Map<string, string> {
  return new Map(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name)).toString('base64')]));
}

describe('writeCheckpoint / loadCheckpoint', () => {
  it('round-trips weights, optimiser state and trainer state into a fresh model', async () => {
    const source = makeTrainer(1);
    await source.trainStep();
    await source.trainStep();
    const dir = join(folder.dir, 'round-trip');
    await source.saveCheckpoint(dir, 'manual');
    expect(readdirSync(dir).sort()).toEqual(Object.values(CHECKPOINT_FILES).sort());

    const target = makeTrainer(2); // other initial weights
    const { state } = await loadCheckpoint(dir, target.model, target.optimizer);
    expect(weights(target.model)).toEqual(weights(source.model));
    const [a, b] = [source.optimizer.exportState(), target.optimizer.exportState()];
    expect(b.step).toBe(2);
    expect([...b.tensors.keys()]).toEqual([...a.tensors.keys()]);
    for (const [key, array] of a.tensors) expect(b.tensors.get(key)?.data).toEqual(array.data);
    expect(state.step).toBe(2);
    expect(state.history.losses).toHaveLength(2);
    expect(state.dataCursor).toEqual(source.data.train.getCursor());
    release(source);
    release(target);
  });

  it('writes the model in the official Hugging Face layout: names, [out, in] shapes, config.json', async () => {
    const trainer = makeTrainer(1);
    const dir = join(folder.dir, 'layout');
    await trainer.saveCheckpoint(dir);
    const { tensors, metadata } = await readSafetensorsFile(join(dir, CHECKPOINT_FILES.model));
    expect(metadata).toEqual({ format: 'pt' });
    expect(tensors.get('model.embed_tokens.weight')?.shape).toEqual([32, 64]);
    expect(tensors.get('model.layers.0.mlp.moe.experts.experts.0.up_proj.weight')?.shape).toEqual([256, 64]); // PyTorch [2F, D]
    expect(tensors.get('model.layers.0.mlp.moe.gate.wg.weight')?.shape).toEqual([8, 64]); // [E, D]
    expect(tensors.get('lm_head.weight')?.shape).toEqual([32, 64]);
    // Transposed, not reshaped: element [o, i] of the file is element [i, o] of the kit's [in, out] variable.
    const wg = trainer.model.parameters().find((p) => p.name === 'model.layers.0.mlp.moe.gate.wg.weight')!.variable.arraySync() as number[][];
    expect(tensors.get('model.layers.0.mlp.moe.gate.wg.weight')!.data[3 * 64 + 5]).toBe(wg[5]![3]);
    const optimizer = await readSafetensorsFile(join(dir, CHECKPOINT_FILES.optimizer));
    expect(optimizer.metadata.step).toBe('0');
    expect(optimizer.tensors.get('lm_head.weight.exp_avg_sq')?.shape).toEqual([32, 64]);
    const config = fromHfConfig(JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.config), 'utf8')));
    expect(config).toEqual(trainer.model.config);
    const state = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.state), 'utf8'));
    expect(state).toMatchObject({ format: 'moepp-trainer-state', version: 1, step: 0, reason: 'manual' });
    release(trainer);
  });

  it('replaces a checkpoint atomically and leaves no temporary folder behind', async () => {
    const trainer = makeTrainer(1);
    const dir = join(folder.dir, 'replace');
    await trainer.saveCheckpoint(dir);
    await trainer.trainStep();
    await trainer.saveCheckpoint(dir);
    expect((await readTrainerState(dir)).state.step).toBe(1);
    expect(readdirSync(folder.dir).filter((name) => name.startsWith('replace'))).toEqual(['replace']);
    release(trainer);
  });

  it('keeps the previous checkpoint when writing the new one fails', async () => {
    const trainer = makeTrainer(1);
    const dir = join(folder.dir, 'failing');
    await trainer.saveCheckpoint(dir);
    const before = snapshot(dir);
    const state = { ...trainer.trainerState('manual'), savedAt: 1n as unknown as string }; // JSON.stringify throws on BigInt
    await expect(writeCheckpoint(dir, { model: trainer.model, optimizer: trainer.optimizer, state })).rejects.toThrow(CheckpointError);
    expect(snapshot(dir)).toEqual(before);
    expect(readdirSync(folder.dir).filter((name) => name.startsWith('failing'))).toEqual(['failing']);
    release(trainer);
  });

  it('finds <dir>.previous after a crash between the two renames, and a later write cleans up', async () => {
    const trainer = makeTrainer(1);
    const dir = join(folder.dir, 'crashed');
    await trainer.saveCheckpoint(dir);
    renameSync(dir, `${dir}.previous`); // the state a crash after the first rename leaves
    expect(resolveCheckpointDir(dir)).toBe(`${dir}.previous`);
    const other = makeTrainer(2);
    const { dir: read } = await loadCheckpoint(dir, other.model, other.optimizer);
    expect(read).toBe(`${dir}.previous`);
    expect(weights(other.model)).toEqual(weights(trainer.model));
    await trainer.saveCheckpoint(dir);
    expect(existsSync(dir) && !existsSync(`${dir}.previous`)).toBe(true);
    release(trainer);
    release(other);
  });

  it('refuses to replace a folder that is not a checkpoint', async () => {
    const trainer = makeTrainer(1);
    const dir = join(folder.dir, 'not-a-checkpoint');
    mkdirSync(dir);
    writeFileSync(join(dir, 'notes.txt'), 'precious');
    await expect(trainer.saveCheckpoint(dir)).rejects.toThrow(/exists and is not a checkpoint folder; refusing to replace it/);
    expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('precious');
    release(trainer);
  });
});

describe('loadCheckpoint: corrupt or mismatched checkpoints', () => {
  /** Writes a good checkpoint, breaks it, and checks that loading fails naming the file and changes nothing. */
  async function expectRejected(name: string, breakIt: (dir: string) => void | Promise<void>, message: RegExp, variant: 'moepp' | 'moe' = 'moepp') {
    const source = makeTrainer(1);
    await source.trainStep();
    const dir = join(folder.dir, name);
    await source.saveCheckpoint(dir);
    await breakIt(dir);
    const onDisk = snapshot(dir);
    const target = makeTrainer(2, variant);
    const before = weights(target.model);
    const error = await loadCheckpoint(dir, target.model, target.optimizer).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as Error).message).toMatch(message);
    expect(weights(target.model)).toEqual(before); // nothing assigned
    expect(target.optimizer.step).toBe(0);
    expect(snapshot(dir)).toEqual(onDisk); // nothing written
    release(source);
    release(target);
  }

  it('bad JSON in trainer-state.json', () =>
    expectRejected('bad-json', (dir) => writeFileSync(join(dir, CHECKPOINT_FILES.state), '{"format": "moepp-trainer-state", "step": 1,'), /trainer-state.json: is not valid JSON/));

  it('a newer format version', () =>
    expectRejected(
      'newer',
      (dir) => {
        const path = join(dir, CHECKPOINT_FILES.state);
        writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), version: 2 }));
      },
      /trainer-state.json: was written by a newer version of @moepp\/trainers \(format version 2; this one reads 1\)/,
    ));

  it('a different model config', () =>
    expectRejected('other-model', () => undefined, /config.json: the checkpoint's model differs from the model to load into: .*moe.experts.zero: 1 in the checkpoint, 0 in the model/, 'moe'));

  it('a missing tensor', () =>
    expectRejected(
      'missing-tensor',
      async (dir) => {
        const path = join(dir, CHECKPOINT_FILES.model);
        const { tensors } = await readSafetensorsFile(path);
        tensors.delete('model.norm.weight');
        await writeSafetensorsFile(path, Object.fromEntries([...tensors].map(([k, t]) => [k, { dtype: 'F32', shape: t.shape, data: t.data as Float32Array }])));
      },
      /model.safetensors: 1 model parameter tensor\(s\) are missing, e.g. 'model.norm.weight'/,
    ));

  it('a tensor of the wrong shape', () =>
    expectRejected(
      'wrong-shape',
      async (dir) => {
        const path = join(dir, CHECKPOINT_FILES.optimizer);
        const { tensors, metadata } = await readSafetensorsFile(path);
        const entries = [...tensors].map(([k, t]) => [k, { dtype: 'F32', shape: k === 'model.norm.weight.exp_avg' ? [8, 8] : t.shape, data: t.data as Float32Array }] as const);
        await writeSafetensorsFile(path, Object.fromEntries(entries), metadata);
      },
      /optimizer.safetensors: tensor 'model.norm.weight.exp_avg' must have shape \[64\], got \[8, 8\]/,
    ));

  it('a truncated weights file', () =>
    expectRejected(
      'truncated',
      (dir) => truncateSync(join(dir, CHECKPOINT_FILES.model), Math.floor(statSync(join(dir, CHECKPOINT_FILES.model)).size / 2)),
      /model.safetensors/,
    ));

  it('no checkpoint at all', async () => {
    const target = makeTrainer(2);
    await expect(loadCheckpoint(join(folder.dir, 'nothing-here'), target.model, null)).rejects.toThrow(/nothing-here\/trainer-state.json: no checkpoint here/);
    release(target);
  });
});
