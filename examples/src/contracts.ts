/**
 * The checks a router or an expert of your own must pass to work in the kit's sparse layers. They are
 * plain functions that throw (no test-runner dependency): call them from your tests, as
 * `extending.test.ts` does for the example's `CosineRouter` and `LowRankExpert`.
 *
 * What they hold a component to is the contract in `@moepp/routers` `src/types.ts` (`Router`,
 * `RouterOutput`) and `@moepp/experts` `src/types.ts` (`Expert`), plus what the layer needs in practice:
 * indices and the keep mask off the gradient tape, padding routed nowhere, no leaked tensors, one expert
 * output per token whatever the other tokens in the batch.
 *
 * Shapes: `N` tokens, `D` model width, `E` experts, `K` assignments per token.
 */
import * as tf from '@tensorflow/tfjs';
import { EXPERT_KINDS, planDispatch, randomNormal, SeededRandom, ShapeError } from '@moepp/tensors-core';
import { disposeRouterOutput, type Router, type RouterOutput } from '@moepp/routers';
import type { Expert } from '@moepp/experts';

/** Thrown by the checks; the message starts with the component and the check that failed. */
export class ContractError extends Error {
  override readonly name = 'ContractError';
}

function fail(component: string, check: string, detail: string): never {
  throw new ContractError(`${component}: ${check}: ${detail}`);
}

function expectShape(component: string, what: string, tensor: tf.Tensor, shape: readonly number[], dtype: string): void {
  if (tensor.shape.join() !== shape.join() || tensor.dtype !== dtype) {
    fail(component, 'output shapes', `${what} must be [${shape.join(', ')}] ${dtype}, got [${tensor.shape.join(', ')}] ${tensor.dtype}`);
  }
}

function rows(tensor: tf.Tensor): number[][] {
  return tensor.arraySync() as number[][];
}

function close(a: number, b: number, tolerance: number): boolean {
  return Math.abs(a - b) <= tolerance * (1 + Math.abs(b));
}

function tensorsOf(output: RouterOutput): tf.Tensor[] {
  return [
    output.expertIndices,
    output.combineWeights,
    output.keepMask,
    output.logits,
    output.probabilities,
    ...Object.values(output.auxLosses),
    output.stats.tokensPerExpert,
    output.stats.droppedAssignments,
    output.stats.ffnExpertsPerToken,
    output.stats.entropy,
  ];
}

/** Options of {@link checkRouterContract}. */
export interface RouterContractOptions {
  /** D, the router's token width. */
  readonly dim: number;
  /**
   * Whether the router renormalises a token's kept gates to sum to 1 (top-k with renormalisation,
   * Mixtral, the MoE++ code rule without zero experts). Default true; false skips that one check.
   */
  readonly gatesSumToOne?: boolean;
  /** Seeds the test tokens. Default 0. */
  readonly seed?: number;
}

/**
 * Checks that a router honours the `Router` contract and works under a sparse layer's backward pass.
 * Runs in inference mode except for the gradient check (`training: true`). Leaves the router as it was.
 *
 * @param router - the router under test (routing over `router.numExperts` experts)
 * @param options - see {@link RouterContractOptions}
 * @throws {@link ContractError} naming the check that failed
 */
export function checkRouterContract(router: Router, options: RouterContractOptions): void {
  const component = router.constructor.name;
  const numTokens = 6;
  const { numExperts, topK } = router;
  if (!Number.isInteger(numExperts) || !Number.isInteger(topK) || topK < 1 || topK > numExperts) {
    fail(component, 'sizes', `numExperts and topK must be integers with 1 <= topK <= numExperts, got E ${numExperts}, K ${topK}`);
  }
  for (const [name, variable] of Object.entries(router.weights)) {
    if (!(variable instanceof tf.Variable) || !variable.trainable) fail(component, 'weights', `'${name}' must be a trainable tf.Variable`);
  }
  const x = randomNormal([numTokens, options.dim], new SeededRandom(options.seed ?? 0)) as tf.Tensor2D; // [N, D]
  const tokenMask = tf.tensor1d([1, 1, 1, 1, 1, 0]); // the last token is padding
  const realX = tf.slice(x, [0, 0], [numTokens - 1, options.dim]) as tf.Tensor2D;
  try {
    // Ownership: route() returns new tensors only, and disposeRouterOutput frees them all.
    const before = tf.memory().numTensors;
    const out = router.route(x);
    const returned = new Set(tensorsOf(out).map((t) => t.id)).size;
    if (tf.memory().numTensors !== before + returned) {
      fail(component, 'no leak', `route() left ${tf.memory().numTensors - before} new tensors alive but returned ${returned}`);
    }
    try {
      checkOutput(component, out, numTokens, numExperts, topK, options.gatesSumToOne ?? true);
      // Inference is deterministic.
      const again = router.route(x);
      const same = rows(again.expertIndices).join() === rows(out.expertIndices).join() && rows(again.combineWeights).join() === rows(out.combineWeights).join();
      disposeRouterOutput(again);
      if (!same) fail(component, 'determinism', 'routing the same tokens twice (training off) gave different indices or gates');
    } finally {
      disposeRouterOutput(out);
    }
    if (tf.memory().numTensors !== before) fail(component, 'no leak', `${tf.memory().numTensors - before} tensors alive after disposeRouterOutput`);

    checkPadding(component, router, x, realX, tokenMask);
    checkBackward(component, router, x);
    checkErrors(component, router, options.dim, numTokens);
  } finally {
    tf.dispose([x, tokenMask, realX]);
  }
}

