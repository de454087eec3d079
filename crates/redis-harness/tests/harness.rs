//! The harness against real `redis-server` and `redis-cli` processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis_harness::{RedisCluster, RedisServer, TestCa, require_redis_server};

/// Set in a child test process that runs one test alone with a doctored `PATH`.
const CHILD_MARKER: &str = "REDIS_HARNESS_TEST_CHILD";

const REDIS_SERVER_HINT: &str = "redis-server not found on PATH: install it \
     (Debian/Ubuntu: apt-get install -y redis-server redis-tools) — Redis tests never skip";

/// Whether process `pid` exists (`kill -0` succeeds).
fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Polls until process `pid` is gone, failing the test after 10 s.
fn assert_process_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "process {pid} still exists 10 s later");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the test `name` of this binary alone in a child process whose `PATH` is `path`, and
/// returns what it printed; fails unless the child test failed.
fn run_alone_with_path(name: &str, path: &Path) -> String {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PATH", path)
        .env(CHILD_MARKER, "1")
        .output()
        .expect("the test binary runs again as a child");
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "the child test was expected to fail, it printed:\n{printed}");
    assert!(printed.contains("1 failed"), "the child did not run exactly the one test:\n{printed}");
    printed
}

fn in_child() -> bool {
    std::env::var_os(CHILD_MARKER).is_some()
}

/// Where `redis-server` is on this machine's `PATH`.
fn redis_server_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|file| file.is_file())
        .unwrap_or_else(|| panic!("{REDIS_SERVER_HINT}"))
}

#[test]
fn a_server_starts_on_a_free_loopback_port_and_answers_ping() {
    require_redis_server();
    let server = RedisServer::start();

    assert_eq!(server.command(&["PING"]), "PONG");
    assert!(server.is_running());
    assert_ne!(server.port(), 6379, "never the default port");
    assert_eq!(server.addr(), format!("127.0.0.1:{}", server.port()));
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}/", server.port()));
    assert!(server.command(&["INFO", "server"]).contains(&format!("process_id:{}", server.pid())));
}

/// `redis-cli --tls --cacert <ca> -p <port> PING`: what it printed, and whether it succeeded.
fn tls_ping(port: u16, ca: &Path) -> (bool, String) {
    let output = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success() && printed.trim() == "PONG", printed)
}

#[test]
fn a_tls_server_answers_a_client_that_trusts_its_ca_and_fails_one_that_does_not() {
    let ca = TestCa::generate("harness test CA");
    let other = TestCa::generate("another test CA");
    let server = RedisServer::start_tls(&ca.issue_server_cert());
    let tls_port = server.tls_port().expect("a TLS port");

    assert_ne!(tls_port, server.port());
    assert_eq!(server.tls_url(), format!("rediss://127.0.0.1:{tls_port}/"));
    assert_eq!(server.command(&["PING"]), "PONG", "the plain port stays for the harness");
    let (ok, printed) = tls_ping(tls_port, ca.cert());
    assert!(ok, "PING over TLS with the CA trusted: {printed}\n{}", server.log_tail(20));
    let (ok, printed) = tls_ping(tls_port, other.cert());
    assert!(!ok, "PING over TLS with another CA trusted succeeded: {printed}");
    assert!(printed.contains("certificate verify failed"), "{printed}");
}

#[test]
fn a_tls_server_keeps_its_tls_port_across_a_restart() {
    let ca = TestCa::generate("harness test CA");
    let mut server = RedisServer::start_tls(&ca.issue_server_cert());
    let tls_port = server.tls_port();
    server.restart();

    assert_eq!(server.tls_port(), tls_port);
    let (ok, printed) = tls_ping(tls_port.expect("a TLS port"), ca.cert());
    assert!(ok, "PING over TLS after the restart: {printed}\n{}", server.log_tail(20));
}

