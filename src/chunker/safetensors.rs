//! Safetensors awareness: reads a file's header and plans segments (the header, each tensor,
//! and any bytes between or after them) so that chunk boundaries fall on tensor boundaries and
//! an unchanged tensor deduplicates exactly, whatever its neighbours did.

use std::collections::HashMap;

use serde::Deserialize;

/// Headers larger than this are not trusted (the format's own reference caps it at 100 MB).
pub const MAX_HEADER: u64 = 100 << 20;

/// A run of bytes chunked on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Length in bytes.
    pub len: u64,
    /// Element width of the tensor (2 for F16/BF16, 4 for F32), or 1 when unknown.
    pub width: u8,
}

#[derive(Deserialize)]
struct TensorInfo {
    dtype: String,
    data_offsets: [u64; 2],
}

/// True for names ferry treats as safetensors.
pub fn is_safetensors(path: &str) -> bool {
    path.ends_with(".safetensors")
}

/// The header length from a file's first 8 bytes, if plausible for a file of `size` bytes.
pub fn header_len(first8: [u8; 8], size: u64) -> Option<u64> {
    let n = u64::from_le_bytes(first8);
    ((2..=MAX_HEADER).contains(&n) && 8 + n <= size).then_some(n)
}

/// Plans the segments of a safetensors file from its first `8 + n` bytes. `None` when the
/// header is not valid safetensors (the file is then chunked as plain bytes).
pub fn plan(header: &[u8], size: u64) -> Option<Vec<Segment>> {
    let n = header_len(header.get(..8)?.try_into().ok()?, size)?;
    let json = header.get(8..8 + n as usize)?;
    let map: HashMap<String, serde_json::Value> = serde_json::from_slice(json).ok()?;
    let data_start = 8 + n;
    let data_len = size - data_start;
    let mut tensors: Vec<(u64, u64, u8)> = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let t: TensorInfo = serde_json::from_value(v).ok()?;
        let [b, e] = t.data_offsets;
        if b > e || e > data_len {
            return None;
        }
        if b < e {
            tensors.push((b, e, width(&t.dtype)));
        }
    }
    tensors.sort_unstable();
    let mut segments = vec![Segment {
        len: data_start,
        width: 1,
    }];
    let mut pos = 0;
    for (b, e, w) in tensors {
        if b < pos {
            return None; // overlapping tensors
        }
        if b > pos {
            segments.push(Segment {
                len: b - pos,
                width: 1,
            });
        }
        segments.push(Segment {
            len: e - b,
            width: w,
        });
        pos = e;
    }
    if pos < data_len {
        segments.push(Segment {
            len: data_len - pos,
            width: 1,
        });
    }
    Some(segments)
}

fn width(dtype: &str) -> u8 {
    match dtype {
        "F16" | "BF16" => 2,
        "F32" => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> (Vec<u8>, u64) {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        let size = (f.len() + data_len) as u64;
        (f, size)
    }

    #[test]
    fn plans_header_tensors_and_gaps() {
        let (h, size) = file(
            r#"{"__metadata__":{"x":"y"},"b":{"dtype":"F32","shape":[4],"data_offsets":[20,36]},"a":{"dtype":"BF16","shape":[8],"data_offsets":[0,16]}}"#,
            40,
        );
        let segs = plan(&h, size).unwrap();
        let lens: Vec<(u64, u8)> = segs.iter().map(|s| (s.len, s.width)).collect();
        assert_eq!(
            lens,
            vec![(h.len() as u64, 1), (16, 2), (4, 1), (16, 4), (4, 1)]
        );
        assert_eq!(segs.iter().map(|s| s.len).sum::<u64>(), size);
    }

    #[test]
    fn rejects_invalid_headers() {
        for (header, data) in [
            (
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,99]}}"#,
                16,
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[8,4]}}"#,
                16,
            ),
            (
                r#"{"a":{"dtype":"F32","data_offsets":[0,8]},"b":{"dtype":"F32","data_offsets":[4,12]}}"#,
                16,
            ),
            ("not json", 16),
        ] {
            let (h, size) = file(header, data);
            assert!(plan(&h, size).is_none(), "{header}");
        }
        assert!(header_len(u64::MAX.to_le_bytes(), 100).is_none());
        assert!(plan(b"\x01", 1).is_none());
    }
}
