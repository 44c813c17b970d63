import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '@moepp/tensors-core';
import { configFromFlags, main } from './cli.js';
import { resolveRunConfig } from './config.js';
import type { ComparisonResults } from './results.js';
import { formatCount, formatFixed, formatLoss, formatPercent, formatRatio } from './report/format.js';

const root = mkdtempSync(join(tmpdir(), 'moepp-pretrain-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const cliPath = fileURLToPath(new URL('./cli.ts', import.meta.url));
const appDir = fileURLToPath(new URL('..', import.meta.url));

/** Runs the CLI in a child process (as a user would), resolving with its exit code and output. */
function runCli(args: string[], onStdout?: (child: ReturnType<typeof spawn>, text: string) => void) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolvePromise) => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', cliPath, ...args], {
      cwd: appDir,
      env: { ...process.env, INIT_CWD: root },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      onStdout?.(child, stdout);
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

const smoke = ['--preset', 'smoke', '--batch-size', '4', '--seq-len', '32', '--backend', 'wasm'];

/** The cells of the markdown table whose header starts with `| model |`. */
function markdownRows(markdown: string): string[][] {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.startsWith('| model |'));
  const rows: string[][] = [];
  for (let i = start + 2; i < lines.length && lines[i]!.startsWith('|'); i++) {
    rows.push(lines[i]!.slice(2, -2).split(' | '));
  }
  return rows;
}

