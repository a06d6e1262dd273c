//! SVG plots of a sweep (plotters), linked from `report.md`: accuracy against
//! energy per inference, energy breakdowns as stacked bars, the in-range
//! ladder, and accuracy against read noise.

// Plot coordinates: small counts and indices converted to and from f64 axes.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

use std::path::PathBuf;

use plotters::prelude::*;

use crate::names::file_component;
use crate::run::SweepResults;
use crate::spec::Spec;

/// `(file name, title, svg text)`.
pub type Plot = (PathBuf, String, String);

const FONT: &str = "sans-serif";

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = (hi - lo).abs().max(hi.abs() * 0.05).max(1e-9);
    (lo - span * 0.1, hi + span * 0.1)
}

/// Top-1 and output error against energy per inference, one point per design.
fn accuracy_vs_energy(res: &SweepResults, model: &str) -> anyhow::Result<Option<String>> {
    let pts: Vec<(f64, f64, f64, String)> = res
        .rows
        .iter()
        .filter(|r| r.model == model)
        .filter_map(|r| {
            let e = res
                .energy
                .iter()
                .find(|e| e.dnn == model && e.arch == r.arch)?;
            Some((
                e.energy_mj * 1e3 / e.batch as f64,
                r.top1.unwrap_or(r.agreement_int8) * 100.0,
                r.output_rel_err_int8.max(1e-6),
                r.arch.clone(),
            ))
        })
        .collect();
    if pts.is_empty() {
        return Ok(None);
    }
    let labelled_data = res
        .rows
        .iter()
        .filter(|r| r.model == model)
        .all(|r| r.top1.is_some());
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (1000, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(400);
        let (x0, x1) = padded(
            pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            pts.iter().map(|p| p.0).fold(0.0, f64::max),
        );
        let (y0, y1) = padded(
            pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            pts.iter().map(|p| p.1).fold(0.0, f64::max).min(100.0),
        );
        let mut c = ChartBuilder::on(&top)
            .caption(
                if labelled_data {
                    format!("{model}: top-1 vs energy per inference")
                } else {
                    format!("{model}: agreement with the 8-bit reference vs energy (unlabelled)")
                },
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1.min(101.0))
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("energy per inference (uJ)")
            .y_desc(if labelled_data {
                "top-1 (%)"
            } else {
                "top-1 agreement with 8-bit ref (%)"
            })
            .draw()
            .map_err(err)?;
        // Labels only while they stay readable.
        let labelled = pts.len() <= 40;
        c.draw_series(pts.iter().map(|(x, y, _, l)| {
            EmptyElement::at((*x, *y))
                + Circle::new((0, 0), 4, BLUE.filled())
                + Text::new(
                    if labelled { l.clone() } else { String::new() },
                    (6, -12),
                    (FONT, 11),
                )
        }))
        .map_err(err)?;
        let ly: Vec<f64> = pts.iter().map(|p| p.2.log10()).collect();
        let (l0, l1) = padded(
            ly.iter().copied().fold(f64::INFINITY, f64::min),
            ly.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let mut c = ChartBuilder::on(&bottom)
            .caption(
                format!("{model}: output error vs energy per inference"),
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, l0..l1)
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("energy per inference (uJ)")
            .y_desc("log10 output rel. error vs 8-bit ref (floor 1e-6)")
            .draw()
            .map_err(err)?;
        c.draw_series(pts.iter().map(|(x, _, e, l)| {
            EmptyElement::at((*x, e.log10()))
                + Circle::new((0, 0), 4, RED.filled())
                + Text::new(
                    if labelled { l.clone() } else { String::new() },
                    (6, -12),
                    (FONT, 11),
                )
        }))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(s))
}

const CATEGORY_COLOURS: [RGBColor; 7] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

/// Stacked energy bars per design, for one DNN.
fn breakdown(res: &SweepResults, dnn: &str) -> anyhow::Result<Option<String>> {
    let rows: Vec<&crate::cost::EnergyRow> = res.energy.iter().filter(|r| r.dnn == dnn).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let max = rows.iter().map(|r| r.energy_mj).fold(0.0, f64::max) * 1.15;
    let names: Vec<String> = rows.iter().map(|r| r.arch.clone()).collect();
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (1000, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = rows.len();
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{dnn}: energy per batch by component (batch {})",
                    rows[0].batch
                ),
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..max)
            .map_err(err)?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("design")
            .y_desc("energy per batch (mJ)")
            .draw()
            .map_err(err)?;
        let cats = rows[0].breakdown.categories();
        for (ci, (cat, _)) in cats.iter().enumerate() {
            let colour = CATEGORY_COLOURS[ci % CATEGORY_COLOURS.len()];
            c.draw_series(rows.iter().enumerate().map(|(i, r)| {
                let parts = r.breakdown.categories();
                let below: f64 = parts[..ci].iter().map(|p| p.1).sum::<f64>() * 1e-9;
                let h = parts[ci].1 * 1e-9;
                let x = i as f64;
                Rectangle::new([(x - 0.3, below), (x + 0.3, below + h)], colour.filled())
            }))
            .map_err(err)?
            .label(*cat)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(s))
}

