//! MNIST-format IDX files (optionally gzipped): unsigned-byte images and labels.
//!
//! Format: big-endian magic `0x0000_08_NN` (type 0x08 = unsigned byte, NN = number
//! of dimensions), NN big-endian u32 dimensions, then the data. Gzip is detected by
//! its magic bytes, not the file name; a stream of several gzip members is read
//! whole, and decompression goes no further than the header declares (at most
//! [`FileKind::Idx`]'s limit).

use std::path::Path;

use ndarray::Array2;

use crate::DataError;
use crate::files::{self, FileKind};

/// Labelled images: `images x pixels` bytes and one label per image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxDataset {
    /// Pixels, one image per row.
    pub images: Array2<u8>,
    /// Per-image dimensions after the count (e.g. `[28, 28]`).
    pub image_dims: Vec<usize>,
    /// Class labels.
    pub labels: Vec<u8>,
}

fn idx_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a regular file (at most [`FileKind::Idx`]'s limit) and gunzips it
/// when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = files::read_file(path, FileKind::Idx)?;
    if raw.starts_with(&GZIP_MAGIC) {
        gunzip_idx(&raw, path)
    } else {
        Ok(raw)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decompresses a gzipped IDX file no further than its header says: the
/// header first, then exactly the data its dimensions declare. A header that
/// declares more than [`FileKind::Idx`]'s limit is refused before anything
/// else is decompressed, and data past the declared size is an error after one
/// extra byte, so a gzip bomb costs neither time nor memory. A malformed
/// header is returned as it is, for [`parse_idx`] to name.
fn gunzip_idx(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let mut z = files::GzStream::new(bytes, path);
    let mut out = Vec::new();
    z.read_to(&mut out, 4)?;
    if out.len() < 4 || out[..3] != [0, 0, 0x08] {
        return Ok(out);
    }
    let header = 4 + 4 * u64::from(out[3]);
    z.read_to(&mut out, header)?;
    if (out.len() as u64) < header {
        return Ok(out);
    }
    let dims: Vec<u64> = out[4..]
        .chunks_exact(4)
        .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    let limit = FileKind::Idx.limit();
    let Some(data) = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| header + n <= limit)
    else {
        return Err(idx_err(
            path,
            format!(
                "its header declares dimensions {dims:?}, more data than the limit of {}",
                files::human_bytes(limit)
            ),
        ));
    };
    z.read_to(&mut out, header + data + 1)?;
    if out.len() as u64 > header + data {
        return Err(idx_err(
            path,
            format!("the decompressed data goes on past the {data} bytes its header declares"),
        ));
    }
    Ok(out)
}

/// Parses the bytes of an IDX file as read from disk: gunzipped (one or more
/// members, no further than the header declares, at most [`FileKind::Idx`]'s
/// limit) when they start with the gzip magic, then [`parse_idx`]. `path` is
/// only used in messages.
///
/// # Errors
/// As [`parse_idx`], or a corrupt, truncated or oversized gzip stream.
pub fn decode_idx(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        parse_idx(path, &gunzip_idx(bytes, path)?)
    } else {
        parse_idx(path, bytes)
    }
}

