//! The LLM cap across processes: three `laneway worker` processes (four chat slots each) and an
//! API-only `laneway serve --no-workers` on one Redis call an in-test OpenAI-compatible server
//! that measures how many requests are in flight. With `LLM_MAX_CONCURRENCY=3` it never sees more
//! than three and does see three; after a worker is SIGKILLed inside an LLM call, its permits come
//! back once their lease expires, so the cap is reached again and every job finishes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use laneway_tests::{LanewayProcess, now_ms, poll_until, student_chat};
use redis_harness::RedisServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::redis_support::{as_env, pairs, redis_env, text, wait_until_done};

const CAP: usize = 3;
const WORKERS: usize = 3;
/// How long the fake provider holds each request.
const HOLD: Duration = Duration::from_millis(300);
const LEASE_SEC: u64 = 2;
const BATCH: usize = 24;
/// The default tenant's keys.
const PREFIX: &str = "lw:{default}:";
/// A batch takes about 24 x 300 ms / 3; the dead worker's chat claims lapse after 10 s.
const DEADLINE: Duration = Duration::from_secs(90);

/// What the fake provider saw.
#[derive(Debug, Default)]
struct Seen {
    in_flight: AtomicUsize,
    /// The most in flight since the last [`Seen::reset_peak`].
    peak: AtomicUsize,
    /// The most in flight ever.
    peak_ever: AtomicUsize,
    per_worker_in_flight: [AtomicUsize; WORKERS],
    per_worker_total: [AtomicUsize; WORKERS],
    total: AtomicUsize,
    /// Requests it could not make sense of.
    problems: Mutex<Vec<String>>,
}

