//! Image-range shards within a point (`--images-shard J/M`) and their merge.
//!
//! A point (model x design x seed) evaluates its items in batches, batch `i`
//! with batch index `i` (its read-noise streams). Shard `J` of `M` evaluates
//! the contiguous batch range `[(J-1) B / M, J B / M)` of every selected point
//! (`B` the model's evaluation batches), with the same global batch indices,
//! so its runs are exactly the unsharded run's runs of those batches. It
//! writes, per model, the two references' runs of its batches, and per point
//! the design's runs: per batch the graph outputs and penultimate features
//! (little-endian `f32`, in `part/N.bin`) and the per-layer statistics
//! (`part/part.json`, integers and round-tripped `f64`s), with each layer's
//! fixed row fields. `merge` puts the batches of the `M` parts back in order,
//! adds the statistics batch after batch as the unsharded evaluation does,
//! and computes the summaries and rows with the unsharded run's own functions
//! (`summarise_references`, `point_row`): the result files are the same bytes.
//!
//! A part is never a result: it is written to `part/` (no `results.json`),
//! and never to or from the point cache (which holds whole points only).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use ndarray::{ArrayD, IxDyn};
use raella_data::Lee50;
use raella_data::files::{FileKind, open_file, read_text};
use raella_network::{BatchRun, CrossbarBackend, Evaluation, batch_items, eval_quant_batches};
use raella_onnx::{RunProfile, Tensor};
use raella_runtime::LayerStats;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::run::{
    LayerStatic, ModelFacts, ResultRow, SweepResults, Timing, check_labels, layer_statics,
    load_checked, point_row, progress_bar, reference_run, select_points, summarise_references,
};
use crate::spec::Spec;
use crate::{RunOptions, spec_hash};

/// The folder an image-range shard writes (a result slot of the output folder).
pub const PART_DIR: &str = "part";
const PART_JSON: &str = "part.json";
/// The format of `part/`; bump when its meaning changes.
const PART_VERSION: &str = "raella-sweep-part-v1";

/// Batch range `[start, end)` of image shard `j` of `m` over `batches` batches.
#[must_use]
pub fn part_range(j: usize, m: usize, batches: usize) -> (usize, usize) {
    ((j - 1) * batches / m, j * batches / m)
}

/// An `f32` array stored little-endian in `part/{file}.bin` from byte `offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob {
    file: usize,
    offset: u64,
    shape: Vec<usize>,
}

/// One batch's run: graph outputs (as `f32`), features, per-layer statistics
/// (every field, through their serde derives; `f64`s round-trip exactly in
/// JSON with `float_roundtrip`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BatchRecord {
    outputs: Vec<Blob>,
    features: Option<Blob>,
    stats: Vec<Option<LayerStats>>,
}

/// The Lee-50 documents and pairs a text model evaluates.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeeRecord {
    documents: Vec<String>,
    pairs: Vec<(usize, usize, f64)>,
}

/// A model's references on one image range.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModelPart {
    facts: ModelFacts,
    /// The model's evaluation batches and items in all.
    batches: usize,
    items: usize,
    /// This part's batches `[start, end)`, its first item and its labels.
    range: (usize, usize),
    first_item: usize,
    labels: Vec<usize>,
    lee50: Option<LeeRecord>,
    float: Vec<BatchRecord>,
    /// float32 weight-layer input vectors and digital MACs over this part.
    float_vectors: Vec<usize>,
    digital_macs: u64,
    int8: Vec<BatchRecord>,
}

/// A point's runs on one image range.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PointPart {
    model: String,
    arch: String,
    seed: u64,
    range: (usize, usize),
    layers: Vec<LayerStatic>,
    batches: Vec<BatchRecord>,
    /// Wall clock (informative): build, evaluation, and the evaluation's thread
    /// time in products, digital nodes and weight-layer glue.
    build_seconds: f64,
    eval_seconds: f64,
    products_seconds: f64,
    digital_seconds: f64,
    glue_seconds: f64,
}

/// `part/part.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartFile {
    format: String,
    spec: String,
    spec_path: PathBuf,
    spec_sha256: String,
    /// `(J, M)` of `--images-shard`, and `--shard`'s `(K, N)` if given.
    images_shard: (usize, usize),
    shard: Option<(usize, usize)>,
    models: Vec<ModelPart>,
    points: Vec<PointPart>,
}

/// What an image-range shard computed: `part.json` and its binary files.
#[derive(Debug)]
pub struct PartResults {
    file: PartFile,
    bins: Vec<Vec<u8>>,
}

