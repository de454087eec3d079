//! Settings from the environment: defaults, every SPEC §6 variable, clamps, and all problems
//! reported at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use app_core::settings::{LogFormat, Settings, SettingsError};
use queue_core::{LaneStoreConfig, LimitCaps, Mode};

fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let env: HashMap<String, String> =
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Settings::from_env(&|var| env.get(var).cloned())
}

fn problems_of(pairs: &[(&str, &str)]) -> SettingsError {
    load(pairs).expect_err("these settings should be refused")
}

#[test]
fn an_empty_environment_gives_the_documented_defaults() {
    let s = load(&[]).unwrap();
    assert_eq!(s.backend, Mode::Inline);
    assert_eq!(s.redis_url, None);
    assert_eq!(s.tenant_id.as_str(), "default");
    assert_eq!(s.data_dir, PathBuf::from("./data"));
    assert_eq!(s.uploads_dir, PathBuf::from("./data").join("uploads"));
    assert_eq!(s.chat_worker_pool_size, 4);
    assert_eq!(s.chat_lane_max_queue, 6);
    assert_eq!(s.chat_lane_debounce_ms, 500);
    assert_eq!(s.chat_job_claim_ttl_sec, 600);
    assert_eq!(s.ocr_max_concurrency, 4);
    assert_eq!(s.llm_max_concurrency, 8);
    assert_eq!(s.llm_max_concurrency_student, 8);
    assert_eq!(s.llm_max_concurrency_teacher, 8);
    assert_eq!(s.profile_update_queue_max, 500);
    assert_eq!(s.app_env, "development");
    assert!(!s.is_production());
    assert!(s.master_key.is_none() && s.tenant_admin_key.is_none() && s.llm_api_key.is_none());
    assert_eq!(s.llm_base_url, None);
    assert_eq!(s.llm_model, "gpt-4o-mini");
    assert_eq!(s.llm_timeout_sec, 60);
    assert_eq!(s.chat_responder_delay_ms, 0);
    assert_eq!(s.job_max_attempts, 3);
    assert_eq!(s.job_retention_hours, 168);
    assert_eq!(s.addr, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.lane_store_config(), LaneStoreConfig::default());
    assert_eq!(s.limit_caps(), LimitCaps::default());
    assert!(s.openai_config().is_none());
}

