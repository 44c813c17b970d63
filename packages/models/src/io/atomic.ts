/**
 * Crash-safe writes, shared by the safetensors writer, {@link exportCheckpoint} and the trainer's
 * checkpoints (`@moepp/trainers`):
 *
 * - {@link writeFileSynced}: a new file, written whole and flushed to disk (fsync);
 * - {@link writeFileAtomically}: a file replaced by a flushed temporary sibling and a rename;
 * - {@link syncDirectory}: flushes a folder's entries (renames, new files) to disk;
 * - {@link replaceFolderAtomically}: a folder replaced as a whole by a filled, flushed staging folder.
 *
 * Replacing a folder `<dir>` (one behaviour for every caller):
 *
 * ```
 * 1. parent of <dir> created if missing; an existing <dir> must be a real folder (not a file or a link)
 * 2. fill(staging)          staging = <parent>/.<name>.<pid>.<random>.tmp, then fsync'd
 * 3. <dir> -> <dir>.previous   (a stale <dir>.previous, left while <dir> exists, is deleted first)
 * 4. staging -> <dir>       if this rename fails, <dir>.previous is renamed back to <dir>
 * 5. fsync(parent), then <dir>.previous deleted
 * ```
 *
 * At every instant `<dir>` is complete, or `<dir>` is missing and `<dir>.previous` is complete: a crash
 * between the renames of steps 3 and 4 leaves only `<dir>.previous` ({@link previousFolderPath}), which
 * a reader that must survive crashes looks for (the trainer's `resolveCheckpointDir`) and which the next
 * replacement deletes once the new folder is in place. A failure leaves no staging folder behind and the
 * old `<dir>` in place. `<dir>.previous` is reserved for this; writers must not race on one `<dir>`.
 *
 * Errors are the file system's (with their `code`) or the callback's, passed on unchanged so that
 * callers can wrap them in their own error naming their operation.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

/** Largest single read or write; `fs.read` and `fs.write` refuse lengths of 2 GiB and more. */
export const MAX_IO_CHUNK = 1 << 30;

/** Suffix of the folder that holds the old content while {@link replaceFolderAtomically} swaps. */
const PREVIOUS_SUFFIX = '.previous';

function isNotFound(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'ENOENT';
}

