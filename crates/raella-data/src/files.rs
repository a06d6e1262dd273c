//! The one way the simulator reads a file a user points it at: regular files
//! only, with a size limit per kind of file, and gzip streams decoded up to a
//! limit.
//!
//! A named pipe, a device or a folder where a file is expected is an error
//! naming the path and what it is, reported before anything is read (a FIFO
//! would block forever, `/dev/zero` would never end). On Unix the file is opened
//! non-blocking and checked again on the open handle, so swapping a FIFO in
//! between the check and the open cannot block either. A file past its kind's
//! limit is an error naming the size and the limit; reading stops at the limit
//! even if the file grows while it is read.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use crate::DataError;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What a file holds; sets its size limit. The limits are generous for real
/// inputs and small enough that a runaway file is refused before it fills
/// memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A sweep spec, presets file or cost table (TOML): 16 MiB.
    Toml,
    /// An ONNX model: 2 GiB (protobuf's own limit).
    Onnx,
    /// An IDX file, compressed or decompressed: 1 GiB.
    Idx,
    /// One photograph (PNG/JPEG): 256 MiB.
    Image,
    /// A JSON configuration (`config.json`): 16 MiB.
    Json,
    /// A tokenizer (`tokenizer.json`): 256 MiB.
    Tokenizer,
    /// A safetensors weight file: 4 GiB.
    Safetensors,
    /// A text data file (Lee-50, calibration texts, statistics files): 64 MiB.
    Text,
    /// A sweep's own output read back (cached points, shard results): 1 GiB.
    Results,
}

impl FileKind {
    /// The largest file of this kind that is read, in bytes.
    #[must_use]
    pub const fn limit(self) -> u64 {
        match self {
            Self::Toml | Self::Json => 16 * MIB,
            Self::Onnx => 2 * GIB,
            Self::Idx | Self::Results => GIB,
            Self::Image | Self::Tokenizer => 256 * MIB,
            Self::Safetensors => 4 * GIB,
            Self::Text => 64 * MIB,
        }
    }

    /// What the file is, with its article, for messages.
    #[must_use]
    pub const fn what(self) -> &'static str {
        match self {
            Self::Toml => "a TOML file",
            Self::Onnx => "an ONNX model",
            Self::Idx => "an IDX file",
            Self::Image => "an image",
            Self::Json => "a JSON file",
            Self::Tokenizer => "a tokenizer",
            Self::Safetensors => "a safetensors file",
            Self::Text => "a text file",
            Self::Results => "a results file",
        }
    }
}

/// Human-readable bytes (`1.5 GiB`).
#[must_use]
pub fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    if n >= GIB {
        format!("{:.1} GiB", f / GIB as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", f / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// What a file-system entry is, when it is not a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() {
        return None;
    }
    if ft.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if ft.is_char_device() {
            return Some("a character device");
        }
        if ft.is_block_device() {
            return Some("a block device");
        }
        if ft.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

fn io_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `path` is a regular file (symbolic links followed) of at most
/// `kind`'s limit, without opening it; returns its size.
///
/// # Errors
/// [`DataError::Io`] for a missing or inaccessible path,
/// [`DataError::NotAFile`] for a folder, FIFO, device or socket,
/// [`DataError::TooLarge`] past the limit.
pub fn check_file(path: &Path, kind: FileKind) -> Result<u64, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    check_meta(path, kind, &meta)
}

fn check_meta(path: &Path, kind: FileKind, meta: &Metadata) -> Result<u64, DataError> {
    if let Some(is) = not_regular(meta) {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
            is,
            expected: kind.what(),
        });
    }
    if meta.len() > kind.limit() {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            what: kind.what(),
            size: human_bytes(meta.len()),
            limit: human_bytes(kind.limit()),
        });
    }
    Ok(meta.len())
}

/// Opens a regular file for reading after [`check_file`], checking the open
/// handle again; returns it with its size.
///
/// # Errors
/// As [`check_file`].
pub fn open_file(path: &Path, kind: FileKind) -> Result<(File, u64), DataError> {
    check_file(path, kind)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer appears; non-blocking
        // it returns at once, and the check below rejects it.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| io_err(path, e))?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    let len = check_meta(path, kind, &meta)?;
    Ok((file, len))
}

