//! Route policy: decides whether an already verified token may use a route (the 403 step).
//!
//! A route's `[route.policy]` asks for scopes (from `scope` and `scp`), roles (from a configured
//! claim) and claim matches; every requirement must hold. This step only reads claims that a
//! verified signature vouches for, and it must never let a rule pass because its claim is
//! absent or has an unexpected type, never panic on token content, and never put a required
//! role or claim value in the denial (only scopes, which RFC 6750 lets a client see).

use serde_json::{Map, Value};

use crate::auth::jwt::VerifiedToken;
use crate::config::file::{ClaimPath, ClaimRuleSection, PolicySection};

/// A route's requirements in validated form; the default requires nothing beyond a valid token.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    scopes_all: Vec<String>,
    scopes_any: Vec<String>,
    roles: Option<RoleRequirement>,
    claims: Vec<ClaimRule>,
}

#[derive(Debug, Clone)]
struct RoleRequirement {
    claim: ClaimPath,
    all: Vec<String>,
    any: Vec<String>,
}

#[derive(Debug, Clone)]
struct ClaimRule {
    claim: ClaimPath,
    test: ClaimTest,
}

/// Configured values are kept as JSON so a comparison is between two values of one model.
#[derive(Debug, Clone)]
enum ClaimTest {
    Equals(Value),
    Contains(Value),
    AnyOf(Vec<Value>),
}

/// Why a token was refused. `reason` is one of the stable `PolicyDenied::*` strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDenied {
    pub reason: &'static str,
    /// Only for `insufficient_scope`: the scopes that would satisfy the route (the missing ones
    /// of `scopes_all`, then every one of a failed `scopes_any`). Empty for other reasons.
    pub required_scopes: Vec<String>,
}

impl PolicyDenied {
    pub const INSUFFICIENT_SCOPE: &'static str = "insufficient_scope";
    pub const MISSING_ROLE: &'static str = "missing_role";
    pub const CLAIM_MISMATCH: &'static str = "claim_mismatch";

    fn without_detail(reason: &'static str) -> Self {
        PolicyDenied {
            reason,
            required_scopes: Vec::new(),
        }
    }
}

