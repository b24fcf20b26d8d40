//! Glob matching for names: namespace and ServiceAccount patterns, and the host labels of credential keys.

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_match_with(pattern, text, false)
}

/// [`glob_match`], where `?` also matches any single character when `question_mark` is set (Go's `filepath.Match`
/// for a host label, as the kubelet uses it). Patterns and texts are ASCII: both are validated names.
pub fn glob_match_with(pattern: &str, text: &str, question_mark: bool) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == t[ti] || (question_mark && p[pi] == b'?')) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("team-*", "team-a", true),
            ("team-*", "team-", true),
            ("team-*", "tea", false),
            ("*", "anything", true),
            ("*-prod", "shop-prod", true),
            ("*-prod", "shop-prod-2", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**", "", true),
        ] {
            assert_eq!(glob_match(p, t), m, "{p} vs {t}");
        }
    }
}