impl Seen {
    fn enter(&self, worker: usize) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.peak_ever.fetch_max(now, Ordering::SeqCst);
        self.per_worker_in_flight[worker].fetch_add(1, Ordering::SeqCst);
        self.per_worker_total[worker].fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self, worker: usize) {
        self.per_worker_in_flight[worker].fetch_sub(1, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn reset_peak(&self) {
        self.peak.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn problem(&self, what: String) {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).push(what);
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn totals(&self) -> Vec<usize> {
        self.per_worker_total.iter().map(|t| t.load(Ordering::SeqCst)).collect()
    }
}

/// An OpenAI-compatible `POST /w{i}/chat/completions` on a loopback port: worker `i` is given
/// `LLM_BASE_URL=http://.../w{i}`, so each request says which process sent it. Every request is
/// held [`HOLD`], then answered `ok: <last message>`. Stopped when dropped.
#[derive(Debug)]
struct FakeLlm {
    addr: SocketAddr,
    seen: Arc<Seen>,
    accept: JoinHandle<()>,
}

impl FakeLlm {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake LLM");
        let addr = listener.local_addr().expect("fake LLM address");
        let seen = Arc::new(Seen::default());
        let accepted = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, accepted.clone()));
            }
        });
        Self { addr, seen, accept }
    }

    fn base_url(&self, worker: usize) -> String {
        format!("http://{}/w{worker}", self.addr)
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves the requests of one keep-alive connection until the client closes it.
async fn serve_connection(stream: TcpStream, seen: Arc<Seen>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if !matches!(reader.read_line(&mut request_line).await, Ok(n) if n > 0) {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if !matches!(reader.read_line(&mut header).await, Ok(n) if n > 0) {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let worker = path
            .strip_prefix("/w")
            .and_then(|rest| rest.strip_suffix("/chat/completions"))
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|w| *w < WORKERS);
        let last = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
            b.pointer("/messages")?.as_array()?.last()?.get("content")?.as_str().map(ToOwned::to_owned)
        });
        let (status, answer) = match (request_line.starts_with("POST "), worker, last) {
            (true, Some(worker), Some(last)) => {
                seen.enter(worker);
                tokio::time::sleep(HOLD).await;
                // Counted out whether or not the caller is still there to read the answer.
                seen.leave(worker);
                let reply = json!({"choices": [{"message": {"role": "assistant", "content": format!("ok: {last}")}}]});
                ("200 OK", reply)
            }
            _ => {
                seen.problem(format!("{} {}", request_line.trim_end(), String::from_utf8_lossy(&body)));
                ("404 Not Found", json!({"error": {"message": "not a chat completion"}}))
            }
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if reader.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Submits `BATCH` chat jobs, each in a lane of its own; their ids.
async fn submit_batch(api: &LanewayProcess, batch: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..BATCH {
        let body =
            student_chat(&format!("{batch}-{i}"), &format!("{batch}-s{i}"), &format!("{batch} question {i}"));
        let (status, answer) = api.post_json("/chat/start", &body).await;
        assert_eq!(status, 200, "submit {batch}/{i} refused: {answer}\n{}", api.context());
        ids.push(text(&answer, "job_id").to_owned());
    }
    ids
}

/// Permit tokens of a class with their lease deadlines (ms).
fn permits(redis: &RedisServer, class: &str) -> Vec<(String, u64)> {
    pairs(&redis.command(&["ZRANGE", &format!("{PREFIX}permits:{class}"), "0", "-1", "WITHSCORES"]))
        .into_iter()
        .map(|(token, deadline)| (token, deadline.parse().unwrap_or(0)))
        .collect()
}

/// Tokens of `class` whose lease has not run out.
fn live_permits(redis: &RedisServer, class: &str) -> Vec<String> {
    let now = now_ms();
    permits(redis, class).into_iter().filter(|(_, deadline)| *deadline > now).map(|(t, _)| t).collect()
}

fn check_replies(views: &std::collections::BTreeMap<String, Value>, batch: &str) {
    for (job, view) in views {
        let reply = view.pointer("/result/reply").and_then(Value::as_str).unwrap_or_default();
        assert!(reply.starts_with(&format!("ok: {batch} question ")), "job {job} of {batch}: {view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn llm_calls_never_exceed_the_cap_across_worker_processes_and_a_killed_worker_leaks_no_permit() {
    let redis = RedisServer::start();
    let llm = FakeLlm::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (cap, lease) = (CAP.to_string(), LEASE_SEC.to_string());
    let common = [
        ("LLM_MAX_CONCURRENCY", cap.as_str()),
        ("LIMITER_LEASE_SEC", lease.as_str()),
        ("CHAT_WORKER_POOL_SIZE", "4"),
        ("CHAT_JOB_CLAIM_TTL_SEC", "10"),
        ("CHAT_LANE_DEBOUNCE_MS", "0"),
        ("LLM_TIMEOUT_SEC", "30"),
    ];
    let api_env = redis_env(&redis, &common);
    let api = LanewayProcess::start_with_args(&data, &["--no-workers"], &as_env(&api_env)).await;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let url = llm.base_url(w);
        let mut vars = common.to_vec();
        vars.push(("LLM_BASE_URL", url.as_str()));
        let env = redis_env(&redis, &vars);
        workers.push(LanewayProcess::worker(&data, &as_env(&env)).await);
    }
    let contexts = |workers: &[LanewayProcess]| {
        workers.iter().map(LanewayProcess::context).collect::<Vec<_>>().join("\n")
    };

    // 1. Twelve slots in three processes, three permits between them.
    let first = submit_batch(&api, "one").await;
    let logs: Vec<&LanewayProcess> = workers.iter().collect();
    let views = wait_until_done(&api, "", &first, DEADLINE, &logs).await;
    check_replies(&views, "one");
    let seen = &llm.seen;
    assert!(seen.problems().is_empty(), "the fake LLM got requests it did not expect: {:?}", seen.problems());
    assert_eq!(seen.total.load(Ordering::SeqCst), BATCH, "not one LLM call per job");
    let totals = seen.totals();
    assert!(totals.iter().all(|t| *t > 0), "not every worker process made LLM calls: {totals:?} per worker");
    let peak = seen.peak.load(Ordering::SeqCst);
    assert_eq!(
        peak,
        CAP,
        "{peak} LLM calls were in flight at once across {WORKERS} processes of 4 slots each, with \
         LLM_MAX_CONCURRENCY={CAP} (calls per worker {totals:?})\n{}",
        contexts(&workers)
    );

    // 2. Kill a worker inside an LLM call: the permits it holds are leaked until their lease ends.
    let second = submit_batch(&api, "two").await;
    let victim = poll_until(DEADLINE, || async {
        seen.per_worker_in_flight.iter().position(|n| n.load(Ordering::SeqCst) > 0)
    })
    .await;
    let Some(victim) = victim else {
        panic!("no worker made an LLM call in the second batch\n{}", contexts(&workers));
    };
    let mut dead = workers.remove(victim);
    dead.kill();
    let killed_ms = now_ms();
    let dead_prefix = format!("{:x}-", dead.pid());
    let leaked: Vec<String> =
        live_permits(&redis, "llm").into_iter().filter(|t| t.starts_with(&dead_prefix)).collect();
    assert!(
        !leaked.is_empty(),
        "worker {victim} was killed inside an LLM call yet held no live LLM permit: {:?}\n{}",
        permits(&redis, "llm"),
        dead.context()
    );
    let expired = poll_until(DEADLINE, || async {
        let live = live_permits(&redis, "llm");
        (!live.iter().any(|t| t.starts_with(&dead_prefix))).then_some(())
    })
    .await;
    assert!(expired.is_some(), "the dead worker's permits never expired: {:?}", permits(&redis, "llm"));
    let expired_after_ms = now_ms() - killed_ms;

    // 3. Its permits lapsed: the two live workers reach the full cap again.
    seen.reset_peak();
    let third = submit_batch(&api, "three").await;
    let logs: Vec<&LanewayProcess> = workers.iter().collect();
    let views = wait_until_done(&api, "", &third, DEADLINE, &logs).await;
    check_replies(&views, "three");
    let peak = seen.peak.load(Ordering::SeqCst);
    assert_eq!(
        peak,
        CAP,
        "after the dead worker's {} permits expired, at most {peak} LLM calls ran at once, not the \
         cap of {CAP}: a permit leaked\n{}",
        leaked.len(),
        contexts(&workers)
    );
    let views = wait_until_done(&api, "", &second, DEADLINE, &logs).await;
    check_replies(&views, "two");

    let ever = seen.peak_ever.load(Ordering::SeqCst);
    println!(
        "limiter: peak {ever} LLM calls in flight (cap {CAP}); first batch calls per worker {totals:?}; \
         worker {victim} killed holding {} live LLM permit(s), which expired {expired_after_ms} ms \
         later; {} LLM calls in all",
        leaked.len(),
        seen.total.load(Ordering::SeqCst)
    );
    assert!(ever <= CAP, "{ever} LLM calls were in flight at once at some point; the cap is {CAP}");
    assert!(seen.problems().is_empty(), "the fake LLM got requests it did not expect: {:?}", seen.problems());
    for class in ["llm", "llm_student"] {
        let live = live_permits(&redis, class);
        assert!(live.is_empty(), "{class} permits still held with every job done: {live:?}");
    }
}
