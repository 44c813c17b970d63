/**
 * Byte-level BPE encoding and decoding, as GPT-2 and Hugging Face `tokenizers` do it.
 *
 * Text → (special tokens split out) → GPT-2 pre-tokens → UTF-8 bytes → one byte token per byte →
 * merges applied in rank order (lowest rank first, leftmost first among equal ranks) → ids.
 * Training lives in `bpe-trainer.ts`; the `tokenizer.json` reader in `load.ts`.
 */
import { ConfigError } from '@moepp/tensors-core';
import { BYTE_TO_UNICODE, byteLevelToBytes, gpt2PreTokenizerPattern } from './byte-level.js';
import { byteLevelBpeJson } from './hf-json.js';
import { END_OF_TEXT, type Tokenizer, type TokenizerJson } from './tokenizer.js';

/** A special token: literal text matched before pre-tokenisation and given one fixed id. */
export interface SpecialToken {
  /** The literal text, e.g. `'<|endoftext|>'`. */
  readonly content: string;
  /** Its id. */
  readonly id: number;
}

/** Everything that defines a byte-level BPE tokenizer. */
export interface BpeTokenizerSpec {
  /** Byte-level token string → id. Must contain all 256 byte characters and every merge result. */
  readonly vocab: ReadonlyMap<string, number> | Readonly<Record<string, number>>;
  /** Merges in rank order (rank 0 first), each a pair of byte-level token strings. */
  readonly merges: readonly (readonly [string, string])[];
  /** Special tokens (HF `added_tokens`); `<|endoftext|>`, if present, becomes {@link BpeTokenizer.endOfTextId}. */
  readonly specialTokens?: readonly SpecialToken[];
}

/** Pre-tokens longer than this many bytes are merged with a heap instead of the quadratic GPT-2 loop. */
const LONG_WORD = 48;
/** The encoder forgets its pre-token cache when it grows past this many entries. */
const CACHE_LIMIT = 1 << 18;

const utf8Encoder = new TextEncoder();
// ignoreBOM: keep a leading U+FEFF (the default decoder drops it, which would lose text).
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * A byte-level BPE tokenizer (GPT-2 scheme), built from a vocabulary and a merge list — by
 * {@link trainBpe}, or from any GPT-2 style `tokenizer.json` through {@link tokenizerFromJSON}.
 *
 * Encoding caches the ids of each distinct pre-token, so running text costs one regex match and one
 * map look-up per pre-token once the common words are cached.
 */
export class BpeTokenizer implements Tokenizer {
  /** Always `'bpe'`. */
  readonly type = 'bpe' as const;
  /** One more than the largest id (model vocabulary and special tokens). */
  readonly vocabSize: number;
  /** The id of `<|endoftext|>`, or `null` if it is not one of the special tokens. */
  readonly endOfTextId: number | null;
  /** The merges in rank order. */
  readonly merges: readonly (readonly [string, string])[];
  /** The special tokens, in id order. */
  readonly specialTokens: readonly SpecialToken[];

  private readonly tokens: (string | undefined)[]; // [vocabSize] id → token string
  private readonly tokenBytes: (Uint8Array | undefined)[]; // [vocabSize] id → bytes it decodes to
  private readonly byteIds = new Int32Array(256); // [256] byte value → id
  private readonly mergeRanks = new Map<number, number>(); // pair key → rank
  private readonly mergeLeft: Int32Array; // [merges] left id
  private readonly mergeRight: Int32Array; // [merges] right id
  private readonly mergeResult: Int32Array; // [merges] result id
  private readonly specialIds = new Map<string, number>();
  private readonly specialPattern: RegExp | null;
  private readonly cache = new Map<string, Int32Array>();
  private readonly preTokenPattern = gpt2PreTokenizerPattern();

