/**
 * Command-line flags shared by `run.ts` and every benchmark file that can run alone
 * (`tsx --conditions=source src/kernels.ts --quick`).
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runBenchmark, type BenchmarkDefinition } from './harness.js';

/** Parsed flags. */
export interface CliOptions {
  /** `--quick`: fewer repetitions; long stock configurations skipped. */
  readonly quick: boolean;
  /** `--only <name>` (repeatable, or comma-separated): the benchmarks to run; `null` for all. */
  readonly only: readonly string[] | null;
  /** `--out <dir>`: where results go. Default `benchmarks/results`. */
  readonly outDir: string;
  /** `--help` / `-h`. */
  readonly help: boolean;
}

/** `benchmarks/results`, whatever the working directory. */
export const DEFAULT_OUT_DIR = fileURLToPath(new URL('../results/', import.meta.url));

/** The usage text printed by `--help`. */
export const USAGE = `usage: tsx --conditions=source src/run.ts [--quick] [--only <name>[,<name>...]] [--out <dir>]

  --quick        fewer repetitions; skip or shrink stock configurations that take long
  --only <name>  run only these benchmarks (repeatable or comma-separated)
  --out <dir>    write <name>.json and <name>.md there (default: benchmarks/results)
  -h, --help     this text`;

/**
 * Parses benchmark flags.
 *
 * @param argv - the arguments after the script name (`process.argv.slice(2)`)
 * @returns the options
 * @throws TypeError (from `node:util` `parseArgs`) naming an unknown flag or a missing value
 */
export function parseBenchmarkArgs(argv: readonly string[]): CliOptions {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string', multiple: true },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const only = values.only?.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v.length > 0) ?? null;
  return {
    quick: values.quick ?? false,
    only: only && only.length > 0 ? only : null,
    outDir: values.out !== undefined ? path.resolve(values.out) : DEFAULT_OUT_DIR,
    help: values.help ?? false,
  };
}

/**
 * @param moduleUrl - `import.meta.url` of the calling module
 * @returns true when that module is the script Node was started with (not imported)
 */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  const modulePath = fileURLToPath(moduleUrl);
  const resolved = path.resolve(script);
  return resolved === modulePath || resolved === modulePath.replace(/\.ts$/, '');
}

/**
 * The command line of a benchmark file that can run alone: parses the flags, prints {@link USAGE} for
 * `--help`, else builds the benchmark and runs it (writing `<name>.json` and `<name>.md`).
 *
 * @param build - builds the benchmark for the parsed flags
 * @returns `main(argv)`, for {@link runWhenMain} and for tests
 */
export function benchmarkMain(build: (options: CliOptions) => BenchmarkDefinition): (argv: readonly string[]) => Promise<void> {
  return async (argv) => {
    const options = parseBenchmarkArgs(argv);
    if (options.help) {
      console.log(USAGE);
      return;
    }
    await runBenchmark(build(options), { outDir: options.outDir, quick: options.quick });
  };
}

/**
 * Runs `main` with the process's arguments when the calling module is the script Node was started
 * with; prints the error and sets a failing exit code if it throws.
 *
 * @param moduleUrl - `import.meta.url` of the calling module
 * @param main - the module's command line
 * @param showStack - print the stack trace (default) or only the message
 */
export function runWhenMain(moduleUrl: string, main: (argv: readonly string[]) => Promise<void>, showStack = true): void {
  if (!isMainModule(moduleUrl)) return;
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(error instanceof Error ? (showStack ? error.stack : error.message) : error);
    process.exitCode = 1;
  });
}