/// Parses an unsigned-byte IDX file into `(dims, data)`.
///
/// # Errors
/// [`DataError::Idx`] naming the file for a wrong magic, a type other than
/// unsigned byte, or a data length that does not match the dimensions.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    if bytes.len() < 4 {
        return Err(idx_err(
            path,
            format!("truncated: {} bytes, no IDX header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(idx_err(
            path,
            format!(
                "wrong magic {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(idx_err(
            path,
            format!(
                "data type 0x{:02x} is not supported (only 0x08, unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let nd = usize::from(bytes[3]);
    if nd == 0 {
        return Err(idx_err(path, "zero dimensions"));
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err(idx_err(
            path,
            format!(
                "truncated header: {} dimensions need {header} bytes, file has {}",
                nd,
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let n: usize = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| idx_err(path, "dimensions overflow"))?;
    let data = &bytes[header..];
    if data.len() != n {
        return Err(idx_err(
            path,
            format!(
                "dimensions {dims:?} need {n} data bytes, file has {}{}",
                data.len(),
                if data.len() < n { " (truncated)" } else { "" }
            ),
        ));
    }
    Ok((dims, data.to_vec()))
}

impl IdxDataset {
    /// Loads images (`idx3`, or any unsigned-byte IDX with 2+ dimensions) and labels (`idx1`).
    ///
    /// # Errors
    /// Unreadable or malformed files, or image and label counts that differ.
    pub fn load(images: &Path, labels: &Path) -> Result<Self, DataError> {
        let (idims, idata) = parse_idx(images, &read_maybe_gz(images)?)?;
        if idims.len() < 2 {
            return Err(idx_err(
                images,
                format!("image file has dimensions {idims:?}; expected [count, ...]"),
            ));
        }
        let (ldims, ldata) = parse_idx(labels, &read_maybe_gz(labels)?)?;
        if ldims.len() != 1 {
            return Err(idx_err(
                labels,
                format!("label file has dimensions {ldims:?}; expected [count]"),
            ));
        }
        if ldims[0] != idims[0] {
            return Err(idx_err(
                labels,
                format!(
                    "{} labels for {} images in {}",
                    ldims[0],
                    idims[0],
                    images.display()
                ),
            ));
        }
        if idims.contains(&0) {
            return Err(idx_err(
                images,
                format!("dimensions {idims:?}: no images or empty images"),
            ));
        }
        // Not 0 and at most the data length: parse_idx checked the whole product.
        let pixels = idata.len() / idims[0];
        let images = Array2::from_shape_vec((idims[0], pixels), idata).map_err(|e| {
            idx_err(
                images,
                format!("dimensions {idims:?} do not form a matrix: {e}"),
            )
        })?;
        Ok(Self {
            images,
            image_dims: idims[1..].to_vec(),
            labels: ldata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, u8::try_from(dims.len()).unwrap()];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_and_rejects() {
        let p = Path::new("x.idx");
        assert_eq!(
            parse_idx(p, &idx(&[2, 2], &[1, 2, 3, 4])).unwrap(),
            (vec![2, 2], vec![1, 2, 3, 4])
        );
        let e = parse_idx(p, &idx(&[2, 2], &[1, 2, 3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.idx") && e.contains("truncated"), "{e}");
        let mut bad = idx(&[1], &[1]);
        bad[0] = 0x50;
        assert!(
            parse_idx(p, &bad)
                .unwrap_err()
                .to_string()
                .contains("wrong magic")
        );
        let mut ty = idx(&[1], &[1]);
        ty[2] = 0x0d;
        assert!(parse_idx(p, &ty).unwrap_err().to_string().contains("0x0d"));
    }

    #[test]
    fn gzip_and_label_mismatch() {
        let dir = std::env::temp_dir().join(format!("raella-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ip, lp) = (dir.join("i.gz"), dir.join("l"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &idx(&[2, 1, 2], &[9, 8, 7, 6])).unwrap();
        std::fs::write(&ip, gz.finish().unwrap()).unwrap();
        std::fs::write(&lp, idx(&[2], &[3, 4])).unwrap();
        let d = IdxDataset::load(&ip, &lp).unwrap();
        assert_eq!(d.images.row(1).to_vec(), vec![7, 6]);
        assert_eq!(d.labels, vec![3, 4]);
        std::fs::write(&lp, idx(&[3], &[3, 4, 5])).unwrap();
        let e = IdxDataset::load(&ip, &lp).unwrap_err().to_string();
        assert!(e.contains("3 labels for 2 images"), "{e}");
        // `cat a.gz b.gz`: a valid gzip file of two members.
        let whole = idx(&[2, 1, 2], &[9, 8, 7, 6]);
        let mut two = Vec::new();
        for part in [&whole[..10], &whole[10..]] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, part).unwrap();
            two.extend(gz.finish().unwrap());
        }
        std::fs::write(&ip, &two).unwrap();
        std::fs::write(&lp, idx(&[2], &[3, 4])).unwrap();
        assert_eq!(
            IdxDataset::load(&ip, &lp).unwrap().images.row(1).to_vec(),
            vec![7, 6]
        );
        assert_eq!(decode_idx(&two, &ip).unwrap().1, vec![9, 8, 7, 6]);
        // A gzip bomb: its header declares 10^14 bytes (refused before
        // decompressing), or declares 4 and goes on for a megabyte (refused
        // after one byte past the 4).
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut e, data).unwrap();
            e.finish().unwrap()
        };
        let mut huge = idx(&[100_000, 1 << 15, 1 << 15], &[]);
        huge.extend(vec![0u8; 1 << 20]);
        let e = decode_idx(&gz(&huge), &ip).unwrap_err().to_string();
        assert!(e.contains("i.gz") && e.contains("limit"), "{e}");
        let mut long = idx(&[2, 1, 2], &[]);
        long.extend(vec![0u8; 1 << 20]);
        let e = decode_idx(&gz(&long), &ip).unwrap_err().to_string();
        assert!(e.contains("past the 4 bytes its header declares"), "{e}");
        std::fs::write(&ip, idx(&[0, 28, 28], &[])).unwrap();
        std::fs::write(&lp, idx(&[0], &[])).unwrap();
        let e = IdxDataset::load(&ip, &lp).unwrap_err().to_string();
        assert!(e.contains("no images"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
