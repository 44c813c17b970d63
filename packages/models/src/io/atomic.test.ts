import { mkdir, mkdtemp, readdir, readFile, rename as renameForTest, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { previousFolderPath, replaceFolderAtomically, syncDirectory, writeFileAtomically, writeFileSynced } from './atomic.js';

// Fault injection: the rename of a staging folder (`….tmp`) onto `failRenameInto` fails; every other
// call reaches the real function.
const faults = vi.hoisted(() => ({ failRenameInto: null as string | null }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const rename = async (from: string, to: string): Promise<void> => {
    if (faults.failRenameInto !== null && to === faults.failRenameInto && from.endsWith('.tmp')) {
      throw Object.assign(new Error('injected: rename failed'), { code: 'EIO' });
    }
    return actual.rename(from, to);
  };
  return { ...actual, rename, default: { ...actual, rename } };
});

let root = '';
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'moepp-atomic-'));
  faults.failRenameInto = null;
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Every file below `dir` (relative path -> content), to prove a folder is untouched. */
async function contents(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out[join(entry.parentPath, entry.name).slice(dir.length + 1)] = await readFile(join(entry.parentPath, entry.name), 'utf8');
  }
  return out;
}

/** Writes `files` (name -> text) into a folder, as a `fill` callback. */
const writeAll = (files: Record<string, string>) => async (staging: string) => {
  for (const [name, text] of Object.entries(files)) await writeFileSynced(join(staging, name), text);
};

describe('writeFileSynced', () => {
  it('creates a file with the bytes or the UTF-8 text', async () => {
    await writeFileSynced(join(root, 'a.txt'), 'héllo\n');
    await writeFileSynced(join(root, 'b.bin'), new Uint8Array([0, 255, 7]));
    expect(await readFile(join(root, 'a.txt'), 'utf8')).toBe('héllo\n');
    expect(Array.from(await readFile(join(root, 'b.bin')))).toEqual([0, 255, 7]);
  });

  it('never overwrites an existing file', async () => {
    await writeFile(join(root, 'a.txt'), 'old');
    await expect(writeFileSynced(join(root, 'a.txt'), 'new')).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(join(root, 'a.txt'), 'utf8')).toBe('old');
  });
});

