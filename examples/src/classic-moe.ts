/**
 * Example: a classic, dense mixture of experts (Jacobs, Jordan, Nowlan & Hinton 1991) on a synthetic
 * 3-class problem, with tfjs directly and `SoftMixture` from `@moepp/experts`.
 *
 *   1. A seeded dataset: 4 features, 3 classes; each class shifts one feature (class 0: x0 + 1,
 *      class 1: x1 − 1, class 2: x0 − 1), so the classes overlap and no classifier is perfect.
 *   2. Three small MLP experts (4 → 32 → ReLU → 3), each trained on a biased subset of the training set
 *      that holds only two of the three labels: {0, 1}, {1, 2} and {2, 0}. Each expert alone never
 *      predicts the label it has not seen, so it is wrong on at least a third of the test set.
 *   3. The experts are frozen; a softmax gating network (three linear layers, ReLU and LeakyReLU,
 *      dropout) is trained on the whole training set to weight their class probabilities:
 *      `p(y | x) = Σ_i g_i(x) · p_i(y | x)`, loss `−log p(y | x)`.
 *   4. A table of the test accuracy of each expert and of the mixture. The mixture beats every expert:
 *      the gate learns which expert knows which part of the input space.
 *
 * Run it:   npm run example:classic -w @moepp/examples             (under a minute on 2 cores)
 *           npm run example:classic -w @moepp/examples -- --quick  (the smaller run the test uses)
 *
 * Everything random (data, initial weights, batch order, dropout masks) comes from `SeededRandom`, so a
 * run prints the same numbers every time on the same backend.
 *
 * Shapes: `N` examples, `D` features (4), `H` hidden units, `C` classes (3), `E` experts (3).
 */
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend, kaimingUniform, randomUniform, SeededRandom } from '@moepp/tensors-core';
import { SoftMixture } from '@moepp/experts';

/** Settings of {@link runClassicMoe}. */
export interface ClassicMoeOptions {
  /** A smaller dataset and fewer epochs (what the test runs). Default false. */
  readonly quick?: boolean;
  /** Seeds the data, the weights, the batch order and the dropout masks. Default 0. */
  readonly seed?: number;
  /** Where the table goes. Default: nowhere. */
  readonly log?: (line: string) => void;
}

/** What {@link runClassicMoe} measured. */
export interface ClassicMoeResult {
  /** The labels each expert was trained on. */
  readonly expertLabels: readonly (readonly number[])[];
  /** Test accuracy of each expert alone, in [0, 1]. */
  readonly expertAccuracies: readonly number[];
  /** Test accuracy of the gated mixture, in [0, 1]. */
  readonly mixtureAccuracy: number;
  /** Mean gate weight of each expert, per true test label: `[C][E]`. */
  readonly gateByLabel: readonly (readonly number[])[];
  /** Training and test set sizes. */
  readonly trainSize: number;
  readonly testSize: number;
}

const FEATURES = 4;
const CLASSES = 3;
/** The labels each expert sees: a biased subset per expert. */
const EXPERT_LABELS: readonly (readonly number[])[] = [
  [0, 1],
  [1, 2],
  [2, 0],
];

/** A labelled dataset on the host. */
interface Dataset {
  /** `[N, D]` row-major features. */
  readonly features: Float32Array;
  /** `[N]` labels in `[0, C)`. */
  readonly labels: Int32Array;
  readonly size: number;
}

/**
 * The synthetic dataset: `x ~ N(0, I_4)` shifted by its class, labels uniform over the three classes.
 *
 * @param size - N
 * @param rng - the generator
 * @returns the dataset
 */
function makeDataset(size: number, rng: SeededRandom): Dataset {
  const features = new Float32Array(size * FEATURES);
  const labels = new Int32Array(size);
  for (let n = 0; n < size; n++) {
    const label = rng.int(CLASSES);
    labels[n] = label;
    for (let d = 0; d < FEATURES; d++) features[n * FEATURES + d] = rng.normal();
    if (label === 0) features[n * FEATURES + 0]! += 1;
    if (label === 1) features[n * FEATURES + 1]! -= 1;
    if (label === 2) features[n * FEATURES + 0]! -= 1;
  }
  return { features, labels, size };
}