#[test]
fn a_tls_cluster_is_created_over_tls_and_names_its_tls_ports_to_a_tls_client() {
    let ca = TestCa::generate("harness cluster test CA");
    let cluster = RedisCluster::start_tls(&ca);
    let tls_ports: Vec<u16> =
        cluster.nodes().iter().map(|node| node.tls_port().expect("a TLS port")).collect();

    let expected: Vec<String> = tls_ports.iter().map(|port| format!("rediss://127.0.0.1:{port}/")).collect();
    assert_eq!(cluster.tls_url(), expected.join(","));
    let output = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca.cert())
        .args(["-h", "127.0.0.1", "-p", &tls_ports[0].to_string(), "CLUSTER", "SLOTS"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let slots = String::from_utf8_lossy(&output.stdout);
    for port in &tls_ports {
        assert!(
            slots.lines().any(|line| line.trim() == port.to_string()),
            "TLS port {port} not in CLUSTER SLOTS:\n{slots}"
        );
    }
}

#[test]
fn a_plain_server_has_no_tls_port() {
    let server = RedisServer::start();
    assert_eq!(server.tls_port(), None);
}

#[test]
fn two_servers_get_different_ports() {
    let first = RedisServer::start();
    let second = RedisServer::start();

    assert_ne!(first.port(), second.port());
    assert_ne!(first.pid(), second.pid());
    assert_eq!(first.command(&["SET", "only-in", "first"]), "OK");
    assert_eq!(second.command(&["GET", "only-in"]), "(nil)");
}

#[test]
fn a_value_set_through_command_reads_back_through_command() {
    let server = RedisServer::start();

    assert_eq!(server.command(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(server.command(&["GET", "greeting"]), "hello world");
}

#[test]
fn command_renders_integers_nils_errors_and_arrays_one_per_line() {
    let server = RedisServer::start();
    assert_eq!(server.command(&["KEYS", "*"]), "");

    assert_eq!(server.command(&["MSET", "a", "1", "b", "2"]), "OK");

    assert_eq!(server.command(&["DBSIZE"]), "2");
    assert_eq!(server.command(&["GET", "missing"]), "(nil)");
    let mut keys: Vec<String> = server.command(&["KEYS", "*"]).lines().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(server.command(&["CONFIG", "GET", "port"]), format!("port\n{}", server.port()));
    assert!(server.command(&["NOSUCHCOMMAND"]).starts_with("(error) ERR unknown command"));
}

#[test]
fn caller_args_override_the_defaults() {
    let plain = RedisServer::start();
    let with_aof = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);

    assert_eq!(plain.command(&["CONFIG", "GET", "appendonly"]), "appendonly\nno");
    assert_eq!(plain.command(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(with_aof.command(&["CONFIG", "GET", "appendonly"]), "appendonly\nyes");
    assert_eq!(with_aof.command(&["CONFIG", "GET", "appendfsync"]), "appendfsync\nalways");
}

#[test]
fn a_server_that_exits_early_fails_with_the_tail_of_its_log() {
    let panic = std::panic::catch_unwind(|| RedisServer::start_with(&["--no-such-directive", "x"]))
        .expect_err("a bad directive must fail the start");

    let message = panic.downcast_ref::<String>().map_or("(not a String)", String::as_str);
    assert!(message.contains("exited early"), "{message}");
    assert!(message.contains("FATAL CONFIG FILE ERROR"), "the log tail is quoted: {message}");
}

#[test]
fn a_killed_server_restarted_on_the_same_port_keeps_its_data_when_aof_is_on() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let port = server.port();
    let old_pid = server.pid();
    assert_eq!(server.command(&["SET", "survivor", "yes"]), "OK");

    server.kill();
    assert!(!server.is_running());
    assert_process_gone(old_pid);
    server.restart();

    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), old_pid);
    assert_eq!(server.command(&["GET", "survivor"]), "yes");
}

#[test]
fn a_killed_server_restarted_on_the_same_port_loses_its_data_when_persistence_is_off() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.command(&["SET", "ephemeral", "yes"]), "OK");

    server.kill();
    server.restart();

    assert_eq!(server.port(), port);
    assert_eq!(server.command(&["GET", "ephemeral"]), "(nil)");
}

