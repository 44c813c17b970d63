import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { DecoderLM, createModel } from '../decoder.js';
import { MoeLayer } from '../moe-layer.js';
import { presetConfig } from '../presets.js';
import type { ModelConfig, ModelConfigInput } from '../config.js';
import {
  CHECKPOINT_FORMAT_VERSION,
  assignModelWeights,
  exportCheckpoint,
  fromTorchLayout,
  importCheckpoint,
  matchModelWeights,
  modelToSafetensors,
  toTorchLayout,
  torchShape,
} from './hf-checkpoint.js';
import { CheckpointError, readSafetensorsFile, writeSafetensorsFile, type DecodedSafetensors, type DecodedTensor, type SafetensorsInput } from './safetensors.js';

// Fault injection for the atomicity tests: a failing rename into the final folder, a weights write that
// fails half-way. Both delegate to the real functions unless a test arms them.
const faults = vi.hoisted(() => ({ failRenameInto: null as string | null, failWeightsWrite: false }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const rename = async (from: string, to: string): Promise<void> => {
    if (faults.failRenameInto !== null && to === faults.failRenameInto && from.endsWith('.tmp')) {
      throw Object.assign(new Error('injected: rename failed'), { code: 'EIO' });
    }
    return actual.rename(from, to);
  };
  return { ...actual, rename, default: { ...actual, rename } };
});

vi.mock('./safetensors.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('./safetensors.js')>();
  const { writeFile: write } = await import('node:fs/promises');
  return {
    ...actual,
    writeSafetensorsFile: async (...args: Parameters<typeof actual.writeSafetensorsFile>): Promise<void> => {
      if (faults.failWeightsWrite) {
        await write(args[0], 'half a checkpoint');
        throw new actual.CheckpointError('injected: disk full');
      }
      return actual.writeSafetensorsFile(...args);
    },
  };
});

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'moepp-checkpoint-'));
  faults.failRenameInto = null;
  faults.failWeightsWrite = false;
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const VOCAB = 64;

/** `[2, 7]` int32 tokens drawn from a seed. */
function tokenBatch(vocabSize: number, seed: number): tf.Tensor2D {
  const rng = new SeededRandom(seed);
  return tf.tensor2d(Array.from({ length: 14 }, () => rng.int(vocabSize)), [2, 7], 'int32');
}

function logitsOf(model: DecoderLM, tokens: tf.Tensor2D): Float32Array {
  const logits = tf.tidy(() => model.forward(tokens).logits);
  const values = logits.dataSync() as Float32Array;
  logits.dispose();
  return values;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

/** Bitwise equality of two float arrays; reports the first difference. */
function expectSameValues(actual: Float32Array | undefined, expected: Float32Array, label: string): void {
  expect(actual, label).toBeInstanceOf(Float32Array);
  expect(actual!.length, label).toBe(expected.length);
  const first = actual!.findIndex((value, i) => !Object.is(value, expected[i]));
  expect(first, `${label}: first difference at element ${first}`).toBe(-1);
}

/** Every parameter's values by name (tfjs layout). */
function parameterValues(model: DecoderLM): Map<string, Float32Array> {
  return new Map(model.parameters().map((p) => [p.name, p.variable.dataSync() as Float32Array]));
}

/** A checkpoint's tensors in PyTorch layout, by name. */
async function fileTensors(path: string): Promise<Map<string, DecodedTensor>> {
  return (await readSafetensorsFile(path)).tensors;
}

/** Rewrites a checkpoint's weights as a plain float32 file without the kit's metadata (as another tool would). */
async function rewriteWeights(
  dir: string,
  edit: (tensors: Record<string, SafetensorsInput>) => void,
): Promise<void> {
  const path = join(dir, 'model.safetensors');
  const tensors: Record<string, SafetensorsInput> = {};
  for (const [name, t] of await fileTensors(path)) tensors[name] = { dtype: 'F32', shape: t.shape, data: t.data as Float32Array };
  edit(tensors);
  await writeSafetensorsFile(path, tensors);
}

/** Hand-built safetensors bytes: tensors of any dtype from raw little-endian bytes. */
function buildSafetensors(entries: readonly { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const entry of entries) {
    header[entry.name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [offset, offset + entry.bytes.length] };
    offset += entry.bytes.length;
  }
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const entry of entries) {
    out.set(entry.bytes, at);
    at += entry.bytes.length;
  }
  return out;
}

function f32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
}

/** Rounds toward zero to bfloat16 and returns [the float32 value it stands for, the BF16 bytes]. */
function toBf16(values: Float32Array): [Float32Array, Uint8Array] {
  const bits = new Uint32Array(Float32Array.from(values).buffer);
  const rounded = new Uint32Array(bits.length);
  const bytes = new Uint8Array(2 * bits.length);
  bits.forEach((b, i) => {
    rounded[i] = b & 0xffff0000;
    bytes[2 * i] = (b >>> 16) & 0xff;
    bytes[2 * i + 1] = (b >>> 24) & 0xff;
  });
  return [new Float32Array(rounded.buffer), bytes];
}

/** F16 bytes of values that float16 holds exactly (normal range, at most 10 mantissa bits). */
function toF16(values: Float32Array): Uint8Array {
  const bits = new Uint32Array(Float32Array.from(values).buffer);
  const bytes = new Uint8Array(2 * bits.length);
  bits.forEach((b, i) => {
    const exponent = ((b >>> 23) & 0xff) - 127 + 15;
    if (exponent <= 0 || exponent >= 31 || (b & 0x1fff) !== 0) throw new Error(`${values[i]} is not exact in float16`);
    const half = ((b >>> 16) & 0x8000) | (exponent << 10) | ((b >>> 13) & 0x3ff);
    bytes[2 * i] = half & 0xff;
    bytes[2 * i + 1] = half >>> 8;
  });
  return bytes;
}

/** Imports and expects an error of `type` whose message matches every pattern; checks no tensor leaked. */
async function expectImportError(dir: string, type: typeof CheckpointError | typeof ConfigError, ...patterns: (RegExp | string)[]): Promise<string> {
  const before = tf.memory().numTensors;
  let caught: unknown;
  try {
    const model = await importCheckpoint(dir);
    model.dispose();
  } catch (error) {
    caught = error;
  }
  expect(tf.memory().numTensors, 'a failed import leaked tensors').toBe(before);
  expect(caught, 'import should have failed').toBeInstanceOf(type);
  const message = (caught as Error).message;
  for (const pattern of patterns) {
    if (typeof pattern === 'string') expect(message).toContain(pattern);
    else expect(message).toMatch(pattern);
  }
  return message;
}

