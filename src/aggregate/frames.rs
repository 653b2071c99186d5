//! A frame as bytes, for frames that live only inside one run (the row-visitor frames and
//! texts sealed in the spill, a staged run's partial tables). An integer column is stored as
//! its smallest value and each value's distance from it in as few bytes as the largest
//! distance needs (none for a constant column such as `_bucket`, one for a bucket's days, two
//! for most ids, eight for visitor pseudonyms), or, for a column of wide values that repeat
//! row after row (a row-visitor frame's pseudonyms, in session order), each run once with its
//! length; a bit per row (Arrow's validity bitmap, low bit first) says which rows are valid
//! where a column has nulls.
//!
//! Why not Parquet, which the run writes anyway: Polars' Parquet writer tries dictionary
//! encoding on every column and estimates each column's cardinality first (hashing every
//! visitor id), which cost about 1 CPU second per 55 MiB of row-visitor frames on the 5 M-line
//! benchmark, and reading them back decodes pages. These frames are read once or twice by the
//! same build, so a stable, compact format buys nothing. Polars' IPC format would fit, but
//! its feature recompiles all of Polars (see docs/PERFORMANCE.md). Types round-trip exactly;
//! a column of any other type is an error, not a silent conversion.

use std::io;

use polars::prelude::*;
use polars_core::utils::arrow::bitmap::Bitmap;

const MAGIC: &[u8; 4] = b"LVF3";

/// Column types and their tags.
const INT32: u8 = 1;
const UINT32: u8 = 2;
const INT64: u8 = 3;
const UINT64: u8 = 4;
const FLOAT64: u8 = 5;
const BOOLEAN: u8 = 6;
const STRING: u8 = 7;

/// A fixed-width value as a `u64` in the same order (signed values with the sign bit
/// flipped, floats by their bits: their order does not matter, only that it round-trips).
trait Raw: Copy {
    fn key(self) -> u64;
    fn from_key(key: u64) -> Self;
}

macro_rules! raw_unsigned {
    ($($t:ty),*) => {$(
        impl Raw for $t {
            fn key(self) -> u64 {
                u64::from(self)
            }
            fn from_key(key: u64) -> Self {
                key as $t
            }
        }
    )*};
}
raw_unsigned!(u32, u64);

macro_rules! raw_signed {
    ($($t:ty),*) => {$(
        impl Raw for $t {
            fn key(self) -> u64 {
                (i64::from(self) as u64) ^ (1 << 63)
            }
            fn from_key(key: u64) -> Self {
                (key ^ (1 << 63)) as i64 as $t
            }
        }
    )*};
}
raw_signed!(i32, i64);

impl Raw for f64 {
    fn key(self) -> u64 {
        self.to_bits()
    }
    fn from_key(key: u64) -> Self {
        f64::from_bits(key)
    }
}

/// `frame` as bytes that [`decode`] turns back into an equal frame.
pub fn encode(frame: &DataFrame) -> io::Result<Vec<u8>> {
    let height = frame.height();
    let mut out = Vec::with_capacity(16 + frame.estimated_size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(height as u64).to_le_bytes());
    out.extend_from_slice(&(frame.width() as u32).to_le_bytes());
    for column in frame.columns() {
        let name = column.name().as_bytes();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        let series = column.as_materialized_series().rechunk();
        let unsupported = || {
            io::Error::other(format!(
                "cannot store column `{}` of type {} in the spill",
                column.name(),
                series.dtype()
            ))
        };
        let tag = match series.dtype() {
            DataType::Int32 => INT32,
            DataType::UInt32 => UINT32,
            DataType::Int64 => INT64,
            DataType::UInt64 => UINT64,
            DataType::Float64 => FLOAT64,
            DataType::Boolean => BOOLEAN,
            DataType::String => STRING,
            _ => return Err(unsupported()),
        };
        out.push(tag);
        let nulls = series.null_count() > 0;
        out.push(u8::from(nulls));
        if nulls {
            put_validity(&series, &mut out);
        }
        let e = |e: PolarsError| io::Error::other(e.to_string());
        match tag {
            INT32 => put_values(series.i32().map_err(e)?, &mut out),
            UINT32 => put_values(series.u32().map_err(e)?, &mut out),
            INT64 => put_values(series.i64().map_err(e)?, &mut out),
            UINT64 => put_values(series.u64().map_err(e)?, &mut out),
            FLOAT64 => put_values(series.f64().map_err(e)?, &mut out),
            BOOLEAN => {
                let values = series.bool().map_err(e)?;
                out.extend(values.iter().map(|v| u8::from(v.unwrap_or(false))));
            }
            _ => {
                for value in series.str().map_err(e)?.iter() {
                    let value = value.unwrap_or("").as_bytes();
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value);
                }
            }
        }
    }
    Ok(out)
}

