/**
 * A small, strict reader and writer for the safetensors format (https://github.com/huggingface/safetensors),
 * the format of the official MoE++ `model.safetensors` checkpoints.
 *
 * Layout of a file:
 * ```
 * [8 bytes]  N, the header length, unsigned 64-bit little-endian
 * [N bytes]  UTF-8 JSON header: { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ...,
 *            "__metadata__": { "<key>": "<string>" } }   (may end with spaces, for alignment)
 * [rest]     the data section: raw little-endian tensor bytes; offsets are relative to its first byte
 * ```
 *
 * This file works on plain typed arrays and needs no tfjs. Reading converts every tensor to what tfjs can
 * hold: floating dtypes (F64, F32, F16, BF16) become `Float32Array`, integer and boolean dtypes
 * (I64, I32, U8, BOOL) become `Int32Array`. Writing supports F32 and I32.
 *
 * Validation is strict, as in the reference Rust implementation: the data section must be covered
 * exactly, with no overlaps, no gaps and no trailing bytes (the spec forbids holes so that a file cannot
 * carry hidden data). Every problem is reported as a {@link CheckpointError} naming the file and, where
 * there is one, the tensor.
 *
 * {@link readSafetensorsFile} reads the header, then each tensor at its offset, so a multi-gigabyte shard
 * does not have to fit in one buffer; {@link writeSafetensorsFile} replaces a file atomically.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { MAX_IO_CHUNK, writeFileAtomically } from './atomic.js';

/** Thrown for any malformed, unreadable or unwritable checkpoint; the message names the file and the tensor. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

/** The safetensors dtypes this reader understands. */
export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'U8' | 'BOOL';

/** The dtypes {@link encodeSafetensors} writes. */
export type WritableSafetensorsDtype = 'F32' | 'I32';

/** One tensor to write: row-major `data` with `product(shape)` elements. */
export interface SafetensorsInput {
  /** `'F32'` with a `Float32Array`, or `'I32'` with an `Int32Array`. */
  readonly dtype: WritableSafetensorsDtype;
  /** Non-negative integer dimensions; `[]` for a scalar. */
  readonly shape: readonly number[];
  /** The elements in row-major order. */
  readonly data: Float32Array | Int32Array;
}

/**
 * One decoded tensor. `dtype` is the dtype stored in the file; `data` is converted to float32
 * (F64, F32, F16, BF16) or int32 (I64, I32, U8, BOOL as 0/1), row-major, `product(shape)` elements.
 */
export type DecodedTensor =
  | { readonly dtype: 'F64' | 'F32' | 'F16' | 'BF16'; readonly shape: number[]; readonly data: Float32Array }
  | { readonly dtype: 'I64' | 'I32' | 'U8' | 'BOOL'; readonly shape: number[]; readonly data: Int32Array };

/** The content of a safetensors file. */
export interface DecodedSafetensors {
  /** Tensors by name (in JSON key order: integer-like names first, then the order of the header). */
  readonly tensors: Map<string, DecodedTensor>;
  /** The `__metadata__` string map; `{}` when the file has none. */
  readonly metadata: Record<string, string>;
}

/** Bytes per element of each dtype. */
const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  U8: 1,
  BOOL: 1,
};

const METADATA_KEY = '__metadata__';
const ENTRY_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** The reference implementation's limit on the header size; a larger claim is treated as corruption. */
const MAX_HEADER_BYTES = 100_000_000;