/** The rows of `data` whose label is in `keep`. */
function subset(data: Dataset, keep: readonly number[]): Dataset {
  const rows = [...data.labels.keys()].filter((n) => keep.includes(data.labels[n]!));
  const features = new Float32Array(rows.length * FEATURES);
  rows.forEach((row, i) => features.set(data.features.subarray(row * FEATURES, (row + 1) * FEATURES), i * FEATURES));
  return { features, labels: Int32Array.from(rows, (row) => data.labels[row]!), size: rows.length };
}

/** One linear layer `x·W + b` with PyTorch's default initialisation (`U(±1/√in)`). */
interface Linear {
  readonly kernel: tf.Variable; // [in, out]
  readonly bias: tf.Variable; // [out]
}

function linear(inputs: number, outputs: number, rng: SeededRandom): Linear {
  const bound = 1 / Math.sqrt(inputs);
  return {
    kernel: tf.variable(kaimingUniform([inputs, outputs], rng, { gain: 1 / Math.sqrt(3) })),
    bias: tf.variable(randomUniform([outputs], rng, -bound, bound)),
  };
}

function applyLinear(layer: Linear, x: tf.Tensor2D): tf.Tensor2D {
  return tf.add(tf.matMul(x, layer.kernel), layer.bias) as tf.Tensor2D;
}

/** Inverted dropout with a seeded mask (tfjs's own dropout draws from `Math.random` or repeats one seed). */
function dropout(x: tf.Tensor2D, rate: number, rng: SeededRandom): tf.Tensor2D {
  const keep = tf.cast(tf.greaterEqual(randomUniform(x.shape, rng), rate), 'float32'); // [N, H] 0/1
  return tf.div(tf.mul(x, keep), 1 - rate) as tf.Tensor2D;
}

/**
 * Trains `variables` with Adam on `lossOf(batch)` for `epochs` passes over `data` in shuffled mini-batches.
 */
function fit(
  data: Dataset,
  variables: tf.Variable[],
  lossOf: (x: tf.Tensor2D, y: tf.Tensor1D) => tf.Scalar,
  settings: { epochs: number; batchSize: number; learningRate: number; rng: SeededRandom },
): void {
  const optimizer = tf.train.adam(settings.learningRate);
  const order = [...Array(data.size).keys()];
  for (let epoch = 0; epoch < settings.epochs; epoch++) {
    settings.rng.shuffle(order);
    for (let start = 0; start < data.size; start += settings.batchSize) {
      const rows = order.slice(start, start + settings.batchSize);
      const features = new Float32Array(rows.length * FEATURES);
      rows.forEach((row, i) => features.set(data.features.subarray(row * FEATURES, (row + 1) * FEATURES), i * FEATURES));
      tf.tidy(() => {
        const x = tf.tensor2d(features, [rows.length, FEATURES]); // [B, D]
        const y = tf.tensor1d(Int32Array.from(rows, (row) => data.labels[row]!), 'int32'); // [B]
        optimizer.minimize(() => lossOf(x, y), false, variables);
      });
    }
  }
  optimizer.dispose();
}

/** Mean `−log p[y]` of `[N, C]` class probabilities. */
function negativeLogLikelihood(probabilities: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  const picked = tf.sum(tf.mul(probabilities, tf.oneHot(labels, CLASSES).toFloat()), 1); // [N]
  return tf.neg(tf.mean(tf.log(tf.maximum(picked, 1e-7)))) as tf.Scalar;
}

/** Share of rows whose most probable class is the label. */
function accuracy(probabilities: tf.Tensor2D, labels: Int32Array): number {
  const predicted = tf.tidy(() => tf.argMax(probabilities, 1).dataSync());
  return labels.reduce((hits, label, n) => hits + (predicted[n] === label ? 1 : 0), 0) / labels.length;
}

/**
 * Trains the three experts, then the gate, and measures them on the test set.
 *
 * @param options - see {@link ClassicMoeOptions}
 * @returns the accuracies and the gate's mean weights per label
 */
