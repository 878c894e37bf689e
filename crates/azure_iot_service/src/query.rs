//! [`Query`]: a query whose answer comes in pages, followed with the `x-ms-continuation`
//! token: IoT Hub's `POST /devices/query`, and DPS's enrollment, group and registration
//! queries (same body, same headers).

use std::marker::PhantomData;

use futures_util::stream::BoxStream;
use reqwest::Method;
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
            page_size: None,
            continuation: None,
            item_type: None,
            done: false,
            items: PhantomData,
        }
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
        if self.sql.trim().is_empty() {
            return Err(Error::invalid("the query is empty"));
        }
        let mut request = Request::new(Method::POST, self.path.clone())
            .json(&json!({ "query": self.sql }))?
            // Reading a page changes nothing: safe to repeat.
            .idempotent(true);
        if let Some(size) = self.page_size {
            request = request.header("x-ms-max-item-count", size.to_string());
        }
        if let Some(token) = &self.continuation {
            request = request.header("x-ms-continuation", token.clone());
        }
        let reply = self.pipeline.send(request).await?;
        let items: Vec<T> = reply.json()?;
        self.item_type = reply.header("x-ms-item-type").map(str::to_owned);
        // Only a non-empty token means more pages (an empty one would loop forever).
        self.continuation = reply
            .header("x-ms-continuation")
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
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
