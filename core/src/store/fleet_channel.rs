//! The byte stream of every TCP connection to the fleet's database: the client (tokio-postgres)
//! hands it the socket and we do the rest, so that two rules hold whatever the server does:
//!
//! - **A password never leaves in clear text over an unverified channel.** The client answers
//!   `AuthenticationCleartextPassword` with the password and `AuthenticationMD5Password` with a
//!   hash open to offline guessing, and has no option to refuse them (libpq 16's
//!   `require_auth`): this stream reads the server's authentication requests before the client
//!   does and, unless the server's certificate was verified (verify-ca, verify-full), fails
//!   the read on either, so the client stops before it writes anything. SCRAM goes through: it
//!   proves the password without revealing it (with TLS, as SCRAM-SHA-256-PLUS when the
//!   server offers it, bound to the certificate the client saw; not *required*, since that
//!   would refuse certificate and trust logins, which use no password: a URL can still say
//!   `channel_binding=require`). Setting the password only for servers "known to use SCRAM"
//!   cannot work: what a server will ask is only known from the server, i.e. from whoever
//!   answers on an unverified channel.
//! - **A server that goes silent is noticed.** TCP_USER_TIMEOUT and keepalives catch a dead
//!   network; a server process that is stopped or hung still has its kernel acknowledge
//!   every byte. So once a request is written, some answer must come within `SILENCE_LIMIT`
//!   (longer than the statement timeout), during the TLS handshake, the login and every query.
//!
//! For that, TCP connections are made with the client's `sslmode=require` and
//! `sslnegotiation=direct`, which only means "call the connector, do not negotiate": this
//! connector sends the SSLRequest itself and answers the server's 'S' or 'N' as libpq does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use openssl::ssl::SslConnector;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::fleet_tls::Check;

/// Longest silence of the server after a request: the statement timeout (30 s) plus a margin.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// The SSLRequest message: length 8, code 80877103 (1234 in the high 16 bits, 5679 low).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How connections to one URL do TLS, built once per URL (`FleetUrl::tls`).
#[derive(Clone)]
pub struct FleetTls {
    /// `None`: no TLS at all (sslmode=disable, or a Unix socket).
    connector: Option<SslConnector>,
    check: Check,
    /// Whether a server that answers 'N' to the SSLRequest is refused.
    required: bool,
    local: bool,
}

impl FleetTls {
    pub(super) fn new(
        connector: Option<SslConnector>,
        check: Check,
        required: bool,
        local: bool,
    ) -> FleetTls {
        FleetTls {
            connector,
            check,
            required,
            local,
        }
    }

    /// Whether the URL's hosts are Unix sockets (no TLS, nothing for this connector to do).
    pub(super) fn is_local(&self) -> bool {
        self.local
    }
}

impl MakeTlsConnect<Socket> for FleetTls {
    type Stream = FleetStream;
    type TlsConnect = Handshake;
    type Error = BoxError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, BoxError> {
        let tls = match &self.connector {
            Some(connector) => {
                let mut ssl = connector.configure()?;
                ssl.set_verify_hostname(self.check == Check::ChainAndName);
                Some(postgres_openssl::TlsConnector::new(ssl, domain))
            }
            None => None,
        };
        Ok(Handshake {
            tls,
            verified: self.check != Check::Nothing,
            required: self.required,
        })
    }
}

/// One connection's negotiation: SSLRequest, then TLS or plaintext.
pub struct Handshake {
    tls: Option<postgres_openssl::TlsConnector>,
    verified: bool,
    required: bool,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = FleetStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<FleetStream, BoxError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let mut socket = Watchful::new(socket);
            let Some(tls) = self.tls else {
                return Ok(FleetStream::new(Channel::Plain(socket), false));
            };
            socket.write_all(&SSL_REQUEST).await?;
            socket.flush().await?;
            let mut answer = [0u8];
            socket.read_exact(&mut answer).await?;
            match answer[0] {
                b'S' => {
                    // Bytes the server sent after its 'S' are read by TLS, never as messages.
                    let stream = TlsConnect::<Watchful>::connect(tls, socket).await?;
                    Ok(FleetStream::new(Channel::Tls(stream), self.verified))
                }
                b'N' if !self.required => Ok(FleetStream::new(Channel::Plain(socket), false)),
                b'N' => Err("server does not support SSL, but SSL was required".into()),
                other => Err(format!(
                    "received invalid response to SSL negotiation: {:?}",
                    char::from(other)
                )
                .into()),
            }
        })
    }
}

enum Channel {
    Plain(Watchful),
    Tls(postgres_openssl::TlsStream<Watchful>),
}

/// The stream the client reads and writes: TLS or plaintext, with the password rule.
pub struct FleetStream {
    channel: Channel,
    auth: AuthWatch,
}

impl FleetStream {
    fn new(channel: Channel, verified: bool) -> FleetStream {
        FleetStream {
            channel,
            auth: AuthWatch::new(verified),
        }
    }
}

