/**
 * `moepp-pretrain`: train dense, MoE and MoE++ language models side by side and compare them.
 *
 *     npm run pretrain                         compare the default (nano) preset
 *     npm run pretrain -- compare --preset smoke
 *     npm run pretrain -- sweep --which tau --preset nano
 *     npm run pretrain -- analyze --preset nano
 *     npm run pretrain -- resume runs/tiny-…   continue an interrupted run
 *     npm run pretrain -- generate --checkpoint runs/…/moepp/checkpoint --prompt "Fellow citizens"
 *     npm run pretrain -- eval --checkpoint DIR --tokens ids.json --json
 *     npm run pretrain -- export --checkpoint DIR --out hf/   /   import --from hf/ --out DIR
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError } from '@moepp/tensors-core';
import { writeFileAtomically } from '@moepp/models';
import { readConfigFile, resolveRunConfig, type RunConfig } from './config.js';
import { InterruptedRun, runComparison, STDERR, STDOUT, type Output } from './compare.js';
import { runSweep, SWEEPS, type SweepName } from './sweep.js';
import { runAnalysis } from './analyze.js';
import { convertCheckpoint, evaluateTokens, generateText } from './checkpoint-commands.js';

/** Paths on the command line are relative to where the user ran `npm run` (npm sets INIT_CWD). */
function userPath(path: string): string {
  return isAbsolute(path) ? path : resolve(process.env.INIT_CWD ?? process.cwd(), path);
}

function integer(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer, got '${value}'`);
    return n;
  };
}

function number(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got '${value}'`);
    return n;
  };
}

/** The options every training command shares, mapped to {@link RunConfig} fields. */
function addRunOptions(command: Command): Command {
  return command
    .option('--config <file>', 'JSON file of settings (flags override it)')
    .addOption(new Option('--preset <size>', 'model size preset').choices(['smoke', 'nano', 'tiny', 'small']))
    .option('--corpus <name|path>', "corpus: sotu, moby-dick, brown, or a .txt file or folder")
    .option('--tokenizer <bytes|N>', "'bytes' or a BPE vocabulary size (512–8192)")
    .option('--steps <n>', 'optimiser steps per model', integer('--steps'))
    .option('--batch-size <n>', 'sequences per step', integer('--batch-size'))
    .option('--seq-len <n>', 'tokens per sequence', integer('--seq-len'))
    .option('--lr <x>', 'peak learning rate', number('--lr'))
    .option('--min-lr <x>', 'final learning rate', number('--min-lr'))
    .option('--warmup <n>', 'warm-up steps', integer('--warmup'))
    .option('--eval-every <n>', 'evaluate every n steps', integer('--eval-every'))
    .option('--validation-windows <n>', 'held-out windows evaluated', integer('--validation-windows'))
    .option('--aux-loss-weight <x>', 'beta, the weight of the load-balance loss', number('--aux-loss-weight'))
    .option('--z-loss-weight <x>', 'weight of the router z-loss', number('--z-loss-weight'))
    .option('--checkpoint-every <n>', 'checkpoint every n steps', integer('--checkpoint-every'))
    .option('--tau <x>', 'tau of the heterogeneous load-balance loss (MoE++)', number('--tau'))
    .option('--no-gating-residual', 'turn gating residuals off (MoE++)')
    .option('--seed <n>', 'seed of weights, data order and noise', integer('--seed'))
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'cpu', 'wasm', 'tensorflow']))
    .option('--out <dir>', 'output folder of the run')
    .option('--json', 'print the results as one JSON object on stdout');
}

interface RunFlags {
  config?: string;
  preset?: string;
  corpus?: string;
  tokenizer?: string;
  steps?: number;
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  minLr?: number;
  warmup?: number;
  evalEvery?: number;
  validationWindows?: number;
  auxLossWeight?: number;
  zLossWeight?: number;
  checkpointEvery?: number;
  tau?: number;
  gatingResidual?: boolean;
  seed?: number;
  backend?: string;
  out?: string;
  json?: boolean;
  variant?: string;
  variants?: string;
}

/**
 * Turns flags (and the `--config` file) into a validated {@link RunConfig}.
 *
 * @param flags - commander's parsed options
 * @param extra - settings the command fixes (e.g. `variants` for `run`)
 * @returns the config, its `out` resolved against the user's working directory
 * @throws `ConfigError` naming each invalid field
 */