impl Policy {
    /// Validates a route's `[route.policy]`. Refuses rules that could never be satisfied or
    /// that are ambiguous, so a typo cannot silently lock a route or leave it open.
    pub fn build(section: &PolicySection) -> Result<Policy, String> {
        check_scopes("scopes_all", &section.scopes_all)?;
        check_scopes("scopes_any", &section.scopes_any)?;
        check_roles("roles_all", &section.roles_all)?;
        check_roles("roles_any", &section.roles_any)?;

        let wants_roles = !section.roles_all.is_empty() || !section.roles_any.is_empty();
        let roles = match (&section.roles_claim, wants_roles) {
            (Some(claim), true) => Some(RoleRequirement {
                claim: claim.clone(),
                all: section.roles_all.clone(),
                any: section.roles_any.clone(),
            }),
            (None, true) => {
                return Err(
                    "roles_all / roles_any need roles_claim: the claim path that holds \
                            the token's roles (e.g. \"/realm_access/roles\")"
                        .to_string(),
                )
            }
            // A roles_claim alone asks for nothing; it is kept valid so a route can name the
            // claim before its role lists are filled in.
            (_, false) => None,
        };

        let claims = section
            .claims
            .iter()
            .map(build_claim_rule)
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Policy {
            scopes_all: section.scopes_all.clone(),
            scopes_any: section.scopes_any.clone(),
            roles,
            claims,
        })
    }

    /// True when the policy asks for nothing, so any verified token passes.
    pub fn is_empty(&self) -> bool {
        self.scopes_all.is_empty()
            && self.scopes_any.is_empty()
            && self.roles.is_none()
            && self.claims.is_empty()
    }

    /// Scopes first, then roles, then claim rules, so the denial a client sees is the one it can
    /// act on (asking for a wider scope) whenever that is the problem.
    pub fn check(&self, token: &VerifiedToken) -> Result<(), PolicyDenied> {
        let claims = token.claims.as_ref();
        if !self.scopes_all.is_empty() || !self.scopes_any.is_empty() {
            self.check_scopes(claims)?;
        }
        if let Some(roles) = &self.roles {
            roles.check(claims)?;
        }
        for rule in &self.claims {
            if !rule.holds(claims) {
                // The path is config, not token content; the expected value stays out of logs
                // and responses alike.
                tracing::debug!(claim = %rule.claim, "policy claim rule not satisfied");
                return Err(PolicyDenied::without_detail(PolicyDenied::CLAIM_MISMATCH));
            }
        }
        Ok(())
    }

    /// Every requirement, in words, each with whether `token` (if given) meets it, for
    /// `authgate explain`. Built from the same checks as [`Policy::check`].
    pub fn explain(&self, token: Option<&VerifiedToken>) -> Vec<(String, Option<bool>)> {
        let claims = token.map(|t| t.claims.as_ref());
        let mut out = Vec::new();
        if !self.scopes_all.is_empty() || !self.scopes_any.is_empty() {
            let mut words = Vec::new();
            if !self.scopes_all.is_empty() {
                words.push(format!("every scope of [{}]", self.scopes_all.join(" ")));
            }
            if !self.scopes_any.is_empty() {
                words.push(format!("one scope of [{}]", self.scopes_any.join(" ")));
            }
            let held = claims.map(|c| self.check_scopes(c).is_ok());
            out.push((format!("scope: {}", words.join(" and ")), held));
        }
        if let Some(roles) = &self.roles {
            let mut words = Vec::new();
            if !roles.all.is_empty() {
                words.push(format!("every role of [{}]", roles.all.join(" ")));
            }
            if !roles.any.is_empty() {
                words.push(format!("one role of [{}]", roles.any.join(" ")));
            }
            let held = claims.map(|c| roles.check(c).is_ok());
            out.push((
                format!("roles at {}: {}", roles.claim, words.join(" and ")),
                held,
            ));
        }
        for rule in &self.claims {
            let test = match &rule.test {
                ClaimTest::Equals(v) => format!("equals {v}"),
                ClaimTest::Contains(v) => format!("contains {v}"),
                ClaimTest::AnyOf(vs) => format!(
                    "is one of [{}]",
                    vs.iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let held = claims.map(|c| rule.holds(c));
            out.push((format!("claim {} {test}", rule.claim), held));
        }
        out
    }

    fn check_scopes(&self, claims: &Map<String, Value>) -> Result<(), PolicyDenied> {
        let granted = granted_scopes(claims);
        let has = |scope: &String| granted.contains(&scope.as_str());

        let mut required: Vec<String> = self
            .scopes_all
            .iter()
            .filter(|scope| !has(scope))
            .cloned()
            .collect();
        let any_ok = self.scopes_any.is_empty() || self.scopes_any.iter().any(has);
        if !any_ok {
            for scope in &self.scopes_any {
                if !required.contains(scope) {
                    required.push(scope.clone());
                }
            }
        }
        if required.is_empty() {
            Ok(())
        } else {
            Err(PolicyDenied {
                reason: PolicyDenied::INSUFFICIENT_SCOPE,
                required_scopes: required,
            })
        }
    }
}

impl RoleRequirement {
    fn check(&self, claims: &Map<String, Value>) -> Result<(), PolicyDenied> {
        let held: Vec<&str> = match self.claim.lookup(claims) {
            // Some IdPs write a lone role as a plain string; it is one role, not a word list.
            Some(Value::String(role)) => vec![role.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let has = |role: &String| held.contains(&role.as_str());
        let all_ok = self.all.iter().all(has);
        let any_ok = self.any.is_empty() || self.any.iter().any(has);
        if all_ok && any_ok {
            Ok(())
        } else {
            tracing::debug!(claim = %self.claim, "policy role requirement not satisfied");
            Err(PolicyDenied::without_detail(PolicyDenied::MISSING_ROLE))
        }
    }
}

impl ClaimRule {
    fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(actual) = self.claim.lookup(claims) else {
            return false;
        };
        match &self.test {
            ClaimTest::Equals(expected) => json_eq(actual, expected),
            ClaimTest::AnyOf(options) => options.iter().any(|expected| json_eq(actual, expected)),
            ClaimTest::Contains(expected) => match (actual, expected) {
                (Value::Array(items), _) => items.iter().any(|item| json_eq(item, expected)),
                (Value::String(words), Value::String(word)) => {
                    words.split(' ').any(|w| w == word.as_str())
                }
                _ => false,
            },
        }
    }
}

/// The union of `scope` (RFC 8693 / RFC 9068: one space-separated string) and `scp` (an array,
/// or a space-separated string from IdPs that reuse the name). A claim of any other type grants
/// nothing rather than failing the whole check, so the other claim can still satisfy it.
fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    // Split on U+0020 only, as RFC 6749 §3.3 does: splitting on more would turn one odd
    // scope into several granted ones.
    fn words(text: &str) -> impl Iterator<Item = &str> {
        text.split(' ').filter(|w| !w.is_empty())
    }
    let mut granted = Vec::new();
    if let Some(Value::String(text)) = claims.get("scope") {
        granted.extend(words(text));
    }
    match claims.get("scp") {
        Some(Value::String(text)) => granted.extend(words(text)),
        Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
        _ => {}
    }
    granted
}

/// JSON equality with one relaxation: numbers compare by value, so an integer `1` in config
/// matches a float `1.0` in a token and the reverse. Type boundaries stay strict otherwise:
/// the string `"1"` never equals the number `1`, and `true` never equals `"true"`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_eq(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        _ => a == b,
    }
}

