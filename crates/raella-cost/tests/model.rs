//! Hand-checked energy, area and latency of one crossbar and one small layer,
//! against the committed component tables; energy is monotone in activity.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use raella_cost::{
    Calibration, Components, CostArch, DacKind, DigitalCorrection, LayerShape, LayerWork,
    MappingOptions, RecoveryTiming, Tiles, cycle_ns, layer_energy, map_network, tile_area,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cost")
}

/// Organisations of the test designs, written out here (the project's designs
/// live in `fixtures/presets.toml`; the sweep's tests check those).
struct Archs;

impl Archs {
    fn get(&self, name: &str) -> Option<CostArch> {
        let raella = CostArch {
            rows: 512,
            cols: 512,
            devices_per_cell: 2,
            cell_area_f2: 5.49,
            r_on_ohm: 1333.0,
            max_level: 15,
            adc_bits: 7,
            adcs_per_crossbar: 4,
            dac: DacKind::PulseTrain,
            crossbars_per_macro: 4,
            macros_per_tile: 8,
            tiles: Tiles::IsoArea,
            tiles_per_router: 4,
            cycle_ns: 100.0,
            correction: DigitalCorrection::Center,
        };
        match name {
            "raella" | "center_offset" => Some(raella),
            "isaac8b" => Some(CostArch {
                rows: 128,
                cols: 128,
                devices_per_cell: 1,
                cell_area_f2: 1.49,
                r_on_ohm: 2000.0,
                max_level: 3,
                adc_bits: 8,
                adcs_per_crossbar: 1,
                dac: DacKind::OneBit,
                crossbars_per_macro: 8,
                macros_per_tile: 12,
                tiles: Tiles::Fixed(168),
                correction: DigitalCorrection::Offset,
                ..raella
            }),
            _ => None,
        }
    }
}

fn load() -> (Components, Archs) {
    let c = Components::load(&fixtures().join("components.toml")).unwrap();
    (c, Archs)
}

/// Fixed recovery cycles, replicas packed (the default).
const FIXED: MappingOptions = MappingOptions {
    recovery: RecoveryTiming::Fixed,
    pack_replicas: true,
};

const CAL: Calibration = Calibration {
    cell_scale: 1.0,
    pulse_dac_pj: 0.5,
};

/// One full RAELLA crossbar (512 rows x 170 filters x 3 slices), one vector,
/// speculation 4-2-2 with recovery, with explicit event counts.
fn one_crossbar() -> LayerWork {
    LayerWork {
        shape: LayerShape {
            name: "x".into(),
            vectors: 1.0,
            groups: 1,
            rows: 512,
            filters: 170,
            in_elems: 512.0,
            out_elems: 170.0,
        },
        weight_slices: 3,
        passes: 1.0,
        cycles_per_vector: 11.0,
        recovery_cycles_per_vector: 8.0,
        speculation: true,
        conversions: 1630.0,
        row_drives: 5632.0,
        input_pulses: 1000.0,
        cell_charge: 20_000.0,
        stats_source: "test".into(),
    }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
}

#[test]
fn one_crossbar_energy_by_hand() {
    let (c, archs) = load();
    let raella = archs.get("raella").unwrap();
    let e = layer_energy(&one_crossbar(), &raella, &c, &CAL).unwrap();
    // ADC: 1630 conversions x (7-bit SAR 1.42 + shift-add 0.021 + column buffer 0.0023).
    close(e.adc_pj, 1630.0 * (1.42 + 0.021 + 0.0023));
    // Cells: 20000 pulse-levels x 0.2^2 V^2 / 1333 ohm x 1 ns = 0.030008 pJ each.
    close(e.cells_pj, 20_000.0 * 0.04 / 1333.0 * 1e3);
    // Pulse-train DAC: 1000 pulses x 0.5 pJ.
    close(e.dac_pj, 500.0);
    // Input buffer: 512 inputs x 8 bits, read twice (speculation), at 20.45 pJ / 256 bits;
    // plus the running input sum: 512 16-bit adds (0.21 pJ x 16/32 x 32/40 nm).
    let add16 = 0.21 * 0.5 * 0.8;
    close(
        e.input_buffer_pj,
        512.0 * 2.0 * 8.0 * 20.45 / 256.0 + 512.0 * add16,
    );
    // Output: a 16-bit register update per conversion; one center multiply-add per output
    // (8x16 multiply: 12.68 x 128/1024 x 0.8; 32-bit add: 0.21 x 0.8); one row block, no partial sums.
    close(
        e.output_buffer_pj,
        1630.0 * add16 + 170.0 * (12.68 * 128.0 / 1024.0 * 0.8 + 0.21 * 0.8),
    );
    close(e.requantisation_pj, 170.0 * 0.25);
    // eDRAM + bus per bit of input and output, router per 256 output bits.
    close(
        e.data_movement_pj,
        (512.0 + 170.0) * 8.0 * (20.45 / 256.0 + 0.054) + 170.0 * 8.0 / 256.0 * 20.74,
    );
    close(e.total_pj(), e.categories().iter().map(|x| x.1).sum());
}