/// Share of column sums in range per design (the ladder), for one model:
/// horizontal bars, designs top to bottom in spec order.
fn ladder(res: &SweepResults, model: &str) -> anyhow::Result<Option<String>> {
    let rows: Vec<&crate::run::ResultRow> = res.rows.iter().filter(|r| r.model == model).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len();
    let names: Vec<String> = rows
        .iter()
        .map(|r| format!("{} (seed {})", r.arch, r.seed))
        .collect();
    let mut s = String::new();
    {
        let height = 120 + 28 * u32::try_from(n).unwrap_or(40);
        let root = SVGBackend::with_string(&mut s, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let lo = rows
            .iter()
            .map(|r| r.in_range_fraction.min(r.exact_fraction))
            .fold(1.0, f64::min);
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{model}: column sums inside the ADC range (blue), exact after recovery (green)"
                ),
                (FONT, 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(260)
            .build_cartesian_2d((lo - 0.02).max(0.0)..1.005, -0.5f64..(n as f64 - 0.5))
            .map_err(err)?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(n - 1 - i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("fraction of column sums")
            .draw()
            .map_err(err)?;
        let x0 = (lo - 0.02).max(0.0);
        c.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let y = (n - 1 - i) as f64;
            Rectangle::new(
                [(x0, y), (r.in_range_fraction, y + 0.35)],
                BLUE.mix(0.7).filled(),
            )
        }))
        .map_err(err)?;
        c.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let y = (n - 1 - i) as f64;
            Rectangle::new(
                [(x0, y - 0.35), (r.exact_fraction, y)],
                GREEN.mix(0.7).filled(),
            )
        }))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(s))
}

/// A non-ideality knob a robustness curve sweeps: its name, the x axis label,
/// and the x value of a design (0 = ideal).
pub(crate) struct Strength {
    /// Names the plot file and the report's rows.
    pub(crate) name: &'static str,
    pub(crate) knob: &'static str,
    /// Knobs that come with it (drift's exponent and compensation), ignored
    /// when matching designs to a preset.
    with: &'static [&'static str],
    pub(crate) label: &'static str,
    pub(crate) x: fn(&crate::spec::ArchKnobs) -> f64,
    /// Which designs the curve takes (beyond differing in its knobs only).
    only: fn(&crate::spec::ArchKnobs) -> bool,
}

