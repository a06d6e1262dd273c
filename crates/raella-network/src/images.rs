//! Folders of photographs (PNG, JPEG) as model inputs: decoded and resized with
//! the `image` crate (bilinear), as unsigned bytes in CHW order. Unlabelled:
//! fidelity is measured against the float32 and 8-bit references.

use std::path::Path;

use image::imageops::FilterType;
use ndarray::Array2;

use crate::NetworkError;

/// Images of a folder: `images x (channels * height * width)` bytes, CHW, and the file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// Pixels, one image per row, CHW.
    pub images: Array2<u8>,
    /// File names, in row order (sorted).
    pub names: Vec<String>,
}

fn err(path: &Path, reason: impl Into<String>) -> NetworkError {
    NetworkError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ImageFolder {
    /// Loads every `*.png`, `*.jpg`, `*.jpeg` of `dir` (sorted by name), converted
    /// to RGB (`channels = 3`) or luma (`channels = 1`) and resized to `height x width`.
    ///
    /// # Errors
    /// An unreadable folder or file, an undecodable image, no images, or `channels` not 1 or 3.
    pub fn load(
        dir: &Path,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, NetworkError> {
        if channels != 1 && channels != 3 {
            return Err(err(
                dir,
                format!("the model takes {channels} channels; images give 1 or 3"),
            ));
        }
        let (w32, h32) = (
            u32::try_from(width).map_err(|_| err(dir, "width too large"))?,
            u32::try_from(height).map_err(|_| err(dir, "height too large"))?,
        );
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| NetworkError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(err(dir, "no PNG or JPEG images in this folder"));
        }
        let per = channels * height * width;
        let mut data = Vec::with_capacity(files.len() * per);
        let mut names = Vec::with_capacity(files.len());
        for f in &files {
            let img = image::open(f).map_err(|e| err(f, format!("cannot decode: {e}")))?;
            let img = img.resize_exact(w32, h32, FilterType::Triangle);
            if channels == 3 {
                let rgb = img.to_rgb8();
                for c in 0..3 {
                    data.extend(rgb.pixels().map(|p| p[c]));
                }
            } else {
                data.extend(img.to_luma8().pixels().map(|p| p[0]));
            }
            names.push(
                f.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            );
        }
        let images = Array2::from_shape_vec((files.len(), per), data).expect("length");
        Ok(Self { images, names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
