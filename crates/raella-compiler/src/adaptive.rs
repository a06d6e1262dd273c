//! Adaptive weight slicing: per layer, the fewest-slice candidate whose output
//! error on calibration inputs stays within a budget.
//!
//! The search is generic over how a candidate is evaluated (the runtime runs
//! the candidate on the simulated crossbars, with ADC saturation, and compares
//! with the exact integer result) and over the [`ErrorMetric`].
//!
//! Default metric and budget: [`RelativeRms`] (`||y - y_exact||_2 / ||y_exact||_2`
//! over all calibration outputs) with budget [`DEFAULT_BUDGET`] = 0.003. Why: the
//! layer's output is requantised to 8 bits next, and that rounding alone has a
//! relative RMS error of roughly 0.5-1% for typical activation distributions (a
//! uniform step of range/255 against an RMS of range/4..range/8). Independent
//! errors add in quadrature, so an analog error of 0.3% on top of the ~0.7% the
//! 8-bit reference already accepts raises the total by under 10%
//! (`sqrt(0.7^2 + 0.3^2) = 0.76`); at 1% it would raise it by 70%, and deep
//! networks compound per-layer errors. The one public note's budget of 0.09 is on
//! an unspecified normalisation and is not comparable.

use std::fmt;

use ndarray::ArrayView2;

use crate::{CompileError, Slicing};

/// The default error budget of [`RelativeRms`].
pub const DEFAULT_BUDGET: f64 = 0.003;

/// The default candidates, ordered by slice count.
pub const DEFAULT_CANDIDATES: [&str; 4] = ["4-4", "4-2-2", "2-2-2-2", "1x8"];

/// A scalar error between exact and simulated outputs (vectors x outputs).
pub trait ErrorMetric: Send + Sync + fmt::Debug {
    /// Short name for reports.
    fn name(&self) -> &'static str;
    /// The error; 0 when equal.
    fn error(&self, exact: ArrayView2<'_, i64>, simulated: ArrayView2<'_, i64>) -> f64;
}

/// `||y - y_exact||_2 / ||y_exact||_2` over all outputs (0 if both are zero).
#[derive(Debug, Clone, Copy, Default)]
pub struct RelativeRms;

impl ErrorMetric for RelativeRms {
    fn name(&self) -> &'static str {
        "relative_rms"
    }
    fn error(&self, exact: ArrayView2<'_, i64>, simulated: ArrayView2<'_, i64>) -> f64 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (&e, &s) in exact.iter().zip(simulated.iter()) {
            let d = (s - e) as f64;
            num += d * d;
            den += (e as f64) * (e as f64);
        }
        if num == 0.0 {
            0.0
        } else if den == 0.0 {
            f64::INFINITY
        } else {
            (num / den).sqrt()
        }
    }
}

/// `max |y - y_exact| / max |y_exact|`: the worst single output, normalised.
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalisedMaxAbs;

impl ErrorMetric for NormalisedMaxAbs {
    fn name(&self) -> &'static str {
        "normalised_max_abs"
    }
    fn error(&self, exact: ArrayView2<'_, i64>, simulated: ArrayView2<'_, i64>) -> f64 {
        let worst = exact
            .iter()
            .zip(simulated.iter())
            .map(|(e, s)| (s - e).unsigned_abs())
            .max();
        let scale = exact.iter().map(|e| e.unsigned_abs()).max().unwrap_or(0);
        match (worst.unwrap_or(0), scale) {
            (0, _) => 0.0,
            (_, 0) => f64::INFINITY,
            (w, s) => w as f64 / s as f64,
        }
    }
}

/// The adaptive-slicing policy of a layer.
#[derive(Debug)]
pub struct AdaptiveSlicing {
    candidates: Vec<Slicing>,
    budget: f64,
    metric: Box<dyn ErrorMetric>,
}

/// What the search chose, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SlicingChoice {
    /// The slicing chosen.
    pub chosen: Slicing,
    /// True when forced (e.g. the last layer at `1x8`); no candidate was evaluated.
    pub forced: bool,
    /// True when a candidate met the budget (false: the least-error one was taken).
    pub within_budget: bool,
    /// Candidates evaluated, in order, with their error.
    pub trials: Vec<(Slicing, f64)>,
}

