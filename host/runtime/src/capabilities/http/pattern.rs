//! `scheme://host[:port]` patterns: what `allowed_outbound_hosts` entries mean.

use std::fmt;

/// One allowed destination: a scheme, a host (exact, `*.domain` for its subdomains, or `*`
/// for any) and a port (exact, the scheme's default when left out, or `*` for any). Hosts
/// compare case-insensitively and without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Any,
}

impl Scheme {
    fn default_port(self) -> Option<u16> {
        match self {
            Self::Http => Some(80),
            Self::Https => Some(443),
            Self::Any => None,
        }
    }
}

/// Why an `allowed_outbound_hosts` entry is not a host pattern; each names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHostPattern {
    /// No `://`.
    #[error("`{0}` is not scheme://host[:port]")]
    NotAPattern(String),
    /// A scheme other than http, https or `*`.
    #[error("`{entry}`: the scheme `{scheme}` is not http or https")]
    Scheme {
        /// The entry.
        entry: String,
        /// Its scheme.
        scheme: String,
    },
    /// A user, path, query or fragment besides the host.
    #[error("`{0}`: only scheme://host[:port], without user, path or query")]
    NotJustAHost(String),
    /// A port that is neither a number nor `*`.
    #[error("`{entry}`: `{port}` is not a port")]
    Port {
        /// The entry.
        entry: String,
        /// Its port.
        port: String,
    },
    /// A host that is not a name, an address or `*.domain`.
    #[error("`{entry}`: `{host}` is not a host name or `*.domain`")]
    Host {
        /// The entry.
        entry: String,
        /// Its host.
        host: String,
    },
}

impl HostPattern {
    /// Parses `scheme://host[:port]`; the error says what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, BadHostPattern> {
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = lower
            .split_once("://")
            .ok_or_else(|| BadHostPattern::NotAPattern(text.to_owned()))?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "*" => Scheme::Any,
            other => {
                return Err(BadHostPattern::Scheme {
                    entry: text.to_owned(),
                    scheme: other.to_owned(),
                });
            }
        };
        if rest.contains(['/', '@', '?', '#']) {
            return Err(BadHostPattern::NotJustAHost(text.to_owned()));
        }
        let (host, port) = match rest.find(']') {
            Some(end) => (&rest[..=end], rest[end + 1..].strip_prefix(':')),
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        let port = match port {
            None => scheme.default_port(),
            Some("*") => None,
            Some(port) => Some(port.parse::<u16>().map_err(|_| BadHostPattern::Port {
                entry: text.to_owned(),
                port: port.to_owned(),
            })?),
        };
        let host = normalize_host(host);
        let valid = host == "*"
            || (!host.is_empty()
                && host.trim_start_matches("*.").chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':')
                }));
        if !valid {
            return Err(BadHostPattern::Host {
                entry: text.to_owned(),
                host,
            });
        }
        Ok(Self { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` matches.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_matches = match self.scheme {
            Scheme::Any => scheme == "http" || scheme == "https",
            Scheme::Http => scheme == "http",
            Scheme::Https => scheme == "https",
        };
        scheme_matches
            && self.port.is_none_or(|allowed| allowed == port)
            && host_matches(&self.host, &normalize_host(host))
    }

    /// Whether everything `other` allows, `self` allows too.
    pub fn covers(&self, other: &Self) -> bool {
        let scheme = self.scheme == Scheme::Any || self.scheme == other.scheme;
        let port = match (self.port, other.port) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
        let host = match (self.host.as_str(), other.host.as_str()) {
            ("*", _) => true,
            (_, "*") => false,
            (mine, theirs) => match (mine.strip_prefix("*."), theirs.strip_prefix("*.")) {
                (Some(domain), Some(their_domain)) => {
                    their_domain == domain || their_domain.ends_with(&format!(".{domain}"))
                }
                (Some(_), None) => host_matches(mine, theirs),
                (None, _) => mine == theirs,
            },
        };
        scheme && port && host
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Any => "*",
        };
        match self.port {
            Some(port) => write!(f, "{scheme}://{}:{port}", self.host),
            None => write!(f, "{scheme}://{}:*", self.host),
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `pattern` (exact, `*.domain` or `*`) matches the normalized `host`.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        _ if pattern == "*" => true,
        Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, scheme: &str, host: &str, port: u16) -> bool {
        HostPattern::parse(pattern)
            .unwrap()
            .allows(scheme, host, port)
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let p = "https://api.example.com";
        assert!(allows(p, "https", "api.example.com", 443));
        assert!(allows(p, "https", "API.Example.COM.", 443));
        assert!(
            !allows(p, "http", "api.example.com", 80),
            "scheme downgrade"
        );
        assert!(!allows(p, "https", "api.example.com", 8443), "other port");
        assert!(!allows(p, "https", "api.example.com.evil.net", 443));
        assert!(!allows(p, "https", "evilapi.example.com", 443));
        assert!(allows(
            "https://*.cdn.example.com",
            "https",
            "a.b.cdn.example.com",
            443
        ));
        assert!(!allows(
            "https://*.cdn.example.com",
            "https",
            "cdn.example.com",
            443
        ));
        assert!(allows("http://localhost:*", "http", "localhost", 9000));
        assert!(allows("*://*:*", "http", "anything.test", 1));
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (entry, reason) in [
            ("api.example.com", "scheme://host"),
            ("ftp://x.com", "not http or https"),
            ("https://user@x.com", "without user"),
            ("https://x.com/path", "without user, path"),
            ("https://x.com:99999", "not a port"),
            ("https://", "not a host"),
        ] {
            let err = HostPattern::parse(entry).unwrap_err();
            assert!(err.to_string().contains(reason), "{entry}: {err}");
        }
    }

    #[test]
    fn a_wider_pattern_covers_a_narrower_one() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        assert!(p("https://*.example.com").covers(&p("https://api.example.com")));
        assert!(p("https://*.example.com").covers(&p("https://*.cdn.example.com")));
        assert!(!p("https://*.example.com").covers(&p("https://example.com")));
        assert!(!p("https://*.example.com").covers(&p("http://api.example.com")));
        assert!(!p("https://api.example.com").covers(&p("https://api.example.com:8443")));
        assert!(p("https://api.example.com:*").covers(&p("https://api.example.com:8443")));
        assert!(p("*://*:*").covers(&p("http://x.test:1")));
        assert!(!p("https://x.test").covers(&p("https://*")));
    }
}
