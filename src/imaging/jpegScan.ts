/**
 * A structural check of a sequential Huffman JPEG's entropy-coded data, without decoding a pixel. JPEG has no
 * checksum, and libjpeg decodes many damaged scans without a warning: Huffman codes resynchronise after a burst
 * of damage, the decoder stops after the last MCU without looking at what is left (libvips never reads the bytes
 * between the last MCU and EOI), and a run of AC zeros past the block's end is clipped silently. This walk
 * decodes every Huffman symbol of every block (ITU-T T.81, F.2.2) and refuses:
 * - a code that is in no table, a DC magnitude over 11 bits or an AC one over 10 (8-bit samples);
 * - AC runs that go past coefficient 63;
 * - padding bits at the end of an interval that are not all ones (T.81 F.1.2.3), data after the last MCU of an
 *   interval or scan, or a scan that ends before its last MCU;
 * - restart markers out of sequence.
 * Progressive, lossless, arithmetic-coded and 12-bit JPEGs are left to libjpeg's own checks (returns undefined).
 * Cost is linear in the compressed size (one table look-up per symbol).
 */

interface Component {
  id: number;
  h: number;
  v: number;
}

/** Bits looked up at once: most codes are shorter, longer ones go through maxCode. */
const FAST_BITS = 9;

interface Huffman {
  /** 2^FAST_BITS entries: (code length << 8) | symbol for every window that starts with a code that short; else 0. */
  fast: Uint16Array;
  /** Per length 1..16 (index = length): the largest code of that length (-1: none), and where its symbols start. */
  maxCode: Int32Array;
  offset: Int32Array;
  symbols: Uint8Array;
}

function buildHuffman(counts: Uint8Array, symbols: Uint8Array): Huffman | string {
  const fast = new Uint16Array(1 << FAST_BITS);
  const maxCode = new Int32Array(18).fill(-1);
  const offset = new Int32Array(18);
  let code = 0;
  let k = 0;
  for (let len = 1; len <= 16; len++) {
    const count = counts[len - 1]!;
    // Symbol index = code + offset for codes of this length.
    offset[len] = k - code;
    for (let i = 0; i < count; i++) {
      if (code >= 1 << len) return 'Huffman table has more codes than its lengths allow';
      if (len <= FAST_BITS) {
        const start = code << (FAST_BITS - len);
        fast.fill((len << 8) | symbols[k]!, start, start + (1 << (FAST_BITS - len)));
      }
      k++;
      code++;
    }
    if (count > 0) maxCode[len] = code - 1;
    code <<= 1;
  }
  maxCode[17] = 0x7fffffff;
  return { fast, maxCode, offset, symbols: symbols.slice() };
}

/** The symbol at the top of `acc` (nbits >= 16 valid bits), as (length << 8) | symbol, or 0 for no code. */
function lookupSlow(t: Huffman, acc: number, nbits: number): number {
  for (let len = FAST_BITS + 1; len <= 16; len++) {
    const code = (acc >> (nbits - len)) & ((1 << len) - 1);
    if (code <= t.maxCode[len]!) return (len << 8) | t.symbols[code + t.offset[len]!]!;
  }
  return 0;
}

/** MCUs walked between yields to the event loop (a few milliseconds of work). */
const MCUS_PER_SLICE = 4096;

/**
 * What is wrong with the scan data, or undefined when it is sound or not a kind this walk checks. Runs in slices
 * with the event loop between them, so a large JPEG never holds it for more than a few milliseconds.
 */
