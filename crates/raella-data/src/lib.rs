//! Data sources of the RAELLA simulator. Every file a user points the
//! simulator at is read through [`files`] (regular files only, a size limit per
//! kind), and every size read from a file is checked before it is allocated.
//!
//! * [`IdxDataset`]: MNIST-style IDX images and labels, optionally gzipped.
//! * [`ImageFolder`]: folders of PNG/JPEG photographs, resized to a model's
//!   input; unlabelled, or labelled by sub-folder (the ImageFolder layout) or a
//!   labels CSV.
//! * [`Lee50`]: the Lee-50 document-similarity benchmark, Pearson and Spearman.
//! * [`TextEncoder`]: a `tokenizer.json` that turns text into the
//!   `input_ids` / `attention_mask` / `token_type_ids` a transformer export takes.

mod error;
pub mod files;
mod idx;
mod images;
pub mod lee50;
mod text;

pub use error::DataError;
pub use idx::{IdxDataset, decode_idx, parse_idx};
pub use images::{
    ImageFolder, LabelledImages, MAX_IMAGE_ALLOC, MAX_IMAGE_SIDE, decode_image, image_files,
};
pub use lee50::{Correlations, Lee50};
pub use text::{Encoded, MAX_TOKENS_LIMIT, TextEncoder};

/// What to run when a cached model or data file is missing.
pub const FETCH_HINT: &str =
    "run `cargo xtask fetch-models` to fetch the real-scale models and data";
