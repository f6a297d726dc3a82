//! Job ids by prefix, for people who type the first characters of an id
//! (as docker takes them). A range query on the `id` column's unique index:
//! `id >= prefix AND id < next(prefix)`, so it reads only the matching
//! entries however many jobs the store holds.

use rusqlite::params;

use super::{Store, StoreError};

/// Ids in `[?1, ?2)`, through the unique index on `id`.
const IDS_BETWEEN: &str = "SELECT id FROM jobs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3";
/// Ids from `?1` on, for a prefix with no upper bound.
const IDS_FROM: &str = "SELECT id FROM jobs WHERE id >= ?1 ORDER BY id LIMIT ?2";

impl Store {
    /// Up to `limit` job ids starting with `prefix`, in id order.
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            let ids = match upper_bound(prefix) {
                Some(end) => conn.prepare_cached(IDS_BETWEEN).and_then(|mut stmt| {
                    stmt.query_map(params![prefix, end, limit], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()
                }),
                // Only a prefix of U+10FFFF characters has no bound above;
                // no id starts with one, but the answer stays correct.
                None => conn.prepare_cached(IDS_FROM).and_then(|mut stmt| {
                    stmt.query_map(params![prefix, limit], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()
                }),
            }
            .map_err(|e| self.sqlite(e))?;
            Ok(ids
                .into_iter()
                .filter(|id| id.starts_with(prefix))
                .collect())
        })
    }
}

/// The least string greater than every string starting with `prefix`:
/// the prefix with its last character stepped up by one code point
/// (SQLite compares text as UTF-8 bytes, and UTF-8 keeps code point
/// order). Characters that cannot step up are dropped first.
fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup is a range scan of the `id` index, never a scan of the
    /// table: cheap however many jobs there are.
    #[test]
    fn the_lookup_is_an_index_range_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for sql in [IDS_BETWEEN, IDS_FROM] {
            let plan: Vec<String> = store
                .read(|conn| {
                    let mut stmt = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .map_err(|e| store.sqlite(e))?;
                    let count = stmt.parameter_count();
                    let args: Vec<&dyn rusqlite::ToSql> =
                        [&"ab" as &dyn rusqlite::ToSql, &"ac", &10i64][..count].to_vec();
                    stmt.query_map(args.as_slice(), |r| r.get::<_, String>(3))
                        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| store.sqlite(e))
                })
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("INDEX") && plan.contains("id>?"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("SCAN jobs"), "{sql}: {plan}");
        }
        assert_eq!(
            store.ids_with_prefix("ab", 5).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_bound_steps_the_last_character() {
        assert_eq!(upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(upper_bound("a-").as_deref(), Some("a."));
        assert_eq!(upper_bound("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(upper_bound("b\u{10FFFF}").as_deref(), Some("c"));
        assert_eq!(upper_bound("\u{10FFFF}"), None);
        assert_eq!(upper_bound(""), None);
    }
}