export async function checkJpegScan(bytes: Uint8Array): Promise<string | undefined> {
  const walk = jpegScanWalk(bytes);
  for (;;) {
    const step = walk.next();
    if (step.done) return step.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** checkJpegScan in one synchronous call. */
export function checkJpegScanSync(bytes: Uint8Array): string | undefined {
  const walk = jpegScanWalk(bytes);
  for (;;) {
    const step = walk.next();
    if (step.done) return step.value;
  }
}

/** The walk; it yields after every MCUS_PER_SLICE MCUs. */
function* jpegScanWalk(bytes: Uint8Array): Generator<void, string | undefined> {
  const b = bytes;
  const n = b.length;
  if (n < 4 || b[0] !== 0xff || b[1] !== 0xd8) return 'no SOI marker';
  const dc: (Huffman | undefined)[] = [];
  const ac: (Huffman | undefined)[] = [];
  let components: Component[] | undefined;
  let width = 0;
  let height = 0;
  let restartInterval = 0;
  let scans = 0;
  let p = 2;
  for (;;) {
    // Fill bytes (0xFF) may precede a marker.
    if (p >= n) return scans > 0 ? undefined : 'no scan before the end of the file';
    if (b[p] !== 0xff) return `expected a marker at byte ${p}, found 0x${b[p]!.toString(16)}`;
    while (p < n && b[p] === 0xff) p++;
    if (p >= n) return 'file ends inside a marker';
    const marker = b[p++]!;
    if (marker === 0xd9) return scans > 0 ? undefined : 'EOI before any scan';
    if (marker >= 0xd0 && marker <= 0xd7) return `restart marker RST${marker - 0xd0} outside a scan`;
    if (marker === 0x01) continue;
    if (p + 2 > n) return 'file ends inside a segment header';
    const len = (b[p]! << 8) | b[p + 1]!;
    if (len < 2 || p + len > n) return `segment 0x${marker.toString(16)} runs past the end of the file`;
    const seg = b.subarray(p + 2, p + len);
    p += len;
    if (marker === 0xc0 || marker === 0xc1) {
      if (seg.length < 6 || seg[0] !== 8) return undefined; // 12-bit: left to libjpeg
      height = (seg[1]! << 8) | seg[2]!;
      width = (seg[3]! << 8) | seg[4]!;
      const nf = seg[5]!;
      if (seg.length < 6 + 3 * nf || nf === 0) return 'SOF segment is shorter than its components';
      components = [];
      for (let i = 0; i < nf; i++) {
        const hv = seg[7 + 3 * i]!;
        const h = hv >> 4;
        const v = hv & 15;
        if (h < 1 || h > 4 || v < 1 || v > 4) return `component ${i} has sampling factors ${h}x${v}`;
        components.push({ id: seg[6 + 3 * i]!, h, v });
      }
      if (height === 0 || width === 0) return undefined; // height from a DNL marker: left to libjpeg
    } else if ((marker >= 0xc2 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc)) {
      return undefined; // progressive, lossless or arithmetic: left to libjpeg
    } else if (marker === 0xc4) {
      for (let q = 0; q < seg.length; ) {
        if (q + 17 > seg.length) return 'DHT segment is truncated';
        const tc = seg[q]! >> 4;
        const th = seg[q]! & 15;
        const counts = seg.subarray(q + 1, q + 17);
        let total = 0;
        for (const c of counts) total += c;
        if (q + 17 + total > seg.length) return 'DHT segment is truncated';
        const table = buildHuffman(counts, seg.subarray(q + 17, q + 17 + total));
        if (typeof table === 'string') return table;
        if (tc > 1 || th > 3) return `DHT table class ${tc} id ${th}`;
        (tc === 0 ? dc : ac)[th] = table;
        q += 17 + total;
      }
    } else if (marker === 0xdd) {
      if (seg.length < 2) return 'DRI segment is truncated';
      restartInterval = (seg[0]! << 8) | seg[1]!;
    } else if (marker === 0xda) {
      if (!components) return 'scan before the frame header';
      const problem = yield* walkScan(b, p, seg, components, width, height, restartInterval, dc, ac);
      if (typeof problem === 'string') return problem;
      p = problem;
      scans++;
    }
  }
}

/** Walks one scan's entropy-coded data from `start`; returns the offset of the marker after it, or the problem. */
function* walkScan(
  b: Uint8Array,
  start: number,
  sos: Uint8Array,
  frame: Component[],
  width: number,
  height: number,
  restartInterval: number,
  dc: (Huffman | undefined)[],
  ac: (Huffman | undefined)[],
): Generator<void, number | string> {
  const ns = sos[0] ?? 0;
  if (ns < 1 || ns > 4 || sos.length < 1 + 2 * ns + 3) return 'SOS segment is truncated';
  const hmax = Math.max(...frame.map((c) => c.h));
  const vmax = Math.max(...frame.map((c) => c.v));
  // Per block of an MCU: its DC and AC tables.
  const blockDc: Huffman[] = [];
  const blockAc: Huffman[] = [];
  let mcus: number;
  for (let i = 0; i < ns; i++) {
    const comp = frame.find((c) => c.id === sos[1 + 2 * i]);
    if (!comp) return `scan names component ${sos[1 + 2 * i]}, which the frame does not have`;
    const d = dc[sos[2 + 2 * i]! >> 4];
    const a = ac[sos[2 + 2 * i]! & 15];
    if (!d || !a) return `scan uses a Huffman table that was never defined`;
    const blocks = ns === 1 ? 1 : comp.h * comp.v;
    for (let k = 0; k < blocks; k++) {
      blockDc.push(d);
      blockAc.push(a);
    }
  }
  if (ns === 1) {
    const comp = frame.find((c) => c.id === sos[1])!;
    mcus = Math.ceil(Math.ceil((width * comp.h) / hmax) / 8) * Math.ceil(Math.ceil((height * comp.v) / vmax) / 8);
  } else {
    mcus = Math.ceil(width / (8 * hmax)) * Math.ceil(height / (8 * vmax));
  }
  const n = b.length;
  let p = start;
  let acc = 0;
  let nbits = 0;
  /** Zero bits fed after a marker was reached: reading them means the data ended too soon. */
  let stuffed = 0;
  const perMcu = blockDc.length;
  let restarts = 0;
  // One flat loop with local state (closures over mutable variables would live in V8's slower contexts).
  for (let mcu = 0; mcu < mcus; mcu++) {
    if (mcu % MCUS_PER_SLICE === MCUS_PER_SLICE - 1) yield;
    if (restartInterval > 0 && mcu > 0 && mcu % restartInterval === 0) {
      const at = endInterval(b, p, acc, nbits, stuffed);
      if (typeof at === 'string') return at;
      p = at;
      acc = 0;
      nbits = 0;
      stuffed = 0;
      const marker = b[p + 1]!;
      if (marker !== 0xd0 + (restarts & 7)) return `expected restart marker RST${restarts & 7}, found 0x${marker.toString(16)}`;
      restarts++;
      p += 2;
    }
    for (let k = 0; k < perMcu; k++) {
      // A symbol, then `size` extra bits; i is the next coefficient (0: the DC one).
      let table = blockDc[k]!;
      for (let i = 0; i < 64; ) {
        if (nbits < 16) {
          // Top up: plain bytes, 0xFF 0x00 as 0xFF; at a marker or the end, zeros (counted in `stuffed`).
          while (nbits <= 16) {
            const x = p < n ? b[p]! : -1;
            let byte = 0;
            if (x >= 0 && x !== 0xff) {
              byte = x;
              p++;
            } else if (x === 0xff && p + 1 < n && b[p + 1] === 0x00) {
              byte = 0xff;
              p += 2;
            } else {
              stuffed += 8;
            }
            acc = ((acc << 8) | byte) & 0xffffff;
            nbits += 8;
          }
        }
        let e = table.fast[(acc >> (nbits - FAST_BITS)) & ((1 << FAST_BITS) - 1)]!;
        if (e === 0) e = lookupSlow(table, acc, nbits);
        const len = e >> 8;
        if (len === 0) return 'bad Huffman code in scan data';
        nbits -= len;
        const rs = e & 0xff;
        let size: number;
        if (i === 0) {
          size = rs;
          if (size > 11) return `DC difference of ${size} bits`;
          table = blockAc[k]!;
          i = 1;
        } else {
          const r = rs >> 4;
          size = rs & 15;
          if (size === 0) {
            if (r !== 15) break;
            i += 16;
            if (i > 63) return 'AC zero run past coefficient 63';
            continue;
          }
          if (size > 10) return `AC coefficient of ${size} bits`;
          i += r + 1;
          if (i > 64) return 'AC zero run past coefficient 63';
        }
        if (nbits < size) {
          while (nbits <= 16) {
            const x = p < n ? b[p]! : -1;
            let byte = 0;
            if (x >= 0 && x !== 0xff) {
              byte = x;
              p++;
            } else if (x === 0xff && p + 1 < n && b[p + 1] === 0x00) {
              byte = 0xff;
              p += 2;
            } else {
              stuffed += 8;
            }
            acc = ((acc << 8) | byte) & 0xffffff;
            nbits += 8;
          }
        }
        nbits -= size;
      }
      if (nbits < stuffed) return 'scan data ends before its last MCU';
    }
  }
  return endInterval(b, p, acc, nbits, stuffed);
}

/**
 * Ends an interval or a scan: the bits left in the current byte must be padding ones, no whole byte of data may be
 * left, and a marker must follow (after any fill bytes). Returns the marker's offset, or the problem.
 */
function endInterval(b: Uint8Array, p: number, acc: number, nbits: number, stuffed: number): number | string {
  if (nbits < stuffed) return 'scan data ends before its last MCU';
  const real = nbits - stuffed;
  const whole = real >> 3;
  const pad = real & 7;
  if (pad > 0 && ((acc >> (nbits - pad)) & ((1 << pad) - 1)) !== (1 << pad) - 1) return 'padding bits at the end of the scan data are not all ones';
  const n = b.length;
  const atMarker = (q: number) => b[q] === 0xff && q + 1 < n && b[q + 1] !== 0x00;
  if (whole > 0 || (p < n && !atMarker(p))) {
    let extra = whole;
    while (p < n && !atMarker(p)) p += b[p] === 0xff ? 2 : 1, extra++;
    return `${extra} byte(s) of scan data after the last MCU`;
  }
  if (p >= n) return p;
  while (p + 1 < n && b[p + 1] === 0xff) p++;
  return p;
}
