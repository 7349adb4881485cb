//! Listing the locks held now, a page at a time: the opaque page token, and one
//! page in resource order made of every shard's part.
//!
//! Resources are ordered by their UTF-8 bytes (Rust's `str` order; the stores
//! keep them in that order). A page token names the resource the next page
//! starts after; it is opaque to callers (unpadded base64url), and one that no
//! listing returned is `INVALID_ARGUMENT`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::quorum::ListedLock;
use crate::request::{self, InvalidInput, MAX_RESOURCE_CHARS};

/// Longest page token, in characters: the unpadded base64url of the longest
/// resource name (256 characters of up to 4 UTF-8 bytes each).
pub const MAX_PAGE_TOKEN_CHARS: usize = (MAX_RESOURCE_CHARS * 4 * 4).div_ceil(3);

/// The token of the page that starts after `resource`.
pub fn page_token(resource: &str) -> String {
    URL_SAFE_NO_PAD.encode(resource.as_bytes())
}

/// The resource the page of `token` starts after (`""`, the first page, for an
/// empty token). `Err` for anything [`page_token`] did not make of a resource
/// name.
pub fn start_after(token: &str) -> Result<String, InvalidInput> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let invalid = || {
        InvalidInput::new(
            "page_token",
            "is not a next_page_token returned by a listing (pass it on unchanged, or leave it \
             empty for the first page)",
        )
    };
    if token.len() > MAX_PAGE_TOKEN_CHARS {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let resource = String::from_utf8(bytes).map_err(|_| invalid())?;
    request::resource(&resource).map_err(|_| invalid())?;
    Ok(resource)
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The locks, in resource order.
    pub locks: Vec<ListedLock>,
    /// The resource the next page starts after; `None` on the last page.
    pub next: Option<String>,
}

