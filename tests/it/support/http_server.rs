//! A plain HTTP/1.1 server on loopback for tests: it records what it receives and answers
//! by path (`/hello`, `/echo`, `/flaky`, `/redirect`, `/big`, `/big-chunked`, `/headers`,
//! `/drip`).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

/// A plain HTTP/1.1 server on 127.0.0.1 that records what it receives and answers by path.
pub struct Server {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Told when a `/drip` connection is closed by the client.
    pub dripped: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
}

impl Server {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (closed, dripped) = mpsc::unbounded_channel();
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (recorded, closed) = (Arc::clone(&recorded), closed.clone());
                tokio::spawn(serve(stream, port, recorded, closed));
            }
        });
        Self {
            port,
            seen,
            dripped: tokio::sync::Mutex::new(dripped),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: mpsc::UnboundedSender<()>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer[head_end..head_end + length].to_vec();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    seen.lock().unwrap().push(Seen {
        head,
        body: body.clone(),
    });
    let reply = |status: &str, headers: &str, body: &[u8]| {
        let mut reply = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        reply.extend_from_slice(body);
        reply
    };
    let answer = match path.as_str() {
        "/hello" => reply("200 OK", "", b"hi"),
        // 503 to the first request, 200 to the rest.
        "/flaky" if seen.lock().unwrap().len() == 1 => reply("503 Service Unavailable", "", b""),
        "/flaky" => reply("200 OK", "", b"ok"),
        "/echo" => reply("201 Created", "", &body),
        "/redirect" => reply(
            "302 Found",
            &format!("location: http://127.0.0.1:{port}/hello\r\n"),
            b"",
        ),
        "/big" => reply("200 OK", "", &vec![b'x'; 256 << 10]),
        "/big-chunked" => {
            let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..64 {
                reply.extend_from_slice(b"1000\r\n");
                reply.extend_from_slice(&[b'y'; 0x1000]);
                reply.extend_from_slice(b"\r\n");
            }
            reply.extend_from_slice(b"0\r\n\r\n");
            reply
        }
        "/headers" => reply(
            "200 OK",
            &format!("x-padding: {}\r\n", "p".repeat(40 << 10)),
            b"",
        ),
        "/drip" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                .await;
            // One byte every 50 ms, until the client goes away.
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if stream.write_all(b"d").await.is_err() {
                    let _ = closed.send(());
                    return;
                }
            }
        }
        _ => reply("404 Not Found", "", b""),
    };
    let _ = stream.write_all(&answer).await;
}
