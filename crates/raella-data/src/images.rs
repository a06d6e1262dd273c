//! Folders of photographs (PNG, JPEG) as model inputs: decoded and resized with
//! the `image` crate (bilinear), as unsigned bytes in CHW order. Unlabelled:
//! fidelity is measured against the float32 and 8-bit references.

use std::path::Path;

use image::imageops::FilterType;
use ndarray::Array2;

use crate::DataError;
use crate::files::FileKind;

/// Images of a folder: `images x (channels * height * width)` bytes, CHW, and the file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// Pixels, one image per row, CHW.
    pub images: Array2<u8>,
    /// File names, in row order (sorted).
    pub names: Vec<String>,
}

fn err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Largest photograph decoded, per side, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 20_000;
/// Largest decoded photograph, in bytes (before resizing).
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;

/// The `*.png`, `*.jpg`, `*.jpeg` entries of `dir` (case-insensitive), sorted by name.
///
/// # Errors
/// An unreadable folder.
pub fn image_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let p = e
            .map_err(|source| DataError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes one PNG or JPEG image from its bytes (format from the content; at
/// most [`MAX_IMAGE_SIDE`] pixels a side and [`MAX_IMAGE_ALLOC`] bytes decoded)
/// to RGB (`channels = 3`) or luma (`channels = 1`) bytes, resized (bilinear)
/// to `height x width`, in CHW order. `path` is only used in messages.
///
/// # Errors
/// Undecodable or oversized images, `channels` not 1 or 3, or a zero or
/// oversized target size.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, DataError> {
    if channels != 1 && channels != 3 {
        return Err(err(
            path,
            format!("the model takes {channels} channels; images give 1 or 3"),
        ));
    }
    let side = |n: usize, what: &str| {
        u32::try_from(n)
            .ok()
            .filter(|&v| (1..=MAX_IMAGE_SIDE).contains(&v))
            .ok_or_else(|| {
                err(
                    path,
                    format!("the model's input {what} {n} is outside 1..={MAX_IMAGE_SIDE}"),
                )
            })
    };
    let (w32, h32) = (side(width, "width")?, side(height, "height")?);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(path, format!("cannot decode: {e}")))?;
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| err(path, format!("cannot decode: {e}")))?;
    let img = img.resize_exact(w32, h32, FilterType::Triangle);
    let mut data = Vec::with_capacity(channels * height * width);
    if channels == 3 {
        let rgb = img.to_rgb8();
        for c in 0..3 {
            data.extend(rgb.pixels().map(|p| p[c]));
        }
    } else {
        data.extend(img.to_luma8().pixels().map(|p| p[0]));
    }
    Ok(data)
}

impl ImageFolder {
    /// Loads every `*.png`, `*.jpg`, `*.jpeg` of `dir` (sorted by name), converted
    /// to RGB (`channels = 3`) or luma (`channels = 1`) and resized to `height x width`.
    /// Each is read as a regular file of at most [`FileKind::Image`]'s limit and
    /// decoded by [`decode_image`]; all of them together may hold at most
    /// [`FileKind::Idx`]'s limit (as an IDX data set).
    ///
    /// # Errors
    /// An unreadable folder or file, an entry that is not a regular file (a
    /// FIFO, a folder named like an image), an undecodable image, no images,
    /// `channels` not 1 or 3, or too many pixels.
    pub fn load(
        dir: &Path,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, DataError> {
        let files = image_files(dir)?;
        if files.is_empty() {
            return Err(err(dir, "no PNG or JPEG images in this folder"));
        }
        let per = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| err(dir, "the model's input size overflows"))?;
        let total = per
            .checked_mul(files.len())
            .filter(|&t| t as u64 <= FileKind::Idx.limit())
            .ok_or_else(|| {
                err(
                    dir,
                    format!(
                        "{} images of {channels} x {height} x {width} pixels are past the {} limit of a data set",
                        files.len(),
                        crate::files::human_bytes(FileKind::Idx.limit())
                    ),
                )
            })?;
        let mut data = Vec::with_capacity(total);
        let mut names = Vec::with_capacity(files.len());
        for f in &files {
            let bytes = crate::files::read_file(f, FileKind::Image)?;
            data.extend(decode_image(&bytes, f, channels, height, width)?);
            names.push(
                f.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            );
        }
        let images = Array2::from_shape_vec((files.len(), per), data)
            .map_err(|e| err(dir, format!("images do not form a matrix: {e}")))?;
        Ok(Self { images, names })
    }
}