/** A hidden, unique sibling name for a temporary file or folder: `.<name>.<pid>.<random>.tmp`. */
function temporarySibling(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Creates a new file, writes all of `content` and flushes it to disk (fsync) before closing it. A file
 * already at `path` is an error (`EEXIST`), never overwritten; if writing fails the partial file is
 * removed.
 *
 * @param path - the file to create
 * @param content - the bytes, or a string written as UTF-8
 * @returns when the file is written, flushed and closed
 * @throws the file system's error (e.g. `EEXIST`, `ENOENT`, `ENOSPC`) unchanged
 */
export async function writeFileSynced(path: string, content: string | Uint8Array): Promise<void> {
  const bytes = typeof content === 'string' ? new TextEncoder().encode(content) : content;
  let handle: FileHandle | undefined;
  let created = false;
  try {
    handle = await open(path, 'wx');
    created = true;
    let written = 0;
    while (written < bytes.length) {
      const length = Math.min(bytes.length - written, MAX_IO_CHUNK);
      const { bytesWritten } = await handle.write(bytes, written, length, written);
      if (bytesWritten <= 0) throw new Error(`write made no progress at byte ${written} of ${bytes.length}`);
      written += bytesWritten;
    }
    await handle.sync();
    const closing = handle;
    handle = undefined;
    await closing.close();
  } catch (error) {
    await handle?.close().catch(() => undefined);
    if (created) await unlink(path).catch(() => undefined);
    throw error;
  }
}

/**
 * Replaces `path` atomically: the content goes to a temporary file in the same folder
 * (`.<name>.<pid>.<random>.tmp`), which is flushed (fsync) and renamed over `path`; then the folder is
 * flushed ({@link syncDirectory}). Readers see the old file or the complete new one, never a partial
 * file. If anything fails the temporary file is removed and an existing file at `path` is untouched. A
 * symbolic link at `path` is replaced by a regular file.
 *
 * @param path - the destination file; its folder must exist
 * @param content - the bytes, or a string written as UTF-8
 * @returns when the new file is in place
 * @throws the file system's error (e.g. `ENOENT` for a missing folder, `ENOSPC`, `EISDIR`) unchanged
 */
export async function writeFileAtomically(path: string, content: string | Uint8Array): Promise<void> {
  const temporary = temporarySibling(path);
  try {
    await writeFileSynced(temporary, content);
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  await syncDirectory(dirname(path));
}

/**
 * Flushes a folder's entries (renames, created and deleted files) to disk. Best effort: where a folder
 * cannot be opened or synced (Windows, some file systems) it returns quietly, as the operations
 * themselves have happened; only their durability across a power cut is then not guaranteed.
 *
 * @param directory - the folder
 * @returns when flushed, or when flushing is not possible
 */
export async function syncDirectory(directory: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(directory, 'r');
    await handle.sync();
  } catch {
    // See above: not every platform can open or sync a directory.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/**
 * The folder that holds `target`'s old content while {@link replaceFolderAtomically} swaps it: when
 * `target` is missing and this folder exists, a crash interrupted a replacement and it holds the last
 * complete content.
 *
 * @param target - the folder being replaced
 * @returns `<target>.previous`
 */
export function previousFolderPath(target: string): string {
  return `${target}${PREVIOUS_SUFFIX}`;
}

/** What is at `path`: nothing, a real folder, or something else (a file or a link), which is refused. */
async function checkReplaceable(op: string, path: string, what: string): Promise<boolean> {
  let info;
  try {
    info = await lstat(path);
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
  if (!info.isDirectory()) {
    throw new Error(`${op}: '${path}' exists and is not a folder${info.isSymbolicLink() ? ' (a symbolic link)' : ''}; refusing to ${what} it`);
  }
  return true;
}

/**
 * Replaces the folder `target` as a whole: `fill` writes the new content into an empty staging folder,
 * which is flushed and swapped into place by two renames, keeping the old folder as
 * `<target>.previous` ({@link previousFolderPath}) until the new one is in place. The steps and the
 * crash guarantees are in the module notes: `target` is never partial, a crash between the renames
 * leaves the old content complete in `<target>.previous`, and the next replacement deletes that. Missing
 * parent folders are created. Files that `fill` writes should be flushed (e.g. {@link writeFileSynced},
 * {@link writeSafetensorsFile}).
 *
 * @param target - the folder to replace (or create)
 * @param fill - writes the new content into the staging folder it is given
 * @returns when the new folder is in place (the old one is then deleted, best effort)
 * @throws whatever `fill` throws, unchanged; the file system's error (e.g. `EEXIST` or `ENOTDIR` when a
 *   parent is a file); an `Error` naming the path when `target` or `<target>.previous` exists and is not a folder (a
 *   file or a symbolic link), which is never replaced. In every case the staging folder is removed and
 *   an existing `target` is left (or put back) in place.
 */
export async function replaceFolderAtomically(target: string, fill: (staging: string) => Promise<void>): Promise<void> {
  const op = 'replaceFolderAtomically';
  const folder = resolve(target);
  const parent = dirname(folder);
  const previous = previousFolderPath(folder);
  const staging = temporarySibling(folder);
  await mkdir(parent, { recursive: true });
  // Fail before the (possibly long) fill; checked again right before the swap.
  await checkReplaceable(op, folder, 'replace');
  await checkReplaceable(op, previous, 'delete');
  let stagingExists = false;
  try {
    await mkdir(staging);
    stagingExists = true;
    await fill(staging);
    await syncDirectory(staging);
    const replacing = await checkReplaceable(op, folder, 'replace');
    const stale = await checkReplaceable(op, previous, 'delete');
    if (replacing) {
      // <dir> is complete, so a <dir>.previous beside it is stale (a crash after the second rename).
      if (stale) await rm(previous, { recursive: true, force: true });
      await rename(folder, previous);
    }
    try {
      await rename(staging, folder);
    } catch (error) {
      if (replacing) await rename(previous, folder).catch(() => undefined); // put the old folder back
      throw error;
    }
    stagingExists = false;
  } finally {
    if (stagingExists) await rm(staging, { recursive: true, force: true }).catch(() => undefined);
  }
  await syncDirectory(parent);
  // The new folder is in place. This also deletes a <dir>.previous that a crash left while <dir> was
  // missing; a failure here only leaves it behind for the next replacement.
  await rm(previous, { recursive: true, force: true }).catch(() => undefined);
}