#[test]
fn a_stopped_server_exits_and_restarts_with_its_aof_data() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes"]);
    let old_pid = server.pid();
    assert_eq!(server.command(&["SET", "flushed", "on-shutdown"]), "OK");

    server.stop();
    assert!(!server.is_running());
    assert_process_gone(old_pid);
    assert!(server.log_tail(5).contains("ready to exit, bye bye"), "{}", server.log_tail(20));
    server.restart();

    assert_eq!(server.command(&["GET", "flushed"]), "on-shutdown");
}

#[test]
fn restarting_a_running_server_stops_it_first() {
    let mut server = RedisServer::start();
    let old_pid = server.pid();

    server.restart();

    assert_process_gone(old_pid);
    assert!(server.is_running());
    assert_eq!(server.command(&["PING"]), "PONG");
}

#[test]
fn dropping_a_server_kills_its_process() {
    let server = RedisServer::start();
    let pid = server.pid();
    assert!(process_exists(pid));

    drop(server);

    assert_process_gone(pid);
}

#[test]
fn the_cluster_starts_with_every_node_reporting_cluster_state_ok() {
    let cluster = RedisCluster::start();

    assert_eq!(cluster.nodes().len(), 3);
    for node in cluster.nodes() {
        let info = node.command(&["CLUSTER", "INFO"]);
        assert!(info.lines().any(|line| line.trim() == "cluster_state:ok"), "{}: {info}", node.addr());
        assert!(info.lines().any(|line| line.trim() == "cluster_slots_assigned:16384"), "{info}");
        assert!(info.lines().any(|line| line.trim() == "cluster_known_nodes:3"), "{info}");
    }
    let addrs: Vec<String> = cluster.nodes().iter().map(RedisServer::addr).collect();
    assert_eq!(cluster.url(), format!("redis+cluster://{}", addrs.join(",")));
    let seeds: Vec<String> = cluster.nodes().iter().map(|node| format!("redis://{}/", node.addr())).collect();
    assert_eq!(cluster.seed_urls(), seeds);
}