function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, value);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isIndex(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function render(value: unknown): string {
  try {
    const json = JSON.stringify(value) ?? String(value);
    return json.length > 80 ? `${json.slice(0, 77)}...` : json;
  } catch {
    return typeof value;
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

/**
 * Serialises tensors to safetensors bytes. Tensors are laid out in sorted name order (code-unit order),
 * metadata keys are sorted too, and the header is padded with spaces to a multiple of 8 bytes, so the
 * same input always gives the same bytes and every tensor starts 8-byte aligned within the file.
 *
 * @param tensors - tensors by name; `'__metadata__'` is reserved
 * @param metadata - optional string-to-string map stored as `__metadata__` (omitted when empty)
 * @returns the complete file content
 * @throws {@link CheckpointError} naming the tensor for a reserved name, an unsupported dtype, a data array
 *   of the wrong type, a bad shape or a data length that differs from the shape's size; or for a
 *   non-string metadata value
 */
export function encodeSafetensors(
  tensors: Readonly<Record<string, SafetensorsInput>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const op = 'encodeSafetensors';
  if (!isPlainObject(tensors)) throw new CheckpointError(`${op}: 'tensors' must be an object of named tensors, got ${render(tensors)}`);
  const names = Object.keys(tensors).sort();
  const headerParts: string[] = [];

  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw new CheckpointError(`${op}: 'metadata' must be an object of strings, got ${render(metadata)}`);
    const keys = Object.keys(metadata).sort();
    for (const key of keys) {
      const value = metadata[key];
      if (typeof value !== 'string') {
        throw new CheckpointError(`${op}: metadata '${key}' must be a string (safetensors metadata is string-to-string), got ${render(value)}`);
      }
    }
    if (keys.length > 0) {
      const body = keys.map((key) => `${JSON.stringify(key)}:${JSON.stringify(metadata[key])}`).join(',');
      headerParts.push(`${JSON.stringify(METADATA_KEY)}:{${body}}`);
    }
  }

  let dataBytes = 0;
  const layout: { tensor: SafetensorsInput; begin: number }[] = [];
  for (const name of names) {
    const tensor = tensors[name] as SafetensorsInput;
    const where = `${op}: tensor '${name}'`;
    if (name === METADATA_KEY) throw new CheckpointError(`${op}: '${METADATA_KEY}' is reserved for metadata and cannot name a tensor`);
    if (!isPlainObject(tensor)) throw new CheckpointError(`${where} must be { dtype, shape, data }, got ${render(tensor)}`);
    if (tensor.dtype !== 'F32' && tensor.dtype !== 'I32') {
      throw new CheckpointError(`${where}: dtype must be 'F32' or 'I32', got ${render(tensor.dtype)}`);
    }
    const arrayType = tensor.dtype === 'F32' ? Float32Array : Int32Array;
    if (!(tensor.data instanceof arrayType)) {
      const actual = (tensor.data as unknown as object | null)?.constructor?.name ?? render(tensor.data);
      throw new CheckpointError(`${where}: dtype ${tensor.dtype} needs a ${arrayType.name} as data, got ${actual}`);
    }
    if (!Array.isArray(tensor.shape) || !tensor.shape.every(isIndex)) {
      throw new CheckpointError(`${where}: shape must be an array of non-negative integers, got ${render(tensor.shape)}`);
    }
    const size = tensor.shape.reduce((a, b) => a * b, 1);
    if (size !== tensor.data.length) {
      throw new CheckpointError(
        `${where}: shape [${tensor.shape.join(', ')}] has ${size} elements but data has ${tensor.data.length}`,
      );
    }
    const begin = dataBytes;
    dataBytes += tensor.data.byteLength;
    layout.push({ tensor, begin });
    const entry = { dtype: tensor.dtype, shape: [...tensor.shape], data_offsets: [begin, dataBytes] };
    headerParts.push(`${JSON.stringify(name)}:${JSON.stringify(entry)}`);
  }

  const headerJson = new TextEncoder().encode(`{${headerParts.join(',')}}`);
  const headerLength = Math.ceil(headerJson.length / 8) * 8; // padded: the data section starts 8-byte aligned
  const total = 8 + headerLength + dataBytes;
  let out: Uint8Array;
  try {
    out = new Uint8Array(total);
  } catch (error) {
    throw new CheckpointError(`${op}: cannot allocate ${total} bytes for the checkpoint: ${errorMessage(error)}`, { cause: error });
  }
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerLength), true);
  out.set(headerJson, 8);
  out.fill(0x20, 8 + headerJson.length, 8 + headerLength); // spaces
  const dataStart = 8 + headerLength;
  for (const { tensor, begin } of layout) {
    const offset = dataStart + begin;
    if (HOST_IS_LITTLE_ENDIAN) {
      out.set(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength), offset);
    } else if (tensor.data instanceof Float32Array) {
      tensor.data.forEach((value, i) => view.setFloat32(offset + 4 * i, value, true));
    } else {
      tensor.data.forEach((value, i) => view.setInt32(offset + 4 * i, value, true));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

/**
 * Parses safetensors bytes, validating the whole header before converting any tensor.
 *
 * Accepted: F32, F16, BF16 and F64 (converted to float32; F64 loses precision, values beyond the float32
 * range become ±Infinity), I32, I64 (converted to int32; a value outside the int32 range is an error),
 * U8 and BOOL (to int32; a BOOL byte other than 0 or 1 is an error). Strict about the layout: the tensors
 * must cover the data section exactly, without overlaps, gaps or trailing bytes.
 *
 * @param bytes - the complete file content (any `Uint8Array`, including a Node `Buffer` or a view with an offset)
 * @param source - a name for error messages, usually the file path
 * @returns the tensors by name and the metadata
 * @throws {@link CheckpointError} naming the source and the tensor, for: a file shorter than 8 bytes; a header
 *   length beyond the end of the file or above 100 MB (the reference implementation's limit); a header that is not UTF-8, not JSON, not an object, or repeats a
 *   key; malformed `__metadata__`; an entry without `dtype`/`shape`/`data_offsets`, with other fields or
 *   with wrong types; an unsupported dtype; negative or non-integer dims; offsets that are not
 *   `begin <= end` within the data section; a byte length that differs from `product(shape) × dtype size`;
 *   overlapping tensors, gaps between tensors or bytes after the last one; I64 values outside int32;
 *   BOOL bytes other than 0 and 1
 */
export function decodeSafetensors(bytes: Uint8Array, source = '<bytes>'): DecodedSafetensors {
  const fail = failFor(source);
  if (!(bytes instanceof Uint8Array)) fail(`expected the file content as a Uint8Array, got ${render(bytes)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dataStart = checkHeaderLength(bytes.length, () => view.getBigUint64(0, true), fail);
  const { entries, metadata } = parseHeader(bytes.subarray(8, dataStart), bytes.length - dataStart, fail);
  const tensors = new Map<string, DecodedTensor>();
  for (const entry of entries) {
    const raw = bytes.subarray(dataStart + entry.begin, dataStart + entry.end);
    tensors.set(entry.name, convert(entry, raw, false, (message) => fail(`tensor '${entry.name}': ${message}`)));
  }
  return { tensors, metadata };
}

/** One validated header entry; offsets are relative to the data section. */
interface HeaderEntry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: number[];
  readonly begin: number;
  readonly end: number;
}

function failFor(source: string): (message: string) => never {
  return (message: string): never => {
    throw new CheckpointError(`safetensors '${source}': ${message}`);
  };
}

/**
 * Checks the 8-byte length field against the file size and the header size limit.
 *
 * @returns the offset of the data section, `8 + N`
 */
function checkHeaderLength(fileLength: number, readLength: () => bigint, fail: (message: string) => never): number {
  if (fileLength < 8) fail(`file is ${fileLength} bytes, shorter than the 8-byte header length field`);
  const declared = readLength();
  if (declared > BigInt(fileLength - 8)) {
    fail(`header length ${declared} bytes exceeds the ${fileLength - 8} bytes after the length field`);
  }
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${declared} bytes exceeds the limit of ${MAX_HEADER_BYTES} bytes (as in the reference implementation)`);
  }
  return 8 + Number(declared);
}

/** Validates the JSON header completely: entries, dtypes, shapes, byte lengths and coverage of the data section. */
function parseHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  fail: (message: string) => never,
): { entries: HeaderEntry[]; metadata: Record<string, string> } {
  const headerLength = headerBytes.length;
  let headerText = '';
  try {
    // ignoreBOM keeps a byte-order mark in the text, so JSON.parse rejects it as the Rust reader does.
    headerText = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    fail(`header (${headerLength} bytes) is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (error) {
    fail(`header is not valid JSON (${errorMessage(error)})`);
  }
  if (!isPlainObject(header)) fail(`header must be a JSON object, got ${render(header)}`);
  const duplicate = findDuplicateKey(headerText);
  if (duplicate !== undefined) fail(`header repeats the key ${duplicate}; JSON parsers would silently keep only one`);

  let metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(entry)) fail(`'${METADATA_KEY}' must be an object of strings, got ${render(entry)}`);
      for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof value !== 'string') fail(`'${METADATA_KEY}' value '${key}' must be a string, got ${render(value)}`);
      }
      metadata = Object.fromEntries(Object.entries(entry as Record<string, string>));
      continue;
    }
    const where = `tensor '${name}'`;
    if (!isPlainObject(entry)) fail(`${where}: entry must be an object with dtype, shape and data_offsets, got ${render(entry)}`);
    const record = entry as Record<string, unknown>;
    for (const field of ENTRY_FIELDS) {
      if (!Object.prototype.hasOwnProperty.call(record, field)) fail(`${where}: entry has no '${field}'`);
    }
    const extra = Object.keys(record).filter((key) => !(ENTRY_FIELDS as readonly string[]).includes(key));
    if (extra.length > 0) fail(`${where}: unknown field(s) ${extra.map((key) => `'${key}'`).join(', ')}; expected only dtype, shape, data_offsets`);

    const dtype = record['dtype'];
    if (typeof dtype !== 'string') fail(`${where}: dtype must be a string, got ${render(dtype)}`);
    if (!isDtype(dtype)) fail(`${where}: unsupported dtype ${render(dtype)}; supported: ${Object.keys(DTYPE_BYTES).join(', ')}`);

    const shape = record['shape'];
    if (!Array.isArray(shape)) fail(`${where}: shape must be an array of non-negative integers, got ${render(shape)}`);
    (shape as unknown[]).forEach((dim, axis) => {
      if (!isIndex(dim)) fail(`${where}: shape[${axis}] must be a non-negative integer, got ${render(dim)} in shape ${render(shape)}`);
    });

    const offsets = record['data_offsets'];
    if (!Array.isArray(offsets) || offsets.length !== 2) fail(`${where}: data_offsets must be [begin, end], got ${render(offsets)}`);
    const [begin, end] = offsets as unknown[];
    if (!isIndex(begin) || !isIndex(end)) fail(`${where}: data_offsets must be two non-negative integers, got ${render(offsets)}`);
    const [first, last] = [begin as number, end as number];
    if (first > last) fail(`${where}: data_offsets [${first}, ${last}] has begin > end`);
    if (last > dataLength) fail(`${where}: data_offsets [${first}, ${last}] extends past the data section of ${dataLength} bytes`);

    const dims = shape as number[];
    // BigInt: a product of many large dims could exceed 2^53 and compare equal by rounding.
    const elements = dims.reduce((a, b) => a * BigInt(b), 1n);
    const expectedBytes = elements * BigInt(DTYPE_BYTES[dtype as SafetensorsDtype]);
    if (expectedBytes !== BigInt(last - first)) {
      fail(
        `${where}: shape [${dims.join(', ')}] of ${dtype} needs ${expectedBytes} bytes, but data_offsets [${first}, ${last}] span ${last - first}`,
      );
    }
    entries.push({ name, dtype: dtype as SafetensorsDtype, shape: [...dims], begin: first, end: last });
  }

  // Coverage: sorted by (begin, end), each tensor must start where the previous one ended.
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: string | undefined;
  for (const entry of byOffset) {
    if (entry.begin < cursor) {
      fail(`tensor '${entry.name}' (bytes ${entry.begin}..${entry.end}) overlaps tensor '${previous}' (ends at ${cursor})`);
    }
    if (entry.begin > cursor) {
      fail(
        `gap of ${entry.begin - cursor} bytes (${cursor}..${entry.begin}) before tensor '${entry.name}'; safetensors data must be covered without holes`,
      );
    }
    cursor = entry.end;
    previous = entry.name;
  }
  if (cursor !== dataLength) {
    fail(`${dataLength - cursor} trailing bytes after the last tensor (data section is ${dataLength} bytes, tensors cover ${cursor})`);
  }

  return { entries, metadata };
}

/**
 * Converts one tensor's raw little-endian bytes (already checked to have the right length). When `owned`,
 * `raw` is a fresh buffer nobody else holds, and F32 / I32 can view it without a copy.
 */
function convert(entry: HeaderEntry, raw: Uint8Array, owned: boolean, fail: (message: string) => never): DecodedTensor {
  const { dtype, shape } = entry;
  const count = raw.length / DTYPE_BYTES[dtype];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case 'F32': {
      if (HOST_IS_LITTLE_ENDIAN) return { dtype, shape, data: new Float32Array(ownedBuffer(raw, owned)) };
      const data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);
      return { dtype, shape, data };
    }
    case 'I32': {
      if (HOST_IS_LITTLE_ENDIAN) return { dtype, shape, data: new Int32Array(ownedBuffer(raw, owned)) };
      const data = new Int32Array(count);
      for (let i = 0; i < count; i++) data[i] = view.getInt32(4 * i, true);
      return { dtype, shape, data };
    }
    case 'F64': {
      const data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = view.getFloat64(8 * i, true);
      return { dtype, shape, data };
    }
    case 'BF16': {
      // bfloat16 is the top half of a float32: shift the 16 bits into place.
      const data = new Float32Array(count);
      const bits = new Uint32Array(data.buffer);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return { dtype, shape, data };
    }
    case 'F16': {
      const data = new Float32Array(count);
      const bits = new Uint32Array(data.buffer);
      for (let i = 0; i < count; i++) {
        const half = view.getUint16(2 * i, true);
        const sign = (half & 0x8000) << 16;
        const exponent = (half >> 10) & 0x1f;
        const mantissa = half & 0x3ff;
        if (exponent === 0x1f) bits[i] = sign | 0x7f800000 | (mantissa << 13); // inf, nan
        else if (exponent !== 0) bits[i] = sign | ((exponent + 112) << 23) | (mantissa << 13); // rebias 15 -> 127
        else data[i] = (sign ? -1 : 1) * mantissa * 2 ** -24; // zero and subnormals, exact in float32
      }
      return { dtype, shape, data };
    }
    case 'I64': {
      const data = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const low = view.getUint32(8 * i, true);
        const high = view.getInt32(8 * i + 4, true);
        // In int32 range exactly when the high word is the sign extension of the low word.
        if (high !== (low | 0) >> 31) {
          fail(`I64 element ${i} = ${view.getBigInt64(8 * i, true)} is outside the int32 range read into tfjs`);
        }
        data[i] = low | 0;
      }
      return { dtype, shape, data };
    }
    case 'U8':
      return { dtype, shape, data: Int32Array.from(raw) };
    case 'BOOL': {
      const bad = raw.findIndex((byte) => byte > 1);
      if (bad >= 0) fail(`BOOL element ${bad} is byte ${raw[bad]}, expected 0 or 1`);
      return { dtype, shape, data: Int32Array.from(raw) };
    }
  }
}

/**
 * An ArrayBuffer holding exactly `raw`, starting aligned: `raw`'s own buffer when it is owned and spans
 * it, a copy otherwise. (Not `raw.slice()`: on a Node `Buffer`, `slice` returns a view of the same memory.)
 */
function ownedBuffer(raw: Uint8Array, owned: boolean): ArrayBuffer {
  if (owned && raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength && raw.buffer instanceof ArrayBuffer) {
    return raw.buffer;
  }
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  return copy.buffer;
}

/**
 * Finds a key that appears twice in one JSON object (JSON.parse silently keeps the last one).
 * `text` must be valid JSON; the scan is iterative, so deep nesting cannot overflow the stack.
 *
 * @returns a description of the first repeated key, or undefined
 */
function findDuplicateKey(text: string): string | undefined {
  const QUOTE = 0x22;
  const BACKSLASH = 0x5c;
  const stack: { keys: Set<string> | null; name: string }[] = [];
  let expectingKey = false;
  let lastKey = '';
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === QUOTE) {
      let j = i + 1;
      while (text.charCodeAt(j) !== QUOTE) j += text.charCodeAt(j) === BACKSLASH ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectingKey && top?.keys) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return top.name === '' ? `'${key}'` : `'${key}' in '${top.name}'`;
        top.keys.add(key);
        lastKey = key;
        expectingKey = false;
      }
      i = j;
    } else if (code === 0x7b /* { */) {
      stack.push({ keys: new Set(), name: stack.length === 0 ? '' : lastKey });
      expectingKey = true;
    } else if (code === 0x5b /* [ */) {
      stack.push({ keys: null, name: lastKey });
      expectingKey = false;
    } else if (code === 0x7d /* } */ || code === 0x5d /* ] */) {
      stack.pop();
      expectingKey = false;
    } else if (code === 0x2c /* , */) {
      expectingKey = stack[stack.length - 1]?.keys != null;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Files

/**
 * Reads and decodes a safetensors file. Only the header is read whole; each tensor is then read from its
 * own offset, so files larger than one Node buffer (official shards of several GB) work as long as each
 * tensor fits in memory. The result and the errors are those of {@link decodeSafetensors}.
 *
 * @param path - the file to read
 * @returns the tensors and metadata
 * @throws {@link CheckpointError} naming the path if the file cannot be read, is malformed, or shrinks
 *   while it is being read
 */
export async function readSafetensorsFile(path: string): Promise<DecodedSafetensors> {
  const fail = failFor(path);
  let handle: FileHandle | undefined;
  try {
    try {
      handle = await open(path, 'r');
    } catch (error) {
      throw new CheckpointError(`readSafetensorsFile: cannot read '${path}': ${errorMessage(error)}`, { cause: error });
    }
    const file = handle;
    const read = (position: number, length: number): Promise<Uint8Array> => readExactly(file, position, length, fail);
    const fileLength = (await file.stat()).size;
    const lengthField = fileLength >= 8 ? await read(0, 8) : new Uint8Array(8);
    const dataStart = checkHeaderLength(fileLength, () => new DataView(lengthField.buffer).getBigUint64(0, true), fail);
    const { entries, metadata } = parseHeader(await read(8, dataStart - 8), fileLength - dataStart, fail);
    const tensors = new Map<string, DecodedTensor>();
    for (const entry of entries) {
      const raw = await read(dataStart + entry.begin, entry.end - entry.begin);
      tensors.set(entry.name, convert(entry, raw, true, (message) => fail(`tensor '${entry.name}': ${message}`)));
    }
    return { tensors, metadata };
  } catch (error) {
    if (error instanceof CheckpointError) throw error;
    throw new CheckpointError(`readSafetensorsFile: cannot read '${path}': ${errorMessage(error)}`, { cause: error });
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Reads `length` bytes at `position` into a fresh buffer; a short file is a {@link CheckpointError}. */
async function readExactly(handle: FileHandle, position: number, length: number, fail: (message: string) => never): Promise<Uint8Array> {
  let out: Uint8Array;
  try {
    out = new Uint8Array(length);
  } catch (error) {
    return fail(`cannot allocate ${length} bytes to read at offset ${position}: ${errorMessage(error)}`);
  }
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(out, done, Math.min(length - done, MAX_IO_CHUNK), position + done);
    if (bytesRead === 0) fail(`unexpected end of file at byte ${position + done} (the file shrank while being read)`);
    done += bytesRead;
  }
  return out;
}

/**
 * Encodes tensors and writes them to `path` atomically ({@link writeFileAtomically}): the bytes go to a
 * temporary file in the same directory (`.<name>.<pid>.<random>.tmp`), which is flushed to disk (fsync)
 * and then renamed over `path`. Readers see either the old file or the complete new one, never a partial
 * file; if anything fails the temporary file is removed and an existing file at `path` is left
 * untouched. A symlink at `path` is replaced by a regular file.
 *
 * @param path - the destination file
 * @param tensors - tensors by name, as for {@link encodeSafetensors}
 * @param metadata - optional string-to-string metadata
 * @returns when the file is in place
 * @throws {@link CheckpointError} for invalid tensors (before anything is written) or when the file cannot
 *   be written, with the underlying error as `cause`
 */
export async function writeSafetensorsFile(
  path: string,
  tensors: Readonly<Record<string, SafetensorsInput>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  try {
    await writeFileAtomically(path, bytes);
  } catch (error) {
    throw new CheckpointError(`writeSafetensorsFile: cannot write '${path}': ${errorMessage(error)}`, { cause: error });
  }
}
