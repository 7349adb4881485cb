//! `lockctl list [PREFIX]`: the locks held now, as a majority of regions agree,
//! in resource order: a table, or with `--output json` one object
//! `{"locks": [...], "next_page_token": "..."}` (the token only when `--limit`
//! stopped the listing before its end).

use std::process::ExitCode;

use globallock_client::{Client, ClientError, ListedLock};
use globallock_protocol::request::MAX_PAGE_SIZE;
use serde::Serialize;

use crate::Output;

/// What to list.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Only resources starting with this (`""`: every resource).
    pub prefix: &'a str,
    /// Print at most this many locks (`None`: all).
    pub limit: Option<usize>,
    /// Start after the page this token ended (`""`: from the first lock).
    pub page_token: &'a str,
    /// Table or JSON.
    pub output: Output,
}

#[derive(Debug, Serialize)]
struct Listed {
    locks: Vec<ListedLock>,
    /// Where a later `--page-token` continues; absent when every lock was listed.
    #[serde(skip_serializing_if = "String::is_empty")]
    next_page_token: String,
}

/// Page through the coordinator's listing until its end or `--limit`, then print.
pub async fn list(client: &Client, options: Options<'_>) -> Result<ExitCode, ClientError> {
    let mut locks: Vec<ListedLock> = Vec::new();
    let mut token = options.page_token.to_owned();
    loop {
        let wanted = options
            .limit
            .map_or(MAX_PAGE_SIZE, |limit| limit.saturating_sub(locks.len()))
            .clamp(1, MAX_PAGE_SIZE);
        let page = client
            .list_locks(
                options.prefix,
                u32::try_from(wanted).unwrap_or(u32::MAX),
                &token,
            )
            .await?;
        locks.extend(page.locks);
        // A token that does not move would page forever: take it as the end.
        let next = std::mem::take(&mut token);
        if page.next_page_token.is_empty() || page.next_page_token == next {
            break;
        }
        token = page.next_page_token;
        if options.limit.is_some_and(|limit| locks.len() >= limit) {
            break;
        }
    }
    let listed = Listed {
        locks,
        next_page_token: token,
    };
    match options.output {
        Output::Json => {
            let json = serde_json::to_string(&listed).unwrap_or_default();
            print_text(&format!("{json}\n"));
        }
        Output::Text => {
            print_text(&table(&listed.locks));
            if listed.locks.is_empty() && listed.next_page_token.is_empty() {
                match options.prefix {
                    "" => eprintln!("lockctl: no locks held"),
                    prefix => eprintln!("lockctl: no locks held on resources starting {prefix:?}"),
                }
            }
            if !listed.next_page_token.is_empty() {
                eprintln!(
                    "lockctl: more locks follow: raise --limit, or continue with --page-token {}",
                    listed.next_page_token
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The locks as aligned columns under a header of their JSON names (nothing
/// at all when there are none).
fn table(locks: &[ListedLock]) -> String {
    if locks.is_empty() {
        return String::new();
    }
    let header = [
        "resource",
        "owner",
        "fencing_token",
        "expires_in_ms",
        "granted_regions",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 5]> = std::iter::once(header)
        .chain(locks.iter().map(|lock| {
            [
                lock.resource.clone(),
                lock.owner.clone(),
                lock.fencing_token.to_string(),
                lock.expires_in_ms.to_string(),
                lock.granted_regions.join(","),
            ]
        }))
        .collect();
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Write to stdout; a closed stdout (`lockctl list | head -1`) is not an error.
fn print_text(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_under_the_json_names() {
        let lock = |resource: &str, owner: &str, token| ListedLock {
            resource: resource.into(),
            owner: owner.into(),
            fencing_token: token,
            expires_in_ms: 29_000,
            granted_regions: vec!["region-a".into(), "region-b".into()],
        };
        let text = table(&[lock("orders/ü", "alice", 7), lock("orders/10", "bob", 12)]);
        assert_eq!(
            text,
            "resource   owner  fencing_token  expires_in_ms  granted_regions\n\
             orders/ü   alice  7              29000          region-a,region-b\n\
             orders/10  bob    12             29000          region-a,region-b\n"
        );
        assert_eq!(table(&[]), "");
    }
}
