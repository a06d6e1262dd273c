//! The Lee-50 document-similarity benchmark (Lee, Pincombe and Welsh, 2005, as
//! shipped in gensim's test data) and the statistics used to score sentence
//! embeddings: Pearson and Spearman correlation of embedding cosine against
//! the mean human ratings of the 1,225 document pairs `i < j`, and cosine
//! agreement with a reference set of embeddings.

use std::path::Path;

use ndarray::{ArrayView1, ArrayView2};

use crate::DataError;
use crate::files::FileKind;
use crate::files::read_cached;

/// The 50 documents and the human similarity of each pair.
#[derive(Debug, Clone)]
pub struct Lee50 {
    /// The documents, in file order.
    pub documents: Vec<String>,
    /// `(i, j, mean human rating in [0, 1])` for every `i < j`.
    pub pairs: Vec<(usize, usize, f64)>,
}

/// Correlations of embedding cosine with the human ratings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correlations {
    /// Pearson's r.
    pub pearson: f64,
    /// Spearman's rho (Pearson of average ranks).
    pub spearman: f64,
}

impl Lee50 {
    /// Reads `dir/lee.cor` (one document per line; UTF-8, or Latin-1 for a
    /// line that is not UTF-8: gensim's copy has one Latin-1 pound sign) and
    /// `dir/similarities0-1.txt` (an `n x n` whitespace-separated matrix whose
    /// upper triangle holds the ratings).
    ///
    /// # Errors
    /// A missing file, an empty document, a value that is not a number in
    /// [0, 1], or a matrix that is not `documents x documents`; each names the
    /// file and line.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let cor = dir.join("lee.cor");
        let sims = dir.join("similarities0-1.txt");
        let docs = read_cached(&cor, FileKind::Text)?;
        let matrix = read_cached(&sims, FileKind::Text)?;
        Self::parse(&docs, &matrix, &cor, &sims)
    }

    /// As [`load`](Self::load), from the two files' bytes (`cor` and `sims`
    /// name them in errors).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn parse(docs: &[u8], matrix: &[u8], cor: &Path, sims: &Path) -> Result<Self, DataError> {
        let line_err = |path: &Path, line: usize, reason: String| DataError::DataLine {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut lines: Vec<&[u8]> = docs.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut documents = Vec::with_capacity(lines.len());
        for (i, raw) in lines.iter().enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = match std::str::from_utf8(raw) {
                Ok(s) => s.to_string(),
                Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
            };
            if text.trim().is_empty() {
                return Err(line_err(cor, i + 1, "empty document".into()));
            }
            documents.push(text);
        }
        let n = documents.len();
        if n < 2 {
            return Err(line_err(
                cor,
                n + 1,
                format!("{n} documents; need at least 2"),
            ));
        }
        let text = String::from_utf8_lossy(matrix);
        let rows: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        if rows.len() != n {
            return Err(line_err(
                sims,
                rows.len() + 1,
                format!("{} matrix rows for {n} documents", rows.len()),
            ));
        }
        // Grown as rows check out: sized by the file's values, never by its
        // line count alone (a million short lines must not ask for 10^12 pairs).
        let mut pairs = Vec::new();
        for (i, &(lineno, line)) in rows.iter().enumerate() {
            let vals: Vec<&str> = line.split_whitespace().collect();
            if vals.len() != n {
                return Err(line_err(
                    sims,
                    lineno + 1,
                    format!("{} values, expected {n}", vals.len()),
                ));
            }
            for (j, v) in vals.iter().enumerate().skip(i + 1) {
                let x: f64 = v.parse().map_err(|_| {
                    line_err(
                        sims,
                        lineno + 1,
                        format!("column {}: `{v}` is not a number", j + 1),
                    )
                })?;
                if !(0.0..=1.0).contains(&x) {
                    return Err(line_err(
                        sims,
                        lineno + 1,
                        format!("column {}: {x} is outside [0, 1]", j + 1),
                    ));
                }
                pairs.push((i, j, x));
            }
        }
        Ok(Self { documents, pairs })
    }

    /// Pearson and Spearman of the embeddings' cosines (`documents x dim`)
    /// against the human ratings.
    ///
    /// # Errors
    /// Embeddings that are not one row per document, or constant cosines.
    pub fn correlations(&self, embeddings: ArrayView2<'_, f32>) -> Result<Correlations, DataError> {
        if embeddings.nrows() != self.documents.len() {
            return Err(DataError::BadInput(format!(
                "{} embeddings for {} documents",
                embeddings.nrows(),
                self.documents.len()
            )));
        }
        let cos: Vec<f64> = self
            .pairs
            .iter()
            .map(|&(i, j, _)| cosine(embeddings.row(i), embeddings.row(j)))
            .collect();
        let gold: Vec<f64> = self.pairs.iter().map(|p| p.2).collect();
        let undefined =
            || DataError::BadInput("a correlation is undefined (constant values)".into());
        Ok(Correlations {
            pearson: pearson(&cos, &gold).ok_or_else(undefined)?,
            spearman: spearman(&cos, &gold).ok_or_else(undefined)?,
        })
    }
}

fn cosine(a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f64 {
    let a: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    cosine_f64(&a, &b)
}

fn cosine_f64(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Cosine similarity of each row of `a` with the same row of `b` (0 for a zero row).
///
/// # Errors
/// Different shapes.
pub fn row_cosines(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Result<Vec<f64>, DataError> {
    if a.dim() != b.dim() {
        return Err(DataError::BadInput(format!(
            "embeddings {:?} and reference {:?} differ in shape",
            a.dim(),
            b.dim()
        )));
    }
    Ok(a.rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| cosine(x, y))
        .collect())
}

/// Pearson's r; `None` if the lengths differ, there are fewer than 2 values,
/// or either side is constant.
#[must_use]
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// 1-based ranks, ties getting the average of the ranks they span.
#[must_use]
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rho: Pearson of the average ranks (ties handled); `None` as for
/// [`pearson`].
#[must_use]
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}
