//! The sweep end to end: a smoke spec against golden results, determinism, the
//! required CSV columns, and bad specs rejected with named fields, a non-zero
//! exit and no result files.

use std::path::{Path, PathBuf};
use std::process::Command;

use raella_sweep::{CSV_COLUMNS, Spec, run, write_results};

mod common;
use common::{presets, root, tmp};

#[test]
fn smoke_sweep_is_deterministic_and_matches_golden() {
    let spec = Spec::load(&root().join("fixtures/sweeps/smoke.toml"), &presets()).unwrap();
    let (a, b) = (tmp("a"), tmp("b"));
    for out in [&a, &b] {
        let res = run(&spec, |_| {}).unwrap();
        write_results(&spec, &res, out).unwrap();
    }
    for f in [
        "results.csv",
        "results.json",
        "report.md",
        "stats/mnist_cnn/raella/classifier.0.txt",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
    let csv = std::fs::read_to_string(a.join("results.csv")).unwrap();
    // Every row has the header's fields (the header itself is CSV_COLUMNS).
    for line in csv.lines() {
        assert_eq!(line.split(',').count(), CSV_COLUMNS.len(), "{line}");
    }
    assert!(csv.starts_with(
        "model,arch,seed,images,top1,top1_fp32,top1_int8,agreement_int8,output_rel_err_int8,in_range_fraction,recovery_rate,converts_per_mac"
    ));
    let stats = std::fs::read_to_string(a.join("stats/mnist_cnn/raella/classifier.0.txt")).unwrap();
    for key in [
        "AVERAGE_WEIGHT_VALUE=",
        "AVERAGE_INPUT_VALUE=",
        "ADC_ACTION_SHARE=",
        "CIM_UNITS_PER_WEIGHT=",
        "SPECULATION_ENABLED=1",
    ] {
        assert!(stats.contains(key), "{stats}");
    }
    // isaac8b is lossless by construction: it equals the 8-bit reference exactly.
    let isaac = csv
        .lines()
        .find(|l| l.starts_with("mnist_cnn,isaac8b,"))
        .unwrap();
    let f: Vec<&str> = isaac.split(',').collect();
    assert_eq!((f[7], f[8]), ("1.000000", "0.000000e0"), "{isaac}");
    let golden = root().join("crates/raella-sweep/tests/golden/smoke_results.csv");
    if std::env::var_os("RAELLA_BLESS").is_some() {
        std::fs::write(&golden, &csv).unwrap();
    } else {
        let want =
            std::fs::read_to_string(&golden).expect("golden present (bless with RAELLA_BLESS=1)");
        assert!(
            csv == want,
            "results.csv differs from {}; re-bless if intended:\n{csv}",
            golden.display()
        );
    }
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

/// A spec in a temporary folder whose model paths point at the real fixture.
fn spec_with(dir: &Path, body: &str) -> PathBuf {
    let fx = root().join("fixtures/mnist_cnn");
    let text = format!(
        "{body}\n[[model]]\nname = \"m\"\nonnx = \"{}\"\nimages = \"{}\"\nlabels = \"{}\"\ncalibration = {{ start = 0, count = 4 }}\nevaluation = {{ start = 10, count = 4 }}\n",
        fx.join("mnist_cnn.onnx").display(),
        fx.join("mnist-digits-images-idx3-ubyte.gz").display(),
        fx.join("mnist-digits-labels-idx1-ubyte.gz").display()
    );
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_specs_name_file_field_and_value() {
    let d = tmp("bad");
    let cases: [(&str, &[&str]); 9] = [
        ("archs = [\"raella\"\nseeds = [1]", &["spec.toml", "line"]),
        ("archs = [\"raella\"]\ncolour = 3", &["spec.toml", "colour"]),
        (
            "archs = [\"raela\"]",
            &["spec.toml", "preset", "\"raela\"", "unknown preset"],
        ),
        (
            "[[arch]]\npreset = \"raella\"\nadc_bits = 0",
            &["spec.toml", "adc_bits", "= 0", "1..=24"],
        ),
        (
            "[[arch]]\npreset = \"isaac8b\"\nweight_slicing = \"4-4\"",
            &[
                "spec.toml",
                "weight_slicing",
                "\"4-4\"",
                "wider than a 2-bit device",
            ],
        ),
        (
            "[[arch]]\npreset = \"raella\"\nweight_slicing = \"4-2\"",
            &["spec.toml", "weight_slicing", "\"4-2\"", "summing to 6"],
        ),
        (
            "[[arch]]\npreset = \"raella\"\nrows = 0",
            &["spec.toml", "rows", "= 0"],
        ),
        (
            "[[arch]]\npreset = \"raella\"\nadc_bits = \"seven\"",
            &["spec.toml", "adc_bits"],
        ),
        ("archs = [\"raella\"]\nseeds = []", &["spec.toml", "seeds"]),
    ];
    for (body, needles) in cases {
        let p = spec_with(&d, body);
        let err = Spec::load(&p, &presets()).expect_err(body).to_string();
        for n in needles {
            assert!(err.contains(n), "for {body:?}: `{err}` lacks `{n}`");
        }
    }
    // Overlapping calibration and evaluation images.
    let p = d.join("overlap.toml");
    let text = std::fs::read_to_string(spec_with(&d, "archs = [\"raella\"]"))
        .unwrap()
        .replace("start = 10", "start = 2");
    std::fs::write(&p, text).unwrap();
    let err = Spec::load(&p, &presets()).unwrap_err().to_string();
    assert!(err.contains("overlaps calibration"), "{err}");
    // Preprocessing that overflows to infinity.
    let text = std::fs::read_to_string(spec_with(&d, "archs = [\"raella\"]"))
        .unwrap()
        .replace(
            "calibration =",
            "scale = 1e38\nstd = [1e-30]\ncalibration =",
        );
    std::fs::write(&p, text).unwrap();
    let err = Spec::load(&p, &presets()).unwrap_err().to_string();
    assert!(
        err.contains("`scale`") && err.contains("overflows"),
        "{err}"
    );
    // A photo folder that was never fetched (real-scale.toml before `fetch-models`):
    // the error names the missing folder and the command that creates it, not the labels.
    let p = d.join("unfetched.toml");
    let fx = root().join("fixtures/mnist_cnn");
    std::fs::write(
        &p,
        format!(
            "archs = [\"raella\"]\n[[model]]\nname = \"m\"\nonnx = \"{}\"\nimages = \"../.cache/models/photos\"\n\
             calibration = {{ start = 0, count = 4 }}\nevaluation = {{ start = 10, count = 4 }}\n",
            fx.join("mnist_cnn.onnx").display()
        ),
    )
    .unwrap();
    let err = Spec::load(&p, &presets()).unwrap_err().to_string();
    for n in [
        "images",
        "photos",
        "no such file or folder",
        "cargo xtask fetch-models",
    ] {
        assert!(err.contains(n), "`{err}` lacks `{n}`");
    }
    assert!(!err.contains("labels"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn binary_exits_nonzero_and_writes_nothing_on_bad_input() {
    let d = tmp("bin");
    let out = d.join("out");
    let p = spec_with(&d, "[[arch]]\npreset = \"raella\"\nadc_bits = 0");
    let res = Command::new(env!("CARGO_BIN_EXE_raella-sweep"))
        .arg(&p)
        .args([
            "--presets",
            &presets().display().to_string(),
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("adc_bits") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!out.exists(), "no result files on bad input");
    // A truncated ONNX file: rejected by the importer, again without results.
    let cut = d.join("cut.onnx");
    let bytes = std::fs::read(root().join("fixtures/mnist_cnn/mnist_cnn.onnx")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let text = std::fs::read_to_string(spec_with(&d, "archs = [\"raella\"]")).unwrap();
    let onnx_line = text
        .lines()
        .find(|l| l.starts_with("onnx ="))
        .unwrap()
        .to_string();
    std::fs::write(
        &p,
        text.replace(&onnx_line, &format!("onnx = \"{}\"", cut.display())),
    )
    .unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_raella-sweep"))
        .arg(&p)
        .args([
            "--presets",
            &presets().display().to_string(),
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("cut.onnx") && stderr.contains("not an ONNX model"),
        "{stderr}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn shards_merge_to_the_unsharded_result_and_the_cache_resumes() {
    use raella_sweep::{RunOptions, merge, run_with};
    let spec = Spec::load(&root().join("fixtures/sweeps/smoke.toml"), &presets()).unwrap();
    let base = tmp("shards");
    let full = base.join("full");
    write_results(&spec, &run(&spec, |_| {}).unwrap(), &full).unwrap();
    let mut dirs = Vec::new();
    for k in 1..=3 {
        let d = base.join(format!("s{k}"));
        let res = run_with(
            &spec,
            &RunOptions {
                shard: Some((k, 3)),
                ..RunOptions::default()
            },
            |_| {},
        )
        .unwrap();
        assert!(res.energy.is_empty(), "shards leave costing to the merge");
        write_results(&spec, &res, &d).unwrap();
        dirs.push(d);
    }
    let (mspec, merged) = merge(&dirs, &presets()).unwrap();
    let m = base.join("merged");
    write_results(&mspec, &merged, &m).unwrap();
    for f in [
        "results.csv",
        "results.json",
        "report.md",
        "energy.csv",
        "energy_layers.csv",
    ] {
        assert_eq!(
            std::fs::read(full.join(f)).unwrap(),
            std::fs::read(m.join(f)).unwrap(),
            "{f}"
        );
    }
    // A missing shard is an error, not a smaller result.
    assert!(
        merge(&dirs[..2], &presets())
            .unwrap_err()
            .to_string()
            .contains("missing")
    );
    // Cache: the second run computes nothing and gives the same rows.
    let cache = base.join("cache");
    let opts = RunOptions {
        cache_dir: Some(cache.clone()),
        ..RunOptions::default()
    };
    let first = run_with(&spec, &opts, |_| {}).unwrap();
    assert_eq!(first.timings.len(), 4);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 4);
    let second = run_with(&spec, &opts, |_| {}).unwrap();
    assert!(second.timings.is_empty(), "every point came from the cache");
    assert_eq!(first.rows, second.rows);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn grids_expand_to_the_product_of_their_axes() {
    let d = tmp("grid");
    let p = spec_with(
        &d,
        "[[grid]]\narchs = [\"raella\", \"isaac8b\"]\nadc_bits = [8, 9]\nnoise_e = [0.0, 0.04]\n",
    );
    let spec = Spec::load(&p, &presets()).unwrap();
    let names: Vec<&str> = spec.archs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names.len(), 8);
    assert_eq!(names[0], "raella[adc_bits=8,noise_e=0.0]");
    assert_eq!(names[7], "isaac8b[adc_bits=9,noise_e=0.04]");
    let a = &spec.archs[3];
    assert_eq!(
        (a.knobs.adc_bits, a.knobs.noise_e, a.knobs.preset.as_deref()),
        (Some(9), Some(0.04), Some("raella"))
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// With several seeds, the report gives each design's figures over them
/// (mean, standard deviation, range): the noisy design's output error is
/// the mean of its rows, the ideal design's has no spread; with one seed
/// there is no such section.
#[test]
fn the_report_summarises_each_design_across_seeds() {
    let d = tmp("seeds");
    let body = "archs = [\"isaac8b\"]\n[[arch]]\npreset = \"isaac8b\"\nname = \"noisy\"\nnoise_e = 0.12\n[[arch]]\npreset = \"raella\"\nname = \"noisy_raella\"\nnoise_e = 0.12\n";
    for seeds in ["[1, 2, 3]", "[4]"] {
        let p = spec_with(&d, &format!("seeds = {seeds}\n{body}"));
        let spec = Spec::load(&p, &presets()).unwrap();
        let res = run(&spec, |_| {}).unwrap();
        let out = d.join("out");
        write_results(&spec, &res, &out).unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        let noise_plot = raella_sweep::plots(&spec, &res)
            .unwrap()
            .into_iter()
            .find(|p| p.0.to_string_lossy().ends_with("_noise.svg"))
            .expect("the read-noise curve")
            .2;
        if spec.seeds.len() == 1 {
            assert!(!md.contains("### Across seeds"), "{md}");
            assert!(md.contains("### Robustness (first seed;"), "{md}");
            assert!(!noise_plot.contains("seeds)"));
            assert!(md.contains("### Per layer (first seed)"), "{md}");
            continue;
        }
        let section = md
            .split("### Across seeds (3 seeds)")
            .nth(1)
            .expect("the section")
            .split("\n### ")
            .next()
            .unwrap();
        let row = |name: &str| {
            section
                .lines()
                .find(|l| l.starts_with(&format!("| {name} | 3 |")))
                .unwrap_or_else(|| panic!("no row for {name}: {section}"))
                .to_string()
        };
        let errs: Vec<f64> = res
            .rows
            .iter()
            .filter(|r| r.arch == "noisy")
            .map(|r| r.output_rel_err_int8)
            .collect();
        assert_eq!(errs.len(), 3);
        assert!(
            errs.iter().any(|&e| e != errs[0]),
            "the seeds differ: {errs:?}"
        );
        let mean = errs.iter().sum::<f64>() / 3.0;
        let (lo, hi) = errs
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &e| (l.min(e), h.max(e)));
        let want = format!("| {mean:.2e} +- ");
        let range = format!("[{lo:.2e}, {hi:.2e}] |");
        let noisy = row("noisy");
        assert!(
            noisy.contains(&want) && noisy.contains(&range),
            "{noisy} lacks {want} / {range}"
        );
        // The ideal design: the same figures for every seed.
        let ideal = row("isaac8b");
        assert!(ideal.contains("+- 0.00 ["), "{ideal}");
        assert!(ideal.contains("0.00e0 +- 0.0e0"), "{ideal}");
        // The robustness table and curve summarise the same seeds: the noisy
        // design's output error and top-1 as mean +- standard deviation.
        let sd = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / 3.0;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 2.0).sqrt()
        };
        let top1: Vec<f64> = res
            .rows
            .iter()
            .filter(|r| r.arch == "noisy")
            .map(|r| r.top1.unwrap())
            .collect();
        let line = md
            .split("### Robustness (mean +- standard deviation over 3 seeds;")
            .nth(1)
            .expect("the robustness section")
            .lines()
            .find(|l| l.starts_with("| `noise_e` |"))
            .expect("the noise row")
            .to_string();
        let want = format!(
            "| {mean:.2e} +- {:.1e} | {:.4} +- {:.4} |",
            sd(&errs),
            top1.iter().sum::<f64>() / 3.0,
            sd(&top1)
        );
        assert!(line.contains(&want), "{line} lacks {want}");
        assert!(noise_plot.contains("(mean, bars: range over 3 seeds)"));
        // The per-layer table: the noisy designs' layers' own errors as mean
        // +- standard deviation, and RAELLA's recovery rates (which the noise
        // changes) as means.
        let per_layer = md
            .split("### Per layer (mean over 3 seeds; layer rel. error mean +- standard deviation)")
            .nth(1)
            .expect("the per-layer section");
        let mut recovery_varies = false;
        for design in ["noisy", "noisy_raella"] {
            let of_design: Vec<_> = res.rows.iter().filter(|r| r.arch == design).collect();
            for (k, l) in of_design[0].layers.iter().enumerate() {
                let of = |f: fn(&raella_sweep::LayerRow) -> f64| -> Vec<f64> {
                    of_design.iter().map(|r| f(&r.layers[k])).collect()
                };
                let errs = of(|x| x.layer_rel_err);
                let recovery = of(|x| x.recovery_rate);
                recovery_varies |= recovery.iter().any(|&v| v != recovery[0]);
                let line = per_layer
                    .lines()
                    .find(|x| x.starts_with(&format!("| {design} | {} |", l.layer)))
                    .expect("the layer's row");
                let rate = format!("| {:.4} |", recovery.iter().sum::<f64>() / 3.0);
                let err = format!(
                    "| {:.2e} +- {:.1e} |",
                    errs.iter().sum::<f64>() / 3.0,
                    sd(&errs)
                );
                assert!(
                    line.contains(&rate) && line.ends_with(&err),
                    "{line} lacks {rate} / {err}"
                );
            }
        }
        assert!(recovery_varies, "the recovery rates differ between seeds");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
