//! Names that become paths and report text: the spec's (the results folder),
//! models', designs' and workloads' (checked when the spec is loaded), and the
//! one mapping of any name, layer names from models included, to a safe single
//! file-name component.
//!
//! The decision: names are restricted to a character set that is safe in a
//! path, a CSV cell and a Markdown table (no `/`, `\`, `|`, quotes, backticks,
//! spaces or control characters; grid points such as
//! `raella[adc_bits=5,noise_e=0.04]` fit), so a bad name is a clear error at
//! load rather than something escaped later. Text from model files (node
//! names) is not ours to restrict: it goes through [`file_component`] for
//! paths and is escaped in Markdown by the report.

use sha2::{Digest, Sha256};

/// Longest name of a spec, model, design or workload, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// The characters a name may hold besides ASCII letters and digits.
pub const NAME_PUNCTUATION: &str = "_-.+=,;:[]()@";

/// Checks a model, design or workload name: 1 to [`MAX_NAME_LEN`] characters,
/// each an ASCII letter or digit or one of [`NAME_PUNCTUATION`], starting with
/// a letter, digit or `_`.
///
/// # Errors
/// Why the name is refused.
pub fn check_name(name: &str) -> Result<(), String> {
    let rule = format!(
        "use 1 to {MAX_NAME_LEN} ASCII letters, digits or `{NAME_PUNCTUATION}`, starting with a letter, digit or '_'"
    );
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || name.chars().count() > MAX_NAME_LEN {
        return Err(rule);
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || NAME_PUNCTUATION.contains(c)))
    {
        return Err(format!("{:?} is not allowed: {rule}", c));
    }
    Ok(())
}

/// Checks the spec's name, which names its results folder (`results/<name>/`)
/// as it is: a [`check_name`] name of letters, digits, `_`, `-` and `.` only.
///
/// # Errors
/// Why the name is refused.
pub fn check_folder_name(name: &str) -> Result<(), String> {
    let rule = "use letters, digits, '_', '-' or '.', starting with a letter, digit or '_' (it names the results folder)";
    check_name(name).map_err(|_| rule.to_string())?;
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Ok(())
    } else {
        Err(rule.into())
    }
}

/// The single file-name component for any name: characters other than ASCII
/// letters, digits, `_`, `-` and `.` become `_`; a result that would be empty,
/// hidden, `.` or `..` gets a leading `_`; a name longer than 100 bytes is cut
/// to 80 and given a hash of the whole, so distinct long names stay distinct.
/// Never a path separator, never a way out of the folder it is joined to.
#[must_use]
pub fn file_component(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    if s.len() > 100 {
        let h = Sha256::digest(name.as_bytes());
        let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
        s.truncate(80);
        s.push('-');
        s.push_str(&hex);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_components() {
        for ok in ["raella", "raella[adc_bits=5,noise_e=0.04]", "m_1.v2", "_x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "..", ".", ".hidden", "-x", "a/b", "a\\b", "a|b", "a b", "a\nb", "a\"b", "a`b", "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(129)).is_err());
        assert!(check_folder_name("default").is_ok());
        assert!(check_folder_name("a[b]").is_err());
        assert_eq!(file_component("raella[adc_bits=5]"), "raella_adc_bits_5_");
        assert_eq!(file_component(".."), "_..");
        assert_eq!(file_component(""), "_");
        assert_eq!(file_component("../../etc/passwd"), "_.._.._etc_passwd");
        let (a, b) = (
            format!("{}a", "x".repeat(200)),
            format!("{}b", "x".repeat(200)),
        );
        assert_ne!(file_component(&a), file_component(&b));
        assert!(file_component(&a).len() <= 100);
    }
}
