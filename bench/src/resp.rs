//! Just enough of the Redis protocol (RESP2) for Redlock: one connection, one
//! command at a time, replies that are not arrays.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Integer(i64),
    /// `$3\r\nfoo`, or `$-1` (nil).
    Bulk(Option<Vec<u8>>),
}

/// A connection to one redis-server.
#[derive(Debug)]
pub struct Connection {
    /// Replies come in here.
    reader: BufReader<OwnedReadHalf>,
    /// Commands go out here.
    writer: OwnedWriteHalf,
    /// The command being encoded (kept to reuse its allocation).
    buffer: Vec<u8>,
}

fn protocol_error(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl Connection {
    /// Connect to `addr` (Nagle off: one small command at a time).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer: write,
            buffer: Vec::with_capacity(256),
        })
    }

    /// Send one command and read its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.buffer.clear();
        self.buffer
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.buffer
                .extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.buffer.extend_from_slice(arg);
            self.buffer.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&self.buffer).await?;
        self.read_reply().await
    }

    async fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match line.strip_suffix("\r\n") {
            Some(text) => Ok(text.to_owned()),
            None => Err(protocol_error(format!("unterminated reply line {line:?}"))),
        }
    }

    async fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line().await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| protocol_error(format!("bad number in reply {line:?}")))
        };
        match kind {
            "+" => Ok(Reply::Status(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => Ok(Reply::Integer(number()?)),
            "$" => {
                let Ok(len) = usize::try_from(number()?) else {
                    return Ok(Reply::Bulk(None));
                };
                let mut data = vec![0u8; len + 2];
                self.reader.read_exact(&mut data).await?;
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
            _ => Err(protocol_error(format!("unsupported reply {line:?}"))),
        }
    }
}
