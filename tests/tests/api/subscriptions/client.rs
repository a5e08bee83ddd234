//! A GraphQL-over-WebSocket client for the tests: both subprotocols, raw
//! enough to see close codes and to stop reading on purpose.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

/// How long a test waits for a message it expects.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Client {
    ws: WebSocketStream<TcpStream>,
    protocol: &'static str,
}

/// What the server sent.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Close(Option<u16>, String),
    Ended,
}

impl Client {
    /// Open `/graphql/ws` on `base` (`http://host:port`) with `protocol`;
    /// `receive_buffer` shrinks the socket's receive buffer (a client that
    /// stops reading then stalls the server's writes sooner).
    pub async fn open(base: &str, protocol: &'static str, receive_buffer: Option<u32>) -> Self {
        let address = base.trim_start_matches("http://");
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = socket
            .connect(address.parse().expect("address"))
            .await
            .expect("connect");
        let mut request = format!("ws://{address}/graphql/ws")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        let (ws, response) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("the WebSocket handshake succeeds");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            protocol,
            "the server speaks the asked-for subprotocol"
        );
        Self { ws, protocol }
    }

    /// Open and complete `connection_init` (with a token if given).
    pub async fn connect(base: &str, token: Option<&str>) -> Self {
        let mut client = Self::open(base, TRANSPORT_WS, None).await;
        let ack = client.init(token).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    /// Send `connection_init`; returns the answer.
    pub async fn init(&mut self, token: Option<&str>) -> Value {
        let payload = match token {
            Some(t) => json!({"Authorization": format!("Bearer {t}")}),
            None => json!({}),
        };
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        match self.receive().await {
            Received::Json(v) => v,
            other => panic!("expected an answer to connection_init, got {other:?}"),
        }
    }

    /// Start operation `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == TRANSPORT_WS {
            "subscribe"
        } else {
            "start"
        };
        self.send(
            json!({"id": id, "type": kind, "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    /// The next message (pings answered and skipped), waiting at most [`PATIENCE`].
    pub async fn receive(&mut self) -> Received {
        self.receive_within(PATIENCE)
            .await
            .expect("a message within the patience window")
    }

    /// The next message, if one comes within `wait`.
    pub async fn receive_within(&mut self, wait: Duration) -> Option<Received> {
        loop {
            let next = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON");
                    if value["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    if value["type"] == "ka" {
                        continue;
                    }
                    return Some(Received::Json(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Received::Close(
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Received::Ended),
            }
        }
    }

    /// The payload of the next `next`/`data` message (asserting that is what comes).
    pub async fn next_payload(&mut self) -> Value {
        match self.receive().await {
            Received::Json(v) if v["type"] == "next" || v["type"] == "data" => v["payload"].clone(),
            other => panic!("expected a subscription message, got {other:?}"),
        }
    }

    /// The `data.callEvents` of the next message (asserting it has no errors).
    pub async fn next_call_event(&mut self) -> Value {
        let payload = self.next_payload().await;
        assert!(payload.get("errors").is_none(), "{payload}");
        payload["data"]["callEvents"].clone()
    }
}

/// The cursor of a fresh delivery: subscribing with `after` it receives
/// everything posted from now on, however long the subscription takes to
/// start (no race between subscribing and posting).
pub async fn cursor_now(base: &str, token: Option<&str>) -> String {
    let http = reqwest::Client::new();
    let call = format!("c_mark-{:08x}", rand::random::<u32>());
    let body =
        format!(r#"{{"event":{{"type":"call.in-progress","data":{{"call":{{"id":"{call}"}}}}}}}}"#);
    let posted = http
        .post(format!("{base}/webhooks/call-events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    let mut query = http.post(format!("{base}/graphql")).json(&json!({
        "query": "query($c: ID) { events(filter: {callId: $c}) { nodes { cursor } } }",
        "variables": {"c": call},
    }));
    if let Some(t) = token {
        query = query.bearer_auth(t);
    }
    let answer: Value = query
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("JSON");
    answer["data"]["events"]["nodes"][0]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned()
}

impl Client {
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
