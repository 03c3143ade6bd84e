//! Query-string parsing for list endpoints: known keys only, `label` may repeat, nothing else may.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sigil_core::model::PageRequest;
use sigil_proto::admin::ListResponse;

use super::error::ApiError;

#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Keys that may appear more than once.
const REPEATABLE: &[&str] = &["label"];

impl Params {
    /// Parses `raw`, accepting only `allowed` keys plus `cursor` and `limit`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let known = allowed.contains(&k.as_ref()) || k == "cursor" || k == "limit";
            if !known {
                let mut keys: Vec<&str> = allowed.to_vec();
                keys.extend(["cursor", "limit"]);
                return Err(ApiError::invalid(
                    k.to_string(),
                    format!("unknown query parameter {k:?}; expected one of: {}", keys.join(", ")),
                ));
            }
            if !REPEATABLE.contains(&k.as_ref()) && pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(ApiError::invalid(
                    k.to_string(),
                    format!("query parameter {k:?} given more than once"),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `key` with `f` if present; a parse failure names the parameter.
    pub fn parsed<T, E: std::fmt::Display>(
        &self,
        key: &str,
        f: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.get(key)
            .map(|v| f(v).map_err(|e| ApiError::invalid(key, e.to_string())))
            .transpose()
    }

    /// One page of a list that is read whole (keys, policy versions, registration tokens,
    /// issuers, nodes: a handful each), paged by `limit` and `cursor` like every other list.
    /// The cursor is the count of items already returned, so only one this server could have
    /// handed out (a position inside the list) is accepted.
    pub fn page_of<T>(&self, items: Vec<T>) -> Result<ListResponse<T>, ApiError> {
        let page = self.page()?;
        let start = match page.after.as_deref() {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|n| (1..items.len()).contains(n))
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server returned"))?,
        };
        let end = start.saturating_add(page.limit as usize).min(items.len());
        let next_cursor = (end < items.len()).then(|| end.to_string());
        Ok(ListResponse {
            items: items.into_iter().skip(start).take(end - start).collect(),
            next_cursor,
        })
    }

    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = self.parsed("limit", |v| v.parse::<u32>().map_err(|_| "must be a positive integer"))?;
        PageRequest::new(self.get("cursor").map(str::to_owned), limit)
            .map_err(|e| ApiError::invalid(e.what, e.to_string()))
    }
}

/// The query of a list that takes no filter: only `limit` and `cursor`, anything else a 400.
pub struct PageOnly(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for PageOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Params::parse(parts.uri.query(), &[]).map(PageOnly)
    }
}
