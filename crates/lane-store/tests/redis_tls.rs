//! `rediss://` against a real `redis-server` serving TLS with a throwaway CA: a certificate this
//! process does not trust, and a port that speaks plain Redis, each fail with words that name
//! `REDIS_URL` and say what failed; `#insecure` (a testing aid) skips verification.
//!
//! Trusting the CA through `SSL_CERT_FILE` needs the variable set before the process starts, so
//! that case runs in the workspace scenarios (`tests/scenarios/redis_tls.rs`), on a child
//! `laneway` process.

use std::time::{Duration, Instant};

use lane_store::{RedisPool, redis, redis_error};
use queue_core::QueueError;
use redis_harness::{RedisServer, TestCa};

/// `PING` through a fresh pool on `url`: the reply, or the error as the backend maps it.
async fn ping(url: &str) -> Result<String, QueueError> {
    let pool = RedisPool::from_url(url)?;
    let mut conn = pool.get().await?;
    redis::cmd("PING").query_async(&mut conn).await.map_err(|e| redis_error(&e))
}

#[tokio::test]
async fn a_certificate_signed_by_an_untrusted_ca_is_refused_naming_redis_url() {
    let ca = TestCa::generate("lane-store untrusted test CA");
    let server = RedisServer::start_tls(&ca.issue_server_cert());

    let err = ping(&server.tls_url()).await.expect_err("a PING through an untrusted certificate");

    assert!(matches!(err, QueueError::Unavailable(_)), "not an unavailable error: {err:?}");
    let text = err.to_string();
    assert!(text.contains("REDIS_URL: TLS handshake failed"), "{text}");
    // rustls's reason for a chain that ends at no trusted root.
    assert!(text.contains("certificate is not trusted (UnknownIssuer)"), "{text}");
    assert!(text.contains("SSL_CERT_FILE"), "{text}");
}

#[tokio::test]
async fn rediss_to_a_port_that_answers_plain_text_at_once_is_refused_saying_it_answered_without_tls() {
    // Not Redis (which waits for the end of an inline command): a server that answers anything
    // with a plain-text line straight away, as an HTTP server or a proxy's error page would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port");
    let port = listener.local_addr().expect("its address").port();
    let answerer = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"-ERR not TLS\r\n").await;
        }
    });

    let err = ping(&format!("rediss://127.0.0.1:{port}/")).await.expect_err("a PING over TLS to plain text");
    answerer.abort();

    assert!(matches!(err, QueueError::Unavailable(_)), "not an unavailable error: {err:?}");
    let text = err.to_string();
    assert!(text.contains("REDIS_URL: TLS handshake failed"), "{text}");
    assert!(text.contains("the server answered without TLS (rustls: received corrupt message)"), "{text}");
}

#[tokio::test]
async fn rediss_to_a_plain_port_is_refused_within_seconds_saying_the_port_answers_without_tls() {
    let server = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}/", server.port());

    let started = Instant::now();
    let err = ping(&url).await.expect_err("a PING over TLS to a plain port");
    let took = started.elapsed();

    assert!(matches!(err, QueueError::Unavailable(_)), "not an unavailable error: {err:?}");
    let text = err.to_string();
    assert!(text.contains("REDIS_URL: TLS handshake failed"), "{text}");
    assert!(text.contains("without TLS"), "{text}");
    // Two connection attempts of 2 s each, then a 500 ms check of the port.
    assert!(took < Duration::from_secs(10), "took {took:?}: {text}");
}

#[tokio::test]
async fn the_insecure_fragment_connects_without_verifying_the_certificate() {
    let ca = TestCa::generate("lane-store insecure test CA");
    let server = RedisServer::start_tls(&ca.issue_server_cert());

    let reply = ping(&format!("{}#insecure", server.tls_url())).await;

    assert_eq!(reply.as_deref().ok(), Some("PONG"), "{reply:?}\n{}", server.log_tail(10));
}
