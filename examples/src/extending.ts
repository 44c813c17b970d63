/**
 * Example: a router and an expert of your own, written against the kit's contracts, and a small sparse
 * layer that runs them with the kit's dispatch primitives.
 *
 * - `CosineRouter` implements `Router` from `@moepp/routers` (`src/types.ts`): cosine-similarity routing
 *   as in X-MoE (Chi et al. 2022, arXiv 2204.09179): tokens are projected to a small space, L2-normalised
 *   and compared with learned, L2-normalised expert embeddings; `logits = cos / temperature`, softmax,
 *   top-K, gates renormalised to sum to 1. Aux losses come from the package's pure functions.
 * - `LowRankExpert` implements `Expert` from `@moepp/experts` (`src/types.ts`): `E(x) = tanh(x·A)·B`
 *   with `A: [D, R]`, `B: [R, D]`, a cheap expert between a copy expert and an FFN.
 * - `sparseMoeForward` routes `[N, D]` tokens and runs each expert on its own tokens only
 *   (`planDispatch`, `gatherRows`, `scatterAddRows` from `@moepp/tensors-core`), as `MoeLayer` does.
 *   (`MoeLayer` itself builds the MoE++ router and its expert pool from its config; it has no option to
 *   take a router or experts of your own, so a custom router runs in a layer like this one.)
 * - `runExtending` trains router + 3 low-rank experts + a zero expert on a toy regression whose target
 *   depends on the region of the input, and prints the loss and where the tokens went.
 *
 * `src/contracts.ts` holds the checks every router and expert must pass; `src/extending.test.ts` runs
 * them on these two (and on the kit's own `TopKRouter` and `FfnExpert`, to show the checks are right).
 *
 * Run it:   npm run example:extending -w @moepp/examples             (a few seconds)
 *           npm run example:extending -w @moepp/examples -- --quick  (the shorter run the test uses)
 *
 * Shapes: `N` tokens, `D` model width, `R` low rank / router projection width, `E` experts, `K` top-k.
 */
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import {
  checkNumber,
  checkShape,
  ConfigError,
  gatherRows,
  initBackend,
  planDispatch,
  randomNormal,
  scatterAddRows,
  SeededRandom,
  type ExpertKind,
} from '@moepp/tensors-core';
import { computeRoutingStats, readRoutingStatsSync, routerZLoss, switchLoadBalanceLoss, type RouteOptions, type Router, type RouterOutput } from '@moepp/routers';
import { ZeroExpert, type Expert } from '@moepp/experts';

/** Configuration of a {@link CosineRouter}. */
export interface CosineRouterConfig {
  /** D, the token width. */
  readonly dim: number;
  /** E, the number of experts. */
  readonly numExperts: number;
  /** K, experts per token, in [1, E]. Default 2. */
  readonly topK?: number;
  /** Width of the space tokens and experts are compared in. Default 8 (X-MoE uses a small one too). */
  readonly projectionDim?: number;
  /** Softmax temperature of the cosine logits (> 0). Default 0.3. */
  readonly temperature?: number;
  /** The kind of each expert (only the FFN-per-token statistic reads it). Default all `'ffn'`. */
  readonly expertKinds?: readonly ExpertKind[];
  /** Draws the initial weights. */
  readonly rng: SeededRandom;
}

/**
 * A copy of `x` off the gradient tape. Top-k selection must run on one: tfjs records every op between
 * the variables and the loss, and the integer ops that turn indices into masks (`Equal`, …) have no
 * gradient. The kit's routers do the same. Reads the values back, so keep it to small `[N, E]` tensors.
 */
function detach<T extends tf.Tensor>(x: T): T {
  return tf.tensor(x.dataSync(), x.shape, x.dtype) as T;
}

/** Cosine-similarity top-k router (X-MoE). See the module notes. */
export class CosineRouter implements Router {
  readonly numExperts: number;
  readonly topK: number;
  /** D. */
  readonly dim: number;
  /** The softmax temperature. */
  readonly temperature: number;
  /** The kind of each expert. */
  readonly expertKinds: readonly ExpertKind[];
  readonly weights: Readonly<{
    /** `[D, R]` token projection. */
    projection: tf.Variable;
    /** `[R, E]` one embedding per expert (a column each). */
    expertEmbeddings: tf.Variable;
  }>;

