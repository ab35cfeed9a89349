// OSC 1.0 packets in the browser: what the mixer sends and reads on its WebSocket.
// The daemon decodes strictly (daemon/osc/wire.py); this writes only i, f, s, T, F.
"use strict";

const OSC = (() => {
  const utf8 = new TextEncoder();
  const text = new TextDecoder();

  function padded(bytes) {
    const out = new Uint8Array((bytes.length + 4) & ~3); // at least one NUL
    out.set(bytes);
    return out;
  }

  // args: numbers are floats unless wrapped as {i: n}; strings; booleans (T/F).
  function message(address, args = []) {
    let tags = ",";
    const parts = [padded(utf8.encode(address))];
    for (const a of args) {
      if (typeof a === "boolean") {
        tags += a ? "T" : "F";
      } else if (typeof a === "number") {
        tags += "f";
        const b = new Uint8Array(4);
        new DataView(b.buffer).setFloat32(0, a);
        parts.push(b);
      } else if (a !== null && typeof a === "object" && "i" in a) {
        tags += "i";
        const b = new Uint8Array(4);
        new DataView(b.buffer).setInt32(0, a.i);
        parts.push(b);
      } else {
        tags += "s";
        parts.push(padded(utf8.encode(String(a))));
      }
    }
    parts.splice(1, 0, padded(utf8.encode(tags)));
    const size = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out.buffer;
  }

  function readString(view, pos) {
    let end = pos;
    while (end < view.byteLength && view.getUint8(end) !== 0) end++;
    const s = text.decode(new Uint8Array(view.buffer, view.byteOffset + pos, end - pos));
    return [s, (end + 4) & ~3];
  }

  function decodeMessage(view, out) {
    let [address, pos] = readString(view, 0);
    let tags = ",";
    if (pos < view.byteLength) [tags, pos] = readString(view, pos);
    const args = [];
    for (const t of tags.slice(1)) {
      if (t === "i") { args.push(view.getInt32(pos)); pos += 4; }
      else if (t === "f") { args.push(view.getFloat32(pos)); pos += 4; }
      else if (t === "d") { args.push(view.getFloat64(pos)); pos += 8; }
      else if (t === "h") { args.push(Number(view.getBigInt64(pos))); pos += 8; }
      else if (t === "t") { pos += 8; args.push(null); }
      else if (t === "s" || t === "S") { let s; [s, pos] = readString(view, pos); args.push(s); }
      else if (t === "b") { const n = view.getInt32(pos); pos += 4 + ((n + 3) & ~3); args.push(null); }
      else if (t === "T") args.push(true);
      else if (t === "F") args.push(false);
      else if (t === "N" || t === "I") args.push(null);
      else if (t === "c" || t === "r" || t === "m") { pos += 4; args.push(null); }
    }
    out.push([address, args]);
  }

  // Every message of a packet (bundles flattened, in order): [[address, args], ...]
  function decode(buffer, out = []) {
    const view = buffer instanceof DataView ? buffer : new DataView(buffer);
    if (view.byteLength >= 8 && view.getUint8(0) === 0x23) { // "#bundle"
      let pos = 16;
      while (pos + 4 <= view.byteLength) {
        const n = view.getInt32(pos);
        decode(new DataView(view.buffer, view.byteOffset + pos + 4, n), out);
        pos += 4 + n;
      }
    } else {
      decodeMessage(view, out);
    }
    return out;
  }

  return { message, decode };
})();
