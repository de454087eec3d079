//! The client commands of `laneway` (`status`, `enqueue`, `tenants`) and `laneway doctor`: thin
//! over `app_core::LanewayClient` and `app_core::diagnose`. Environment variables come in through
//! the `getenv` closure `main.rs` passes, as for `serve`.

pub mod doctor;
pub mod enqueue;
pub mod status;
pub mod tenants;

use std::time::Duration;

use anyhow::Context;
use app_core::{ClientConfig, ClientError, LanewayClient};
use clap::Args;

/// Where the server is and which keys to send, shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of a running laneway [default: http:// + LANEWAY_ADDR, or http://127.0.0.1:8080].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Tenant whose routes to use (`/t/{tenant}/...`) [default: the default tenant].
    #[arg(long, global = true)]
    pub tenant: Option<String>,
    /// Tenant API key, sent as `Authorization: Bearer` [default: LANEWAY_API_KEY].
    #[arg(long, global = true)]
    pub key: Option<String>,
    /// Admin key for `laneway tenants`, sent as `X-Admin-Key` [default: TENANT_ADMIN_KEY].
    #[arg(long, global = true)]
    pub admin_key: Option<String>,
}

impl ClientArgs {
    /// The client these arguments (and the environment, for what they leave out) describe.
    pub fn client(&self, getenv: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<LanewayClient> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let base_url = self.url.clone().unwrap_or_else(|| {
            let addr = nonempty(getenv("LANEWAY_ADDR")).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
            format!("http://{}", addr.trim())
        });
        let config = ClientConfig {
            base_url,
            tenant: self.tenant.clone(),
            api_key: self.key.clone().or_else(|| nonempty(getenv("LANEWAY_API_KEY"))),
            admin_key: self.admin_key.clone().or_else(|| nonempty(getenv("TENANT_ADMIN_KEY"))),
            timeout: Some(Duration::from_secs(30)),
        };
        LanewayClient::new(config).context("cannot set up the client")
    }
}

/// A client error as the CLI reports it: the server's detail, and the field when it named one.
pub fn explain(e: &ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused { status, error, detail, field: Some(field) } => {
            anyhow::anyhow!("refused ({status} {error}): field `{field}`: {detail}")
        }
        ClientError::Refused { status, error, detail, field: None } => {
            anyhow::anyhow!("refused ({status} {error}): {detail}")
        }
        ClientError::Transport { .. } => {
            anyhow::anyhow!("{e}\n(is `laneway serve` running there? pass --url or set LANEWAY_ADDR)")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

/// Aligned text columns: a header row, then `rows`, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn table_columns_are_as_wide_as_their_widest_cell() {
        let text = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(text, "A    LONG\nxyz  1\nq    22\n");
    }
}