/// A column's validity as a bitmap of `(height + 7) / 8` bytes, row `i` in bit `i % 8` of
/// byte `i / 8`: Arrow's layout, which [`decode`] takes as it is.
fn put_validity(series: &Series, out: &mut Vec<u8>) {
    let height = series.len();
    let start = out.len();
    out.resize(start + height.div_ceil(8), 0);
    let bits = &mut out[start..];
    for (i, valid) in series.is_not_null().iter().enumerate() {
        if valid == Some(true) {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
}

/// How a numeric column's values are stored: each row's, or each run of equal values once
/// with its length. Row-visitor frames come in session order, so a visitor's rows follow
/// one another: stored by runs, their 8-byte pseudonyms took about a third of the bytes.
const PLAIN: u8 = 0;
const RUNS: u8 = 1;

/// A numeric column's values in row order (a null's slot holds whatever the array holds
/// there): [`PLAIN`] and [`put_plain`]'s bytes, or, for a column of wide values where that
/// is a quarter smaller, [`RUNS`], the number of runs, each run's length (LEB128) and the
/// runs' values as [`put_plain`] puts them.
fn put_values<T>(values: &ChunkedArray<T>, out: &mut Vec<u8>)
where
    T: PolarsNumericType,
    T::Native: Raw,
{
    let keys = || {
        values
            .downcast_iter()
            .flat_map(|array| array.values().iter().map(|v| v.key()))
    };
    let (min, max) = keys().fold((u64::MAX, 0), |(lo, hi), k| (lo.min(k), hi.max(k)));
    let min = min.min(max);
    let width = width_of(min, max);
    // Runs only pay where a value is wide (a pseudonym); a run costs its value and nearly
    // always one byte of length.
    if width >= 4 {
        let mut runs = 0u64;
        let mut last = None;
        for k in keys() {
            runs += u64::from(last != Some(k));
            last = Some(k);
        }
        if runs * (u64::from(width) + 1) * 4 < values.len() as u64 * u64::from(width) * 3 {
            out.push(RUNS);
            out.extend_from_slice(&runs.to_le_bytes());
            // Every value begins some run, so the runs' values span what the column spans.
            let mut firsts = Vec::with_capacity(runs as usize);
            let mut keys = keys();
            if let Some(first) = keys.next() {
                let (mut current, mut length) = (first, 1u64);
                firsts.push(first);
                for k in keys {
                    if k == current {
                        length += 1;
                    } else {
                        put_varint(out, length);
                        firsts.push(k);
                        (current, length) = (k, 1);
                    }
                }
                put_varint(out, length);
            }
            put_plain(firsts.into_iter(), min, width, out);
            return;
        }
    }
    out.push(PLAIN);
    put_plain(keys(), min, width, out);
}

/// The bytes per value that `min..=max` needs as distances from `min` (0, 1, 2, 3 or 4, 8).
fn width_of(min: u64, max: u64) -> u8 {
    (8 - (max - min).leading_zeros() / 8) as u8
}

/// Keys as `min` (their smallest), `width` (the bytes [`width_of`] their span needs), then
/// each key's distance from `min`.
fn put_plain(keys: impl Iterator<Item = u64>, min: u64, width: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&min.to_le_bytes());
    out.push(width);
    match width {
        0 => {}
        1 => out.extend(keys.map(|k| (k - min) as u8)),
        2 => keys.for_each(|k| out.extend_from_slice(&((k - min) as u16).to_le_bytes())),
        3 | 4 => keys.for_each(|k| out.extend_from_slice(&((k - min) as u32).to_le_bytes())),
        _ => keys.for_each(|k| out.extend_from_slice(&(k - min).to_le_bytes())),
    }
}

/// `v` in LEB128: seven bits a byte, low first, the high bit set on all but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The frame [`encode`] made.
pub fn decode(bytes: &[u8]) -> io::Result<DataFrame> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(io::Error::other("a stored frame has an unknown format"));
    }
    let height = usize::try_from(r.u64()?).map_err(io::Error::other)?;
    let width = r.u32()? as usize;
    let mut columns = Vec::with_capacity(width.min(1024));
    for _ in 0..width {
        let name_len = r.u32()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?).map_err(io::Error::other)?;
        let name = PlSmallStr::from_str(name);
        let tag = r.u8()?;
        let valid = match r.u8()? {
            0 => None,
            _ => Some(Validity::new(r.take(height.div_ceil(8))?, height)?),
        };
        let column = match tag {
            INT32 => numeric::<Int32Type>(name, &mut r, height, valid)?,
            UINT32 => numeric::<UInt32Type>(name, &mut r, height, valid)?,
            INT64 => numeric::<Int64Type>(name, &mut r, height, valid)?,
            UINT64 => numeric::<UInt64Type>(name, &mut r, height, valid)?,
            FLOAT64 => numeric::<Float64Type>(name, &mut r, height, valid)?,
            BOOLEAN => {
                let values = r.take(height)?;
                let values =
                    (0..height).map(|i| is_valid(valid.as_ref(), i).then_some(values[i] != 0));
                BooleanChunked::from_iter_options(name, values).into_column()
            }
            STRING => {
                let mut values = Vec::with_capacity(height);
                for i in 0..height {
                    let len = r.u32()? as usize;
                    let text = std::str::from_utf8(r.take(len)?).map_err(io::Error::other)?;
                    values.push(is_valid(valid.as_ref(), i).then_some(text));
                }
                StringChunked::from_iter_options(name, values.into_iter()).into_column()
            }
            _ => {
                return Err(io::Error::other(
                    "a stored frame has a column of unknown type",
                ));
            }
        };
        columns.push(column);
    }
    if r.at != bytes.len() {
        return Err(io::Error::other(
            "a stored frame has bytes after its columns",
        ));
    }
    DataFrame::new(height, columns).map_err(|e| io::Error::other(e.to_string()))
}