export async function runClassicMoe(options: ClassicMoeOptions = {}): Promise<ClassicMoeResult> {
  const quick = options.quick ?? false;
  const log = options.log ?? (() => {});
  const rng = new SeededRandom(options.seed ?? 0);
  const sizes = quick ? { train: 1500, test: 1000, expertEpochs: 10, gateEpochs: 15 } : { train: 5000, test: 3000, expertEpochs: 30, gateEpochs: 40 };
  const train = makeDataset(sizes.train, rng);
  const test = makeDataset(sizes.test, rng);

  // Experts: 4 -> 32 -> ReLU -> 3 class probabilities, each trained on two labels only.
  const experts = EXPERT_LABELS.map((labels) => {
    const layers = [linear(FEATURES, 32, rng), linear(32, CLASSES, rng)] as const;
    const forward = (x: tf.Tensor2D): tf.Tensor2D => tf.softmax(applyLinear(layers[1], tf.relu(applyLinear(layers[0], x)))) as tf.Tensor2D; // [N, C]
    const variables = layers.flatMap((layer) => [layer.kernel, layer.bias]);
    fit(subset(train, labels), variables, (x, y) => negativeLogLikelihood(forward(x), y), {
      epochs: sizes.expertEpochs,
      batchSize: 32,
      learningRate: 1e-2,
      rng,
    });
    return { forward, variables };
  });

  // Gate: 4 -> 64 -> ReLU -> dropout -> 64 -> LeakyReLU -> dropout -> 3 logits (SoftMixture applies the softmax).
  const gateLayers = [linear(FEATURES, 64, rng), linear(64, 64, rng), linear(64, experts.length, rng)] as const;
  let training = false;
  const gate = (x: tf.Tensor2D): tf.Tensor2D => {
    let hidden = tf.relu(applyLinear(gateLayers[0], x)) as tf.Tensor2D; // [N, H]
    if (training) hidden = dropout(hidden, 0.1, rng);
    hidden = tf.leakyRelu(applyLinear(gateLayers[1], hidden), 0.01) as tf.Tensor2D; // [N, H]
    if (training) hidden = dropout(hidden, 0.1, rng);
    return applyLinear(gateLayers[2], hidden); // [N, E]
  };
  const gateVariables = gateLayers.flatMap((layer) => [layer.kernel, layer.bias]);
  const mixture = new SoftMixture({
    gate,
    experts: experts.map((expert) => expert.forward),
    weights: Object.fromEntries([...experts.flatMap((e) => e.variables), ...gateVariables].map((v, i) => [`w${i}`, v])),
  });

  // The experts are frozen: only the gate's variables are passed to the optimiser.
  training = true;
  fit(
    train,
    gateVariables,
    (x, y) => {
      const { output, gateProbabilities, expertOutputs } = mixture.apply(x); // output [N, C]: Σ_i g_i · p_i
      tf.dispose([gateProbabilities, expertOutputs]);
      return negativeLogLikelihood(output, y);
    },
    { epochs: sizes.gateEpochs, batchSize: 64, learningRate: 1e-3, rng },
  );
  training = false;

  const x = tf.tensor2d(test.features, [test.size, FEATURES]); // [N, D]
  const expertAccuracies = experts.map((expert) => tf.tidy(() => accuracy(expert.forward(x), test.labels)));
  const { output, gateProbabilities, expertOutputs } = mixture.apply(x);
  const mixtureAccuracy = accuracy(output, test.labels);
  const gates = gateProbabilities.arraySync(); // [N, E]
  const gateByLabel = [...Array(CLASSES).keys()].map((label) => {
    const rows = gates.filter((_, n) => test.labels[n] === label);
    return experts.map((_, e) => rows.reduce((sum, row) => sum + row[e]!, 0) / rows.length);
  });
  tf.dispose([x, output, gateProbabilities, expertOutputs]);
  mixture.dispose();

  const percent = (value: number) => `${(100 * value).toFixed(1)}%`;
  log(`train ${train.size} / test ${test.size} examples, ${FEATURES} features, ${CLASSES} classes`);
  log('');
  const row = (name: string, cells: readonly string[]) => log(`${name.padEnd(24)}${cells.map((c) => c.padStart(10)).join('')}`);
  row('model', ['test acc.']);
  experts.forEach((_, e) => row(`expert ${e + 1} (labels ${EXPERT_LABELS[e]!.join(', ')})`, [percent(expertAccuracies[e]!)]));
  row('mixture (gated)', [percent(mixtureAccuracy)]);
  log('');
  row('mean gate weight', experts.map((_, e) => `expert ${e + 1}`));
  gateByLabel.forEach((weights, label) => row(`  on label ${label}`, weights.map((g) => g.toFixed(2))));
  return { expertLabels: EXPERT_LABELS, expertAccuracies, mixtureAccuracy, gateByLabel, trainSize: train.size, testSize: test.size };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const backend = await initBackend({ backend: 'wasm' });
  console.log(`backend: ${backend.summary}`);
  await runClassicMoe({ quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
}