/// One page of at most `page_size` locks (at least 1) from every shard's part:
/// its locks in resource order and the last resource it covered (`None`: it
/// covered everything after the start). Only resources that every shard covered
/// are on the page, so a page can hold fewer locks than `page_size` while more
/// follow; `next` is then where the next page starts. A resource listed by two
/// shards (a lock of the previous ring, still held on its old shard after a ring
/// change, and one on its new shard) shows the lock with the higher token.
pub fn merge(shards: Vec<(Vec<ListedLock>, Option<String>)>, page_size: usize) -> Page {
    let page_size = page_size.max(1);
    let through = shards.iter().filter_map(|(_, last)| last.clone()).min();
    let mut locks: Vec<ListedLock> = shards
        .into_iter()
        .flat_map(|(locks, _)| locks)
        .filter(|lock| through.as_ref().is_none_or(|last| lock.resource <= *last))
        .collect();
    // By resource, and the highest token first: `dedup_by` keeps the first.
    locks.sort_by(|a, b| {
        a.resource
            .cmp(&b.resource)
            .then_with(|| b.held.grant.token.cmp(&a.held.grant.token))
    });
    locks.dedup_by(|later, kept| later.resource == kept.resource);
    if locks.len() > page_size {
        locks.truncate(page_size);
        let next = locks.last().map(|lock| lock.resource.clone());
        return Page { locks, next };
    }
    Page {
        locks,
        next: through,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::quorum::{Grant, MajorityGrant};

    fn lock(resource: &str, token: u64) -> ListedLock {
        ListedLock {
            resource: resource.into(),
            held: MajorityGrant {
                grant: Grant {
                    lock_id: format!("L{token}"),
                    owner: "o".into(),
                    token,
                    ttl_ms: 10_000,
                    request_id: "r".into(),
                    remaining: Duration::from_secs(10),
                    principal: String::new(),
                },
                regions: vec![0, 1],
                held_for: Duration::from_secs(10),
            },
        }
    }

    fn resources(page: &Page) -> Vec<(&str, u64)> {
        page.locks
            .iter()
            .map(|l| (l.resource.as_str(), l.held.grant.token))
            .collect()
    }

    #[test]
    fn a_page_token_round_trips_every_resource_name() {
        for resource in ["orders/42", "a", "with space/ünï", &"€".repeat(256)] {
            let token = page_token(resource);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(start_after(&token).as_deref(), Ok(resource));
        }
        // The longest name (in bytes) makes the longest token.
        assert_eq!(page_token(&"€".repeat(256)).len(), 1_024);
        assert_eq!(MAX_PAGE_TOKEN_CHARS, 1_366);
        assert_eq!(page_token(&"𝄞".repeat(256)).len(), MAX_PAGE_TOKEN_CHARS);
        let longest = page_token(&"𝄞".repeat(256));
        assert_eq!(start_after(&longest), Ok("𝄞".repeat(256)));
        assert_eq!(start_after(""), Ok(String::new()));
    }

    #[test]
    fn a_token_no_listing_returned_is_refused_naming_the_field() {
        let too_long = format!("{}A", page_token(&"𝄞".repeat(256)));
        for bad in [
            "not base64!".to_owned(),
            "A".to_owned(),
            "_w".to_owned(),         // one byte 0xff: not UTF-8
            page_token("tab\there"), // not a resource name
            page_token("a/../b"),    // nor this
            page_token(&"x".repeat(257)),
            too_long,
            "b3JkZXJzLzQy==".to_owned(), // padded
        ] {
            let err = start_after(&bad).expect_err(&bad);
            assert_eq!(err.field, "page_token", "{bad}");
        }
    }

    #[test]
    fn shards_merge_in_resource_order_up_to_the_page_size() {
        let page = merge(
            vec![
                (vec![lock("b", 2), lock("d", 4)], None),
                (vec![lock("a", 1), lock("c", 3)], None),
            ],
            3,
        );
        assert_eq!(resources(&page), vec![("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(page.next.as_deref(), Some("c"));

        let page = merge(
            vec![(vec![lock("b", 2)], None), (vec![lock("a", 1)], None)],
            2,
        );
        assert_eq!(resources(&page), vec![("a", 1), ("b", 2)]);
        assert_eq!(page.next, None, "everything fit: the last page");

        let empty = merge(vec![(vec![], None), (vec![], None)], 10);
        assert_eq!(
            empty,
            Page {
                locks: vec![],
                next: None
            }
        );
        // A page size of 0 is never asked for; it still makes progress.
        let page = merge(vec![(vec![lock("a", 1), lock("b", 2)], None)], 0);
        assert_eq!(resources(&page), vec![("a", 1)]);
        assert_eq!(page.next.as_deref(), Some("a"));
    }

    #[test]
    fn a_merged_page_stops_where_the_shortest_shard_part_stops() {
        // Shard 1 covered only up to "b": "c" and "d" wait for the next page,
        // even though the page has room.
        let page = merge(
            vec![
                (vec![lock("a", 1), lock("c", 3), lock("d", 4)], None),
                (vec![lock("b", 2)], Some("b".into())),
                (vec![], Some("x".into())),
            ],
            10,
        );
        assert_eq!(resources(&page), vec![("a", 1), ("b", 2)]);
        assert_eq!(page.next.as_deref(), Some("b"));
        // A short part's end is the next start even when nothing was held.
        let page = merge(vec![(vec![], Some("m".into())), (vec![], None)], 10);
        assert_eq!(
            page,
            Page {
                locks: vec![],
                next: Some("m".into())
            }
        );
        // The bound is inclusive.
        let page = merge(vec![(vec![lock("m", 1)], Some("m".into()))], 10);
        assert_eq!(resources(&page), vec![("m", 1)]);
    }

    #[test]
    fn a_resource_on_two_shards_shows_the_lock_with_the_higher_token() {
        for shards in [
            vec![(vec![lock("a", 1)], None), (vec![lock("a", 9)], None)],
            vec![(vec![lock("a", 9)], None), (vec![lock("a", 1)], None)],
        ] {
            let page = merge(shards, 10);
            assert_eq!(resources(&page), vec![("a", 9)]);
        }
    }
}