  /**
   * @param spec - vocabulary, merges and special tokens
   * @throws `ConfigError` if an id is not a non-negative integer or is used twice, a byte
   *   character is missing, or a merge names a token (or a result) that is not in the vocabulary
   */
  constructor(spec: BpeTokenizerSpec) {
    const op = 'BpeTokenizer';
    const vocab = spec.vocab instanceof Map ? spec.vocab : new Map(Object.entries(spec.vocab));
    const specials = [...(spec.specialTokens ?? [])].sort((a, b) => a.id - b.id);
    let maxId = -1;
    const idOwner = new Map<number, string>();
    const claim = (token: string, id: unknown, where: string): number => {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new ConfigError(`${op}: ${where} id of '${token}' must be an integer >= 0, got ${String(id)}`);
      }
      const owner = idOwner.get(id);
      if (owner !== undefined && owner !== token) {
        throw new ConfigError(`${op}: id ${id} is used by both '${owner}' and '${token}'`);
      }
      idOwner.set(id, token);
      maxId = Math.max(maxId, id);
      return id;
    };
    for (const [token, id] of vocab) claim(token, id, 'vocab');
    for (const special of specials) {
      if (typeof special.content !== 'string' || special.content.length === 0) {
        throw new ConfigError(`${op}: special token content must be a non-empty string, got ${JSON.stringify(special.content)}`);
      }
      claim(special.content, special.id, 'special token');
      this.specialIds.set(special.content, special.id);
    }
    this.vocabSize = maxId + 1;
    this.tokens = new Array<string | undefined>(this.vocabSize);
    this.tokenBytes = new Array<Uint8Array | undefined>(this.vocabSize);
    for (const [token, id] of vocab) {
      this.tokens[id] = token;
      this.tokenBytes[id] = byteLevelToBytes(token) ?? undefined;
    }
    for (const special of specials) {
      this.tokens[special.id] = special.content;
      this.tokenBytes[special.id] = utf8Encoder.encode(special.content);
    }
    BYTE_TO_UNICODE.forEach((char, byte) => {
      const id = vocab.get(char);
      if (id === undefined) {
        throw new ConfigError(`${op}: vocab lacks the byte-level token '${char}' for byte 0x${byte.toString(16).padStart(2, '0')}`);
      }
      this.byteIds[byte] = id;
    });

    this.merges = spec.merges.map(([left, right]) => [left, right] as const);
    const count = this.merges.length;
    this.mergeLeft = new Int32Array(count);
    this.mergeRight = new Int32Array(count);
    this.mergeResult = new Int32Array(count);
    this.merges.forEach(([left, right], rank) => {
      const leftId = vocab.get(left);
      const rightId = vocab.get(right);
      const resultId = vocab.get(left + right);
      if (leftId === undefined || rightId === undefined || resultId === undefined) {
        const missing = leftId === undefined ? left : rightId === undefined ? right : left + right;
        throw new ConfigError(`${op}: merge ${rank} ('${left}' '${right}') needs '${missing}', which is not in the vocab`);
      }
      const key = leftId * this.vocabSize + rightId;
      if (this.mergeRanks.has(key)) return; // a repeated merge never applies twice; the first rank wins
      this.mergeRanks.set(key, rank);
      this.mergeLeft[rank] = leftId;
      this.mergeRight[rank] = rightId;
      this.mergeResult[rank] = resultId;
    });

