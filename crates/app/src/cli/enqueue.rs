//! `laneway enqueue chat|upload|exam|profile`: submit a job for scripting, print its id and, with
//! `--wait`, follow it to the end (a status line updated in place on a terminal, plain lines
//! otherwise) and print the reply or result. A refusal or a failed job exits non-zero.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use app_core::LanewayClient;
use clap::Subcommand;
use serde_json::json;

use super::{explain, now_ms};

/// How often `--wait` asks for the job's status.
const POLL: Duration = Duration::from_millis(200);

/// What to enqueue.
#[derive(Debug, Clone, Subcommand)]
pub enum EnqueueCommand {
    /// A student's chat message, in the student's lane (or `--lane`).
    Chat {
        /// The student.
        #[arg(long)]
        student: String,
        /// The session (a lane per session).
        #[arg(long)]
        session: Option<String>,
        /// An explicit lane id.
        #[arg(long)]
        lane: Option<String>,
        /// Idempotency key [default: generated].
        #[arg(long)]
        request_id: Option<String>,
        /// The message (the words are joined with spaces).
        #[arg(required = true)]
        message: Vec<String>,
    },
    /// An assignment upload: the file's text, named after its path.
    Upload {
        /// The file to send.
        file: PathBuf,
    },
    /// An exam score sheet (CSV).
    Exam {
        /// The CSV file to send.
        file: PathBuf,
    },
    /// A student profile update with notes.
    Profile {
        /// The student.
        #[arg(long)]
        student: String,
        /// A note (repeat for more).
        #[arg(long = "note", required = true)]
        notes: Vec<String>,
    },
}

/// Runs `laneway enqueue`.
pub async fn run(client: &LanewayClient, command: EnqueueCommand, wait: bool) -> anyhow::Result<()> {
    match command {
        EnqueueCommand::Chat { student, session, lane, request_id, message } => {
            let request_id = request_id.unwrap_or_else(|| format!("cli-{}-{}", now_ms(), std::process::id()));
            let mut body = json!({
                "request_id": request_id,
                "role": "student",
                "student_id": student,
                "messages": [{"role": "user", "content": message.join(" ")}],
            });
            if let Some(session) = session {
                body["session_id"] = session.into();
            }
            if let Some(lane) = lane {
                body["lane_id"] = lane.into();
            }
            let started = client.start_chat(&body).await.map_err(|e| explain(&e))?;
            println!(
                "job {}  lane {}  position {}{}",
                started.job_id,
                started.lane_id,
                started.lane_queue_position,
                if started.debounced { "  (coalesced with a recent request)" } else { "" }
            );
            if wait {
                wait_chat(client, started.job_id.as_str()).await?;
            }
        }
        EnqueueCommand::Upload { file } => {
            let (name, content) = read(&file)?;
            let accepted = client.submit_upload(&name, &content).await.map_err(|e| explain(&e))?;
            finish(client, accepted, wait).await?;
        }
        EnqueueCommand::Exam { file } => {
            let (name, csv) = read(&file)?;
            let accepted = client.submit_exam(&name, &csv).await.map_err(|e| explain(&e))?;
            finish(client, accepted, wait).await?;
        }
        EnqueueCommand::Profile { student, notes } => {
            let accepted = client.submit_profile_update(&student, &notes).await.map_err(|e| explain(&e))?;
            finish(client, accepted, wait).await?;
        }
    }
    Ok(())
}

/// The file's name and its text.
fn read(path: &Path) -> anyhow::Result<(String, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_owned();
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    Ok((name, content))
}

async fn finish(
    client: &LanewayClient,
    accepted: app_core::api::JobAccepted,
    wait: bool,
) -> anyhow::Result<()> {
    println!("job {}  kind {}  {}", accepted.job_id, accepted.kind, accepted.status);
    if !wait {
        return Ok(());
    }
    let job_id = accepted.job_id.as_str().to_owned();
    let mut progress = Progress::new();
    loop {
        let view = client.job(&job_id).await.map_err(|e| explain(&e))?;
        progress.show(&format!("{} attempt {}", view.status, view.attempt));
        match view.status.as_str() {
            "done" => {
                progress.end();
                let result = view.result.unwrap_or(serde_json::Value::Null);
                println!("{}", serde_json::to_string_pretty(&result)?);
                return Ok(());
            }
            "failed" | "cancelled" => {
                progress.end();
                anyhow::bail!("job {job_id} {}: {}", view.status, view.error.unwrap_or_default());
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

async fn wait_chat(client: &LanewayClient, job_id: &str) -> anyhow::Result<()> {
    let mut progress = Progress::new();
    loop {
        let status = client.chat_status(job_id).await.map_err(|e| explain(&e))?;
        let line = if status.status == "queued" && status.lane_queue_position > 0 {
            format!("queued, position {}", status.lane_queue_position)
        } else {
            status.status.clone()
        };
        progress.show(&line);
        match status.status.as_str() {
            "done" => {
                progress.end();
                println!("{}", status.reply.unwrap_or_default());
                return Ok(());
            }
            "failed" | "cancelled" => {
                progress.end();
                anyhow::bail!("job {job_id} {}: {}", status.status, status.error.unwrap_or_default());
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// The progress of a waited job on stderr: one line redrawn in place on a terminal, a plain line
/// per change otherwise.
struct Progress {
    started: Instant,
    terminal: bool,
    last: String,
}

impl Progress {
    fn new() -> Self {
        Self { started: Instant::now(), terminal: std::io::stderr().is_terminal(), last: String::new() }
    }

    fn show(&mut self, state: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{state}  {elapsed:.1}s");
            let _ = err.flush();
        } else if state != self.last {
            let _ = writeln!(err, "{state} ({elapsed:.1}s)");
        }
        state.clone_into(&mut self.last);
    }

    fn end(&self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
