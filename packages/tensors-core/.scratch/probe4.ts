function tr(src: Float32Array, dst: Float32Array, rows: number, cols: number, B = 32) {
  for (let i0 = 0; i0 < rows; i0 += B) {
    const iMax = Math.min(i0 + B, rows);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const jMax = Math.min(j0 + B, cols);
      for (let i = i0; i < iMax; i++) {
        const rowOff = i * cols;
        for (let j = j0; j < jMax; j++) dst[j * rows + i] = src[rowOff + j]!;
      }
    }
  }
}
for (const [r, c] of [[1024, 1024], [1024, 256], [256, 1024]]) {
  const s = new Float32Array(r * c).map(Math.random); const d = new Float32Array(r * c);
  for (const B of [16, 32, 64]) {
    tr(s, d, r, c, B);
    const t0 = performance.now(); for (let k = 0; k < 10; k++) tr(s, d, r, c, B); console.log(r, c, B, ((performance.now() - t0) / 10).toFixed(2), 'ms');
  }
}
