//! The admin control socket: how `starling user del` and `starling session list|kick`, run
//! as separate processes, reach the running server. Deleting an account must end its
//! sessions and tell its contacts, which only the server can do.
//!
//! # Protocol
//!
//! A Unix stream socket (`[admin] socket`, default `data_dir/starling.sock`), mode 0600;
//! the server also checks that the peer runs as the server's user or as root (SO_PEERCRED).
//!
//! - A request is one line of UTF-8 ending in `\n`, at most 4096 bytes: a command and its
//!   arguments separated by single spaces. Several requests may follow one another on a
//!   connection; each is answered before the next is read.
//! - A response is zero or more data lines, `- ` followed by tab-separated fields, then one
//!   final line: `ok` or `ok <text>` on success, `error <text>` otherwise. In fields, `\`,
//!   tab and newline are written `\\`, `\t` and `\n`.
//!
//! | request                     | data lines                                      | final line            |
//! |-----------------------------|-------------------------------------------------|-----------------------|
//! | `version`                   |                                                 | `ok starling 0.1.0`   |
//! | `user-delete JID`           |                                                 | `ok deleted JID`      |
//! | `session-list [JID]`        | full JID, address, since (RFC 3339), priority, presence | `ok N sessions` |
//! | `session-kick JID [TEXT…]`  |                                                 | `ok N sessions closed`|
//! | `room-destroy ROOM [TEXT…]` |                                                 | `ok destroyed ROOM`   |
//!
//! `session-list` takes a bare JID (all its resources) or a full one. Presence is
//! `available`, `away`, `chat`, `dnd`, `xa`, or `unavailable` (bound, no presence sent yet).
//! `session-kick` of a bare JID closes all its resources, with `<policy-violation/>` and
//! TEXT (default "kicked by the administrator"), as ejabberd's `kick` does; Prosody's
//! `c2s:close` uses `<undefined-condition/>` with a text, and ejabberd's `kick_session`
//! `<conflict/>`, which clients read as "replaced by another session".

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jid::{BareJid, Jid};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;

use crate::core::Core;
use crate::stanza::{StreamCondition, StreamError};

/// The longest request line.
pub const MAX_REQUEST: usize = 4096;
/// How long a connection may stay silent between requests.
const IDLE: Duration = Duration::from_secs(60);
/// How long `user-delete` waits for the account's sessions to end.
const DELETE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("another server is running: its admin socket {} answers", .0.display())]
    Running(PathBuf),
    #[error("admin socket {}: the path exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// The cause is the `source()`, not repeated in the message (anyhow prints the chain).
    #[error("admin socket {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io { path: path.to_path_buf(), source }
}

/// The socket file, removed when dropped if it is still the one we bound.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind the socket, mode 0600. A socket file that nobody answers on is left from a server
/// that crashed and is replaced; one that answers means another server uses it.
pub fn bind(path: &Path) -> Result<(SocketFile, UnixListener), AdminError> {
    if let Some(dir) = path.parent() {
        crate::files::private_dir(dir).map_err(io_error(path))?;
    }
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
            if !meta.file_type().is_socket() {
                return Err(AdminError::NotASocket(path.to_path_buf()));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(AdminError::Running(path.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::warn!(path = %path.display(), "replacing the admin socket left by a server that did not stop cleanly");
                    std::fs::remove_file(path).map_err(io_error(path))?;
                    UnixListener::bind(path).map_err(io_error(path))?
                }
                Err(e) => return Err(AdminError::Io { path: path.to_path_buf(), source: e }),
            }
        }
        Err(e) => return Err(AdminError::Io { path: path.to_path_buf(), source: e }),
    };
    // Sockets are created 0777 minus the umask; connecting needs write permission.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error(path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    Ok((SocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) }, listener))
}

