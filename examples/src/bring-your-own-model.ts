/**
 * Example: an MoE++ layer dropped into your own TensorFlow.js model, two ways.
 *
 *   1. Functional: your own `tf.Variable`s around a `MoeLayer` from `@moepp/models`, trained with a
 *      `tf.variableGrads` loop and a tfjs optimiser. The layer returns its unweighted load-balance loss
 *      as a value; you add `beta · L_b` to your loss (the MoE++ paper uses beta = 0.01).
 *   2. tfjs-layers: `MoeppLayer` (the `tf.layers.Layer` adapter) inside a `tf.sequential`, trained with
 *      `model.fit`. The adapter adds `beta · L_b` to the fit loss itself (`auxLossCoefficient`).
 *
 * The task: 8 seeded Gaussian features, 4 classes given by a fixed random "teacher" network, so the
 * labels depend on the input non-linearly. Both models print their loss as it falls and how the MoE++
 * layer spread the last batch's tokens over its experts (4 FFN, 2 constant, 1 copy, 1 zero).
 *
 * Run it:   npm run example:byom -w @moepp/examples             (20–40 s on 2 cores)
 *           npm run example:byom -w @moepp/examples -- --quick  (the shorter run the test uses)
 *
 * Shapes: `N` examples (= tokens for the MoE layer), `I` input features (8), `D` model width (32),
 * `F` FFN expert width (64), `C` classes (4), `E` experts (8), `K` experts per token (2).
 */
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend, randomNormal, SeededRandom, xavierUniform } from '@moepp/tensors-core';
import { DEFAULT_MOE_SETTINGS, MoeLayer, MoeppLayer } from '@moepp/models';

/** Settings of {@link runBringYourOwnModel}. */
export interface BringYourOwnModelOptions {
  /** Fewer steps and epochs (what the test runs). Default false. */
  readonly quick?: boolean;
  /** Seeds the data and every initial weight. Default 0. */
  readonly seed?: number;
  /** Where the progress lines go. Default: nowhere. */
  readonly log?: (line: string) => void;
}

/** What {@link runBringYourOwnModel} measured. */
export interface BringYourOwnModelResult {
  /** Training loss (cross-entropy + beta·L_b) of the functional model at each logged step. */
  readonly functionalLosses: readonly number[];
  /** `model.fit`'s loss per epoch (cross-entropy + beta·L_b). */
  readonly layersLosses: readonly number[];
  /** Training accuracy of each model at the end, in [0, 1]. */
  readonly functionalAccuracy: number;
  readonly layersAccuracy: number;
  /** Tokens per expert of the last call, per model (length E; the zero expert is last). */
  readonly functionalTokensPerExpert: readonly number[];
  readonly layersTokensPerExpert: readonly number[];
}

const INPUTS = 8;
const WIDTH = 32;
const CLASSES = 4;
const EXPERTS = { ffn: 4, zero: 1, copy: 1, constant: 2 } as const;
/** beta, the weight of the load-balance loss (MoE++ paper, Eq. 9). */
const BETA = 0.01;

/** Seeded features `[N, I]` and teacher labels `[N]`. */
function makeData(size: number, rng: SeededRandom): { x: tf.Tensor2D; labels: tf.Tensor1D; oneHot: tf.Tensor2D } {
  return tf.tidy(() => {
    const x = randomNormal([size, INPUTS], rng) as tf.Tensor2D; // [N, I]
    const teacherHidden = randomNormal([INPUTS, 16], rng, 1); // [I, 16]
    const teacherOut = randomNormal([16, CLASSES], rng, 1); // [16, C]
    const labels = tf.argMax(tf.matMul(tf.tanh(tf.matMul(x, teacherHidden)), teacherOut), 1) as tf.Tensor1D; // [N] int32
    return { x, labels, oneHot: tf.oneHot(labels, CLASSES).toFloat() as tf.Tensor2D };
  });
}

function accuracyOf(probabilitiesOrLogits: tf.Tensor2D, labels: tf.Tensor1D): number {
  return tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.argMax(probabilitiesOrLogits, 1), labels), 'float32')).dataSync()[0]!);
}

/**
 * 1. Your own variables around a `MoeLayer`, trained with `tf.variableGrads`.
 */