function checkOutput(component: string, out: RouterOutput, numTokens: number, numExperts: number, topK: number, gatesSumToOne: boolean): void {
  expectShape(component, 'expertIndices', out.expertIndices, [numTokens, topK], 'int32');
  expectShape(component, 'combineWeights', out.combineWeights, [numTokens, topK], 'float32');
  expectShape(component, 'keepMask', out.keepMask, [numTokens, topK], 'float32');
  expectShape(component, 'logits', out.logits, [numTokens, numExperts], 'float32');
  expectShape(component, 'probabilities', out.probabilities, [numTokens, numExperts], 'float32');
  expectShape(component, 'stats.tokensPerExpert', out.stats.tokensPerExpert, [numExperts], 'float32');
  for (const [name, scalar] of Object.entries({ ...out.auxLosses, droppedAssignments: out.stats.droppedAssignments, ffnExpertsPerToken: out.stats.ffnExpertsPerToken, entropy: out.stats.entropy })) {
    expectShape(component, name, scalar, [], 'float32');
    if (!Number.isFinite(scalar.dataSync()[0])) fail(component, 'finite values', `${name} is ${scalar.dataSync()[0]}`);
  }
  if (!(out.expertInputScale > 0)) fail(component, 'expertInputScale', `must be a positive number, got ${out.expertInputScale}`);

  const indices = rows(out.expertIndices);
  const gates = rows(out.combineWeights);
  const keep = rows(out.keepMask);
  const counts = new Array<number>(numExperts).fill(0);
  indices.forEach((row, n) => {
    if (row.some((e) => !Number.isInteger(e) || e < 0 || e >= numExperts)) fail(component, 'indices', `token ${n} has indices ${row} outside [0, ${numExperts})`);
    if (new Set(row).size !== row.length) fail(component, 'indices', `token ${n} picks an expert twice: ${row}`);
    row.forEach((e, k) => {
      if (keep[n]![k] !== 0 && keep[n]![k] !== 1) fail(component, 'keepMask', `must be 0 or 1, got ${keep[n]![k]} at [${n}, ${k}]`);
      if (!(gates[n]![k]! >= 0)) fail(component, 'combineWeights', `must be >= 0, got ${gates[n]![k]} at [${n}, ${k}]`);
      if (keep[n]![k] === 0 && gates[n]![k] !== 0) fail(component, 'combineWeights', `must be 0 where keepMask is 0, got ${gates[n]![k]} at [${n}, ${k}]`);
      if (keep[n]![k] === 1) counts[e]! += 1;
    });
    const sum = gates[n]!.reduce((a, b) => a + b, 0);
    if (gatesSumToOne && keep[n]!.every((v) => v === 1) && !close(sum, 1, 1e-5)) fail(component, 'gates sum to 1', `token ${n}'s gates sum to ${sum}`);
  });
  rows(out.probabilities).forEach((row, n) => {
    const sum = row.reduce((a, b) => a + b, 0);
    if (!close(sum, 1, 1e-5) || row.some((p) => p < 0)) fail(component, 'probabilities', `token ${n}'s probabilities must be >= 0 and sum to 1, sum ${sum}`);
  });
  const reported = Array.from(out.stats.tokensPerExpert.dataSync());
  if (reported.some((c, e) => c !== counts[e])) fail(component, 'stats.tokensPerExpert', `must count kept assignments ${counts}, got ${reported}`);
}