fn is_valid(valid: Option<&Validity>, i: usize) -> bool {
    valid.is_none_or(|v| v.0.get_bit(i))
}

/// A column's validity bitmap as [`put_validity`] stored it.
struct Validity(Bitmap);

impl Validity {
    fn new(bytes: &[u8], height: usize) -> io::Result<Validity> {
        Bitmap::try_new(bytes.to_vec(), height)
            .map(Validity)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

fn numeric<T>(
    name: PlSmallStr,
    r: &mut Reader<'_>,
    height: usize,
    valid: Option<Validity>,
) -> io::Result<Column>
where
    T: PolarsNumericType,
    T::Native: Raw,
{
    let keys = match r.u8()? {
        PLAIN => plain(r, height)?,
        RUNS => {
            let runs = usize::try_from(r.u64()?).map_err(|_| truncated())?;
            // Each run is at least a row long and takes at least a byte.
            if runs > height || runs > r.bytes.len() - r.at {
                return Err(truncated());
            }
            let mut lengths = Vec::with_capacity(runs);
            for _ in 0..runs {
                lengths.push(usize::try_from(r.varint()?).map_err(|_| truncated())?);
            }
            if lengths.iter().try_fold(0usize, |n, l| n.checked_add(*l)) != Some(height) {
                return Err(io::Error::other(
                    "a stored frame's runs do not fill its rows",
                ));
            }
            let firsts = plain(r, runs)?;
            let mut keys = Vec::with_capacity(height);
            for (key, length) in firsts.into_iter().zip(lengths) {
                keys.resize(keys.len() + length, key);
            }
            keys
        }
        _ => {
            return Err(io::Error::other(
                "a stored frame has a column of unknown layout",
            ));
        }
    };
    let values: Vec<T::Native> = keys.into_iter().map(T::Native::from_key).collect();
    let column = match valid {
        None => ChunkedArray::<T>::from_vec(name, values),
        Some(valid) => ChunkedArray::<T>::from_vec_validity(name, values, Some(valid.0)),
    };
    Ok(column.into_column())
}

/// `n` keys as [`put_plain`] put them.
fn plain(r: &mut Reader<'_>, n: usize) -> io::Result<Vec<u64>> {
    let min = r.u64()?;
    let width = match r.u8()? {
        0 => 0,
        1 => 1,
        2 => 2,
        3 | 4 => 4,
        _ => 8,
    };
    let bytes = r.take(n.checked_mul(width).ok_or_else(truncated)?)?;
    let key = |offset: u64| min.wrapping_add(offset);
    Ok(match width {
        0 => vec![key(0); n],
        1 => bytes.iter().map(|b| key(u64::from(*b))).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|b| key(u64::from(u16::from_le_bytes([b[0], b[1]]))))
            .collect(),
        4 => bytes
            .chunks_exact(4)
            .map(|b| key(u64::from(u32::from_le_bytes(b.try_into().expect("4")))))
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|b| key(u64::from_le_bytes(b.try_into().expect("8"))))
            .collect(),
    })
}

