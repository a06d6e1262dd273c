//! The smoke golden results (`tests/golden/smoke_results.csv`, written by the
//! sweep) checked by something independent of the fast engine: every weight
//! layer of every noise-free design recomputed by the slow reference
//! (`raella_runtime::run_reference_programmed`, one column-slice at a time from
//! the programmed conductances, exact `f64` sums), and top-1, agreement with the
//! 8-bit reference and the output error recomputed here from those outputs.

use std::path::Path;

use ndarray::Array2;
use raella_network::{
    CrossbarBackend, ExactBackend, MacBackend, NetworkError, QInput, QuantModel, eval_quant,
};
use raella_runtime::reference::run_reference_programmed;
use raella_runtime::{LayerStats, RunConfig};
use raella_sweep::{Spec, load_model};

mod common;
use common::root;

/// A design's programmed layers, run by the slow reference.
struct Reference<'a> {
    built: &'a CrossbarBackend,
    run: RunConfig,
}

impl MacBackend for Reference<'_> {
    fn mac(
        &self,
        layer: usize,
        group: usize,
        x: &QInput,
        _batch_index: u64,
    ) -> Result<(Array2<i64>, Option<LayerStats>), NetworkError> {
        let pl = &self.built.layers()[layer][group];
        let exact = |v: &Array2<u8>| {
            let b = run_reference_programmed(pl, v.view(), &self.run);
            assert_eq!(b.lo, b.hi, "ideal devices give one value per output");
            b.lo
        };
        // Signed inputs: two passes, positive part minus negative part.
        let y = match x {
            QInput::Unsigned(v) => exact(v),
            QInput::Signed(v) => {
                let pos = v.mapv(|a| u8::try_from(a.max(0)).unwrap());
                let neg = v.mapv(|a| u8::try_from(-i16::from(a.min(0))).unwrap());
                exact(&pos) - exact(&neg)
            }
        };
        Ok((y, None))
    }
}

fn argmax(r: ndarray::ArrayView1<'_, f32>) -> usize {
    let mut best = 0;
    for (i, &v) in r.iter().enumerate() {
        if v > r[best] {
            best = i;
        }
    }
    best
}

#[test]
fn smoke_golden_rows_are_reproduced_by_the_slow_reference() {
    let spec = Spec::load(
        &root().join("fixtures/sweeps/smoke.toml"),
        &root().join("fixtures/presets.toml"),
    )
    .unwrap();
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/smoke_results.csv"),
    )
    .unwrap();
    let mut lines = golden.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();

    let m = &spec.models[0];
    let ld = load_model(m).unwrap();
    let (labels, evaluation) = (ld.labels.clone(), ld.evaluation.clone());
    let model = QuantModel::calibrate(ld.graph, &ld.calibration).unwrap();
    let captured = model.capture_inputs(&ld.aws_calibration).unwrap();
    let int8 = eval_quant(&model, &ExactBackend::new(&model), &evaluation)
        .unwrap()
        .output_rows(0)
        .unwrap();
    let mut checked = 0;
    for arch in spec
        .archs
        .iter()
        .filter(|a| a.knobs.noise_e.unwrap_or(0.0) == 0.0)
    {
        let row = rows
            .iter()
            .find(|r| r[col("arch")] == arch.name)
            .unwrap_or_else(|| panic!("no golden row for {}", arch.name));
        let cfg = arch.config();
        // Compilation, adaptive slicing and programming are the design's; only
        // the execution is replaced.
        let built = CrossbarBackend::build(&model, &cfg, &captured, spec.seeds[0]).unwrap();
        assert_eq!(built.slicings().join(";"), row[col("weight_slicing")]);
        let reference = Reference {
            built: &built,
            run: cfg.run.clone(),
        };
        let y = eval_quant(&model, &reference, &evaluation)
            .unwrap()
            .output_rows(0)
            .unwrap();
        let n = y.nrows();
        assert_eq!(n, labels.len());
        let pred: Vec<usize> = y.rows().into_iter().map(argmax).collect();
        let pred8: Vec<usize> = int8.rows().into_iter().map(argmax).collect();
        let top1 = pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / n as f64;
        let agree = pred.iter().zip(&pred8).filter(|(p, q)| p == q).count() as f64 / n as f64;
        let err = y
            .rows()
            .into_iter()
            .zip(int8.rows())
            .map(|(a, b)| {
                let d: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
                    .sum();
                let r: f64 = b.iter().map(|q| f64::from(*q).powi(2)).sum();
                (d / r).sqrt()
            })
            .sum::<f64>()
            / n as f64;
        let g = |c: &str| row[col(c)].parse::<f64>().unwrap();
        assert_eq!(
            format!("{top1:.6}"),
            row[col("top1")],
            "{}: top-1",
            arch.name
        );
        assert_eq!(
            format!("{agree:.6}"),
            row[col("agreement_int8")],
            "{}: agreement",
            arch.name
        );
        let want = g("output_rel_err_int8");
        assert!(
            (err - want).abs() <= 1e-5 * want.max(1e-12) || (err == 0.0 && want == 0.0),
            "{}: output error {err} here, {want} in the golden file",
            arch.name
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "isaac8b, raella and ladder_center_offset");
}
