//! The concrete handlers and responders, driven through the `JobHandler` trait as a worker
//! would: chat, upload, exam and profile updates, and the OpenAI responder against a tiny local
//! HTTP server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use app_core::handlers::{ChatHandler, ExamHandler, ProfileUpdateHandler, UploadHandler};
use app_core::payloads::{ChatMessage, ChatPayload};
use app_core::responder::{ChatResponder, DeterministicResponder, OpenAiConfig, OpenAiResponder};
use queue_core::{JobHandler, JobId, JobKind, JobRecord, LaneId, LimitClass, NewJob, TenantId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn job(id: &str, kind: JobKind, payload: Value) -> JobRecord {
    let lane = (kind == JobKind::Chat).then(|| LaneId::new("student:s42:main").unwrap());
    JobRecord::from_new(
        TenantId::default_tenant(),
        NewJob { id: JobId::new(id).unwrap(), kind, lane, request_id: None, payload },
        1,
        0,
    )
}

fn chat_job(payload: Value) -> JobRecord {
    job("c1", JobKind::Chat, payload)
}

fn deterministic() -> Arc<dyn ChatResponder> {
    Arc::new(DeterministicResponder::new(Duration::ZERO))
}

// ---------------------------------------------------------------------------------------------
// Chat

#[test]
fn chat_permits_depend_on_the_role() {
    let handler = ChatHandler::new(deterministic());
    let permits = |role: &str| handler.permits(&chat_job(json!({"role": role, "messages": []})));
    assert_eq!(permits("student"), [LimitClass::Llm, LimitClass::LlmStudent]);
    assert_eq!(permits("teacher"), [LimitClass::Llm, LimitClass::LlmTeacher]);
    assert_eq!(permits("parent"), [LimitClass::Llm]);
}

#[tokio::test]
async fn chat_handler_replies_through_the_deterministic_responder() {
    let handler = ChatHandler::new(deterministic());
    let payload = json!({
        "role": "student",
        "student_id": "s42",
        "messages": [
            {"role": "user", "content": "What is a vector?"},
            {"role": "assistant", "content": "A quantity with direction."},
            {"role": "user", "content": "  And a scalar? "}
        ]
    });
    let first = handler.handle(&chat_job(payload.clone())).await.unwrap();
    let reply = first["reply"].as_str().unwrap();
    assert!(reply.starts_with("Hello student s42"), "{reply}");
    assert!(reply.contains("\"And a scalar?\""), "{reply}");
    // The timestamps beside the reply may differ by a millisecond; the reply may not.
    let again = handler.handle(&chat_job(payload)).await.unwrap();
    assert_eq!(again["reply"], first["reply"], "same input, same reply");
}

#[tokio::test]
async fn chat_handler_refuses_a_malformed_payload_permanently() {
    let handler = ChatHandler::new(deterministic());
    let err = handler.handle(&chat_job(json!({"role": "student"}))).await.unwrap_err();
    assert!(!err.retryable);
    assert!(err.message.contains("messages"), "{}", err.message);
    let err = handler.handle(&chat_job(json!({"role": "student", "messages": []}))).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("no messages"), "{}", err.message);
}

// ---------------------------------------------------------------------------------------------
// Upload

async fn upload(content: &str) -> Result<Value, queue_core::HandlerError> {
    UploadHandler.handle(&job("u1", JobKind::Upload, json!({"filename": "hw.md", "content": content}))).await
}

