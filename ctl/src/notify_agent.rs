//! `forcelogoutctl notify-agent --bus ADDRESS` (hidden): the daemon's notification agent
//! for one user (SPEC §10). The daemon starts it already running as that user, with an empty
//! environment and the user's own bus address; it talks to
//! `org.freedesktop.Notifications` there and to the daemon over its standard input and
//! output, one JSON line at a time (`forcelogout_core::enforce::desktop::{Request, Report}`).
//! Every D-Bus call waits at most `CALL_TIMEOUT`; the daemon kills an agent that stops
//! answering, so nothing here can hold up enforcement.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use dbus::arg::{PropMap, Variant};
use dbus::blocking::Connection;
use dbus::channel::{Channel, MatchingReceiver};
use dbus::message::MatchRule;
use forcelogout_core::enforce::desktop::{
    Notification, Report, Request, APP_ICON, APP_NAME, CALL_TIMEOUT, KEEP_WORKING_ACTION, MAX_LINE,
};

const SERVER: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
const BUS: &str = "org.freedesktop.DBus";
/// How long one turn of the loop waits for D-Bus before looking at the daemon's requests.
const TURN: Duration = Duration::from_millis(50);

/// What arrives while the loop runs: a request line from the daemon, or a signal.
enum Input {
    Request(Request),
    EndOfRequests,
    ActionInvoked(u32, String),
    Closed(u32, u32),
}

pub fn run(address: &str) -> ExitCode {
    // It runs as the user, who may signal it but must not reach into it (ptrace, or its
    // pipes through /proc): not dumpable.
    let _ = nix::sys::prctl::set_dumpable(false);
    let connection = match connect(address) {
        Ok(connection) => connection,
        Err(e) => {
            report(&Report::Failed {
                key: None,
                error: format!("connecting to {address}: {e}"),
            });
            return ExitCode::from(1);
        }
    };
    let (tx, rx) = mpsc::channel();
    if let Err(e) = listen(&connection, tx.clone()) {
        report(&Report::Failed {
            key: None,
            error: format!("subscribing to the notification signals: {e}"),
        });
        return ExitCode::from(1);
    }
    report(&Report::Ready);
    std::thread::spawn(move || read_requests(tx));
    let mut shown: HashMap<String, u32> = HashMap::new();
    loop {
        if let Err(e) = connection.process(TURN) {
            report(&Report::Failed {
                key: None,
                error: format!("the bus went away: {e}"),
            });
            return ExitCode::from(1);
        }
        loop {
            match rx.try_recv() {
                Ok(Input::Request(Request::Show { key, notification })) => {
                    let replaces = shown.get(&key).copied().unwrap_or(0);
                    match notify(&connection, replaces, &notification) {
                        Ok(id) => {
                            shown.insert(key.clone(), id);
                            report(&Report::Shown { key, id });
                        }
                        Err(e) => report(&Report::Failed {
                            key: Some(key),
                            error: format!(
                                "Notify: {}: {}",
                                e.name().unwrap_or("error"),
                                e.message().unwrap_or("")
                            ),
                        }),
                    }
                }
                Ok(Input::Request(Request::Close { key })) => {
                    if let Some(id) = shown.remove(&key) {
                        let _: Result<(), _> = connection
                            .with_proxy(SERVER, PATH, CALL_TIMEOUT)
                            .method_call(SERVER, "CloseNotification", (id,));
                    }
                }
                Ok(Input::ActionInvoked(id, action)) => {
                    if action == KEEP_WORKING_ACTION {
                        if let Some(key) = key_of(&shown, id) {
                            report(&Report::Ignored { key });
                        }
                    }
                }
                Ok(Input::Closed(id, reason)) => {
                    if let Some(key) = key_of(&shown, id) {
                        report(&Report::Closed { key, reason });
                    }
                }
                Ok(Input::EndOfRequests) | Err(mpsc::TryRecvError::Disconnected) => {
                    return ExitCode::SUCCESS
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
    }
}

/// A private connection to `address`, registered on the bus. Connecting and authenticating
/// cannot be given a timeout through libdbus: the daemon's watchdog bounds them.
fn connect(address: &str) -> Result<Connection, dbus::Error> {
    let mut channel = Channel::open_private(address)?;
    channel.register()?;
    Ok(Connection::from(channel))
}

/// Receives ActionInvoked and NotificationClosed from the server (servers send them to the
/// caller or to everyone; the match covers both), and forwards them to the loop.
fn listen(connection: &Connection, tx: mpsc::Sender<Input>) -> Result<(), dbus::Error> {
    for member in ["ActionInvoked", "NotificationClosed"] {
        let rule = MatchRule::new_signal(SERVER, member).with_path(PATH);
        connection
            .with_proxy(BUS, "/org/freedesktop/DBus", CALL_TIMEOUT)
            .method_call::<(), _, _, _>(BUS, "AddMatch", (rule.match_str(),))?;
        let tx = tx.clone();
        connection.start_receive(
            rule,
            Box::new(move |message, _| {
                let input = match message.member().as_deref() {
                    Some("ActionInvoked") => message
                        .read2::<u32, String>()
                        .ok()
                        .map(|(id, action)| Input::ActionInvoked(id, action)),
                    _ => message
                        .read2::<u32, u32>()
                        .ok()
                        .map(|(id, reason)| Input::Closed(id, reason)),
                };
                if let Some(input) = input {
                    let _ = tx.send(input);
                }
                true
            }),
        );
    }
    Ok(())
}

fn notify(
    connection: &Connection,
    replaces: u32,
    notification: &Notification,
) -> Result<u32, dbus::Error> {
    let actions: Vec<&str> = notification
        .actions
        .iter()
        .flat_map(|(key, label)| [key.as_str(), label.as_str()])
        .collect();
    let mut hints = PropMap::new();
    let urgency: u8 = if notification.critical { 2 } else { 1 };
    hints.insert("urgency".into(), Variant(Box::new(urgency)));
    let (id,): (u32,) = connection
        .with_proxy(SERVER, PATH, CALL_TIMEOUT)
        .method_call(
            SERVER,
            "Notify",
            (
                APP_NAME,
                replaces,
                APP_ICON,
                notification.summary.as_str(),
                notification.body.as_str(),
                actions,
                hints,
                notification.expire_ms,
            ),
        )?;
    Ok(id)
}

fn key_of(shown: &HashMap<String, u32>, id: u32) -> Option<String> {
    shown
        .iter()
        .find(|(_, shown_id)| **shown_id == id)
        .map(|(key, _)| key.clone())
}

/// The daemon's requests, one JSON line each; a line too long or not a request ends them.
fn read_requests(tx: mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        let mut line = String::new();
        let read = (&mut input).take(MAX_LINE as u64 + 1).read_line(&mut line);
        let request = match read {
            Ok(0) | Err(_) => None,
            Ok(n) if n > MAX_LINE => None,
            Ok(_) => serde_json::from_str::<Request>(&line).ok(),
        };
        let Some(request) = request else {
            let _ = tx.send(Input::EndOfRequests);
            return;
        };
        if tx.send(Input::Request(request)).is_err() {
            return;
        }
    }
}

fn report(report: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report.to_line().as_bytes());
    let _ = out.flush();
}