#[test]
fn isaac_dac_is_charged_per_one_bit_and_no_center_unit() {
    let (c, archs) = load();
    let isaac = archs.get("isaac8b").unwrap();
    assert_eq!(isaac.dac, DacKind::OneBit);
    let mut w = one_crossbar();
    w.shape.rows = 128;
    w.shape.filters = 32;
    w.weight_slices = 4;
    w.speculation = false;
    let e = layer_energy(&w, &isaac, &c, &CAL).unwrap();
    close(e.dac_pj, 1000.0 * 0.417);
    close(e.adc_pj, 1630.0 * (1.67 + 0.021 + 0.0023));
    close(e.cells_pj, 20_000.0 * 0.04 / 2000.0 * 1e3);
    // The unsigned offset's -128 * sum(x): one 32-bit add per output.
    close(
        e.output_buffer_pj,
        1630.0 * 0.21 * 0.5 * 0.8 + 32.0 * 0.21 * 0.8,
    );
}

#[test]
fn tile_area_by_hand() {
    let (c, archs) = load();
    let r = archs.get("raella").unwrap();
    let t = tile_area(&r, &c).unwrap();
    let xbars = 32.0; // 4 per macro x 8 macros
    close(
        t.cells_um2,
        xbars * 512.0 * 512.0 * 2.0 * 5.49 * 0.032 * 0.032,
    );
    close(t.adcs_um2, xbars * 4.0 * 845.0);
    close(t.dacs_um2, xbars * 512.0 * 0.166);
    close(t.column_periphery_um2, xbars * (512.0 * 5.0 + 4.0 * 60.0));
    close(
        t.center_units_um2,
        8.0 * (6350.0 * 128.0 / 1024.0 * 0.64 + 278.0 * 0.64),
    );
    close(t.tile_shared_um2, 83_000.0 + 256.0 * 29.3 + 150_000.0 / 4.0);
}

#[test]
fn small_layer_latency_and_replication() {
    let (c, archs) = load();
    let r = archs.get("raella").unwrap();
    // ADCs keep up with the analog cycle: 512 columns / (4 x 1.28 GS/s) = 100 ns.
    close(cycle_ns(&r, &c), 100.0);
    let mut w = one_crossbar();
    w.shape.vectors = 10.0;
    // One tile (32 crossbars): the 1-crossbar layer is replicated 10 times (once per vector).
    let p = map_network(&[w.clone()], &r, &c, 1, &FIXED).unwrap();
    assert_eq!(p.layers[0].crossbars, 1);
    assert_eq!(p.layers[0].replicas, 10);
    close(p.layers[0].time_ns, 11.0 * 100.0);
    close(p.inferences_per_s, 1e9 / 1100.0);
    // Two layers on exactly two crossbars: no replication, the slower sets the pace.
    let mut slow = w.clone();
    slow.shape.vectors = 20.0;
    let arch1 = raella_cost::CostArch {
        macros_per_tile: 1,
        crossbars_per_macro: 2,
        ..r.clone()
    };
    let p = map_network(&[w, slow], &arch1, &c, 1, &FIXED).unwrap();
    close(p.inferences_per_s, 1e9 / (20.0 * 11.0 * 100.0));
    // A network that does not fit is an error, not a silent result.
    let big = LayerWork {
        shape: LayerShape {
            rows: 5000,
            filters: 5000,
            ..one_crossbar().shape
        },
        ..one_crossbar()
    };
    assert!(map_network(&[big], &arch1, &c, 1, &FIXED).is_err());
}