fn questions(result: &Value) -> Vec<(u64, String)> {
    result["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["number"].as_u64().unwrap(), q["text"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn upload_splits_a_markdown_assignment_into_questions() {
    let doc = "# Homework 3\n\
               Answer every question.\n\
               \n\
               ## 1. Define a vector.\n\
               Use your own words.\n\
               \n\
               **2.** Add (1, 2) and (3, 4).\n\
               ### Question 3\n\
               Explain the dot product.\n\
               ```\n\
               4. not a question inside a code fence\n\
               ```\n\
               **Q4:** What is 1.5 times 2?\n";
    let result = upload(doc).await.unwrap();
    assert_eq!(result["filename"], "hw.md");
    assert_eq!(result["preamble"], "# Homework 3\nAnswer every question.");
    assert_eq!(result["question_count"], 4);
    assert_eq!(
        questions(&result),
        [
            (1, "Define a vector.\nUse your own words.".to_owned()),
            (2, "Add (1, 2) and (3, 4).".to_owned()),
            (3, "Explain the dot product.\n```\n4. not a question inside a code fence\n```".to_owned()),
            (4, "What is 1.5 times 2?".to_owned()),
        ]
    );
}

#[tokio::test]
async fn upload_splits_a_plain_text_assignment_with_every_numbering_style() {
    let doc = "Physics quiz, week 2\r\n\
               1. A ball falls\r\n   for 2 seconds. How far?\r\n\
               2) Name two forces.\r\n\
               Q3. What is inertia?\r\n\
               Q4: State Newton's third law.\r\n\
               Question 5: Why is the sky blue?\r\n\
               \t6. What is 1.5 litres in ml?\r\n";
    let result = upload(doc).await.unwrap();
    assert_eq!(result["preamble"], "Physics quiz, week 2");
    assert_eq!(result["question_count"], 6);
    let qs = questions(&result);
    assert_eq!(qs.iter().map(|q| q.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(qs[0].1, "A ball falls\nfor 2 seconds. How far?");
    assert_eq!(qs[4].1, "Why is the sky blue?");
    assert_eq!(qs[5].1, "What is 1.5 litres in ml?");
}

#[tokio::test]
async fn upload_without_numbered_questions_fails_permanently() {
    let err = upload("Just some notes.\nNothing numbered here, not even 2024. or 1.5.").await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.message, "no numbered questions found in hw.md");
}

#[test]
fn uploads_and_exams_take_ocr_then_llm_permits() {
    let j = job("u1", JobKind::Upload, json!({}));
    assert_eq!(UploadHandler.permits(&j), [LimitClass::Ocr, LimitClass::Llm]);
    assert_eq!(ExamHandler.permits(&j), [LimitClass::Ocr, LimitClass::Llm]);
}

// ---------------------------------------------------------------------------------------------
// Exam

async fn exam(csv: &str) -> Result<Value, queue_core::HandlerError> {
    ExamHandler.handle(&job("e1", JobKind::Exam, json!({"filename": "midterm.csv", "csv": csv}))).await
}

#[tokio::test]
async fn exam_totals_count_missing_scores_as_zero_and_averages_skip_them() {
    let csv = "student_id,q1,q2,q3\ns1,10,5,\ns2,6,,4\n\ns3,8,7,2.5\n";
    let result = exam(csv).await.unwrap();
    assert_eq!(result["filename"], "midterm.csv");
    assert_eq!(result["student_count"], 3);
    let totals: Vec<(&str, f64)> = result["students"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["student_id"].as_str().unwrap(), s["total"].as_f64().unwrap()))
        .collect();
    assert_eq!(totals, [("s1", 15.0), ("s2", 10.0), ("s3", 17.5)]);
    let q = &result["questions"];
    assert_eq!(
        (q[0]["question"].as_str(), q[0]["average"].as_f64(), q[0]["answered"].as_u64()),
        (Some("q1"), Some(8.0), Some(3))
    );
    assert_eq!((q[1]["average"].as_f64(), q[1]["answered"].as_u64()), (Some(6.0), Some(2)));
    assert_eq!((q[2]["average"].as_f64(), q[2]["answered"].as_u64()), (Some(3.25), Some(2)));
}

#[tokio::test]
async fn exam_quoted_fields_may_hold_commas_and_quotes() {
    let csv = "student_id,\"Q1, part a\",\"The \"\"hard\"\" one\"\r\n\"Doe, Jane\",3,4\r\n";
    let result = exam(csv).await.unwrap();
    assert_eq!(result["students"][0]["student_id"], "Doe, Jane");
    assert_eq!(result["students"][0]["total"].as_f64(), Some(7.0));
    assert_eq!(result["questions"][0]["question"], "Q1, part a");
    assert_eq!(result["questions"][1]["question"], "The \"hard\" one");
}

#[tokio::test]
async fn exam_bad_number_is_reported_with_its_line_and_column() {
    let err = exam("student_id,q1,q2\ns1,1,2\ns2,3,abc\n").await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.message, "midterm.csv: line 3, column \"q2\": \"abc\" is not a number");
}

