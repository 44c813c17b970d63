/**
 * Where the time of one training step goes: one `Trainer.trainStep` of a preset model (default the
 * `tiny` MoE++ at B = 8, T = 128, as the end-to-end benchmark runs it) on wasm with the kit's fixes and,
 * where available, native acceleration.
 *
 * 1. Warm-up steps, then timed steps without profiling: wall-clock and CPU time per step (median).
 * 2. Profiled steps under `tf.profile`: every kernel tfjs ran, with its time (wall-clock around the
 *    kernel function only), attributed to a part of the model:
 *    - forward kernels by the innermost `packages/<pkg>/src/<file>` frame of the stack that called them
 *      (`router`, `experts`, `attention`, `norms`, `dispatch / combine`, `decoder (embedding, residuals,
 *      head)`, `loss`, `clipping`, `AdamW`, …; see {@link GROUP_RULES});
 *    - backward kernels to the part whose forward kernel recorded the tape node they differentiate
 *      (tfjs's gradient accumulation `Add`s to the node processed just before).
 *    Step time minus the kernels' time is what tfjs's engine, tape and the kit's JavaScript cost around
 *    the kernels (`outside kernels`).
 *
 * No timing assertions: it prints tables (markdown) and, with `--out`, writes the numbers as JSON.
 *
 * Run: `npx tsx --conditions=source benchmarks/src/profile-step.ts [--size tiny] [--variant moepp]
 * [--batch 8] [--warmup 2] [--steps 7] [--profiled 5] [--no-accel] [--out <file.json>]`.
 */
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { prepareTextData } from '@moepp/data';
import { createModel, presetConfig, PRESET_SIZES, PRESET_VARIANTS, type PresetSize, type PresetVariant } from '@moepp/models';
import { Trainer } from '@moepp/trainers';
import { isMainModule } from './cli.js';
import { CONFIGURATIONS, environmentRecord, median, useConfiguration, type ConfigurationRecord, type EnvironmentRecord } from './harness.js';

/** Options of {@link profileTrainingStep}. */
export interface ProfileStepOptions {
  /** Preset size. Default `'tiny'`. */
  readonly size?: PresetSize;
  /** Preset variant. Default `'moepp'`. */
  readonly variant?: PresetVariant;
  /** B. Default 8 (T is the preset's `maxSeqLen`). */
  readonly batchSize?: number;
  /** Untimed steps first. Default 2. */
  readonly warmup?: number;
  /** Timed steps without profiling. Default 7. */
  readonly steps?: number;
  /** Profiled steps (each launch's median over them); 0 times the step only. Default 5. */
  readonly profiledSteps?: number;
  /** Native acceleration. Default true (skipped with the reason when unavailable: the wasm kernels run). */
  readonly acceleration?: boolean;
  /** Seed of the weights and batches. Default 1. */
  readonly seed?: number;
}

/** One kernel name within one part of the model, per step. */
export interface KernelRow {
  readonly kernel: string;
  readonly group: string;
  /** Kernel time per step, ms (wall-clock; mean over the profiled steps). */
  readonly ms: number;
  /** Process CPU time of the kernels per step, ms (all threads: OpenBLAS's workers count). */
  readonly cpuMs: number;
  /** Launches per step. */
  readonly count: number;
}

/** One part of the model, per step. */
export interface GroupRow {
  readonly group: string;
  readonly ms: number;
  readonly cpuMs: number;
  readonly count: number;
}

/** What {@link profileTrainingStep} measured. */
export interface StepProfile {
  readonly environment: EnvironmentRecord;
  readonly configuration: ConfigurationRecord;
  readonly size: PresetSize;
  readonly variant: PresetVariant;
  readonly batchSize: number;
  readonly seqLen: number;
  /** Unprofiled steps: wall-clock ms of each, and the median. */
  readonly stepMs: readonly number[];
  readonly medianStepMs: number;
  /** Unprofiled steps: CPU ms of the process (all threads, OpenBLAS's included) of each, and the median. */
  readonly cpuMs: readonly number[];
  readonly medianCpuMs: number;
  /** Profiled steps: wall-clock ms (slower than unprofiled: the attribution reads stacks). */
  readonly profiledStepMs: readonly number[];
  /** Whether every profiled step ran the same kernel sequence (then per-launch medians, else means). */
  readonly alignedSteps: boolean;
  /** Sum of the kernels' times per step, ms (wall-clock and CPU). */
  readonly kernelMs: number;
  readonly kernelCpuMs: number;
  /** Kernel launches per step. */
  readonly kernelCount: number;
  readonly groups: readonly GroupRow[];
  readonly kernels: readonly KernelRow[];
}