  /**
   * @param config - see {@link CosineRouterConfig}
   * @throws ConfigError naming the field for a size that is not a positive integer, `topK` outside
   *   `[1, E]`, a temperature <= 0 or `expertKinds` of the wrong length
   */
  constructor(config: CosineRouterConfig) {
    const op = 'CosineRouter';
    this.dim = checkNumber(op, 'dim', config.dim, { integer: true, min: 1 });
    this.numExperts = checkNumber(op, 'numExperts', config.numExperts, { integer: true, min: 1 });
    this.topK = checkNumber(op, 'topK', config.topK ?? 2, { integer: true, min: 1, max: this.numExperts });
    this.temperature = checkNumber(op, 'temperature', config.temperature ?? 0.3, { greaterThan: 0 });
    const projectionDim = checkNumber(op, 'projectionDim', config.projectionDim ?? 8, { integer: true, min: 1 });
    this.expertKinds = config.expertKinds ?? new Array<ExpertKind>(this.numExperts).fill('ffn');
    if (this.expertKinds.length !== this.numExperts) {
      throw new ConfigError(`${op}: 'expertKinds' must list numExperts (${this.numExperts}) kinds, got ${this.expertKinds.length}`);
    }
    this.weights = {
      projection: tf.variable(randomNormal([this.dim, projectionDim], config.rng, 1 / Math.sqrt(this.dim))),
      expertEmbeddings: tf.variable(randomNormal([projectionDim, this.numExperts], config.rng, 1)),
    };
  }

  /**
   * Routes `[N, D]` tokens. See `Router.route`.
   *
   * @param x - `[N, D]` float32
   * @param options - `tokenMask` is honoured; `previousLogits` (no gating residual), `training` and `rng`
   *   (no noise) have no effect
   * @returns the routing decision; the caller owns its tensors (`disposeRouterOutput`)
   * @throws ShapeError naming the argument for a mis-shaped `x` or `tokenMask`
   */
  route(x: tf.Tensor2D, options: RouteOptions = {}): RouterOutput {
    const op = 'CosineRouter.route';
    const numTokens = checkShape(op, 'x', x, ['N', this.dim], 'float32').get('N')!;
    const tokenMask = options.tokenMask;
    if (tokenMask) checkShape(op, 'tokenMask', tokenMask, [numTokens], 'float32');
    const output = tf.tidy(() => {
      const tokenDirections = l2Normalize(tf.matMul(x, this.weights.projection), 1); // [N, R]
      const expertDirections = l2Normalize(this.weights.expertEmbeddings as tf.Tensor2D, 0); // [R, E]
      const logits = tf.div(tf.matMul(tokenDirections, expertDirections), this.temperature) as tf.Tensor2D; // [N, E] in [-1/t, 1/t]
      const probabilities = tf.softmax(logits) as tf.Tensor2D; // [N, E]

      // Select on a detached copy; pick the selected probabilities out differentiably with a one-hot product.
      const expertIndices = tf.topk(detach(probabilities), this.topK).indices as tf.Tensor2D; // [N, K] int32, largest first
      // One-hot by comparison with range(E): tf.oneHot refuses depth 1 (a 1-expert layer).
      const selection = tf.cast(tf.equal(tf.expandDims(expertIndices, 2), tf.range(0, this.numExperts, 1, 'int32')), 'float32'); // [N, K, E]
      const topProbabilities = tf.sum(tf.mul(selection, tf.expandDims(probabilities, 1)), 2); // [N, K]
      const gates = tf.div(topProbabilities, tf.sum(topProbabilities, 1, true)); // [N, K], rows sum to 1

      const realTokens = tokenMask ? tf.expandDims(tokenMask, 1) : tf.ones([numTokens, 1]); // [N, 1]
      // [N, K]: dropless, padding goes nowhere. Built from constants, not from `gates`: like the indices, the
      // mask is a decision and stays off the gradient tape (the layer groups the slots by it).
      const keepMask = tf.mul(tf.ones([numTokens, this.topK]), realTokens) as tf.Tensor2D;
      const combineWeights = tf.mul(gates, keepMask) as tf.Tensor2D; // [N, K]
      const auxLosses = {
        loadBalance: switchLoadBalanceLoss(probabilities, expertIndices, tokenMask), // unweighted
        zLoss: routerZLoss(logits, tokenMask),
      };
      const stats = computeRoutingStats({ expertIndices, keepMask, probabilities, expertKinds: this.expertKinds, ...(tokenMask ? { tokenMask } : {}) });
      const result: RouterOutput = { expertIndices, combineWeights, keepMask, logits, probabilities, auxLosses, stats, expertInputScale: 1 };
      return result as unknown as tf.TensorContainer; // tidy keeps every tensor of the record
    });
    return output as unknown as RouterOutput;
  }