#[tokio::test]
async fn exam_ragged_row_is_reported_with_its_line() {
    let err = exam("student_id,q1,q2\ns1,1,2\ns2,3\n").await.unwrap_err();
    assert!(err.message.contains("line 3: expected 3 fields"), "{}", err.message);
    assert!(err.message.contains("got 2"), "{}", err.message);
}

#[tokio::test]
async fn exam_duplicate_students_and_bad_headers_are_refused() {
    let err = exam("student_id,q1\ns1,1\ns1,2\n").await.unwrap_err();
    assert!(
        err.message.contains("line 3: duplicate student \"s1\" (first seen on line 2)"),
        "{}",
        err.message
    );
    let err = exam("name,q1\ns1,1\n").await.unwrap_err();
    assert!(err.message.contains("line 1: the first column must be \"student_id\""), "{}", err.message);
    let err = exam("student_id,q1\n\"s1,1\n").await.unwrap_err();
    assert!(err.message.contains("line 2: unterminated quoted field"), "{}", err.message);
}

// ---------------------------------------------------------------------------------------------
// Profile updates

fn profile_job(id: &str, student: &str, notes: &[&str], fields: Value) -> JobRecord {
    let mut payload = json!({"student_id": student, "notes": notes});
    payload["fields"] = fields;
    job(id, JobKind::ProfileUpdate, payload)
}

fn read_profile(dir: &Path, student: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{student}.json"))).unwrap()).unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn profile_updates_of_one_student_are_merged_into_one_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profiles");
    let handler = ProfileUpdateHandler::new(dir.clone());
    let jobs = [
        profile_job("p1", "alice", &["likes vectors"], json!({"level": 1})),
        profile_job("p2", "bob", &["new student"], json!({})),
        profile_job(
            "p3",
            "alice",
            &["struggles with limits", "asked twice"],
            json!({"level": 2, "tz": "UTC"}),
        ),
        profile_job("p4", "alice", &["improving"], json!({})),
    ];
    let results = handler.handle_batch(&jobs).await;
    assert_eq!(handler.writes(), 2, "one write per student");
    let results: Vec<Value> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results[0], json!({"student_id": "alice", "notes_total": 4, "batched_with": 3}));
    assert_eq!(results[1], json!({"student_id": "bob", "notes_total": 1, "batched_with": 1}));
    assert_eq!(results[2], results[0]);
    assert_eq!(results[3], results[0]);

    let alice = read_profile(&dir, "alice");
    assert_eq!(alice["notes"], json!(["likes vectors", "struggles with limits", "asked twice", "improving"]));
    assert_eq!(alice["fields"], json!({"level": 2, "tz": "UTC"}));
    assert_eq!(alice["updates"], 3);
    assert_eq!(read_profile(&dir, "bob")["notes"], json!(["new student"]));
    assert_eq!(dir_entries(&dir), ["alice.json", "bob.json"], "no temp file is left behind");
}

#[tokio::test]
async fn a_profile_update_appends_to_the_existing_profile_and_keeps_unknown_keys() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("s1.json"),
        r#"{"student_id": "s1", "notes": ["old"], "fields": {"a": 1}, "updates": 4, "grade": 9}"#,
    )
    .unwrap();
    let handler = ProfileUpdateHandler::new(tmp.path().to_owned());
    let result = handler.handle(&profile_job("p1", "s1", &["new"], json!({"b": 2}))).await.unwrap();
    assert_eq!(result, json!({"student_id": "s1", "notes_total": 2, "batched_with": 1}));
    let profile = read_profile(tmp.path(), "s1");
    assert_eq!(profile["notes"], json!(["old", "new"]));
    assert_eq!(profile["fields"], json!({"a": 1, "b": 2}));
    assert_eq!((profile["updates"].as_u64(), profile["grade"].as_u64()), (Some(5), Some(9)));
    assert_eq!(handler.writes(), 1);
}

