//! Robust statistics shared by the trainer and the detector: the median,
//! the median absolute deviation (MAD) scaled to a standard deviation, and
//! the floor under every scale. A spike in the data moves none of them
//! much, which is why they score and trim rather than the mean and the
//! standard deviation.

/// Factor that makes the MAD of normal data estimate its standard
/// deviation.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Smallest scale, as a share of the expected level: a series that barely
/// moves is not flagged for moving by a fraction of a percent.
pub const MIN_RELATIVE_SCALE: f64 = 0.01;

/// Smallest scale in absolute terms, for series whose level is zero.
pub const MIN_ABSOLUTE_SCALE: f64 = 1e-6;

/// Values further than this many robust standard deviations (MADs) from
/// the median are outliers: left out of a spread and of a model's fit.
pub const TRIM_Z: f64 = 3.5;

/// The median of `values`, `None` when empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The MAD of `values` around `center`, scaled to a standard deviation.
pub fn mad_sigma(values: &[f64], center: f64) -> Option<f64> {
    let deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    median(&deviations).map(|mad| mad * MAD_TO_SIGMA)
}

/// The standard deviation of `values` once the outliers (beyond [`TRIM_Z`]
/// MADs from the median) are left out, with `fitted` degrees of freedom
/// used beside the mean: as robust to a spike as the MAD, and much less
/// noisy on a short history. `None` with too few values kept.
pub fn trimmed_sigma(values: &[f64], fitted: usize) -> Option<f64> {
    let center = median(values)?;
    let limit = TRIM_Z * mad_sigma(values, center)?;
    let kept: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| (v - center).abs() <= limit)
        .collect();
    let dof = kept.len().checked_sub(fitted + 1).filter(|d| *d > 0)?;
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let squares: f64 = kept.iter().map(|v| (v - mean).powi(2)).sum();
    Some((squares / dof as f64).sqrt())
}

/// `scale`, raised to the floor for a series at level `level`.
pub fn floored_scale(scale: f64, level: f64) -> f64 {
    scale
        .max(MIN_RELATIVE_SCALE * level.abs())
        .max(MIN_ABSOLUTE_SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn one_spike_barely_moves_the_mad() {
        let calm = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 10.2];
        let mut spiked = calm.to_vec();
        spiked.push(50.0);
        let calm_sigma = mad_sigma(&calm, median(&calm).unwrap()).unwrap();
        let spiked_sigma = mad_sigma(&spiked, median(&spiked).unwrap()).unwrap();
        assert!((spiked_sigma - calm_sigma).abs() < 0.4 * calm_sigma);
    }

    #[test]
    fn the_trimmed_sigma_ignores_a_spike() {
        let calm = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 10.2];
        let mut spiked = calm.to_vec();
        spiked.push(50.0);
        let calm_sigma = trimmed_sigma(&calm, 0).unwrap();
        assert_eq!(trimmed_sigma(&spiked, 0), Some(calm_sigma));
        assert!((calm_sigma - 0.65).abs() < 0.01, "{calm_sigma}");
        assert_eq!(trimmed_sigma(&[1.0], 0), None);
    }

    #[test]
    fn a_flat_series_gets_a_scale_of_one_percent_of_its_level() {
        assert_eq!(floored_scale(0.0, 200.0), 2.0);
        assert_eq!(floored_scale(5.0, 200.0), 5.0);
        assert_eq!(floored_scale(0.0, 0.0), MIN_ABSOLUTE_SCALE);
    }
}
