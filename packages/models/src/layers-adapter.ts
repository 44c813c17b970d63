/**
 * A `tf.layers.Layer` that wraps a {@link MoeLayer}, so an MoE / MoE++ layer drops into a user's own
 * `tf.sequential()` / `tf.model()`, trains with `model.fit` and saves with `model.save`.
 *
 *     input   [B, D] or [B, T, D]   float32
 *     flatten [N, D]                N = B or B·T
 *     MoE     [N, D]                router + experts, sparse dispatch (MoeLayer.forward)
 *     output  the input's shape
 *
 * How the weights reach tfjs-layers: `build()` constructs the MoeLayer (weights drawn from `seed`) and
 * registers each of its `tf.Variable`s with the layer as a {@link LayerVariable} that *reads and writes
 * that same variable* (see `BorrowedVariable` below). So `model.fit` differentiates and updates the very
 * variables the router and experts compute with; `getWeights` / `setWeights`, `model.save` and
 * `tf.loadLayersModel` see them under the official names relative to the layer (`moe.gate.wg.weight`,
 * `moe.experts.experts.{e}.up_proj.weight`, …; tfjs `[in, out]` layout, i.e. PyTorch's transposes).
 *
 * The aux loss: tfjs-layers adds every function registered with `addLoss` to the training loss inside
 * `fit`'s gradient scope (`LayersModel.makeTrainFunction` calls `calculateLosses()` after the forward
 * pass). With `auxLossCoefficient > 0` the layer registers `beta · L_b` (the heterogeneous load-balance
 * loss, Eq. 7–9, with the layer's tau) from its latest training call, so `fit` trains the router with
 * it. `evaluate` and `predict` do not include it (tfjs-layers computes only the compiled loss there).
 *
 * Limits: a lone layer has no previous MoE++ layer, so gating residuals are off (no `gate_map`; a
 * `Sequential` cannot thread router logits between layers). Routing is differentiable through the gates
 * only, not through the top-k choice, as in every MoE.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, ShapeError, checkNumber } from '@moepp/tensors-core';
import { MoeLayer } from './moe-layer.js';
import { DEFAULT_MOE_SETTINGS, resolveModelConfig, type ExpertCounts, type MoeSettings } from './config.js';

type Kwargs = Parameters<tf.layers.Layer['call']>[1];

/** The MoE settings a {@link MoeppLayer} takes (all but the widths optional). */
export interface MoeppLayerOptions
  extends Partial<
    Pick<
      MoeSettings,
      | 'topK'
      | 'twoLayerGate'
      | 'logitsNorm'
      | 'gateNormStd'
      | 'mixtralGating'
      | 'zeroGateRule'
      | 'scaleInputByTopK'
      | 'capacityFactor'
      | 'heterogeneousCapacity'
      | 'tau'
    >
  > {
  /** F, the width of one FFN expert. Required. (D is the input's last axis.) */
  readonly intermediateSize: number;
  /** Experts of the layer. Default the MoE++ layout `{ ffn: 8, constant: 2, copy: 1, zero: 1 }`; absent kinds take these defaults. */
  readonly experts?: Partial<ExpertCounts>;
  /** beta, the weight of the load-balance loss added to the `fit` loss (paper: 0.01). 0 = no aux loss. Default 0.01. */
  readonly auxLossCoefficient?: number;
  /** Std of the normal initialisation (official `initializer_range`). Default 0.02. */
  readonly initializerRange?: number;
  /** Seeds the initial weights. Default 0. */
  readonly seed?: number;
}

/** Constructor arguments of {@link MoeppLayer}: tfjs `LayerArgs` (name, trainable, inputShape, …) plus the MoE settings. */
export type MoeppLayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]> & MoeppLayerOptions;

/** The validated, complete settings of a {@link MoeppLayer}. */
export type MoeppLayerSettings = Omit<MoeSettings, 'interval' | 'gatingResidual'> &
  Required<Pick<MoeppLayerOptions, 'intermediateSize' | 'auxLossCoefficient' | 'initializerRange' | 'seed'>>;

/**
 * A {@link LayerVariable} that stands for an existing `tf.Variable` instead of holding its own: `read`
 * returns it, `write` assigns to it, `dispose` frees it. The base constructor always makes a variable of
 * its own (sharing the value's buffer); it is freed at once.
 */
class BorrowedVariable extends tf.LayerVariable {
  private readonly target: tf.Variable;