#[test]
fn a_key_is_stored_by_the_one_node_owning_its_slot_and_the_others_redirect_there() {
    let cluster = RedisCluster::start();
    let slot = cluster.nodes()[0].command(&["CLUSTER", "KEYSLOT", "{t}:a"]);

    let mut owners = Vec::new();
    for node in cluster.nodes() {
        let reply = node.command(&["SET", "{t}:a", "1"]);
        if reply == "OK" {
            owners.push(node.port());
            continue;
        }
        let moved_to = reply
            .strip_prefix(&format!("(error) MOVED {slot} 127.0.0.1:"))
            .and_then(|port| port.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{} answered neither OK nor MOVED {slot}: {reply:?}", node.addr()));
        assert_ne!(moved_to, node.port(), "a node redirects to another node");
        let owner = cluster
            .nodes()
            .iter()
            .find(|other| other.port() == moved_to)
            .expect("MOVED names a cluster node");
        assert_eq!(owner.command(&["SET", "{t}:a", "1"]), "OK");
    }

    assert_eq!(owners.len(), 1, "exactly one node owns slot {slot}");
    let owner = cluster.nodes().iter().find(|node| node.port() == owners[0]).expect("the owner is a node");
    assert_eq!(owner.command(&["GET", "{t}:a"]), "1");
}

#[test]
fn dropping_the_cluster_kills_every_node() {
    let cluster = RedisCluster::start();
    let pids: Vec<u32> = cluster.nodes().iter().map(RedisServer::pid).collect();

    drop(cluster);

    for pid in pids {
        assert_process_gone(pid);
    }
}

#[test]
fn a_missing_redis_server_fails_the_test_with_an_install_hint() {
    if in_child() {
        // PATH holds no redis-server here: this must panic, which fails the child test.
        let _server = RedisServer::start();
        return;
    }
    let empty = tempfile::tempdir().expect("temp dir");

    let printed =
        run_alone_with_path("a_missing_redis_server_fails_the_test_with_an_install_hint", empty.path());

    assert!(printed.contains(REDIS_SERVER_HINT), "{printed}");
}

#[test]
fn a_missing_redis_cli_fails_the_cluster_with_an_install_hint() {
    if in_child() {
        // PATH holds redis-server but no redis-cli here: this must panic.
        let _cluster = RedisCluster::start();
        return;
    }
    let only_server = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(redis_server_path(), only_server.path().join("redis-server"))
        .expect("symlink redis-server");

    let printed =
        run_alone_with_path("a_missing_redis_cli_fails_the_cluster_with_an_install_hint", only_server.path());

    assert!(
        printed.contains(
            "redis-cli not found on PATH: install it (Debian/Ubuntu: apt-get install -y redis-tools) — Redis tests never skip"
        ),
        "{printed}"
    );
}

/// Sends `command` as RESP over `conn` and reads what comes back (empty when the connection is
/// closed without an answer).
fn send_raw(conn: &mut std::net::TcpStream, command: &[&str]) -> String {
    use std::io::{Read, Write};
    let mut request = format!("*{}\r\n", command.len());
    for part in command {
        request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    conn.write_all(request.as_bytes()).expect("write");
    let mut buf = [0_u8; 512];
    let n = conn.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_lossy_proxy_passes_commands_through_and_loses_the_answer_or_the_request_it_is_armed_for() {
    let server = RedisServer::start();
    let proxy = redis_harness::LossyProxy::start(&server);
    let addr = proxy.url().trim_start_matches("redis://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect through the proxy");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(send_raw(&mut conn, &["SET", "plain", "1"]), "+OK\r\n", "unarmed: answered");
    proxy.arm(&["SET", "doomed"]);
    assert_eq!(send_raw(&mut conn, &["SET", "other", "1"]), "+OK\r\n", "a request without every pattern");
    assert_eq!(send_raw(&mut conn, &["SET", "doomed", "1"]), "", "the armed request's answer is lost");
    assert_eq!(proxy.lost(), 1);
    assert_eq!(server.command(&["GET", "doomed"]), "1", "Redis ran the command whose answer was lost");
    // Requests that share a connection (written together, as a multiplexed client does): the
    // earlier one is answered, the armed one's answer is lost.
    let mut shared = std::net::TcpStream::connect(&addr).expect("a new connection");
    shared.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    proxy.arm(&["INCR", "doomed-counter"]);
    {
        use std::io::{Read, Write};
        shared
            .write_all(
                b"*3\r\n$3\r\nSET\r\n$5\r\nfirst\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$14\r\ndoomed-counter\r\n",
            )
            .expect("write");
        let mut answers = Vec::new();
        let _ = shared.read_to_end(&mut answers);
        assert_eq!(String::from_utf8_lossy(&answers), "+OK\r\n", "the first request's answer only");
    }
    assert_eq!(proxy.lost(), 2);
    assert_eq!(server.command(&["GET", "doomed-counter"]), "1", "Redis ran the armed request");
    let mut again = std::net::TcpStream::connect(&addr).expect("a new connection");
    again.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(send_raw(&mut again, &["SET", "doomed", "2"]), "+OK\r\n", "one answer only is lost");
    // Armed to lose a request itself: the connection is closed in its place, and Redis never
    // sees it.
    proxy.arm_request(&["SET", "never-sent"]);
    assert_eq!(send_raw(&mut again, &["SET", "never-sent", "1"]), "", "no answer");
    assert_eq!(proxy.lost(), 3);
    assert_eq!(server.command(&["EXISTS", "never-sent"]), "0", "Redis did not run it");
}