  /** Disposes the router's variables. */
  dispose(): void {
    this.weights.projection.dispose();
    this.weights.expertEmbeddings.dispose();
  }
}

/** `x / ||x||` along `axis` (with a floor, so an all-zero row stays 0). */
function l2Normalize(x: tf.Tensor2D, axis: number): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.maximum(tf.sum(tf.square(x), axis, true), 1e-12))) as tf.Tensor2D;
}

/** Configuration of a {@link LowRankExpert}. */
export interface LowRankExpertConfig {
  /** D. */
  readonly dim: number;
  /** R, the rank (>= 1). */
  readonly rank: number;
  /** A name unique within its layer. Default `'low-rank'`. */
  readonly name?: string;
  /** Draws the initial weights. */
  readonly rng: SeededRandom;
}

/**
 * `E(x) = tanh(x·A)·B`, `A: [D, R]`, `B: [R, D]`. It computes, so its kind is `'ffn'`: `ExpertKind` is a
 * closed vocabulary (`ffn`, `zero`, `copy`, `constant`) that routers read for the zero-expert gate rule,
 * the heterogeneous loss and the FFN-per-token statistic.
 */
export class LowRankExpert implements Expert {
  readonly kind = 'ffn' as const;
  readonly name: string;
  readonly dim: number;
  /** R. */
  readonly rank: number;
  readonly weights: Readonly<{ down: tf.Variable; up: tf.Variable }>;

  /**
   * @param config - see {@link LowRankExpertConfig}
   * @throws ConfigError naming the field for a size that is not a positive integer
   */
  constructor(config: LowRankExpertConfig) {
    this.dim = checkNumber('LowRankExpert', 'dim', config.dim, { integer: true, min: 1 });
    this.rank = checkNumber('LowRankExpert', 'rank', config.rank, { integer: true, min: 1 });
    this.name = config.name ?? 'low-rank';
    this.weights = {
      down: tf.variable(randomNormal([this.dim, this.rank], config.rng, 1 / Math.sqrt(this.dim))), // [D, R]
      up: tf.variable(randomNormal([this.rank, this.dim], config.rng, 1 / Math.sqrt(this.rank))), // [R, D]
    };
  }

  /**
   * @param x - `[N, D]` float32
   * @returns `[N, D]` float32, a new tensor
   * @throws ShapeError when `x` is not `[N, D]` float32
   */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    checkShape('LowRankExpert.apply', 'x', x, [null, this.dim], 'float32');
    return tf.tidy(() => tf.matMul(tf.tanh(tf.matMul(x, this.weights.down)), this.weights.up)); // [N, D]
  }

  /** @returns `2·D·R` */
  parameterCount(): number {
    return 2 * this.dim * this.rank;
  }

  /** @returns `4·D·R + R`: two matmuls (a multiply-add is 2 FLOPs) and R tanh */
  flopsPerToken(): number {
    return 4 * this.dim * this.rank + this.rank;
  }

  /** Disposes the weights. */
  dispose(): void {
    this.weights.down.dispose();
    this.weights.up.dispose();
  }
}

/**
 * A sparse MoE forward pass over any router and experts: route, group the kept assignments by expert,
 * run each expert once on its own tokens, scale by the gates, scatter-add back.
 *
 * @param x - `[N, D]` float32 tokens
 * @param router - any `Router` over `experts.length` experts
 * @param experts - the experts, in the router's order
 * @param options - passed to `router.route`
 * @returns `output [N, D]` and the router's full record (the caller disposes both)
 * @throws ConfigError when the router and the expert list disagree on E
 */
export function sparseMoeForward(
  x: tf.Tensor2D,
  router: Router,
  experts: readonly Expert[],
  options: RouteOptions = {},
): { output: tf.Tensor2D; routing: RouterOutput } {
  if (router.numExperts !== experts.length) {
    throw new ConfigError(`sparseMoeForward: the router routes over ${router.numExperts} experts, got ${experts.length} experts`);
  }
  const routing = router.route(x, options);
  const output = tf.tidy(() => {
    const plan = planDispatch(routing.expertIndices, experts.length, routing.keepMask); // slots grouped by expert on the host
    const flatGates = routing.combineWeights.reshape([-1]); // [N·K]
    const outputs: tf.Tensor2D[] = [];
    const destinations: tf.Tensor1D[] = [];
    experts.forEach((expert, e) => {
      if (plan.counts[e] === 0 || expert.kind === 'zero') return; // a zero expert costs nothing
      const tokenIds = plan.tokenIds[e]!; // [n_e] int32
      const gates = tf.gather(flatGates, plan.slotIds[e]!).reshape([-1, 1]); // [n_e, 1]
      outputs.push(tf.mul(expert.apply(gatherRows(x, tokenIds)), gates) as tf.Tensor2D); // [n_e, D]
      destinations.push(tokenIds);
    });
    if (outputs.length === 0) return tf.zerosLike(x);
    return scatterAddRows(tf.concat(outputs, 0), tf.concat(destinations, 0), x.shape[0]); // [N, D]
  });
  return { output, routing };
}

