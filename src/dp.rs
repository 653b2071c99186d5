//! Differential privacy: the discrete Laplace mechanism, drawn from a keyed pseudorandom
//! stream, and the threshold for releasing rows whose keys are data-dependent.
//!
//! Noise is integer-valued and sampled exactly with integer arithmetic (Canonne, Kamath and
//! Steinke, "The Discrete Gaussian for Differential Privacy", 2020, Algorithms 1 and 2):
//! floating-point Laplace noise leaks through its rounding (Mironov 2012). The random bits come
//! from BLAKE3's extendable output under a release key derived from the master, keyed by
//! (table, date, row keys, measure, true value) (decision 5): re-releasing the same data gives
//! the same noise, so repeated runs cannot be averaged, while any change to the true value
//! gives fresh noise (and the ledger charges ε again).

/// A stream of uniformly random bits: BLAKE3's XOF under a secret key.
pub struct RandomStream {
    reader: blake3::OutputReader,
}

impl RandomStream {
    /// The stream for one released cell. `key` is the release key of the cell's date; `label`
    /// names the cell (table, row keys, measure) and its true value.
    pub fn for_cell(key: &[u8; 32], label: &[u8]) -> RandomStream {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&(label.len() as u64).to_le_bytes());
        h.update(label);
        RandomStream {
            reader: h.finalize_xof(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.reader.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Bernoulli(num/den), 0 ≤ num ≤ den.
    fn bernoulli(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// Bernoulli(exp(−num/den)) for num/den ≥ 0 (CKS Algorithm 1).
    fn bernoulli_exp(&mut self, mut num: u64, den: u64) -> bool {
        while num > den {
            if !self.bernoulli_exp(den, den) {
                return false;
            }
            num -= den;
        }
        // 0 ≤ γ = num/den ≤ 1
        let mut k = 1u64;
        while self.bernoulli(num, den.saturating_mul(k)) {
            k += 1;
        }
        k % 2 == 1
    }

    /// Discrete Laplace with scale `t/s`: P(x) ∝ exp(−|x|·s/t) (CKS Algorithm 2).
    pub fn discrete_laplace(&mut self, s: u64, t: u64) -> i64 {
        loop {
            let u = self.below(t);
            if !self.bernoulli_exp(u, t) {
                continue;
            }
            let mut v = 0u64;
            while self.bernoulli_exp(1, 1) {
                v += 1;
            }
            let x = u + t * v;
            let y = (x / s) as i64;
            let negative = self.bernoulli(1, 2);
            if negative && y == 0 {
                continue;
            }
            return if negative { -y } else { y };
        }
    }
}

/// ε as a rational with denominator 10⁶, so scales are exact integers ratios.
pub const EPSILON_DENOMINATOR: u64 = 1_000_000;

/// The discrete Laplace scale `sensitivity / epsilon` as (s, t) with scale = t/s. ε is rounded
/// down to a multiple of 10⁻⁶, so the noise is never smaller than asked.
pub fn laplace_scale(sensitivity: u64, epsilon: f64) -> (u64, u64) {
    let s = ((epsilon * EPSILON_DENOMINATOR as f64).floor() as u64).max(1);
    (s, sensitivity * EPSILON_DENOMINATOR)
}

/// The release threshold for a row with data-dependent keys: a row that only one visitor
/// made passes with probability at most `delta` in total over the `rows_per_visitor` rows that
/// visitor can touch (Laplace thresholding, as PipelineDP does): τ = 1 + b·ln(R / (2δ)).
pub fn threshold(scale: f64, delta: f64, rows_per_visitor: u64) -> f64 {
    1.0 + scale * ((rows_per_visitor as f64) / (2.0 * delta)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dp_noise_is_deterministic_per_cell_and_differs_across_cells() {
        let key = [9u8; 32];
        let a =
            RandomStream::for_cell(&key, b"pages|2026-11-03|/|visitors|17").discrete_laplace(1, 4);
        let b =
            RandomStream::for_cell(&key, b"pages|2026-11-03|/|visitors|17").discrete_laplace(1, 4);
        assert_eq!(a, b);
        let draws: Vec<i64> = (0..50)
            .map(|i| {
                RandomStream::for_cell(&key, format!("cell {i}").as_bytes()).discrete_laplace(1, 4)
            })
            .collect();
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    /// The empirical distribution of 200 000 draws matches the discrete Laplace pmf
    /// P(x) = (1−q)/(1+q)·q^|x|, q = exp(−1/b), within 5 standard errors of a binomial
    /// proportion at every x in −8..=8, and its variance 2q/(1−q)² within 5 standard errors.
    #[test]
    fn dp_discrete_laplace_has_the_declared_distribution() {
        let (s, t) = laplace_scale(2, 1.0); // scale b = 2
        let b = t as f64 / s as f64;
        assert_eq!(b, 2.0);
        let q = (-1.0 / b).exp();
        let n = 200_000usize;
        let mut stream =
            RandomStream::for_cell(&[1u8; 32], b"fixed seed for the distribution test");
        let draws: Vec<i64> = (0..n).map(|_| stream.discrete_laplace(s, t)).collect();
        for x in -8i64..=8 {
            let p = (1.0 - q) / (1.0 + q) * q.powi(x.unsigned_abs() as i32);
            let f = draws.iter().filter(|d| **d == x).count() as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((f - p).abs() < 5.0 * se, "x = {x}: frequency {f}, pmf {p}");
        }
        let mean = draws.iter().sum::<i64>() as f64 / n as f64;
        let var = 2.0 * q / (1.0 - q).powi(2);
        assert!(mean.abs() < 5.0 * (var / n as f64).sqrt(), "mean {mean}");
        let emp_var = draws
            .iter()
            .map(|d| (*d as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        // The variance of the sample variance of a Laplace-like law: (μ4 − σ⁴)/n, with
        // μ4 ≤ 6σ⁴ for the (discrete) Laplace; 5 standard errors.
        let se_var = (5.0 * var * var / n as f64).sqrt();
        assert!(
            (emp_var - var).abs() < 5.0 * se_var,
            "variance {emp_var} vs {var}"
        );
    }

    #[test]
    fn dp_threshold_grows_with_scale_and_shrinking_delta() {
        let t = threshold(2.0, 1e-6, 1);
        assert!((t - (1.0 + 2.0 * (1.0f64 / 2e-6).ln())).abs() < 1e-9);
        assert!(threshold(2.0, 1e-9, 1) > t);
        assert!(threshold(4.0, 1e-6, 1) > t);
        assert!(threshold(2.0, 1e-6, 5) > t);
    }
}

/// Contribution bounds, enforced before aggregation (per visitor and day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bounds {
    pub max_visits_per_day: u32,
    pub max_pageviews_per_visit: u32,
    pub max_rows_per_table: u32,
    /// Each visit's duration counts at most this much in the duration sum.
    pub max_duration_s: i64,
    /// From the pipeline's goals and funnels (not settings): goals, funnel steps in all, and
    /// the largest value of one conversion (minor units).
    #[serde(skip)]
    pub goals: u32,
    #[serde(skip)]
    pub funnel_steps: u32,
    #[serde(skip)]
    pub max_goal_value: i64,
}

/// A pipeline's differential-privacy settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DpSettings {
    pub epsilon_budget: f64,
    pub window_days: u32,
    /// ε per table per released day.
    pub epsilon: f64,
    pub delta: f64,
    pub bounds: Bounds,
}

impl Bounds {
    /// (rows one visitor-day can touch, L1 sensitivity of each measure in
    /// `TableName::measures` order) under the bounds.
    pub fn sensitivity(&self, table: crate::aggregate::TableName) -> (u64, Vec<u64>) {
        use crate::aggregate::TableName::*;
        let n = u64::from(self.max_visits_per_day);
        let p = u64::from(self.max_pageviews_per_visit);
        let m = u64::from(self.max_rows_per_table);
        let d = self.max_duration_s.max(1) as u64;
        let g = u64::from(self.goals);
        let v = self.max_goal_value.max(0) as u64;
        let steps = u64::from(self.funnel_steps);
        let models = crate::aggregate::MODELS.len() as u64;
        match table {
            Overview => (1, vec![1, n, n * p, n, n * d]),
            // A visit falls in one row, and a visitor's visits in at most min(N, M) rows.
            Hourly => (n.min(m), vec![n.min(m), n, n * p]),
            Pages => (m, vec![m, n * p, n, n]),
            Referrers | Devices => (n.min(m), vec![n.min(m), n]),
            Channels | Campaigns => (n.min(m), vec![n.min(m), n, n * p, n, n * g, n, n * g * v]),
            // A visit converts each goal at most once, in its own campaign's row.
            CampaignGoals => (n * g, vec![n * g, n * g, n * g * v]),
            Goals => (g, vec![g, n * g, n * g * v]),
            Funnels => (steps, vec![steps, n * steps]),
            // Each conversion hands out one conversion (10⁶ millionths) and its value per model,
            // over at most M touches (with DP on the path is cut to its last M).
            Attribution => {
                let rows = models * g * n * m;
                (
                    rows,
                    vec![rows, models * n * g * 1_000_000, models * n * g * v],
                )
            }
            // Three dimensions; a visitor's visits fall in at most min(N, 5) buckets of each.
            Loyalty => (3 * n.min(5), vec![3 * n.min(5), 3 * n]),
            Uniques => (2, vec![2]),
        }
    }
}
