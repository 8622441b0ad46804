//! Minimal reader and writer for the `.npy` files DeepRacer ships its tracks
//! in: version 1.x/2.x/3.x headers, little-endian float64, C order, 2-D.
//! Anything else is rejected with a message naming what is wrong, because a
//! silently misread track drives the car into a wall.

use std::fmt::Write as _;

/// What is wrong with an `.npy` payload (the caller adds the file name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (bad magic bytes)")]
    BadMagic,
    #[error("truncated .npy file: {0}")]
    Truncated(&'static str),
    #[error("unsupported .npy format version {0}.{1}")]
    Version(u8, u8),
    #[error("bad .npy header: {0}")]
    Header(String),
    #[error("not a float64 array: dtype is '{0}' (need '<f8')")]
    Dtype(String),
    #[error("array is in Fortran order (need C order)")]
    FortranOrder,
    #[error("array must be 2-D, shape is {0:?}")]
    Dims(Vec<usize>),
    #[error("data is {got} bytes, shape needs {need}")]
    DataLen { got: usize, need: usize },
}

/// A 2-D float64 array in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array2 {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

/// Parses a `.npy` file holding a 2-D little-endian float64 array.
pub fn parse_f64_2d(bytes: &[u8]) -> Result<Array2, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated("header length"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => return Err(NpyError::Version(major, minor)),
    };
    let hend = hstart
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or(NpyError::Truncated("header"))?;
    let header = std::str::from_utf8(&bytes[hstart..hend])
        .map_err(|_| NpyError::Header("header is not UTF-8".into()))?;
    let descr = dict_value(header, "descr")?;
    let descr = unquote(descr).ok_or_else(|| NpyError::Header(format!("descr {descr}")))?;
    // '<f8' everywhere; '=f8' and '|f8' are native/no-order spellings that
    // numpy writes only on little-endian hosts for this dtype in practice.
    if !matches!(descr, "<f8" | "=f8") {
        return Err(NpyError::Dtype(descr.to_string()));
    }
    match dict_value(header, "fortran_order")?.trim() {
        "False" => {}
        "True" => return Err(NpyError::FortranOrder),
        other => return Err(NpyError::Header(format!("fortran_order {other}"))),
    }
    let shape = parse_shape(dict_value(header, "shape")?)?;
    if shape.len() != 2 {
        return Err(NpyError::Dims(shape));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let need = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(8))
        .ok_or_else(|| NpyError::Header("shape overflows".into()))?;
    let payload = &bytes[hend..];
    if payload.len() != need {
        return Err(NpyError::DataLen {
            got: payload.len(),
            need,
        });
    }
    let data = payload
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
        .collect();
    Ok(Array2 { rows, cols, data })
}

/// Writes a 2-D float64 array as a version 1.0 `.npy` file, the same layout
/// `numpy.save` produces (header padded to a multiple of 64 bytes).
pub fn write_f64_2d(rows: usize, cols: usize, data: &[f64]) -> Vec<u8> {
    assert_eq!(rows * cols, data.len(), "shape does not match data");
    let mut dict = String::new();
    let _ = write!(
        dict,
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"
    );
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    dict.extend(std::iter::repeat_n(' ', pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn dict_value<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let pat_sq = format!("'{key}'");
    let pat_dq = format!("\"{key}\"");
    let at = header
        .find(&pat_sq)
        .map(|i| i + pat_sq.len())
        .or_else(|| header.find(&pat_dq).map(|i| i + pat_dq.len()))
        .ok_or_else(|| NpyError::Header(format!("missing key '{key}'")))?;
    let rest = header[at..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| NpyError::Header(format!("no ':' after '{key}'")))?
        .trim_start();
    // A value ends at the first top-level comma or closing brace.
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    Err(NpyError::Header(format!("unterminated value for '{key}'")))
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

fn parse_shape(s: &str) -> Result<Vec<usize>, NpyError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| NpyError::Header(format!("shape is not a tuple: {s}")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| NpyError::Header(format!("bad shape entry '{p}'")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<f64> = (0..12).map(|i| i as f64 * 0.5 - 1.0).collect();
        let bytes = write_f64_2d(2, 6, &data);
        assert_eq!((bytes.len() - 96) % 8, 0);
        assert_eq!(
            bytes[10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize - 1],
            b'\n'
        );
        let a = parse_f64_2d(&bytes).unwrap();
        assert_eq!((a.rows, a.cols), (2, 6));
        assert_eq!(a.data, data);
    }

    #[test]
    fn rejects_other_dtypes_and_orders() {
        let ok = write_f64_2d(1, 6, &[0.0; 6]);
        let patch = |from: &[u8], to: &[u8]| {
            let mut b = ok.clone();
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        let f4 = patch(b"<f8", b"<f4");
        assert_eq!(parse_f64_2d(&f4), Err(NpyError::Dtype("<f4".into())));
        let fo = patch(b"False", b"True ");
        assert_eq!(parse_f64_2d(&fo), Err(NpyError::FortranOrder));
        assert_eq!(parse_f64_2d(b"hello world"), Err(NpyError::BadMagic));
        assert!(matches!(
            parse_f64_2d(&ok[..ok.len() - 3]),
            Err(NpyError::DataLen { .. })
        ));
    }
}