#[tokio::test]
async fn an_unsafe_student_id_is_refused_without_touching_other_students() {
    let tmp = tempfile::tempdir().unwrap();
    let handler = ProfileUpdateHandler::new(tmp.path().to_owned());
    let bad = ["../escape", ".hidden", "", "a/b", "sp ace"];
    let mut jobs: Vec<JobRecord> =
        bad.iter().enumerate().map(|(i, s)| profile_job(&format!("b{i}"), s, &["x"], json!({}))).collect();
    jobs.push(profile_job("ok", "s.1@x-y_z", &["fine"], json!({})));
    let results = handler.handle_batch(&jobs).await;
    for (r, student) in results.iter().zip(bad) {
        let err = r.as_ref().unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.starts_with("student_id:"), "{}", err.message);
        assert!(err.message.contains(&format!("{student:?}")), "{}", err.message);
        assert!(err.message.contains("[A-Za-z0-9_.@-]"), "{}", err.message);
    }
    assert!(results[bad.len()].is_ok());
    assert_eq!(handler.writes(), 1);
    assert_eq!(dir_entries(tmp.path()), ["s.1@x-y_z.json"]);
}

#[test]
fn profile_updates_take_no_permits() {
    let handler = ProfileUpdateHandler::new("unused".into());
    assert!(handler.permits(&profile_job("p", "s1", &[], json!({}))).is_empty());
}

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible responder against a local server

/// What the local server saw.
#[derive(Debug)]
struct SeenRequest {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl SeenRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Serves one request on 127.0.0.1: answers `status` with `body`, or never answers when
/// `status` is `None`. Returns the base URL and what the server saw.
async fn one_shot_server(
    status: Option<u16>,
    reply_body: &'static str,
) -> (String, oneshot::Receiver<SeenRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0_u8; 4096];
        let header_end = loop {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before sending headers");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..header_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize =
            headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        while buf.len() < header_end + length {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = serde_json::from_slice(&buf[header_end..header_end + length]).unwrap();
        let _ = tx.send(SeenRequest { request_line, headers, body });
        match status {
            Some(code) => {
                let response = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply_body}",
                    reply_body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            }
            // Hold the connection open without answering: the client's timeout must fire.
            None => std::future::pending::<()>().await,
        }
    });
    (format!("http://{addr}/v1/"), rx)
}

fn openai(base_url: String, api_key: Option<&str>, timeout: Duration) -> OpenAiResponder {
    OpenAiResponder::new(OpenAiConfig {
        base_url,
        api_key: api_key.map(str::to_owned),
        model: "test-model".into(),
        timeout,
    })
    .unwrap()
}