impl PartResults {
    /// Points in the part.
    #[must_use]
    pub fn points(&self) -> usize {
        self.file.points.len()
    }
}

/// Appends arrays to one binary file.
struct BinWriter {
    file: usize,
    bytes: Vec<u8>,
}

impl BinWriter {
    fn put(&mut self, a: &ArrayD<f32>) -> Blob {
        let offset = self.bytes.len() as u64;
        self.bytes.reserve(a.len() * 4);
        for v in a.iter() {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        Blob {
            file: self.file,
            offset,
            shape: a.shape().to_vec(),
        }
    }

    fn batch(&mut self, outputs: &[Tensor], features: Option<&ArrayD<f32>>) -> BatchRecord {
        BatchRecord {
            outputs: outputs.iter().map(|t| self.put(&t.to_f32())).collect(),
            features: features.map(|f| self.put(f)),
            stats: vec![],
        }
    }
}

fn records(w: &mut BinWriter, ev: &Evaluation) -> Vec<BatchRecord> {
    ev.outputs
        .iter()
        .zip(&ev.features)
        .map(|(o, f)| w.batch(o, f.as_ref()))
        .collect()
}

/// Runs image range `images` = `(J, M)` of every point `opts.shard` selects
/// (all without): the references and each design on the J-th of M contiguous
/// ranges of each model's evaluation batches. Nothing is cached.
///
/// # Errors
/// As [`crate::run_with`]; and a model with fewer evaluation batches than `M`
/// (before any work).
pub fn run_images_part(
    spec: &Spec,
    opts: &RunOptions,
    images: (usize, usize),
    mut progress: impl FnMut(&str),
) -> anyhow::Result<PartResults> {
    let (j, parts) = images;
    ensure!(
        (1..=parts).contains(&j),
        "--images-shard {j}/{parts}: need 1 <= J <= M"
    );
    let (_, loaded) = load_checked(spec)?;
    for (m, ld) in spec.models.iter().zip(&loaded) {
        let b = ld.evaluation.len();
        ensure!(
            b >= parts,
            "--images-shard {j}/{parts}: model \"{}\" of {} evaluates {} {} in {b} batch(es) ({}), fewer than the {parts} image shards asked for; use at most {b}",
            m.name,
            spec.path.display(),
            ld.items,
            if ld.lee50.is_some() {
                "documents"
            } else {
                "images"
            },
            if ld.lee50.is_some() {
                "one document per batch".to_string()
            } else {
                format!("up to {} images per batch", raella_network::BATCH_ITEMS)
            }
        );
    }
    let (total_points, selected) = select_points(spec, opts.shard);
    progress(&format!(
        "{} of {total_points} points selected, images part {j}/{parts}",
        selected.len()
    ));
    let bar = progress_bar(selected.len(), opts.progress_bar);
    let mut file = PartFile {
        format: PART_VERSION.into(),
        spec: spec.name.clone(),
        spec_path: spec.path.clone(),
        spec_sha256: spec_hash(spec)?,
        images_shard: images,
        shard: opts.shard,
        models: vec![],
        points: vec![],
    };
    let mut bins: Vec<Vec<u8>> = Vec::new();
    for (mi, (m, ld)) in spec.models.iter().zip(loaded).enumerate() {
        let mine: Vec<(usize, usize)> = selected
            .iter()
            .filter(|p| p.0 == mi)
            .map(|p| (p.1, p.2))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let text = ld.lee50.is_some();
        let nb = ld.evaluation.len();
        let (a, b) = part_range(j, parts, nb);
        let first_item: usize = ld.evaluation[..a].iter().map(|x| batch_items(x)).sum();
        let part_items: usize = ld.evaluation[a..b].iter().map(|x| batch_items(x)).sum();
        let labels = if ld.labels.is_empty() {
            vec![]
        } else {
            ld.labels[first_item..first_item + part_items].to_vec()
        };
        progress(&format!(
            "{}: references on batches {a}..{b} of {nb} ({part_items} of {} items)",
            m.name, ld.items
        ));
        let r = reference_run(
            spec,
            m,
            ld.graph,
            &ld.calibration,
            &ld.aws_calibration,
            &ld.evaluation[a..b],
            a as u64,
            ld.output,
            text,
        )?;
        let classes = r
            .float
            .output_rows(r.facts.output)
            .with_context(|| format!("model \"{}\"", m.name))?
            .ncols();
        check_labels(&r.facts.model, &r.facts.onnx, &labels, first_item, classes)?;
        let mut w = BinWriter {
            file: bins.len(),
            bytes: vec![],
        };
        let float = records(&mut w, &r.float);
        let int8 = records(&mut w, &r.int8);
        bins.push(w.bytes);
        file.models.push(ModelPart {
            facts: r.facts.clone(),
            batches: nb,
            items: ld.items,
            range: (a, b),
            first_item,
            labels,
            lee50: ld.lee50.map(|l| LeeRecord {
                documents: l.documents,
                pairs: l.pairs,
            }),
            float,
            float_vectors: r.float.vectors.clone(),
            digital_macs: r.float.times.digital_macs,
            int8,
        });
        let batches = &ld.evaluation[a..b];
        let first_file = bins.len();
        let computed: Vec<anyhow::Result<(PointPart, Vec<u8>)>> = mine
            .par_iter()
            .enumerate()
            .map(|(i, &(ai, si))| {
                let (arch, seed) = (&spec.archs[ai], spec.seeds[si]);
                let t0 = std::time::Instant::now();
                let backend = CrossbarBackend::build(&r.model, &arch.config(), &r.captured, seed)?;
                let t1 = std::time::Instant::now();
                let runs = eval_quant_batches(&r.model, &backend, batches, a as u64)?;
                let (build_s, eval_s) = (
                    t1.duration_since(t0).as_secs_f64(),
                    t1.elapsed().as_secs_f64(),
                );
                let mut w = BinWriter {
                    file: first_file + i,
                    bytes: vec![],
                };
                let mut times = RunProfile::default();
                let recs = runs
                    .iter()
                    .map(|run| {
                        times += run.times;
                        let mut rec = w.batch(&run.outputs, run.features.as_ref());
                        rec.stats.clone_from(&run.stats);
                        rec
                    })
                    .collect();
                bar.inc(1);
                Ok((
                    PointPart {
                        model: m.name.clone(),
                        arch: arch.name.clone(),
                        seed,
                        range: (a, b),
                        layers: layer_statics(&r.model, &backend, arch),
                        batches: recs,
                        build_seconds: build_s,
                        eval_seconds: eval_s,
                        products_seconds: times.products.as_secs_f64(),
                        digital_seconds: times.digital.as_secs_f64(),
                        glue_seconds: times.layer_glue.as_secs_f64(),
                    },
                    w.bytes,
                ))
            })
            .collect();
        for c in computed {
            let (p, bytes) = c?;
            progress(&format!(
                "{} / {} / seed {}: batches {a}..{b} in {:.1} s",
                p.model, p.arch, p.seed, p.eval_seconds
            ));
            file.points.push(p);
            bins.push(bytes);
        }
    }
    bar.finish_and_clear();
    Ok(PartResults { file, bins })
}

/// Writes an image-range shard's part into `out/part/` (through the output
/// folder's staging, replacing what a previous sweep wrote there).
///
/// # Errors
/// As [`crate::write_output`].
pub fn write_part(_spec: &Spec, part: &PartResults, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = vec![(
        Path::new(PART_DIR).join(PART_JSON),
        (serde_json::to_string(&part.file)? + "\n").into_bytes(),
    )];
    for (i, b) in part.bins.iter().enumerate() {
        files.push((Path::new(PART_DIR).join(format!("{i}.bin")), b.clone()));
    }
    Ok(crate::output::write_output(out, &files)?)
}

/// Whether `dir` holds an image-range shard's part.
pub(crate) fn is_part(dir: &Path) -> bool {
    dir.join(PART_DIR).join(PART_JSON).exists()
}

/// Reads arrays from one shard folder's `part/N.bin` files.
struct BinReader {
    dir: PathBuf,
    open: BTreeMap<usize, (File, u64)>,
}

impl BinReader {
    fn get(&mut self, b: &Blob) -> anyhow::Result<ArrayD<f32>> {
        let path = self.dir.join(PART_DIR).join(format!("{}.bin", b.file));
        let (f, len) = match self.open.entry(b.file) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(open_file(&path, FileKind::Results)?)
            }
        };
        let n = b
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= raella_onnx::MAX_ELEMENTS)
            .with_context(|| format!("{}: an array of shape {:?}", path.display(), b.shape))?;
        let bytes = n as u64 * 4;
        ensure!(
            b.offset.checked_add(bytes).is_some_and(|e| e <= *len),
            "{}: {} bytes from offset {} lie past its {len} bytes (a truncated or foreign part)",
            path.display(),
            bytes,
            b.offset
        );
        f.seek(SeekFrom::Start(b.offset))
            .with_context(|| format!("reading {}", path.display()))?;
        let mut buf = vec![0u8; n * 4];
        f.read_exact(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: Vec<f32> = buf
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&b.shape), v).context("array shape")
    }

    fn batch(&mut self, r: &BatchRecord) -> anyhow::Result<BatchRun> {
        Ok(BatchRun {
            outputs: r
                .outputs
                .iter()
                .map(|b| Ok(Tensor::f32(self.get(b)?)))
                .collect::<anyhow::Result<_>>()?,
            stats: r.stats.clone(),
            features: r.features.as_ref().map(|b| self.get(b)).transpose()?,
            times: RunProfile::default(),
        })
    }
}