  constructor(target: tf.Variable, name: string, trainable: boolean) {
    super(target, target.dtype, name, trainable);
    this.val.dispose(); // the base class's copy; `target` keeps the shared buffer alive
    this.target = target;
    this.target.trainable = trainable;
  }

  override read(): tf.Tensor {
    this.assertNotDisposed();
    return this.target;
  }

  override write(newValue: tf.Tensor): this {
    this.assertNotDisposed();
    if (newValue.shape.join() !== this.target.shape.join()) {
      throw new ShapeError(`MoeppLayer: weight '${this.name}' is [${this.target.shape.join(', ')}], got [${newValue.shape.join(', ')}]`);
    }
    if (newValue.id !== this.target.id) this.target.assign(newValue);
    return this;
  }

  override dispose(): void {
    this.assertNotDisposed();
    this.target.dispose();
  }

  protected override assertNotDisposed(): void {
    if (this.target.isDisposed) throw new Error(`MoeppLayer: weight '${this.name}' is already disposed`);
  }

  override get trainable(): boolean {
    return this.target.trainable;
  }

  override set trainable(trainable: boolean) {
    this.target.trainable = trainable;
  }
}

/**
 * An MoE / MoE++ feed-forward layer for tfjs-layers models (className `'MoeppLayer'`, registered with
 * `tf.serialization.registerClass`, so `tf.loadLayersModel` restores it). See the module notes.
 *
 * @example
 * ```ts
 * const model = tf.sequential({ layers: [
 *   tf.layers.dense({ inputShape: [16], units: 32, activation: 'relu' }),
 *   new MoeppLayer({ intermediateSize: 64, experts: { ffn: 4, zero: 1, copy: 1, constant: 1 }, topK: 2 }),
 *   tf.layers.dense({ units: 3, activation: 'softmax' }),
 * ] });
 * ```
 */
export class MoeppLayer extends tf.layers.Layer {
  /** The name tfjs serialises the layer under. */
  static readonly className = 'MoeppLayer';

  /** The validated settings (what {@link MoeppLayer.getConfig} returns besides the base layer fields). */
  readonly settings: MoeppLayerSettings;
  private moe: MoeLayer | null = null;
  /** `beta · L_b` of the latest training call, kept for the `addLoss` function; owned by the layer. */
  private pendingAuxLoss: tf.Scalar | null = null;
  private lastCounts: readonly number[] | null = null;

  /**
   * @param args - tfjs layer arguments and the MoE settings (see {@link MoeppLayerOptions})
   * @throws `ConfigError` for invalid settings (naming the field, the expected and the actual value)
   */
  constructor(args: MoeppLayerArgs) {
    super(args);
    this.settings = resolveLayerSettings(args);
    if (this.settings.auxLossCoefficient > 0) {
      // Called by LayersModel.fit inside its gradient scope, after the forward pass (see the module notes).
      this.addLoss(() => (this.pendingAuxLoss ? tf.clone(this.pendingAuxLoss) : tf.scalar(0)));
    }
  }

  /** The wrapped layer (its router and experts), or null before `build`. */
  get moeLayer(): MoeLayer | null {
    return this.moe;
  }

  /** Assignments per expert in the latest call (host numbers, length E), or null before any call. */
  get lastTokensPerExpert(): readonly number[] | null {
    return this.lastCounts;
  }

