//! Which `Host` GraphQL answers to on a server without a token.
//!
//! A page of any site can make its own name resolve to 127.0.0.1 (DNS
//! rebinding): its scripts are then same-origin with a server on its
//! visitor's machine, read `/graphql` and open `/graphql/ws` like the
//! dashboard does, with no CORS or `Origin` check to stop them. Such a
//! request names the site in `Host`, so without a token GraphQL answers
//! only requests naming an IP address, `localhost` (or a name under
//! `.localhost`), or a host of `CALLTRAIL_ALLOWED_HOSTS`. With a token, the
//! token is the check: a rebinding page does not have it.

use axum::http::{HeaderMap, header};

/// The host names `CALLTRAIL_ALLOWED_HOSTS` lists, lowercased (`*`: any).
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(std::sync::Arc<[String]>);

impl AllowedHosts {
    /// `CALLTRAIL_ALLOWED_HOSTS`: host names (a port is ignored: the check
    /// is by name), or `*`. Anything else (a URL, a pattern) would never
    /// match a `Host` and is refused, naming the setting.
    pub fn parse(hosts: &[String]) -> Result<Self, String> {
        let mut names = Vec::new();
        for entry in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
            if entry == "*" {
                names.push(entry.to_owned());
                continue;
            }
            let name = host_name(entry)
                .filter(|name| {
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
                })
                .ok_or_else(|| {
                    format!(
                        "CALLTRAIL_ALLOWED_HOSTS: {entry:?} is not a host name like calltrail.internal \
                         (no scheme, path or pattern; `*` alone allows any)"
                    )
                })?;
            names.push(name.trim_end_matches('.').to_ascii_lowercase());
        }
        Ok(Self(names.into()))
    }

    /// Whether a request with these headers may use GraphQL without a
    /// token: no `Host` (not a browser: every browser sends one), or a host
    /// that names this machine or a network address rather than a site.
    pub fn allow(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST) else {
            return true;
        };
        let Some(name) = host.to_str().ok().and_then(host_name) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost"
            || name.ends_with(".localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.0.iter().any(|h| h == "*" || *h == name)
    }
}

/// The name in a `Host` value, without its port (`[::1]:8080` → `::1`).
fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(inside);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then_some(name)
}

/// The refusal's message.
pub const REFUSED: &str = "this server has no API token and answers GraphQL only at an IP address or \
     localhost: add this host name to CALLTRAIL_ALLOWED_HOSTS, or set CALLTRAIL_API_TOKEN";

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(hosts: &[&str], host: Option<&str>) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, h.parse().unwrap());
        }
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        AllowedHosts::parse(&hosts).unwrap().allow(&headers)
    }

    #[test]
    fn addresses_and_localhost_are_answered_other_names_only_when_listed() {
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:3000",
            "localhost.",
        ] {
            assert!(allowed(&[], Some(host)), "{host}");
        }
        assert!(allowed(&[], None), "no Host: not a browser");
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "",
            "[::1",
            "localhost:port",
        ] {
            assert!(!allowed(&[], Some(host)), "{host}");
        }
        let listed = [
            " calltrail.internal ",
            "Ops.Example.com.",
            "ports.example:8080",
            "",
        ];
        assert!(allowed(&listed, Some("calltrail.internal:8080")));
        assert!(allowed(&listed, Some("ports.example:9090")), "by name");
        assert!(allowed(&listed, Some("ops.example.com")));
        assert!(!allowed(&listed, Some("other.example.com")));
        assert!(allowed(&["*"], Some("anything.example")));
    }

    #[test]
    fn entries_that_could_never_match_a_host_are_refused() {
        for entry in [
            "http://calltrail.internal",
            "*.example.com",
            "calltrail.internal/graphql",
            "user@calltrail.internal",
            "calltrail internal",
        ] {
            let err = AllowedHosts::parse(&[entry.to_owned()]).unwrap_err();
            assert!(err.contains("CALLTRAIL_ALLOWED_HOSTS"), "{err}");
            assert!(err.contains(entry), "{err}");
        }
    }
}
