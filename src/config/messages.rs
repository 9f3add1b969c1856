//! Rewords serde's type-level messages for the person editing the file: Rust type names become
//! what to write (`expected usize` → `expected a non-negative integer`), and an unknown key gets
//! the closest valid key instead of a list of every key of its table. Only wording changes here:
//! the location is the parser's, and a message it does not recognise passes through untouched.

/// The longest list of expected keys or variants still worth printing in full.
const LIST_AT_MOST: usize = 6;

/// Rewrites one message from the TOML deserializer.
pub fn reword(message: &str) -> String {
    let message = message.trim();
    if let Some(rewritten) = unknown_name(message, "unknown field `", "key")
        .or_else(|| unknown_name(message, "unknown variant `", "value"))
    {
        return rewritten;
    }
    rust_types_to_words(message)
}

/// serde's integer names, as they follow "expected ", and what a TOML author should read.
const INTEGER_WORDS: &[(&str, &str)] = &[
    ("usize", "a non-negative integer"),
    ("u64", "a non-negative integer"),
    ("u128", "a non-negative integer"),
    ("u32", "a non-negative integer no larger than 4294967295"),
    ("u16", "a non-negative integer no larger than 65535"),
    ("u8", "a non-negative integer no larger than 255"),
    ("isize", "an integer"),
    ("i64", "an integer"),
    ("i32", "an integer between -2147483648 and 2147483647"),
    ("f64", "a number"),
    ("f32", "a number"),
];

fn rust_types_to_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while let Some(at) = rest.find("expected ") {
        let (before, after) = rest.split_at(at + "expected ".len());
        out.push_str(before);
        for (rust, words) in INTEGER_WORDS {
            if let Some(tail) = after.strip_prefix(rust) {
                // "expected u32" but not "expected u32s" or a longer identifier.
                if !tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    out.push_str(words);
                    rest = tail;
                    continue 'scan;
                }
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `unknown field `x`, expected one of `a`, `b`` → the closest name, or a short list, or a
/// pointer to the reference when the table has many keys and none is close.
fn unknown_name(message: &str, opening: &str, noun: &str) -> Option<String> {
    let rest = message.strip_prefix(opening)?;
    let (written, rest) = rest.split_once('`')?;
    let head = &message[..opening.len() + written.len() + 1];
    let expected = rest.strip_prefix(", ")?;
    // serde's shapes: "there are no fields", "expected `a`", "expected `a` or `b`",
    // "expected one of `a`, `b`, `c`".
    let names: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    if let Some(closest) = closest(written, &names) {
        return Some(format!("{head}, did you mean `{closest}`?"));
    }
    if names.len() <= LIST_AT_MOST {
        return Some(message.to_string());
    }
    Some(format!(
        "{head}; no {noun} here is spelled like it (see config/README.md for the keys of this table)"
    ))
}

/// The candidate nearest to `written` by edit distance, when it is near enough to be the
/// intended name rather than a different word: at most a third of the name's length, and a
/// case or `-`/`_` slip always counts.
fn closest<'a>(written: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let folded = fold(written);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = levenshtein(&folded, &fold(candidate));
        if best.is_none_or(|(shortest, _)| distance < shortest) {
            best = Some((distance, candidate));
        }
    }
    let (distance, name) = best?;
    let allowed = (name.chars().count() / 3).clamp(1, 3);
    (distance <= allowed).then_some(name)
}

fn fold(name: &str) -> Vec<char> {
    name.chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Edit distance (insertions, deletions, substitutions), one row at a time.
fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_type_names_become_words() {
        let cases = [
            (
                "invalid type: string \"many\", expected usize",
                "invalid type: string \"many\", expected a non-negative integer",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "invalid value: integer `-1`, expected a non-negative integer",
            ),
            (
                "invalid value: integer `99999999999`, expected u32",
                "invalid value: integer `99999999999`, expected a non-negative integer no larger than 4294967295",
            ),
            (
                "invalid type: floating point `1.5`, expected u64",
                "invalid type: floating point `1.5`, expected a non-negative integer",
            ),
            // Not a type name: left alone.
            ("expected usizes or a u32x", "expected usizes or a u32x"),
            ("invalid type: integer `1`, expected a string", "invalid type: integer `1`, expected a string"),
        ];
        for (serde, ours) in cases {
            assert_eq!(reword(serde), ours);
        }
    }

    #[test]
    fn unknown_names_get_the_closest_one() {
        let route = "unknown field `path_prefx`, expected one of `name`, `host`, `path_prefix`, `methods`, `upstream`, `strip_prefix`, `preserve_host`, `connect_timeout`";
        assert_eq!(
            reword(route),
            "unknown field `path_prefx`, did you mean `path_prefix`?"
        );
        assert_eq!(
            reword("unknown field `Path-Prefix`, expected one of `name`, `path_prefix`"),
            "unknown field `Path-Prefix`, did you mean `path_prefix`?"
        );
        // Nothing close among many: a pointer to the reference instead of the whole list.
        assert_eq!(
            reword("unknown field `bogus`, expected one of `name`, `host`, `path_prefix`, `methods`, `upstream`, `strip_prefix`, `preserve_host`, `connect_timeout`"),
            "unknown field `bogus`; no key here is spelled like it (see config/README.md for the keys of this table)"
        );
        // Nothing close among few: serde's list is the most useful answer.
        let few = "unknown field `zzz`, expected `cert` or `key`";
        assert_eq!(reword(few), few);
        assert_eq!(
            reword("unknown variant `Public`, expected one of `public`, `optional`, `required`"),
            "unknown variant `Public`, did you mean `public`?"
        );
        assert_eq!(
            reword("unknown field `x`, there are no fields"),
            "unknown field `x`, there are no fields"
        );
    }

    #[test]
    fn edit_distance() {
        let d = |a: &str, b: &str| levenshtein(&fold(a), &fold(b));
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("auth", "authn"), 1);
        assert_eq!(d("path_prefix", "path_prefix"), 0);
        // Short names need a near-exact spelling: "bogus" is not "host".
        assert_eq!(closest("bogus", &["host", "name"]), None);
        assert_eq!(closest("authn", &["server", "auth"]), Some("auth"));
    }
}