fn sample_chat() -> ChatPayload {
    ChatPayload {
        role: "teacher".into(),
        student_id: None,
        teacher_id: Some("t1".into()),
        session_id: None,
        messages: vec![ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Grade this.")],
        attachments: Vec::new(),
    }
}

const OK_BODY: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Looks good: 9/10."},"finish_reason":"stop"}]}"#;

#[tokio::test]
async fn openai_responder_posts_the_conversation_and_returns_the_first_choice() {
    let (base, seen) = one_shot_server(Some(200), OK_BODY).await;
    let responder = openai(base, Some("sk-local"), Duration::from_secs(10));
    let reply = responder.reply(&sample_chat()).await.unwrap();
    assert_eq!(reply, "Looks good: 9/10.");
    let seen = seen.await.unwrap();
    assert_eq!(seen.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-local"));
    assert!(seen.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(
        seen.body,
        json!({"model": "test-model", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Grade this."}
        ]})
    );
}

#[tokio::test]
async fn openai_responder_sends_no_authorization_without_a_key() {
    let (base, seen) = one_shot_server(Some(200), OK_BODY).await;
    openai(base, None, Duration::from_secs(10)).reply(&sample_chat()).await.unwrap();
    assert_eq!(seen.await.unwrap().header("authorization"), None);
}

#[tokio::test]
async fn a_provider_server_error_is_retryable() {
    let (base, _seen) = one_shot_server(Some(500), r#"{"error":{"message":"upstream overloaded"}}"#).await;
    let err = openai(base, Some("k"), Duration::from_secs(10)).reply(&sample_chat()).await.unwrap_err();
    assert!(err.retryable, "{}", err.message);
    assert!(err.message.contains("500") && err.message.contains("upstream overloaded"), "{}", err.message);
}

#[tokio::test]
async fn a_rate_limit_is_retryable() {
    let (base, _seen) = one_shot_server(Some(429), "slow down").await;
    let err = openai(base, None, Duration::from_secs(10)).reply(&sample_chat()).await.unwrap_err();
    assert!(
        err.retryable && err.message.contains("429") && err.message.contains("slow down"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_provider_bad_request_is_permanent_and_carries_the_providers_message() {
    let body = r#"{"error":{"message":"model 'test-model' does not exist","type":"invalid_request_error"}}"#;
    let (base, _seen) = one_shot_server(Some(400), body).await;
    let err =
        openai(base, Some("sk-hidden"), Duration::from_secs(10)).reply(&sample_chat()).await.unwrap_err();
    assert!(!err.retryable, "{}", err.message);
    assert!(err.message.contains("400"), "{}", err.message);
    assert!(err.message.contains("model 'test-model' does not exist"), "{}", err.message);
    assert!(!err.message.contains("sk-hidden"));
}

#[tokio::test]
async fn a_success_without_a_reply_is_permanent() {
    let (base, _seen) = one_shot_server(Some(200), r#"{"choices":[]}"#).await;
    let err = openai(base, None, Duration::from_secs(10)).reply(&sample_chat()).await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.message, "provider returned no reply");
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out_as_retryable() {
    let (base, _seen) = one_shot_server(None, "").await;
    let err = openai(base, None, Duration::from_millis(200)).reply(&sample_chat()).await.unwrap_err();
    assert!(err.retryable, "{}", err.message);
    assert!(err.message.contains("timed out"), "{}", err.message);
}

#[tokio::test]
async fn an_unreachable_provider_is_retryable() {
    // Bind then drop a listener so that the port is (almost certainly) closed.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let err = openai(format!("http://{addr}/v1"), None, Duration::from_secs(5))
        .reply(&sample_chat())
        .await
        .unwrap_err();
    assert!(err.retryable, "{}", err.message);
}

#[test]
fn an_openai_base_url_must_be_http() {
    let config = OpenAiConfig {
        base_url: "ftp://x".into(),
        api_key: None,
        model: "m".into(),
        timeout: Duration::from_secs(1),
    };
    assert!(OpenAiResponder::new(config).is_err());
}

#[tokio::test]
async fn a_corrupt_profile_is_left_alone_and_the_update_fails_permanently() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("s1.json"), "{not json").unwrap();
    let handler = ProfileUpdateHandler::new(tmp.path().to_owned());
    let err = handler.handle(&profile_job("p1", "s1", &["x"], json!({}))).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("not a valid profile"), "{}", err.message);
    assert_eq!(std::fs::read_to_string(tmp.path().join("s1.json")).unwrap(), "{not json");
    assert_eq!(dir_entries(tmp.path()), ["s1.json"]);
    assert_eq!(handler.writes(), 0);
}

#[tokio::test]
async fn a_profile_directory_that_cannot_be_created_gives_a_retryable_error() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("profiles");
    std::fs::write(&blocker, "a file where the directory should be").unwrap();
    let handler = ProfileUpdateHandler::new(blocker);
    let err = handler.handle(&profile_job("p1", "s1", &["x"], json!({}))).await.unwrap_err();
    assert!(err.retryable, "{}", err.message);
    assert_eq!(handler.writes(), 0);
}
