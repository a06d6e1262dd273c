//! Image-range shards within a point (`--images-shard J/M`): the parts of an
//! image model (three evaluation batches, read noise, two seeds, with point
//! shards too) and of a text model (one document per batch) merge to the
//! unsharded run's result files byte for byte; missing, duplicated and
//! mismatched parts are errors naming the point, part or folder.

use std::path::{Path, PathBuf};

use raella_sweep::{
    RunOptions, Spec, merge, run, run_images_part, run_with, write_part, write_results,
};

mod common;
use common::{presets, root, tmp};

/// Every file under `d` but `timings.csv` (wall clock), relative, with its bytes.
fn files(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else if e.file_name().unwrap() != "timings.csv" {
                out.push((
                    e.strip_prefix(d).unwrap().to_path_buf(),
                    std::fs::read(&e).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Runs every `(point shard, image shard)` of `spec` into `base/pK-iJ`.
fn parts(spec: &Spec, base: &Path, point_shards: usize, image_shards: usize) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for k in 1..=point_shards {
        for j in 1..=image_shards {
            let d = base.join(format!("p{k}-i{j}"));
            let opts = RunOptions {
                shard: (point_shards > 1).then_some((k, point_shards)),
                ..RunOptions::default()
            };
            let part = run_images_part(spec, &opts, (j, image_shards), |_| {}).unwrap();
            write_part(spec, &part, &d).unwrap();
            assert!(!d.join("results.csv").exists(), "a part is not a result");
            dirs.push(d);
        }
    }
    dirs
}

#[test]
fn image_parts_merge_to_the_unsharded_result_byte_for_byte() {
    let spec = Spec::load(
        &root().join("fixtures/sweeps/smoke-images.toml"),
        &presets(),
    )
    .unwrap();
    let base = tmp("images");
    let full = base.join("full");
    write_results(&spec, &run(&spec, |_| {}).unwrap(), &full).unwrap();
    let want = files(&full);
    assert!(want.iter().any(|(p, _)| p.ends_with("energy.csv")));
    assert!(want.iter().any(|(p, _)| p.starts_with("plots")));
    // Three image parts alone, and two point shards x two image parts.
    let mut runs = Vec::new();
    for (n, m) in [(1, 3), (2, 2)] {
        let dirs = parts(&spec, &base.join(format!("{n}x{m}")), n, m);
        let (mspec, merged) = merge(&dirs, &presets()).unwrap();
        assert_eq!(merged.timings.len(), merged.rows.len());
        let out = base.join(format!("merged-{n}x{m}"));
        write_results(&mspec, &merged, &out).unwrap();
        let got = files(&out);
        assert_eq!(
            got.iter().map(|f| &f.0).collect::<Vec<_>>(),
            want.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for ((p, a), (_, b)) in got.iter().zip(&want) {
            assert!(a == b, "{n} x {m} shards: {} differs", p.display());
        }
        runs.push(dirs);
    }
    // Errors: a missing part, a part twice, different counts, mixed kinds.
    let (dirs, two) = (&runs[0], &runs[1]);
    let err = |d: &[PathBuf]| merge(d, &presets()).unwrap_err().to_string();
    let e = err(&dirs[..2]);
    assert!(
        e.contains("images part 3/3") && e.contains("missing"),
        "{e}"
    );
    let e = err(&[
        dirs[0].clone(),
        dirs[1].clone(),
        dirs[2].clone(),
        dirs[2].clone(),
    ]);
    assert!(e.contains("appears in two shards"), "{e}");
    let e = err(&[dirs[0].clone(), two[1].clone()]);
    assert!(e.contains("1/3") && e.contains("2/2"), "{e}");
    let e = err(&[full.clone(), dirs[0].clone()]);
    assert!(e.contains("whole-point shards"), "{e}");
    // More image shards than batches: refused before any work.
    let e = run_images_part(&spec, &RunOptions::default(), (1, 4), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("1/4") && e.contains("3 batch"), "{e}");
    std::fs::remove_dir_all(&base).unwrap();
}

const TEXT_SPEC: &str = r#"
name = "tiny-text"
archs = ["isaac8b", "raella"]
[[arch]]
preset = "raella"
name = "raella_e8"
noise_e = 0.08
[cost]
components = "FX/cost/components.toml"
calibration = "FX/cost/calibration.toml"
typical = "FX/cost/typical_stats.toml"
[[model]]
name = "tiny_bert"
onnx = "FX/tiny_bert/model.onnx"
tokenizer = "FX/tiny_bert/model/tokenizer.json"
output = "sentence_embedding"
lee50 = "FX/tiny_bert/lee50"
texts = "FX/tiny_bert/calibration.txt"
calibration = { start = 0, count = 4 }
evaluation = { start = 0, count = 5 }
"#;

#[test]
fn text_parts_merge_to_the_unsharded_result_byte_for_byte() {
    let fixtures = root().join("fixtures");
    let base = tmp("text");
    let path = base.join("spec.toml");
    std::fs::write(
        &path,
        TEXT_SPEC.replace("FX", &fixtures.display().to_string()),
    )
    .unwrap();
    let spec = Spec::load(&path, &presets()).unwrap();
    let full = base.join("full");
    write_results(&spec, &run(&spec, |_| {}).unwrap(), &full).unwrap();
    let dirs = parts(&spec, &base, 1, 2);
    let (mspec, merged) = merge(&dirs, &presets()).unwrap();
    assert!(merged.rows.iter().all(|r| r.pearson.is_some()));
    let out = base.join("merged");
    write_results(&mspec, &merged, &out).unwrap();
    let (got, want) = (files(&out), files(&full));
    assert_eq!(got.len(), want.len());
    for ((p, a), (q, b)) in got.iter().zip(&want) {
        assert_eq!(p, q);
        assert!(a == b, "{} differs", p.display());
    }
    // Whole-point shards still merge as before next to this.
    let whole = run_with(&spec, &RunOptions::default(), |_| {}).unwrap();
    assert_eq!(whole.rows, merged.rows);
    std::fs::remove_dir_all(&base).unwrap();
}