export function configFromFlags(flags: RunFlags, extra: Record<string, unknown> = {}): RunConfig {
  const file = flags.config ? readConfigFile(userPath(flags.config)) : {};
  const tokenizer = flags.tokenizer === undefined ? undefined : flags.tokenizer === 'bytes' ? 'bytes' : Number(flags.tokenizer);
  const moe: Record<string, unknown> = { ...(file.moe as Record<string, unknown> | undefined) };
  if (flags.tau !== undefined) moe.tau = flags.tau;
  if (flags.gatingResidual === false) moe.gatingResidual = false;
  const fromFlags: Record<string, unknown> = {
    preset: flags.preset,
    corpus: flags.corpus,
    tokenizer,
    steps: flags.steps,
    batchSize: flags.batchSize,
    seqLen: flags.seqLen,
    learningRate: flags.lr,
    minLearningRate: flags.minLr,
    warmupSteps: flags.warmup,
    evalEvery: flags.evalEvery,
    validationWindows: flags.validationWindows,
    auxLossWeight: flags.auxLossWeight,
    zLossWeight: flags.zLossWeight,
    checkpointEvery: flags.checkpointEvery,
    seed: flags.seed,
    backend: flags.backend,
    out: flags.out,
    variants: flags.variants?.split(',').map((v) => v.trim()),
    moe,
  };
  const config = resolveRunConfig([file, fromFlags, extra], flags.config ? `--config ${flags.config}` : 'options');
  return { ...config, out: userPath(config.out) };
}

/** What a training command records in `<out>/run.json`, so `resume` can run it again. */
interface RunRecord {
  readonly command: 'compare' | 'run' | 'sweep' | 'analyze';
  readonly config: RunConfig;
  readonly which?: readonly SweepName[];
}

async function startRun(record: RunRecord, resume: boolean, json: boolean): Promise<void> {
  const output: Output = json ? STDERR : STDOUT;
  await mkdir(record.config.out, { recursive: true });
  if (!resume) await writeFileAtomically(join(record.config.out, 'run.json'), `${JSON.stringify(record, null, 2)}\n`);
  let result: unknown;
  switch (record.command) {
    case 'compare':
    case 'run':
      result = (await runComparison(record.config, { resume, command: record.command, output })).results;
      break;
    case 'sweep':
      result = (await runSweep(record.config, record.which ?? SWEEPS, { resume, output })).sweeps;
      break;
    case 'analyze':
      result = (await runAnalysis(record.config, { resume, output })).analysis;
      break;
  }
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
}

function parseSweeps(value: string): SweepName[] {
  const names = value.split(',').map((s) => s.trim());
  const bad = names.find((n) => !(SWEEPS as readonly string[]).includes(n));
  if (bad !== undefined) throw new InvalidArgumentError(`--which must list some of ${SWEEPS.join(', ')}, got '${bad}'`);
  return names as SweepName[];
}

/**
 * Builds the command-line program.
 *
 * @returns the commander program (call `parseAsync`)
 */
