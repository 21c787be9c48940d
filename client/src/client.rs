//! The client: one value per API key, shared by cloning, carrying its newest consistency token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use order_domain::{IdempotencyKey, OrderId};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use crate::error::{Error, ErrorCode};
use crate::model::{BuyOrder, ConsistencyToken, NewOrder, Page, PlaceAnswer, Placed};
use crate::retry::{Backoff, Verdict};

/// The header a placement's answer carries its token in, and a read sends it back in.
const TOKEN_HEADER: &str = "consistency-token";

/// A client of the buy-orders APIs for one API key. Cheap to clone; clones share their
/// connections and their consistency token.
///
/// - [`Client::place`] places an order, retrying what may be retried (no answer, 503,
///   `outcome_unknown`, 429) with the same idempotence key, honouring `Retry-After`, until
///   its deadline; never a refusal (another 4xx).
/// - [`Client::get`], [`Client::page`] and [`Client::list`] read, by default after the
///   newest write this client placed (read-your-writes): each read carries that write's
///   consistency token, so it answers only once the read side shows it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    key: String,
    writers: Vec<Url>,
    reader: Option<Url>,
    /// The writer the next placement starts at: moves on when one does not answer.
    next_writer: AtomicUsize,
    token: Mutex<Option<ConsistencyToken>>,
    place_deadline: Duration,
    read_deadline: Duration,
    attempt_timeout: Duration,
    read_your_writes: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client")
            .field("writers", &self.inner.writers)
            .field("reader", &self.inner.reader)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]: its key, its URLs and its deadlines.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    key: String,
    writers: Vec<String>,
    reader: Option<String>,
    place_deadline: Duration,
    read_deadline: Duration,
    attempt_timeout: Duration,
    read_your_writes: bool,
}

impl ClientBuilder {
    /// How long [`Client::place`] keeps trying by default: above the server's own resolution
    /// of an unknown outcome (5 s), with room for a writer's restart.
    pub const PLACE_DEADLINE: Duration = Duration::from_secs(30);
    /// How long a read keeps trying by default (a read waiting on its token waits 2 s on the
    /// server, then is retried).
    pub const READ_DEADLINE: Duration = Duration::from_secs(10);
    /// How long one attempt may take by default before it is abandoned and retried.
    pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The write API's base URL (`http://host:port`). Give several (writers of one system):
    /// an attempt that gets no answer, or a 503, is retried on the next.
    pub fn write_url(mut self, url: impl Into<String>) -> Self {
        self.writers.push(url.into());
        self
    }

    /// The read API's base URL.
    pub fn read_url(mut self, url: impl Into<String>) -> Self {
        self.reader = Some(url.into());
        self
    }

    /// How long a placement keeps trying (all attempts and waits).
    pub fn place_deadline(mut self, deadline: Duration) -> Self {
        self.place_deadline = deadline;
        self
    }

    /// How long a read keeps trying (all attempts and waits).
    pub fn read_deadline(mut self, deadline: Duration) -> Self {
        self.read_deadline = deadline;
        self
    }

    /// How long one attempt may take.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Whether reads carry the newest consistency token of this client's placements (the
    /// default: `true`). Off, reads are answered at once, possibly without recent writes.
    pub fn read_your_writes(mut self, on: bool) -> Self {
        self.read_your_writes = on;
        self
    }

    /// The client, or [`Error::Config`] naming what is wrong.
    pub fn build(self) -> Result<Client, Error> {
        let parse = |what: &str, url: &str| -> Result<Url, Error> {
            let mut parsed = Url::parse(url)
                .map_err(|e| Error::Config(format!("{what} {url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(Error::Config(format!(
                    "{what} {url:?}: give http(s)://host[:port]"
                )));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(Error::Config(format!(
                    "{what}: credentials do not belong in the URL (the API key is given apart)"
                )));
            }
            // A base under a path (`https://host/orders`, behind a proxy) keeps it: the routes
            // are joined below it, not in place of its last segment.
            if !parsed.path().ends_with('/') {
                let path = format!("{}/", parsed.path());
                parsed.set_path(&path);
            }
            Ok(parsed)
        };
        let writers = self
            .writers
            .iter()
            .map(|url| parse("write URL", url))
            .collect::<Result<Vec<_>, _>>()?;
        let reader = self
            .reader
            .as_deref()
            .map(|url| parse("read URL", url))
            .transpose()?;
        if writers.is_empty() && reader.is_none() {
            return Err(Error::Config(
                "give a write URL, a read URL, or both".into(),
            ));
        }
        if self.key.is_empty() || !self.key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "the API key is empty or not printable ASCII".into(),
            ));
        }
        for (what, duration) in [
            ("place deadline", self.place_deadline),
            ("read deadline", self.read_deadline),
            ("attempt timeout", self.attempt_timeout),
        ] {
            if duration.is_zero() {
                return Err(Error::Config(format!("the {what} is zero")));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.attempt_timeout)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                key: self.key,
                writers,
                reader,
                next_writer: AtomicUsize::new(0),
                token: Mutex::new(None),
                place_deadline: self.place_deadline,
                read_deadline: self.read_deadline,
                attempt_timeout: self.attempt_timeout,
                read_your_writes: self.read_your_writes,
            }),
        })
    }
}

