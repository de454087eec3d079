//! `GET /openapi.json` on the real binary covers the router: every documented operation is
//! served (none answers "no such route" or 405), and the tenant routes are documented at `/` and
//! under `/t/{tenant}/`. (The other direction, every route the router registers being in the
//! route table the document is generated from, is the `routes` unit test of the `app` crate.)

use laneway_tests::LanewayProcess;
use serde_json::{Value, json};

/// A value for each path parameter: well-formed, naming nothing that exists.
fn fill(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{tenant}" => "t1",
            "{job_id}" => "j-probe",
            "{lane_id}" => "student:probe:main",
            "{id}" => "probe-tenant",
            "{key_id}" => "k-probe",
            s if s.starts_with('{') => {
                panic!("openapi.json has a path parameter the probe does not know: {s}")
            }
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends `method path` (a JSON `{}` body for the methods that take one): status and JSON body.
async fn probe(client: &reqwest::Client, base: &str, method: &str, path: &str) -> (u16, Value) {
    let url = format!("{base}{path}");
    let request = match method {
        "get" => client.get(&url),
        "post" => client.post(&url).json(&json!({})),
        "put" => client.put(&url).json(&json!({})),
        "patch" => client.patch(&url).json(&json!({})),
        "delete" => client.delete(&url),
        other => panic!("openapi.json documents an unexpected method {other} on {path}"),
    };
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn is_no_such_route(answer: &(u16, Value)) -> bool {
    answer.0 == 405
        || (answer.0 == 404 && answer.1.get("detail").and_then(Value::as_str) == Some("no such route"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_openapi_json_is_served_by_the_real_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = LanewayProcess::start(
        &dir.path().join("data"),
        &[("LANEWAY_TENANTS", "t1"), ("CHAT_RESPONDER_DELAY_MS", "600000")],
    )
    .await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}\n{}", server.context());
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["schemas"]["Error"]["properties"]["field"].is_object(), "the error shape");
    let paths = doc["paths"].as_object().expect("paths");
    let operations: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().expect("path item").keys().map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    // The routes of this issue and the tenant API are all there, at both mount points.
    for (method, path) in [
        ("get", "/healthz"),
        ("post", "/chat/start"),
        ("get", "/chat/status"),
        ("post", "/uploads"),
        ("post", "/exams"),
        ("post", "/profile-updates"),
        ("get", "/jobs/{job_id}"),
        ("get", "/ops/queues"),
        ("get", "/ops/lanes"),
        ("get", "/ops/workers"),
        ("get", "/ops/permits"),
        ("get", "/ops/dead"),
        ("post", "/ops/jobs/{job_id}/retry"),
        ("post", "/ops/jobs/{job_id}/cancel"),
        ("post", "/ops/lanes/{lane_id}/drain"),
    ] {
        for full in [path.to_owned(), format!("/t/{{tenant}}{path}")] {
            assert!(
                operations.contains(&(method.to_owned(), full.clone())),
                "{method} {full} is missing from openapi.json"
            );
        }
    }
    assert!(operations.contains(&("get".to_owned(), "/openapi.json".to_owned())));
    let client = reqwest::Client::new();
    let base = server.base_url().to_owned();
    // The probe can tell a served route from an unserved one.
    for (method, path) in
        [("get", "/ops/nothing-here"), ("post", "/ops/queues"), ("delete", "/t/t1/ops/lanes")]
    {
        let answer = probe(&client, &base, method, path).await;
        assert!(is_no_such_route(&answer), "{method} {path} should not be served: {answer:?}");
    }
    for (method, path) in &operations {
        let concrete = fill(path);
        let answer = probe(&client, &base, method, &concrete).await;
        assert!(
            !is_no_such_route(&answer),
            "openapi.json documents {} {path}, but the server does not serve {concrete}: {answer:?}\n{}",
            method.to_uppercase(),
            server.context()
        );
        assert!(answer.0 < 500, "{method} {concrete} failed: {answer:?}\n{}", server.context());
    }
}
