//! [`Query`]: a query whose answer comes in pages, followed with the `x-ms-continuation`
//! token: IoT Hub's `POST /devices/query`, DPS's enrollment, group and registration queries
//! (same body, same headers), and IoT Hub's `GET /jobs/v2/query` (filters in the query string).
//!
//! A page is a JSON array of items, or (read as well, since the IoT Hub specification
//! describes the jobs query that way) a `QueryResult` object `{type, items, continuationToken}`.

use std::marker::PhantomData;

use futures_util::stream::BoxStream;
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, Result};
use crate::http::{Pipeline, Request};

/// A query in progress. Read it page by page with [`next_page`](Self::next_page), item by
/// item with [`into_stream`](Self::into_stream), or whole with [`all`](Self::all).
///
/// ```no_run
/// # async fn run(hub: azure_iot_service::ServiceClient) -> Result<(), azure_iot_service::Error> {
/// use futures_util::TryStreamExt;
///
/// let mut twins = hub
///     .query_twins("SELECT * FROM devices WHERE tags.floor = 3")
///     .page_size(100)
///     .into_stream();
/// while let Some(twin) = twins.try_next().await? {
///     println!("{}", twin.device_id);
/// }
/// # Ok(()) }
/// ```
#[must_use = "a query does nothing until it is read"]
pub struct Query<T> {
    pipeline: Pipeline,
    path: String,
    sql: String,
    /// `GET` with these query-string filters instead of `POST` with `sql`.
    filters: Option<Vec<(&'static str, String)>>,
    page_size: Option<u32>,
    continuation: Option<String>,
    item_type: Option<String>,
    done: bool,
    items: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Query<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("path", &self.path)
            .field("sql", &self.sql)
            .field("page_size", &self.page_size)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> Query<T> {
    /// A query posted to `path` (percent-encoded) of `pipeline`'s service as
    /// `{"query": sql}`. Nothing is sent until it is read.
    pub fn new(pipeline: Pipeline, path: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            pipeline,
            path: path.into(),
            sql: sql.into(),
            filters: None,
            page_size: None,
            continuation: None,
            item_type: None,
            done: false,
            items: PhantomData,
        }
    }

    /// A query read with `GET path?name=value...` (the jobs query), whose filters travel in the
    /// query string. Nothing is sent until it is read.
    pub fn get(
        pipeline: Pipeline,
        path: impl Into<String>,
        filters: Vec<(&'static str, String)>,
    ) -> Self {
        let mut query = Self::new(pipeline, path, String::new());
        query.filters = Some(filters);
        query
    }

    /// Items per page (`x-ms-max-item-count`; IoT Hub's default is 100, its maximum 1,000).
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// Starts from a continuation token a previous query returned.
    pub fn continue_from(mut self, token: impl Into<String>) -> Self {
        self.continuation = Some(token.into());
        self
    }

    /// The token that continues after the last page read, if there are more pages.
    pub fn continuation_token(&self) -> Option<&str> {
        self.continuation.as_deref()
    }

    /// What the items are, as the service said (`twin`, `raw`, `Enrollment`, ...), once a page
    /// was read.
    pub fn item_type(&self) -> Option<&str> {
        self.item_type.as_deref()
    }

    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>> {
        if self.done {
            return Ok(None);
        }
        let mut request = match &self.filters {
            Some(filters) => filters.iter().fold(
                Request::new(Method::GET, self.path.clone()),
                |request, (name, value)| request.query(name, value.clone()),
            ),
            None => {
                if self.sql.trim().is_empty() {
                    return Err(Error::invalid("the query is empty"));
                }
                Request::new(Method::POST, self.path.clone()).json(&json!({ "query": self.sql }))?
            }
        }
        // Reading a page changes nothing: safe to repeat.
        .idempotent(true);
        if let Some(size) = self.page_size {
            request = request.header("x-ms-max-item-count", size.to_string());
        }
        if let Some(token) = &self.continuation {
            request = request.header("x-ms-continuation", token.clone());
        }
        let reply = self.pipeline.send(request).await?;
        let (items, body_token) = match reply.json::<Page<T>>()? {
            Page::Items(items) => (items, None),
            Page::Result {
                items,
                continuation_token,
            } => (items, continuation_token),
        };
        self.item_type = reply.header("x-ms-item-type").map(str::to_owned);
        // Only a non-empty token means more pages (an empty one would loop forever).
        self.continuation = reply
            .header("x-ms-continuation")
            .map(str::to_owned)
            .or(body_token)
            .filter(|t| !t.is_empty());
        self.done = self.continuation.is_none();
        Ok(Some(items))
    }

    /// Every item of every page, in order. The stream ends after the last page, or after
    /// the first error.
    pub fn into_stream(self) -> BoxStream<'static, Result<T>> {
        Box::pin(futures_util::stream::try_unfold(
            (self, std::collections::VecDeque::new()),
            |(mut query, mut buffered)| async move {
                loop {
                    if let Some(item) = buffered.pop_front() {
                        return Ok(Some((item, (query, buffered))));
                    }
                    match query.next_page().await? {
                        Some(page) => buffered.extend(page),
                        None => return Ok(None),
                    }
                }
            },
        ))
    }

    /// Every item of every page, collected.
    pub async fn all(mut self) -> Result<Vec<T>> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

/// One page as the service sends it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Page<T> {
    /// A JSON array of items.
    Items(Vec<T>),
    /// A `QueryResult` object.
    Result {
        items: Vec<T>,
        #[serde(rename = "continuationToken", default)]
        continuation_token: Option<String>,
    },
}
