//! The OpenAI-compatible routes: chat and text completions (whole, or streamed as server-sent
//! events) and embeddings, with the bodies of [`verinet_primitives::openai`].

use std::marker::PhantomData;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use reqwest::RequestBuilder;
use serde::{Serialize, de::DeserializeOwned};
use verinet_primitives::{
    openai::{
        ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, EmbeddingRequest, EmbeddingResponse,
        TextCompletion,
    },
    wire::ErrorDetail,
};

use crate::client::ok;
use crate::{Client, ClientError, Result};

impl Client {
    /// `POST /v1/chat/completions`, the whole answer at once (`stream` is sent false).
    pub async fn chat(&self, req: &ChatCompletionRequest) -> Result<ChatCompletion> {
        let mut req = req.clone();
        req.options.stream = false;
        decode(self.openai_post("/v1/chat/completions", &req)).await
    }

    /// `POST /v1/chat/completions` streamed (`stream` is sent true): the chunks as they come.
    /// Ask for `stream_options.include_usage` to get a last chunk with the token counts.
    pub async fn chat_stream(&self, req: &ChatCompletionRequest) -> Result<CompletionStream<ChatCompletionChunk>> {
        let mut req = req.clone();
        req.options.stream = true;
        CompletionStream::open(self.openai_post("/v1/chat/completions", &req)).await
    }

    /// `POST /v1/completions`, the whole answer at once (`stream` is sent false).
    pub async fn completions(&self, req: &CompletionRequest) -> Result<TextCompletion> {
        let mut req = req.clone();
        req.options.stream = false;
        decode(self.openai_post("/v1/completions", &req)).await
    }

    /// `POST /v1/completions` streamed (`stream` is sent true).
    pub async fn completions_stream(&self, req: &CompletionRequest) -> Result<CompletionStream<TextCompletion>> {
        let mut req = req.clone();
        req.options.stream = true;
        CompletionStream::open(self.openai_post("/v1/completions", &req)).await
    }

    /// `POST /v1/embeddings`.
    pub async fn embeddings(&self, req: &EmbeddingRequest) -> Result<EmbeddingResponse> {
        decode(self.openai_post("/v1/embeddings", req)).await
    }

    fn openai_post(&self, path: &str, body: &impl Serialize) -> RequestBuilder {
        self.http.post(self.url(path)).json(body)
    }
}

/// The events of a streamed completion, decoded as they arrive: each `data:` event is one
/// chunk, `data: [DONE]` ends the stream, and an error event the node sends after it started
/// answering becomes [`ClientError::Api`]. A body that ends before `[DONE]` is an error, so a
/// cut connection is never taken for a finished answer.
pub struct CompletionStream<T> {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    events: SseDecoder,
    state: StreamState,
    _chunk: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    /// The body ended; what is left in the decoder is all there is.
    Drained,
    /// `[DONE]` or an error was returned: nothing more.
    Finished,
}

impl<T: DeserializeOwned> CompletionStream<T> {
    async fn open(req: RequestBuilder) -> Result<Self> {
        let resp = ok(req.header(reqwest::header::ACCEPT, "text/event-stream").send().await?).await?;
        Ok(Self {
            body: resp.bytes_stream().boxed(),
            events: SseDecoder::default(),
            state: StreamState::Open,
            _chunk: PhantomData,
        })
    }

    /// The next chunk; `None` after `[DONE]` (or after an error was returned).
    pub async fn next(&mut self) -> Option<Result<T>> {
        let item = self.next_inner().await;
        if matches!(item, None | Some(Err(_))) {
            self.state = StreamState::Finished;
        }
        item
    }