/** The official parameter names and PyTorch shapes, written out from the official modelling code by hand. */
function officialShapes(c: {
  vocab: number;
  dim: number;
  ffnDim: number;
  layers: number;
  ffnExperts: number;
  constants: number;
  zeroComputation: number;
  twoLayerGate: boolean;
  gateMap: boolean;
  tied: boolean;
  denseFfnDim?: number;
}): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const experts = c.ffnExperts + c.zeroComputation;
  shapes.set('model.embed_tokens.weight', [c.vocab, c.dim]);
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    for (const proj of ['q', 'k', 'v', 'o']) shapes.set(`${p}.self_attn.${proj}_proj.weight`, [c.dim, c.dim]);
    shapes.set(`${p}.input_layernorm.weight`, [c.dim]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [c.dim]);
    if (c.denseFfnDim !== undefined) {
      shapes.set(`${p}.mlp.gate_proj.weight`, [c.denseFfnDim, c.dim]);
      shapes.set(`${p}.mlp.up_proj.weight`, [c.denseFfnDim, c.dim]);
      shapes.set(`${p}.mlp.down_proj.weight`, [c.dim, c.denseFfnDim]);
      continue;
    }
    const m = `${p}.mlp.moe`;
    if (c.twoLayerGate) {
      shapes.set(`${m}.gate.wg.0.weight`, [8 * experts, c.dim]);
      shapes.set(`${m}.gate.wg.2.weight`, [experts, 8 * experts]);
    } else {
      shapes.set(`${m}.gate.wg.weight`, [experts, c.dim]);
    }
    if (c.gateMap) shapes.set(`${m}.gate.gate_map.weight`, [experts, experts]);
    for (let e = 0; e < c.ffnExperts; e++) {
      shapes.set(`${m}.experts.experts.${e}.up_proj.weight`, [2 * c.ffnDim, c.dim]);
      shapes.set(`${m}.experts.experts.${e}.down_proj.weight`, [c.dim, c.ffnDim]);
    }
    for (let e = c.ffnExperts; e < c.ffnExperts + c.constants; e++) {
      shapes.set(`${m}.experts.experts.${e}.constant`, [c.dim]);
      shapes.set(`${m}.experts.experts.${e}.wg.weight`, [2, c.dim]);
    }
  }
  shapes.set('model.norm.weight', [c.dim]);
  if (!c.tied) shapes.set('lm_head.weight', [c.vocab, c.dim]);
  return shapes;
}

const smokeMoepp = () => presetConfig('smoke', 'moepp', { vocabSize: VOCAB });

const ROUND_TRIPS: [string, ModelConfig | ModelConfigInput][] = [
  ['dense', presetConfig('smoke', 'dense', { vocabSize: VOCAB })],
  ['vanilla MoE', presetConfig('smoke', 'moe', { vocabSize: VOCAB })],
  ['MoE++', presetConfig('smoke', 'moepp', { vocabSize: VOCAB })],
  [
    'MoE++ with tied embeddings and a two-layer gate',
    { ...presetConfig('smoke', 'moepp', { vocabSize: VOCAB, moe: { twoLayerGate: true } }), tieEmbeddings: true },
  ],
  [
    'MoE++ every second block, top-1, Mixtral gating, input scaled by K',
    {
      vocabSize: 40,
      hiddenSize: 16,
      intermediateSize: 24,
      numLayers: 4,
      numHeads: 2,
      maxSeqLen: 16,
      moe: { interval: 2, topK: 1, mixtralGating: true, scaleInputByTopK: true, logitsNorm: false, experts: { ffn: 3, zero: 2, copy: 0, constant: 1 } },
    },
  ],
];

