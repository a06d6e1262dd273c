//! Merging the outputs of `--shard K/N` runs into the result set an unsharded
//! run writes: rows in the spec's canonical order (model, design, seed), the
//! cost model run on the merged rows. Folders of `--images-shard J/M` runs
//! (a `part/` each) are merged by `parts::merge_parts` first.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use raella_data::files::{FileKind, read_text};

use crate::cost::{CostModel, cost_sweep};
use crate::run::{ModelSummary, ResultRow, SweepResults};
use crate::spec::Spec;

#[derive(Deserialize)]
struct ShardJson {
    spec_path: PathBuf,
    spec_sha256: String,
    models: Vec<ModelSummary>,
    rows: Vec<ResultRow>,
}

/// SHA-256 of the spec file's bytes (shards of different specs do not merge).
///
/// # Errors
/// The spec file cannot be read.
pub fn spec_hash(spec: &Spec) -> anyhow::Result<String> {
    let bytes = raella_data::files::read_file(&spec.path, FileKind::Toml)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The spec every shard folder was produced from, loaded from the first
/// one's path: each `(folder, spec path, spec hash)` must hash to the bytes
/// that spec has on disk now (the path may be written differently).
///
/// # Errors
/// The spec cannot be loaded, or a shard was produced from other bytes: from
/// another spec file, or from this one before it changed.
pub(crate) fn common_spec<'a>(
    presets: &Path,
    shards: impl IntoIterator<Item = (&'a Path, &'a Path, &'a str)>,
) -> anyhow::Result<Spec> {
    let mut shards = shards.into_iter().peekable();
    let first = shards.peek().context("no shard folders")?.1;
    let spec = Spec::load(first, presets)?;
    let want = spec_hash(&spec)?;
    for (dir, path, hash) in shards {
        ensure!(
            hash == want || path != first,
            "{}: produced by a different version of {} than the one on disk now",
            dir.display(),
            spec.path.display()
        );
        ensure!(
            hash == want,
            "{}: produced from {}, not {} as the first shard: shards of different specs do not merge",
            dir.display(),
            path.display(),
            first.display()
        );
    }
    Ok(spec)
}

/// Merges shard output folders.
///
/// # Errors
/// Missing or malformed shard files, shards of different specs, a point present
/// twice, or a point missing.
pub fn merge(dirs: &[PathBuf], presets: &Path) -> anyhow::Result<(Spec, SweepResults)> {
    ensure!(!dirs.is_empty(), "merge needs at least one shard folder");
    if dirs.iter().any(|d| crate::parts::is_part(d)) {
        let (spec, mut out) = crate::parts::merge_parts(dirs, presets)?;
        cost(&spec, &mut out)?;
        return Ok((spec, out));
    }
    let mut shards = Vec::new();
    for d in dirs {
        let p = d.join("results.json");
        let text = read_text(&p, FileKind::Results)?;
        let j: ShardJson = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a sweep's results.json", p.display()))?;
        shards.push((d.clone(), j));
    }
    let spec = common_spec(
        presets,
        shards
            .iter()
            .map(|(d, j)| (d.as_path(), j.spec_path.as_path(), j.spec_sha256.as_str())),
    )?;
    let mut out = SweepResults::default();
    for (d, j) in &shards {
        for m in &j.models {
            if !out.models.iter().any(|x| x.model == m.model) {
                out.models.push(m.clone());
            }
        }
        out.rows.extend(j.rows.iter().cloned());
        // Timings are informative: an unreadable or malformed file adds none.
        let t = d.join("timings.csv");
        if let Ok(text) = read_text(&t, FileKind::Results) {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            for rec in r.records().filter_map(Result::ok) {
                let f: Vec<&str> = rec.iter().collect();
                if let [m, a, s, b, ips, rest @ ..] = &f[..] {
                    let share = |i: usize| rest.get(i).and_then(|v| v.parse().ok());
                    out.timings.push(crate::run::Timing {
                        model: (*m).into(),
                        arch: (*a).into(),
                        seed: s.parse().unwrap_or(0),
                        build_seconds: b.parse().unwrap_or(0.0),
                        images_per_second: ips.parse().unwrap_or(0.0),
                        crossbar_share: share(0),
                        digital_share: share(1),
                        glue_share: share(2),
                    });
                }
            }
        }
    }
    let index = |r: &ResultRow| -> anyhow::Result<(usize, usize, usize)> {
        Ok((
            spec.models
                .iter()
                .position(|m| m.name == r.model)
                .with_context(|| format!("row of unknown model {}", r.model))?,
            spec.archs
                .iter()
                .position(|a| a.name == r.arch)
                .with_context(|| format!("row of unknown design {}", r.arch))?,
            spec.seeds
                .iter()
                .position(|&s| s == r.seed)
                .with_context(|| format!("row of unknown seed {}", r.seed))?,
        ))
    };
    let mut keyed = out
        .rows
        .drain(..)
        .map(|r| Ok((index(&r)?, r)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    keyed.sort_by_key(|(k, _)| *k);
    for w in keyed.windows(2) {
        if w[0].0 == w[1].0 {
            bail!(
                "point {} / {} / seed {} appears in two shards",
                w[0].1.model,
                w[0].1.arch,
                w[0].1.seed
            );
        }
    }
    let expected = spec.models.len() * spec.archs.len() * spec.seeds.len();
    ensure!(
        keyed.len() == expected,
        "the shards hold {} of the spec's {expected} points; a shard is missing",
        keyed.len()
    );
    out.rows = keyed.into_iter().map(|(_, r)| r).collect();
    out.models
        .sort_by_key(|m| spec.models.iter().position(|x| x.name == m.model));
    cost(&spec, &mut out)?;
    Ok((spec, out))
}

/// The cost model on merged rows, as an unsharded run costs its rows.
fn cost(spec: &Spec, out: &mut SweepResults) -> anyhow::Result<()> {
    if let Some(files) = &spec.cost {
        let cm = CostModel::load(files)?;
        cm.check(spec)?;
        (out.energy, out.not_costed) = cost_sweep(spec, &cm, &out.rows, &out.models)?;
        out.calibrated_on = cm.paper.as_ref().map(|p| p.calibrate_on.clone());
    }
    Ok(())
}