/// Accept admin connections until shutdown.
pub async fn serve(core: Core, listener: UnixListener, connections: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let core = core.clone();
                connections.spawn(async move {
                    if let Err(e) = connection(core, stream).await {
                        tracing::debug!(error = %e, "admin connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether a peer may use the socket: our own user or root.
fn allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    stream.peer_cred().is_ok_and(|c| c.uid() == me || c.uid() == 0)
}

async fn connection(core: Core, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    if !allowed(write.as_ref()) {
        write.write_all(b"error permission denied\n").await?;
        return Ok(());
    }
    let mut read = BufReader::new(read);
    loop {
        let line = tokio::select! {
            _ = core.shutdown.cancelled() => return Ok(()),
            line = tokio::time::timeout(IDLE, read_request(&mut read)) => match line {
                Err(_) => return Ok(()),
                Ok(line) => line?,
            },
        };
        let Some(line) = line else { return Ok(()) };
        let reply = match line {
            Ok(line) => handle(&core, &line).await,
            Err(too_long) => Reply::error(too_long),
        };
        write.write_all(reply.to_text().as_bytes()).await?;
    }
}

/// One request line: `None` at the end of the connection, `Err` when it is too long or
/// not UTF-8.
async fn read_request<R: AsyncRead + Unpin>(read: &mut BufReader<R>) -> std::io::Result<Option<Result<String, String>>> {
    let mut buf = Vec::new();
    let n = (&mut *read).take(MAX_REQUEST as u64 + 1).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Ok(Some(Err(format!("request longer than {MAX_REQUEST} bytes or not ended by a newline"))));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8(buf).map_err(|_| "request is not UTF-8".to_string())))
}

/// A response: data lines and the final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub data: Vec<Vec<String>>,
    pub ok: bool,
    pub text: String,
}

impl Reply {
    fn ok(text: impl Into<String>) -> Reply {
        Reply { data: Vec::new(), ok: true, text: text.into() }
    }

    fn error(text: impl Into<String>) -> Reply {
        Reply { data: Vec::new(), ok: false, text: text.into() }
    }

    /// The response as sent on the socket.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for fields in &self.data {
            out.push_str("- ");
            out.push_str(&fields.iter().map(|f| escape(f)).collect::<Vec<_>>().join("\t"));
            out.push('\n');
        }
        let text = self.text.replace(['\n', '\r'], " ");
        match (self.ok, text.is_empty()) {
            (true, true) => out.push_str("ok\n"),
            (true, false) => out.push_str(&format!("ok {text}\n")),
            (false, _) => out.push_str(&format!("error {text}\n")),
        }
        out
    }
}

