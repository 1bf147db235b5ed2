//! Destination / origin number patterns (ript-profile §3).

use crate::Error;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Any,
    Exact(String),
    Prefix(String),
}

impl Entry {
    fn matches(&self, number: &str) -> bool {
        match self {
            Entry::Any => true,
            Entry::Exact(n) => n == number,
            // ript-profile §3: prefixes apply to E.164 only, never to `number@domain` (nor
            // to anything else that merely starts with `+digits`, e.g. `+1408@evil.example`).
            Entry::Prefix(p) => is_e164(number) && number.starts_with(p.as_str()),
        }
    }
}

/// A comma-separated list of E.164 entries, exact or prefix (`+1408*`), `*` for anything,
/// and `!`-entries that exclude. A pattern of exclusions only means "anything but these".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPattern {
    include: Vec<Entry>,
    exclude: Vec<Entry>,
}

impl NumberPattern {
    pub fn any() -> Self {
        NumberPattern {
            include: vec![Entry::Any],
            exclude: vec![],
        }
    }

    pub fn matches(&self, number: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|e| e.matches(number));
        included && !self.exclude.iter().any(|e| e.matches(number))
    }
}

fn parse_entry(s: &str, index: usize) -> Result<Entry, Error> {
    let bad = Error::Pattern { index };
    if s == "*" {
        return Ok(Entry::Any);
    }
    let (body, prefix) = match s.strip_suffix('*') {
        Some(b) => (b, true),
        None => (s, false),
    };
    if let Some(digits) = body.strip_prefix('+') {
        let ok = digits.bytes().all(|b| b.is_ascii_digit())
            && (prefix || !digits.is_empty())
            && digits.len() <= 15;
        if !ok {
            return Err(bad);
        }
        return Ok(if prefix {
            Entry::Prefix(body.to_owned())
        } else {
            Entry::Exact(body.to_owned())
        });
    }
    // `number@domain` destinations may be listed exactly; prefixes are E.164 only.
    if !prefix && is_number_at_domain(body) {
        return Ok(Entry::Exact(body.to_owned()));
    }
    Err(bad)
}

/// `digits@domain`, the profile's non-E.164 destination form.
pub fn is_number_at_domain(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b))
                && !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        }
        None => false,
    }
}

/// An E.164 number: `+` and 1 to 15 digits.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit()))
}

impl FromStr for NumberPattern {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for (index, raw) in s.split(',').enumerate() {
            let raw = raw.trim();
            match raw.strip_prefix('!') {
                Some(rest) => exclude.push(parse_entry(rest.trim(), index)?),
                None => include.push(parse_entry(raw, index)?),
            }
        }
        if include.is_empty() && exclude.is_empty() {
            return Err(Error::Pattern { index: 0 });
        }
        Ok(NumberPattern { include, exclude })
    }
}

impl fmt::Display for NumberPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = |e: &Entry| match e {
            Entry::Any => "*".to_owned(),
            Entry::Exact(n) => n.clone(),
            Entry::Prefix(p) => format!("{p}*"),
        };
        let parts: Vec<String> = self
            .include
            .iter()
            .map(entry)
            .chain(self.exclude.iter().map(|e| format!("!{}", entry(e))))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for NumberPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NumberPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NumberPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_prefix_and_any() {
        assert!(p("+14085551000").matches("+14085551000"));
        assert!(!p("+14085551000").matches("+14085551001"));
        assert!(p("+1408555*").matches("+14085559999"));
        assert!(!p("+1408555*").matches("+14095559999"));
        assert!(p("*").matches("+33123"));
        assert!(p("*").matches("1000@pbx.example"));
    }

    #[test]
    fn prefixes_never_match_number_at_domain() {
        assert!(!p("+1*").matches("+1000@pbx.example".trim_start_matches('+')));
        assert!(!p("+1*").matches("1000@pbx.example"));
        assert!(p("1000@pbx.example").matches("1000@pbx.example"));
    }

    #[test]
    fn prefixes_match_e164_only() {
        // Regression: `+1408*` matched `+1408@evil.example` (it starts with `+1408`).
        assert!(!p("+1408*").matches("+1408@evil.example"));
        assert!(!p("+1408*").matches("+14085551000@evil.example"));
        assert!(!p("+*").matches("+"), "no digits is not E.164");
        assert!(!p("+1408*").matches("+1408555100012345"), "16 digits");
        assert!(!p("+1408*").matches("+1408 555"));
        assert!(p("+1408*").matches("+1408"));
        assert!(p("+1408*").matches("+140855510001234"), "15 digits");
        // An exclusion prefix likewise only removes E.164 numbers.
        assert!(p("*,!+1408*").matches("+1408@evil.example"));
        assert!(!p("*,!+1408*").matches("+14085551000"));
    }

    #[test]
    fn exclusions_close_the_draft_open_issue() {
        let pat = p("*,!+1900*");
        assert!(pat.matches("+14085551000"));
        assert!(!pat.matches("+19005551000"));
        let only_excl = p("!+1900*, !+1976*");
        assert!(only_excl.matches("+14085551000"));
        assert!(!only_excl.matches("+19765551000"));
        assert_eq!(only_excl.to_string(), "!+1900*,!+1976*");
    }

    #[test]
    fn rejects_garbage_with_the_entry_index() {
        for bad in ["", "+1a", "1408*", "+", "+1,,+2", "abc", "!"] {
            assert!(
                bad.parse::<NumberPattern>().is_err(),
                "{bad:?} must be rejected"
            );
        }
        assert!(matches!(
            "+1,x".parse::<NumberPattern>(),
            Err(Error::Pattern { index: 1 })
        ));
    }

    #[test]
    fn round_trips_through_display() {
        for s in ["*", "+1408*,!+1408555*", "+14085551000,+44*"] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }
}
