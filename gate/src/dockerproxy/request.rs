//! What a Docker API request says, read the way the Docker daemon reads it: the path (API
//! version prefix, percent-decoding, which endpoint and which object), the query string (Go's
//! `url.ParseQuery`), and JSON bodies (Go's `encoding/json`, which matches keys
//! case-insensitively).
//!
//! Every difference between what the proxy checks and what the daemon executes is a bypass, so
//! anything the two could read differently is refused here: `.`/`..`/empty path segments,
//! malformed escapes, `;` in queries, duplicate JSON keys (also when they differ only in case),
//! API versions older than 1.24 (which still took a `HostConfig` at start).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The oldest API version the proxy forwards: 1.24 dropped the `HostConfig` body of
/// `POST /containers/{id}/start`, which would otherwise skip the create checks.
pub const MIN_API_VERSION: (u32, u32) = (1, 24);

/// Why a request cannot even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(text: impl Into<String>) -> Malformed {
    Malformed(text.into())
}

/// A request path: the optional `/v1.xx` prefix and the decoded segments after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    /// `1.41` for `/v1.41/...`.
    pub version: Option<String>,
    /// Percent-decoded segments after the version (never empty strings, `.` or `..`).
    pub segments: Vec<String>,
}

impl ApiPath {
    /// Parses the path of a request URI (without the query).
    pub fn parse(raw: &str) -> Result<ApiPath, Malformed> {
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(malformed("the path must start with /"));
        };
        let mut segments = Vec::new();
        let mut parts = rest.split('/').peekable();
        while let Some(part) = parts.next() {
            let decoded = percent_decode(part, false)?;
            let is_last = parts.peek().is_none();
            if decoded.is_empty() && is_last && !segments.is_empty() {
                return Err(malformed(
                    "a path with a trailing / is not a Docker API path",
                ));
            }
            if decoded.is_empty() || decoded == "." || decoded == ".." {
                return Err(malformed(format!("path segment `{part}` is not allowed")));
            }
            if decoded.contains('/') || decoded.chars().any(char::is_control) {
                return Err(malformed(format!(
                    "path segment `{part}` decodes to a / or a control character"
                )));
            }
            segments.push(decoded);
        }
        let mut version = None;
        if let Some(first) = segments.first()
            && let Some(number) = first.strip_prefix('v')
            && !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            // The daemon's router takes any `v[0-9.]+` as a version; a malformed one is refused
            // rather than guessed at.
            let parsed = parse_version(number)
                .ok_or_else(|| malformed(format!("malformed API version `{first}`")))?;
            if parsed < MIN_API_VERSION {
                return Err(malformed(format!(
                    "API version {number} is older than {}.{}, which the proxy does not forward",
                    MIN_API_VERSION.0, MIN_API_VERSION.1
                )));
            }
            version = Some(number.to_owned());
            segments.remove(0);
        }
        Ok(ApiPath { version, segments })
    }

    /// The version-stripped, decoded path rules match against, e.g. `/containers/abc/start`.
    pub fn route(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }

    /// The path to forward, with segments `start..end` replaced by `replacement` (a full
    /// object id) and every segment re-encoded.
    pub fn render_with(&self, start: usize, end: usize, replacement: &str) -> String {
        let mut out = String::new();
        if let Some(version) = &self.version {
            out.push_str("/v");
            out.push_str(version);
        }
        for (i, segment) in self.segments.iter().enumerate() {
            if i == start {
                out.push('/');
                out.push_str(&percent_encode(replacement));
            }
            if i >= start && i < end {
                continue;
            }
            out.push('/');
            out.push_str(&percent_encode(segment));
        }
        if start >= self.segments.len() {
            out.push('/');
            out.push_str(&percent_encode(replacement));
        }
        out
    }
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor))
}

/// Go's `url.PathUnescape` (`plus_is_space = false`) or `url.QueryUnescape` (true): `%XX`
/// must be two hex digits, and the result must be UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, Malformed> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| malformed(format!("malformed escape in `{text}`")))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| malformed(format!("`{text}` does not decode to UTF-8")))
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `:` `@`.
pub use loop_wire::routes::path_segment as percent_encode;

/// A query string as Go's `url.ParseQuery` reads it: `&`-separated `key=value` pairs, `+` is a
/// space, and `;` is an error. Keys keep their order and repetitions; the daemon reads the
/// first value of most keys and every value of some (`t` of `/build`), so checks look at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `raw` (without the `?`).
    pub fn parse(raw: Option<&str>) -> Result<Query, Malformed> {
        let mut pairs = Vec::new();
        let Some(raw) = raw else {
            return Ok(Query { pairs });
        };
        for part in raw.split('&') {
            if part.is_empty() {
                continue;
            }
            if part.contains(';') {
                return Err(malformed("`;` in the query string"));
            }
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((percent_decode(key, true)?, percent_decode(value, true)?));
        }
        Ok(Query { pairs })
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value the daemon uses (`r.Form.Get`): the first one.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the daemon reads `key` as true (`httputils.BoolValue`).
    pub fn is_true(&self, key: &str) -> bool {
        self.first(key).is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "no" || v == "false" || v == "none")
        })
    }

    /// Replaces every value of `key` with one.
    pub fn set(&mut self, key: &str, value: String) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_owned(), value));
    }

    /// The query as forwarded.
    pub fn encode(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Folds a JSON key the way Go's `encoding/json` compares keys with struct fields
/// (`bytes.EqualFold`): ASCII case, plus the two non-ASCII letters that fold into ASCII ones,
/// `ſ` (U+017F, s) and `K` (U+212A, k).
pub fn fold_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{017F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The entry of `object` whose key folds to `name`'s fold. [`parse_json`] refused duplicates,
/// so there is at most one.
pub fn get_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let want = fold_key(name);
    object
        .iter()
        .find(|(k, _)| fold_key(k) == want)
        .map(|(_, v)| v)
}

/// Like [`get_ci`], mutable.
pub fn get_ci_mut<'a>(object: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Value> {
    let want = fold_key(name);
    object
        .iter_mut()
        .find(|(k, _)| fold_key(k) == want)
        .map(|(_, v)| v)
}