fn escape(field: &str) -> String {
    field.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// An account JID of one of our domains.
fn local_account(core: &Core, text: &str) -> Result<BareJid, String> {
    let jid = BareJid::new(text).map_err(|_| format!("{text:?} is not a valid JID"))?;
    if jid.node().is_none() || !core.is_local_domain(jid.domain().as_str()) {
        return Err(format!("{jid} is not an account of this server"));
    }
    Ok(jid)
}

async fn handle(core: &Core, line: &str) -> Reply {
    let (command, args) = line.split_once(' ').unwrap_or((line, ""));
    match (command, args) {
        ("version", "") => Reply::ok(format!("starling {}", env!("CARGO_PKG_VERSION"))),
        ("user-delete", jid) => {
            let jid = match local_account(core, jid) {
                Ok(j) => j,
                Err(e) => return Reply::error(e),
            };
            match crate::accounts::delete_account(core, &jid).await {
                Ok(true) => {
                    if !crate::accounts::wait_sessions_ended(core, &jid, DELETE_WAIT).await {
                        tracing::warn!(%jid, "sessions of the deleted account are still closing");
                    }
                    Reply::ok(format!("deleted {jid}"))
                }
                Ok(false) => Reply::error(format!("{jid} does not exist")),
                Err(e) => {
                    tracing::error!(%jid, error = %e, "account deletion failed");
                    Reply::error(format!("storage: {e}"))
                }
            }
        }
        ("session-list", filter) => {
            let filter = if filter.is_empty() {
                None
            } else {
                match Jid::new(filter) {
                    Ok(j) => Some(j),
                    Err(_) => return Reply::error(format!("{filter:?} is not a valid JID")),
                }
            };
            let bare = filter.as_ref().map(Jid::to_bare);
            let list = core.sessions.list(bare.as_ref());
            let data: Vec<Vec<String>> = list
                .into_iter()
                .filter(|s| filter.as_ref().is_none_or(|f| f.resource().is_none() || f.as_str() == s.jid.as_str()))
                .map(|s| {
                    vec![
                        s.jid.to_string(),
                        s.peer.to_string(),
                        rfc3339(s.since),
                        s.priority.to_string(),
                        presence_of(s.available, s.last.as_deref()),
                    ]
                })
                .collect();
            let n = data.len();
            Reply { data, ok: true, text: format!("{n} session{}", if n == 1 { "" } else { "s" }) }
        }
        ("session-kick", args) => {
            let (target, text) = args.split_once(' ').unwrap_or((args, ""));
            let jid = match Jid::new(target) {
                Ok(j) if j.node().is_some() => j,
                _ => return Reply::error(format!("{target:?} is not an account or session JID")),
            };
            let text = if text.trim().is_empty() { "kicked by the administrator" } else { text.trim() };
            let error = StreamError::new(StreamCondition::PolicyViolation).with_text(text);
            let closed = match jid.clone().try_into_full() {
                Ok(full) => usize::from(core.sessions.close(&full, error)),
                Err(bare) => {
                    let n = core.sessions.resources(&bare).len();
                    core.sessions.close_all(&bare, error);
                    n
                }
            };
            if closed == 0 {
                return Reply::error(format!("no session of {jid}"));
            }
            tracing::info!(%jid, sessions = closed, "sessions kicked by the administrator");
            Reply::ok(format!("{closed} session{} closed", if closed == 1 { "" } else { "s" }))
        }
        ("room-destroy", args) => {
            let (room, text) = args.split_once(' ').unwrap_or((args, ""));
            match destroy_room(core, room, text.trim()).await {
                Ok(jid) => {
                    tracing::info!(room = %jid, "room destroyed by the administrator");
                    Reply::ok(format!("destroyed {jid}"))
                }
                Err(e) => Reply::error(e),
            }
        }
        _ => Reply::error(format!("unknown request {command:?} (see src/admin.rs for the protocol)")),
    }
}

/// Destroy a room as its owner would (XEP-0045 §10.9): an owner request sent to the room
/// from the served domain, which every room of that domain's service obeys as an owner's.
async fn destroy_room(core: &Core, room: &str, reason: &str) -> Result<BareJid, String> {
    let jid = BareJid::new(room).map_err(|_| format!("{room:?} is not a valid room JID"))?;
    let Some(domain) = jid.domain().as_str().split_once('.').map(|(_, parent)| parent.to_string()).filter(|_| jid.node().is_some()) else {
        return Err(format!("{jid} is not a room"));
    };
    if core.modules.service(jid.domain().as_str()).is_none() || !core.is_local_domain(&domain) {
        return Err(format!("{jid} is not a room of this server"));
    }
    let mut destroy = crate::xml::Element::bare("destroy", "http://jabber.org/protocol/muc#owner");
    let reason = if reason.is_empty() { "destroyed by the administrator" } else { reason };
    destroy.append_child(crate::xml::text_element("reason", "http://jabber.org/protocol/muc#owner", reason));
    let mut query = crate::xml::Element::bare("query", "http://jabber.org/protocol/muc#owner");
    query.append_child(destroy);
    let mut iq = crate::xml::element("iq", crate::xml::ns::CLIENT, &[("type", "set")]);
    iq.append_child(query);
    let domain = Jid::new(&domain).map_err(|e| e.to_string())?;
    let ctx = crate::modules::Ctx::new(core.clone());
    match ctx.request(crate::stanza::Stanza::new(iq, domain, Jid::from(jid.clone())), DELETE_WAIT).await {
        Ok(_) => Ok(jid),
        Err(crate::requests::RequestError::Error(el)) => {
            let condition = el.get_child("error", crate::xml::ns::CLIENT).and_then(|e| e.children().next()).map(|c| c.name().to_string()).unwrap_or_default();
            Err(if condition == "item-not-found" { format!("{jid} does not exist") } else { format!("{jid}: {condition}") })
        }
        Err(e) => Err(format!("{jid}: {e:?}")),
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t).replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::from(t));
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// `available`, the `<show/>` value, or `unavailable` before initial presence.
fn presence_of(available: bool, last: Option<&str>) -> String {
    if !available {
        return "unavailable".into();
    }
    last.and_then(|text| crate::xml::parse_element(text).ok())
        .and_then(|p| p.get_child("show", crate::xml::ns::CLIENT).map(|s| s.text()))
        .filter(|s| matches!(s.as_str(), "away" | "chat" | "dnd" | "xa"))
        .unwrap_or_else(|| "available".into())
}

/// Why the CLI could not use the socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server listens there (no socket file, or a stale one).
    #[error("no server is running (admin socket {})", .0.display())]
    NotRunning(PathBuf),
    #[error("admin socket {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("admin socket {}: unexpected answer {line:?}", path.display())]
    Protocol { path: PathBuf, line: String },
}

