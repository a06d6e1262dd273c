//! Adaptive slicing hands back the chosen candidate's layer only when it is
//! the layer a fresh compile would give.

use ndarray::Array2;
use raella_compiler::{AdaptiveSlicing, Budget, CompileConfig, RelativeRms, Slicing, compile};
use raella_device::stream_rng;
use raella_runtime::{RunConfig, calibration_run, choose_weight_slicing_layer};
use rand::RngExt;

#[test]
fn the_chosen_candidates_layer_is_a_fresh_compile() {
    let mut rng = stream_rng(3, &[]);
    let weights = Array2::from_shape_fn((24, 700), |_| rng.random::<i8>());
    let inputs = Array2::from_shape_fn((40, 700), |_| rng.random::<u8>());
    let base = CompileConfig::raella();
    let run = calibration_run(&RunConfig::raella());
    let cands: Vec<Slicing> = ["4-4", "4-2-2", "2x4"]
        .iter()
        .map(|s| Slicing::parse(s).unwrap())
        .collect();
    for budget in [0.0, 1e-6, 0.05, 10.0] {
        let policy =
            AdaptiveSlicing::new(cands.clone(), Budget::Fixed(budget), Box::new(RelativeRms))
                .unwrap();
        let (choice, layer) =
            choose_weight_slicing_layer(weights.view(), &base, &policy, None, inputs.view(), &run)
                .unwrap();
        let last = choice.trials.last().map(|t| t.0.clone());
        // Handed back exactly when the chosen candidate was the last one run.
        assert_eq!(
            layer.is_some(),
            last.as_ref() == Some(&choice.chosen),
            "{budget}"
        );
        if let Some(layer) = layer {
            let cfg = CompileConfig {
                weight_slicing: choice.chosen.clone(),
                ..base.clone()
            };
            assert_eq!(
                layer.mapped(),
                &compile(weights.view(), &cfg, None).unwrap()
            );
        }
    }
    // A forced slicing runs nothing and hands nothing back.
    let policy = AdaptiveSlicing::new(cands, Budget::Auto, Box::new(RelativeRms)).unwrap();
    let force = Slicing::parse("1x8").unwrap();
    let (choice, layer) = choose_weight_slicing_layer(
        weights.view(),
        &base,
        &policy,
        Some(&force),
        inputs.view(),
        &run,
    )
    .unwrap();
    assert!(choice.forced && layer.is_none());
}