/// Labelled photographs: the ImageFolder layout (one sub-folder per class,
/// classes numbered in the sorted order of their folder names, as torchvision
/// numbers them) or a flat folder with a labels CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImages {
    /// Pixels, one image per row, CHW.
    pub images: Array2<u8>,
    /// The class of each image.
    pub labels: Vec<usize>,
    /// Class names (sub-folder names), or the CSV's labels as written.
    pub classes: Vec<String>,
    /// Image paths relative to the folder, in row order.
    pub names: Vec<String>,
}

impl LabelledImages {
    /// Loads `dir`'s images labelled by sub-folder (when `labels_csv` is `None`)
    /// or by `labels_csv` (lines `file,label`, `label` a class index; a header
    /// line `file,label` is allowed), resized like [`ImageFolder::load`].
    ///
    /// # Errors
    /// As [`ImageFolder::load`], plus a class folder without images, a CSV line
    /// that is malformed or names a missing image, or images the CSV does not label.
    pub fn load(
        dir: &Path,
        labels_csv: Option<&Path>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, DataError> {
        let mut files: Vec<(std::path::PathBuf, usize)> = Vec::new();
        let mut classes = Vec::new();
        match labels_csv {
            None => {
                let mut subdirs: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                    .map_err(|source| DataError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir()))
                    .collect();
                subdirs.sort();
                if subdirs.is_empty() {
                    return Err(err(
                        dir,
                        "no class sub-folders (the ImageFolder layout: one folder of images per class), and no labels CSV",
                    ));
                }
                for (k, sd) in subdirs.iter().enumerate() {
                    let imgs = image_files(sd)?;
                    if imgs.is_empty() {
                        return Err(err(sd, "a class folder without PNG or JPEG images"));
                    }
                    classes.push(
                        sd.file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    );
                    files.extend(imgs.into_iter().map(|f| (f, k)));
                }
            }
            Some(csv) => {
                let text = crate::files::read_text(csv, FileKind::Text)?;
                let mut seen = std::collections::BTreeSet::new();
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || (i == 0 && line.eq_ignore_ascii_case("file,label")) {
                        continue;
                    }
                    let bad = |reason: String| DataError::DataLine {
                        path: csv.to_path_buf(),
                        line: i + 1,
                        reason,
                    };
                    let (f, l) = line
                        .rsplit_once(',')
                        .ok_or_else(|| bad(format!("`{line}`: expected `file,label`")))?;
                    let label: usize = l
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("label `{}` is not a class index", l.trim())))?;
                    let f = f.trim();
                    if f.is_empty()
                        || std::path::Path::new(f)
                            .components()
                            .any(|c| !matches!(c, std::path::Component::Normal(_)))
                    {
                        return Err(bad(format!("file `{f}` must be a name inside the folder")));
                    }
                    if !seen.insert(f.to_string()) {
                        return Err(bad(format!("file `{f}` is labelled twice")));
                    }
                    files.push((dir.join(f), label));
                }
                if files.is_empty() {
                    return Err(err(csv, "labels no image"));
                }
                let max = files.iter().map(|f| f.1).max().unwrap_or(0);
                classes = (0..=max).map(|k| k.to_string()).collect();
            }
        }
        let per = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| err(dir, "the model's input size overflows"))?;
        per.checked_mul(files.len())
            .filter(|&t| t as u64 <= FileKind::Idx.limit())
            .ok_or_else(|| {
                err(
                    dir,
                    format!("{} images are past the limit of a data set", files.len()),
                )
            })?;
        let mut data = Vec::with_capacity(per * files.len());
        let mut names = Vec::with_capacity(files.len());
        let mut labels = Vec::with_capacity(files.len());
        for (f, l) in &files {
            let bytes = crate::files::read_file(f, FileKind::Image)?;
            data.extend(decode_image(&bytes, f, channels, height, width)?);
            names.push(
                f.strip_prefix(dir)
                    .unwrap_or(f)
                    .to_string_lossy()
                    .into_owned(),
            );
            labels.push(*l);
        }
        let images = Array2::from_shape_vec((files.len(), per), data)
            .map_err(|e| err(dir, format!("images do not form a matrix: {e}")))?;
        Ok(Self {
            images,
            labels,
            classes,
            names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_folders_and_csv() {
        let dir = std::env::temp_dir().join(format!("raella-labelled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (class, v) in [("cat", 10u8), ("dog", 200)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for k in 0..2 {
                image::RgbImage::from_pixel(2, 2, image::Rgb([v + k, v, v]))
                    .save(dir.join(class).join(format!("{k}.png")))
                    .unwrap();
            }
        }
        let l = LabelledImages::load(&dir, None, 3, 2, 2).unwrap();
        assert_eq!(l.classes, vec!["cat", "dog"]);
        assert_eq!(l.labels, vec![0, 0, 1, 1]);
        assert_eq!(l.images.dim(), (4, 12));
        assert_eq!(l.images[[3, 0]], 201);
        // A labels CSV over the same files, relative to the folder.
        let csv = dir.join("labels.csv");
        std::fs::write(&csv, "file,label\ncat/1.png,7\ndog/0.png,3\n").unwrap();
        let l = LabelledImages::load(&dir, Some(&csv), 3, 2, 2).unwrap();
        assert_eq!(l.labels, vec![7, 3]);
        assert_eq!(l.names, vec!["cat/1.png", "dog/0.png"]);
        std::fs::write(&csv, "../outside.png,1\n").unwrap();
        let e = LabelledImages::load(&dir, Some(&csv), 3, 2, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("labels.csv:1") && e.contains("inside the folder"),
            "{e}"
        );
        std::fs::write(&csv, "cat/0.png,x\n").unwrap();
        let e = LabelledImages::load(&dir, Some(&csv), 3, 2, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loads_resizes_and_orders_channels() {
        let dir = std::env::temp_dir().join(format!("raella-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 4x2 image: left half red, right half blue.
        let img = image::RgbImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        img.save(dir.join("b.png")).unwrap();
        image::RgbImage::from_pixel(3, 3, image::Rgb([10, 20, 30]))
            .save(dir.join("a.png"))
            .unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let f = ImageFolder::load(&dir, 3, 2, 4).unwrap();
        assert_eq!(f.names, vec!["a.png", "b.png"]);
        assert_eq!(f.images.dim(), (2, 24));
        // CHW: the red plane of b.png is 255 on the left, 0 on the right.
        assert_eq!(
            f.images.row(1).iter().take(8).copied().collect::<Vec<_>>(),
            vec![255, 255, 0, 0, 255, 255, 0, 0]
        );
        assert!(f.images.row(0).iter().take(8).all(|&v| v == 10));
        let grey = ImageFolder::load(&dir, 1, 2, 2).unwrap();
        assert_eq!(grey.images.dim(), (2, 4));
        std::fs::write(dir.join("c.jpg"), b"not a jpeg").unwrap();
        let e = ImageFolder::load(&dir, 3, 2, 2).unwrap_err().to_string();
        assert!(e.contains("c.jpg") && e.contains("decode"), "{e}");
        std::fs::remove_file(dir.join("c.jpg")).unwrap();
        std::fs::create_dir(dir.join("d.JPEG")).unwrap();
        let e = ImageFolder::load(&dir, 3, 2, 2).unwrap_err().to_string();
        assert!(e.contains("d.JPEG") && e.contains("is a folder"), "{e}");
        std::fs::remove_dir(dir.join("d.JPEG")).unwrap();
        #[cfg(unix)]
        if std::process::Command::new("mkfifo")
            .arg(dir.join("e.png"))
            .status()
            .is_ok_and(|s| s.success())
        {
            let e = ImageFolder::load(&dir, 3, 2, 2).unwrap_err().to_string();
            assert!(e.contains("e.png") && e.contains("FIFO"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