impl AdaptiveSlicing {
    /// A policy over `candidates` (sorted here by slice count, stably), budget and metric.
    ///
    /// # Errors
    /// [`CompileError::Adaptive`] for no candidates or a negative/NaN budget.
    pub fn new(
        mut candidates: Vec<Slicing>,
        budget: f64,
        metric: Box<dyn ErrorMetric>,
    ) -> Result<Self, CompileError> {
        if candidates.is_empty() {
            return Err(CompileError::Adaptive("the candidate list is empty".into()));
        }
        if budget.is_nan() || budget < 0.0 {
            return Err(CompileError::Adaptive(format!(
                "budget must be >= 0, got {budget}"
            )));
        }
        candidates.sort_by_key(Slicing::len);
        Ok(Self {
            candidates,
            budget,
            metric,
        })
    }

    /// The default policy: [`DEFAULT_CANDIDATES`], [`DEFAULT_BUDGET`], [`RelativeRms`].
    #[must_use]
    pub fn standard() -> Self {
        let c = DEFAULT_CANDIDATES
            .iter()
            .map(|s| Slicing::parse(s).expect("valid"))
            .collect();
        Self::new(c, DEFAULT_BUDGET, Box::new(RelativeRms)).expect("valid")
    }

    /// Candidates in evaluation order.
    #[must_use]
    pub fn candidates(&self) -> &[Slicing] {
        &self.candidates
    }

    /// The budget.
    #[must_use]
    pub fn budget(&self) -> f64 {
        self.budget
    }

    /// The metric.
    #[must_use]
    pub fn metric(&self) -> &dyn ErrorMetric {
        self.metric.as_ref()
    }

    /// Chooses a slicing. With `force`, returns it unevaluated. Otherwise
    /// evaluates candidates fewest-slices first with `evaluate` (which returns
    /// `(exact, simulated)` outputs) and stops at the first within budget; if
    /// none is, returns the one with the least error.
    ///
    /// # Errors
    /// Whatever `evaluate` returns.
    pub fn select<E>(
        &self,
        force: Option<&Slicing>,
        mut evaluate: impl FnMut(&Slicing) -> Result<f64, E>,
    ) -> Result<SlicingChoice, E> {
        if let Some(f) = force {
            return Ok(SlicingChoice {
                chosen: f.clone(),
                forced: true,
                within_budget: true,
                trials: vec![],
            });
        }
        let mut trials = Vec::with_capacity(self.candidates.len());
        for c in &self.candidates {
            let e = evaluate(c)?;
            trials.push((c.clone(), e));
            if e <= self.budget {
                return Ok(SlicingChoice {
                    chosen: c.clone(),
                    forced: false,
                    within_budget: true,
                    trials,
                });
            }
        }
        let best = trials
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|t| t.0.clone())
            .unwrap_or_else(|| self.candidates[0].clone());
        Ok(SlicingChoice {
            chosen: best,
            forced: false,
            within_budget: false,
            trials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn metrics() {
        let e = array![[3i64, 4], [0, 0]];
        let s = array![[3i64, 4], [0, 0]];
        assert_eq!(RelativeRms.error(e.view(), s.view()), 0.0);
        let s2 = array![[3i64, 4], [0, 5]];
        assert!((RelativeRms.error(e.view(), s2.view()) - 1.0).abs() < 1e-12);
        assert!((NormalisedMaxAbs.error(e.view(), s2.view()) - 1.25).abs() < 1e-12);
    }

    #[test]
    fn fewest_slices_within_budget_wins() {
        let p = AdaptiveSlicing::standard();
        let errs = |s: &Slicing| -> Result<f64, ()> {
            Ok(match s.len() {
                2 => 0.5,
                3 => 0.002,
                _ => 0.0,
            })
        };
        let c = p.select(None, errs).unwrap();
        assert_eq!(c.chosen.to_string(), "4-2-2");
        assert!(c.within_budget);
        assert_eq!(c.trials.len(), 2);
        let forced = Slicing::parse("1x8").unwrap();
        let c = p.select(Some(&forced), errs).unwrap();
        assert!(c.forced && c.trials.is_empty());
        // Nothing within budget: least error.
        let c = p
            .select(None, |s: &Slicing| -> Result<f64, ()> {
                Ok(1.0 / s.len() as f64)
            })
            .unwrap();
        assert_eq!(c.chosen.to_string(), "1x8");
        assert!(!c.within_budget);
    }

    #[test]
    fn bad_policies() {
        assert!(AdaptiveSlicing::new(vec![], 0.1, Box::new(RelativeRms)).is_err());
        let c = vec![Slicing::parse("4-4").unwrap()];
        assert!(AdaptiveSlicing::new(c, f64::NAN, Box::new(RelativeRms)).is_err());
    }
}