/// Exact numeric equality: no detour through f64 for two integers, and a float equals an
/// integer only when it is integral and the same value (so 2^53 + 1 never equals 2^53 as f64).
fn numbers_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    fn integer(n: &serde_json::Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    fn float_is(f: f64, i: i128) -> bool {
        // f64 → i128 is exact for every integral f64 below 2^127 and saturates above; an
        // integer that came from JSON is far below that, so saturation never fakes a match.
        f.is_finite() && f.fract() == 0.0 && f as i128 == i
    }
    match (integer(x), integer(y)) {
        (Some(i), Some(j)) => i == j,
        (Some(i), None) => y.as_f64().is_some_and(|f| float_is(f, i)),
        (None, Some(j)) => x.as_f64().is_some_and(|f| float_is(f, j)),
        (None, None) => x.as_f64() == y.as_f64(),
    }
}

fn check_scopes(key: &str, scopes: &[String]) -> Result<(), String> {
    for scope in scopes {
        if scope.is_empty() {
            return Err(format!("{key} has an empty scope"));
        }
        if scope.chars().any(char::is_whitespace) {
            return Err(format!(
                "{key} entry {scope:?} holds whitespace; scopes are space-separated, so a token \
                 can never grant it (list each scope separately)"
            ));
        }
        // RFC 6749 §3.3 scope-token: these may be echoed in a WWW-Authenticate challenge.
        if !scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        {
            return Err(format!(
                "{key} entry {scope:?} holds a character a scope may not (RFC 6749 §3.3)"
            ));
        }
    }
    Ok(())
}

fn check_roles(key: &str, roles: &[String]) -> Result<(), String> {
    if roles.iter().any(String::is_empty) {
        return Err(format!("{key} has an empty role"));
    }
    Ok(())
}

