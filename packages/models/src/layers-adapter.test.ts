import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, ShapeError, SeededRandom, randomNormal } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { MoeppLayer, type MoeppLayerArgs } from './layers-adapter.js';

const D = 8;
const moeArgs: MoeppLayerArgs = {
  intermediateSize: 16,
  experts: { ffn: 4, zero: 1, copy: 1, constant: 1 },
  topK: 2,
  initializerRange: 0.2,
  seed: 3,
};

/** 3 classes, label = argmax of a fixed linear map of x. */
function syntheticData(count: number): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  return tf.tidy(() => {
    const rng = new SeededRandom(1);
    const xs = randomNormal([count, 6], rng) as tf.Tensor2D; // [N, 6]
    const labels = tf.argMax(tf.matMul(xs, randomNormal([6, 3], rng)), 1); // [N]
    return { xs, ys: tf.oneHot(labels, 3).cast('float32') as tf.Tensor2D };
  });
}

function classifier(
  moeOptions: Partial<MoeppLayerArgs> = {},
  optimizer: tf.Optimizer = tf.train.adam(0.02),
): { model: tf.Sequential; moe: MoeppLayer } {
  const moe = new MoeppLayer({ ...moeArgs, ...moeOptions });
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [6], units: D, activation: 'tanh', kernelInitializer: tf.initializers.glorotNormal({ seed: 4 }) }),
      moe,
      tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotNormal({ seed: 5 }) }),
    ],
  });
  model.compile({ optimizer, loss: 'categoricalCrossentropy' });
  return { model, moe };
}

/** The model and the optimiser it was compiled with (a LayersModel frees only optimisers it made itself). */
function disposeModel(model: tf.LayersModel): void {
  model.optimizer?.dispose();
  model.dispose();
}

const valuesOf = (layer: tf.layers.Layer) => layer.getWeights().map((w) => w.dataSync<'float32'>().slice());