/** Padding (tokenMask 0) is kept nowhere and leaves losses and statistics as if it were not there. */
function checkPadding(component: string, router: Router, x: tf.Tensor2D, realX: tf.Tensor2D, tokenMask: tf.Tensor1D): void {
  const masked = router.route(x, { tokenMask });
  const real = router.route(realX);
  try {
    const last = x.shape[0] - 1;
    if (rows(masked.keepMask)[last]!.some((v) => v !== 0) || rows(masked.combineWeights)[last]!.some((v) => v !== 0)) {
      fail(component, 'padding', 'a padding token (tokenMask 0) must have keepMask and combineWeights 0');
    }
    for (const [name, loss] of Object.entries(masked.auxLosses)) {
      const expected = real.auxLosses[name]?.dataSync()[0];
      if (expected === undefined || !close(loss.dataSync()[0]!, expected, 1e-4)) {
        fail(component, 'padding', `aux loss '${name}' with a padding token is ${loss.dataSync()[0]}, without it ${expected}`);
      }
    }
    const counts = Array.from(masked.stats.tokensPerExpert.dataSync()).join();
    if (counts !== Array.from(real.stats.tokensPerExpert.dataSync()).join()) fail(component, 'padding', `tokensPerExpert counts the padding token: ${counts}`);
  } finally {
    disposeRouterOutput(masked);
    disposeRouterOutput(real);
  }
}

/**
 * A sparse layer's backward pass: gates gathered by the dispatch plan, plus the aux losses, with a
 * previous layer's logits given. Every router weight must receive a finite gradient, and the keep mask
 * must not be reachable from the router weights on the gradient tape.
 */
function checkBackward(component: string, router: Router, x: tf.Tensor2D): void {
  const variables = Object.values(router.weights);
  if (variables.length === 0) return;
  tf.tidy(() => {
    let grads: tf.NamedTensorMap;
    try {
      ({ grads } = tf.variableGrads(() => {
        // previousLogits reaches a gating residual (MoE++ gate_map); routers without one ignore it.
        const previousLogits = randomNormal([x.shape[0], router.numExperts], new SeededRandom(1)) as tf.Tensor2D; // [N, E]
        const out = router.route(x, { training: true, previousLogits });
        const plan = planDispatch(out.expertIndices, router.numExperts, out.keepMask);
        const slotGates = tf.gather(out.combineWeights.reshape([-1]), plan.allSlotIds); // [kept] as the layer reads them
        const weights = tf.linspace(0.5, 1.5, slotGates.shape[0]); // distinct weights, so the gradient is not 0
        const auxTotal = Object.values(out.auxLosses).reduce<tf.Tensor>((sum, loss) => tf.add(sum, loss), tf.scalar(0));
        return tf.add(tf.sum(tf.mul(slotGates, weights)), auxTotal) as tf.Scalar;
      }, variables));
    } catch (error) {
      fail(component, 'backward', `a sparse layer's backward pass threw: ${(error as Error).message} (keep expertIndices and keepMask off the gradient tape)`);
    }
    for (const [name, variable] of Object.entries(router.weights)) {
      const gradient = grads[variable.name];
      if (!gradient) fail(component, 'backward', `weight '${name}' got no gradient from the gates and aux losses`);
      if (!Array.from(gradient.dataSync()).every(Number.isFinite)) fail(component, 'backward', `weight '${name}' has a non-finite gradient`);
    }
    // The keep mask is a decision, not a differentiable value: nothing on the tape may lead from the
    // router's weights to it (tfjs then refuses to differentiate it at all).
    let keepMaskOnTape = true;
    try {
      tf.variableGrads(() => tf.sum(router.route(x, { training: true }).keepMask) as tf.Scalar, variables);
    } catch {
      keepMaskOnTape = false;
    }
    if (keepMaskOnTape) fail(component, 'backward', 'the keep mask depends on the router weights on the gradient tape (compute it from detached values)');
  });
}

/** Mis-shaped inputs are refused with a ShapeError that names the argument. */
function checkErrors(component: string, router: Router, dim: number, numTokens: number): void {
  tf.tidy(() => {
    const cases: [string, () => unknown][] = [
      ['x', () => router.route(tf.zeros([numTokens, dim + 1]) as tf.Tensor2D)],
      ['tokenMask', () => router.route(tf.zeros([numTokens, dim]) as tf.Tensor2D, { tokenMask: tf.ones([numTokens + 1]) as tf.Tensor1D })],
    ];
    for (const [argument, call] of cases) {
      let error: unknown = null;
      try {
        const out = call() as RouterOutput;
        disposeRouterOutput(out);
      } catch (caught) {
        error = caught;
      }
      if (!(error instanceof ShapeError) || !error.message.includes(`'${argument}'`)) {
        fail(component, 'errors', `a mis-shaped '${argument}' must throw a ShapeError naming '${argument}', got ${error === null ? 'no error' : String(error)}`);
      }
    }
  });
}