describe('writeFileAtomically', () => {
  it('replaces a file by a new one and leaves no temporary file', async () => {
    const path = join(root, 'config.json');
    await writeFile(path, 'old');
    const oldInode = (await stat(path)).ino;
    await writeFileAtomically(path, '{"new": true}');
    expect(await readFile(path, 'utf8')).toBe('{"new": true}');
    expect((await stat(path)).ino).not.toBe(oldInode); // renamed over, not rewritten in place
    expect(await readdir(root)).toEqual(['config.json']);
  });

  it('passes on the file system error (with its code) and leaves nothing behind', async () => {
    await expect(writeFileAtomically(join(root, 'missing', 'x.json'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
    await mkdir(join(root, 'dir'));
    await writeFile(join(root, 'dir', 'keep'), 'x');
    await expect(writeFileAtomically(join(root, 'dir'), 'x')).rejects.toHaveProperty('code'); // a folder is in the way
    expect((await readdir(root)).sort()).toEqual(['dir']);
    expect(await readdir(join(root, 'dir'))).toEqual(['keep']);
  });
});

describe('syncDirectory', () => {
  it('is best effort: a missing folder is not an error', async () => {
    await expect(syncDirectory(root)).resolves.toBeUndefined();
    await expect(syncDirectory(join(root, 'missing'))).resolves.toBeUndefined();
  });
});

describe('replaceFolderAtomically', () => {
  it('names <dir>.previous as the folder that holds the old content', () => {
    expect(previousFolderPath('/runs/ckpt')).toBe('/runs/ckpt.previous');
  });

  it('creates a folder (and missing parents), then replaces it as a whole', async () => {
    const dir = join(root, 'runs', 'a', 'ckpt');
    await replaceFolderAtomically(dir, writeAll({ 'one.txt': '1', 'two.txt': '2' }));
    expect(await contents(dir)).toEqual({ 'one.txt': '1', 'two.txt': '2' });
    await replaceFolderAtomically(dir, writeAll({ 'three.txt': '3' }));
    expect(await contents(dir)).toEqual({ 'three.txt': '3' }); // nothing of the old folder survives
    expect(await readdir(join(root, 'runs', 'a'))).toEqual(['ckpt']);
  });

  it('hands fill an empty staging folder beside the target, named .<name>.<pid>.<random>.tmp', async () => {
    const dir = join(root, 'ckpt');
    let seen = '';
    await replaceFolderAtomically(dir, async (staging) => {
      seen = staging;
      expect(await readdir(staging)).toEqual([]);
    });
    expect(seen).toMatch(new RegExp(`^${root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/\\.ckpt\\.${process.pid}\\.[0-9a-f]{12}\\.tmp$`));
    expect(await readdir(root)).toEqual(['ckpt']);
  });

  it('when fill fails, passes its error on unchanged and leaves the old folder and no staging folder', async () => {
    const dir = join(root, 'ckpt');
    await replaceFolderAtomically(dir, writeAll({ 'old.txt': 'old' }));
    const failure = new Error('injected: fill failed');
    const error = await replaceFolderAtomically(dir, async (staging) => {
      await writeFileSynced(join(staging, 'half.txt'), 'half');
      throw failure;
    }).catch((e: unknown) => e);
    expect(error).toBe(failure);
    expect(await contents(dir)).toEqual({ 'old.txt': 'old' });
    expect(await readdir(root)).toEqual(['ckpt']);
  });

  it('when renaming the new folder into place fails, puts the old one back', async () => {
    const dir = join(root, 'ckpt');
    await replaceFolderAtomically(dir, writeAll({ 'old.txt': 'old' }));
    faults.failRenameInto = dir;
    await expect(replaceFolderAtomically(dir, writeAll({ 'new.txt': 'new' }))).rejects.toMatchObject({ code: 'EIO' });
    faults.failRenameInto = null;
    expect(await contents(dir)).toEqual({ 'old.txt': 'old' });
    expect(await readdir(root)).toEqual(['ckpt']);
  });

  it('after a crash between the two renames, the old content is complete in <dir>.previous; the next replacement removes it', async () => {
    const dir = join(root, 'ckpt');
    await replaceFolderAtomically(dir, writeAll({ 'old.txt': 'old' }));
    await renameForTest(dir, previousFolderPath(dir)); // the state a crash after the first rename leaves
    expect(await contents(previousFolderPath(dir))).toEqual({ 'old.txt': 'old' });
    // A failed write keeps it: it is still the only complete copy.
    await expect(replaceFolderAtomically(dir, () => Promise.reject(new Error('injected')))).rejects.toThrow('injected');
    expect(await readdir(root)).toEqual(['ckpt.previous']);
    await replaceFolderAtomically(dir, writeAll({ 'new.txt': 'new' }));
    expect(await contents(dir)).toEqual({ 'new.txt': 'new' });
    expect(await readdir(root)).toEqual(['ckpt']);
  });

  it('deletes a stale <dir>.previous left beside a complete <dir> (a crash after the second rename)', async () => {
    const dir = join(root, 'ckpt');
    await replaceFolderAtomically(dir, writeAll({ 'current.txt': 'current' }));
    await mkdir(previousFolderPath(dir));
    await writeFile(join(previousFolderPath(dir), 'stale.txt'), 'stale');
    await replaceFolderAtomically(dir, writeAll({ 'new.txt': 'new' }));
    expect(await contents(dir)).toEqual({ 'new.txt': 'new' });
    expect(await readdir(root)).toEqual(['ckpt']);
  });

  it('refuses to replace a file or a symbolic link, or to delete a <dir>.previous that is not a folder', async () => {
    const file = join(root, 'afile');
    await writeFile(file, 'not a folder');
    await expect(replaceFolderAtomically(file, writeAll({ 'x.txt': 'x' }))).rejects.toThrow(
      `replaceFolderAtomically: '${file}' exists and is not a folder; refusing to replace it`,
    );
    const target = join(root, 'real');
    await mkdir(target);
    const link = join(root, 'link');
    await symlink(target, link);
    await expect(replaceFolderAtomically(link, writeAll({ 'x.txt': 'x' }))).rejects.toThrow(/'.*link' exists and is not a folder \(a symbolic link\)/);
    const dir = join(root, 'ckpt');
    await writeFile(previousFolderPath(dir), 'precious');
    await expect(replaceFolderAtomically(dir, writeAll({ 'x.txt': 'x' }))).rejects.toThrow(/ckpt\.previous' exists and is not a folder; refusing to delete it/);
    expect(await readFile(file, 'utf8')).toBe('not a folder');
    expect(await readFile(previousFolderPath(dir), 'utf8')).toBe('precious');
    expect((await readdir(root)).sort()).toEqual(['afile', 'ckpt.previous', 'link', 'real']);
    expect(await readdir(target)).toEqual([]);
  });

  it('passes on the error when a parent is a file', async () => {
    await writeFile(join(root, 'afile'), 'x');
    const error = await replaceFolderAtomically(join(root, 'afile', 'ckpt'), writeAll({})).catch((e: unknown) => e);
    expect(['EEXIST', 'ENOTDIR']).toContain((error as { code?: unknown }).code); // Node's recursive mkdir says EEXIST on Linux
    expect(await readdir(root)).toEqual(['afile']);
  });
});
