/**
 * The byte-level pieces GPT-2 introduced and Hugging Face `tokenizers` calls `ByteLevel`:
 * a printable character for each of the 256 byte values, and the pre-tokenisation regex.
 */

/**
 * GPT-2's `bytes_to_unicode` table: byte value → one printable character.
 *
 * The 188 bytes that are already printable and not whitespace (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) map to
 * themselves; the other 68 (controls, space, `\xad`, …) map, in byte order, to U+0100, U+0101, …
 * So the space byte 0x20 becomes `Ġ` (U+0120) and the newline 0x0A becomes `Ċ` (U+010A), as in every
 * GPT-2 style `tokenizer.json`.
 */
export const BYTE_TO_UNICODE: readonly string[] = buildByteToUnicode();

/** The inverse of {@link BYTE_TO_UNICODE}: character → byte value. */
export const UNICODE_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));

function buildByteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const isPrintable = new Set(printable);
  const table = new Array<string>(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = isPrintable.has(b) ? String.fromCharCode(b) : String.fromCharCode(256 + shifted++);
  }
  return table;
}

/**
 * The GPT-2 pre-tokenisation pattern, as Hugging Face's `ByteLevel` pre-tokenizer uses it
 * (`use_regex: true`), written with Unicode property escapes:
 * English contractions (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`), an optional space followed by
 * letters, an optional space followed by numbers, an optional space followed by other non-space
 * characters, then whitespace runs (a run before a non-space character leaves its last space to that
 * character's piece). The pieces cover the text exactly, so joining them gives the text back.
 *
 * GPT-2's `\s` is written `\p{White_Space}`: that is what `\s` means in Hugging Face `tokenizers`' regex
 * engine (Oniguruma), whereas JavaScript's `\s` also matches U+FEFF and misses U+0085.
 *
 * A fresh `RegExp` is returned on each call because global regexes carry `lastIndex` state.
 *
 * @returns a global, Unicode-aware regex
 */
export function gpt2PreTokenizerPattern(): RegExp {
  return /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;
}

/**
 * Splits text into GPT-2 pre-tokens (see {@link gpt2PreTokenizerPattern}).
 *
 * @param text - any string
 * @returns the pieces, in order; `pieces.join('') === text`
 */
export function preTokenize(text: string): string[] {
  return text.match(gpt2PreTokenizerPattern()) ?? [];
}

const encoder = new TextEncoder();

/**
 * Converts UTF-8 bytes to their byte-level string (one {@link BYTE_TO_UNICODE} character per byte),
 * the form tokens take in `tokenizer.json`.
 *
 * @param bytes - UTF-8 bytes
 * @returns the byte-level string
 */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let out = '';
  for (const byte of bytes) out += BYTE_TO_UNICODE[byte] as string;
  return out;
}

/**
 * Converts a string to its byte-level form: `'Hello world'` → `'HelloĠworld'`.
 *
 * @param text - any string
 * @returns the byte-level string of its UTF-8 bytes
 */
export function textToByteLevel(text: string): string {
  return bytesToByteLevel(encoder.encode(text));
}

/**
 * Converts a byte-level string back to bytes.
 *
 * @param token - a string made of {@link BYTE_TO_UNICODE} characters
 * @returns the bytes, or `null` if some character is not a byte-level character
 */
export function byteLevelToBytes(token: string): Uint8Array | null {
  const bytes = new Uint8Array(token.length);
  let length = 0;
  for (const char of token) {
    const byte = UNICODE_TO_BYTE.get(char);
    if (byte === undefined) return null;
    bytes[length++] = byte;
  }
  return bytes.subarray(0, length);
}