    async fn next_inner(&mut self) -> Option<Result<T>> {
        loop {
            if self.state == StreamState::Finished {
                return None;
            }
            match self.events.next_event() {
                Some(Ok(data)) if data == "[DONE]" => return None,
                Some(Ok(data)) => return Some(parse_event(&data)),
                Some(Err(e)) => return Some(Err(e)),
                None if self.state == StreamState::Drained => {
                    return Some(Err(ClientError::Decode("the event stream ended before [DONE]".into())));
                }
                None => {}
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.events.push(&bytes),
                Some(Err(e)) => return Some(Err(e.into())),
                None => {
                    // An event the server did not close with a blank line still counts.
                    self.events.push(b"\n\n");
                    self.state = StreamState::Drained;
                }
            }
        }
    }

    /// As a [`Stream`] (for `StreamExt` combinators).
    pub fn into_stream(self) -> impl Stream<Item = Result<T>> + Send
    where
        T: Send,
    {
        futures::stream::unfold(self, |mut s| async move { s.next().await.map(|item| (item, s)) })
    }
}

impl<T> std::fmt::Debug for CompletionStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionStream").field("state", &self.state).finish_non_exhaustive()
    }
}

/// One event's data: a chunk, or the `{"error": ...}` the node sends when a started stream fails.
fn parse_event<T: DeserializeOwned>(data: &str) -> Result<T> {
    let value: serde_json::Value = serde_json::from_str(data).map_err(|e| ClientError::Decode(format!("event {data:?}: {e}")))?;
    if let Some(error) = value.get("error") {
        let e: ErrorDetail =
            serde_json::from_value(error.clone()).map_err(|e| ClientError::Decode(format!("error event {data:?}: {e}")))?;
        return Err(ClientError::Api { status: status_of(&e.kind), code: e.code, message: e.message });
    }
    serde_json::from_value(value).map_err(|e| ClientError::Decode(format!("event {data:?}: {e}")))
}

/// The stream itself answered 200; an error event names only OpenAI's error class, so the status
/// is the one that class stands for.
fn status_of(kind: &str) -> u16 {
    match kind {
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "rate_limit_error" => 429,
        "server_error" => 500,
        _ => 400,
    }
}

/// Server-sent events from bytes in any chunking: lines are cut only once complete (so a
/// character split between chunks survives), `data:` lines of one event are joined with `\n`,
/// comments and other fields are skipped.
#[derive(Debug, Default)]
struct SseDecoder {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    pos: usize,
    data: Option<String>,
}

impl SseDecoder {
    fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The data of the next complete event, if one is buffered.
    fn next_event(&mut self) -> Option<Result<String>> {
        while let Some(end) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
            let raw = &self.buf[self.pos..self.pos + end];
            self.pos += end + 1;
            let line = match std::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw)) {
                Ok(l) => l,
                Err(e) => return Some(Err(ClientError::Decode(format!("event stream is not UTF-8: {e}")))),
            };
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    return Some(Ok(data));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            if field == "data" {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        None
    }
}

async fn decode<T: DeserializeOwned>(req: RequestBuilder) -> Result<T> {
    let bytes = ok(req.send().await?).await?.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(e) = d.next_event() {
                out.push(e.unwrap());
            }
        }
        out
    }

    #[test]
    fn events_survive_any_chunking() {
        let body = "data: {\"a\":\"é\"}\n\n: a comment\nevent: x\ndata: one\r\ndata:two\r\n\r\ndata: [DONE]\n\n".as_bytes();
        let whole = events(&[body]);
        assert_eq!(whole, ["{\"a\":\"é\"}", "one\ntwo", "[DONE]"]);
        // Every split point, including inside the two bytes of "é" and between \r and \n.
        for cut in 0..body.len() {
            assert_eq!(events(&[&body[..cut], &body[cut..]]), whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(events(&bytewise), whole);
    }

    #[test]
    fn an_error_event_is_an_api_error() {
        let e = parse_event::<serde_json::Value>(
            r#"{"error":{"message":"worker gone","type":"server_error","code":"workers_failed"}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Api { status: 500, ref code, .. } if code == "workers_failed"), "{e}");
        assert!(parse_event::<serde_json::Value>("{not json").is_err());
    }
}
