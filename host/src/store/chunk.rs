//! The encoding of a sealed chunk: a run of one key's points, oldest first.
//!
//! A chunk row's value is `u8 format (1) ‖ u32 BE count ‖ i64 BE last time (µs) ‖ zstd frame`;
//! its key holds the first time, so a scan picks chunks and skips them by their header
//! alone. The zstd frame holds:
//!
//! - times: for each point after the first, the zigzag LEB128 varint of its delta-of-delta
//!   in microseconds (a steady rate costs one zero byte a point, which zstd folds away);
//! - one shape tag, then the values, encoded by their shape (the host's, never the key type):
//!   - `0` numbers that are exact scaled decimals (`i / 10^e`, `e ≤ 9`, `|i| < 2^53`):
//!     `u8 e`, then zigzag varint deltas of `i` (a thermometer at 0.1 °C: about one byte a
//!     point before zstd's entropy coding);
//!   - `1` other numbers: Gorilla's XOR with the previous value, as a byte
//!     `leading zero bytes << 4 | trailing zero bytes` and the bytes between;
//!   - `2` booleans: the first value, then run lengths (varints);
//!   - `3` text: a per-chunk dictionary (count, then length-prefixed strings), then each
//!     point's dictionary index (varint);
//!   - `4` mixed shapes: each value's storage encoding, length-prefixed.
//!
//! zstd (level [`ZSTD_LEVEL`]) then entropy-codes the whole: delta bytes of a slow-moving
//! sensor take a few bits each.

use std::io::Read;

use crate::value::{Micros, Value};

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 4 + 8;
/// Sealing is rare and reading is what matters; 3 decodes as fast as 1 and packs tighter.
const ZSTD_LEVEL: i32 = 3;
/// Decoded points per chunk are capped (the writer seals far fewer), so a corrupt count
/// cannot make a reader allocate without bound.
const MAX_POINTS: usize = 1 << 20;

const DECIMAL: u8 = 0;
const XOR: u8 = 1;
const BOOLS: u8 = 2;
const TEXT: u8 = 3;
const MIXED: u8 = 4;

/// Exact powers of ten, `10^0 ..= 10^9`.
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// What a chunk row's header says without decompressing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub count: u32,
    pub last: Micros,
}

/// Reads the header of a chunk row's value.
pub fn header(v: &[u8]) -> Option<Header> {
    if v.len() < HEADER || v[0] != FORMAT {
        return None;
    }
    Some(Header {
        count: u32::from_be_bytes(v[1..5].try_into().ok()?),
        last: i64::from_be_bytes(v[5..13].try_into().ok()?),
    })
}

/// Encodes points (oldest first, distinct times, at least one). Fails only when zstd
/// cannot allocate.
pub fn encode(points: &[(Micros, Value)]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(points.len() * 3 + 16);
    let mut prev_delta: i64 = 0;
    for w in points.windows(2) {
        let delta = w[1].0.wrapping_sub(w[0].0);
        put_signed(&mut body, delta.wrapping_sub(prev_delta));
        prev_delta = delta;
    }
    encode_values(points, &mut body);
    let packed = zstd::bulk::compress(&body, ZSTD_LEVEL)?;
    let mut out = Vec::with_capacity(HEADER + packed.len());
    out.push(FORMAT);
    out.extend_from_slice(&(points.len() as u32).to_be_bytes());
    out.extend_from_slice(&points.last().map_or(0, |p| p.0).to_be_bytes());
    out.extend_from_slice(&packed);
    Ok(out)
}

/// Decodes a chunk row whose key says the first time is `first`, oldest first.
pub fn decode(first: Micros, v: &[u8]) -> Option<Vec<(Micros, Value)>> {
    let h = header(v)?;
    let n = h.count as usize;
    if n == 0 || n > MAX_POINTS {
        return None;
    }
    let mut body = Vec::new();
    zstd::stream::read::Decoder::new(&v[HEADER..])
        .ok()?
        .take((n as u64) * 32 + (1 << 20))
        .read_to_end(&mut body)
        .ok()?;
    let mut r = Reader { b: &body, at: 0 };
    let mut times = Vec::with_capacity(n);
    times.push(first);
    let (mut t, mut delta) = (first, 0i64);
    for _ in 1..n {
        delta = delta.wrapping_add(r.signed()?);
        t = t.wrapping_add(delta);
        times.push(t);
    }
    if t != h.last {
        return None;
    }
    let values = decode_values(&mut r, n)?;
    Some(times.into_iter().zip(values).collect())
}

