//! Raw HTTP/1.1 requests and their answers.

use super::*;

/// An HTTP answer: status, headers (names lowercase) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The last value of each header.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Every header line in order (`Set-Cookie` comes several times).
    pub header_lines: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one HTTP/1.1 request, as written, over a new connection, adding
/// `Host`, `Content-Length` and `Connection: close`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&http_request_bytes(method, path, headers, body))
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_http_answer(raw)
}

/// An HTTP/1.1 request as `http_request` writes it.
pub fn http_request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: latchkey.example.com\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An HTTP/1.1 answer read to its end.
pub fn parse_http_answer(raw: Vec<u8>) -> HttpAnswer {
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let header_lines: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers: header_lines.iter().cloned().collect(),
        header_lines,
        body: body.to_owned(),
    }
}
