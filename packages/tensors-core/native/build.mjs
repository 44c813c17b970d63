#!/usr/bin/env node
/**
 * Builds the optional native addon of @moepp/tensors-core (OpenBLAS sgemm and fused kernels on the
 * wasm heap, see accel.c) into native/build/Release/accel.node.
 *
 * Run by the repository's root `postinstall` (so by every `npm ci`), or by hand:
 * `node packages/tensors-core/native/build.mjs`. It never fails the install: whatever happens, it
 * prints ONE line saying what it did (built / skipped, and why) and exits 0.
 *
 * - Needs a C compiler (`$CC`, `cc`, `gcc` or `clang`) and Node's headers (`node_api.h`, from
 *   `npm config get nodedir`, the Node install's `include/node`, or `/usr/include/node`); never
 *   downloads anything.
 * - Builds with node-gyp (the copy bundled with npm) when Python 3 and `common.gypi` are present,
 *   else with one direct compiler call. Both produce the same file.
 * - OpenBLAS is not needed to build: the addon `dlopen`s it at run time. The line says whether the
 *   runtime library was found (on Debian/Ubuntu: `apt-get install libopenblas0-pthread`).
 * - Skipped when `MOEPP_ACCEL=off` or `MOEPP_SKIP_NATIVE_BUILD=1`, and on platforms other than Linux.
 * - `--status` builds nothing and prints `on` or `off: <why>` (see `status()` below).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const output = path.join(here, 'build', 'Release', 'accel.node');
const PREFIX = '@moepp/tensors-core native acceleration:';

/** The OpenBLAS runtime libraries the addon tries, in order (kept in step with src/accel.ts). */
const OPENBLAS_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0',
  '/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0',
  'libopenblasp.so.0',
  'libopenblas.so.0',
  'libopenblas.so',
];

function say(message) {
  console.log(`${PREFIX} ${message}`);
}

/** Reports a skip; an addon left by an earlier build is removed, so the tree shows what this run did. */
function skip(why) {
  try {
    rmSync(output, { force: true });
  } catch {
    // nothing to remove, or not ours to remove: the message still says what happened
  }
  say(`skipped (${why}); the kit runs on wasm alone`);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 180_000, stdio: ['ignore', 'pipe', 'pipe'], ...options });
  const text = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return { ok: result.status === 0 && !result.error, text, error: result.error };
}

function lastLine(text) {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  const line = lines.find((l) => /error/i.test(l)) ?? lines[lines.length - 1] ?? '';
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}

/** The folder holding include/node/node_api.h, or null. */
function findNodeDir() {
  const candidates = [
    process.env.npm_config_nodedir,
    path.resolve(path.dirname(process.execPath), '..'),
    '/usr',
    '/usr/local',
  ].filter((dir) => typeof dir === 'string' && dir.length > 0);
  return candidates.find((dir) => existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) ?? null;
}

function findCompiler() {
  const candidates = [process.env.CC, 'cc', 'gcc', 'clang'].filter((c) => typeof c === 'string' && c.length > 0);
  return candidates.find((c) => run(c, ['--version']).ok) ?? null;
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    process.env.npm_execpath ? path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : undefined,
    path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ].filter((c) => typeof c === 'string' && c.length > 0);
  return candidates.find((c) => existsSync(c)) ?? null;
}

function buildWithNodeGyp(nodeGyp, nodeDir) {
  const python = ['python3', 'python'].find((p) => run(p, ['--version']).ok);
  if (python === undefined) return { ok: false, text: 'no python3' };
  if (!existsSync(path.join(nodeDir, 'include', 'node', 'common.gypi'))) return { ok: false, text: 'no common.gypi' };
  return run(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, `--python=${python}`, '--loglevel=error'], {
    cwd: here,
    env: { ...process.env, npm_config_nodedir: nodeDir },
  });
}

function buildWithCompiler(compiler, nodeDir) {
  mkdirSync(path.dirname(output), { recursive: true });
  const temporary = `${output}.${process.pid}.tmp`;
  const result = run(compiler, [
    '-O3',
    '-std=gnu11',
    '-fno-trapping-math',
    '-fno-math-errno',
    '-fPIC',
    '-shared',
    '-DNODE_GYP_MODULE_NAME=accel',
    `-I${path.join(nodeDir, 'include', 'node')}`,
    path.join(here, 'accel.c'),
    '-o',
    temporary,
    '-ldl',
    '-pthread',
  ]);
  if (result.ok) {
    copyFileSync(temporary, output);
  }
  rmSync(temporary, { force: true });
  return result;
}

/** Loads the built addon and looks for OpenBLAS; returns a phrase for the closing line. */
function probe() {
  const require = createRequire(import.meta.url);
  const addon = require(output);
  const loaded = addon.load(OPENBLAS_CANDIDATES, 1, 0);
  return loaded.ok
    ? `OpenBLAS found (${loaded.library}): acceleration is on`
    : 'OpenBLAS not found: everything runs on wasm alone (on Debian/Ubuntu `apt-get install libopenblas0-pthread` turns acceleration on)';
}

function main() {
  if (process.env.MOEPP_ACCEL === 'off' || process.env.MOEPP_SKIP_NATIVE_BUILD === '1') {
    skip(process.env.MOEPP_ACCEL === 'off' ? 'MOEPP_ACCEL=off' : 'MOEPP_SKIP_NATIVE_BUILD=1');
    return;
  }
  if (process.platform !== 'linux') {
    skip(`only Linux is supported, this is ${process.platform}`);
    return;
  }
  const nodeDir = findNodeDir();
  if (nodeDir === null) {
    skip("Node's headers, include/node/node_api.h, were not found");
    return;
  }
  const compiler = findCompiler();
  if (compiler === null) {
    skip('no C compiler: install one, e.g. `apt-get install gcc`, then run `npm run build:native`');
    return;
  }
  let how = '';
  const nodeGyp = findNodeGyp();
  let gypFailure = '';
  if (nodeGyp !== null) {
    const result = buildWithNodeGyp(nodeGyp, nodeDir);
    if (result.ok && existsSync(output)) how = 'node-gyp';
    else gypFailure = lastLine(result.text);
  }
  if (how === '') {
    rmSync(output, { force: true });
    const result = buildWithCompiler(compiler, nodeDir);
    if (!result.ok || !existsSync(output)) {
      skip(`the build failed: ${lastLine(result.text) || result.error?.message || 'unknown error'}`);
      return;
    }
    how = `${compiler}${gypFailure ? `, node-gyp failed: ${gypFailure}` : ''}`;
  }
  let status;
  try {
    status = probe();
  } catch (error) {
    skip(`the built addon does not load: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
    return;
  }
  say(`built ${path.relative(process.cwd(), output) || output} (${how}); ${status}`);
}

/**
 * `--status`: builds nothing; prints `on` when the built addon loads and finds OpenBLAS, else `off: <why>`
 * (CI uses it to decide whether tests must see acceleration active). Exit code 0 either way.
 */
function status() {
  if (!existsSync(output)) return 'off: the addon is not built';
  try {
    return probe().startsWith('OpenBLAS found') ? 'on' : 'off: OpenBLAS not found';
  } catch (error) {
    return `off: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
  }
}

if (process.argv.includes('--status')) {
  console.log(status());
  process.exit(0);
}

try {
  main();
} catch (error) {
  skip(error instanceof Error ? error.message.split('\n')[0] : String(error));
}
process.exitCode = 0;