fn encode_values(points: &[(Micros, Value)], out: &mut Vec<u8>) {
    let all = |f: fn(&Value) -> bool| points.iter().all(|(_, v)| f(v));
    if all(|v| matches!(v, Value::Number(_))) {
        let nums: Vec<f64> = points
            .iter()
            .map(|(_, v)| match v {
                Value::Number(n) => *n,
                _ => 0.0,
            })
            .collect();
        if let Some((e, ints)) = scaled_decimals(&nums) {
            out.push(DECIMAL);
            out.push(e);
            let mut prev = 0i64;
            for i in ints {
                put_signed(out, i.wrapping_sub(prev));
                prev = i;
            }
        } else {
            out.push(XOR);
            let mut prev = 0u64;
            for n in nums {
                let x = n.to_bits() ^ prev;
                prev = n.to_bits();
                if x == 0 {
                    out.push(0x80);
                    continue;
                }
                let lead = (x.leading_zeros() / 8) as usize;
                let trail = (x.trailing_zeros() / 8) as usize;
                out.push(((lead as u8) << 4) | trail as u8);
                out.extend_from_slice(&x.to_be_bytes()[lead..8 - trail]);
            }
        }
    } else if all(|v| matches!(v, Value::Bool(_))) {
        out.push(BOOLS);
        let mut current = matches!(points[0].1, Value::Bool(true));
        out.push(u8::from(current));
        let mut run = 0u64;
        for (_, v) in points {
            let b = matches!(v, Value::Bool(true));
            if b != current {
                put_unsigned(out, run);
                current = b;
                run = 0;
            }
            run += 1;
        }
        put_unsigned(out, run);
    } else if all(|v| matches!(v, Value::Text(_))) {
        out.push(TEXT);
        let mut dict: Vec<&str> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut ids = Vec::with_capacity(points.len());
        for (_, v) in points {
            let s = match v {
                Value::Text(s) => s.as_str(),
                _ => "",
            };
            let id = *index.entry(s).or_insert_with(|| {
                dict.push(s);
                dict.len() - 1
            });
            ids.push(id);
        }
        put_unsigned(out, dict.len() as u64);
        for s in dict {
            put_unsigned(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        for id in ids {
            put_unsigned(out, id as u64);
        }
    } else {
        out.push(MIXED);
        let mut buf = Vec::new();
        for (_, v) in points {
            buf.clear();
            v.encode_into(&mut buf);
            put_unsigned(out, buf.len() as u64);
            out.extend_from_slice(&buf);
        }
    }
}

/// The smallest decimal scale at which every number is exactly `i / 10^e`.
fn scaled_decimals(nums: &[f64]) -> Option<(u8, Vec<i64>)> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    'scale: for (e, p) in POW10.iter().enumerate() {
        let mut ints = Vec::with_capacity(nums.len());
        for &n in nums {
            let s = (n * p).round();
            if !s.is_finite() || s.abs() >= EXACT || (s / p).to_bits() != n.to_bits() {
                continue 'scale;
            }
            ints.push(s as i64);
        }
        return Some((e as u8, ints));
    }
    None
}