/// The key `object` spells `name` with, or `name` itself when absent (for inserting).
pub fn key_ci(object: &Map<String, Value>, name: &str) -> String {
    let want = fold_key(name);
    object
        .keys()
        .find(|k| fold_key(k) == want)
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

/// Parses a JSON body, refusing keys that repeat within an object (also when they differ only
/// in case): Go keeps the last of them, and the proxy must check the one the daemon uses.
pub fn parse_json(bytes: &[u8]) -> Result<Value, Malformed> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize(&mut de)
        .map_err(|err| malformed(format!("the JSON body is not valid: {err}")))?;
    de.end()
        .map_err(|err| malformed(format!("the JSON body is not valid: {err}")))?;
    Ok(value.0)
}

struct StrictValue(Value);

impl<'de> de::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if !seen.insert(fold_key(&key)) {
                return Err(de::Error::custom(format!(
                    "key `{key}` appears twice (keys are compared without case)"
                )));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// One segment range of [`ApiPath::segments`] naming an object (a container, image, ...);
/// image and container names may span several segments, as the daemon's `{name:.*}` routes
/// allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// First segment.
    pub start: usize,
    /// One past the last segment.
    pub end: usize,
}

impl Span {
    /// The object's name as the daemon reads it.
    pub fn text(self, path: &ApiPath) -> String {
        path.segments[self.start..self.end].join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = ApiPath::parse("/v1.41/containers/abc/start").unwrap();
        assert_eq!(p.version.as_deref(), Some("1.41"));
        assert_eq!(p.route(), "/containers/abc/start");
        let p = ApiPath::parse("/images/library%2Fdebian/json");
        assert!(p.is_err(), "an encoded / inside a segment is refused");
        let p = ApiPath::parse("/images/my%20img/json").unwrap();
        assert_eq!(p.segments[1], "my img");
        for bad in [
            "containers/json",
            "/containers//json",
            "/containers/./json",
            "/containers/x/../json",
            "/containers/%2e%2e/json",
            "/containers/json/",
            "/containers/%zz/json",
            "/v1.23/containers/x/start",
            "/v1..2/_ping",
            "/v1.2.3/_ping",
            "/containers/a%00b/json",
        ] {
            assert!(ApiPath::parse(bad).is_err(), "{bad}");
        }
        assert!(ApiPath::parse("/v1.24/_ping").is_ok());
        assert!(ApiPath::parse("/v2.0/_ping").is_ok());
        // Not a version: `vx`.
        assert_eq!(ApiPath::parse("/vx/y").unwrap().version, None);
        let p = ApiPath::parse("/v1.45/containers/a/b/start").unwrap();
        assert_eq!(
            p.render_with(1, 3, "f00d"),
            "/v1.45/containers/f00d/start",
            "a name spanning segments becomes the one full id"
        );
        let p = ApiPath::parse("/containers/x").unwrap();
        assert_eq!(p.render_with(1, 2, "id"), "/containers/id");
    }

    #[test]
    fn queries_read_like_go() {
        let q = Query::parse(Some("t=a&t=b+c&filters=%7B%7D&x")).unwrap();
        assert_eq!(q.all("t").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(q.first("filters"), Some("{}"));
        assert_eq!(q.first("x"), Some(""));
        assert!(Query::parse(Some("a=1;b=2")).is_err());
        assert!(Query::parse(Some("a=%4")).is_err());
        let q = Query::parse(Some("pull=1&rm=false&q=no&s=%20On")).unwrap();
        assert!(q.is_true("pull"));
        assert!(!q.is_true("rm"));
        assert!(!q.is_true("q"));
        assert!(q.is_true("s"));
        assert!(!q.is_true("absent"));
        let mut q = Query::parse(Some("a=1&a=2")).unwrap();
        q.set("a", "x y/z".into());
        assert_eq!(q.encode(), "a=x%20y%2Fz");
        assert_eq!(
            Query::parse(Some(&q.encode())).unwrap().first("a"),
            Some("x y/z")
        );
    }

    #[test]
    fn json_keys_are_folded_and_duplicates_refused() {
        let v = parse_json(br#"{"HostConfig": {"privileged": true}}"#).unwrap();
        let host = get_ci(v.as_object().unwrap(), "hostconfig").unwrap();
        assert_eq!(
            get_ci(host.as_object().unwrap(), "Privileged"),
            Some(&Value::Bool(true))
        );
        for bad in [
            r#"{"Privileged": false, "privileged": true}"#,
            r#"{"a": 1, "a": 2}"#,
            "{\"Devices\": [], \"Device\u{017F}\": [1]}",
            "{\"NetworkMode\": \"\", \"Networ\u{212A}Mode\": \"host\"}",
            r#"{"a": 1} {"b": 2}"#,
            "[1,",
        ] {
            assert!(parse_json(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(fold_key("Device\u{017F}"), "devices");
        let v = parse_json(br#"{"A": [1, -2, 3.5, null, "x", {"b": false}]}"#).unwrap();
        assert_eq!(v["A"][1], Value::from(-2));
    }
}