fn truncated() -> io::Error {
    io::Error::other("a stored frame is truncated")
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(truncated)?;
        let s = self.bytes.get(self.at..end).ok_or_else(truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(io::Error::other("a stored frame has a run length too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported type, with and without nulls, values needing 0, 1, 2, 3 (stored in 4),
    /// 4 and 8 bytes from their column's smallest, extremes, Cyrillic and empty text, a frame
    /// split in chunks, and a frame without rows: each comes back equal, types included.
    #[test]
    fn frames_round_trip_exactly() {
        let mut frame = df!(
            "day" => [20_420i32, 20_421, -1],
            "path" => [Some(0u32), None, Some(u32::MAX)],
            "visits" => [Some(i64::MIN), Some(0), None],
            "visitor" => [u64::MAX, 7, 0],
            "share" => [Some(0.5f64), None, Some(-1e300)],
            "entry" => [Some(true), Some(false), None],
            "text" => [Some("/каталог/обувь"), None, Some("")],
            "wide" => [0u32, 70_000, 1],
            "constant" => [5i32, 5, 5],
            "small" => [-3i64, 250, 0],
        )
        .unwrap();
        assert_eq!(decode(&encode(&frame).unwrap()).unwrap(), frame);
        let more = frame.clone();
        frame.vstack_mut(&more).unwrap();
        assert!(frame.first_col_n_chunks() > 1);
        assert_eq!(decode(&encode(&frame).unwrap()).unwrap(), frame);
        let empty = frame.head(Some(0));
        let back = decode(&encode(&empty).unwrap()).unwrap();
        assert_eq!(back.schema(), empty.schema());
        assert_eq!(back.height(), 0);
        let no_columns = DataFrame::empty();
        assert_eq!(decode(&encode(&no_columns).unwrap()).unwrap(), no_columns);
        // Validity bitmaps over several bytes, nulls either side of each byte's edge.
        let rows = 21u32;
        let nulls = [0u32, 7, 8, 9, 15, 16, 20];
        let ids: Vec<Option<u32>> = (0..rows)
            .map(|i| (!nulls.contains(&i)).then_some(i))
            .collect();
        let texts: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 3 == 0).then(|| format!("/{i}")))
            .collect();
        let long = df!("id" => ids, "text" => texts).unwrap();
        let back = decode(&encode(&long).unwrap()).unwrap();
        assert_eq!(back, long);
        assert_eq!(back.column("id").unwrap().null_count(), nulls.len());
        // Pseudonyms in runs (one row, two, 200: a two-byte length), stored by runs, nulls
        // among them; and wide values without runs, stored as they are.
        let mut visitors: Vec<Option<u64>> = Vec::new();
        for (v, n) in [(u64::MAX, 1), (3, 2), (1 << 60, 200), (3, 1), (9 << 40, 5)] {
            visitors.extend(std::iter::repeat_n(Some(v), n));
        }
        visitors[100] = None;
        let height = visitors.len();
        let distinct: Vec<u64> = (0..height as u64).map(|i| i << 40).collect();
        let runs = df!("visitor" => &visitors, "distinct" => distinct).unwrap();
        let bytes = encode(&runs).unwrap();
        assert!(
            bytes.len() < height * 8 + height.div_ceil(8) + 200,
            "by runs: {}",
            bytes.len()
        );
        assert_eq!(decode(&bytes).unwrap(), runs);
    }

    /// A broken frame is an error, never a panic or a shorter frame; an unsupported column
    /// type is refused when writing.
    #[test]
    fn broken_frames_and_other_types_are_errors() {
        let frame = df!(
            "day" => [1i32, 2, 3, 4],
            "text" => ["a", "б", "", "c"],
            "id" => [None, Some(3u32), None, None],
            "visitor" => [1u64, 1, 1, u64::MAX],
        )
        .unwrap();
        let bytes = encode(&frame).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut other = bytes.clone();
        other[0] = b'P';
        assert!(decode(&other).is_err());
        let small = df!("n" => [1u8]).unwrap();
        let e = encode(&small).unwrap_err().to_string();
        assert!(e.contains("`n`") && e.contains("u8"), "{e}");
    }
}
