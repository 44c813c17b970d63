// Adds up vitest's JSON reports (test-results.json in each workspace, and test-results.<run>.json of
// extra runs) and prints the closing line
// `N passed, N failed` that CI reads. Exits 1 when a test failed, a suite failed to load, or no test ran.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const folders = ['packages', 'apps']
  .filter((group) => existsSync(join(root, group)))
  .flatMap((group) => readdirSync(join(root, group)).map((name) => join(group, name)))
  .concat(['benchmarks', 'examples']);

let passed = 0;
let failed = 0;
let skipped = 0;
let brokenSuites = 0;
// Each workspace's report, plus any extra run's report beside it (`test-results.<run>.json`, e.g.
// @moepp/tensors-core's second run with native acceleration off), counted as its own line.
const reportsOf = (folder) =>
  existsSync(join(root, folder))
    ? readdirSync(join(root, folder))
        .filter((name) => /^test-results(\.[\w-]+)?\.json$/.test(name))
        .sort()
        .map((name) => ({ file: join(root, folder, name), label: name === 'test-results.json' ? folder : `${folder} (${name.slice(13, -5)})` }))
    : [];
for (const { file, label } of folders.flatMap(reportsOf)) {
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
  // A test file that fails to import counts as a failed suite with no failed test.
  brokenSuites += (report.testResults ?? []).filter((r) => r.status === 'failed' && r.assertionResults.length === 0).length;
  console.log(`${label}: ${report.numPassedTests} passed, ${report.numFailedTests} failed`);
}
failed += brokenSuites;
console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
