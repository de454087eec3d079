//! A tiny RESP2 client for tests: one command per connection, the reply rendered readably.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Long enough for INFO, KEYS or CLUSTER commands on a test server, short enough that a wedged
/// server fails the test instead of hanging it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The readiness probe runs every few ms; one probe must not hold up the poll loop.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A parsed RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(String),
    /// A null bulk string or a null array.
    Nil,
    Array(Vec<Self>),
}

impl Reply {
    /// The reply as a test reads it: simple and bulk strings as they are, errors as
    /// `(error) <message>`, integers in decimal, nil as `(nil)`, arrays flattened one element a
    /// line (an empty array is the empty string).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            Self::Simple(text) | Self::Bulk(text) => out.push_str(text),
            Self::Error(message) => {
                let _ = write!(out, "(error) {message}");
            }
            Self::Integer(n) => {
                let _ = write!(out, "{n}");
            }
            Self::Nil => out.push_str("(nil)"),
            Self::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    item.render_into(out);
                }
            }
        }
    }

    /// The integer of an integer reply.
    pub(crate) fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array reply.
    pub(crate) fn as_array(&self) -> Option<&[Self]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Sends one command to the server on loopback `port` and reads its reply.
pub(crate) fn request(port: u16, args: &[&str]) -> io::Result<Reply> {
    let mut stream = connect(port, COMMAND_TIMEOUT)?;
    stream.write_all(&encode(args))?;
    read_reply(&mut BufReader::new(stream))
}

/// Whether the server on `port` answers an inline `PING` with `+PONG` (it answers `-LOADING`
/// while it replays its AOF).
pub(crate) fn answers_ping(port: u16) -> bool {
    let probe = || -> io::Result<bool> {
        let mut stream = connect(port, PROBE_TIMEOUT)?;
        stream.write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end() == "+PONG")
    };
    probe().unwrap_or(false)
}

/// Sends `SHUTDOWN`: `true` when the server closed the connection without an error reply, which
/// is how it acknowledges a shutdown (after flushing its AOF, or saving if save points are set).
pub(crate) fn shutdown(port: u16) -> bool {
    let Ok(mut stream) = connect(port, COMMAND_TIMEOUT) else { return false };
    if stream.write_all(&encode(&["SHUTDOWN"])).is_err() {
        return false;
    }
    match read_reply(&mut BufReader::new(stream)) {
        Err(err) => matches!(
            err.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
        // An error reply (`-ERR Errors trying to SHUTDOWN`) or anything else: not shut down.
        Ok(_) => false,
    }
}

fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| invalid("empty reply line"))?;
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(parse_int(rest)?)),
        "$" => {
            let Ok(len) = usize::try_from(parse_int(rest)?) else { return Ok(Reply::Nil) };
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len);
            Ok(Reply::Bulk(String::from_utf8_lossy(&data).into_owned()))
        }
        "*" => {
            let Ok(len) = usize::try_from(parse_int(rest)?) else { return Ok(Reply::Nil) };
            (0..len).map(|_| read_reply(reader)).collect::<io::Result<_>>().map(Reply::Array)
        }
        _ => Err(invalid(&format!("unexpected RESP2 reply line {line:?}"))),
    }
}

/// One `\r\n`-terminated line, without the terminator; end of stream is `UnexpectedEof`.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a full reply"));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn parse_int(text: &str) -> io::Result<i64> {
    text.parse().map_err(|_| invalid(&format!("bad RESP integer {text:?}")))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Reply {
        read_reply(&mut raw.as_bytes()).unwrap()
    }

    #[test]
    fn every_reply_type_renders_the_way_a_test_reads_it() {
        assert_eq!(parse("+OK\r\n").render(), "OK");
        assert_eq!(parse("-MOVED 866 127.0.0.1:7001\r\n").render(), "(error) MOVED 866 127.0.0.1:7001");
        assert_eq!(parse(":42\r\n").render(), "42");
        assert_eq!(parse("$5\r\na\r\nbc\r\n").render(), "a\r\nbc");
        assert_eq!(parse("$-1\r\n").render(), "(nil)");
        assert_eq!(parse("*-1\r\n").render(), "(nil)");
        assert_eq!(parse("*0\r\n").render(), "");
        assert_eq!(parse("*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+b\r\n").render(), "a\n1\n(nil)\nb");
    }

    #[test]
    fn a_truncated_or_unknown_reply_is_an_error() {
        assert_eq!(read_reply(&mut "+OK".as_bytes()).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_reply(&mut "$5\r\nab".as_bytes()).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_reply(&mut "%1\r\n".as_bytes()).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_command_is_encoded_as_an_array_of_bulk_strings() {
        assert_eq!(encode(&["SET", "k", ""]), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