/// One shard folder's part.
struct Shard {
    dir: PathBuf,
    file: PartFile,
    reader: BinReader,
}

/// Merges image-range shards (every folder holds a `part/`) into the results
/// of the unsharded run, before costing: rows and model summaries in the
/// spec's order, and timings per point.
///
/// # Errors
/// A malformed part, parts of different specs or image-shard counts, a part
/// given twice, or a part or point missing.
pub(crate) fn merge_parts(
    dirs: &[PathBuf],
    presets: &Path,
) -> anyhow::Result<(Spec, SweepResults)> {
    let mut shards = Vec::new();
    for d in dirs {
        ensure!(
            is_part(d),
            "{}: holds no {PART_DIR}/{PART_JSON}, but {} does: merge image-range parts (--images-shard) apart from whole-point shards",
            d.display(),
            dirs.iter()
                .find(|x| is_part(x))
                .map_or_else(String::new, |x| x.display().to_string())
        );
        let p = d.join(PART_DIR).join(PART_JSON);
        let text = read_text(&p, FileKind::Results)?;
        let file: PartFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an image-range shard's part", p.display()))?;
        ensure!(
            file.format == PART_VERSION,
            "{}: part format `{}`, this merge reads `{PART_VERSION}` (rerun the shard with this version)",
            p.display(),
            file.format
        );
        shards.push(Shard {
            dir: d.clone(),
            reader: BinReader {
                dir: d.clone(),
                open: BTreeMap::new(),
            },
            file,
        });
    }
    let spec = crate::merge::common_spec(
        presets,
        shards.iter().map(|s| {
            (
                s.dir.as_path(),
                s.file.spec_path.as_path(),
                s.file.spec_sha256.as_str(),
            )
        }),
    )?;
    let (j0, parts) = shards[0].file.images_shard;
    for s in &shards {
        let (j, m) = s.file.images_shard;
        ensure!(
            m == parts,
            "{}: --images-shard {j}/{m}, but {} is {j0}/{parts}: parts of different image-shard counts do not merge",
            s.dir.display(),
            shards[0].dir.display()
        );
        ensure!(
            (1..=m).contains(&j),
            "{}: --images-shard {j}/{m} is not a part",
            s.dir.display()
        );
    }
    // Per model and part, the first shard holding its references; per point
    // and part, the one shard holding its runs.
    let mut model_parts: BTreeMap<(String, usize), (usize, usize)> = BTreeMap::new();
    let mut point_parts: BTreeMap<(String, String, u64, usize), (usize, usize)> = BTreeMap::new();
    for (si, s) in shards.iter().enumerate() {
        let j = s.file.images_shard.0;
        for (i, mp) in s.file.models.iter().enumerate() {
            let (a, b) = part_range(j, parts, mp.batches);
            ensure!(
                mp.range == (a, b) && mp.batches >= parts,
                "{}: model \"{}\" part {j}/{parts} covers batches {}..{} of {}, not {a}..{b}",
                s.dir.display(),
                mp.facts.model,
                mp.range.0,
                mp.range.1,
                mp.batches
            );
            model_parts
                .entry((mp.facts.model.clone(), j))
                .or_insert((si, i));
        }
        for (i, pp) in s.file.points.iter().enumerate() {
            let key = (pp.model.clone(), pp.arch.clone(), pp.seed, j);
            if let Some(&(other, _)) = point_parts.get(&key) {
                bail!(
                    "point {} / {} / seed {}: images part {j}/{parts} appears in two shards ({} and {})",
                    pp.model,
                    pp.arch,
                    pp.seed,
                    shards[other].dir.display(),
                    s.dir.display()
                );
            }
            point_parts.insert(key, (si, i));
        }
    }
    for (m, a, seed, _) in point_parts.keys() {
        ensure!(
            spec.models.iter().any(|x| &x.name == m)
                && spec.archs.iter().any(|x| &x.name == a)
                && spec.seeds.contains(seed),
            "point {m} / {a} / seed {seed} is not a point of {}",
            spec.path.display()
        );
    }
    let mut out = SweepResults::default();
    for m in &spec.models {
        let mut float_runs = Vec::new();
        let mut int8_runs = Vec::new();
        let mut labels = Vec::new();
        let mut vectors: Vec<usize> = Vec::new();
        let mut digital_macs = 0u64;
        let mut first: Option<ModelPart> = None;
        for j in 1..=parts {
            let &(si, i) = model_parts.get(&(m.name.clone(), j)).with_context(|| {
                format!(
                    "model \"{}\": images part {j}/{parts} is in none of the shard folders; a shard is missing",
                    m.name
                )
            })?;
            let mp = shards[si].file.models[i].clone();
            if let Some(f) = &first {
                ensure!(
                    f.facts == mp.facts && f.batches == mp.batches && f.items == mp.items,
                    "model \"{}\": part {j}/{parts} in {} differs from part 1 in its model, calibration or data (shards of different code or data?)",
                    m.name,
                    shards[si].dir.display()
                );
            }
            let reader = &mut shards[si].reader;
            for r in &mp.float {
                float_runs.push(reader.batch(r)?);
            }
            for r in &mp.int8 {
                int8_runs.push(reader.batch(r)?);
            }
            labels.extend_from_slice(&mp.labels);
            if vectors.is_empty() {
                vectors = vec![0; mp.float_vectors.len()];
            }
            for (a, v) in vectors.iter_mut().zip(&mp.float_vectors) {
                *a += v;
            }
            digital_macs += mp.digital_macs;
            if first.is_none() {
                first = Some(mp);
            }
        }
        let first = first.context("no parts")?;
        let facts = first.facts.clone();
        let n_layers = facts.layer_macs.len();
        let (outputs, features): (Vec<_>, Vec<_>) = float_runs
            .into_iter()
            .map(|r| (r.outputs, r.features))
            .unzip();
        let float = Evaluation {
            outputs,
            layer_stats: vec![None; n_layers],
            features,
            vectors,
            times: RunProfile {
                digital_macs,
                ..RunProfile::default()
            },
        };
        let int8 = Evaluation::from_batch_runs(n_layers, int8_runs);
        let lee50 = first.lee50.map(|l| Lee50 {
            documents: l.documents,
            pairs: l.pairs,
        });
        let (summary, refs) =
            summarise_references(&facts, first.items, labels, lee50, &float, &int8)?;
        out.models.push(summary);
        for a in &spec.archs {
            for &seed in &spec.seeds {
                let mut runs = Vec::new();
                let mut layers: Option<Vec<LayerStatic>> = None;
                let (mut build, mut eval, mut products, mut digital, mut glue) =
                    (0f64, 0f64, 0f64, 0f64, 0f64);
                for j in 1..=parts {
                    let &(si, i) = point_parts
                        .get(&(m.name.clone(), a.name.clone(), seed, j))
                        .with_context(|| {
                            format!(
                                "point {} / {} / seed {seed}: images part {j}/{parts} is in none of the shard folders; a shard is missing",
                                m.name, a.name
                            )
                        })?;
                    let pp = shards[si].file.points[i].clone();
                    ensure!(
                        pp.range == part_range(j, parts, first.batches),
                        "{}: point {} / {} / seed {seed} part {j}/{parts} covers batches {}..{}, not those of its model",
                        shards[si].dir.display(),
                        m.name,
                        a.name,
                        pp.range.0,
                        pp.range.1
                    );
                    match &layers {
                        Some(l) => ensure!(
                            *l == pp.layers,
                            "point {} / {} / seed {seed}: part {j}/{parts} in {} built the design differently from part 1",
                            m.name,
                            a.name,
                            shards[si].dir.display()
                        ),
                        None => layers = Some(pp.layers.clone()),
                    }
                    for r in &pp.batches {
                        runs.push(shards[si].reader.batch(r)?);
                    }
                    build = build.max(pp.build_seconds);
                    eval += pp.eval_seconds;
                    products += pp.products_seconds;
                    digital += pp.digital_seconds;
                    glue += pp.glue_seconds;
                }
                let layers = layers.unwrap_or_default();
                let ev = Evaluation::from_batch_runs(layers.len(), runs);
                let row: ResultRow = point_row(&refs, &a.name, seed, &layers, &ev)?;
                let total = (products + digital + glue).max(1e-12);
                #[allow(clippy::cast_precision_loss)]
                out.timings.push(Timing {
                    model: m.name.clone(),
                    arch: a.name.clone(),
                    seed,
                    build_seconds: build,
                    images_per_second: row.images as f64 / eval.max(1e-9),
                    crossbar_share: Some(products / total),
                    digital_share: Some(digital / total),
                    glue_share: Some(glue / total),
                });
                out.rows.push(row);
            }
        }
    }
    Ok((spec, out))
}