/// Every non-ideality knob with a robustness curve (`docs/DEVICES.md`).
pub(crate) const STRENGTHS: [Strength; 11] = [
    Strength {
        name: "noise_e",
        knob: "noise_e",
        with: &[],
        label: "read noise E (%)",
        x: |k| k.noise_e.unwrap_or(0.0) * 100.0,
        only: |_| true,
    },
    Strength {
        name: "read_noise_device_sigma",
        knob: "read_noise_device_sigma",
        with: &[],
        label: "per-device read sigma (%)",
        x: |k| k.read_noise_device_sigma.unwrap_or(0.0) * 100.0,
        only: |_| true,
    },
    Strength {
        name: "programming_sigma",
        knob: "programming_sigma",
        with: &[],
        label: "programming sigma (%)",
        x: |k| k.programming_sigma.unwrap_or(0.0) * 100.0,
        only: |_| true,
    },
    Strength {
        name: "on_off_ratio",
        knob: "on_off_ratio",
        with: &[],
        label: "G_off / G_on (%)",
        x: |k| match k.on_off_ratio.unwrap_or(0.0) {
            r if r > 0.0 => 100.0 / r,
            _ => 0.0,
        },
        only: |_| true,
    },
    Strength {
        name: "drift_t_seconds",
        knob: "drift_t_seconds",
        with: &["drift_nu", "drift_nu_sigma", "drift_compensation"],
        label: "log10(t / t0) after programming",
        x: |k| {
            (k.drift_t_seconds.unwrap_or(raella_device::DRIFT_T0_SECONDS)
                / raella_device::DRIFT_T0_SECONDS)
                .log10()
        },
        only: |_| true,
    },
    Strength {
        name: "ir_drop_wire_ohm",
        knob: "ir_drop_wire_ohm",
        with: &[],
        label: "wire ohm per cell segment",
        x: |k| k.ir_drop_wire_ohm.unwrap_or(0.0),
        only: |_| true,
    },
    Strength {
        name: "adc_offset_lsb_sigma",
        knob: "adc_offset_lsb_sigma",
        with: &[],
        label: "ADC offset sigma (LSB)",
        x: |k| k.adc_offset_lsb_sigma.unwrap_or(0.0),
        only: |_| true,
    },
    Strength {
        name: "adc_gain_sigma",
        knob: "adc_gain_sigma",
        with: &[],
        label: "ADC gain sigma (%)",
        x: |k| k.adc_gain_sigma.unwrap_or(0.0) * 100.0,
        only: |_| true,
    },
    Strength {
        name: "adc_inl_lsb",
        knob: "adc_inl_lsb",
        with: &[],
        label: "ADC INL peak (LSB)",
        x: |k| k.adc_inl_lsb.unwrap_or(0.0),
        only: |_| true,
    },
    Strength {
        name: "stuck_at_zero",
        knob: "stuck_at_zero",
        with: &[],
        label: "devices stuck OFF (%)",
        x: |k| k.stuck_at_zero.unwrap_or(0.0) * 100.0,
        only: |_| true,
    },
    // Programming variation with a finite OFF state (every device varies,
    // OFF ones included): the curve starts at the OFF-state-only design.
    Strength {
        name: "programming_sigma_off15",
        knob: "programming_sigma",
        with: &["on_off_ratio"],
        label: "programming sigma (%), G_off / G_on = 1/15",
        x: |k| k.programming_sigma.unwrap_or(0.0) * 100.0,
        only: |k| k.on_off_ratio == Some(15.0),
    },
];

/// `k` with the strength's knobs (and the names) cleared, for matching designs
/// that differ from a preset in that knob only.
fn without(k: &crate::spec::ArchKnobs, strength: &Strength) -> Option<serde_json::Value> {
    let mut v = serde_json::to_value(k).ok()?;
    let o = v.as_object_mut()?;
    for f in ["preset", "name", "description", strength.knob] {
        o.remove(f);
    }
    for f in strength.with {
        o.remove(*f);
    }
    Some(v)
}

/// The designs robustness curves compare.
pub(crate) const ROBUSTNESS_BASES: [&str; 3] = ["isaac8b", "center_offset", "raella"];

/// The spec's designs on preset `base` that differ from it in `strength`'s
/// knobs only (the preset itself included), in spec order.
pub(crate) fn curve_designs<'a>(
    spec: &'a Spec,
    base: &str,
    strength: &Strength,
) -> Vec<&'a crate::spec::Arch> {
    let Some(reference) = spec.presets.get(base) else {
        return Vec::new();
    };
    let want = without(
        &crate::spec::ArchKnobs::raella_defaults().overlaid(reference),
        strength,
    );
    spec.archs
        .iter()
        .filter(|a| a.knobs.preset.as_deref() == Some(base))
        .filter(|a| without(&a.knobs, strength) == want && (strength.only)(&a.knobs))
        .collect()
}

/// One design's point on a robustness curve: its strength, and its output
/// error vs the 8-bit reference and fidelity (Lee-50 Pearson, else top-1,
/// else agreement with the 8-bit reference) over the spec's seeds, each as
/// `(mean, sample standard deviation, least, greatest)`.
pub(crate) struct CurvePoint<'a> {
    pub(crate) x: f64,
    pub(crate) error: (f64, f64, f64, f64),
    pub(crate) fidelity: (f64, f64, f64, f64),
    /// The rows the figures summarise, first seed first.
    pub(crate) rows: Vec<&'a crate::run::ResultRow>,
}

/// The rows of design `arch` on `model`, one per seed of the spec that has
/// one, in the spec's seed order (first seed first).
pub(crate) fn seed_rows<'a>(
    spec: &Spec,
    res: &'a SweepResults,
    model: &str,
    arch: &str,
) -> Vec<&'a crate::run::ResultRow> {
    spec.seeds
        .iter()
        .filter_map(|&seed| {
            res.rows
                .iter()
                .find(|r| r.model == model && r.arch == arch && r.seed == seed)
        })
        .collect()
}