describe('moepp-pretrain compare (end to end, smoke preset)', () => {
  const out = join(root, 'compare');
  let results: ComparisonResults;

  it('trains dense, MoE and MoE++ and writes a report with every section and chart', async () => {
    const { code, stdout, stderr } = await runCli(['compare', ...smoke, '--steps', '8', '--eval-every', '4', '--out', out, '--json']);
    expect(code, stderr).toBe(0);
    results = JSON.parse(stdout) as ComparisonResults;
    expect(results.models.map((m) => m.name)).toEqual(['dense', 'moe', 'moepp']);
    expect(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'))).toEqual(results);
    for (const file of ['report.md', 'index.html', 'charts/loss.svg', 'charts/throughput.svg', 'charts/load.svg']) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    const markdown = readFileSync(join(out, 'report.md'), 'utf8');
    for (const section of ['### Side by side', '## Charts', '## Settings', 'Lowest validation loss']) expect(markdown).toContain(section);
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    expect(html.match(/<svg/g)?.length).toBe(3);
    for (const name of ['dense', 'moe', 'moepp']) {
      expect(existsSync(join(out, name, 'metrics.jsonl'))).toBe(true);
      expect(existsSync(join(out, name, 'checkpoint', 'model.safetensors'))).toBe(true);
    }
    // Every model learned something in 8 steps, and MoE++ sent some slots to zero-computation experts.
    for (const m of results.models) expect(m.evaluation.loss).toBeLessThan(m.evaluation.initialLoss);
    const moepp = results.models[2]!;
    expect(moepp.routing!.ffnExpertsPerToken).toBeLessThan(2);
    expect(moepp.idealSpeedup).toBeCloseTo(1 / ((0.75 * 4) / (0.75 * 4 + 4)), 10);
    expect(results.models[1]!.expert.ratioToMoe).toBe(1);
  }, 180_000);

  it('report.md shows exactly the numbers of results.json', () => {
    const rows = markdownRows(readFileSync(join(out, 'report.md'), 'utf8'));
    expect(rows).toHaveLength(3);
    results.models.forEach((m, i) => {
      const row = rows[i]!;
      expect(row[0]).toBe(m.name);
      expect(row[1]).toBe(formatCount(m.parameters.total));
      expect(row[2]).toBe(formatCount(m.parameters.activated));
      expect(row[3]).toBe(formatCount(m.flopsPerToken.activated));
      expect(row[4]).toBe(formatCount(m.training.tokensPerSecond));
      expect(row[6]).toBe(formatRatio(m.expert.ratioToMoe));
      expect(row[7]).toBe(formatLoss(m.evaluation.loss));
      expect(row[8]).toBe(formatFixed(m.evaluation.perplexity));
      expect(row[9]).toBe(formatPercent(m.evaluation.accuracy));
      expect(row[10]).toBe(m.routing ? formatFixed(m.routing.ffnExpertsPerToken) : '–');
    });
    // And the perplexity in results.json is exp(loss) of the same evaluation.
    for (const m of results.models) expect(m.evaluation.perplexity).toBeCloseTo(Math.exp(m.evaluation.loss), 3);
  });

  it('eval --json scores a checkpoint on a token file, and generate writes text', async () => {
    const tokens = join(root, 'tokens.json');
    writeFileSync(tokens, JSON.stringify(Array.from(Buffer.from('It was the best of times, it was the worst of times.'))));
    const evalRun = await runCli(['eval', '--checkpoint', join(out, 'moepp', 'checkpoint'), '--tokens', tokens, '--json', '--backend', 'wasm']);
    expect(evalRun.code, evalRun.stderr).toBe(0);
    const scores = JSON.parse(evalRun.stdout) as { loss: number; perplexity: number; tokens: number };
    expect(scores.tokens).toBe(51);
    expect(scores.perplexity).toBeCloseTo(Math.exp(scores.loss), 3);
    const generated = await runCli(['generate', '--checkpoint', join(out, 'moepp', 'checkpoint'), '--prompt', 'The ', '--max-tokens', '12', '--json', '--backend', 'wasm']);
    expect(generated.code, generated.stderr).toBe(0);
    expect((JSON.parse(generated.stdout) as { newTokens: number }).newTokens).toBe(12);
  }, 120_000);
});

describe('configuration errors name the field', () => {
  it('rejects bad values from flags, files and unknown fields', () => {
    expect(() => resolveRunConfig([{ preset: 'smoke', steps: 0 }])).toThrow(/field 'steps'/);
    expect(() => resolveRunConfig([{ preset: 'huge' }])).toThrow(/field 'preset'/);
    expect(() => resolveRunConfig([{ preset: 'smoke', moe: { tau: -1 } }])).toThrow(/field 'moe.tau'/);
    expect(() => resolveRunConfig([{ preset: 'smoke', learningRate: 1e-4, minLearningRate: 1e-3 }])).toThrow(/'minLearningRate'/);
    expect(() => resolveRunConfig([{ preset: 'smoke', stepz: 3 }])).toThrow(ConfigError);
    const file = join(root, 'bad.json');
    writeFileSync(file, JSON.stringify({ batchSize: 'eight' }));
    expect(() => configFromFlags({ config: file })).toThrow(new RegExp(`--config ${file}: field 'batchSize'`));
    expect(() => configFromFlags({ config: join(root, 'missing.json') })).toThrow(/cannot read the file/);
  });

  it('exits with code 2 and a clear message on the command line', async () => {
    const { code, stderr } = await runCli(['compare', '--preset', 'smoke', '--tau', '-0.5', '--out', join(root, 'never')]);
    expect(code).toBe(2);
    expect(stderr).toContain("field 'moe.tau'");
    expect(existsSync(join(root, 'never', 'results.json'))).toBe(false);
  }, 60_000);

  it('prints help for every command', async () => {
    const { code, stdout } = await runCli(['sweep', '--help']);
    expect(code).toBe(0);
    expect(stdout).toContain('--which');
    expect(stdout).toContain('--backend');
  }, 60_000);
});

describe('resume after an interrupted run', () => {
  it('continues from the Ctrl-C checkpoint and ends where an uninterrupted run ends', async () => {
    const args = ['run', '--variant', 'moepp', ...smoke, '--steps', '24', '--eval-every', '24', '--checkpoint-every', '4'];
    const straight = join(root, 'straight');
    const reference = await runCli([...args, '--out', straight]);
    expect(reference.code, reference.stderr).toBe(0);

    const interrupted = join(root, 'interrupted');
    let sent = false;
    const first = await runCli([...args, '--out', interrupted], (child, text) => {
      // Interrupt once training has made progress past the first checkpoint.
      if (!sent && /step (8|9|1\d)\/24/.test(text)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    expect(sent).toBe(true);
    expect(first.code).toBe(130);
    expect(first.stderr).toContain('npm run pretrain -- resume');
    expect(existsSync(join(interrupted, 'results.json'))).toBe(false);
    expect(existsSync(join(interrupted, 'moepp', 'checkpoint', 'trainer-state.json'))).toBe(true);

    const resumed = await runCli(['resume', interrupted, '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const a = JSON.parse(readFileSync(join(straight, 'results.json'), 'utf8')) as ComparisonResults;
    const b = JSON.parse(resumed.stdout) as ComparisonResults;
    expect(b.models[0]!.training.steps).toBe(24);
    expect(b.models[0]!.curve.map((p) => p.loss)).toEqual(a.models[0]!.curve.map((p) => p.loss));
    expect(b.models[0]!.evaluation.loss).toBe(a.models[0]!.evaluation.loss);
  }, 240_000);
});

describe('main', () => {
  it('reports an unknown command as an error', async () => {
    const errors: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => {
      errors.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    const exit = process.exit;
    process.exit = ((code?: number) => {
      throw new Error(`exit ${code}`);
    }) as typeof process.exit;
    try {
      await expect(main(['node', 'cli', 'compare', '--preset', 'gigantic'])).rejects.toThrow(/exit 1/);
    } finally {
      process.stderr.write = original;
      process.exit = exit;
    }
    expect(errors.join('')).toContain("Allowed choices are smoke, nano, tiny, small");
  });
});
