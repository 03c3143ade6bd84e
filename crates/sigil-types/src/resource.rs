//! Resource indicators (RFC 8707 §2): absolute URIs without a fragment.

use crate::ParseError;

/// A protected resource's identifier, as used in the `resource` parameter and the token `aud`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ResourceUri(String);

impl ResourceUri {
    /// RFC 8707 §2: "MUST be an absolute URI … MUST NOT include a fragment component".
    /// Kept exactly as given (no normalisation), because `aud` is compared byte for byte.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() > 2048 {
            return Err(ParseError::new("resource uri", "must be at most 2048 bytes"));
        }
        let url =
            url::Url::parse(s).map_err(|e| ParseError::new("resource uri", format!("not an absolute uri: {e}")))?;
        if url.fragment().is_some() || s.contains('#') {
            return Err(ParseError::new("resource uri", "must not include a fragment"));
        }
        if url.cannot_be_a_base() {
            if url.scheme() != "urn" {
                return Err(ParseError::new("resource uri", "must be a hierarchical uri or a urn"));
            }
        } else {
            check_url_spelling(s, &url)?;
        }
        check_uri_characters(s, &url)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same URL written the other way at the root: `https://api.example.com` and
    /// `https://api.example.com/` are one URL (a parser writes the second, MCP's canonical form
    /// is the first), so a client that sends one finds a resource registered as the other.
    /// `None` for URIs with a path or a query, and for URNs.
    pub fn root_twin(&self) -> Option<Self> {
        let url = url::Url::parse(&self.0).ok()?;
        if url.cannot_be_a_base() || url.path() != "/" || url.query().is_some() {
            return None;
        }
        Some(match self.0.strip_suffix('/') {
            Some(bare) => Self(bare.to_owned()),
            None => Self(format!("{}/", self.0)),
        })
    }

    /// Whether it spells out its scheme's default port (`https://x:443/`), which a URL parser
    /// drops: clients would send it without the port. Refused when a resource is registered;
    /// not by [`Self::parse`], which also reads URIs stored before that rule.
    pub fn names_default_port(&self) -> bool {
        let Ok(url) = url::Url::parse(&self.0) else {
            return false;
        };
        let after_host = url
            .host_str()
            .and_then(|h| self.0.split_once("://").and_then(|(_, rest)| rest.strip_prefix(h)))
            .unwrap_or_default();
        after_host.starts_with(':') && url.port().is_none()
    }

    /// Whether `registered` is this URI, or its [`Self::root_twin`].
    pub fn is_same_url(&self, registered: &str) -> bool {
        self.0 == registered || self.root_twin().is_some_and(|t| t.0 == registered)
    }

    /// Whether it can name a protected resource in RFC 9728 metadata, which needs an https URL
    /// (§1.2); http is accepted on a loopback host, for development, as OAuth does for
    /// redirect URIs (RFC 8252 §7.3).
    pub fn is_protected_resource_url(&self) -> bool {
        let Ok(url) = url::Url::parse(&self.0) else {
            return false;
        };
        match url.scheme() {
            "https" => true,
            "http" => match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            },
            _ => false,
        }
    }
}

/// Only characters RFC 3986 §2 allows, each `%` starting a two-digit escape, and (for a
/// URL) a host of DNS labels: written any other way, a client that parses the URI would send
/// and compare another string than the one registered (a space as `%20`, `\` as `/`).
fn check_uri_characters(s: &str, url: &url::Url) -> Result<(), ParseError> {
    let bad = |why: String| Err(ParseError::new("resource uri", why));
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return bad(format!("must not contain {c:?} (RFC 3986 §2: percent-encode it)"));
    }
    let bytes = s.as_bytes();
    let escapes_ok = bytes.iter().enumerate().filter(|(_, b)| **b == b'%').all(|(i, _)| {
        bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return bad("has a % that does not start a two-digit escape".into());
    }
    if let Some(url::Host::Domain(host)) = url.host() {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !host.split('.').all(label_ok) {
            return bad(format!("{host} is not a host name of DNS labels"));
        }
    }
    Ok(())
}

