/**
 * Helpers shared by this package's tests (not part of the public surface; excluded from the build).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SeededRandom } from '@moepp/tensors-core';

/** A seeded random string from a mix of scripts, emoji (with ZWJ and skin tones), combining marks and controls. */
export function randomText(rng: SeededRandom, length: number): string {
  const ranges: [number, number][] = [
    [0x20, 0x7e], // ASCII
    [0x20, 0x7e],
    [0x00, 0x1f], // C0 controls, tab, newline, CR
    [0x7f, 0x9f], // DEL, C1 controls
    [0xa0, 0xff], // Latin-1 (NBSP, soft hyphen)
    [0x300, 0x36f], // combining marks
    [0x391, 0x3c9], // Greek
    [0x600, 0x6ff], // Arabic
    [0x900, 0x97f], // Devanagari
    [0x2000, 0x206f], // general punctuation, zero-width joiner, line separator
    [0x3000, 0x303f], // CJK punctuation, ideographic space
    [0x4e00, 0x9fff], // CJK ideographs
    [0xac00, 0xd7a3], // Hangul
    [0xe000, 0xf8ff], // private use
    [0xfe00, 0xfe0f], // variation selectors
    [0x1f300, 0x1f64f], // emoji
    [0x1f3fb, 0x1f3ff], // skin tones
    [0x10000, 0x10ffff], // any supplementary code point
  ];
  let text = '';
  while (text.length < length) {
    const [low, high] = ranges[rng.int(ranges.length)] as [number, number];
    const run = 1 + rng.int(6);
    for (let i = 0; i < run; i++) text += String.fromCodePoint(low + rng.int(high - low + 1));
  }
  return text;
}

const temporaryFolders: string[] = [];

/**
 * A fresh folder under the OS temp folder, removed by {@link removeTemporaryFolders}.
 *
 * @param prefix - the folder name's prefix
 * @returns its path
 */
export function temporaryFolder(prefix: string): string {
  const folder = mkdtempSync(join(tmpdir(), prefix));
  temporaryFolders.push(folder);
  return folder;
}

/** Removes every folder made by {@link temporaryFolder} (call it in `afterAll`). */
export function removeTemporaryFolders(): void {
  for (const folder of temporaryFolders.splice(0)) rmSync(folder, { recursive: true, force: true });
}
