//! Serving the API's routes over HTTP/1.1 connections, each closed with a lingering close.
//!
//! A handler may answer before it has read the whole request body: a 413 once the body passes
//! its cap, a 401 before an upload is read. If the socket were closed then, the bytes the client
//! is still sending would make the kernel answer with a reset, and a reset can destroy the
//! answer in the client's receive buffer before the client has read it: the client sees a
//! broken connection instead of the 413. So once the answer is written, the write side is shut
//! (the client sees the end of the answer) and whatever the client still sends is read and
//! dropped until it closes its side, for at most [`LINGER_TIME`] and [`LINGER_BYTES`], as
//! nginx's `lingering_close` does. Such an answer also says `Connection: close`, so that a
//! client does not send its next request on a connection that is closing.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use axum::response::Response;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// The longest a closing connection keeps reading what its client still sends.
const LINGER_TIME: Duration = Duration::from_secs(10);
/// The longest a closing connection waits for its client's next bytes.
const LINGER_IDLE: Duration = Duration::from_secs(2);
/// The most a closing connection reads (and drops) of what its client still sends.
const LINGER_BYTES: usize = 64 << 20;

/// Serves `app` on `listener` until `shutdown` resolves, then lets each open connection finish
/// its request in flight.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Every connection holds a receiver: `send(true)` asks them to finish, and `closed()`
    // resolves once the last one has.
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Running out of file descriptors (or a connection reset before it was
                // accepted) must not end the server; the next accept may succeed.
                Err(error) => {
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, app.clone(), stopping.clone()));
    }
    drop(stopping);
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
}

async fn serve_connection(stream: TcpStream, app: Router, mut stopping: watch::Receiver<bool>) {
    // A boxed future is `Unpin`, which `poll_without_shutdown` needs of the service's future.
    let service = hyper::service::service_fn(
        move |request: Request<Incoming>| -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> {
            let app = app.clone();
            let read_to_end = Arc::new(AtomicBool::new(request.body().is_end_stream()));
            let request = request.map(|body| {
                Body::new(Tracked {
                    body,
                    read_to_end: Arc::clone(&read_to_end),
                })
            });
            Box::pin(async move {
                let mut response = app.oneshot(request).await?;
                if !read_to_end.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(response)
            })
        },
    );
    let mut connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut asked_to_stop = false;
    let served = loop {
        tokio::select! {
            served = poll_fn(|cx| connection.poll_without_shutdown(cx)) => break served,
            changed = stopping.changed(), if !asked_to_stop => {
                asked_to_stop = true;
                if changed.is_ok() {
                    Pin::new(&mut connection).graceful_shutdown();
                }
            }
        }
    };
    if served.is_ok() {
        linger(connection.into_parts().io.into_inner()).await;
    }
}

/// Shuts the write side of `stream` and drops what the client still sends, within bounds.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buffer = vec![0; 64 << 10];
        let mut read = 0;
        while read < LINGER_BYTES {
            match tokio::time::timeout(LINGER_IDLE, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(count)) => read += count,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// A request body that records whether the handler read it to its end.
struct Tracked {
    body: Incoming,
    read_to_end: Arc<AtomicBool>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.read_to_end.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
