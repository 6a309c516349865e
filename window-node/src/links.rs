//! Shared links to holders: a few long-lived connections that many client connections' requests
//! are pipelined over, in the order they were asked. The partition router has one per
//! partition; a follower a few to the lease's coordinator.
//!
//! Each link is a task that owns one connection to its holder (opened when there is something to
//! send) and a [`Link`] that says what to send and whom a reply answers: replies come back in
//! order, so the first unanswered ask is the one a reply answers. When the holder goes away,
//! moves, or answers error 11 (a handover or a stop), the unanswered asks are sent again, with the
//! request ids they carry, to the next holder, for up to the failover timeout; then each asker is
//! told the link gave up ([`Answer::GaveUp`]) and answers its client with error 11. A slow holder
//! back-pressures the askers: an ask waits while its link's queue is full.
//!
//! Sharing bounds what a node costs its holders (its links, not its clients, are the holders'
//! connections), and many clients' requests pipelined on one connection make large group commits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use window_cluster::link::{IN_FLIGHT, Link, LinkConfig, RECONNECT_PAUSE, RETRY_PAUSE, Reply};
use window_proto::peer::Peek;

use crate::clock::monotonic;
use crate::upstream::{Coordinator, Replies, connect_to, lines_out};

/// What became of an ask.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The holder's reply line (without its line feed).
    Reply(String),
    /// No holder answered within the failover timeout; the line asked, for the asker's error.
    GaveUp(String),
}

/// Links to holders, one per target, each started on first use and shared by every asker.
pub struct Links {
    targets: Vec<Arc<Coordinator>>,
    links: Mutex<Vec<Option<mpsc::Sender<Ask>>>>,
    config: LinkConfig,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

/// A line for a holder and where its answer goes.
struct Ask {
    line: String,
    answer: oneshot::Sender<Answer>,
}

/// Asks waiting for a link to take them.
const ASK_QUEUE: usize = 256;

/// How long a link that found no holder waits for one before it answers the next ask.
const UNREACHABLE_PATIENCE: Duration = Duration::from_millis(200);

impl Links {
    /// One link per target (link `n` to `targets[n]`; a target may appear more than once, for
    /// several links to one holder).
    pub fn new(targets: Vec<Arc<Coordinator>>, failover_timeout: Duration) -> Links {
        let links = Mutex::new(targets.iter().map(|_| None).collect());
        Links {
            targets,
            links,
            config: LinkConfig {
                in_flight: IN_FLIGHT,
                failover_timeout,
                unreachable_patience: UNREACHABLE_PATIENCE,
            },
        }
    }

    /// Sends `line` over link `n`, waiting while the link is full (back-pressure from a slow
    /// holder reaches the askers); the answer arrives on the receiver.
    pub async fn ask(&self, n: usize, line: String) -> oneshot::Receiver<Answer> {
        let (answer, receiver) = oneshot::channel();
        if let Err(mpsc::error::SendError(ask)) = self.link(n).send(Ask { line, answer }).await {
            let _ = ask.answer.send(Answer::GaveUp(ask.line));
        }
        receiver
    }

    /// Link `n`, started on first use (or after it ended).
    fn link(&self, n: usize) -> mpsc::Sender<Ask> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut links[n];
        match slot {
            Some(link) if !link.is_closed() => link.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(ASK_QUEUE);
                tokio::spawn(run_link(Arc::clone(&self.targets[n]), n, rx, self.config));
                slot.insert(tx).clone()
            }
        }
    }
}

/// True for a holder's error 11. Every reply on a link is asked, so a reply that cannot be an
/// error (most are, and some are large `flushed` lists) is let through without a parse.
pub(crate) fn is_unavailable(text: &str) -> bool {
    text.contains("error") && Peek::of(text).is_some_and(|p| p.is_unavailable())
}

/// One link's shell: takes the asks, lets the [`Link`] say what to send and whom a reply
/// answers, and carries that out on a connection to the holder. Ends when the asks end (the
/// [`Links`] are gone) and every one was answered.
async fn run_link(
    coordinator: Arc<Coordinator>,
    n: usize,
    mut asks: mpsc::Receiver<Ask>,
    config: LinkConfig,
) {
    let mut link: Link<oneshot::Sender<Answer>> = Link::new(config, monotonic());
    let mut asks_done = false;
    loop {
        // Connected once there is something to send; a connection the holder closed (its idle
        // timeout, say) is opened again only for the next line.
        if link.is_idle() {
            if asks_done {
                return;
            }
            match asks.recv().await {
                Some(ask) => link.push(monotonic(), ask.line, ask.answer),
                None => return,
            };
        }
        let deadline = link.give_up_at().unwrap_or_else(monotonic);
        let Some((upstream, holder)) = connect_to(&coordinator, deadline).await else {
            // Everything asked so far, queued or not, gets its answer now.
            while let Ok(ask) = asks.try_recv() {
                link.push(monotonic(), ask.line, ask.answer);
            }
            for (line, answer) in link.give_up(monotonic()) {
                let _ = answer.send(Answer::GaveUp(line));
            }
            continue;
        };
        let (up_read, mut up_write) = upstream.into_split();
        let mut replies = Replies::new(up_read);
        if up_write
            .write_all(&lines_out(link.connected()))
            .await
            .is_err()
        {
            link.lost(monotonic());
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        loop {
            if asks_done && link.is_idle() {
                return;
            }
            tokio::select! {
                // Fewer lines in flight than the holder queues replies for (see `IN_FLIGHT`).
                ask = asks.recv(), if !asks_done && link.may_take() => match ask {
                    Some(ask) => {
                        if let Some(line) = link.push(monotonic(), ask.line, ask.answer)
                            && up_write.write_all(format!("{line}\n").as_bytes()).await.is_err()
                        {
                            break;
                        }
                    }
                    None => asks_done = true,
                },
                () = coordinator.moved_from(holder) => break,
                text = replies.next() => {
                    let Some(text) = text else { break };
                    let text = text.trim_end();
                    match link.reply(monotonic(), is_unavailable(text)) {
                        Reply::Answer(answer) => {
                            let _ = answer.send(Answer::Reply(text.to_owned()));
                        }
                        Reply::Retry => {
                            // A handover or a stop: the next holder gets everything unanswered
                            // (the request ids make the resends safe).
                            tokio::time::sleep(RETRY_PAUSE).await;
                            break;
                        }
                        // Nothing was asked: a refusal at the connection limit, say.
                        Reply::Unsolicited => tracing::debug!(link = n, text, "an unsolicited line from a holder"),
                    }
                }
            }
        }
        link.lost(monotonic());
        if !link.is_idle() {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}
