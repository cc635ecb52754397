//! What a browser may ask of the server. Reads are open, but only under a host name this
//! server answers to (an IP address, `localhost`, or `server.allowed_hosts`), so a page on
//! another site cannot rebind its own name to the daemon and read the API. A mutating request
//! from a browser must come from the server's own origin, token or not, so a page on another
//! site cannot trigger runs. Clients that are not browsers (curl, Prometheus) send no `Origin`
//! and pass.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{api, AppState};

/// Refuses a request naming a host this server does not answer to, and a cross-origin
/// mutating request.
pub(crate) async fn same_origin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match check(req.method(), req.headers(), &s.allowed_hosts) {
        Ok(()) => next.run(req).await,
        Err(why) => api::error(StatusCode::FORBIDDEN, &why.to_string()),
    }
}

/// Why a request may not go on; the text is the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the Host header is not text")]
    HostNotText,
    /// A name this server does not answer to (DNS rebinding).
    #[error("this server does not answer to the host {host:?}: use its IP address or localhost, or add the name to server.allowed_hosts")]
    UnknownHost { host: String },
    /// A mutating request from another site's page.
    #[error("cross-origin {method} refused: send it from the dashboard's own page, or without an Origin header (curl)")]
    CrossOrigin { method: Method },
}

/// `Ok` when the request may go on; else why not.
pub(crate) fn check(
    method: &Method,
    headers: &HeaderMap,
    allowed: &[String],
) -> Result<(), Refused> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).map_err(|_| ()))
            .transpose()
    };
    let host = text(header::HOST.as_str()).map_err(|()| Refused::HostNotText)?;
    if let Some(host) = host {
        if !host_allowed(host, allowed) {
            return Err(Refused::UnknownHost {
                host: host_name(host),
            });
        }
    }
    if method.is_safe() {
        return Ok(());
    }
    let cross = || Refused::CrossOrigin {
        method: method.clone(),
    };
    match text(header::ORIGIN.as_str()).map_err(|()| cross())? {
        Some(origin) => {
            let authority = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            match (authority, host) {
                (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
                _ => Err(cross()),
            }
        }
        // Browsers that omit Origin still say where a request comes from.
        None => match text("sec-fetch-site").map_err(|()| cross())? {
            Some(site) if !matches!(site, "same-origin" | "none") => Err(cross()),
            _ => Ok(()),
        },
    }
}

/// The host part of a `Host` value: without its port, lowercase, without a trailing dot.
fn host_name(host: &str) -> String {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An IP address cannot be rebound; `localhost` resolves here; other names must be listed.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// The token of an `Authorization` value, whatever the case of its `Bearer` scheme.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_ips_localhost_and_listed_names_pass_others_do_not() {
        let allowed = vec!["ferry.internal".to_string()];
        for ok in [
            "127.0.0.1:7878",
            "127.0.0.1",
            "[::1]:7878",
            "10.1.2.3:80",
            "localhost:7878",
            "LOCALHOST.",
            "ferry.internal:7878",
            "Ferry.Internal",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:7878",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "ferry.internal.evil:7878",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn mutating_requests_must_be_same_origin() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:7878");
        assert!(check(&post, &headers(&[host]), &[]).is_ok(), "curl");
        assert!(check(
            &post,
            &headers(&[host, ("origin", "http://127.0.0.1:7878")]),
            &[]
        )
        .is_ok());
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "null",
            "http://127.0.0.1:7878.evil.example",
        ] {
            let h = {
                let mut h = headers(&[host]);
                h.insert("origin", HeaderValue::from_static(origin));
                h
            };
            let e = check(&post, &h, &[]).unwrap_err();
            assert_eq!(
                e,
                Refused::CrossOrigin {
                    method: Method::POST
                },
                "{origin}"
            );
            assert!(
                e.to_string().contains("cross-origin POST refused"),
                "{origin}: {e}"
            );
            // Reads are not mutating: the same origin may GET (CORS keeps the answer from it).
            assert!(check(&Method::GET, &h, &[]).is_ok(), "{origin}");
        }
        let e = check(
            &post,
            &headers(&[host, ("sec-fetch-site", "cross-site")]),
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, Refused::CrossOrigin { .. }), "{e}");
        assert!(check(
            &post,
            &headers(&[host, ("sec-fetch-site", "same-origin")]),
            &[]
        )
        .is_ok());
        let e = check(
            &Method::GET,
            &headers(&[("host", "evil.example:7878")]),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            Refused::UnknownHost {
                host: "evil.example".into()
            }
        );
        let e = e.to_string();
        assert!(
            e.contains("server.allowed_hosts") && e.contains("evil.example"),
            "{e}"
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "BeArEr\tt0k"] {
            assert_eq!(bearer(v), Some("t0k"), "{v:?}");
        }
        for v in ["Basic t0k", "Bearer", "Bearer ", "t0k", "Bearert0k"] {
            assert_eq!(bearer(v), None, "{v:?}");
        }
    }
}
