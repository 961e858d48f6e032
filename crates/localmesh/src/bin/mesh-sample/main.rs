//! The sample applications pods run in the local mesh:
//! `mesh-sample echo --port P` (TCP echo), `mesh-sample http --port P
//! [--message TEXT]` (HTTP/1.1: answers every request with TEXT), `mesh-sample greeter --port P` (speaks first, then
//! echoes), `mesh-sample sink --port P` (reads until EOF, answers the
//! byte count: for throughput measurements), `mesh-sample whoami --port P`
//! (answers each connection with the client's address as it sees it),
//! `mesh-sample http-echo --port P` (HTTP/1.1 and HTTP/2: answers with the
//! request it received as JSON; `web.rs`), and the clients
//! `mesh-sample connect HOST:PORT [--send TEXT]` (prints the reply) and
//! `mesh-sample request URL ...` (HTTP requests, summarised as JSON).

mod web;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("http-echo") => {
            let port: u16 = flag("--port").unwrap_or_else(|| "8080".into()).parse()?;
            return web::serve(port);
        }
        Some("request") => return web::request(&args[1..]),
        _ => {}
    }
    if args.first().map(String::as_str) == Some("connect") {
        let usage = || anyhow::anyhow!("usage: mesh-sample connect HOST:PORT [--send TEXT]");
        let target = args.get(1).ok_or_else(usage)?;
        return connect(target, &flag("--send").unwrap_or_else(|| "hello\n".into()));
    }
    let port: u16 = flag("--port").unwrap_or_else(|| "8080".into()).parse()?;
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    let role = args.first().cloned().unwrap_or_default();
    let message = flag("--message").unwrap_or_else(|| "hello from the mesh".into());
    if !matches!(role.as_str(), "echo" | "http" | "greeter" | "sink" | "whoami") {
        anyhow::bail!("usage: mesh-sample echo|http|greeter|sink|whoami --port P [--message TEXT]");
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let role = role.clone();
        let message = message.clone();
        std::thread::spawn(move || {
            let _ = match role.as_str() {
                "echo" => echo(stream),
                "greeter" => greet(stream),
                "sink" => sink(stream),
                "whoami" => whoami(stream),
                _ => http(stream, &message),
            };
        });
    }
    Ok(())
}

/// The client: sends TEXT, half-closes, prints what comes back.
fn connect(target: &str, text: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(target)?;
    stream.write_all(text.as_bytes())?;
    // A server that answered and closed already makes this fail; the reply
    // is still there to read.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    std::io::stdout().write_all(&reply)?;
    Ok(())
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = stream.try_clone()?;
    std::io::copy(&mut reader, &mut stream)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Reads everything, then answers with the byte count (8 bytes, big
/// endian) and closes: the sender knows every byte arrived.
fn sink(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    stream.write_all(&total.to_be_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Answers with the client's IP address and closes.
fn whoami(mut stream: TcpStream) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    writeln!(stream, "{}", peer.ip())?;
    stream.shutdown(std::net::Shutdown::Write)
}

fn greet(mut stream: TcpStream) -> std::io::Result<()> {
    stream.write_all(b"220 mesh-sample ready\r\n")?;
    echo(stream)
}

fn http(stream: TcpStream, message: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
            let header = header.to_ascii_lowercase();
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if header.starts_with("connection:") && header.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let text = format!("{message}\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )?;
        if close {
            return writer.shutdown(std::net::Shutdown::Write);
        }
    }
}
