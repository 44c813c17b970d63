/**
 * Runs the kit's benchmarks: `npm run bench -- [--quick] [--only <name>] [--out <dir>]` from the
 * repository root (or `tsx --conditions=source src/run.ts ...` here). Each benchmark writes
 * `<out>/<name>.json` and `<out>/<name>.md`; see `harness.ts`.
 */
import { parseBenchmarkArgs, runWhenMain, USAGE } from './cli.js';
import { runBenchmark, type BenchmarkDefinition } from './harness.js';
import { kernelsBenchmark } from './kernels.js';
import { layerBenchmark } from './layer.js';
import { routersBenchmark } from './routers.js';
import { e2eBenchmark } from './e2e.js';
import { nativeBenchmark } from './native.js';

/** Every benchmark, by the name `--only` takes. */
export const BENCHMARKS: Readonly<Record<string, () => BenchmarkDefinition>> = {
  kernels: () => kernelsBenchmark(),
  layer: () => layerBenchmark(),
  routers: () => routersBenchmark(),
  e2e: () => e2eBenchmark(),
  native: () => nativeBenchmark(),
};

/**
 * Runs the selected benchmarks one after the other.
 *
 * @param argv - the flags (`--quick`, `--only <name>`, `--out <dir>`, `--help`)
 * @returns nothing; each benchmark writes its JSON and markdown results
 * @throws Error naming an unknown benchmark and listing the known ones; TypeError for unknown flags
 */
export async function main(argv: readonly string[]): Promise<void> {
  const options = parseBenchmarkArgs(argv);
  if (options.help) {
    console.log(USAGE);
    console.log(`\nbenchmarks: ${Object.keys(BENCHMARKS).join(', ')}`);
    return;
  }
  const names = options.only ?? Object.keys(BENCHMARKS);
  const unknown = names.filter((name) => !(name in BENCHMARKS));
  if (unknown.length > 0) {
    throw new Error(
      `run: --only must name known benchmarks (${Object.keys(BENCHMARKS).join(', ')}), got ${unknown.map((u) => `'${u}'`).join(', ')}`,
    );
  }
  for (const name of names) {
    const build = BENCHMARKS[name] as () => BenchmarkDefinition;
    await runBenchmark(build(), { outDir: options.outDir, quick: options.quick });
  }
}

runWhenMain(import.meta.url, main, false);