/// A layer whose copy fills a fifth of a crossbar's columns (64 rows x 32
/// filters x 3 slices = 96 of 512 columns, 64 of 512 rows): with packing, five
/// copies share one crossbar (block-diagonally) and run at once; without, one.
#[test]
fn small_layers_pack_replicas_into_one_crossbar() {
    let (c, archs) = load();
    let one = CostArch {
        macros_per_tile: 1,
        crossbars_per_macro: 1,
        ..archs.get("raella").unwrap()
    };
    let mut w = one_crossbar();
    w.shape.rows = 64;
    w.shape.filters = 32;
    w.shape.vectors = 100.0;
    let packed = map_network(&[w.clone()], &one, &c, 1, &FIXED).unwrap();
    assert_eq!(packed.layers[0].replicas, 5);
    assert_eq!(packed.layers[0].crossbars_used, 1);
    close(packed.layers[0].time_ns, 100.0 * 11.0 * 100.0 / 5.0);
    let unpacked = MappingOptions {
        pack_replicas: false,
        ..FIXED
    };
    let p = map_network(&[w], &one, &c, 1, &unpacked).unwrap();
    assert_eq!(p.layers[0].replicas, 1);
    close(p.layers[0].time_ns, 100.0 * 11.0 * 100.0);
}

/// ADC-bound recovery: a recovery slice lasts as long as its ADCs need for the
/// flagged columns actually re-converted, with a floor per slice.
#[test]
fn adc_bound_recovery_time_by_hand() {
    let (c, archs) = load();
    let r = archs.get("raella").unwrap();
    // One crossbar, one vector: 3 primary slices x 510 columns = 1530 conversions,
    // plus 100 recovery conversions; 4 ADCs at 1.28 GS/s.
    let w = one_crossbar();
    let opts = MappingOptions {
        recovery: RecoveryTiming::AdcBound { floor_ns: 1.0 },
        pack_replicas: true,
    };
    let p = map_network(std::slice::from_ref(&w), &r, &c, 1, &opts).unwrap();
    let rec_ns: f64 = 100.0 / (4.0 * 1.28);
    close(p.layers[0].time_ns, 3.0 * 100.0 + rec_ns.max(8.0 * 1.0));
    // Few flags: the floor (8 slices x 1 ns) sets the recovery time.
    let few = LayerWork {
        conversions: 1530.0 + 4.0,
        ..w
    };
    let p = map_network(&[few], &r, &c, 1, &opts).unwrap();
    close(p.layers[0].time_ns, 3.0 * 100.0 + 8.0);
}

proptest! {
    #[test]
    fn energy_is_monotone_in_activity(
        base in (0.0f64..1e6, 0.0f64..1e6, 0.0f64..1e6, 0.0f64..1e6),
        extra in (0.0f64..1e5, 0.0f64..1e5, 0.0f64..1e5, 0.0f64..1e5),
        design in prop::sample::select(vec!["isaac8b", "center_offset", "raella"]),
    ) {
        let (c, archs) = load();
        let arch = archs.get(design).unwrap();
        let mut w = one_crossbar();
        (w.conversions, w.row_drives, w.input_pulses, w.cell_charge) = base;
        let e0 = layer_energy(&w, &arch, &c, &CAL).unwrap();
        let mut more = w.clone();
        more.conversions += extra.0;
        more.row_drives += extra.1;
        more.input_pulses += extra.2;
        more.cell_charge += extra.3;
        let e1 = layer_energy(&more, &arch, &c, &CAL).unwrap();
        for ((_, a), (_, b)) in e0.categories().iter().zip(e1.categories().iter()) {
            prop_assert!(b >= a);
        }
        prop_assert!(e1.total_pj() >= e0.total_pj());
    }
}

#[test]
fn bad_tables_are_named() {
    let e = Components::parse(Path::new("c.toml"), "technology_nm = -3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.toml"), "{e}");
    let (c, _) = load();
    assert!(
        c.adc_energy_pj(3)
            .unwrap_err()
            .to_string()
            .contains("no 3-bit entry")
    );
    let isaac = Archs.get("isaac8b").unwrap();
    let e = CostArch {
        adc_bits: 2,
        ..isaac.clone()
    }
    .check_tables(&c)
    .unwrap_err()
    .to_string();
    assert!(e.contains("adc_bits") && e.contains("= 2"), "{e}");
    let e = CostArch {
        adcs_per_crossbar: 0,
        ..isaac
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("adcs_per_crossbar") && e.contains("= 0"), "{e}");
}

/// ADC energy per conversion and ADC area rise strictly with the resolution
/// over the table's range: a design costed with more ADC bits pays more.
#[test]
fn adc_cost_rises_with_bits() {
    let (c, _) = load();
    let mut last = (0.0, 0.0);
    for bits in 4..=10 {
        let now = (
            c.adc_energy_pj(bits).unwrap(),
            c.adc_area_um2(bits).unwrap(),
        );
        assert!(
            now.0 > last.0 && now.1 > last.1,
            "{bits} bits: {now:?} after {last:?}"
        );
        last = now;
    }
}