/// The curve of preset `base` against `strength` on `model`: a point per
/// design (`curve_designs`) with results, in spec order.
pub(crate) fn curve_points<'a>(
    spec: &Spec,
    res: &'a SweepResults,
    model: &str,
    base: &str,
    strength: &Strength,
) -> Vec<CurvePoint<'a>> {
    curve_designs(spec, base, strength)
        .into_iter()
        .filter_map(|a| {
            let rows = seed_rows(spec, res, model, &a.name);
            if rows.is_empty() {
                return None;
            }
            let errors: Vec<f64> = rows.iter().map(|r| r.output_rel_err_int8).collect();
            let fidelity: Vec<f64> = rows
                .iter()
                .map(|r| {
                    r.pearson
                        .unwrap_or_else(|| r.top1.unwrap_or(r.agreement_int8))
                })
                .collect();
            Some(CurvePoint {
                x: (strength.x)(&a.knobs),
                error: crate::report::spread(&errors),
                fidelity: crate::report::spread(&fidelity),
                rows,
            })
        })
        .collect()
}

/// `(strength, (mean, least, greatest) output error, the same of the
/// fidelity in %)`.
type CurveXy = (f64, (f64, f64, f64), (f64, f64, f64));

/// Fidelity against one non-ideality's strength for the `isaac8b`-,
/// `center_offset`- and `raella`-based designs: output error vs the 8-bit
/// reference (log), and top-1 (labelled data), agreement with the 8-bit
/// reference, or for text models the Lee-50 Pearson. With several seeds each
/// point is the mean over them and a bar spans their least and greatest.
/// `None` unless some base has at least two strengths.
fn robustness(
    spec: &Spec,
    res: &SweepResults,
    model: &str,
    strength: &Strength,
) -> anyhow::Result<Option<String>> {
    let mut series: Vec<(String, Vec<CurveXy>)> = Vec::new();
    let mut second = "top-1 or agreement with the 8-bit reference (%)";
    let mut seeds = 0;
    for base in ROBUSTNESS_BASES {
        let mut pts: Vec<CurveXy> = curve_points(spec, res, model, base, strength)
            .into_iter()
            .map(|p| {
                if p.rows[0].pearson.is_some() {
                    second = "Lee-50 Pearson x 100";
                }
                seeds = seeds.max(p.rows.len());
                let floor = |v: f64| v.max(1e-6);
                (
                    p.x,
                    (floor(p.error.0), floor(p.error.2), floor(p.error.3)),
                    (
                        p.fidelity.0 * 100.0,
                        p.fidelity.2 * 100.0,
                        p.fidelity.3 * 100.0,
                    ),
                )
            })
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.len() >= 2 {
            series.push((base.to_string(), pts));
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (1000, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(400);
        let all: Vec<&CurveXy> = series.iter().flat_map(|s| s.1.iter()).collect();
        let (x0, x1) = padded(
            all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
        );
        let (l0, l1) = padded(
            all.iter()
                .map(|p| p.1.1.log10())
                .fold(f64::INFINITY, f64::min),
            all.iter()
                .map(|p| p.1.2.log10())
                .fold(f64::NEG_INFINITY, f64::max),
        );
        let (t0, t1) = padded(
            all.iter().map(|p| p.2.1).fold(f64::INFINITY, f64::min),
            all.iter().map(|p| p.2.2).fold(f64::NEG_INFINITY, f64::max),
        );
        let over = if seeds > 1 {
            format!(" (mean, bars: range over {seeds} seeds)")
        } else {
            String::new()
        };
        let colours = [RED, GREEN, BLUE];
        let panels = [
            (
                &top,
                format!("{model}: output error vs {}{over}", strength.knob),
                "log10 output rel. error vs 8-bit ref",
                (l0, l1),
                true,
            ),
            (
                &bottom,
                format!("{model}: fidelity vs {}{over}", strength.knob),
                second,
                (t0, t1),
                false,
            ),
        ];
        for (area, caption, ydesc, (y0, y1), log) in panels {
            let mut c = ChartBuilder::on(area)
                .caption(caption, (FONT, 20))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            c.configure_mesh()
                .x_desc(strength.label)
                .y_desc(ydesc)
                .draw()
                .map_err(err)?;
            for ((name, pts), colour) in series.iter().zip(colours) {
                // (mean, least, greatest) on this panel's axis.
                let y = |p: &CurveXy| {
                    if log {
                        (p.1.0.log10(), p.1.1.log10(), p.1.2.log10())
                    } else {
                        p.2
                    }
                };
                c.draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, y(p).0)),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], colour.stroke_width(2))
                });
                c.draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.0, y(p).0), 4, colour.filled())),
                )
                .map_err(err)?;
                if seeds > 1 {
                    c.draw_series(pts.iter().map(|p| {
                        let (mean, lo, hi) = y(p);
                        ErrorBar::new_vertical(p.0, lo, mean, hi, colour.stroke_width(1), 8)
                    }))
                    .map_err(err)?;
                }
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(Some(s))
}