export function buildProgram(): Command {
  const program = new Command('moepp-pretrain')
    .description('Train dense, MoE and MoE++ language models side by side and compare throughput and accuracy.')
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(text) });

  addRunOptions(program.command('compare', { isDefault: true }))
    .description('train the dense, MoE and MoE++ models of a preset on the same data and budget, and report')
    .option('--variants <list>', 'comma-separated subset of dense,moe,moepp')
    .action(async (flags: RunFlags) => startRun({ command: 'compare', config: configFromFlags(flags) }, false, flags.json === true));

  addRunOptions(program.command('run'))
    .description('train one model (one variant of a preset) and report')
    .addOption(new Option('--variant <name>', 'the variant').choices(['dense', 'moe', 'moepp']).default('moepp'))
    .action(async (flags: RunFlags) =>
      startRun({ command: 'run', config: configFromFlags(flags, { variants: [flags.variant ?? 'moepp'] }) }, false, flags.json === true),
    );

  addRunOptions(program.command('sweep'))
    .description("the paper's ablations: tau, expert types, gating residuals, zero-expert gate rule")
    .option('--which <list>', `comma-separated subset of ${SWEEPS.join(',')}`, parseSweeps, [...SWEEPS])
    .action(async (flags: RunFlags & { which: SweepName[] }) =>
      startRun({ command: 'sweep', config: configFromFlags({ preset: 'nano', ...flags }), which: flags.which }, false, flags.json === true),
    );

  addRunOptions(program.command('analyze'))
    .description('routing by part of speech on the Brown corpus, score spread with and without gating residuals, load heatmap')
    .action(async (flags: RunFlags) =>
      startRun({ command: 'analyze', config: configFromFlags({ preset: 'nano', tokenizer: '1024', ...flags }, { corpus: 'brown' }) }, false, flags.json === true),
    );

  program
    .command('resume')
    .description('continue an interrupted compare / run / sweep / analyze from its output folder')
    .argument('<dir>', 'the run folder (holds run.json)')
    .option('--json', 'print the results as one JSON object on stdout')
    .action(async (dir: string, flags: { json?: boolean }) => {
      const path = join(userPath(dir), 'run.json');
      if (!existsSync(path)) throw new ConfigError(`resume: ${path} does not exist; pass the folder of an earlier run`);
      const record = JSON.parse(readFileSync(path, 'utf8')) as RunRecord;
      await startRun({ ...record, config: resolveRunConfig([record.config], path) }, true, flags.json === true);
    });

  program
    .command('generate')
    .description('generate text from a checkpoint')
    .requiredOption('--checkpoint <dir>', 'a checkpoint folder (config.json + model.safetensors)')
    .option('--prompt <text>', 'the prompt', 'The ')
    .option('--max-tokens <n>', 'new tokens', integer('--max-tokens'), 200)
    .option('--temperature <x>', 'sampling temperature; 0 = greedy', number('--temperature'), 0.8)
    .option('--top-k <n>', 'sample from the k most likely tokens', integer('--top-k'))
    .option('--seed <n>', 'sampling seed', integer('--seed'), 0)
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'cpu', 'wasm', 'tensorflow']).default('auto'))
    .option('--json', 'print the result as one JSON object')
    .action(async (flags: { checkpoint: string; prompt: string; maxTokens: number; temperature: number; topK?: number; seed: number; backend: 'auto'; json?: boolean }) => {
      const result = await generateText({
        checkpoint: userPath(flags.checkpoint),
        prompt: flags.prompt,
        maxNewTokens: flags.maxTokens,
        temperature: flags.temperature,
        ...(flags.topK !== undefined ? { topK: flags.topK } : {}),
        seed: flags.seed,
        backend: flags.backend,
      });
      if (flags.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else console.log(`${result.prompt}${result.completion}`);
    });

  program
    .command('eval')
    .description('loss and perplexity of a checkpoint on a JSON array of token ids')
    .requiredOption('--checkpoint <dir>', 'a checkpoint folder')
    .requiredOption('--tokens <file>', 'a JSON array of token ids')
    .option('--seq-len <n>', 'window length (default: the model maxSeqLen)', integer('--seq-len'))
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'cpu', 'wasm', 'tensorflow']).default('auto'))
    .option('--json', 'print {"loss", "perplexity", "accuracy", "tokens"} as one JSON object')
    .action(async (flags: { checkpoint: string; tokens: string; seqLen?: number; backend: 'auto'; json?: boolean }) => {
      const result = await evaluateTokens({
        checkpoint: userPath(flags.checkpoint),
        tokens: userPath(flags.tokens),
        backend: flags.backend,
        ...(flags.seqLen !== undefined ? { seqLen: flags.seqLen } : {}),
      });
      if (flags.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else console.log(`loss ${result.loss.toFixed(4)}  perplexity ${result.perplexity.toFixed(2)}  accuracy ${(100 * result.accuracy).toFixed(1)}%  (${result.tokens} tokens)`);
    });

  for (const [name, description, fromFlag] of [
    ['export', "write a run's checkpoint as an official MoE++ Hugging Face folder (config.json + model.safetensors)", '--checkpoint'],
    ['import', 'read an official MoE++ Hugging Face folder (bf16/f16/f32, sharded or not), validate it and write it as a kit checkpoint', '--from'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .requiredOption(`${fromFlag} <dir>`, 'the source folder')
      .requiredOption('--out <dir>', 'the destination folder (replaced atomically)')
      .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'cpu', 'wasm', 'tensorflow']).default('auto'))
      .option('--json', 'print a summary as one JSON object')
      .action(async (flags: { checkpoint?: string; from?: string; out: string; backend: 'auto'; json?: boolean }) => {
        const source = userPath((flags.checkpoint ?? flags.from) as string);
        const summary = await convertCheckpoint(source, userPath(flags.out), flags.backend);
        const result = { from: source, to: userPath(flags.out), ...summary };
        if (flags.json) process.stdout.write(`${JSON.stringify(result)}\n`);
        else console.log(`${name}: ${result.from} -> ${result.to} (${summary.parameters} parameters, ${summary.layers} layers)`);
      });
  }
  return program;
}

/**
 * Runs the CLI: clear messages for configuration errors and interruptions, exit codes 2 and 130.
 *
 * @param argv - `process.argv`
 */
export async function main(argv: readonly string[]): Promise<void> {
  try {
    await buildProgram().parseAsync([...argv]);
  } catch (error) {
    if (error instanceof InterruptedRun) {
      console.error(`\n${error.message}`);
      process.exitCode = 130;
    } else if (error instanceof ConfigError || (error as Error).name === 'CheckpointError' || (error as Error).name === 'ShapeError') {
      console.error(`error: ${(error as Error).message}`);
      process.exitCode = 2;
    } else {
      throw error;
    }
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${resolve(process.argv[1])}`).href) {
  await main(process.argv);
}