/**
 * Checks that an expert honours the `Expert` contract: `[N, D] -> [N, D]` float32, per token (a token's
 * output does not depend on the other tokens of the batch, since the layer hands each expert an
 * arbitrary subset), new tensors only, gradients for every weight, honest parameter and FLOP counts,
 * ShapeErrors for bad input, and `dispose()` frees the weights. The expert is disposed at the end.
 *
 * @param expert - the expert under test
 * @param seed - seeds the test tokens. Default 0.
 * @throws {@link ContractError} naming the check that failed
 */
export function checkExpertContract(expert: Expert, seed = 0): void {
  const component = `${expert.constructor.name} '${expert.name}'`;
  const dim = expert.dim;
  if (!EXPERT_KINDS.includes(expert.kind)) fail(component, 'kind', `must be one of ${EXPERT_KINDS.join(', ')}, got '${expert.kind}'`);
  if (typeof expert.name !== 'string' || expert.name.length === 0) fail(component, 'name', 'must be a non-empty string');
  const x = randomNormal([5, dim], new SeededRandom(seed)) as tf.Tensor2D; // [N, D]
  try {
    const before = tf.memory().numTensors;
    const y = expert.apply(x);
    if (tf.memory().numTensors !== before + 1) fail(component, 'no leak', `apply() left ${tf.memory().numTensors - before} new tensors alive, expected 1`);
    try {
      expectShape(component, 'apply(x)', y, [5, dim], 'float32');
      if (y === x) fail(component, 'ownership', 'apply() must return a new tensor, not its input (the caller disposes it)');
      const batch = rows(y);
      const oneByOne = [0, 1, 2, 3, 4].map((n) =>
        tf.tidy(() => rows(expert.apply(tf.slice(x, [n, 0], [1, dim]) as tf.Tensor2D))[0]!),
      );
      oneByOne.forEach((row, n) => {
        if (row.some((v, d) => !close(v, batch[n]![d]!, 1e-4))) fail(component, 'per token', `token ${n}'s output changes with the rest of the batch`);
      });
      if (expert.kind === 'zero' && batch.flat().some((v) => v !== 0)) fail(component, 'zero expert', 'must output zeros');
      if (expert.kind === 'copy' && rows(x).flat().some((v, i) => v !== batch.flat()[i])) fail(component, 'copy expert', 'must output its input');
    } finally {
      y.dispose();
    }
  } finally {
    x.dispose();
  }

  const variables = Object.entries(expert.weights);
  const size = variables.reduce((sum, [, variable]) => sum + variable.size, 0);
  if (expert.parameterCount() !== size) fail(component, 'parameterCount', `says ${expert.parameterCount()}, the weights hold ${size}`);
  const flops = expert.flopsPerToken();
  if (!Number.isFinite(flops) || flops < 0) fail(component, 'flopsPerToken', `must be a finite number >= 0, got ${flops}`);
  if ((expert.kind === 'zero' || expert.kind === 'copy') && flops !== 0) fail(component, 'flopsPerToken', `a ${expert.kind} expert costs nothing, got ${flops}`);

  if (variables.length > 0) {
    tf.tidy(() => {
      const input = randomNormal([4, dim], new SeededRandom(seed + 1)) as tf.Tensor2D;
      const weights = randomNormal([4, dim], new SeededRandom(seed + 2));
      const { grads } = tf.variableGrads(() => tf.sum(tf.mul(expert.apply(input), weights)) as tf.Scalar, variables.map(([, v]) => v));
      for (const [name, variable] of variables) {
        const gradient = grads[variable.name];
        if (!gradient || !Array.from(gradient.dataSync()).every(Number.isFinite)) fail(component, 'gradients', `weight '${name}' got no finite gradient`);
      }
    });
  }

  tf.tidy(() => {
    let error: unknown = null;
    try {
      expert.apply(tf.zeros([3, dim + 1]) as tf.Tensor2D);
    } catch (caught) {
      error = caught;
    }
    if (!(error instanceof ShapeError)) fail(component, 'errors', `apply() on [3, ${dim + 1}] must throw a ShapeError, got ${error === null ? 'no error' : String(error)}`);
  });

  expert.dispose();
  const alive = variables.filter(([, variable]) => !variable.isDisposed).map(([name]) => name);
  if (alive.length > 0) fail(component, 'dispose', `weights still alive after dispose(): ${alive.join(', ')}`);
}
