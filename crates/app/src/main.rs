//! `laneway`: the command line — `laneway serve` runs the HTTP API and the workers of every
//! configured tenant in one process (the embedded default needs no server).

mod admin;
mod auth;
mod cli;
mod dashboard;
mod http;
mod metrics;
mod openapi;
mod ops;
mod routes;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use app_core::{Laneway, Mode, Settings};
use clap::{Parser, Subcommand};
use tracing::info;

/// Multi-tenant job runtime for conversational-AI backends.
#[derive(Debug, Parser)]
#[command(name = "laneway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API and the workers (settings come from the environment; see README).
    Serve {
        /// Address to listen on [default: LANEWAY_ADDR or 127.0.0.1:8080].
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Serve the API only and leave the jobs to `laneway worker` processes (Redis only).
        #[arg(long)]
        no_workers: bool,
    },
    /// Run workers only, no HTTP, against Redis (JOB_QUEUE_BACKEND=redis): add one per machine
    /// or core to scale out. SIGTERM hands unfinished jobs back.
    Worker,
    /// Queue depths per kind and state, and the lanes with their waiting jobs, of a running server.
    Status {
        #[command(flatten)]
        client: cli::ClientArgs,
        /// Refresh every second until Ctrl-C.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        /// Print the raw JSON once.
        #[arg(long)]
        json: bool,
    },
    /// Submit a job to a running server (for scripting); prints its id.
    Enqueue {
        #[command(flatten)]
        client: cli::ClientArgs,
        /// Wait for the job to finish, show its progress, print its reply or result.
        #[arg(long, global = true)]
        wait: bool,
        #[command(subcommand)]
        what: cli::enqueue::EnqueueCommand,
    },
    /// Tenants and their API keys, through the admin API of a running server.
    Tenants {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::tenants::TenantsCommand,
    },
    /// Check the settings, data dir, master key, Redis, LLM provider and port (no server needed).
    Doctor,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logging starts before the settings are read; an unknown LOG_FORMAT logs as text here and is
    // then refused by the settings' validation.
    let json =
        getenv("LOG_FORMAT").and_then(|v| app_core::LogFormat::parse(&v)) == Some(app_core::LogFormat::Json);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn getenv(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. } | Command::Worker) {
        // The client commands and doctor print their own output; logs would mix into it.
        init_logging();
    }
    let outcome = match cli.command {
        Command::Serve { addr, no_workers } => serve(addr, !no_workers).await,
        Command::Worker => worker().await,
        Command::Status { client, watch, json } => {
            let output = if json {
                cli::status::StatusOutput::Json
            } else if watch {
                cli::status::StatusOutput::Watch
            } else {
                cli::status::StatusOutput::Once
            };
            match client.client(&getenv) {
                Ok(c) => cli::status::run(&c, output).await,
                Err(e) => Err(e),
            }
        }
        Command::Enqueue { client, wait, what } => match client.client(&getenv) {
            Ok(c) => cli::enqueue::run(&c, what, wait).await,
            Err(e) => Err(e),
        },
        Command::Tenants { client, command } => match client.client(&getenv) {
            Ok(c) => cli::tenants::run(&c, command).await,
            Err(e) => Err(e),
        },
        Command::Doctor => cli::doctor::run(&getenv).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laneway: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn settings() -> anyhow::Result<Settings> {
    Settings::from_env(&getenv).map_err(|e| anyhow::anyhow!("invalid settings:\n{e}"))
}

async fn serve(addr: Option<SocketAddr>, run_workers: bool) -> anyhow::Result<()> {
    let settings = settings()?;
    let addr = addr.unwrap_or(settings.addr);
    let mode = settings.backend;
    if !run_workers && mode != Mode::Redis {
        anyhow::bail!(
            "--no-workers needs JOB_QUEUE_BACKEND=redis: the embedded backend runs its workers in process"
        );
    }
    let app = Arc::new(Laneway::start(settings, mode, run_workers, &getenv).await.context("cannot start")?);
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    info!(addr = %local, "laneway listening on http://{local}");
    let router = auth::require_tenant_keys(http::router(app.clone()), app.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    info!("shutting down: stopping tenant runtimes");
    app.shutdown().await;
    info!("bye");
    Ok(())
}

async fn worker() -> anyhow::Result<()> {
    let settings = settings()?;
    if settings.backend != Mode::Redis {
        anyhow::bail!(
            "laneway worker runs workers against Redis: set JOB_QUEUE_BACKEND=redis and REDIS_URL \
             (the embedded default runs its workers inside `laneway serve`)"
        );
    }
    let app = Laneway::start(settings, Mode::Redis, true, &getenv).await.context("cannot start")?;
    info!("laneway worker running; SIGTERM or Ctrl-C stops it");
    shutdown_signal().await;
    info!("stopping: finishing running jobs and handing back the rest");
    app.shutdown().await;
    info!("bye");
    Ok(())
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