#[test]
fn every_spec_variable_is_read_with_its_original_name() {
    let s = load(&[
        ("JOB_QUEUE_BACKEND", "redis-rq"),
        ("REDIS_URL", "rediss://cache.internal:6380/0"),
        ("TENANT_ID", "school-7"),
        ("DATA_DIR", "/srv/laneway"),
        ("UPLOADS_DIR", "/mnt/uploads"),
        ("CHAT_WORKER_POOL_SIZE", "12"),
        ("CHAT_LANE_MAX_QUEUE", "3"),
        ("CHAT_LANE_DEBOUNCE_MS", "0"),
        ("CHAT_JOB_CLAIM_TTL_SEC", "30"),
        ("OCR_MAX_CONCURRENCY", "2"),
        ("LLM_MAX_CONCURRENCY", "16"),
        ("LLM_MAX_CONCURRENCY_STUDENT", "10"),
        ("LLM_MAX_CONCURRENCY_TEACHER", "6"),
        ("PROFILE_UPDATE_QUEUE_MAX", "1000"),
        ("APP_ENV", "Production"),
        ("ENV", "development"),
        ("MASTER_KEY", "m".repeat(40).as_str()),
        ("TENANT_ADMIN_KEY", "admin-key"),
        ("LLM_BASE_URL", "https://llm.example/v1"),
        ("LLM_API_KEY", "sk-test"),
        ("LLM_MODEL", "tiny-model"),
        ("LLM_TIMEOUT_SEC", "15"),
        ("CHAT_RESPONDER_DELAY_MS", "250"),
        ("JOB_MAX_ATTEMPTS", "5"),
        ("JOB_RETENTION_HOURS", "24"),
        ("LANEWAY_ADDR", "0.0.0.0:9000"),
    ])
    .unwrap();
    assert_eq!(s.backend, Mode::Redis);
    assert_eq!(s.redis_url.as_deref(), Some("rediss://cache.internal:6380/0"));
    assert_eq!(s.tenant_id.as_str(), "school-7");
    assert_eq!(s.data_dir, PathBuf::from("/srv/laneway"));
    assert_eq!(s.uploads_dir, PathBuf::from("/mnt/uploads"));
    assert_eq!(s.chat_worker_pool_size, 12);
    assert_eq!(s.lane_store_config(), LaneStoreConfig { debounce_ms: 0, claim_ttl_ms: 30_000, max_queue: 3 });
    assert_eq!(s.limit_caps(), LimitCaps { ocr: 2, llm: 16, llm_student: 10, llm_teacher: 6 });
    assert_eq!(s.profile_update_queue_max, 1000);
    assert!(s.is_production(), "APP_ENV wins over ENV");
    assert_eq!(s.master_key.as_ref().unwrap().expose().len(), 40);
    assert_eq!(s.tenant_admin_key.as_ref().unwrap().expose(), "admin-key");
    let llm = s.openai_config().unwrap();
    assert_eq!(llm.base_url, "https://llm.example/v1");
    assert_eq!(llm.api_key.as_deref(), Some("sk-test"));
    assert_eq!(llm.model, "tiny-model");
    assert_eq!(llm.timeout, Duration::from_secs(15));
    assert_eq!(s.chat_responder_delay(), Duration::from_millis(250));
    assert_eq!(s.job_max_attempts, 5);
    assert_eq!(s.job_retention_hours, 24);
    assert_eq!(s.addr, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn the_student_and_teacher_llm_caps_default_to_the_llm_total() {
    let s = load(&[("LLM_MAX_CONCURRENCY", "3")]).unwrap();
    assert_eq!(s.limit_caps(), LimitCaps { ocr: 4, llm: 3, llm_student: 3, llm_teacher: 3 });
}

#[test]
fn env_is_read_when_app_env_is_unset_and_production_ignores_case() {
    assert!(load(&[("ENV", "PROD")]).unwrap().is_production());
    assert!(load(&[("APP_ENV", ""), ("ENV", "production")]).unwrap().is_production());
    assert!(!load(&[("APP_ENV", "staging"), ("ENV", "prod")]).unwrap().is_production());
}

#[test]
fn values_below_their_minimum_are_clamped_with_a_warning() {
    let s = load(&[
        ("CHAT_JOB_CLAIM_TTL_SEC", "5"),
        ("CHAT_WORKER_POOL_SIZE", "0"),
        ("CHAT_LANE_DEBOUNCE_MS", "-20"),
        ("PROFILE_UPDATE_QUEUE_MAX", "3"),
    ])
    .unwrap();
    assert_eq!(s.chat_job_claim_ttl_sec, 10);
    assert_eq!(s.lane_store_config().claim_ttl_ms, 10_000);
    assert_eq!(s.chat_worker_pool_size, 1);
    assert_eq!(s.chat_lane_debounce_ms, 0);
    assert_eq!(s.profile_update_queue_max, 10);
    assert_eq!(s.warnings.len(), 4, "{:?}", s.warnings);
    let ttl = s.warnings.iter().find(|w| w.starts_with("CHAT_JOB_CLAIM_TTL_SEC")).unwrap();
    assert!(ttl.contains("=5") && ttl.contains("minimum 10") && ttl.contains("using 10"), "{ttl}");
}

#[test]
fn several_bad_values_are_reported_at_once_each_naming_its_variable() {
    let err = problems_of(&[
        ("CHAT_WORKER_POOL_SIZE", "abc"),
        ("CHAT_LANE_MAX_QUEUE", "1.5"),
        ("TENANT_ID", "bad tenant"),
        ("JOB_QUEUE_BACKEND", "kafka"),
        ("LANEWAY_ADDR", "localhost"),
        ("LLM_BASE_URL", "ftp://llm"),
    ]);
    let vars: Vec<&str> = err.problems.iter().map(|p| p.var).collect();
    for var in [
        "CHAT_WORKER_POOL_SIZE",
        "CHAT_LANE_MAX_QUEUE",
        "TENANT_ID",
        "JOB_QUEUE_BACKEND",
        "LANEWAY_ADDR",
        "LLM_BASE_URL",
    ] {
        assert!(vars.contains(&var), "{var} missing from {vars:?}");
    }
    assert_eq!(err.problems.len(), 6, "{err}");
    assert_eq!(
        err.problem("CHAT_WORKER_POOL_SIZE").unwrap().to_string(),
        "CHAT_WORKER_POOL_SIZE: expected an integer, got \"abc\""
    );
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for (line, problem) in lines.iter().zip(&err.problems) {
        assert!(line.starts_with(problem.var), "{line}");
    }
}

#[test]
fn the_redis_backend_without_redis_url_is_a_problem() {
    let err = problems_of(&[("JOB_QUEUE_BACKEND", "redis")]);
    assert_eq!(err.to_string(), "REDIS_URL: required when JOB_QUEUE_BACKEND=redis");
    let err = problems_of(&[("RQ_BACKEND_ENABLED", "yes")]);
    assert_eq!(err.problem("REDIS_URL").unwrap().var, "REDIS_URL");
}

#[test]
fn rq_backend_enabled_selects_redis_only_when_job_queue_backend_is_unset() {
    let url = ("REDIS_URL", "redis://127.0.0.1:6390");
    for on in ["1", "true", "YES"] {
        assert_eq!(load(&[("RQ_BACKEND_ENABLED", on), url]).unwrap().backend, Mode::Redis, "{on}");
    }
    assert_eq!(load(&[("RQ_BACKEND_ENABLED", "0")]).unwrap().backend, Mode::Inline);
    let explicit = load(&[("RQ_BACKEND_ENABLED", "1"), ("JOB_QUEUE_BACKEND", "inline")]).unwrap();
    assert_eq!(explicit.backend, Mode::Inline);
    assert_eq!(load(&[("JOB_QUEUE_BACKEND", "rq"), url]).unwrap().backend, Mode::Redis);
    assert!(problems_of(&[("RQ_BACKEND_ENABLED", "maybe")]).problem("RQ_BACKEND_ENABLED").is_some());
}

#[test]
fn ssl_cert_file_and_dir_for_rediss_must_be_readable_and_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (good, empty) = (dir.path().join("ca.pem"), dir.path().join("empty.pem"));
    std::fs::write(&good, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let (good, empty, missing) = (good.to_str().unwrap(), empty.to_str().unwrap(), missing.to_str().unwrap());
    let redis = ("JOB_QUEUE_BACKEND", "redis");
    let tls = ("REDIS_URL", "rediss://cache.internal:6380/0");

    assert!(
        load(&[redis, tls, ("SSL_CERT_FILE", good), ("SSL_CERT_DIR", dir.path().to_str().unwrap())]).is_ok()
    );
    let msg = problems_of(&[redis, tls, ("SSL_CERT_FILE", missing)]).to_string();
    assert!(msg.starts_with(&format!("SSL_CERT_FILE: cannot read {missing:?} (")), "{msg}");
    assert!(msg.contains("PEM CA certificates that rediss:// in REDIS_URL trusts"), "{msg}");
    let msg = problems_of(&[redis, tls, ("SSL_CERT_FILE", empty)]).to_string();
    assert!(msg.starts_with(&format!("SSL_CERT_FILE: {empty:?} holds no PEM certificate")), "{msg}");
    let err = problems_of(&[redis, tls, ("SSL_CERT_DIR", missing)]);
    assert!(err.problem("SSL_CERT_DIR").unwrap().message.contains("cannot read the directory"), "{err}");
    // Only a TLS connection on the Redis backend reads them: elsewhere they are left alone.
    assert!(
        load(&[redis, ("REDIS_URL", "redis://cache.internal:6379/0"), ("SSL_CERT_FILE", missing)]).is_ok()
    );
    assert!(load(&[tls, ("SSL_CERT_FILE", missing)]).is_ok());
}

#[test]
fn redis_url_accepts_the_three_schemes_and_a_list_of_cluster_seeds() {
    for ok in [
        "redis://localhost:6379",
        "rediss://:pw@host:6380/1",
        "redis+cluster://node1:7000",
        "redis+cluster://node1:7000,node2:7001,node3:7002",
        "redis://n1:7000, redis://n2:7001,redis://n3:7002",
    ] {
        assert_eq!(load(&[("REDIS_URL", ok)]).unwrap().redis_url.as_deref(), Some(ok));
    }
    let err = problems_of(&[("REDIS_URL", "http://user:hunter2@host")]);
    let msg = err.to_string();
    assert!(msg.starts_with("REDIS_URL: expected redis://host:port/db"), "{msg}");
    assert!(!msg.contains("hunter2"), "the problem must not echo a password: {msg}");
    assert!(problems_of(&[("REDIS_URL", "redis://a:1,localhost:2")]).problem("REDIS_URL").is_some());
}

#[test]
fn empty_values_count_as_unset() {
    let s = load(&[
        ("JOB_QUEUE_BACKEND", ""),
        ("CHAT_WORKER_POOL_SIZE", ""),
        ("TENANT_ID", " "),
        ("MASTER_KEY", ""),
        ("LANEWAY_ADDR", ""),
    ])
    .unwrap();
    assert_eq!(s.backend, Mode::Inline);
    assert_eq!(s.chat_worker_pool_size, 4);
    assert_eq!(s.tenant_id.as_str(), "default");
    assert!(s.master_key.is_none());
}

#[test]
fn uploads_dir_defaults_under_data_dir() {
    let s = load(&[("DATA_DIR", "/var/lib/lw")]).unwrap();
    assert_eq!(s.uploads_dir, PathBuf::from("/var/lib/lw/uploads"));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = load(&[
        ("MASTER_KEY", "master-secret-0123456789abcdef0123"),
        ("TENANT_ADMIN_KEY", "admin-secret-xyz"),
        ("LLM_API_KEY", "sk-live-secret"),
        ("LLM_BASE_URL", "https://llm.example/v1"),
        ("JOB_QUEUE_BACKEND", "redis"),
        ("REDIS_URL", "redis://default:redis-password@cache:6379"),
    ])
    .unwrap();
    let debug = format!("{s:?} {:?}", s.openai_config().unwrap());
    for secret in ["master-secret", "admin-secret", "sk-live-secret", "redis-password"] {
        assert!(!debug.contains(secret), "{secret} leaked into {debug}");
    }
    assert!(debug.contains("***"), "{debug}");
    assert!(debug.contains("cache:6379"), "the non-secret part of the URL stays visible: {debug}");
}

#[test]
fn profiles_live_in_a_directory_of_their_tenant() {
    let s = load(&[("DATA_DIR", "/d")]).unwrap();
    let tenant = queue_core::TenantId::new("t1").unwrap();
    assert_eq!(s.profiles_dir(&tenant), PathBuf::from("/d/tenants/t1/profiles"));
}

#[test]
fn log_format_is_text_or_json_and_anything_else_is_a_problem() {
    assert_eq!(load(&[]).expect("defaults").log_format, LogFormat::Text);
    assert_eq!(load(&[("LOG_FORMAT", " JSON ")]).expect("json").log_format, LogFormat::Json);
    assert_eq!(load(&[("LOG_FORMAT", "text")]).expect("text").log_format, LogFormat::Text);
    let e = problems_of(&[("LOG_FORMAT", "yaml")]);
    let p = e.problem("LOG_FORMAT").expect("LOG_FORMAT is named");
    assert!(p.message.contains("text or json") && p.message.contains("yaml"), "{p}");
}