fn build_claim_rule(rule: &ClaimRuleSection) -> Result<ClaimRule, String> {
    let path = &rule.claim;
    let set = [
        rule.equals.is_some(),
        rule.contains.is_some(),
        rule.any_of.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if set != 1 {
        return Err(format!(
            "claim rule for {path} needs exactly one of equals, contains, any_of (found {set})"
        ));
    }
    let test = if let Some(value) = &rule.equals {
        ClaimTest::Equals(scalar(path, "equals", value)?)
    } else if let Some(value) = &rule.contains {
        ClaimTest::Contains(scalar(path, "contains", value)?)
    } else {
        let values = rule.any_of.as_deref().unwrap_or_default();
        if values.is_empty() {
            return Err(format!(
                "claim rule for {path}: any_of is empty, so no token could ever match"
            ));
        }
        ClaimTest::AnyOf(
            values
                .iter()
                .map(|value| scalar(path, "any_of", value))
                .collect::<Result<_, _>>()?,
        )
    };
    Ok(ClaimRule {
        claim: path.clone(),
        test,
    })
}

/// Only scalars are accepted: comparing whole arrays or tables invites order and type
/// surprises, and a TOML datetime has no JSON counterpart a token could carry.
fn scalar(path: &ClaimPath, key: &str, value: &toml::Value) -> Result<Value, String> {
    match value {
        toml::Value::String(text) => Ok(Value::String(text.clone())),
        toml::Value::Integer(number) => Ok(Value::from(*number)),
        toml::Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(Value::Number)
            .ok_or_else(|| {
                format!("claim rule for {path}: {key} value {number} is not a finite number")
            }),
        toml::Value::Boolean(flag) => Ok(Value::Bool(*flag)),
        other => Err(format!(
            "claim rule for {path}: {key} must be a string, integer, float or boolean, not {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::build(&toml::from_str::<PolicySection>(text).unwrap()).unwrap()
    }

    fn build_err(text: &str) -> String {
        Policy::build(&toml::from_str::<PolicySection>(text).unwrap()).unwrap_err()
    }

    fn token(claims: Value) -> VerifiedToken {
        VerifiedToken::with_claims(claims)
    }

    fn reason(policy: &Policy, claims: Value) -> Option<&'static str> {
        policy.check(&token(claims)).err().map(|d| d.reason)
    }

    #[test]
    fn default_policy_allows_everything() {
        let policy = Policy::default();
        assert!(policy.is_empty());
        assert_eq!(policy.check(&token(json!({}))), Ok(()));
        assert!(policy_is_empty_after_build(""));
        // roles_claim alone asks for nothing.
        assert!(policy_is_empty_after_build(r#"roles_claim = "/roles""#));
    }

    fn policy_is_empty_after_build(text: &str) -> bool {
        policy(text).is_empty()
    }

    #[test]
    fn scopes_all_from_scope_string() {
        let p = policy(r#"scopes_all = ["read", "write"]"#);
        assert!(!p.is_empty());
        assert_eq!(reason(&p, json!({"scope": "read write admin"})), None);
        assert_eq!(reason(&p, json!({"scope": "  read   write "})), None);
        let denied = p.check(&token(json!({"scope": "read"}))).unwrap_err();
        assert_eq!(denied.reason, "insufficient_scope");
        assert_eq!(denied.required_scopes, vec!["write".to_string()]);
        // A prefix or a substring is not a scope.
        let denied = p
            .check(&token(json!({"scope": "readwrite writer"})))
            .unwrap_err();
        assert_eq!(denied.required_scopes, vec!["read", "write"]);
    }

    #[test]
    fn scopes_from_scp_array_and_string_and_union() {
        let p = policy(r#"scopes_all = ["read", "write"]"#);
        assert_eq!(reason(&p, json!({"scp": ["read", "write"]})), None);
        assert_eq!(reason(&p, json!({"scp": "write read"})), None);
        assert_eq!(reason(&p, json!({"scope": "read", "scp": ["write"]})), None);
        assert_eq!(
            reason(&p, json!({"scp": ["read write"]})),
            Some("insufficient_scope"),
            "an array element is one scope, never split"
        );
        // Non-string elements are ignored, the others still count.
        assert_eq!(reason(&p, json!({"scp": ["read", 7, null, "write"]})), None);
    }

    #[test]
    fn scopes_any() {
        let p = policy(r#"scopes_any = ["a", "b"]"#);
        assert_eq!(reason(&p, json!({"scope": "b"})), None);
        let denied = p.check(&token(json!({"scope": "c"}))).unwrap_err();
        assert_eq!(denied.reason, "insufficient_scope");
        assert_eq!(denied.required_scopes, vec!["a", "b"]);
    }

    #[test]
    fn scopes_all_and_any_together() {
        let p = policy(
            r#"scopes_all = ["read"]
               scopes_any = ["a", "b"]"#,
        );
        assert_eq!(reason(&p, json!({"scope": "read a"})), None);
        assert_eq!(
            p.check(&token(json!({"scope": "a"})))
                .unwrap_err()
                .required_scopes,
            vec!["read"]
        );
        assert_eq!(
            p.check(&token(json!({"scope": "x"})))
                .unwrap_err()
                .required_scopes,
            vec!["read", "a", "b"]
        );
    }

    #[test]
    fn missing_or_mistyped_scope_claims_fail() {
        let p = policy(r#"scopes_all = ["read"]"#);
        assert_eq!(reason(&p, json!({})), Some("insufficient_scope"));
        assert_eq!(reason(&p, json!({"scope": 1})), Some("insufficient_scope"));
        assert_eq!(
            reason(&p, json!({"scope": ["read"]})),
            Some("insufficient_scope")
        );
        assert_eq!(
            reason(&p, json!({"scp": {"read": true}})),
            Some("insufficient_scope")
        );
        // A mistyped claim grants nothing but does not hide the other one.
        assert_eq!(reason(&p, json!({"scope": 1, "scp": ["read"]})), None);
    }

    #[test]
    fn roles_all_and_any() {
        let all = policy(
            r#"roles_claim = "/realm_access/roles"
               roles_all = ["admin", "ops"]"#,
        );
        assert_eq!(
            reason(
                &all,
                json!({"realm_access": {"roles": ["ops", "admin", "x"]}})
            ),
            None
        );
        assert_eq!(
            reason(&all, json!({"realm_access": {"roles": ["admin"]}})),
            Some("missing_role")
        );

        let any = policy(
            r#"roles_claim = "/roles"
               roles_any = ["admin", "ops"]"#,
        );
        assert_eq!(reason(&any, json!({"roles": ["ops"]})), None);
        assert_eq!(
            reason(&any, json!({"roles": "admin"})),
            None,
            "a lone string is one role"
        );
        assert_eq!(
            reason(&any, json!({"roles": "admin ops"})),
            Some("missing_role")
        );
        assert_eq!(
            reason(&any, json!({"roles": ["user"]})),
            Some("missing_role")
        );
        assert_eq!(reason(&any, json!({"roles": []})), Some("missing_role"));
    }

    #[test]
    fn roles_missing_or_mistyped_fail() {
        let p = policy(
            r#"roles_claim = "/roles"
               roles_any = ["admin"]"#,
        );
        assert_eq!(reason(&p, json!({})), Some("missing_role"));
        assert_eq!(
            reason(&p, json!({"roles": {"admin": true}})),
            Some("missing_role")
        );
        assert_eq!(reason(&p, json!({"roles": 1})), Some("missing_role"));
        assert_eq!(reason(&p, json!({"roles": null})), Some("missing_role"));
    }

    #[test]
    fn role_claim_path_with_dots_and_slashes() {
        let segments = policy(
            r#"roles_claim = ["https://example.com/roles"]
               roles_all = ["admin"]"#,
        );
        let claims = json!({"https://example.com/roles": ["admin"]});
        assert_eq!(reason(&segments, claims.clone()), None);

        let pointer = policy(
            r#"roles_claim = "/https:~1~1example.com~1roles"
               roles_all = ["admin"]"#,
        );
        assert_eq!(reason(&pointer, claims), None);
        assert_eq!(
            reason(
                &pointer,
                json!({"https:": {"": {"example.com": {"roles": ["admin"]}}}})
            ),
            Some("missing_role"),
            "~1 is a slash inside one segment, not a separator"
        );
    }

    #[test]
    fn claim_equals_is_type_strict() {
        let string_one = policy(
            r#"[[claims]]
               claim = "/level"
               equals = "1""#,
        );
        assert_eq!(reason(&string_one, json!({"level": "1"})), None);
        assert_eq!(
            reason(&string_one, json!({"level": 1})),
            Some("claim_mismatch")
        );

        let number_one = policy(
            r#"[[claims]]
               claim = "/level"
               equals = 1"#,
        );
        assert_eq!(reason(&number_one, json!({"level": 1})), None);
        assert_eq!(
            reason(&number_one, json!({"level": 1.0})),
            None,
            "numbers compare by value"
        );
        assert_eq!(
            reason(&number_one, json!({"level": "1"})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&number_one, json!({"level": true})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&number_one, json!({"level": [1]})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&number_one, json!({"level": 1.5})),
            Some("claim_mismatch")
        );

        let float = policy(
            r#"[[claims]]
               claim = "/level"
               equals = 2.0"#,
        );
        assert_eq!(reason(&float, json!({"level": 2})), None);
        assert_eq!(
            reason(&float, json!({"level": 2.5})),
            Some("claim_mismatch")
        );

        let flag = policy(
            r#"[[claims]]
               claim = "/email_verified"
               equals = true"#,
        );
        assert_eq!(reason(&flag, json!({"email_verified": true})), None);
        assert_eq!(
            reason(&flag, json!({"email_verified": "true"})),
            Some("claim_mismatch")
        );
        assert_eq!(reason(&flag, json!({})), Some("claim_mismatch"));
    }

    #[test]
    fn large_integers_are_compared_exactly() {
        let p = policy(
            r#"[[claims]]
               claim = "/n"
               equals = 9007199254740993"#,
        );
        assert_eq!(reason(&p, json!({"n": 9_007_199_254_740_993_i64})), None);
        assert_eq!(
            reason(&p, json!({"n": 9_007_199_254_740_992_i64})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&p, json!({"n": 9_007_199_254_740_992.0})),
            Some("claim_mismatch")
        );
        assert!(numbers_eq(
            &serde_json::Number::from(u64::MAX),
            &serde_json::Number::from(u64::MAX)
        ));
        assert!(!numbers_eq(
            &serde_json::Number::from(-1_i64),
            &serde_json::Number::from(u64::MAX)
        ));
    }

    #[test]
    fn claim_contains() {
        let p = policy(
            r#"[[claims]]
               claim = "/groups"
               contains = "eng""#,
        );
        assert_eq!(reason(&p, json!({"groups": ["ops", "eng"]})), None);
        assert_eq!(reason(&p, json!({"groups": "ops eng"})), None);
        assert_eq!(
            reason(&p, json!({"groups": "engineering"})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&p, json!({"groups": ["engineering"]})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&p, json!({"groups": {"eng": true}})),
            Some("claim_mismatch")
        );
        assert_eq!(reason(&p, json!({})), Some("claim_mismatch"));

        let number = policy(
            r#"[[claims]]
               claim = "/ids"
               contains = 7"#,
        );
        assert_eq!(reason(&number, json!({"ids": [1, 7]})), None);
        assert_eq!(
            reason(&number, json!({"ids": ["7"]})),
            Some("claim_mismatch")
        );
        assert_eq!(reason(&number, json!({"ids": "7"})), Some("claim_mismatch"));
    }

    #[test]
    fn claim_any_of() {
        let p = policy(
            r#"[[claims]]
               claim = "/tenant"
               any_of = ["acme", "globex"]"#,
        );
        assert_eq!(reason(&p, json!({"tenant": "globex"})), None);
        assert_eq!(
            reason(&p, json!({"tenant": "initech"})),
            Some("claim_mismatch")
        );
        assert_eq!(
            reason(&p, json!({"tenant": ["acme"]})),
            Some("claim_mismatch")
        );
        assert_eq!(reason(&p, json!({"tenant": null})), Some("claim_mismatch"));
    }

    #[test]
    fn every_claim_rule_must_hold_and_paths_nest() {
        let p = policy(
            r#"[[claims]]
               claim = "/org/id"
               equals = "acme"
               [[claims]]
               claim = ["https://example.com/claims", "tier"]
               any_of = ["gold", "silver"]"#,
        );
        let good = json!({"org": {"id": "acme"}, "https://example.com/claims": {"tier": "gold"}});
        assert_eq!(reason(&p, good), None);
        let bad = json!({"org": {"id": "acme"}, "https://example.com/claims": {"tier": "bronze"}});
        assert_eq!(reason(&p, bad), Some("claim_mismatch"));
        assert_eq!(reason(&p, json!({"org": "acme"})), Some("claim_mismatch"));
    }

    #[test]
    fn order_is_scopes_then_roles_then_claims() {
        let p = policy(
            r#"scopes_all = ["read"]
               roles_claim = "/roles"
               roles_all = ["admin"]
               [[claims]]
               claim = "/tenant"
               equals = "acme""#,
        );
        assert_eq!(reason(&p, json!({})), Some("insufficient_scope"));
        assert_eq!(reason(&p, json!({"scope": "read"})), Some("missing_role"));
        assert_eq!(
            reason(&p, json!({"scope": "read", "roles": ["admin"]})),
            Some("claim_mismatch")
        );
        let denied = p
            .check(&token(json!({"scope": "read", "roles": ["user"]})))
            .unwrap_err();
        assert!(
            denied.required_scopes.is_empty(),
            "role names are never echoed"
        );
        assert_eq!(
            reason(
                &p,
                json!({"scope": "read", "roles": ["admin"], "tenant": "acme"})
            ),
            None
        );
    }

    #[test]
    fn build_errors() {
        assert!(build_err(
            r#"[[claims]]
               claim = "/a""#
        )
        .contains("exactly one"));
        assert!(build_err(
            r#"[[claims]]
               claim = "/a"
               equals = 1
               contains = 1"#
        )
        .contains("found 2"));
        assert!(build_err(r#"roles_all = ["admin"]"#).contains("roles_claim"));
        assert!(build_err(r#"roles_any = ["admin"]"#).contains("roles_claim"));
        for bad in [
            r#"equals = ["a"]"#,
            r#"equals = { a = 1 }"#,
            r#"contains = 1979-05-27T07:32:00Z"#,
            r#"any_of = ["a", ["b"]]"#,
            r#"equals = nan"#,
        ] {
            let text = format!("[[claims]]\nclaim = \"/a\"\n{bad}");
            let err = build_err(&text);
            assert!(err.contains("/a"), "{bad}: {err}");
        }
        assert!(build_err(
            r#"[[claims]]
               claim = "/a"
               any_of = []"#
        )
        .contains("empty"));
        assert!(build_err(r#"scopes_all = [""]"#).contains("empty scope"));
        assert!(build_err(r#"scopes_any = ["read write"]"#).contains("whitespace"));
        assert!(build_err(
            r#"roles_claim = "/r"
               roles_any = [""]"#
        )
        .contains("empty role"));
    }
}