    this.specialTokens = specials.map(({ content, id }) => ({ content, id }));
    this.endOfTextId = this.specialIds.get(END_OF_TEXT) ?? null;
    this.specialPattern =
      specials.length === 0
        ? null
        : new RegExp(
            [...this.specialIds.keys()]
              .sort((a, b) => b.length - a.length)
              .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
              .join('|'),
            'g',
          );
  }

  /**
   * Encodes text. Special tokens (e.g. `<|endoftext|>`) written literally in the text are matched first
   * and become their id, as Hugging Face `tokenizers` does by default.
   *
   * @param text - any string
   * @returns int32 [N] token ids
   */
  encode(text: string): Int32Array {
    const out = new IdBuffer(Math.max(16, text.length >> 2));
    if (this.specialPattern === null) {
      this.encodeOrdinary(text, out);
      return out.toArray();
    }
    const pattern = this.specialPattern;
    pattern.lastIndex = 0;
    let start = 0;
    for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
      this.encodeOrdinary(text.slice(start, match.index), out);
      out.push(this.specialIds.get(match[0]) as number);
      start = match.index + match[0].length;
    }
    this.encodeOrdinary(text.slice(start), out);
    return out.toArray();
  }

  /**
   * @param ids - [N] token ids
   * @returns the text (byte sequences that are not valid UTF-8 decode to U+FFFD)
   * @throws `ConfigError` on an id outside the vocabulary
   */
  decode(ids: ArrayLike<number>): string {
    return utf8Decoder.decode(this.decodeBytes(ids));
  }

  /**
   * @param ids - [N] token ids
   * @returns the UTF-8 bytes the ids stand for
   * @throws `ConfigError` on an id outside the vocabulary
   */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    const pieces: Uint8Array[] = new Array(ids.length);
    let length = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      const bytes = this.tokenBytes[id];
      if (bytes === undefined) {
        throw new ConfigError(`BpeTokenizer.decode: 'ids[${i}]' must be a token id in [0, ${this.vocabSize}), got ${id}`);
      }
      pieces[i] = bytes;
      length += bytes.length;
    }
    const out = new Uint8Array(length);
    let offset = 0;
    for (const bytes of pieces) {
      out.set(bytes, offset);
      offset += bytes.length;
    }
    return out;
  }

  /**
   * @param id - a token id
   * @returns its byte-level string (`'Ġthe'`), or a special token's content
   * @throws `ConfigError` on an id outside the vocabulary
   */
  idToToken(id: number): string {
    const token = Number.isInteger(id) ? this.tokens[id] : undefined;
    if (token === undefined) {
      throw new ConfigError(`BpeTokenizer.idToToken: 'id' must be a token id in [0, ${this.vocabSize}), got ${id}`);
    }
    return token;
  }

  /** @returns the Hugging Face `tokenizer.json` record: BPE model, ByteLevel pre-tokenizer and decoder */
  toJSON(): TokenizerJson {
    const vocab: Record<string, number> = {};
    const specialIds = new Set(this.specialIds.values());
    this.tokens.forEach((token, id) => {
      if (token !== undefined && !specialIds.has(id)) vocab[token] = id;
    });
    // Special tokens also go into the model vocabulary, as HF's trainer and GPT-2's file have them.
    for (const { content, id } of this.specialTokens) vocab[content] = id;
    return byteLevelBpeJson(vocab, this.merges, this.specialTokens);
  }

  /** Encodes text that holds no special tokens, pre-token by pre-token, through the cache. */
  private encodeOrdinary(text: string, out: IdBuffer): void {
    if (text.length === 0) return;
    const pattern = this.preTokenPattern;
    pattern.lastIndex = 0;
    for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
      const piece = match[0];
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        ids = this.encodeWord(utf8Encoder.encode(piece));
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, ids);
      }
      out.pushAll(ids);
    }
  }

  /**
   * Applies the merges to one pre-token's bytes.
   *
   * @internal exported for tests through the class; both paths give the same ids
   * @param bytes - the UTF-8 bytes of one pre-token
   * @param forceHeap - use the heap path whatever the length (tests compare the two paths)
   * @returns int32 [pieces] ids
   */
  encodeWord(bytes: Uint8Array, forceHeap = false): Int32Array {
    const symbols = new Int32Array(bytes.length); // [n] ids, one per byte to start
    for (let i = 0; i < bytes.length; i++) symbols[i] = this.byteIds[bytes[i] as number] as number;
    if (symbols.length < 2 || this.mergeRanks.size === 0) return symbols;
    return forceHeap || symbols.length > LONG_WORD ? this.mergeWithHeap(symbols) : this.mergeGpt2(symbols);
  }

  /** GPT-2's loop: find the lowest-rank pair, merge all its occurrences left to right, repeat. */
  private mergeGpt2(initial: Int32Array): Int32Array {
    const V = this.vocabSize;
    let symbols = initial;
    let length = symbols.length;
    for (;;) {
      let bestRank = Infinity;
      for (let i = 0; i + 1 < length; i++) {
        const rank = this.mergeRanks.get((symbols[i] as number) * V + (symbols[i + 1] as number));
        if (rank !== undefined && rank < bestRank) bestRank = rank;
      }
      if (bestRank === Infinity) break;
      const left = this.mergeLeft[bestRank] as number;
      const right = this.mergeRight[bestRank] as number;
      const result = this.mergeResult[bestRank] as number;
      let write = 0;
      for (let read = 0; read < length; ) {
        if (read + 1 < length && symbols[read] === left && symbols[read + 1] === right) {
          symbols[write++] = result;
          read += 2;
        } else {
          symbols[write++] = symbols[read++] as number;
        }
      }
      length = write;
      if (length < 2) break;
    }
    return length === initial.length ? symbols : symbols.slice(0, length);
  }

  /**
   * The same merges in O(n log n) for long pre-tokens (runs of digits, dashes or spaces): a linked list
   * of symbols and a min-heap of (rank, position); equal ranks merge leftmost first, so the result equals
   * {@link BpeTokenizer.mergeGpt2}'s.
   */
  private mergeWithHeap(symbols: Int32Array): Int32Array {
    const V = this.vocabSize;
    const n = symbols.length;
    const next = new Int32Array(n); // [n] next live position, -1 at the end
    const prev = new Int32Array(n); // [n] previous live position, -1 at the start
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const POSITIONS = 2 ** 26; // entry = rank · 2^26 + position; ranks and positions stay below 2^26
    const pushPair = (position: number): void => {
      const after = next[position] as number;
      if (after < 0) return;
      const rank = this.mergeRanks.get((symbols[position] as number) * V + (symbols[after] as number));
      if (rank !== undefined) heap.push(rank * POSITIONS + position);
    };
    for (let i = 0; i + 1 < n; i++) pushPair(i);
    while (heap.size > 0) {
      const entry = heap.pop();
      const rank = Math.floor(entry / POSITIONS);
      const position = entry - rank * POSITIONS;
      const after = next[position] as number;
      if (!alive[position] || after < 0) continue;
      if (symbols[position] !== this.mergeLeft[rank] || symbols[after] !== this.mergeRight[rank]) continue; // stale
      symbols[position] = this.mergeResult[rank] as number;
      alive[after] = 0;
      const afterAfter = next[after] as number;
      next[position] = afterAfter;
      if (afterAfter >= 0) prev[afterAfter] = position;
      const before = prev[position] as number;
      if (before >= 0) pushPair(before);
      pushPair(position);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i] as number) out.push(symbols[i] as number);
    return Int32Array.from(out);
  }
}