describe('MoeppLayer', () => {
  it('registers the MoeLayer variables as its weights, under official names', () => {
    const { model, moe } = classifier();
    const names = moe.weights.map((w) => w.originalName.split('/').pop());
    expect(names.slice(0, 2)).toEqual(['moe.gate.wg.weight', 'moe.experts.experts.0.up_proj.weight']);
    expect(moe.trainableWeights).toHaveLength(moe.moeLayer!.parameters('moe').length);
    // The very same variables: what fit updates is what the router and experts compute with.
    expect(moe.trainableWeights.map((w) => w.read())).toEqual(moe.moeLayer!.parameters('moe').map((p) => p.variable));
    expect(moe.countParams()).toBe(D * 7 + 4 * (D * 32 + 16 * D) + (2 * D + D));
    disposeModel(model);
  });

  it('trains inside a tf.sequential classifier: fit lowers the loss and updates the MoE weights', async () => {
    const { model, moe } = classifier();
    const { xs, ys } = syntheticData(96);
    const before = valuesOf(moe);
    const history = await model.fit(xs, ys, { epochs: 8, batchSize: 32, shuffle: false, verbose: 0 });
    const losses = history.history.loss as number[];
    expect(losses[losses.length - 1]!).toBeLessThan(0.8 * losses[0]!);
    const after = valuesOf(moe);
    // The router and every FFN expert moved.
    const names = moe.weights.map((w) => w.originalName.split('/').pop()!);
    names.forEach((name, i) => {
      if (/gate\.wg|up_proj|down_proj/.test(name)) expect({ name, moved: after[i]!.some((v, j) => v !== before[i]![j]) }).toEqual({ name, moved: true });
    });
    expect(moe.lastTokensPerExpert?.reduce((a, b) => a + b)).toBe(2 * 32);
    // The tensor count stays flat across epochs (the kept aux loss is replaced, not accumulated).
    const count = tf.memory().numTensors;
    await model.fit(xs, ys, { epochs: 2, batchSize: 32, shuffle: false, verbose: 0 });
    expect(tf.memory().numTensors).toBe(count);
    tf.dispose([xs, ys]);
    disposeModel(model);
  });

  it('adds beta · L_b to the fit loss through addLoss (and evaluate leaves it out)', async () => {
    const beta = 0.5;
    const { model, moe } = classifier({ auxLossCoefficient: beta });
    const { xs, ys } = syntheticData(32);
    const compiled = (model.evaluate(xs, ys) as tf.Scalar).dataSync()[0]!;
    const loadBalance = tf.tidy(() => {
      const hidden = model.layers[0]!.apply(xs) as tf.Tensor2D; // [N, D] the MoE layer's input
      return moe.moeLayer!.forward(hidden).auxLosses.loadBalance!.dataSync()[0]!;
    });
    expect(loadBalance).toBeGreaterThan(0);
    // One full batch: fit reports the loss of the forward pass before the update.
    const history = await model.fit(xs, ys, { epochs: 1, batchSize: 32, shuffle: false, verbose: 0 });
    expect(history.history.loss![0] as number).toBeCloseTo(compiled + beta * loadBalance, 5);
    tf.dispose([xs, ys]);
    disposeModel(model);
  });

  it('the aux loss trains the router, not the experts (one SGD step with and without it)', async () => {
    const { xs, ys } = syntheticData(32);
    const stepped: Map<string, Float32Array>[] = [];
    for (const auxLossCoefficient of [0, 5]) {
      // One fit at a time: tfjs has one gradient tape per engine.
      const { model, moe } = classifier({ auxLossCoefficient }, tf.train.sgd(0.5));
      await model.fit(xs, ys, { epochs: 1, batchSize: 32, shuffle: false, verbose: 0 });
      const values = valuesOf(moe);
      stepped.push(new Map(moe.weights.map((w, i) => [w.originalName.split('/').pop()!, values[i]!])));
      disposeModel(model);
    }
    const [without, withAux] = stepped as [Map<string, Float32Array>, Map<string, Float32Array>];
    for (const [name, values] of without) {
      const differs = values.some((v, i) => v !== withAux.get(name)![i]);
      // The routing (and so every expert's gradient) is decided before the step; L_b reaches only the router.
      expect({ name, differs }).toEqual({ name, differs: name === 'moe.gate.wg.weight' });
    }
    tf.dispose([xs, ys]);
  });

  it('save -> tf.loadLayersModel in memory round-trips the trained weights and the config', async () => {
    const { model } = classifier({ zeroGateRule: 'raw-softmax', capacityFactor: null, scaleInputByTopK: true });
    const { xs, ys } = syntheticData(64);
    await model.fit(xs, ys, { epochs: 2, batchSize: 32, shuffle: false, verbose: 0 }); // weights now differ from the seed's
    let saved: tf.io.ModelArtifacts | null = null;
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        saved = artifacts;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    expect(saved).not.toBeNull();
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved!));
    const restored = loaded.layers[1] as MoeppLayer;
    expect(restored).toBeInstanceOf(MoeppLayer);
    expect(restored.getConfig()).toEqual((model.layers[1] as MoeppLayer).getConfig());
    tf.tidy(() => expectTensorClose(loaded.predict(xs) as tf.Tensor, model.predict(xs) as tf.Tensor, { atol: 0, rtol: 0 }));
    tf.dispose([xs, ys]);
    loaded.dispose();
    disposeModel(model);
  });

  it('getConfig -> fromConfig round trip', () => {
    const layer = new MoeppLayer({ ...moeArgs, name: 'moepp_a', twoLayerGate: true, tau: 0.5, capacityFactor: 1.25, auxLossCoefficient: 0 });
    const config = layer.getConfig();
    expect(config).toMatchObject({
      name: 'moepp_a',
      intermediateSize: 16,
      experts: { ffn: 4, zero: 1, copy: 1, constant: 1 },
      topK: 2,
      twoLayerGate: true,
      logitsNorm: true,
      zeroGateRule: 'drop-and-renormalize',
      capacityFactor: 1.25,
      tau: 0.5,
      auxLossCoefficient: 0,
      seed: 3,
    });
    const again = tf.serialization.SerializationMap.getMap().classNameMap.MoeppLayer!;
    const copy = again[1](again[0], config) as MoeppLayer;
    expect(copy.getConfig()).toEqual(config);
  });

  it('accepts [B, T, D] and equals the MoE layer applied to every token', () => {
    const layer = new MoeppLayer(moeArgs);
    const x = tf.randomNormal([2, 5, D], 0, 1, 'float32', 6) as tf.Tensor3D;
    const y = layer.apply(x) as tf.Tensor;
    expect(y.shape).toEqual([2, 5, D]);
    tf.tidy(() => expectTensorClose(y.reshape([10, D]), layer.moeLayer!.forward(x.reshape([10, D])).output, { atol: 0 }));
    expect(() => new MoeppLayer(moeArgs).apply(tf.zeros([2, 2, 2, D]))).toThrow(ShapeError);
    tf.dispose([x, y]);
    layer.dispose();
  });

  it('checks its settings and names the layer in errors', () => {
    expect(() => new MoeppLayer({ ...moeArgs, intermediateSize: 0 })).toThrow(/^MoeppLayer: 'intermediateSize'/);
    expect(() => new MoeppLayer({ ...moeArgs, topK: 8 })).toThrow(ConfigError);
    expect(() => new MoeppLayer({ ...moeArgs, auxLossCoefficient: -1 })).toThrow(/'auxLossCoefficient'/);
  });

  it('does not leak in predict, and dispose frees every weight', async () => {
    const { xs, ys } = syntheticData(16);
    await expectNoLeak(() => {
      const { model } = classifier();
      tf.dispose(model.predict(xs) as tf.Tensor);
      disposeModel(model);
    });
    const { model } = classifier();
    await expectNoLeak(() => tf.dispose(model.predict(xs) as tf.Tensor));
    disposeModel(model);
    tf.dispose([xs, ys]);
  });
});
