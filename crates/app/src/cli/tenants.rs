//! `laneway tenants list|put|disable|key|revoke`: the admin API from the terminal.

use app_core::LanewayClient;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{explain, table};

/// An admin call.
#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// List the tenants.
    List,
    /// Create or replace a tenant (starts or restarts only its runtime).
    Put {
        /// The tenant id.
        id: String,
        /// Its data directory [default: DATA_DIR/tenants/<id>].
        #[arg(long)]
        data_dir: Option<String>,
        /// Register it disabled (no runtime, routes answer 404).
        #[arg(long)]
        disabled: bool,
        /// LLM calls in flight at once.
        #[arg(long)]
        llm: Option<u32>,
        /// LLM calls in flight for students.
        #[arg(long)]
        llm_student: Option<u32>,
        /// LLM calls in flight for teachers.
        #[arg(long)]
        llm_teacher: Option<u32>,
        /// OCR jobs at once.
        #[arg(long)]
        ocr: Option<u32>,
    },
    /// Disable a tenant: stop its runtime, keep its data.
    Disable {
        /// The tenant id.
        id: String,
    },
    /// Issue an API key for a tenant (printed once).
    Key {
        /// The tenant id.
        id: String,
    },
    /// Revoke an API key.
    Revoke {
        /// The tenant id.
        id: String,
        /// The key's id (`key_id` from `laneway tenants key`).
        key_id: String,
    },
}

/// Runs `laneway tenants`.
pub async fn run(client: &LanewayClient, command: TenantsCommand) -> anyhow::Result<()> {
    let answer = match command {
        TenantsCommand::List => {
            let page = client.list_tenants().await.map_err(|e| explain(&e))?;
            print!("{}", render_list(&page));
            return Ok(());
        }
        TenantsCommand::Put { id, data_dir, disabled, llm, llm_student, llm_teacher, ocr } => {
            let mut limits = serde_json::Map::new();
            for (name, value) in
                [("llm", llm), ("llm_student", llm_student), ("llm_teacher", llm_teacher), ("ocr", ocr)]
            {
                if let Some(v) = value {
                    limits.insert(name.to_owned(), v.into());
                }
            }
            let mut body = json!({"enabled": !disabled, "limits": limits});
            if let Some(dir) = data_dir {
                body["data_dir"] = dir.into();
            }
            client.put_tenant(&id, &body).await
        }
        TenantsCommand::Disable { id } => client.disable_tenant(&id).await,
        TenantsCommand::Key { id } => client.issue_key(&id).await,
        TenantsCommand::Revoke { id, key_id } => client.revoke_key(&id, &key_id).await,
    };
    let answer = answer.map_err(|e| explain(&e))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn render_list(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["tenants"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    vec![
                        text(&t["id"]),
                        text(&t["source"]),
                        text(&t["enabled"]),
                        text(&t["running"]),
                        text(&t["data_dir"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "SOURCE", "ENABLED", "RUNNING", "DATA DIR"], &rows)
}
