import { describe, expect, it } from 'vitest';
import { BYTE_TO_UNICODE, UNICODE_TO_BYTE, byteLevelToBytes, preTokenize, textToByteLevel } from './byte-level.js';

describe('BYTE_TO_UNICODE (GPT-2 bytes_to_unicode)', () => {
  it('maps printable bytes to themselves and the other 68 to U+0100… in byte order', () => {
    expect(BYTE_TO_UNICODE).toHaveLength(256);
    expect(new Set(BYTE_TO_UNICODE).size).toBe(256);
    expect(BYTE_TO_UNICODE[0x21]).toBe('!');
    expect(BYTE_TO_UNICODE[0x41]).toBe('A');
    expect(BYTE_TO_UNICODE[0xff]).toBe('ÿ');
    expect(BYTE_TO_UNICODE[0x00]).toBe('\u0100'); // Ā
    expect(BYTE_TO_UNICODE[0x0a]).toBe('Ċ'); // U+010A, newline in every GPT-2 vocab
    expect(BYTE_TO_UNICODE[0x20]).toBe('Ġ'); // U+0120, space
    expect(BYTE_TO_UNICODE[0x7f]).toBe('\u0121'); // DEL: 33 controls + space come first
    expect(BYTE_TO_UNICODE[0xad]).toBe('\u0143'); // soft hyphen, the 68th and last shifted byte
    expect(UNICODE_TO_BYTE.get('Ġ')).toBe(0x20);
  });

  it('converts text to byte-level strings and back', () => {
    expect(textToByteLevel('Hello world\n')).toBe('HelloĠworldĊ');
    expect(textToByteLevel('é')).toBe('Ã©'); // 0xC3 0xA9
    expect(Array.from(byteLevelToBytes('Ã©') ?? [])).toEqual([0xc3, 0xa9]);
    expect(byteLevelToBytes('a€')).toBeNull();
  });
});

describe('preTokenize (GPT-2 pattern)', () => {
  it('splits contractions, letters, numbers, punctuation and whitespace like GPT-2', () => {
    expect(preTokenize("Hello world's 123  x")).toEqual(['Hello', ' world', "'s", ' 123', ' ', ' x']);
    expect(preTokenize("I'll—we'd  \n\nsay: 'ok'!")).toEqual(['I', "'ll", '—', 'we', "'d", '  \n', '\n', 'say', ':', " '", 'ok', "'!"]);
    expect(preTokenize('naïve café 42km')).toEqual(['naïve', ' café', ' 42', 'km']);
    expect(preTokenize('')).toEqual([]);
  });

  it('treats whitespace as Unicode White_Space, as HF tokenizers does, not as JavaScript \\s', () => {
    expect(preTokenize('\u0085.')).toEqual(['\u0085', '.']); // NEL is White_Space (JS \s misses it)
    expect(preTokenize('\uFEFF\uFEFF.')).toEqual(['\uFEFF\uFEFF.']); // BOM is not (JS \s matches it)
    expect(preTokenize('a\u3000\u3000b')).toEqual(['a', '\u3000', '\u3000', 'b']); // only ASCII space joins the next word
  });

  it('covers the text exactly', () => {
    const text = 'Tabs\tand\u00a0nbsp, 東京 2024年 👩‍👩‍👧 e\u0301 \u0007bell  trailing  ';
    expect(preTokenize(text).join('')).toBe(text);
  });
});