/// The column-sum histograms of one layer, one line per design (encoding).
fn histogram(m: &crate::run::ModelSummary) -> anyhow::Result<Option<String>> {
    use crate::run::{HISTOGRAM_BIN, HISTOGRAM_MIN};
    if m.histograms.is_empty() {
        return Ok(None);
    }
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (1000, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let layer = &m.histograms[0].layer;
        let lo = HISTOGRAM_MIN as f64;
        let hi = (HISTOGRAM_MIN + HISTOGRAM_BIN * m.histograms[0].counts.len() as i64) as f64;
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: column sums of `{layer}` before the ADC (end bins collect the tails)",
                    m.model
                ),
                (FONT, 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, -6.0f64..0.0)
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("column sum (LSB = one pulse x one level)")
            .y_desc("log10 fraction of column sums")
            .draw()
            .map_err(err)?;
        let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
        for (h, colour) in m.histograms.iter().zip(colours.iter().cycle()) {
            let total = h.counts.iter().sum::<u64>().max(1) as f64;
            let colour = *colour;
            c.draw_series(LineSeries::new(
                h.counts.iter().enumerate().map(|(i, &n)| {
                    let x = (HISTOGRAM_MIN + HISTOGRAM_BIN * i as i64) as f64
                        + HISTOGRAM_BIN as f64 / 2.0;
                    (x, (n as f64 / total).max(1e-6).log10())
                }),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!(
                "{} (ADC {}..{})",
                h.arch, h.adc_range.0, h.adc_range.1
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], colour.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(s))
}

/// Every plot the results support.
///
/// # Errors
/// A plotting failure.
pub fn plots(spec: &Spec, res: &SweepResults) -> anyhow::Result<Vec<Plot>> {
    let mut out = Vec::new();
    for m in &res.models {
        let name = &m.model;
        if let Some(s) = accuracy_vs_energy(res, name)? {
            out.push((
                PathBuf::from(format!(
                    "plots/{}_accuracy_vs_energy.svg",
                    file_component(name)
                )),
                format!("{name}: accuracy vs energy per inference"),
                s,
            ));
        }
        if let Some(s) = ladder(res, name)? {
            out.push((
                PathBuf::from(format!(
                    "plots/{}_in_range_ladder.svg",
                    file_component(name)
                )),
                format!("{name}: in-range ladder"),
                s,
            ));
        }
        if let Some(s) = histogram(m)? {
            out.push((
                PathBuf::from(format!(
                    "plots/{}_column_sum_histogram.svg",
                    file_component(name)
                )),
                format!("{name}: column-sum histogram per encoding"),
                s,
            ));
        }
        for strength in &STRENGTHS {
            if let Some(s) = robustness(spec, res, name, strength)? {
                // Read noise keeps the file name it always had.
                let file = if strength.name == "noise_e" {
                    format!("plots/{}_noise.svg", file_component(name))
                } else {
                    format!(
                        "plots/{}_robustness_{}.svg",
                        file_component(name),
                        strength.name
                    )
                };
                out.push((
                    PathBuf::from(file),
                    format!("{name}: fidelity vs {}", strength.label),
                    s,
                ));
            }
        }
    }
    let mut dnns: Vec<String> = Vec::new();
    for e in &res.energy {
        if !dnns.contains(&e.dnn) {
            dnns.push(e.dnn.clone());
        }
    }
    for d in dnns {
        if let Some(s) = breakdown(res, &d)? {
            out.push((
                PathBuf::from(format!("plots/{}_energy_breakdown.svg", file_component(&d))),
                format!("{d}: energy breakdown"),
                s,
            ));
        }
    }
    Ok(out)
}