impl AsyncRead for FleetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.auth.refusal()?;
        let before = buf.filled().len();
        match &mut this.channel {
            Channel::Plain(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
            Channel::Tls(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
        }
        if let Err(refused) = this.auth.scan(&buf.filled()[before..]) {
            // The request is taken back: the client never sees it, so it answers nothing.
            buf.set_filled(before);
            return Poll::Ready(Err(refused));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FleetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.auth.refusal()?;
        match &mut this.channel {
            Channel::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Channel::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().channel {
            Channel::Plain(s) => Pin::new(s).poll_flush(cx),
            Channel::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().channel {
            Channel::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Channel::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl TlsStream for FleetStream {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.channel {
            Channel::Plain(_) => ChannelBinding::none(),
            Channel::Tls(s) => s.channel_binding(),
        }
    }
}

/// Follows the server's messages until authentication is over (`AuthenticationOk`) and
/// refuses a cleartext or MD5 password request on an unverified channel. Only the first 9
/// bytes of each message are kept (type, length, request code): a message's length costs
/// nothing to skip.
struct AuthWatch {
    verified: bool,
    done: bool,
    refused: Option<&'static str>,
    head: [u8; 9],
    have: usize,
    skip: usize,
}

/// `AuthenticationRequest` codes.
const AUTH_OK: u32 = 0;
const AUTH_CLEARTEXT: u32 = 3;
const AUTH_MD5: u32 = 5;

impl AuthWatch {
    fn new(verified: bool) -> AuthWatch {
        AuthWatch {
            verified,
            done: false,
            refused: None,
            head: [0; 9],
            have: 0,
            skip: 0,
        }
    }

    /// The refusal again, once there was one: nothing is written after it.
    fn refusal(&self) -> io::Result<()> {
        match self.refused {
            Some(asked) => Err(refusal_error(asked)),
            None => Ok(()),
        }
    }

    /// Reads `bytes` from the server, in order.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let authentication = self.head[0] == b'R' && self.length() >= 8;
            match self.have {
                // Another message (an error, a protocol notice): passed on whole.
                5 if !authentication => {
                    self.skip = self.length().saturating_sub(4);
                    self.have = 0;
                }
                9 => {
                    let code = u32::from_be_bytes([
                        self.head[5],
                        self.head[6],
                        self.head[7],
                        self.head[8],
                    ]);
                    self.skip = self.length().saturating_sub(8);
                    self.have = 0;
                    self.judge(code)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The current message's length field (meaningful once 5 bytes are in).
    fn length(&self) -> usize {
        u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]) as usize
    }

    fn judge(&mut self, code: u32) -> io::Result<()> {
        let asked = match code {
            AUTH_OK => {
                self.done = true;
                return Ok(());
            }
            AUTH_CLEARTEXT => "server requested a cleartext password",
            AUTH_MD5 => "server requested a hashed password",
            _ => return Ok(()),
        };
        if self.verified {
            return Ok(());
        }
        self.refused = Some(asked);
        Err(refusal_error(asked))
    }
}

/// The refusal, in the words of libpq's `require_auth` (what it would say with
/// `require_auth=scram-sha-256`), plus why and what was not done.
fn refusal_error(asked: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "authentication method requirement \"scram-sha-256\" failed: {asked} over a \
             channel whose certificate is not verified; the password was not sent (use \
             scram-sha-256 on the server, or sslmode=verify-full)"
        ),
    )
}

/// The socket, with a deadline for the server's answer: armed by a write, cleared by any
/// byte read. An idle connection (a LISTEN waiting for notifications) has written nothing
/// and has no deadline.
pub struct Watchful {
    socket: Socket,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watchful {
    fn new(socket: Socket) -> Watchful {
        Watchful {
            socket,
            deadline: None,
        }
    }
}

impl AsyncRead for Watchful {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = match &mut this.deadline {
                    Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server sent nothing for {} s after a request",
                        SILENCE_LIMIT.as_secs()
                    ),
                )))
            }
        }
    }
}

impl AsyncWrite for Watchful {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.socket).poll_write(cx, buf))?;
        if written > 0 && this.deadline.is_none() {
            let mut deadline = Box::pin(tokio::time::sleep(SILENCE_LIMIT));
            // Polled now so that its expiry wakes this task: the client may have polled the
            // read side already in this round, before there was a deadline to wait for.
            let _ = deadline.as_mut().poll(cx);
            this.deadline = Some(deadline);
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An authentication request message.
    fn request(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + extra.len() as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    #[test]
    fn cleartext_and_md5_requests_are_refused_unless_verified() {
        for (code, extra) in [(AUTH_CLEARTEXT, &b""[..]), (AUTH_MD5, &b"salt"[..])] {
            let message = request(code, extra);
            let mut watch = AuthWatch::new(false);
            let err = watch.scan(&message).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            assert!(watch.refusal().is_err());
            assert!(AuthWatch::new(true).scan(&message).is_ok());
        }
    }

    #[test]
    fn scram_and_other_messages_pass_byte_by_byte() {
        let mut stream = Vec::new();
        // A notice-like message, SASL (10) with its mechanism list, SASLContinue (11), Ok.
        stream.extend_from_slice(&[b'N', 0, 0, 0, 6, b'x', 0]);
        stream.extend(request(10, b"SCRAM-SHA-256\0\0"));
        stream.extend(request(11, b"r=abc,s=def,i=4096"));
        stream.extend(request(AUTH_OK, b""));
        // After authentication nothing is read: a cleartext request now means nothing.
        stream.extend(request(AUTH_CLEARTEXT, b""));
        let mut watch = AuthWatch::new(false);
        for byte in &stream {
            watch.scan(std::slice::from_ref(byte)).unwrap();
        }
        assert!(watch.done);
        let mut whole = AuthWatch::new(false);
        whole.scan(&stream).unwrap();
        assert!(whole.done);
    }

    #[test]
    fn a_request_split_across_reads_is_still_seen() {
        let message = request(AUTH_CLEARTEXT, b"");
        let mut watch = AuthWatch::new(false);
        watch.scan(&message[..3]).unwrap();
        watch.scan(&message[3..7]).unwrap();
        assert!(watch.scan(&message[7..]).is_err());
    }
}