/**
 * Parts of the model by source file, tried in order on each `packages/…/src/…` frame from the innermost
 * out; a frame that matches no rule (the kit's generic helpers) passes to the next one.
 */
export const GROUP_RULES: ReadonlyArray<readonly [RegExp, string]> = [
  // not tensors-core's optim.ts itself: its sumOfSquares is clipping's (the next frame out decides)
  [/trainers\/src\/adamw\.ts/, 'AdamW'],
  [/trainers\/src\/clip\.ts/, 'clipping'],
  [/trainers\/src\/loss\.ts/, 'loss'],
  [/trainers\/src\/accumulate\.ts/, 'gradient accumulation'],
  [/routers\/src\//, 'router'],
  [/tensors-core\/src\/grouped-ffn\.ts|experts\/src\/|models\/src\/layers\/dense-ffn\.ts/, 'experts'],
  [/tensors-core\/src\/dispatch\.ts/, 'dispatch / combine'],
  [/models\/src\/layers\/attention\.ts/, 'attention'],
  [/models\/src\/layers\/rms-norm\.ts/, 'norms'],
  [/models\/src\/moe-layer\.ts/, 'dispatch / combine'],
  [/models\/src\/decoder\.ts/, 'decoder (embedding, residuals, head)'],
  [/trainers\/src\/trainer\.ts/, 'trainer (loss report)'],
];

const UNATTRIBUTED = 'other';

/** Frames read per kernel: enough to reach the kit's code from inside tfjs's op and engine functions. */
const STACK_FRAMES = 40;

/**
 * The call sites of the current stack, as V8 records them (no stack string is formatted: formatting
 * one per kernel makes enough garbage for GC pauses to land inside the kernels being timed).
 */
function callSites(): NodeJS.CallSite[] {
  const originalPrepare = Error.prepareStackTrace;
  const originalLimit = Error.stackTraceLimit;
  Error.prepareStackTrace = (_error, sites) => sites;
  Error.stackTraceLimit = STACK_FRAMES;
  try {
    const holder: { stack?: NodeJS.CallSite[] } = {};
    Error.captureStackTrace(holder, callSites);
    return holder.stack ?? []; // read before restoring: V8 formats the stack on first access
  } finally {
    Error.prepareStackTrace = originalPrepare;
    Error.stackTraceLimit = originalLimit;
  }
}

/** The part of the model the call sites belong to (see {@link GROUP_RULES}), or null inside tfjs's backward pass. */
function groupOfCallSites(sites: readonly NodeJS.CallSite[]): string | null {
  for (const site of sites) {
    if (site.getFunctionName() === 'backpropagateGradients') return null;
    const file = site.getFileName() ?? '';
    if (!file.includes('/packages/')) continue;
    for (const [pattern, group] of GROUP_RULES) if (pattern.test(file)) return group;
  }
  return UNATTRIBUTED;
}

/** The tfjs engine internals the attribution hooks into (tfjs 4.22). */
interface EngineInternals {
  profiler: { profileKernel: (name: string, inputs: unknown, f: () => unknown) => unknown };
  addTapeNode: (...args: unknown[]) => void;
  state: { activeTape: Array<{ gradient?: (dys: tf.Tensor[]) => Record<string, () => tf.Tensor> }> };
}

/** One kernel launch as {@link installAttribution} records it. */
interface LaunchRecord {
  readonly kernel: string;
  readonly group: string;
  /** Wall-clock and process CPU ms (all threads) of the launch itself, nested launches excluded. */
  wallMs: number;
  cpuMs: number;
}

/**
 * Records every kernel launch while installed: its name, the part of the model it belongs to, and its
 * own wall-clock and process CPU time (all threads: OpenBLAS's workers count). A launch nested in
 * another (a custom op's forward function, recorded by tfjs as `unnamed scope`, runs the fused kernel
 * inside) is subtracted from the outer one, so nothing is counted twice.
 *
 * @returns the launches recorded so far, in launch order, and a function that removes the hooks
 */
function installAttribution(): { launches: LaunchRecord[]; uninstall: () => void } {
  const engine = tf.engine() as unknown as EngineInternals;
  const profiler = engine.profiler;
  const originalProfileKernel = profiler.profileKernel;
  const originalAddTapeNode = engine.addTapeNode;
  const launches: LaunchRecord[] = [];
  const running: LaunchRecord[] = []; // the launches whose kernel function is on the stack
  let backwardGroup: string | null = null; // set while a gradient of a recorded node runs
  let lastBackwardGroup = UNATTRIBUTED; // for tfjs's accumulation of gradients, between two nodes
  let lastGroup = UNATTRIBUTED;
  profiler.profileKernel = function (this: unknown, name, inputs, f) {
    const group = backwardGroup ?? groupOfCallSites(callSites()) ?? lastBackwardGroup;
    // tfjs names a custom op's forward function (custom gradient) after its scope: usually 'unnamed scope'
    const launch: LaunchRecord = { kernel: name === 'unnamed scope' ? 'custom op (JS around its kernels)' : name, group, wallMs: 0, cpuMs: 0 };
    launches.push(launch);
    lastGroup = group;
    return originalProfileKernel.call(this, name, inputs, () => {
      const outer = running[running.length - 1];
      running.push(launch);
      const cpuStart = process.cpuUsage();
      const started = performance.now();
      try {
        return f();
      } finally {
        const wallMs = performance.now() - started;
        const cpu = process.cpuUsage(cpuStart);
        const cpuMs = (cpu.user + cpu.system) / 1000;
        running.pop();
        launch.wallMs += wallMs;
        launch.cpuMs += cpuMs;
        if (outer !== undefined) {
          outer.wallMs -= wallMs;
          outer.cpuMs -= cpuMs;
        }
      }
    });
  };
  const within = <T>(group: string, fn: () => T): T => {
    const outer = backwardGroup;
    backwardGroup = group;
    lastBackwardGroup = group;
    try {
      return fn();
    } finally {
      backwardGroup = outer;
    }
  };
  engine.addTapeNode = function (this: unknown, ...args: unknown[]) {
    originalAddTapeNode.apply(this, args);
    const node = engine.state.activeTape[engine.state.activeTape.length - 1];
    const gradient = node?.gradient;
    if (node === undefined || gradient === undefined) return;
    const group = lastGroup; // the kernel (or custom op) this node records ran just before
    node.gradient = (dys) => {
      const thunks = within(group, () => gradient(dys));
      return Object.fromEntries(Object.entries(thunks).map(([input, thunk]) => [input, () => within(group, thunk)]));
    };
  };
  return {
    launches,
    uninstall: () => {
      profiler.profileKernel = originalProfileKernel;
      engine.addTapeNode = originalAddTapeNode;
    },
  };
}

const round = (value: number, digits = 2): number => Math.round(value * 10 ** digits) / 10 ** digits;

/**
 * Builds the preset's model, data and trainer and measures its training step (see the file header).
 *
 * @param options - see {@link ProfileStepOptions}
 * @returns the step times and the per-kernel profile
 */
export async function profileTrainingStep(options: ProfileStepOptions = {}): Promise<StepProfile> {
  const size = options.size ?? 'tiny';
  const variant = options.variant ?? 'moepp';
  const batchSize = options.batchSize ?? 8;
  const warmup = options.warmup ?? 2;
  const steps = options.steps ?? 7;
  const profiledSteps = options.profiledSteps ?? 5;
  const seed = options.seed ?? 1;
  const configuration = await useConfiguration(options.acceleration === false ? CONFIGURATIONS.wasmFixes : CONFIGURATIONS.wasmNative);
  const environment = environmentRecord();
  const config = presetConfig(size, variant, { vocabSize: 256 });
  const seqLen = config.maxSeqLen;
  const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen, batchSize, seed, validationWindows: 1 });
  const model = createModel(config, seed);
  const trainer = new Trainer(model, data, { totalSteps: 1_000_000, evalAtStart: false, handleSignals: false, leakCheck: false, seed });
  try {
    for (let i = 0; i < warmup; i++) await trainer.trainStep();
    const stepMs: number[] = [];
    const cpuMs: number[] = [];
    for (let i = 0; i < steps; i++) {
      const cpuStart = process.cpuUsage();
      const started = performance.now();
      await trainer.trainStep(); // reads the loss back: the step is done when it returns
      stepMs.push(performance.now() - started);
      const cpu = process.cpuUsage(cpuStart);
      cpuMs.push((cpu.user + cpu.system) / 1000);
    }

    const profiledStepMs: number[] = [];
    const stepLaunches: LaunchRecord[][] = [];
    for (let i = 0; i < profiledSteps; i++) {
      const attribution = installAttribution();
      const started = performance.now();
      try {
        await tf.profile(() => trainer.trainStep() as unknown as tf.TensorContainer);
      } finally {
        attribution.uninstall();
      }
      profiledStepMs.push(performance.now() - started);
      stepLaunches.push(attribution.launches);
    }
    // Launch k of every profiled step is the same kernel when the steps ran the same sequence (they do
    // unless routing changes the control flow): then each launch's median over the steps, which drops
    // the launches another process preempted; otherwise the mean per kernel name and part.
    const first = stepLaunches[0] ?? [];
    const aligned = stepLaunches.length > 0 && stepLaunches.every((launches) => launches.length === first.length && launches.every((l, k) => l.kernel === first[k]?.kernel));
    const byKernel = new Map<string, { kernel: string; group: string; ms: number; cpuMs: number; count: number }>();
    const add = (kernel: string, group: string, wallMs: number, cpuMs: number, count: number): void => {
      const key = `${kernel}\u0000${group}`;
      const row = byKernel.get(key) ?? { kernel, group, ms: 0, cpuMs: 0, count: 0 };
      row.ms += wallMs;
      row.cpuMs += cpuMs;
      row.count += count;
      byKernel.set(key, row);
    };
    if (aligned) {
      first.forEach((launch, k) => {
        const at = stepLaunches.map((launches) => launches[k] as LaunchRecord);
        add(launch.kernel, launch.group, median(at.map((l) => l.wallMs)), median(at.map((l) => l.cpuMs)), 1);
      });
    } else {
      for (const launches of stepLaunches) {
        for (const l of launches) add(l.kernel, l.group, l.wallMs / profiledSteps, l.cpuMs / profiledSteps, 1 / profiledSteps);
      }
    }
    const kernels = [...byKernel.values()]
      .map((row) => ({ ...row, ms: round(row.ms, 3), cpuMs: round(row.cpuMs, 3), count: round(row.count, 1) }))
      .sort((a, b) => b.ms - a.ms);
    const byGroup = new Map<string, GroupRow>();
    for (const row of kernels) {
      const total = byGroup.get(row.group) ?? { group: row.group, ms: 0, cpuMs: 0, count: 0 };
      byGroup.set(row.group, { group: row.group, ms: total.ms + row.ms, cpuMs: total.cpuMs + row.cpuMs, count: total.count + row.count });
    }
    const groups = [...byGroup.values()].map((g) => ({ ...g, ms: round(g.ms), cpuMs: round(g.cpuMs), count: round(g.count, 1) })).sort((a, b) => b.ms - a.ms);
    return {
      environment,
      configuration,
      size,
      variant,
      batchSize,
      seqLen,
      stepMs: stepMs.map((v) => round(v, 1)),
      medianStepMs: round(median(stepMs), 1),
      cpuMs: cpuMs.map((v) => round(v, 1)),
      medianCpuMs: round(median(cpuMs), 1),
      profiledStepMs: profiledStepMs.map((v) => round(v, 1)),
      alignedSteps: aligned,
      kernelMs: round(kernels.reduce((sum, row) => sum + row.ms, 0), 1),
      kernelCpuMs: round(kernels.reduce((sum, row) => sum + row.cpuMs, 0), 1),
      kernelCount: round(kernels.reduce((sum, row) => sum + row.count, 0), 1),
      groups,
      kernels,
    };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

/**
 * @param profile - from {@link profileTrainingStep}
 * @param topKernels - rows of the kernel table
 * @returns markdown: the setting, the step times, the parts of the model and the costliest kernels
 */
export function renderProfile(profile: StepProfile, topKernels = 25): string {
  const { environment: env, configuration } = profile;
  const percent = (ms: number): string => `${((100 * ms) / profile.medianStepMs).toFixed(1)}%`;
  const outside = profile.medianStepMs - profile.kernelMs;
  return [
    `# Training step profile: ${profile.size} ${profile.variant}, B=${profile.batchSize}, T=${profile.seqLen}`,
    '',
    `${configuration.label}; backend ${configuration.activeBackend}; acceleration: ${configuration.accelerationStatus?.reason ?? 'n/a'}`,
    `${env.cpuModel}, ${env.cores} cores, load ${env.loadAverage.join(' / ')}; node ${env.node}, tfjs ${env.tfjs}; ${env.date}`,
    '',
    `Step (unprofiled, ${profile.stepMs.length} steps after the warm-up): median ${profile.medianStepMs} ms wall, ${profile.medianCpuMs} ms CPU ` +
      `(all ${profile.stepMs.join(', ')} ms). Profiled steps: ${profile.profiledStepMs.join(', ')} ms.`,
    `Kernels: ${profile.kernelCount} launches per step, ${profile.kernelMs} ms wall (${profile.kernelCpuMs} ms CPU), ` +
      `${profile.alignedSteps ? 'median of each launch over' : 'mean of'} ${profile.profiledStepMs.length} profiled steps; ` +
      `outside kernels (engine, tape, JavaScript): ${round(outside, 1)} ms of the unprofiled median.`,
    '',
    '| part | ms / step | CPU ms / step | % of step | kernels / step |',
    '|---|---|---|---|---|',
    ...profile.groups.map((g) => `| ${g.group} | ${g.ms.toFixed(1)} | ${g.cpuMs.toFixed(1)} | ${percent(g.ms)} | ${g.count} |`),
    `| outside kernels | ${outside.toFixed(1)} | – | ${percent(outside)} | – |`,
    '',
    '| kernel | part | ms / step | CPU ms / step | launches / step | µs / launch |',
    '|---|---|---|---|---|---|',
    ...profile.kernels
      .slice(0, topKernels)
      .map(
        (k) =>
          `| ${k.kernel} | ${k.group} | ${k.ms.toFixed(2)} | ${k.cpuMs.toFixed(2)} | ${k.count} | ${k.count > 0 ? Math.round((1000 * k.ms) / k.count) : '–'} |`,
      ),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    strict: true,
    options: {
      size: { type: 'string', default: 'tiny' },
      variant: { type: 'string', default: 'moepp' },
      batch: { type: 'string', default: '8' },
      warmup: { type: 'string', default: '2' },
      steps: { type: 'string', default: '7' },
      profiled: { type: 'string', default: '5' },
      'no-accel': { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(
      'usage: tsx --conditions=source src/profile-step.ts [--size tiny] [--variant moepp] [--batch 8] [--warmup 2] [--steps 7] [--profiled 5] [--no-accel] [--out <file.json>]',
    );
    return;
  }
  const whole = (flag: string, text: string | undefined, min: number): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) throw new Error(`profile-step: --${flag} must be a whole number >= ${min}, got '${text}'`);
    return value;
  };
  const size = values.size as PresetSize;
  const variant = values.variant as PresetVariant;
  if (!PRESET_SIZES.includes(size)) throw new Error(`profile-step: --size must be one of ${PRESET_SIZES.join(', ')}, got '${size}'`);
  if (!PRESET_VARIANTS.includes(variant)) throw new Error(`profile-step: --variant must be one of ${PRESET_VARIANTS.join(', ')}, got '${variant}'`);
  const profile = await profileTrainingStep({
    size,
    variant,
    batchSize: whole('batch', values.batch, 1),
    warmup: whole('warmup', values.warmup, 0),
    steps: whole('steps', values.steps, 1),
    profiledSteps: whole('profiled', values.profiled, 0),
    acceleration: !values['no-accel'],
  });
  console.log(renderProfile(profile));
  if (values.out !== undefined) {
    await writeFile(path.resolve(values.out), `${JSON.stringify(profile, null, 2)}\n`);
    console.log(`wrote ${path.resolve(values.out)}`);
  }
}

if (isMainModule(import.meta.url)) {
  await main();
}