/// Send one request to the running server and read its response (for the CLI).
pub async fn request(path: &Path, request: &str) -> Result<Reply, ClientError> {
    let io = |source| ClientError::Io { path: path.to_path_buf(), source };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Err(ClientError::NotRunning(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await.map_err(io)?;
    let mut lines = BufReader::new(read).lines();
    let mut data = Vec::new();
    loop {
        let Some(line) = lines.next_line().await.map_err(io)? else {
            return Err(ClientError::Protocol { path: path.to_path_buf(), line: "(connection closed)".into() });
        };
        if let Some(fields) = line.strip_prefix("- ") {
            data.push(fields.split('\t').map(unescape).collect());
        } else if line == "ok" {
            return Ok(Reply { data, ok: true, text: String::new() });
        } else if let Some(text) = line.strip_prefix("ok ") {
            return Ok(Reply { data, ok: true, text: text.into() });
        } else if let Some(text) = line.strip_prefix("error ") {
            return Ok(Reply { data, ok: false, text: text.into() });
        } else {
            return Err(ClientError::Protocol { path: path.to_path_buf(), line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let reply = Reply { data: vec![vec!["a\tb".into(), "c\\d\ne".into()]], ok: true, text: "1 session".into() };
        let text = reply.to_text();
        assert_eq!(text, "- a\\tb\tc\\\\d\\ne\nok 1 session\n");
        let fields: Vec<String> = text.lines().next().unwrap().strip_prefix("- ").unwrap().split('\t').map(unescape).collect();
        assert_eq!(fields, reply.data[0]);
        assert_eq!(Reply::error("x\ny").to_text(), "error x y\n");
        assert_eq!(Reply::ok("").to_text(), "ok\n");
    }

    #[test]
    fn presence_column() {
        assert_eq!(presence_of(false, None), "unavailable");
        assert_eq!(presence_of(true, Some("<presence xmlns='jabber:client'/>")), "available");
        assert_eq!(presence_of(true, Some("<presence xmlns='jabber:client'><show>dnd</show></presence>")), "dnd");
    }

    /// A socket left by a crashed server is replaced; one that answers is not; a file that
    /// is not a socket is never removed. The file goes when the server stops.
    #[tokio::test]
    async fn stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (file, listener) = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(bind(&path), Err(AdminError::Running(_))));
        // A crash: the listener is gone, the file stays.
        drop(listener);
        std::mem::forget(file);
        let (file, _listener) = bind(&path).unwrap();
        drop(file);
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(bind(&path), Err(AdminError::NotASocket(_))));
        assert!(path.exists());
        assert!(matches!(request(&dir.path().join("none.sock"), "version").await, Err(ClientError::NotRunning(_))));
    }
}