/// One attempt's answer: status, headers that matter, body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    replayed: bool,
    token: Option<ConsistencyToken>,
    /// Read whole: the APIs' bodies are small and bounded.
    body: Vec<u8>,
}

impl Client {
    /// A builder for a client calling with `api_key` (`bo_…`; sent as a bearer token).
    pub fn builder(api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            key: api_key.into(),
            writers: Vec::new(),
            reader: None,
            place_deadline: ClientBuilder::PLACE_DEADLINE,
            read_deadline: ClientBuilder::READ_DEADLINE,
            attempt_timeout: ClientBuilder::ATTEMPT_TIMEOUT,
            read_your_writes: true,
        }
    }

    /// The newest consistency token of this client's placements, if any.
    pub fn token(&self) -> Option<ConsistencyToken> {
        self.inner
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Places `order`: its key (or a new one, made once for this call) on every attempt.
    ///
    /// Retried: no answer (connection refused or reset, attempt timed out: the next writer
    /// is tried), 503 (`unavailable`, `outcome_unknown`, `price_unavailable`), 502/504 from a
    /// proxy, and 429 (`rate_limited`), each after `Retry-After` when given, else an
    /// exponential backoff with jitter; never past the deadline. A refusal (any other 4xx:
    /// the cap, a reused key, validation) is final and returned at once. Because the key is
    /// kept, a retry of an order that was in fact stored answers that order (a replay): one
    /// order, however many attempts.
    ///
    /// [`Error::DeadlineExceeded`] carries the key: the order may exist; place it again with
    /// that key to learn its fate.
    pub async fn place(&self, order: NewOrder) -> Result<Placed, Error> {
        let inner = &self.inner;
        if inner.writers.is_empty() {
            return Err(Error::Config("no write URL was given".into()));
        }
        let key = order
            .idempotence_key
            .unwrap_or_else(|| IdempotencyKey::from_uuid(uuid::Uuid::new_v4()));
        let body = serde_json::json!({
            "currency": order.currency.code(),
            "amount": order.amount.to_string(),
            "idempotence_key": key.to_string(),
        })
        .to_string();
        let deadline = Instant::now() + inner.place_deadline;
        let mut backoff = Backoff::new();
        loop {
            let at = inner.next_writer.load(Ordering::Relaxed) % inner.writers.len();
            let url = inner.writers[at]
                .join("buy_order")
                .map_err(|e| Error::Config(e.to_string()))?;
            let request = inner
                .http
                .put(url.clone())
                .header("content-type", "application/json")
                .body(body.clone());
            let failure = match self.send(request, &url, deadline).await {
                Ok(answer) if answer.status == StatusCode::OK => {
                    let placed: PlaceAnswer = serde_json::from_slice(&answer.body)
                        .map_err(|e| Error::InvalidAnswer(format!("PUT /buy_order: {e}")))?;
                    if let Some(token) = &answer.token {
                        self.remember(token.clone());
                    }
                    return Ok(Placed {
                        idempotence_key: placed.idempotence_key,
                        order: placed.buy_order,
                        replayed: answer.replayed,
                        token: answer.token,
                    });
                }
                Ok(answer) => api_error(&answer),
                Err(err) => err,
            };
            let verdict = Verdict::of(&failure);
            if verdict.next_endpoint {
                inner.next_writer.fetch_add(1, Ordering::Relaxed);
            }
            if !verdict.retry {
                return Err(failure);
            }
            backoff
                .wait(&failure, deadline)
                .await
                .map_err(|()| Error::DeadlineExceeded {
                    deadline: inner.place_deadline,
                    idempotence_key: Some(key),
                    last: Box::new(failure),
                })?;
        }
    }

    /// One order of this client, or `None` (also for another client's order). With
    /// read-your-writes, answered once the read side shows every order this client placed.
    pub async fn get(&self, id: OrderId) -> Result<Option<BuyOrder>, Error> {
        match self.read(&format!("buy_orders/{id}"), &[]).await {
            Ok(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| Error::InvalidAnswer(format!("GET /buy_orders/{id}: {e}"))),
            Err(Error::Api {
                code: ErrorCode::NotFound,
                ..
            }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A page of up to `size` (1 to 100) orders, newest first, after the order `after` (the
    /// previous page's `last_reference`), or the first page.
    pub async fn page(&self, after: Option<OrderId>, size: u8) -> Result<Page, Error> {
        let mut query = vec![("page_size", size.to_string())];
        if let Some(after) = after {
            query.push(("last_reference", after.to_string()));
        }
        let body = self.read("buy_orders", &query).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidAnswer(format!("GET /buy_orders: {e}")))
    }

    /// Every order of this client, newest first, a page of `page_size` at a time (keyset
    /// pagination: each page costs the server the same). Ends after the last order, or at the
    /// first error.
    pub fn list(&self, page_size: u8) -> impl Stream<Item = Result<BuyOrder, Error>> + Send {
        let client = self.clone();
        let pages = futures::stream::try_unfold(Some(None), move |after| {
            let client = client.clone();
            async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let page = client.page(after, page_size).await?;
                let next = page.last_reference.map(Some);
                Ok(Some((page.rows, next)))
            }
        });
        futures::StreamExt::flat_map(pages, |rows: Result<Vec<BuyOrder>, Error>| {
            let items: Vec<Result<BuyOrder, Error>> = match rows {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            };
            futures::stream::iter(items)
        })
    }

    /// `GET <read URL>/<path>?<query>`, retried as a read may be (no answer, 503, 429), with the
    /// token when read-your-writes is on: the body of the 200.
    async fn read(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, Error> {
        let inner = &self.inner;
        let reader = inner
            .reader
            .as_ref()
            .ok_or_else(|| Error::Config("no read URL was given".into()))?;
        let url = reader
            .join(path)
            .map_err(|e| Error::Config(e.to_string()))?;
        let token = inner.read_your_writes.then(|| self.token()).flatten();
        let deadline = Instant::now() + inner.read_deadline;
        let mut backoff = Backoff::new();
        loop {
            let mut request = inner.http.get(url.clone()).query(query);
            if let Some(token) = &token {
                request = request.header(TOKEN_HEADER, token.as_str());
            }
            let failure = match self.send(request, &url, deadline).await {
                Ok(answer) if answer.status == StatusCode::OK => return Ok(answer.body),
                Ok(answer) => api_error(&answer),
                Err(err) => err,
            };
            if !Verdict::of(&failure).retry {
                return Err(failure);
            }
            backoff
                .wait(&failure, deadline)
                .await
                .map_err(|()| Error::DeadlineExceeded {
                    deadline: inner.read_deadline,
                    idempotence_key: None,
                    last: Box::new(failure),
                })?;
        }
    }

    /// One attempt, within the attempt timeout and the call's deadline.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
        deadline: Instant,
    ) -> Result<Answer, Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = self
            .inner
            .attempt_timeout
            .min(left)
            .max(Duration::from_millis(1));
        let transport = |source| Error::Transport {
            url: url.to_string(),
            source,
        };
        let response = request
            .bearer_auth(&self.inner.key)
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        let headers = response.headers();
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let replayed = headers.get("idempotent-replayed").is_some();
        let token = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(ConsistencyToken::from_header);
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        Ok(Answer {
            status,
            retry_after,
            replayed,
            token,
            body,
        })
    }

    /// Keeps the later of the token held and `token`.
    fn remember(&self, token: ConsistencyToken) {
        let mut held = self.inner.token.lock().unwrap_or_else(|e| e.into_inner());
        *held = Some(match held.take() {
            Some(old) => old.later(token),
            None => token,
        });
    }
}

/// The error an answer other than 200 stands for.
fn api_error(answer: &Answer) -> Error {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Body>(&answer.body) {
        Ok(body) => (ErrorCode::parse(&body.error.code), body.error.message),
        // Not ours (a proxy's page, say): the status decides.
        Err(_) => (
            match answer.status.as_u16() {
                429 => ErrorCode::RateLimited,
                502..=504 => ErrorCode::Unavailable,
                _ => ErrorCode::Other(String::new()),
            },
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).into_owned(),
        ),
    };
    Error::Api {
        status: answer.status.as_u16(),
        code,
        message,
        retry_after: answer.retry_after,
    }
}
