//! The tenant registry: persistence in `DATA_DIR/_system/tenants.db`, the data-directory and
//! limit rules (refusals name the field and write nothing), API keys (stored hashed, checked
//! through a cache that a revoke invalidates), and `Laneway`'s admin operations, which start,
//! restart and stop only the tenant they change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use app_core::responder::DeterministicResponder;
use app_core::tenants::{
    KeyCheck, REGISTRY_PATH, TenantDirectory, TenantLimits, TenantRequest, TenantSource,
};
use app_core::{AppError, Laneway, Mode, Settings, TenantId};
use queue_core::conformance::eventually;
use queue_core::{LimitClass, SystemClock};

fn settings(data_dir: &Path, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".into(), data_dir.display().to_string()),
        ("LANEWAY_TENANTS".into(), "acme".into()),
    ]);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    Settings::from_env(&|k| env.get(k).cloned()).expect("settings")
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("tenant id")
}

fn request(data_dir: Option<&Path>, enabled: bool, limits: TenantLimits) -> TenantRequest {
    TenantRequest { data_dir: data_dir.map(|d| d.display().to_string()), enabled, limits }
}

fn field_of(err: &AppError) -> &str {
    match err {
        AppError::BadRequest { field, .. } => field,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else { continue };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

async fn start(settings: Settings, mode: Mode) -> Laneway {
    Laneway::start_with(
        settings,
        mode,
        Arc::new(DeterministicResponder::new(Duration::ZERO)),
        Arc::new(SystemClock),
    )
    .await
    .expect("start")
}

#[test]
fn registry_tenants_and_keys_survive_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let limits = TenantLimits { llm: Some(2), ocr: Some(1), ..TenantLimits::default() };
    let issued = {
        let reg = TenantDirectory::open(&s, Mode::Inline).expect("open");
        reg.put(&tenant("t1"), &request(None, true, limits), 1_000).expect("put t1");
        reg.put(&tenant("t2"), &request(None, false, TenantLimits::default()), 2_000).expect("put t2");
        reg.issue_key(&tenant("t1"), 3_000).expect("key")
    };
    assert!(dir.path().join(REGISTRY_PATH).is_file(), "the registry lives at DATA_DIR/{REGISTRY_PATH}");
    let reg = TenantDirectory::open(&s, Mode::Inline).expect("reopen");
    let t1 = reg.entry(&tenant("t1")).expect("t1 kept");
    assert_eq!(t1.source, TenantSource::Registry);
    assert!(t1.record.enabled);
    assert_eq!(t1.record.limits, limits);
    assert_eq!(t1.record.created_at_ms, 1_000);
    assert!(t1.data_dir.ends_with("tenants/t1"), "default data dir: {}", t1.data_dir.display());
    assert_eq!(reg.enabled(&tenant("t2")), Some(false));
    assert_eq!(reg.enabled_ids(TenantSource::Registry), vec![tenant("t1")]);
    assert_eq!(reg.enabled_ids(TenantSource::Env), vec![tenant("acme"), tenant("default")]);
    assert_eq!(reg.check_key("t1", &issued.key).expect("check"), KeyCheck::Valid { key_id: issued.key_id });
}

#[test]
fn keys_are_stored_only_as_their_sha256() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let reg = TenantDirectory::open(&s, Mode::Inline).expect("open");
    let issued = reg.issue_key(&tenant("acme"), 1).expect("key");
    assert!(issued.key.starts_with("lwk_") && issued.key.len() == 4 + 64, "key shape: {}", issued.key.len());
    assert!(!format!("{issued:?}").contains(&issued.key), "Debug hides the key");
    let conn = rusqlite::Connection::open(dir.path().join(REGISTRY_PATH)).expect("open file");
    let (hash, tenant_col): (String, String) = conn
        .query_row("SELECT hash, tenant FROM api_keys WHERE key_id = ?1", [&issued.key_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("row");
    assert_eq!(tenant_col, "acme");
    assert_eq!(hash, app_core::tenants::hash_key(&issued.key));
    assert_eq!(hash.len(), 64);
    let bytes = std::fs::read(dir.path().join(REGISTRY_PATH)).expect("read file");
    let needle = issued.key.as_bytes();
    assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the key itself is not in the file");
}

#[test]
fn a_key_checks_valid_for_its_tenant_forbidden_for_another_and_revoked_once_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = TenantDirectory::open(&settings(dir.path(), &[]), Mode::Test).expect("open");
    let issued = reg.issue_key(&tenant("acme"), 1).expect("key");
    assert_eq!(reg.check_key_cached("acme", &issued.key), None, "not cached before its first use");
    assert_eq!(
        reg.check_key("acme", &issued.key).expect("check"),
        KeyCheck::Valid { key_id: issued.key_id.clone() }
    );
    assert_eq!(
        reg.check_key_cached("acme", &issued.key),
        Some(KeyCheck::Valid { key_id: issued.key_id.clone() }),
        "cached after its first use"
    );
    assert_eq!(reg.check_key("default", &issued.key).expect("check"), KeyCheck::WrongTenant);
    assert_eq!(reg.check_key("acme", "lwk_not-a-key").expect("check"), KeyCheck::Unknown);
    assert_eq!(reg.check_key_cached("acme", "lwk_not-a-key"), None, "unknown keys are not cached");

    let view = reg.revoke_key(&tenant("acme"), &issued.key_id, 5).expect("revoke");
    assert_eq!(view.revoked_at_ms, Some(5));
    assert_eq!(
        reg.check_key("acme", &issued.key).expect("check"),
        KeyCheck::Revoked,
        "the cache was invalidated"
    );
    let again = reg.revoke_key(&tenant("acme"), &issued.key_id, 9).expect("revoke twice");
    assert_eq!(again.revoked_at_ms, Some(5), "a second revoke keeps the first time");

    let other = reg.issue_key(&tenant("acme"), 1).expect("key");
    let err = reg.revoke_key(&tenant("default"), &other.key_id, 6).expect_err("another tenant's key");
    assert!(matches!(err, AppError::NotFound(_)), "{err:?}");
    assert_eq!(field_of(&reg.revoke_key(&tenant("acme"), "k/../x", 6).expect_err("bad id")), "key_id");
    assert_eq!(reg.check_key("acme", &other.key).expect("check"), KeyCheck::Valid { key_id: other.key_id });
    assert!(matches!(reg.issue_key(&tenant("nobody"), 1), Err(AppError::NotFound(_))));
}

#[test]
fn a_limit_below_one_is_refused_naming_it_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let reg = TenantDirectory::open(&s, Mode::Inline).expect("open");
    for (limits, field) in [
        (TenantLimits { llm: Some(0), ..TenantLimits::default() }, "limits.llm"),
        (TenantLimits { llm_student: Some(0), ..TenantLimits::default() }, "limits.llm_student"),
        (TenantLimits { llm_teacher: Some(0), ..TenantLimits::default() }, "limits.llm_teacher"),
        (TenantLimits { ocr: Some(0), ..TenantLimits::default() }, "limits.ocr"),
    ] {
        let err = reg.put(&tenant("t1"), &request(None, true, limits), 1).expect_err("refused");
        assert_eq!(field_of(&err), field);
    }
    assert_eq!(reg.entry(&tenant("t1")), None);
    assert_eq!(TenantDirectory::open(&s, Mode::Inline).expect("reopen").entry(&tenant("t1")), None);
    assert!(!dir.path().join("tenants/t1").exists(), "no data directory either");
}

