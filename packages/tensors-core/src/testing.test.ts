/** Tests of `@moepp/tensors-core/testing`: the README-example harness, seeded values and acceleration paths. */
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { accelerationStatus } from './accel.js';
import { SeededRandom } from './random.js';
import { accelerationPaths, expectReadmeExample, readmeExampleBlocks, seededNormals, startReadmeExample } from './testing.js';

const scratch = mkdtempSync(join(tmpdir(), 'moepp-testing-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Writes `<package>/README.md` and `<package>/src/readme.test.ts`; returns the test file's URL. */
function fakePackage(name: string, readme: string, testFile: string): string {
  mkdirSync(join(scratch, name, 'src'), { recursive: true });
  writeFileSync(join(scratch, name, 'README.md'), readme);
  writeFileSync(join(scratch, name, 'src', 'readme.test.ts'), testFile);
  return pathToFileURL(join(scratch, name, 'src', 'readme.test.ts')).href;
}

const testFile = "import { it } from 'vitest';\n// example:start\nconst a = 1;\nconst b = a + 1;\n// example:end\nit('runs', () => {});\n";

describe('readmeExampleBlocks', () => {
  it('returns the ts blocks in order, without fences, and skips other languages', () => {
    const markdown = '# x\n```ts\nconst a = 1;\n```\n```sh\nnpm test\n```\ntext\n```ts\nf();\ng();\n```\n';
    expect(readmeExampleBlocks(markdown)).toEqual(['const a = 1;\n', 'f();\ng();\n']);
    expect(readmeExampleBlocks('no code')).toEqual([]);
  });
});

describe('expectReadmeExample', () => {
  it('passes when the README shows the marked example as a ts block', () => {
    const url = fakePackage('same', '# same\n\n```ts\nconst a = 1;\nconst b = a + 1;\n```\n\nMore text.\n', testFile);
    expect(() => expectReadmeExample(url)).not.toThrow();
    expect(() => expectReadmeExample(new URL(url))).not.toThrow();
  });

  it('names the README, the block and the first differing line otherwise', () => {
    const url = fakePackage('differs', '```ts\nother();\n```\n\n```ts\nconst a = 1;\nconst b = a + 2;\n```\n', testFile);
    expect(() => expectReadmeExample(url)).toThrow(
      /differs\/README\.md does not show the example of .*differs\/src\/readme\.test\.ts; its closest ```ts block \(number 2\) differs at example line 2: expected "const b = a \+ 1;", got "const b = a \+ 2;"/,
    );
  });

  it('fails on a README without ts blocks, on an example in another language and on a missing README', () => {
    expect(() => expectReadmeExample(fakePackage('none', '# none\n', testFile))).toThrow(/it has no ```ts block/);
    const shell = fakePackage('shell', '```js\nconst a = 1;\nconst b = a + 1;\n```\n', testFile);
    expect(() => expectReadmeExample(shell)).toThrow(/it has no ```ts block/);
    expect(() => expectReadmeExample(shell, pathToFileURL(join(scratch, 'missing.md')))).toThrow(/ENOENT/);
  });

  it('compares with another README when given one', () => {
    const url = fakePackage('elsewhere', '# nothing here\n', testFile);
    const other = join(scratch, 'OTHER.md');
    writeFileSync(other, '```ts\nconst a = 1;\nconst b = a + 1;\n```\n');
    expect(() => expectReadmeExample(url, pathToFileURL(other))).not.toThrow();
  });

  it('requires both markers in the test file', () => {
    const url = fakePackage('unmarked', '```ts\nconst a = 1;\n```\n', 'const a = 1;\n// example:end\n');
    expect(() => expectReadmeExample(url)).toThrow(/must hold the example between '\/\/ example:start' and '\/\/ example:end' lines/);
  });
});

describe('startReadmeExample', () => {
  it('records console.log until endExample and stays in the working folder by default', () => {
    const before = process.cwd();
    const original = console.log;
    const run = startReadmeExample();
    console.log('shape', [16, 129]);
    console.log();
    run.endExample();
    run.endExample(); // idempotent
    expect(console.log).toBe(original);
    expect(run.printed).toEqual([['shape', [16, 129]], []]);
    expect(run.workDir).toBe(before);
    run.cleanup();
    expect(process.cwd()).toBe(before);
  });

  it('runs in a fresh temporary folder and removes it on cleanup', () => {
    const before = process.cwd();
    const run = startReadmeExample({ temporaryFolderPrefix: 'moepp-testing-run-' });
    try {
      expect(realpathSync(process.cwd())).toBe(realpathSync(run.workDir));
      expect(run.workDir.startsWith(join(tmpdir(), 'moepp-testing-run-'))).toBe(true);
      writeFileSync('written-by-example.txt', 'x'); // relative paths land in the temporary folder
      expect(existsSync(join(run.workDir, 'written-by-example.txt'))).toBe(true);
    } finally {
      run.cleanup();
    }
    run.cleanup(); // idempotent
    expect(process.cwd()).toBe(before);
    expect(existsSync(run.workDir)).toBe(false);
  });
});

describe('seededNormals and accelerationPaths', () => {
  it('seededNormals draws the same scaled values for the same seed, others for another', () => {
    const [a, b, c] = [seededNormals(5, 3), seededNormals(5, 3, 2), seededNormals(5, 4)];
    expect(Array.from(b)).toEqual(Array.from(a, (v) => Math.fround(v * 2)));
    expect(Array.from(c)).not.toEqual(Array.from(a));
    const rng = new SeededRandom(3);
    expect(Array.from(a)).toEqual(Array.from({ length: 5 }, () => Math.fround(rng.normal())));
  });

  it('accelerationPaths lists the accelerated path only while acceleration is active, then the plain one', () => {
    const expected = [...(accelerationStatus().active ? [{ path: 'fast', accelerated: true }] : []), { path: 'slow', accelerated: false }];
    expect(accelerationPaths('fast', 'slow')).toEqual(expected);
    expect(accelerationPaths().at(-1)).toEqual({ path: 'composite ops', accelerated: false });
  });
});
