//! Kubernetes quantities (`20Gi`, `500M`), as the API's `maxImageSize` and `regcred check --max-image-size` take
//! them. A leaf: it uses no other module.

/// Parses a quantity such as `20Gi`, `500M` or `1.5Gi` into bytes.
pub fn parse_size(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = number * factor;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a finite, non-negative quantity below u64::MAX; a size is not exact to the byte beyond 2^53"
    )]
    let bytes = (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_quantities() {
        assert_eq!(parse_size("20Gi"), Some(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500M"), Some(500_000_000));
        assert_eq!(parse_size("1.5Ki"), Some(1536));
        assert_eq!(parse_size("1024"), Some(1024));
        for bad in ["", "Gi", "20GB", "-1", "1e3", "x"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
