//! A chat submit whose answer is lost after Redis made its job (a proxy in front of Redis closes
//! the service's connection once Redis has answered the submit, as a network failing at that
//! moment would): the service finds the job and answers with it, and the client's retry with the
//! same request id gets the same job. No second job is made for the message.

use std::time::Duration;

use laneway_tests::{LanewayProcess, student_chat};
use redis_harness::{LossyProxy, RedisServer};

use crate::redis_support::{text, wait_until_done};

/// A `laneway serve` on Redis whose connections go through a [`LossyProxy`]: the server, the
/// proxy, the process and its data directory (kept for the process's life).
async fn serve_through_a_proxy() -> (RedisServer, LossyProxy, LanewayProcess, tempfile::TempDir) {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = proxy.url();
    let env = [("JOB_QUEUE_BACKEND", "redis"), ("REDIS_URL", url.as_str())];
    let api = LanewayProcess::start(&dir.path().join("data"), &env).await;
    (redis, proxy, api, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_submit_whose_answer_is_lost_is_accepted_once_and_its_retry_gets_the_same_job() {
    let (redis, proxy, api, _dir) = serve_through_a_proxy().await;
    // A first submit loads the submit script: the answer lost must be that of a submit Redis ran,
    // not a `NOSCRIPT` error.
    let (status, warm) = api.post_json("/chat/start", &student_chat("warm-1", "s1", "warming up")).await;
    assert_eq!(status, 200, "{warm}\n{}", api.context());
    // The submit script's call is the only one that carries the message's text (the request id's
    // claim and the lane's reads carry its id and fingerprint).
    let message = "a question whose answer gets lost";
    proxy.arm(&["EVALSHA", message]);
    let (status, first) = api.post_json("/chat/start", &student_chat("lost-1", "s2", message)).await;
    assert_eq!(proxy.lost(), 1, "the submit's answer was lost");
    assert_eq!(status, 200, "the job was made, so the message is accepted: {first}\n{}", api.context());
    let job = text(&first, "job_id").to_owned();
    let (status, again) = api.post_json("/chat/start", &student_chat("lost-1", "s2", message)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(text(&again, "job_id"), job, "the retry gets the same job");
    let warm_job = text(&warm, "job_id").to_owned();
    wait_until_done(&api, "", &[warm_job, job], Duration::from_secs(30), &[&api]).await;
    let records = redis.command(&["KEYS", "*job:j-*"]);
    assert_eq!(records.lines().count(), 2, "one job per message, none made twice: {records}");
}

/// The answer to a chat start's request-id claim is lost after Redis made the claim: the request
/// is refused, and the claim, which names a job that was never made, is freed, so the client's
/// retry makes the job (instead of "not found" until the claim expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_whose_claim_answer_is_lost_is_free_for_the_retry() {
    let (_redis, proxy, api, _dir) = serve_through_a_proxy().await;
    // The claim is a `SET <idem key> <job> NX PX <ttl>`: the only command naming the request id's
    // key.
    proxy.arm(&["idem:", "claim-lost-1", "NX"]);
    let body = student_chat("claim-lost-1", "s3", "is my request id still mine?");
    let (status, refused) = api.post_json("/chat/start", &body).await;
    assert_eq!(proxy.lost(), 1, "the claim's answer was lost");
    assert_ne!(status, 200, "the request is refused: {refused}");
    let (status, retry) = api.post_json("/chat/start", &body).await;
    assert_eq!(status, 200, "the retry makes the job: {retry}\n{}", api.context());
    let job = text(&retry, "job_id").to_owned();
    wait_until_done(&api, "", &[job], Duration::from_secs(30), &[&api]).await;
}