/** Settings of {@link runExtending}. */
export interface ExtendingOptions {
  /** Fewer steps (what the test runs). Default false. */
  readonly quick?: boolean;
  /** Seeds the data and the weights. Default 0. */
  readonly seed?: number;
  /** Where the progress lines go. Default: nowhere. */
  readonly log?: (line: string) => void;
}

/** What {@link runExtending} measured. */
export interface ExtendingResult {
  /** Mean squared error + 0.01·load balance at each logged step. */
  readonly losses: readonly number[];
  /** Kept assignments per expert in the last step (3 low-rank experts, then the zero expert). */
  readonly tokensPerExpert: readonly number[];
}

/**
 * Trains the cosine router, three low-rank experts and a zero expert on a toy regression: the target of a
 * token is one of three fixed linear maps of it, chosen by which of three regions the token lies in.
 *
 * @param options - see {@link ExtendingOptions}
 * @returns the losses and the last step's load
 */
export async function runExtending(options: ExtendingOptions = {}): Promise<ExtendingResult> {
  const log = options.log ?? (() => {});
  const steps = options.quick ? 40 : 200;
  const rng = new SeededRandom(options.seed ?? 0);
  const dim = 16;
  const kinds: ExpertKind[] = ['ffn', 'ffn', 'ffn', 'zero'];
  const router = new CosineRouter({ dim, numExperts: kinds.length, topK: 2, expertKinds: kinds, rng });
  const experts: Expert[] = [
    ...[0, 1, 2].map((i) => new LowRankExpert({ dim, rank: 4, name: `low-rank-${i}`, rng })),
    new ZeroExpert({ dim, name: 'zero' }),
  ];
  const [x, target] = tf.tidy(() => {
    const inputs = randomNormal([256, dim], rng) as tf.Tensor2D; // [N, D]
    const maps = [0, 1, 2].map(() => randomNormal([dim, dim], rng, 0.5 / Math.sqrt(dim))); // 3 × [D, D]
    const region = tf.argMax(tf.matMul(inputs, randomNormal([dim, 3], rng)), 1); // [N] in {0, 1, 2}
    const candidates = tf.stack(maps.map((map) => tf.matMul(inputs, map)), 1); // [N, 3, D]
    const chosen = tf.sum(tf.mul(candidates, tf.expandDims(tf.cast(tf.oneHot(region, 3), 'float32'), 2)), 1); // [N, D]
    return [inputs, chosen] as [tf.Tensor2D, tf.Tensor2D];
  });
  const variables = [...Object.values(router.weights), ...experts.flatMap((expert) => Object.values(expert.weights))];
  const optimizer = tf.train.adam(1e-2);
  const losses: number[] = [];
  let tokensPerExpert: number[] = [];
  for (let step = 1; step <= steps; step++) {
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const { output, routing } = sparseMoeForward(x, router, experts, { training: true });
        tokensPerExpert = readRoutingStatsSync(routing.stats).tokensPerExpert;
        return tf.add(tf.losses.meanSquaredError(target, output), tf.mul(0.01, routing.auxLosses.loadBalance!)) as tf.Scalar;
      }, variables);
      // Every variable gets a gradient (zero when its expert got no token): tfjs's Adam keeps its moments by position.
      optimizer.applyGradients(variables.map((v) => ({ name: v.name, tensor: grads[v.name] ?? tf.zerosLike(v) })));
      if (step === 1 || step % Math.max(1, steps / 5) === 0) {
        losses.push(value.dataSync()[0]!);
        log(`  step ${String(step).padStart(3)}  loss ${losses.at(-1)!.toFixed(4)}  tokens per expert (3 low-rank, zero): ${tokensPerExpert.join(', ')}`);
      }
    });
  }
  optimizer.dispose();
  router.dispose();
  experts.forEach((expert) => expert.dispose());
  tf.dispose([x, target]);
  return { losses, tokensPerExpert };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const backend = await initBackend({ backend: 'wasm' });
  console.log(`backend: ${backend.summary}`);
  console.log('CosineRouter + 3 LowRankExperts + a ZeroExpert, top-2, on a 3-region regression');
  await runExtending({ quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
}
