//! Binds a NIP-98 auth event to the request body: a request that carries a
//! body and authenticates with NIP-98 must name the body's sha256 in the
//! event's `payload` tag, else the captured header of one upload could be
//! sent with another body. The body is hashed as the handler reads it and
//! fails at its end when the hash differs, so streamed uploads (assets,
//! snapshots) are checked without buffering and are not committed.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Why a body does not belong to its auth event (the body's read error).
#[derive(Debug, thiserror::Error)]
#[error("the body's sha256 is not the NIP-98 payload tag")]
pub struct PayloadMismatch;

/// Middleware for the routers that take NIP-98 (graph and echo APIs).
pub async fn bind_body(request: Request, next: Next) -> Response {
    let Some(event) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Nostr "))
        .and_then(|encoded| super::nip98::decode(encoded.trim()).ok())
    else {
        // Not NIP-98, or not decodable: authentication answers for it.
        return next.run(request).await;
    };
    let payload = match super::nip98::payload(&event) {
        Ok(payload) => payload,
        Err(reason) => return refuse(&reason),
    };
    match (payload, has_body(&request)) {
        (None, false) => next.run(request).await,
        (None, true) => refuse("a request with a body must name its sha256 in a payload tag"),
        (Some(expected), _) => {
            let (parts, body) = request.into_parts();
            let body = checked(body, expected);
            next.run(Request::from_parts(parts, body)).await
        }
    }
}

/// Whether the request declares a body (a length above 0, or chunks).
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

/// `body`, failing at its end unless its sha256 is `expected`.
fn checked(body: Body, expected: [u8; 32]) -> Body {
    let chunks = body.into_data_stream();
    let stream =
        futures_util::stream::unfold(Some((chunks, Sha256::new())), move |state| async move {
            let (mut chunks, mut hasher) = state?;
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok::<Bytes, axum::BoxError>(chunk), Some((chunks, hasher))))
                }
                Some(Err(e)) => Some((Err(e.into()), None)),
                None if <[u8; 32]>::from(hasher.finalize()) == expected => None,
                None => Some((Err(PayloadMismatch.into()), None)),
            }
        });
    Body::from_stream(stream)
}

fn refuse(reason: &str) -> Response {
    let message = format!("invalid NIP-98 authorization: {reason}");
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": message, "status": "error", "message": message })),
    )
        .into_response()
}
