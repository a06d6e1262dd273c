//! One design description feeds both the simulation and the cost model: a grid
//! over ADC bits or crossbar rows changes the energy, area and crossbar counts
//! it is charged, and designs the typical statistics do not describe are not
//! costed on shape-only workloads (and the report says why).

use raella_sweep::{CostModel, EnergyRow, Spec, cost_measured, run};

mod common;
use common::root;

fn spec(name: &str, body: &str) -> Spec {
    let dir =
        std::env::temp_dir().join(format!("raella-design-cost-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fx = root().join("fixtures");
    let text = format!(
        r#"name = "{name}"
seeds = [1]
{body}

[cost]
components = "{fx}/cost/components.toml"
calibration = "{fx}/cost/calibration.toml"
typical = "{fx}/cost/typical_stats.toml"

[[workload]]
name = "resnet18"
file = "{fx}/workloads/resnet18.toml"
batch = 1

[[model]]
name = "mnist_cnn"
onnx = "{fx}/mnist_cnn/mnist_cnn.onnx"
images = "{fx}/mnist_cnn/mnist-digits-images-idx3-ubyte.gz"
labels = "{fx}/mnist_cnn/mnist-digits-labels-idx1-ubyte.gz"
scale = 0.00392156862745098
mean = [0.1307]
std = [0.3081]
calibration = {{ start = 0, count = 8 }}
evaluation = {{ start = 100, count = 4 }}
"#,
        fx = fx.display()
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    let s = Spec::load(&path, &fx.join("presets.toml")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    s
}

fn row<'a>(rows: &'a [EnergyRow], dnn: &str, arch: &str) -> &'a EnergyRow {
    rows.iter()
        .find(|r| r.dnn == dnn && r.arch == arch)
        .unwrap_or_else(|| panic!("no row for {arch} on {dnn}"))
}

#[test]
fn adc_bits_set_the_adc_energy_per_conversion() {
    let s = spec(
        "adc-grid",
        "archs = [\"raella\"]\n[[grid]]\narchs = [\"raella\"]\nadc_bits = [4, 5, 6, 7, 8, 9]",
    );
    let res = run(&s, |_| {}).unwrap();
    let mut last = 0.0;
    for bits in 4..=9 {
        let r = row(
            &res.energy,
            "mnist_cnn",
            &format!("raella[adc_bits={bits}]"),
        );
        assert!(
            r.adc_pj_per_conversion > last,
            "{bits}-bit ADC: {} pJ per conversion after {last}",
            r.adc_pj_per_conversion
        );
        last = r.adc_pj_per_conversion;
    }
    // The 7-bit grid point is the preset itself: the same cost.
    let (p, g) = (
        row(&res.energy, "mnist_cnn", "raella"),
        row(&res.energy, "mnist_cnn", "raella[adc_bits=7]"),
    );
    assert_eq!(p.energy_mj, g.energy_mj);
    assert_eq!(p.area_mm2, g.area_mm2);
    // Shape-only workloads: only the preset's configuration has typical
    // statistics; every grid point with other ADC bits is listed as not costed,
    // naming the knob.
    let costed: Vec<&str> = res
        .energy
        .iter()
        .filter(|r| r.dnn == "resnet18")
        .map(|r| r.arch.as_str())
        .collect();
    assert_eq!(costed, ["raella", "raella[adc_bits=7]"]);
    assert_eq!(res.not_costed.len(), 5, "{:?}", res.not_costed);
    let notes: Vec<_> = res
        .not_costed
        .iter()
        .filter(|(what, _)| what.contains("adc_bits=5"))
        .collect();
    assert!(
        notes.len() == 1 && notes[0].1.contains("adc_bits") && notes[0].1.contains("raella"),
        "{:?}",
        res.not_costed
    );
}

#[test]
fn rows_set_the_area_and_crossbar_count() {
    let s = spec(
        "rows-grid",
        "archs = [\"isaac8b\"]\n[[grid]]\narchs = [\"raella\"]\nrows = [128, 256, 512]",
    );
    let res = run(&s, |_| {}).unwrap();
    let r: Vec<&EnergyRow> = [128, 256, 512]
        .iter()
        .map(|n| row(&res.energy, "mnist_cnn", &format!("raella[rows={n}]")))
        .collect();
    // Fewer rows: more crossbars for the same network, smaller tiles (so more of them
    // in the iso-area budget), and a different chip area in use.
    assert!(r[0].crossbars > r[1].crossbars && r[1].crossbars > r[2].crossbars);
    assert!(r[0].tiles > r[1].tiles && r[1].tiles > r[2].tiles);
    assert!(r[0].area_mm2 != r[1].area_mm2 && r[1].area_mm2 != r[2].area_mm2);
    // The iso-area reference keeps its own fixed chip.
    assert_eq!(row(&res.energy, "mnist_cnn", "isaac8b").tiles, 168);
    // One design costed alone from its measured rows (what the Python
    // `Simulator.cost` does) is the sweep's row but for the ratios to the reference.
    let cm = CostModel::load(s.cost.as_ref().unwrap()).unwrap();
    for a in &s.archs {
        let r = res.rows.iter().find(|r| r.arch == a.name).unwrap();
        let alone = cost_measured(&cm, a, "mnist_cnn", &r.layers, 0.0).unwrap();
        let swept = row(&res.energy, "mnist_cnn", &a.name);
        assert_eq!(
            EnergyRow {
                energy_efficiency_vs_isaac: swept.energy_efficiency_vs_isaac,
                throughput_vs_isaac: swept.throughput_vs_isaac,
                ..alone
            },
            *swept,
            "{}",
            a.name
        );
    }
}

#[test]
fn every_preset_and_the_reference_can_be_costed() {
    let s = spec(
        "all-presets",
        "archs = [\"isaac8b\", \"unsigned512\", \"center_offset\", \"center_offset_aws\", \"raella\", \
         \"raella_1b\", \"ladder_unsigned\", \"ladder_zero_offset\", \"ladder_center_offset\"]",
    );
    let cm = CostModel::load(s.cost.as_ref().unwrap()).unwrap();
    cm.check(&s).unwrap();
    // A design the component tables cannot cost is refused before any work, naming the knob.
    let bad = spec(
        "bad-adc",
        "[[arch]]\npreset = \"raella\"\nname = \"raella_12b\"\nadc_bits = 12",
    );
    let e = run(&bad, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("raella_12b") && e.contains("adc_bits") && e.contains("12"),
        "{e}"
    );
}