#[test]
fn limits_override_only_the_classes_they_name() {
    let defaults = queue_core::LimitCaps { ocr: 4, llm: 8, llm_student: 6, llm_teacher: 5 };
    let caps = TenantLimits { llm: Some(2), ocr: Some(1), ..TenantLimits::default() }.caps(defaults);
    assert_eq!(caps, queue_core::LimitCaps { ocr: 1, llm: 2, llm_student: 6, llm_teacher: 5 });
}

#[test]
fn a_data_dir_outside_tenant_data_base_dir_is_refused_naming_data_dir_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("tenant-data");
    let outside = dir.path().join("elsewhere");
    std::fs::create_dir_all(base.join("inner")).expect("base");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, base.join("link")).expect("symlink");
    let s = settings(&dir.path().join("data"), &[("TENANT_DATA_BASE_DIR", base.to_str().expect("utf-8"))]);
    let reg = TenantDirectory::open(&s, Mode::Inline).expect("open");
    let refused: Vec<(String, &str)> = vec![
        (outside.join("t1").display().to_string(), "outside the base"),
        (format!("{}/../elsewhere/t1", base.display()), "a .. escape"),
        (base.join("link/t1").display().to_string(), "a symlink out of the base"),
        (base.display().to_string(), "the base itself"),
        (String::new(), "empty"),
    ];
    for (data_dir, what) in refused {
        let req = TenantRequest {
            data_dir: Some(data_dir.clone()),
            enabled: true,
            limits: TenantLimits::default(),
        };
        let err = reg.put(&tenant("t1"), &req, 1).expect_err(what);
        assert_eq!(field_of(&err), "data_dir", "{what}: {err}");
    }
    let default_dir =
        reg.put(&tenant("t1"), &request(None, true, TenantLimits::default()), 1).expect_err("default");
    assert_eq!(field_of(&default_dir), "data_dir", "DATA_DIR/tenants/t1 is outside the base too");
    assert!(default_dir.to_string().contains("TENANT_DATA_BASE_DIR"), "the rule is named: {default_dir}");
    assert_eq!(reg.entry(&tenant("t1")), None);
    assert!(files_under(&outside).is_empty(), "nothing written outside");

    let ok = reg.put(&tenant("t1"), &request(Some(&base.join("inner/t1")), true, TenantLimits::default()), 1);
    let entry = ok.expect("inside the base").entry;
    assert_eq!(entry.data_dir, base.canonicalize().expect("canonical").join("inner/t1"));
}