  /**
   * Creates the MoeLayer for `D = inputShape[-1]` and registers its variables as this layer's weights.
   *
   * @param inputShape - `[B, D]` or `[B, T, D]` (B and T may be null)
   * @throws `ShapeError` for another rank or an unknown D
   */
  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const dim = shape[shape.length - 1];
    if ((shape.length !== 2 && shape.length !== 3) || typeof dim !== 'number') {
      throw new ShapeError(`MoeppLayer.build: input must be [B, D] or [B, T, D] with a known D, got [${shape.join(', ')}]`);
    }
    this.moe?.dispose();
    this.moe = new MoeLayer(
      { ...this.settings, gatingResidual: false, interval: 1, hiddenSize: dim },
      new SeededRandom(this.settings.seed),
    );
    this._trainableWeights = this.moe.parameters('moe').map(({ name, variable }) => new BorrowedVariable(variable, name, true));
    this.built = true;
  }

  /**
   * @param inputShape - `[B, D]` or `[B, T, D]`
   * @returns the same shape
   */
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  /**
   * Runs the MoE layer on every token.
   *
   * @param inputs - `[B, D]` or `[B, T, D]` float32 (or a one-element list of it)
   * @param kwargs - `training: true` during `fit` (records the aux loss)
   * @returns the input's shape, float32
   * @throws `ShapeError` when the last axis is not D
   */
  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const moe = this.moe;
    if (!x || !moe) throw new ConfigError(`MoeppLayer.call: the layer has no input or is not built`);
    const training = kwargs['training'] === true;
    const dim = moe.config.hiddenSize;
    return tf.tidy(() => {
      const flat = tf.reshape(x, [-1, dim]) as tf.Tensor2D; // [N, D]
      const out = moe.forward(flat, { training });
      this.lastCounts = out.tokensPerExpert;
      const loadBalance = out.auxLosses.loadBalance;
      if (training && this.settings.auxLossCoefficient > 0 && loadBalance) {
        this.pendingAuxLoss?.dispose();
        this.pendingAuxLoss = tf.keep(tf.mul(loadBalance, this.settings.auxLossCoefficient) as tf.Scalar); // beta · L_b
      }
      return tf.reshape(out.output, x.shape); // [B, D] or [B, T, D]
    });
  }

  /**
   * @returns the base layer fields (name, trainable, …) and every MoE setting, JSON-serialisable
   */
  override getConfig(): tf.serialization.ConfigDict {
    const s = this.settings;
    return {
      ...super.getConfig(),
      intermediateSize: s.intermediateSize,
      experts: { ffn: s.experts.ffn, zero: s.experts.zero, copy: s.experts.copy, constant: s.experts.constant },
      topK: s.topK,
      twoLayerGate: s.twoLayerGate,
      logitsNorm: s.logitsNorm,
      gateNormStd: s.gateNormStd,
      mixtralGating: s.mixtralGating,
      zeroGateRule: s.zeroGateRule,
      scaleInputByTopK: s.scaleInputByTopK,
      capacityFactor: s.capacityFactor,
      heterogeneousCapacity: s.heterogeneousCapacity,
      tau: s.tau,
      auxLossCoefficient: s.auxLossCoefficient,
      initializerRange: s.initializerRange,
      seed: s.seed,
    };
  }

  /** Frees the weights (through the base class) and the kept aux loss. */
  protected override disposeWeights(): number {
    const disposed = super.disposeWeights();
    this.pendingAuxLoss?.dispose();
    this.pendingAuxLoss = null;
    this.moe = null;
    return disposed;
  }
}

tf.serialization.registerClass(MoeppLayer);

/** Validates the settings with the model-config rules, naming the layer in errors. */
function resolveLayerSettings(args: MoeppLayerArgs): MoeppLayerSettings {
  const op = 'MoeppLayer';
  const auxLossCoefficient = checkNumber(op, 'auxLossCoefficient', args.auxLossCoefficient ?? 0.01, { min: 0 });
  const seed = checkNumber(op, 'seed', args.seed ?? 0, { integer: true });
  const pick = <K extends keyof MoeSettings>(key: K): MoeSettings[K] => (args as Partial<MoeSettings>)[key] ?? DEFAULT_MOE_SETTINGS[key];
  try {
    const config = resolveModelConfig({
      vocabSize: 2,
      hiddenSize: 2,
      numLayers: 1,
      numHeads: 1,
      maxSeqLen: 1,
      intermediateSize: args.intermediateSize,
      initializerRange: args.initializerRange ?? 0.02,
      moe: {
        experts: { ...DEFAULT_MOE_SETTINGS.experts, ...args.experts },
        topK: pick('topK'),
        interval: 1,
        gatingResidual: false,
        twoLayerGate: pick('twoLayerGate'),
        logitsNorm: pick('logitsNorm'),
        gateNormStd: pick('gateNormStd'),
        mixtralGating: pick('mixtralGating'),
        zeroGateRule: pick('zeroGateRule'),
        scaleInputByTopK: pick('scaleInputByTopK'),
        // null is a value here (dropless), so only undefined takes the default
        capacityFactor: args.capacityFactor === undefined ? DEFAULT_MOE_SETTINGS.capacityFactor : args.capacityFactor,
        heterogeneousCapacity: pick('heterogeneousCapacity'),
        tau: pick('tau'),
      },
    });
    const { interval: _interval, gatingResidual: _residual, ...moe } = config.moe as MoeSettings;
    return Object.freeze({
      ...moe,
      intermediateSize: config.intermediateSize,
      initializerRange: config.initializerRange,
      auxLossCoefficient,
      seed,
    });
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(error.message.replace(/^ModelConfig/, op));
    throw error;
  }
}