describe('exportCheckpoint / importCheckpoint: round trip', () => {
  it.each(ROUND_TRIPS)('%s: same config, same parameters, same logits', async (_, config) => {
    const model = createModel(config, 7);
    const dir = join(root, 'checkpoint');
    await exportCheckpoint(model, dir);
    const imported = await importCheckpoint(dir);
    const tokens = tokenBatch(model.config.vocabSize, 3);
    try {
      expect(imported.config).toEqual(model.config);
      // The import really overwrote the initial weights: a fresh seed-0 model gives other logits.
      const fresh = createModel(model.config, 0);
      expect(maxAbsDiff(logitsOf(fresh, tokens), logitsOf(model, tokens))).toBeGreaterThan(1e-3);
      fresh.dispose();
      expect(maxAbsDiff(logitsOf(imported, tokens), logitsOf(model, tokens))).toBeLessThanOrEqual(1e-6);
      const expected = parameterValues(model);
      const actual = parameterValues(imported);
      expect([...actual.keys()]).toEqual([...expected.keys()]);
      for (const [name, values] of expected) expectSameValues(actual.get(name), values, name);
    } finally {
      tf.dispose(tokens);
      model.dispose();
      imported.dispose();
    }
  });

  it('writes exactly the official names and PyTorch shapes (MoE++), float32, with the kit metadata', async () => {
    const model = createModel(smokeMoepp(), 1);
    const dir = join(root, 'moepp');
    await exportCheckpoint(model, dir, { metadata: { step: '1200' } });
    const decoded = await readSafetensorsFile(join(dir, 'model.safetensors'));
    const expected = officialShapes({ vocab: VOCAB, dim: 64, ffnDim: 128, layers: 2, ffnExperts: 4, constants: 2, zeroComputation: 4, twoLayerGate: false, gateMap: true, tied: false });
    const actual = new Map([...decoded.tensors].map(([name, t]) => [name, t.shape]));
    expect(new Map([...actual].sort())).toEqual(new Map([...expected].sort()));
    expect([...decoded.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
    expect(decoded.metadata).toMatchObject({ format: 'pt', moepp_kit_version: '0.1.0', moepp_kit_format_version: String(CHECKPOINT_FORMAT_VERSION), step: '1200' });
    expect(decoded.metadata.moepp_kit_sha256).toMatch(/^[0-9a-f]{64}$/);

    // By hand: PyTorch up_proj.weight [2F, D] is the transpose of the kit's upProj [D, 2F].
    const layer = model.blocks[1]!.ffn as MoeLayer;
    const upProj = layer.experts[3]!.weights.upProj!.arraySync() as number[][]; // [D, 2F]
    const file = decoded.tensors.get('model.layers.1.mlp.moe.experts.experts.3.up_proj.weight')!;
    expect(file.shape).toEqual([256, 64]);
    for (const [row, col] of [[0, 0], [200, 5], [255, 63], [17, 40]] as const) {
      expect(file.data[row * 64 + col]).toBe(upProj[col]![row]);
    }
    const constant = decoded.tensors.get('model.layers.0.mlp.moe.experts.experts.5.constant')!;
    const firstLayer = model.blocks[0]!.ffn as MoeLayer;
    expect(constant.shape).toEqual([64]);
    expect(Array.from(constant.data)).toEqual(Array.from(firstLayer.experts[5]!.weights.constant!.dataSync()));
    const constantWg = decoded.tensors.get('model.layers.0.mlp.moe.experts.experts.4.wg.weight')!; // [2, D]
    const kitWg = firstLayer.experts[4]!.weights.wg!.arraySync() as number[][]; // [D, 2]
    expect(constantWg.data[1 * 64 + 10]).toBe(kitWg[10]![1]);
    const gateMap = decoded.tensors.get('model.layers.1.mlp.moe.gate.gate_map.weight')!; // [E, E], [out, in]
    const kitGateMap = layer.router.weights.gateMap!.arraySync() as number[][]; // [in, out]
    expect(gateMap.data[2 * 8 + 6]).toBe(kitGateMap[6]![2]);
    model.dispose();
  });

  it('names a dense model MLP as LLaMA does and leaves lm_head out when tied; two-layer gates are wg.0 / wg.2', async () => {
    const dense = createModel(presetConfig('smoke', 'dense', { vocabSize: VOCAB }), 1);
    await exportCheckpoint(dense, join(root, 'dense'));
    const denseShapes = new Map([...(await fileTensors(join(root, 'dense', 'model.safetensors')))].map(([n, t]) => [n, t.shape]));
    const expectedDense = officialShapes({ vocab: VOCAB, dim: 64, ffnDim: 0, layers: 2, ffnExperts: 0, constants: 0, zeroComputation: 0, twoLayerGate: false, gateMap: false, tied: false, denseFfnDim: 512 });
    expect(new Map([...denseShapes].sort())).toEqual(new Map([...expectedDense].sort()));
    dense.dispose();

    const config = { vocabSize: 30, hiddenSize: 32, intermediateSize: 16, numLayers: 2, numHeads: 2, maxSeqLen: 8, tieEmbeddings: true, moe: { twoLayerGate: true, experts: { ffn: 2, zero: 1, copy: 1, constant: 2 } } };
    const moepp = createModel(config, 2);
    await exportCheckpoint(moepp, join(root, 'tied'));
    const shapes = new Map([...(await fileTensors(join(root, 'tied', 'model.safetensors')))].map(([n, t]) => [n, t.shape]));
    const expected = officialShapes({ vocab: 30, dim: 32, ffnDim: 16, layers: 2, ffnExperts: 2, constants: 2, zeroComputation: 4, twoLayerGate: true, gateMap: true, tied: true });
    expect(new Map([...shapes].sort())).toEqual(new Map([...expected].sort()));
    expect(shapes.get('model.layers.0.mlp.moe.gate.wg.0.weight')).toEqual([48, 32]);
    expect(shapes.has('lm_head.weight')).toBe(false);
    moepp.dispose();
  });

  it('writes config.json with the official fields and moepp_kit.json with the versions', async () => {
    const model = createModel(smokeMoepp(), 1);
    await exportCheckpoint(model, join(root, 'c'));
    const config = JSON.parse(await readFile(join(root, 'c', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({
      model_type: 'MoE++',
      architectures: ['MoeForCausalLM'],
      vocab_size: VOCAB,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      max_position_embeddings: 64,
      num_experts: [8],
      moe_expert_interval: 1,
      moe_use_mixtral_gating: false,
      moe_2layer_gate: false,
      moe_use_logits_norm: true,
      moe_gate_norm_std: 1,
      moe_feature_no_mul_topk: true,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      tie_word_embeddings: false,
      hidden_act: 'silu',
    });
    const kit = JSON.parse(await readFile(join(root, 'c', 'moepp_kit.json'), 'utf8')) as Record<string, unknown>;
    expect(kit).toMatchObject({ package: '@moepp/models', version: '0.1.0', format_version: CHECKPOINT_FORMAT_VERSION, weights: 'model.safetensors' });
    expect((await readdir(join(root, 'c'))).sort()).toEqual(['config.json', 'model.safetensors', 'moepp_kit.json']);
    model.dispose();
  });

  it('neither export nor import leaks tensors', async () => {
    const model = createModel(smokeMoepp(), 4);
    const dir = join(root, 'leak');
    const before = tf.memory().numTensors;
    await exportCheckpoint(model, dir);
    expect(tf.memory().numTensors).toBe(before);
    const imported = await importCheckpoint(dir);
    imported.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('accepts BF16 tensors (converted exactly) and ignores rotary inv_freq buffers', async () => {
    const model = createModel(smokeMoepp(), 5);
    const dir = join(root, 'bf16');
    await exportCheckpoint(model, dir);
    const expected = new Map<string, Float32Array>();
    const entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[] = [];
    for (const [name, t] of await fileTensors(join(dir, 'model.safetensors'))) {
      const [rounded, bytes] = toBf16(t.data as Float32Array);
      expected.set(name, rounded);
      entries.push({ name, dtype: 'BF16', shape: t.shape, bytes });
    }
    entries.push({ name: 'model.layers.1.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [16], bytes: f32Bytes(new Float32Array(16).fill(0.5)) });
    await writeFile(join(dir, 'model.safetensors'), buildSafetensors(entries));
    const imported = await importCheckpoint(dir);
    for (const p of imported.parameters()) {
      const values = (p.transposed ? tf.tidy(() => p.variable.transpose()) : p.variable).dataSync();
      expectSameValues(values as Float32Array, expected.get(p.name)!, p.name);
    }
    imported.dispose();
    model.dispose();
  });

  it('reads a sharded checkpoint (model.safetensors.index.json) and checks the index against the shards', async () => {
    const model = createModel(smokeMoepp(), 6);
    const dir = join(root, 'sharded');
    await exportCheckpoint(model, dir);
    const tensors = await fileTensors(join(dir, 'model.safetensors'));
    await rm(join(dir, 'model.safetensors'));
    const names = [...tensors.keys()];
    const shards: Record<string, SafetensorsInput>[] = [{}, {}];
    const weightMap: Record<string, string> = {};
    names.forEach((name, i) => {
      const t = tensors.get(name)!;
      shards[i % 2]![name] = { dtype: 'F32', shape: t.shape, data: t.data as Float32Array };
      weightMap[name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
    });
    await writeSafetensorsFile(join(dir, 'model-00001-of-00002.safetensors'), shards[0]!);
    await writeSafetensorsFile(join(dir, 'model-00002-of-00002.safetensors'), shards[1]!);
    const index = { metadata: { total_size: 0 }, weight_map: weightMap };
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    const imported = await importCheckpoint(dir);
    const tokens = tokenBatch(VOCAB, 1);
    expect(maxAbsDiff(logitsOf(imported, tokens), logitsOf(model, tokens))).toBeLessThanOrEqual(1e-6);
    imported.dispose();

    // A shard holding a tensor that the index assigns elsewhere.
    const moved = { ...weightMap, [names[0]!]: 'model-00002-of-00002.safetensors' };
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: moved }));
    await expectImportError(dir, CheckpointError, 'model.safetensors.index.json', 'model-00002-of-00002.safetensors', names[0]!, 'assigns');
    // An index pointing outside the folder.
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...weightMap, [names[0]!]: '../evil.safetensors' } }));
    await expectImportError(dir, CheckpointError, 'model.safetensors.index.json', names[0]!, 'file name in the same folder');
    // A missing shard.
    await rm(join(dir, 'model-00002-of-00002.safetensors'));
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    await expectImportError(dir, CheckpointError, 'model-00002-of-00002.safetensors', 'is missing');
    tokens.dispose();
    model.dispose();
  });
});

describe('importCheckpoint: an official MoE++ checkpoint', () => {
  // As the official code builds it: num_experts [6] -> FFN 0, 1; constant 2, 3; copy 4; zero 5.
  const D = 16;
  const F = 8;
  const E = 6;
  const V = 24;
  const officialConfig = {
    architectures: ['MoeForCausalLM'],
    model_type: 'MoE++',
    vocab_size: V,
    hidden_size: D,
    intermediate_size: F,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    hidden_act: 'silu',
    max_position_embeddings: 32,
    initializer_range: 0.02,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    rope_scaling: null,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
    num_experts: [E],
    moe_expert_interval: 1,
    moe_use_mixtral_gating: false,
    moe_2layer_gate: false,
    moe_use_logits_norm: true,
    moe_gate_norm_std: 1.0,
    moe_feature_no_mul_topk: true,
    bos_token_id: 1,
    eos_token_id: 2,
    pretraining_tp: 1,
    use_cache: true,
    transformers_version: '4.35.0',
  };

  /** Writes the official-looking folder: BF16 weights, F16 norms, an F32 rotary buffer. Returns the values as stored. */
  async function writeOfficial(dir: string, seed: number): Promise<Map<string, { shape: number[]; values: Float32Array }>> {
    const rng = new SeededRandom(seed);
    const shapes = officialShapes({ vocab: V, dim: D, ffnDim: F, layers: 2, ffnExperts: 2, constants: 2, zeroComputation: 4, twoLayerGate: false, gateMap: true, tied: false });
    const stored = new Map<string, { shape: number[]; values: Float32Array }>();
    const entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[] = [];
    for (const [name, shape] of shapes) {
      const size = shape.reduce((a, b) => a * b, 1);
      if (name.endsWith('layernorm.weight') || name === 'model.norm.weight') {
        // Norm scales near 1, exact in float16: 1 + k/64.
        const values = Float32Array.from({ length: size }, () => 1 + (rng.int(33) - 16) / 64);
        stored.set(name, { shape, values });
        entries.push({ name, dtype: 'F16', shape, bytes: toF16(values) });
      } else {
        const std = name.includes('.gate.') ? 1 : name.endsWith('.constant') ? 1 : 0.3;
        const [values, bytes] = toBf16(Float32Array.from({ length: size }, () => rng.normal(0, std)));
        stored.set(name, { shape, values });
        entries.push({ name, dtype: 'BF16', shape, bytes });
      }
    }
    for (let l = 0; l < 2; l++) {
      entries.push({ name: `model.layers.${l}.self_attn.rotary_emb.inv_freq`, dtype: 'F32', shape: [4], bytes: f32Bytes(new Float32Array([1, 0.1, 0.01, 0.001])) });
    }
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), JSON.stringify(officialConfig, null, 2));
    await writeFile(join(dir, 'model.safetensors'), buildSafetensors(entries, { format: 'pt' }));
    return stored;
  }

  /** `y = W x` for a PyTorch `[out, in]` weight, float64. */
  const linear = (weight: Float32Array, out: number, x: readonly number[]): number[] =>
    Array.from({ length: out }, (_, o) => x.reduce((sum, xi, i) => sum + (weight[o * x.length + i] as number) * xi, 0));
  const softmax = (z: readonly number[]): number[] => {
    const max = Math.max(...z);
    const exps = z.map((v) => Math.exp(v - max));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / total);
  };
  const silu = (v: number) => v / (1 + Math.exp(-v));

  /** One official MoE++ layer for one token, transcribed from moe_plus_plus_layer.py (float64). */
  function referenceMoeLayer(
    stored: Map<string, { values: Float32Array }>,
    layer: number,
    x: readonly number[],
    previousLogits: readonly number[] | null,
  ): { output: number[]; logits: number[] } {
    const w = (name: string) => stored.get(`model.layers.${layer}.mlp.moe.${name}`)!.values;
    let logits = linear(w('gate.wg.weight'), E, x);
    if (previousLogits) {
      const residual = linear(w('gate.gate_map.weight'), E, previousLogits);
      logits = logits.map((v, e) => v + (residual[e] as number));
    }
    const mean = logits.reduce((a, b) => a + b, 0) / E;
    const std = Math.sqrt(logits.reduce((a, b) => a + (b - mean) ** 2, 0) / (E - 1)); // torch.std: unbiased
    const probabilities = softmax(logits.map((v) => v / std)); // target std 1
    const top = probabilities.map((p, e) => [p, e] as const).sort((a, b) => b[0] - a[0]).slice(0, 2);
    let gates = top.map(([p, e]) => (e === E - 1 ? 0 : p)); // zero expert's gate dropped...
    const gateSum = gates.reduce((a, b) => a + b, 0);
    gates = gates.map((g) => g / gateSum); // ...and the rest renormalised
    const output = new Array<number>(D).fill(0);
    top.forEach(([, expert], k) => {
      let y: number[];
      if (expert < 2) {
        const up = linear(w(`experts.experts.${expert}.up_proj.weight`), 2 * F, x); // [2F]
        const hidden = up.slice(0, F).map((a, i) => silu(a) * (up[F + i] as number));
        y = linear(w(`experts.experts.${expert}.down_proj.weight`), D, hidden);
      } else if (expert < 4) {
        const [a1, a2] = softmax(linear(w(`experts.experts.${expert}.wg.weight`), 2, x)) as [number, number];
        const constant = w(`experts.experts.${expert}.constant`);
        y = x.map((xi, i) => a1 * xi + a2 * (constant[i] as number));
      } else if (expert === 4) {
        y = [...x];
      } else {
        y = new Array<number>(D).fill(0);
      }
      y.forEach((v, i) => (output[i] = (output[i] as number) + (gates[k] as number) * v));
    });
    return { output, logits };
  }

  it('reads the official defaults and lands every parameter, transposed back, with its exact value', async () => {
    const dir = join(root, 'official');
    const stored = await writeOfficial(dir, 11);
    const model = await importCheckpoint(dir);
    const moe = model.config.moe!;
    expect(moe.experts).toEqual({ ffn: 2, zero: 1, copy: 1, constant: 2 });
    expect(moe).toMatchObject({ topK: 2, gatingResidual: true, twoLayerGate: false, logitsNorm: true, mixtralGating: false, scaleInputByTopK: false, zeroGateRule: 'drop-and-renormalize' });
    expect(model.config.tieEmbeddings).toBe(false);
    const layer = model.blocks[1]!.ffn as MoeLayer;
    expect(layer.kinds).toEqual(['ffn', 'ffn', 'constant', 'constant', 'copy', 'zero']);

    const parameters = model.parameters();
    expect(parameters.map((p) => p.name).sort()).toEqual([...stored.keys()].sort());
    for (const p of parameters) {
      const { shape, values } = stored.get(p.name)!;
      const kit = p.variable.arraySync();
      if (p.transposed) {
        const [rows, cols] = shape as [number, number]; // PyTorch [out, in]; the kit holds [in, out]
        expect(p.variable.shape).toEqual([cols, rows]);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expect((kit as number[][])[c]![r], `${p.name}[${r}, ${c}]`).toBe(values[r * cols + c]);
      } else {
        expect(p.variable.shape).toEqual(shape);
        expect(Array.from(p.variable.dataSync()), p.name).toEqual(Array.from(values));
      }
    }
    model.dispose();
  });

  it("runs two MoE++ layers as the official code does (router, gating residual, every expert kind)", async () => {
    const dir = join(root, 'official');
    const stored = await writeOfficial(dir, 12);
    const model = await importCheckpoint(dir);
    const rng = new SeededRandom(3);
    const numTokens = 24;
    const xs = Array.from({ length: numTokens }, () => Array.from({ length: D }, () => rng.normal(0, 1)));
    const x = tf.tensor2d(xs, [numTokens, D], 'float32');
    const [first, second] = [model.blocks[0]!.ffn as MoeLayer, model.blocks[1]!.ffn as MoeLayer];
    const used = new Set<number>();
    tf.tidy(() => {
      const out0 = first.forward(x);
      const out1 = second.forward(x, { previousLogits: out0.logits });
      const [y0, g0, y1, g1] = [out0.output, out0.logits, out1.output, out1.logits].map((t) => t.arraySync() as number[][]);
      (out0.expertIndices.arraySync() as number[][]).flat().forEach((e) => used.add(e));
      (out1.expertIndices.arraySync() as number[][]).flat().forEach((e) => used.add(e));
      xs.forEach((token, n) => {
        const ref0 = referenceMoeLayer(stored, 0, token, null);
        const ref1 = referenceMoeLayer(stored, 1, token, ref0.logits);
        expect(maxAbsDiff(g0![n]!, ref0.logits), `layer 0 logits, token ${n}`).toBeLessThan(1e-4);
        expect(maxAbsDiff(y0![n]!, ref0.output), `layer 0 output, token ${n}`).toBeLessThan(1e-4);
        expect(maxAbsDiff(g1![n]!, ref1.logits), `layer 1 logits, token ${n}`).toBeLessThan(1e-4);
        expect(maxAbsDiff(y1![n]!, ref1.output), `layer 1 output, token ${n}`).toBeLessThan(1e-4);
      });
    });
    // The comparison covered every expert kind.
    expect([...used].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    const tokens = tokenBatch(V, 2);
    expect(logitsOf(model, tokens).every(Number.isFinite)).toBe(true);
    tf.dispose([x, tokens]);
    model.dispose();
  });
});

describe('importCheckpoint: broken checkpoints fail clearly, naming file and tensor', () => {
  let dir: string;
  let weights: string;
  let config: string;
  const UP = 'model.layers.1.mlp.moe.experts.experts.2.up_proj.weight';

  beforeEach(async () => {
    dir = join(root, 'ckpt');
    weights = join(dir, 'model.safetensors');
    config = join(dir, 'config.json');
    const model = createModel(smokeMoepp(), 9);
    await exportCheckpoint(model, dir);
    model.dispose();
  });

  it('a missing folder, config.json or model.safetensors', async () => {
    await expectImportError(join(root, 'nowhere'), CheckpointError, join(root, 'nowhere'), 'does not exist');
    await rm(weights);
    await expectImportError(dir, CheckpointError, 'missing model.safetensors', dir);
    await rm(config);
    await expectImportError(dir, CheckpointError, 'missing config.json', config);
  });

  it('a config.json that is not JSON, or whose fields are invalid', async () => {
    const original = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
    await writeFile(config, '{"hidden_size": 64,');
    await expectImportError(dir, CheckpointError, config, 'not valid JSON');
    await writeFile(config, JSON.stringify({ ...original, hidden_size: '64' }));
    await expectImportError(dir, ConfigError, config, 'hidden_size');
    await writeFile(config, JSON.stringify({ ...original, num_attention_heads: 3, num_key_value_heads: 3 }));
    await expectImportError(dir, ConfigError, config, 'numHeads');
    const { vocab_size: _, ...noVocab } = original;
    await writeFile(config, JSON.stringify(noVocab));
    await expectImportError(dir, ConfigError, config, 'vocab_size');
    // A config whose sizes disagree with the weights: caught before any weight is allocated.
    await writeFile(config, JSON.stringify({ ...original, vocab_size: 100 }));
    await expectImportError(dir, CheckpointError, weights, 'model.embed_tokens.weight', '[64, 64]', '[100, 64]');
    await writeFile(config, JSON.stringify({ ...original, intermediate_size: 96 }));
    await expectImportError(dir, CheckpointError, weights, 'up_proj.weight', 'expected [192, 64]');
  });

  it('a missing tensor', async () => {
    await rewriteWeights(dir, (t) => delete t[UP]);
    await expectImportError(dir, CheckpointError, weights, 'missing tensor', UP, '[256, 64]');
    await rewriteWeights(dir, (t) => delete t['model.embed_tokens.weight']);
    await expectImportError(dir, CheckpointError, weights, 'missing tensor', 'model.embed_tokens.weight', '[64, 64]');
  });

  it('an unexpected tensor (rotary buffers excepted)', async () => {
    await rewriteWeights(dir, (t) => {
      t['model.layers.0.mlp.moe.experts.experts.9.up_proj.weight'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
    });
    await expectImportError(dir, CheckpointError, weights, 'unexpected tensor', 'experts.experts.9.up_proj.weight');
    await rewriteWeights(dir, (t) => {
      delete t['model.layers.0.mlp.moe.experts.experts.9.up_proj.weight'];
      t['model.layers.0.self_attn.rotary_emb.inv_freq'] = { dtype: 'F32', shape: [16], data: new Float32Array(16) };
    });
    (await importCheckpoint(dir)).dispose();
  });

  it('a wrong shape, e.g. a linear weight stored [in, out], says expected and actual in PyTorch layout', async () => {
    await rewriteWeights(dir, (t) => {
      const up = t[UP]!;
      t[UP] = { dtype: 'F32', shape: [64, 256], data: up.data };
    });
    await expectImportError(dir, CheckpointError, weights, UP, 'shape [64, 256]', 'expected [256, 64]', 'PyTorch layout');
  });

  it('a tensor of integer dtype where a float is needed', async () => {
    await rewriteWeights(dir, (t) => {
      t['model.norm.weight'] = { dtype: 'I32', shape: [64], data: new Int32Array(64).fill(1) };
    });
    await expectImportError(dir, CheckpointError, weights, 'model.norm.weight', 'integer dtype I32');
  });

  it('a non-finite value', async () => {
    await rewriteWeights(dir, (t) => {
      (t['model.layers.0.input_layernorm.weight']!.data as Float32Array)[7] = Number.NaN;
    });
    await expectImportError(dir, CheckpointError, weights, 'model.layers.0.input_layernorm.weight', 'non-finite', 'element 7');
  });

  it('a tensor truncated in the header (fewer bytes than its shape needs)', async () => {
    const entries = [...(await fileTensors(weights))].map(([name, t]) => ({
      name,
      dtype: 'F32',
      shape: t.shape,
      bytes: name === UP ? f32Bytes(t.data as Float32Array).subarray(0, 4 * 1000) : f32Bytes(t.data as Float32Array),
    }));
    await writeFile(weights, buildSafetensors(entries));
    await expectImportError(dir, CheckpointError, weights, UP, 'needs 65536 bytes');
  });

  it('a file truncated at any of several lengths', async () => {
    const bytes = await readFile(weights);
    const headerEnd = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    for (const length of [0, 5, 8, 9, Math.floor(headerEnd / 2), headerEnd, headerEnd + 3, Math.floor(bytes.length / 2), bytes.length - 1]) {
      await writeFile(weights, bytes.subarray(0, length));
      await expectImportError(dir, CheckpointError, weights);
    }
  });

  it('random bytes: as the whole file, in the header, or in the data (caught by the kit hash)', async () => {
    const bytes = await readFile(weights);
    const rng = new SeededRandom(5);
    await writeFile(weights, Uint8Array.from({ length: 4096 }, () => rng.int(256)));
    await expectImportError(dir, CheckpointError, weights);
    const headerEnd = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const headerNoise = Uint8Array.from(bytes);
    for (let i = 20; i < 60; i++) headerNoise[i] = rng.int(256);
    await writeFile(weights, headerNoise);
    await expectImportError(dir, CheckpointError, weights);
    const dataNoise = Uint8Array.from(bytes);
    for (let i = 0; i < 16; i++) dataNoise[headerEnd + 1000 + i] = rng.int(256);
    await writeFile(weights, dataNoise);
    await expectImportError(dir, CheckpointError, weights, 'SHA-256', 'corrupted');
  });

  it('single-byte corruption anywhere either fails with a clear error or gives the identical model', async () => {
    const bytes = await readFile(weights);
    const reference = await importCheckpoint(dir);
    const expected = parameterValues(reference);
    reference.dispose();
    const rng = new SeededRandom(8);
    const headerEnd = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const positions = [
      ...Array.from({ length: 30 }, () => rng.int(headerEnd)),
      ...Array.from({ length: 10 }, () => headerEnd + rng.int(bytes.length - headerEnd)),
    ];
    for (const position of positions) {
      const corrupted = Uint8Array.from(bytes);
      corrupted[position] = (corrupted[position]! + 1 + rng.int(255)) % 256;
      await writeFile(weights, corrupted);
      const before = tf.memory().numTensors;
      try {
        const model = await importCheckpoint(dir);
        const actual = parameterValues(model);
        for (const [name, values] of expected) expectSameValues(actual.get(name), values, `byte ${position}: ${name}`);
        model.dispose();
      } catch (error) {
        expect(error, `byte ${position}: ${String(error)}`).toSatisfy((e: unknown) => e instanceof CheckpointError || e instanceof ConfigError);
        expect((error as Error).message, `byte ${position}`).toContain(weights);
      }
      expect(tf.memory().numTensors, `byte ${position}`).toBe(before);
    }
  });

  it('a tied checkpoint that also stores a different lm_head.weight', async () => {
    const tied = createModel({ ...smokeMoepp(), tieEmbeddings: true }, 3);
    await exportCheckpoint(tied, dir);
    const embedding = (await fileTensors(weights)).get('model.embed_tokens.weight')!;
    // Equal to the embedding: accepted (some tools save the tied copy).
    await rewriteWeights(dir, (t) => {
      t['lm_head.weight'] = { dtype: 'F32', shape: embedding.shape, data: Float32Array.from(embedding.data) };
    });
    (await importCheckpoint(dir)).dispose();
    await rewriteWeights(dir, (t) => {
      t['lm_head.weight'] = { dtype: 'F32', shape: embedding.shape, data: Float32Array.from(embedding.data, (v) => v + 1) };
    });
    await expectImportError(dir, CheckpointError, weights, 'lm_head.weight', 'tie_word_embeddings');
    tied.dispose();
  });

  it('a checkpoint format newer than this kit', async () => {
    await writeFile(join(dir, 'moepp_kit.json'), JSON.stringify({ format_version: CHECKPOINT_FORMAT_VERSION + 1 }));
    await expectImportError(dir, CheckpointError, 'moepp_kit.json', 'newer');
  });
});

describe('exportCheckpoint: atomic', () => {
  /** Siblings of `dir` other than `dir` itself: temporary or set-aside folders would show here. */
  const leftovers = async (parent: string, keep: string[]) => (await readdir(parent)).filter((name) => !keep.includes(name));

  /** Each file's SHA-256 by name. */
  async function snapshot(dir: string): Promise<Map<string, string>> {
    const files = new Map<string, string>();
    for (const name of (await readdir(dir)).sort()) files.set(name, createHash('sha256').update(await readFile(join(dir, name))).digest('hex'));
    return files;
  }

  it('an export into an existing folder replaces it fully', async () => {
    const dir = join(root, 'ckpt');
    const old = createModel(smokeMoepp(), 1);
    await exportCheckpoint(old, dir);
    await writeFile(join(dir, 'stale.txt'), 'from an earlier run');
    const replacement = createModel(presetConfig('smoke', 'dense', { vocabSize: VOCAB }), 2);
    await exportCheckpoint(replacement, dir);
    expect((await readdir(dir)).sort()).toEqual(['config.json', 'model.safetensors', 'moepp_kit.json']);
    expect(await leftovers(root, ['ckpt'])).toEqual([]);
    const imported = await importCheckpoint(dir);
    expect(imported.config).toEqual(replacement.config);
    const tokens = tokenBatch(VOCAB, 4);
    expect(maxAbsDiff(logitsOf(imported, tokens), logitsOf(replacement, tokens))).toBeLessThanOrEqual(1e-6);
    tf.dispose(tokens);
    [old, replacement, imported].forEach((m) => m.dispose());
  });

  it.each([
    ['the parameter list throws', 'parameters'],
    ['writing the weights fails half-way', 'write'],
    ['renaming the new folder into place fails', 'rename'],
  ] as const)('when %s, the old checkpoint stays intact and no temporary folder is left', async (_, fault) => {
    const dir = join(root, 'ckpt');
    const old = createModel(smokeMoepp(), 1);
    await exportCheckpoint(old, dir);
    const before = await snapshot(dir);
    const replacement = createModel(smokeMoepp(), 2);
    if (fault === 'parameters') vi.spyOn(replacement, 'parameters').mockImplementation(() => { throw new Error('injected: no parameters'); });
    if (fault === 'write') faults.failWeightsWrite = true;
    if (fault === 'rename') faults.failRenameInto = dir;
    const tensorsBefore = tf.memory().numTensors;
    await expect(exportCheckpoint(replacement, dir)).rejects.toSatisfy(
      (e: unknown) => e instanceof CheckpointError && e.message.includes(dir) && e.message.includes('injected'),
    );
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    faults.failWeightsWrite = false;
    faults.failRenameInto = null;
    expect(await snapshot(dir)).toEqual(before);
    expect(await leftovers(root, ['ckpt'])).toEqual([]);
    const imported = await importCheckpoint(dir);
    const tokens = tokenBatch(VOCAB, 4);
    expect(maxAbsDiff(logitsOf(imported, tokens), logitsOf(old, tokens))).toBeLessThanOrEqual(1e-6);
    tf.dispose(tokens);
    [old, replacement, imported].forEach((m) => m.dispose());
  });

  it('fails cleanly into a path whose parent is a file, or onto a file', async () => {
    const model = createModel(smokeMoepp(), 1);
    await writeFile(join(root, 'afile'), 'not a folder');
    await expect(exportCheckpoint(model, join(root, 'afile', 'ckpt'))).rejects.toThrow(CheckpointError);
    await expect(exportCheckpoint(model, join(root, 'afile'))).rejects.toThrow(/not a folder/);
    expect(await readFile(join(root, 'afile'), 'utf8')).toBe('not a folder');
    expect(await readdir(root)).toEqual(['afile']);
    model.dispose();
  });

  it('creates missing parent folders, and refuses reserved or non-string metadata before writing anything', async () => {
    const model = createModel(smokeMoepp(), 1);
    await expect(exportCheckpoint(model, join(root, 'x'), { metadata: { format: 'tf' } })).rejects.toThrow(/reserved/);
    await expect(exportCheckpoint(model, join(root, 'x'), { metadata: { step: 3 as unknown as string } })).rejects.toThrow(/'step' must be a string/);
    expect(await readdir(root)).toEqual([]);
    await exportCheckpoint(model, join(root, 'runs', 'a', 'ckpt'));
    expect((await stat(join(root, 'runs', 'a', 'ckpt', 'model.safetensors'))).isFile()).toBe(true);
    model.dispose();
  });

  it('refuses a model that is not a DecoderLM or a model with disposed weights', async () => {
    await expect(exportCheckpoint({} as DecoderLM, join(root, 'x'))).rejects.toThrow(CheckpointError);
    const model = createModel(smokeMoepp(), 1);
    model.dispose();
    await expect(exportCheckpoint(model, join(root, 'x'))).rejects.toThrow(/disposed/);
    expect(await readdir(root)).toEqual([]);
  });
});

describe('PyTorch layout and model.safetensors, shared with the trainer', () => {
  /** A named parameter over a fresh variable; the caller disposes it. */
  function parameterOf(name: string, values: number[], shape: number[], transposed: boolean) {
    return { name, variable: tf.variable(tf.tensor(values, shape, 'float32')), transposed };
  }

  it('transposes an nn.Linear weight by hand: kit [in, out] <-> PyTorch [out, in]; others keep their layout', () => {
    const linear = parameterOf('w', [1, 2, 3, 4, 5, 6], [2, 3], true); // kit [in 2, out 3]
    const norm = parameterOf('g', [1, 2, 3], [3], false);
    expect(torchShape(linear)).toEqual([3, 2]);
    expect(torchShape(norm)).toEqual([3]);
    const kit = new Float32Array([1, 2, 3, 4, 5, 6]); // [[1, 2, 3], [4, 5, 6]]
    const torch = toTorchLayout(linear, kit);
    expect(Array.from(torch)).toEqual([1, 4, 2, 5, 3, 6]); // [[1, 4], [2, 5], [3, 6]]
    expect(Array.from(fromTorchLayout(linear, torch))).toEqual([1, 2, 3, 4, 5, 6]);
    const same = toTorchLayout(norm, new Float32Array([7, 8, 9]));
    expect(Array.from(same)).toEqual([7, 8, 9]);
    // New arrays, never views of the input.
    expect(toTorchLayout(norm, same)).not.toBe(same);
    expect(fromTorchLayout(norm, same)).not.toBe(same);
    tf.dispose([linear.variable, norm.variable]);
  });

  it('layout errors name the op and the parameter', () => {
    const cube = parameterOf('cube', Array.from({ length: 8 }, () => 0), [2, 2, 2], true);
    const linear = parameterOf('w', [1, 2, 3, 4, 5, 6], [2, 3], true);
    expect(() => torchShape(cube)).toThrow(new CheckpointError("torchShape: parameter 'cube' is marked transposed but has shape [2, 2, 2]; only a rank-2 weight can be"));
    expect(() => toTorchLayout(linear, new Float32Array(5))).toThrow(/toTorchLayout: parameter 'w' of shape \[2, 3\] needs a Float32Array of 6 values, got 5 values/);
    expect(() => fromTorchLayout(linear, new Int32Array(6) as unknown as Float32Array)).toThrow(/fromTorchLayout: parameter 'w' .* got a Int32Array/);
    tf.dispose([cube.variable, linear.variable]);
  });

  it('modelToSafetensors gives exactly the tensors exportCheckpoint writes', async () => {
    const model = createModel(smokeMoepp(), 3);
    const before = tf.memory().numTensors;
    const tensors = modelToSafetensors(model);
    expect(tf.memory().numTensors).toBe(before);
    await exportCheckpoint(model, join(root, 'ckpt'));
    const written = await fileTensors(join(root, 'ckpt', 'model.safetensors'));
    expect(Object.keys(tensors).sort()).toEqual([...written.keys()].sort());
    for (const [name, tensor] of written) {
      expect(tensors[name]!.shape, name).toEqual(tensor.shape);
      expectSameValues(tensors[name]!.data as Float32Array, tensor.data as Float32Array, name);
    }
    model.dispose();
    await expect(Promise.resolve().then(() => modelToSafetensors(model))).rejects.toThrow(/modelToSafetensors: parameter '.*' has been disposed/);
  });

  it('matchModelWeights checks without assigning; assignModelWeights then loads the exact values, leak-free', async () => {
    const source = createModel(smokeMoepp(), 1);
    const target = createModel(smokeMoepp(), 2);
    const path = join(root, 'model.safetensors');
    await writeSafetensorsFile(path, modelToSafetensors(source));
    const decoded = await readSafetensorsFile(path);
    const targetBefore = parameterValues(target);
    const tensorsBefore = tf.memory().numTensors;
    const weights = matchModelWeights(target, decoded, path);
    expect(weights.map((w) => w.parameter.name)).toEqual(target.parameters().map((p) => p.name));
    const unchanged = parameterValues(target);
    for (const [name, values] of targetBefore) expectSameValues(unchanged.get(name), values, `before assigning: ${name}`);
    assignModelWeights(weights);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    const loaded = parameterValues(target);
    for (const [name, values] of parameterValues(source)) expectSameValues(loaded.get(name), values, name);
    source.dispose();
    target.dispose();
  });

  it('matchModelWeights is strict by default; officialExtras accepts rotary buffers and a tied lm_head copy', async () => {
    const model = createModel({ ...smokeMoepp(), tieEmbeddings: true }, 4);
    const tensors = modelToSafetensors(model);
    const embedding = tensors['model.embed_tokens.weight']!;
    const decoded = (extra: Record<string, SafetensorsInput>): DecodedSafetensors => ({
      tensors: new Map(Object.entries({ ...tensors, ...extra }).map(([name, t]) => [name, { dtype: 'F32', shape: [...t.shape], data: t.data as Float32Array }])),
      metadata: {},
    });
    const rotary = { 'model.layers.0.self_attn.rotary_emb.inv_freq': { dtype: 'F32', shape: [8], data: new Float32Array(8) } } as const;
    const head = { 'lm_head.weight': { ...embedding } };
    expect(() => matchModelWeights(model, decoded(rotary), 'f.safetensors')).toThrow(
      /^matchModelWeights: f\.safetensors: 1 unexpected tensor\(s\) 'model\.layers\.0\.self_attn\.rotary_emb\.inv_freq' \[8\], which the model has no parameter for$/,
    );
    expect(() => matchModelWeights(model, decoded(head), 'f.safetensors')).toThrow(/unexpected tensor\(s\) 'lm_head.weight'/);
    expect(matchModelWeights(model, decoded({ ...rotary, ...head }), 'f.safetensors', { officialExtras: true })).toHaveLength(model.parameters().length);
    const otherHead = { 'lm_head.weight': { ...embedding, data: Float32Array.from(embedding.data as Float32Array, (v) => v + 1) } };
    expect(() => matchModelWeights(model, decoded(otherHead), 'f.safetensors', { officialExtras: true })).toThrow(/f\.safetensors: tensor 'lm_head.weight' differs/);
    model.dispose();
  });

  it('matchModelWeights names the file and the tensor: missing (with its PyTorch shape), integer, mis-shaped, non-finite', () => {
    const model = createModel(smokeMoepp(), 5);
    const tensors = modelToSafetensors(model);
    const UP = 'model.layers.1.mlp.moe.experts.experts.2.up_proj.weight';
    const decoded = (edit: (map: Map<string, DecodedTensor>) => void): DecodedSafetensors => {
      const map = new Map<string, DecodedTensor>(Object.entries(tensors).map(([name, t]) => [name, { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(t.data) }]));
      edit(map);
      return { tensors: map, metadata: {} };
    };
    const before = parameterValues(model);
    expect(() => matchModelWeights(model, decoded((m) => m.delete(UP)), 'f.safetensors')).toThrow(
      `matchModelWeights: f.safetensors: 1 model parameter tensor(s) are missing, e.g. '${UP}' [256, 64] (each missing tensor with the PyTorch shape the model expects)`,
    );
    expect(() => matchModelWeights(model, decoded((m) => m.set('model.norm.weight', { dtype: 'I32', shape: [64], data: new Int32Array(64) })), 'f.safetensors')).toThrow(
      "matchModelWeights: f.safetensors: tensor 'model.norm.weight' has integer dtype I32",
    );
    expect(() => matchModelWeights(model, decoded((m) => m.set(UP, { dtype: 'F32', shape: [64, 256], data: new Float32Array(64 * 256) })), 'f.safetensors')).toThrow(
      `matchModelWeights: f.safetensors: tensor '${UP}' has shape [64, 256], expected [256, 64] (PyTorch layout, nn.Linear [out, in])`,
    );
    const withInfinity = decoded((m) => {
      (m.get('model.norm.weight')!.data as Float32Array)[3] = Number.NEGATIVE_INFINITY;
    });
    expect(() => matchModelWeights(model, withInfinity, 'f.safetensors')).toThrow(
      "matchModelWeights: f.safetensors: tensor 'model.norm.weight' holds a non-finite value (-Infinity at element 3)",
    );
    expect(() => matchModelWeights(model, { tensors: {} } as unknown as DecodedSafetensors, 'f.safetensors')).toThrow(/'decoded' must be decoded safetensors/);
    const after = parameterValues(model);
    for (const [name, values] of before) expectSameValues(after.get(name), values, `nothing assigned: ${name}`);
    model.dispose();
  });

  it('assignModelWeights checks every value before assigning any', () => {
    const model = createModel(smokeMoepp(), 6);
    const parameters = model.parameters();
    const before = parameterValues(model);
    const weights = parameters.map((parameter, i) => ({
      parameter,
      data: new Float32Array(i === parameters.length - 1 ? 1 : torchShape(parameter).reduce((a, b) => a * b, 1)).fill(0.5),
    }));
    expect(() => assignModelWeights(weights)).toThrow(`assignModelWeights: the value of parameter '${parameters[parameters.length - 1]!.name}' must be a Float32Array of`);
    const after = parameterValues(model);
    for (const [name, values] of before) expectSameValues(after.get(name), values, name);
    model.dispose();
  });
});
