//! Just enough HTTP/1.1 and WebSocket to drive the daemon's web UI as a
//! phone would, over plain sockets (no client library): a keep-alive
//! connection that logs in and keeps its session cookie, multipart uploads,
//! and drive WebSockets that send masked text frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Read one response from `s` (Content-Length or chunked body).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<(Response, Vec<String>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before the response headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad status line: {head:?}")))?;
    let headers: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = buf[head_end..].to_vec();
    if status == 101 {
        return Ok((
            Response {
                status,
                body: String::new(),
            },
            headers,
        ));
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(bad("connection closed inside the body"));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&body, b"\r\n") {
                    break i;
                }
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(bad("connection closed inside a chunk header"));
                }
                body.extend_from_slice(&chunk[..n]);
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&body[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(bad)?;
            while body.len() < line_end + 2 + size + 2 {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(bad("connection closed inside a chunk"));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
            body.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
        body = out;
    } else {
        s.read_to_end(&mut body)?;
    }
    Ok((
        Response {
            status,
            body: String::from_utf8_lossy(&body).to_string(),
        },
        headers,
    ))
}

/// A logged-in phone: one keep-alive connection carrying the session cookie
/// (the server never closes such a connection to make room for others).
pub struct Phone {
    pub addr: SocketAddr,
    pub cookie: String,
    pub csrf: String,
    conn: TcpStream,
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Phone {
    /// Log in with `password` on a new keep-alive connection.
    pub fn login(addr: SocketAddr, password: &str) -> std::io::Result<Phone> {
        let mut p = Phone {
            addr,
            cookie: String::new(),
            csrf: String::new(),
            conn: connect(addr)?,
        };
        let body = serde_json::json!({ "password": password }).to_string();
        let (r, headers) = p.raw(
            "POST",
            "/api/login",
            Some("application/json"),
            body.as_bytes(),
        )?;
        if r.status != 200 {
            return Err(bad(format!("login: {} {}", r.status, r.body)));
        }
        p.csrf = r.json()["csrf"].as_str().unwrap_or("").to_string();
        p.cookie = headers
            .iter()
            .find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
            .ok_or_else(|| bad("login: no session cookie"))?;
        Ok(p)
    }

    fn raw(
        &mut self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(Response, Vec<String>)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(c) = ctype {
            req.push_str(&format!("Content-Type: {c}\r\n"));
        }
        if !self.cookie.is_empty() {
            req.push_str(&format!(
                "Cookie: {}\r\nX-CSRF-Token: {}\r\n",
                self.cookie, self.csrf
            ));
        }
        req.push_str("\r\n");
        let mut all = req.into_bytes();
        all.extend_from_slice(body);
        self.conn.write_all(&all)?;
        read_response(&mut self.conn)
    }

    /// One request on the phone's connection.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.raw(method, path, ctype, body).map(|(r, _)| r)
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.send("GET", path, None, b"")
    }

    pub fn command(&mut self, cmd: serde_json::Value) -> std::io::Result<Response> {
        self.send(
            "POST",
            "/api/command",
            Some("application/json"),
            cmd.to_string().as_bytes(),
        )
    }

    pub fn estop(&mut self) -> std::io::Result<Response> {
        self.command(serde_json::json!({ "cmd": "e_stop" }))
    }

    /// `POST /api/models` with these files (name, bytes) and a model name.
    pub fn upload(&mut self, name: &str, files: &[(&str, &[u8])]) -> std::io::Result<Response> {
        let boundary = "----car-faults-7d1f0a";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            )
            .as_bytes(),
        );
        for (fname, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{fname}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.send(
            "POST",
            "/api/models",
            Some(&format!("multipart/form-data; boundary={boundary}")),
            &body,
        )
    }

    /// A drive WebSocket of this session (`/ws/drive`).
    pub fn drive_socket(&self) -> std::io::Result<DriveSocket> {
        let mut s = connect(self.addr)?;
        let req = format!(
            "GET /ws/drive?csrf={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: {}\r\n\r\n",
            self.csrf, self.addr, self.cookie
        );
        s.write_all(req.as_bytes())?;
        let (r, _) = read_response(&mut s)?;
        if r.status != 101 {
            return Err(bad(format!("drive socket: {} {}", r.status, r.body)));
        }
        // The server's replies ("too many drive messages") are read and
        // dropped so that its sends never block on us.
        let mut rd = s.try_clone()?;
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while matches!(rd.read(&mut b), Ok(n) if n > 0) {}
        });
        Ok(DriveSocket { s })
    }
}

/// A drive WebSocket: masked text frames, client to server.
pub struct DriveSocket {
    s: TcpStream,
}

impl DriveSocket {
    pub fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        let p = text.as_bytes();
        assert!(p.len() < 126);
        let mask = [0x5a, 0x13, 0xc7, 0x8e];
        let mut f = Vec::with_capacity(p.len() + 6);
        f.push(0x81);
        f.push(0x80 | p.len() as u8);
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f)
    }
}