#[test]
fn two_tenants_cannot_share_or_nest_data_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let reg = TenantDirectory::open(&settings(&data, &[]), Mode::Inline).expect("open");
    let shared = dir.path().join("shared");
    reg.put(&tenant("t1"), &request(Some(&shared), true, TenantLimits::default()), 1).expect("t1");
    for (path, what) in [
        (shared.clone(), "the same directory"),
        (shared.join("inner"), "inside t1's"),
        (dir.path().to_path_buf(), "around t1's"),
        (data.join("tenants/acme/x"), "inside an env tenant's"),
        (data.join("_system"), "the registry's own"),
    ] {
        let err =
            reg.put(&tenant("t2"), &request(Some(&path), true, TenantLimits::default()), 1).expect_err(what);
        assert_eq!(field_of(&err), "data_dir", "{what}: {err}");
    }
    assert_eq!(reg.entry(&tenant("t2")), None);
    reg.put(&tenant("t1"), &request(Some(&shared), false, TenantLimits::default()), 2)
        .expect("a tenant may keep its own");
}

#[test]
fn env_tenants_cannot_be_replaced_or_disabled_through_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = TenantDirectory::open(&settings(dir.path(), &[]), Mode::Test).expect("open");
    let put = reg.put(&tenant("acme"), &request(None, false, TenantLimits::default()), 1).expect_err("put");
    assert!(matches!(put, AppError::Conflict(_)), "{put:?}");
    let disable = reg.disable(&tenant("default"), 1).expect_err("disable");
    assert!(matches!(disable, AppError::Conflict(_)), "{disable:?}");
    assert!(matches!(reg.disable(&tenant("nobody"), 1), Err(AppError::NotFound(_))));
    assert_eq!(reg.enabled(&tenant("acme")), Some(true));
}

#[test]
fn tenants_are_listed_in_pages_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = TenantDirectory::open(&settings(dir.path(), &[]), Mode::Test).expect("open");
    for id in ["b1", "a1", "c1"] {
        reg.put(&tenant(id), &request(None, true, TenantLimits::default()), 1).expect("put");
    }
    let (first, next) = reg.page(2, None);
    let ids =
        |v: &[app_core::tenants::TenantEntry]| v.iter().map(|e| e.record.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ["a1", "acme"]);
    assert_eq!(next, Some(tenant("acme")));
    let (second, next) = reg.page(2, next.as_ref());
    assert_eq!(ids(&second), ["b1", "c1"]);
    let (third, next) = reg.page(2, next.as_ref());
    assert_eq!(ids(&third), ["default"]);
    assert_eq!(next, None);
}