/** A growable int32 array. */
class IdBuffer {
  private data: Int32Array;
  private length = 0;

  constructor(capacity: number) {
    this.data = new Int32Array(capacity);
  }

  push(id: number): void {
    if (this.length === this.data.length) this.grow(1);
    this.data[this.length++] = id;
  }

  pushAll(ids: Int32Array): void {
    if (this.length + ids.length > this.data.length) this.grow(ids.length);
    this.data.set(ids, this.length);
    this.length += ids.length;
  }

  toArray(): Int32Array {
    return this.data.slice(0, this.length);
  }

  private grow(extra: number): void {
    const bigger = new Int32Array(Math.max(this.data.length * 2, this.length + extra));
    bigger.set(this.data.subarray(0, this.length));
    this.data = bigger;
  }
}

/** A binary min-heap of numbers. */
class MinHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  push(value: number): void {
    const items = this.items;
    let i = items.length;
    items.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((items[parent] as number) <= value) break;
      items[i] = items[parent] as number;
      i = parent;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.items;
    const top = items[0] as number;
    const last = items.pop() as number;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= n) break;
        const right = left + 1;
        const child = right < n && (items[right] as number) < (items[left] as number) ? right : left;
        if ((items[child] as number) >= last) break;
        items[i] = items[child] as number;
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}
