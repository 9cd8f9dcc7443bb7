//! The bearer token every admin request carries, compared in constant time, and the audit
//! line every request leaves (who, what, result) — refused ones included.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::api::ApiError;
use mxc::Secret;

/// The expected token. Only its digest is kept: comparing digests of equal length takes the
/// same time whatever the given token's length or content.
pub(super) struct Token {
    digest: [u8; 32],
}

impl Token {
    pub(super) fn new(token: &Secret) -> Token {
        Token {
            digest: Sha256::digest(token.expose().as_bytes()).into(),
        }
    }

    /// Whether the request's `Authorization: Bearer …` holds the token.
    fn admits(&self, request: &Request) -> bool {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110).
            .and_then(|v| {
                v.get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// `?a=…&b=…`: a query with its values left out.
fn query_names(query: &str) -> String {
    let names: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=…"),
            None => pair.to_string(),
        })
        .collect();
    format!("?{}", names.join("&"))
}

/// What a handler did, in a few words, for the audit line.
#[derive(Debug, Clone)]
pub(super) struct Outcome(pub String);

/// Refuses requests without the token (401, nothing done) and logs every request.
pub(super) async fn authorize_and_audit(
    State(token): State<Arc<Token>>,
    request: Request,
    next: Next,
) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |r| r.0.to_string());
    // The path and the query's names only: never a header (the token is in one), nor a
    // query's values (a token passed as `?access_token=…` is an easy mistake).
    let action = format!(
        "{} {}{}",
        request.method(),
        request.uri().path(),
        request.uri().query().map(query_names).unwrap_or_default()
    );
    if !token.admits(&request) {
        tracing::warn!(%remote, %action, status = 401, "admin request refused: missing or wrong bearer token");
        let body = ApiError {
            error: "missing or wrong bearer token (Authorization: Bearer …; MXC_ADMIN_TOKEN or admin.token_file)".into(),
        };
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(body),
        )
            .into_response();
    }
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let result = response
        .extensions()
        .get::<Outcome>()
        .map_or_else(String::new, |o| o.0.clone());
    if response.status().is_success() {
        tracing::info!(%remote, %action, status, %result, "admin request");
    } else {
        tracing::warn!(%remote, %action, status, %result, "admin request failed");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_line_names_a_query_without_its_values() {
        assert_eq!(
            query_names("access_token=s3cret&limit=5&flag"),
            "?access_token=…&limit=…&flag"
        );
        assert_eq!(query_names(""), "?");
    }
}