#[test]
fn tenant_data_base_dir_and_auth_required_are_read_and_bad_values_reported_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[("TENANT_DATA_BASE_DIR", "/srv/tenants"), ("AUTH_REQUIRED", "yes")]);
    assert_eq!(s.tenant_data_base_dir.as_deref(), Some(Path::new("/srv/tenants")));
    assert!(s.auth_required);
    assert!(!settings(dir.path(), &[]).auth_required, "off by default");
    let env: HashMap<&str, &str> = HashMap::from([
        ("TENANT_DATA_BASE_DIR", "/srv/../etc"),
        ("AUTH_REQUIRED", "maybe"),
        ("CHAT_WORKER_POOL_SIZE", "x"),
    ]);
    let err = Settings::from_env(&|k| env.get(k).map(|v| (*v).to_owned())).expect_err("refused");
    assert!(err.problem("TENANT_DATA_BASE_DIR").is_some_and(|p| p.message.contains("..")), "{err}");
    assert!(err.problem("AUTH_REQUIRED").is_some(), "{err}");
    assert!(err.problem("CHAT_WORKER_POOL_SIZE").is_some(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_tenant_runs_with_its_own_limits_and_serves_chats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(settings(dir.path(), &[]), Mode::Test).await;
    assert!(matches!(app.tenant(Some("t1")), Err(AppError::NotFound(_))));
    let limits = TenantLimits { llm: Some(3), llm_teacher: Some(2), ..TenantLimits::default() };
    let (view, created) = app.put_tenant("t1", request(None, true, limits)).await.expect("put");
    assert!(created && view.running && view.enabled);
    assert_eq!(view.effective_limits.llm, 3);
    let rt = app.tenant(Some("t1")).expect("t1 runs");
    let usage = rt.limiter.usage().await.expect("usage");
    let cap = |class| usage.iter().find(|u| u.class == class).map(|u| u.capacity);
    assert_eq!(cap(LimitClass::Llm), Some(3));
    assert_eq!(cap(LimitClass::LlmTeacher), Some(2));
    assert_eq!(cap(LimitClass::Ocr), Some(app.settings().ocr_max_concurrency), "missing → the setting");
    let accepted = app
        .chat_start(
            Some("t1"),
            app_core::api::ChatStartRequest {
                request_id: "r1".into(),
                role: "student".into(),
                student_id: Some("s1".into()),
                teacher_id: None,
                session_id: None,
                lane_id: None,
                messages: vec![app_core::payloads::ChatMessage::new("user", "hello")],
                attachments: vec![],
            },
        )
        .await
        .expect("accepted");
    eventually("t1's chat finishes", Duration::from_secs(20), || async {
        let s = app.chat_status(Some("t1"), accepted.job_id.as_str()).await.expect("status");
        s.status == "done"
    })
    .await;
    let (again, created) = app.put_tenant("t1", request(None, true, limits)).await.expect("same again");
    assert!(!created && again.running);
    assert!(Arc::ptr_eq(&rt, &app.tenant(Some("t1")).expect("runs")), "the same content restarts nothing");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_or_disabling_a_tenant_touches_only_that_tenants_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(settings(dir.path(), &[]), Mode::Test).await;
    app.put_tenant("t1", request(None, true, TenantLimits::default())).await.expect("t1");
    app.put_tenant("t2", request(None, true, TenantLimits::default())).await.expect("t2");
    let t1 = app.tenant(Some("t1")).expect("t1");
    let t2 = app.tenant(Some("t2")).expect("t2");
    let acme = app.tenant(Some("acme")).expect("acme");

    let limits = TenantLimits { ocr: Some(1), ..TenantLimits::default() };
    let (view, created) = app.put_tenant("t1", request(None, true, limits)).await.expect("replace");
    assert!(!created && view.running);
    let t1_after = app.tenant(Some("t1")).expect("t1 again");
    assert!(!Arc::ptr_eq(&t1, &t1_after), "t1 got a new runtime");
    assert!(Arc::ptr_eq(&t2, &app.tenant(Some("t2")).expect("t2")), "t2 kept its runtime");
    assert!(Arc::ptr_eq(&acme, &app.tenant(Some("acme")).expect("acme")), "acme kept its runtime");

    let disabled = app.disable_tenant("t1").await.expect("disable");
    assert!(!disabled.enabled && !disabled.running);
    assert!(matches!(app.tenant(Some("t1")), Err(AppError::NotFound(_))), "a disabled tenant is not found");
    assert!(Arc::ptr_eq(&t2, &app.tenant(Some("t2")).expect("t2")), "t2 still runs the same runtime");
    assert_eq!(app.health().status, "ok", "a disabled tenant does not degrade health");
    assert!(!app.health().tenants.contains(&"t1".to_owned()));
    let page = app.list_tenants(None, None).expect("list");
    let t1_view = page.tenants.iter().find(|t| t.id == "t1").expect("t1 listed");
    assert!(!t1_view.enabled && t1_view.limits == limits, "disabled, configuration kept");

    let (back, _) = app.put_tenant("t1", request(None, true, limits)).await.expect("enable again");
    assert!(back.running);
    assert!(matches!(app.disable_tenant("acme").await, Err(AppError::Conflict(_))));
    assert_eq!(
        field_of(&app.put_tenant("no:pe", request(None, true, limits)).await.expect_err("bad id")),
        "id"
    );
    assert_eq!(field_of(&app.list_tenants(Some("0"), None).expect_err("limit")), "limit");
    assert_eq!(field_of(&app.list_tenants(None, Some("a b")).expect_err("after")), "after");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_survives_a_restart_and_keeps_tenant_files_in_their_own_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let custom = dir.path().join("custom-t2");
    {
        let app = start(settings(&data, &[]), Mode::Inline).await;
        app.put_tenant("t1", request(None, true, TenantLimits::default())).await.expect("t1");
        app.put_tenant("t2", request(Some(&custom), true, TenantLimits::default())).await.expect("t2");
        app.shutdown().await;
    }
    let app = start(settings(&data, &[]), Mode::Inline).await;
    assert!(app.tenant(Some("t1")).is_ok() && app.tenant(Some("t2")).is_ok(), "both started at boot");
    assert!(data.join("tenants/t1/jobs.db").is_file());
    assert!(custom.join("jobs.db").is_file());
    assert!(!data.join("tenants/t2").exists(), "t2 lives only in its own directory");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_cannot_start_is_not_registered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("file");
    let app = start(settings(&data, &[]), Mode::Inline).await;
    let err = app.put_tenant("t1", request(Some(&file.join("t1")), true, TenantLimits::default())).await;
    assert!(matches!(err, Err(AppError::Internal(_))), "{err:?}");
    assert!(matches!(app.tenant(Some("t1")), Err(AppError::NotFound(_))));
    assert_eq!(
        app.list_tenants(None, None).expect("list").tenants.iter().filter(|t| t.id == "t1").count(),
        0
    );
    app.shutdown().await;
    let reopened = TenantDirectory::open(&settings(&data, &[]), Mode::Inline).expect("reopen");
    assert_eq!(reopened.entry(&tenant("t1")), None, "nothing written");
}

/// Replies once the test adds a permit to its gate.
#[derive(Debug)]
struct GatedResponder {
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl app_core::responder::ChatResponder for GatedResponder {
    async fn reply(
        &self,
        chat: &app_core::payloads::ChatPayload,
    ) -> Result<String, queue_core::HandlerError> {
        self.gate.acquire().await.expect("gate open").forget();
        Ok(format!("re: {}", chat.messages.last().map_or("", |m| m.content.as_str())))
    }
}

fn student_chat(request_id: &str, student: &str) -> app_core::api::ChatStartRequest {
    app_core::api::ChatStartRequest {
        request_id: request_id.into(),
        role: "student".into(),
        student_id: Some(student.into()),
        teacher_id: None,
        session_id: None,
        lane_id: None,
        messages: vec![app_core::payloads::ChatMessage::new("user", "hello")],
        attachments: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_keeps_serving_while_a_tenant_waits_for_its_running_job_to_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let responder = Arc::new(GatedResponder { gate: gate.clone() });
    let app = Arc::new(
        Laneway::start_with(settings(dir.path(), &[]), Mode::Test, responder, Arc::new(SystemClock))
            .await
            .expect("start"),
    );
    app.put_tenant("t1", request(None, true, TenantLimits::default())).await.expect("t1");
    app.put_tenant("t2", request(None, true, TenantLimits::default())).await.expect("t2");
    let held = app.chat_start(Some("t1"), student_chat("r1", "s1")).await.expect("t1 chat");
    eventually("t1's chat runs (and waits at the gate)", Duration::from_secs(20), || async {
        app.chat_status(Some("t1"), held.job_id.as_str()).await.expect("status").status == "processing"
    })
    .await;

    // The stop waits for the running job, which waits for the gate.
    let disabling = tokio::spawn({
        let app = app.clone();
        async move { app.disable_tenant("t1").await }
    });
    eventually("t1 is disabled", Duration::from_secs(20), || async {
        matches!(app.tenant(Some("t1")), Err(AppError::NotFound(_)))
    })
    .await;
    assert!(!disabling.is_finished(), "t1's stop is still waiting for its running job");
    let quick = Duration::from_secs(2);
    let accepted = tokio::time::timeout(quick, app.chat_start(Some("t2"), student_chat("r2", "s2")))
        .await
        .expect("t2 answers while t1 stops")
        .expect("t2 accepts");
    let status = tokio::time::timeout(quick, app.chat_status(Some("t2"), accepted.job_id.as_str()))
        .await
        .expect("t2 answers while t1 stops")
        .expect("status");
    assert!(matches!(status.status.as_str(), "queued" | "processing"), "{status:?}");
    assert!(!disabling.is_finished(), "t2 was served while t1 was still stopping");

    gate.add_permits(10);
    let view = disabling.await.expect("task").expect("disabled");
    assert!(!view.enabled && !view.running);
    eventually("t2's chat finishes", Duration::from_secs(20), || async {
        app.chat_status(Some("t2"), accepted.job_id.as_str()).await.expect("status").status == "done"
    })
    .await;
    app.shutdown().await;
}