function trainFunctional(
  data: ReturnType<typeof makeData>,
  steps: number,
  rng: SeededRandom,
  log: (line: string) => void,
): { losses: number[]; accuracy: number; tokensPerExpert: readonly number[] } {
  // The MoE++ layer: the released model's switches (DEFAULT_MOE_SETTINGS), our widths and expert counts.
  // A lone layer has no previous MoE++ layer to take a gating residual from, so it is off.
  const moe = new MoeLayer({ ...DEFAULT_MOE_SETTINGS, experts: EXPERTS, gatingResidual: false, hiddenSize: WIDTH, intermediateSize: 64 }, rng);
  const inputProjection = tf.variable(xavierUniform([INPUTS, WIDTH], rng)); // [I, D]
  const classifier = tf.variable(xavierUniform([WIDTH, CLASSES], rng)); // [D, C]
  const variables = [inputProjection, classifier, ...moe.parameters('moe').map((p) => p.variable)];

  /** The model: project, a residual MoE++ block, classify. */
  const forward = (x: tf.Tensor2D) => {
    const hidden = tf.relu(tf.matMul(x, inputProjection)) as tf.Tensor2D; // [N, D]
    const routed = moe.forward(hidden, { training: true }); // output [N, D]; auxLosses; tokensPerExpert
    const logits = tf.matMul(tf.add(hidden, routed.output), classifier) as tf.Tensor2D; // [N, C]
    return { logits, loadBalance: routed.auxLosses.loadBalance ?? tf.scalar(0), tokensPerExpert: routed.tokensPerExpert };
  };

  const optimizer = tf.train.adam(1e-2);
  const losses: number[] = [];
  let tokensPerExpert: readonly number[] = [];
  for (let step = 1; step <= steps; step++) {
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const out = forward(data.x);
        tokensPerExpert = out.tokensPerExpert;
        const crossEntropy = tf.losses.softmaxCrossEntropy(data.oneHot, out.logits);
        return tf.add(crossEntropy, tf.mul(BETA, out.loadBalance)) as tf.Scalar; // L = L_ce + beta·L_b
      }, variables);
      // An expert that received no token this step has no gradient, and tf.variableGrads leaves it out.
      // tfjs's Adam keeps its moments by position in the list it is given, so the list must not change
      // from step to step: give every variable a gradient, zero where there is none.
      optimizer.applyGradients(variables.map((v) => ({ name: v.name, tensor: grads[v.name] ?? tf.zerosLike(v) })));
      if (step === 1 || step % Math.max(1, Math.floor(steps / 5)) === 0 || step === steps) {
        losses.push(value.dataSync()[0]!);
        log(`  step ${String(step).padStart(3)}  loss ${losses.at(-1)!.toFixed(4)}`);
      }
    });
  }
  const accuracy = tf.tidy(() => accuracyOf(forward(data.x).logits, data.labels));
  optimizer.dispose();
  moe.dispose();
  tf.dispose([inputProjection, classifier]);
  return { losses, accuracy, tokensPerExpert };
}

/**
 * 2. `MoeppLayer` in a `tf.sequential`, trained with `model.fit`.
 */
async function trainLayersModel(
  data: ReturnType<typeof makeData>,
  epochs: number,
  seed: number,
  log: (line: string) => void,
): Promise<{ losses: number[]; accuracy: number; tokensPerExpert: readonly number[] }> {
  const moeLayer = new MoeppLayer({ intermediateSize: 64, experts: EXPERTS, topK: 2, auxLossCoefficient: BETA, seed });
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [INPUTS], units: WIDTH, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      moeLayer, // [B, D] -> [B, D]
      tf.layers.dense({ units: CLASSES, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(1e-2), loss: 'categoricalCrossentropy' });
  const history = await model.fit(data.x, data.oneHot, {
    epochs,
    batchSize: 128,
    shuffle: false,
    verbose: 0,
    callbacks: {
      onEpochEnd: (epoch, logs) => {
        if (epoch === 0 || (epoch + 1) % Math.max(1, Math.floor(epochs / 5)) === 0) log(`  epoch ${String(epoch + 1).padStart(3)}  loss ${logs?.loss?.toFixed(4)}`);
      },
    },
  });
  const losses = history.history.loss!.map(Number);
  const accuracy = tf.tidy(() => accuracyOf(model.predict(data.x, { batchSize: data.x.shape[0] }) as tf.Tensor2D, data.labels));
  const tokensPerExpert = moeLayer.lastTokensPerExpert ?? [];
  model.dispose();
  return { losses, accuracy, tokensPerExpert };
}

/**
 * Trains both models on the same data and reports their losses.
 *
 * @param options - see {@link BringYourOwnModelOptions}
 * @returns the losses, accuracies and the expert load of the last call
 */
export async function runBringYourOwnModel(options: BringYourOwnModelOptions = {}): Promise<BringYourOwnModelResult> {
  const quick = options.quick ?? false;
  const log = options.log ?? (() => {});
  const seed = options.seed ?? 0;
  const rng = new SeededRandom(seed);
  const data = makeData(quick ? 512 : 2048, rng);
  const kinds = ['ffn', 'ffn', 'ffn', 'ffn', 'constant', 'constant', 'copy', 'zero'];

  log('1. MoeLayer in your own model, tf.variableGrads loop (full batch)');
  const functional = trainFunctional(data, quick ? 30 : 150, rng, log);
  log(`   accuracy ${(100 * functional.accuracy).toFixed(1)}%; tokens per expert (${kinds.join(', ')}): ${functional.tokensPerExpert.join(', ')}`);

  log('2. MoeppLayer in a tf.sequential, model.fit (batches of 128)');
  const layers = await trainLayersModel(data, quick ? 10 : 40, seed, log);
  log(`   accuracy ${(100 * layers.accuracy).toFixed(1)}%; tokens per expert (${kinds.join(', ')}): ${layers.tokensPerExpert.join(', ')}`);

  tf.dispose([data.x, data.labels, data.oneHot]);
  return {
    functionalLosses: functional.losses,
    layersLosses: layers.losses,
    functionalAccuracy: functional.accuracy,
    layersAccuracy: layers.accuracy,
    functionalTokensPerExpert: functional.tokensPerExpert,
    layersTokensPerExpert: layers.tokensPerExpert,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const backend = await initBackend({ backend: 'wasm' });
  console.log(`backend: ${backend.summary}`);
  await runBringYourOwnModel({ quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
}