/// A resource URL is compared byte for byte (as `aud`, and by clients that match RFC 9728
/// metadata), so it must be spelled the one way a URL parser would: no credentials, a lowercase
/// scheme and host, no `.` or `..` segments.
fn check_url_spelling(s: &str, url: &url::Url) -> Result<(), ParseError> {
    let bad = |why: &str| Err(ParseError::new("resource uri", why.to_owned()));
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry a user name or password");
    }
    let Some(rest) = s.strip_prefix(url.scheme()).and_then(|r| r.strip_prefix("://")) else {
        return bad("must have a lowercase scheme followed by ://");
    };
    if !url.host_str().is_some_and(|h| rest.starts_with(h)) {
        return bad("must have a lowercase host name, as a URL parser writes it");
    }
    if crate::has_dot_segment(s) {
        return bad("must not have . or .. path segments");
    }
    Ok(())
}

impl std::fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ResourceUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8707_rules() {
        assert!(ResourceUri::parse("https://api.example.com/mcp").is_ok());
        assert!(ResourceUri::parse("urn:example:hr").is_ok());
        assert!(ResourceUri::parse("https://api.example.com/#frag").is_err());
        assert!(ResourceUri::parse("/relative").is_err());
        assert!(ResourceUri::parse("not a uri").is_err());
        assert!(ResourceUri::parse("https://api.example.com").is_ok());
        assert!(ResourceUri::parse("https://api.example.com:8443/v1?tenant=1").is_ok());
        assert!(ResourceUri::parse("http://[::1]:8080/mcp").is_ok());
        assert!(ResourceUri::parse("https://api.example.com/a%20b?x=%2F&y=~1").is_ok());
        assert!(ResourceUri::parse("http://127.0.0.1:9/mcp").is_ok());
    }

    #[test]
    fn a_root_url_has_one_twin_and_a_default_port_is_told() {
        let twin = |s: &str| ResourceUri::parse(s).unwrap().root_twin().map(|t| t.0);
        assert_eq!(
            twin("https://api.example.com").as_deref(),
            Some("https://api.example.com/")
        );
        assert_eq!(
            twin("https://api.example.com/").as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(twin("http://[::1]:8080").as_deref(), Some("http://[::1]:8080/"));
        assert_eq!(twin("https://api.example.com/mcp"), None);
        assert_eq!(twin("https://api.example.com/?a=1"), None);
        assert_eq!(twin("urn:example:hr"), None);
        let default_port = |s: &str| ResourceUri::parse(s).unwrap().names_default_port();
        for s in [
            "https://example.com:443/p",
            "http://localhost:80/api",
            "https://example.com:443",
            "http://[::1]:80/p",
        ] {
            assert!(default_port(s), "{s}");
        }
        for s in [
            "https://example.com:8443/p",
            "https://example.com/p",
            "urn:example:a",
            "http://[::1]:8080/",
        ] {
            assert!(!default_port(s), "{s}");
        }
    }

    #[test]
    fn one_spelling_per_resource_url() {
        for s in [
            "https://user:pw@api.example.com/mcp",
            "https://user@api.example.com/mcp",
            "HTTPS://api.example.com/mcp",
            "https://API.example.com/mcp",
            "https://api.example.com/a/../mcp",
            "https://api.example.com/./mcp",
            "https://api.example.com/a/%2E%2e/mcp",
            "https://api.example.com/mcp/..",
            "https://api.example.com/a b",
            "https://api.example.com/a\tb",
            "https://api.example.com/\"x\"",
            "https://api.example.com/a\\b",
            "https://api.example.com/{x}",
            "https://api.example.com/café",
            "https://api.example.com/%zz",
            "https://api.example.com/%4",
            "https://-bad-.example/api",
            "https://a..b/api",
            "urn:example:a b",
        ] {
            assert!(ResourceUri::parse(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn rfc9728_identifiers_are_https_urls() {
        let is = |s: &str| ResourceUri::parse(s).unwrap().is_protected_resource_url();
        assert!(is("https://api.example.com/mcp"));
        assert!(is("http://127.0.0.1:8931/mcp") && is("http://localhost/mcp") && is("http://[::1]/"));
        assert!(!is("http://api.example.net/v1"));
        assert!(!is("urn:example:api"));
    }
}