fn decode_values(r: &mut Reader, n: usize) -> Option<Vec<Value>> {
    let mut out = Vec::with_capacity(n);
    match r.byte()? {
        DECIMAL => {
            let p = *POW10.get(r.byte()? as usize)?;
            let mut i = 0i64;
            for _ in 0..n {
                i = i.wrapping_add(r.signed()?);
                out.push(Value::Number(i as f64 / p));
            }
        }
        XOR => {
            let mut prev = 0u64;
            for _ in 0..n {
                let h = r.byte()?;
                if h != 0x80 {
                    let (lead, trail) = ((h >> 4) as usize, (h & 0x0f) as usize);
                    if lead + trail >= 8 {
                        return None;
                    }
                    let mut bytes = [0u8; 8];
                    bytes[lead..8 - trail].copy_from_slice(r.take(8 - lead - trail)?);
                    prev ^= u64::from_be_bytes(bytes);
                }
                out.push(Value::Number(f64::from_bits(prev)));
            }
        }
        BOOLS => {
            let mut current = r.byte()? == 1;
            while out.len() < n {
                let run = r.unsigned()? as usize;
                if run == 0 || run > n - out.len() {
                    return None;
                }
                out.extend(std::iter::repeat_n(Value::Bool(current), run));
                current = !current;
            }
        }
        TEXT => {
            let k = r.unsigned()? as usize;
            if k > n {
                return None;
            }
            let mut dict = Vec::with_capacity(k);
            for _ in 0..k {
                let len = r.unsigned()? as usize;
                dict.push(String::from_utf8(r.take(len)?.to_vec()).ok()?);
            }
            for _ in 0..n {
                out.push(Value::Text(dict.get(r.unsigned()? as usize)?.clone()));
            }
        }
        MIXED => {
            for _ in 0..n {
                let len = r.unsigned()? as usize;
                out.push(Value::decode(r.take(len)?)?);
            }
        }
        _ => return None,
    }
    Some(out)
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, ((v << 1) ^ (v >> 63)) as u64);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn unsigned(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn signed(&mut self) -> Option<i64> {
        let u = self.unsigned()?;
        Some(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(points: Vec<(Micros, Value)>) {
        let bytes = encode(&points).expect("encodes");
        let h = header(&bytes).expect("a header");
        assert_eq!(h.count as usize, points.len());
        let back = decode(points[0].0, &bytes).expect("decodes");
        assert_eq!(back.len(), points.len());
        for (a, b) in back.iter().zip(&points) {
            assert_eq!(a.0, b.0);
            match (&a.1, &b.1) {
                (Value::Number(x), Value::Number(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                (x, y) => assert_eq!(x, y),
            }
        }
    }

    #[test]
    fn every_shape_round_trips() {
        let t = |i: i64| 1_700_000_000_000_000 + i * 5_000_000 + (i % 3) * 7;
        round_trip(
            (0..1000)
                .map(|i| (t(i), Value::Number(20.0 + (i % 17) as f64 / 10.0)))
                .collect(),
        );
        round_trip(
            (0..1000)
                .map(|i| (t(i), Value::Number((i as f64 * 0.37).sin() * 1e-3)))
                .collect(),
        );
        round_trip(
            [0.0, -0.0, f64::NAN, f64::INFINITY, 1e300, -5e-324, 3.0]
                .iter()
                .enumerate()
                .map(|(i, n)| (t(i as i64), Value::Number(*n)))
                .collect(),
        );
        round_trip((0..500).map(|i| (t(i), Value::Bool(i % 7 < 3))).collect());
        round_trip(
            (0..500)
                .map(|i| {
                    (
                        t(i),
                        Value::Text(["on", "off", "éco"][(i % 3) as usize].into()),
                    )
                })
                .collect(),
        );
        round_trip(vec![
            (-5, Value::Bool(true)),
            (0, Value::Text("x".into())),
            (i64::MAX / 2, Value::Number(1.5)),
        ]);
        round_trip(vec![(42, Value::Number(9_007_199_254_740_993.0))]);
    }

    #[test]
    fn corrupt_chunks_are_refused_not_misread() {
        let bytes = encode(&[(1, Value::Number(1.0)), (2, Value::Number(2.0))]).expect("encodes");
        assert!(decode(1, &bytes[..bytes.len() - 1]).is_none());
        let mut wrong_count = bytes.clone();
        wrong_count[4] = 3;
        assert!(decode(1, &wrong_count).is_none());
        assert!(decode(1, &[9; 20]).is_none());
    }
}