/// Reads a whole regular file of at most `kind`'s limit.
///
/// # Errors
/// As [`check_file`], or a read error.
pub fn read_file(path: &Path, kind: FileKind) -> Result<Vec<u8>, DataError> {
    let (file, len) = open_file(path, kind)?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(kind.limit() + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    if buf.len() as u64 > kind.limit() {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            what: kind.what(),
            size: "more (it grew while read)".into(),
            limit: human_bytes(kind.limit()),
        });
    }
    Ok(buf)
}

/// Reads a whole regular file as UTF-8 text.
///
/// # Errors
/// As [`read_file`], or bytes that are not UTF-8 (naming the byte offset).
pub fn read_text(path: &Path, kind: FileKind) -> Result<String, DataError> {
    String::from_utf8(read_file(path, kind)?).map_err(|e| DataError::ModelFile {
        path: path.to_path_buf(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// A gzip stream of one or more members (as `cat a.gz b.gz` makes) being
/// decoded, read as far as the caller asks.
pub struct GzStream<'a> {
    decoder: flate2::read::MultiGzDecoder<&'a [u8]>,
    path: &'a Path,
}

impl<'a> GzStream<'a> {
    /// Starts decoding `bytes`; `path` names them in errors.
    #[must_use]
    pub fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Self {
            decoder: flate2::read::MultiGzDecoder::new(bytes),
            path,
        }
    }

    /// Appends decoded bytes to `out` until it holds `len` bytes or the stream
    /// ends.
    ///
    /// # Errors
    /// [`DataError::Gzip`] naming the file for a corrupt or truncated stream.
    pub fn read_to(&mut self, out: &mut Vec<u8>, len: u64) -> Result<(), DataError> {
        let want = len.saturating_sub(out.len() as u64);
        (&mut self.decoder)
            .take(want)
            .read_to_end(out)
            .map_err(|e| DataError::Gzip {
                path: self.path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(())
    }
}

/// Decodes a whole gzip stream of one or more members, stopping with an error
/// once more than `limit` bytes come out (a gzip bomb is refused, not
/// decompressed).
///
/// # Errors
/// [`DataError::Gzip`] naming `path` for a corrupt or truncated stream,
/// [`DataError::TooLarge`] past the limit.
pub fn gunzip(bytes: &[u8], path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    GzStream::new(bytes, path).read_to(&mut out, limit + 1)?;
    if out.len() as u64 > limit {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            what: "the decompressed gzip stream",
            size: format!("more than {}", human_bytes(limit)),
            limit: human_bytes(limit),
        });
    }
    Ok(out)
}

/// Reads a file of the git-ignored model cache, or says which command fetches it.
///
/// # Errors
/// [`DataError::Missing`] naming `cargo xtask fetch-models`, or any [`read_file`] error.
pub fn read_cached(path: &Path, kind: FileKind) -> Result<Vec<u8>, DataError> {
    if !path.exists() {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: crate::FETCH_HINT,
        });
    }
    read_file(path, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("raella-files-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_regular_files_and_names_everything_else() {
        let d = tmp("kinds");
        let f = d.join("a.txt");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(read_text(&f, FileKind::Text).unwrap(), "hello");
        let e = read_file(&d, FileKind::Onnx).unwrap_err().to_string();
        assert!(e.contains("is a folder") && e.contains("ONNX model"), "{e}");
        let e = read_file(&d.join("none"), FileKind::Text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none"), "{e}");
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        let e = read_text(&f, FileKind::Text).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let d = tmp("fifo");
        let fifo = d.join("pipe.png");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let e = read_file(&fifo, FileKind::Image).unwrap_err().to_string();
            assert!(e.contains("named pipe (FIFO)"), "{e}");
        }
        let e = read_file(Path::new("/dev/zero"), FileKind::Toml)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("character device"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn gzip_multi_member_is_whole_and_bombs_stop_at_the_limit() {
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut e, data).unwrap();
            e.finish().unwrap()
        };
        let mut two = gz(b"first ");
        two.extend(gz(b"second"));
        let p = Path::new("x.gz");
        assert_eq!(gunzip(&two, p, 100).unwrap(), b"first second");
        let bomb = gz(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096);
        let e = gunzip(&bomb, p, 1000).unwrap_err().to_string();
        assert!(e.contains("x.gz") && e.contains("limit"), "{e}");
        let e = gunzip(&two[..two.len() - 3], p, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.gz") && e.contains("gzip"), "{e}");
    }
}
