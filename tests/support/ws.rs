//! A WebSocket test client on tokio-tungstenite.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One client socket.
pub struct WsClient {
    stream: Stream,
}

/// How a socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The connection ended without a close frame.
    Abrupt,
}

impl WsClient {
    /// Connects to `url` with extra headers; returns the HTTP status of a refused handshake.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Self, StatusCode> {
        let mut request = url.into_client_request().expect("valid WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tungstenite::Error::Http(response)) => Err(response.status()),
            Err(error) => panic!("WebSocket connect to {url} failed: {error}"),
        }
    }

    /// Connects over a TCP socket with a small receive buffer, so that a client that stops
    /// reading pushes back on the server quickly.
    pub async fn connect_small_buffer(url: &str, token: &str) -> Self {
        let mut request = url.into_client_request().expect("valid WebSocket URL");
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
        );
        let host = request.uri().authority().expect("host").as_str().to_owned();
        let address = tokio::net::lookup_host(host)
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
        let tcp = socket.connect(address).await.expect("connect");
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
        Self { stream }
    }

    /// Receives the next text frame as JSON, panicking on a timeout or a close.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(FRAME_TIMEOUT).await {
            Some(value) => value,
            None => panic!("no frame within {FRAME_TIMEOUT:?}"),
        }
    }

    /// Receives the next text frame as JSON, or `None` when none arrives within `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Receives the next frame and asserts its type.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "unexpected frame {frame}");
        frame
    }

    /// Sends a JSON text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends a text frame, returning the transport error instead of panicking.
    pub async fn try_send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        self.stream.send(Message::text(text)).await
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send frame");
    }

    /// Asserts that nothing else is queued for this socket: a ping command's pong comes next.
    pub async fn assert_nothing_pending(&mut self) {
        self.send(serde_json::json!({"type": "ping", "request_id": "quiet"}))
            .await;
        let frame = self.recv().await;
        assert_eq!(
            frame,
            serde_json::json!({"type": "pong", "request_id": "quiet"}),
            "expected no other frame"
        );
    }

    /// Reads until the socket closes, skipping other frames; returns how it ended.
    pub async fn closed(&mut self, timeout: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("socket still open after {timeout:?}"));
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return Closed::Code(frame.code.into()),
                Some(Ok(Message::Close(None))) => return Closed::Code(CloseCode::Status.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Closed::Abrupt,
            }
        }
    }

    /// Closes the socket from the client side.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
