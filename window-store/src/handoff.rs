//! The hand-off from a journal's writer to its compactor: a bounded queue whose reader is woken
//! only when it waits with nothing to do, or when something cannot wait, never by every item.
//!
//! The compactor gathers the batches of a round for its delay anyway, so waking its thread for
//! each batch bought nothing and cost every commit a thread wake-up (a futex call for the writer,
//! a context switch for the reader: with one small request in flight, about one switch in five
//! of the whole process's). Here a push wakes the reader only when it is idle (the first batch
//! of a round starts the delay), when the push is urgent (a drain someone waits for), when the
//! round holds enough bytes to go at once, or when the queue is full (a writer never waits out
//! the delay).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// A queue's two ends, like a channel's: dropping the writer closes the queue (the reader takes
/// what is queued, then finds nothing more); dropping the reader makes pushes fail, so that a
/// writer never waits for a reader that is gone.
pub(crate) fn channel<T>(capacity: usize, round_bytes: usize) -> (Writer<T>, Reader<T>) {
    let queue = Arc::new(Handoff::new(capacity, round_bytes));
    (Writer(Arc::clone(&queue)), Reader(queue))
}

/// The writer's end.
#[derive(Debug)]
pub(crate) struct Writer<T>(Arc<Handoff<T>>);

/// The reader's end.
#[derive(Debug)]
pub(crate) struct Reader<T>(Arc<Handoff<T>>);

impl<T> Writer<T> {
    /// Queues `item` (of about `bytes`), waiting while the queue is full. `urgent`: the reader
    /// takes it without waiting out its delay. Gives the item back when the reader is gone.
    pub(crate) fn push(&self, item: T, bytes: usize, urgent: bool) -> Result<(), T> {
        self.0.push(item, bytes, urgent)
    }
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<T> Reader<T> {
    /// Waits until something is queued; false once the queue is closed and empty.
    pub(crate) fn first(&self) -> bool {
        self.0.first()
    }

    /// Waits until `deadline`, an urgent item, a full round or queue, or the close, then takes
    /// everything queued, in order.
    pub(crate) fn gather(&self, deadline: Instant) -> Vec<T> {
        self.0.gather(deadline)
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[derive(Debug)]
struct Handoff<T> {
    state: Mutex<State<T>>,
    /// The reader waits here.
    readable: Condvar,
    /// A writer facing a full queue waits here.
    writable: Condvar,
    /// Items the queue holds before a push waits.
    capacity: usize,
    /// A round with this many bytes queued goes without waiting for the rest of its delay.
    round_bytes: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Bytes of the queued items.
    bytes: usize,
    /// An urgent item is queued.
    urgent: bool,
    /// What the reader is doing, so a push knows whether to wake it.
    reader: ReaderIs,
    /// The writer is done: nothing more comes.
    closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReaderIs {
    /// Waiting for any item.
    Idle,
    /// Waiting out a round's delay: woken only when the round is due before it ends
    /// ([`Handoff::due`]).
    Gathering,
    /// Applying a round (or not waiting at all).
    Busy,
    /// Gone: pushes fail.
    Gone,
}

impl<T> Handoff<T> {
    fn new(capacity: usize, round_bytes: usize) -> Handoff<T> {
        Handoff {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                urgent: false,
                reader: ReaderIs::Busy,
                closed: false,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            capacity: capacity.max(1),
            round_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, item: T, bytes: usize, urgent: bool) -> Result<(), T> {
        let mut state = self.lock();
        while state.items.len() >= self.capacity && state.reader != ReaderIs::Gone {
            // A full queue makes the round due: the writer must not wait out its delay.
            self.readable.notify_one();
            state = self.writable.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.reader == ReaderIs::Gone {
            return Err(item);
        }
        state.items.push_back(item);
        state.bytes += bytes;
        state.urgent |= urgent;
        let wake = match state.reader {
            ReaderIs::Idle => true,
            ReaderIs::Gathering => self.due(&state),
            ReaderIs::Busy | ReaderIs::Gone => false,
        };
        drop(state);
        if wake {
            self.readable.notify_one();
        }
        Ok(())
    }

    /// Whether the round being gathered goes before its deadline: the writer is done, an urgent
    /// item waits, or the round or the queue is full.
    fn due(&self, state: &State<T>) -> bool {
        state.closed
            || state.urgent
            || state.bytes >= self.round_bytes
            || state.items.len() >= self.capacity
    }

    fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_one();
    }

    fn first(&self) -> bool {
        let mut state = self.lock();
        while state.items.is_empty() && !state.closed {
            state.reader = ReaderIs::Idle;
            state = self.readable.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.reader = ReaderIs::Busy;
        !state.items.is_empty()
    }

    fn gather(&self, deadline: Instant) -> Vec<T> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if self.due(&state) || now >= deadline {
                break;
            }
            state.reader = ReaderIs::Gathering;
            state = self
                .readable
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.reader = ReaderIs::Busy;
        state.bytes = 0;
        state.urgent = false;
        let items = state.items.drain(..).collect();
        drop(state);
        self.writable.notify_all();
        items
    }

    /// The reader is gone: queued items are dropped, pushes fail from now on.
    fn leave(&self) {
        let mut state = self.lock();
        state.reader = ReaderIs::Gone;
        state.items.clear();
        drop(state);
        self.writable.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Pushes `items` (plain, one byte each) from a thread of their own; hands the writer back.
    fn push_from_a_thread(
        writer: Writer<i32>,
        items: std::ops::Range<i32>,
    ) -> std::thread::JoinHandle<Writer<i32>> {
        std::thread::spawn(move || {
            for n in items {
                writer.push(n, 1, false).unwrap();
            }
            writer
        })
    }

    #[test]
    fn a_round_waits_out_its_delay_and_takes_everything_pushed_meanwhile_in_order() {
        let (writer, reader) = channel(16, usize::MAX);
        writer.push(0, 1, false).unwrap();
        assert!(reader.first());
        let pushes = push_from_a_thread(writer, 1..5);
        let started = Instant::now();
        let delay = Duration::from_millis(100);
        let round = reader.gather(started + delay);
        let writer = pushes.join().unwrap();
        // Plain pushes do not end a round: it went at its deadline, with all of them or, if
        // one came late, the rest in the next round.
        assert!(started.elapsed() >= delay);
        let mut all = round;
        all.extend(reader.gather(Instant::now()));
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        drop(writer);
        assert!(!reader.first());
    }

    #[test]
    fn an_urgent_push_ends_the_round_at_once() {
        let (writer, reader) = channel(16, usize::MAX);
        writer.push(1, 1, false).unwrap();
        assert!(reader.first());
        let urgent = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.push(2, 1, true).unwrap();
            writer
        });
        let started = Instant::now();
        let round = reader.gather(started + Duration::from_secs(30));
        let _writer = urgent.join().unwrap();
        assert_eq!(round, vec![1, 2]);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_full_round_goes_without_waiting_out_its_delay() {
        let (writer, reader) = channel(16, 10);
        writer.push("a", 4, false).unwrap();
        assert!(reader.first());
        let fill = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.push("b", 6, false).unwrap();
            writer
        });
        let started = Instant::now();
        let round = reader.gather(started + Duration::from_secs(30));
        let _writer = fill.join().unwrap();
        assert_eq!(round, vec!["a", "b"]);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_full_queue_ends_the_round_instead_of_holding_the_writer_for_its_delay() {
        let (writer, reader) = channel(2, usize::MAX);
        writer.push(0, 1, false).unwrap();
        assert!(reader.first());
        let pushes = push_from_a_thread(writer, 1..4);
        let started = Instant::now();
        let round = reader.gather(started + Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30));
        let _writer = pushes.join().unwrap();
        let mut all = round;
        all.extend(reader.gather(Instant::now()));
        assert_eq!(all, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_full_queue_holds_the_writer_until_the_reader_takes_a_round() {
        let (writer, reader) = channel(2, usize::MAX);
        let pushes = std::thread::spawn(move || {
            for n in 0..6 {
                writer.push(n, 1, false).unwrap();
            }
            // Dropped: the queue closes.
        });
        let mut all = Vec::new();
        while reader.first() {
            all.extend(reader.gather(Instant::now()));
            assert!(all.len() <= 6);
        }
        pushes.join().unwrap();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn dropping_the_writer_wakes_an_idle_reader_and_ends_it() {
        let (writer, reader) = channel::<u8>(4, usize::MAX);
        let close = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(writer);
        });
        assert!(!reader.first());
        close.join().unwrap();
    }

    #[test]
    fn pushes_fail_once_the_reader_is_gone_even_a_waiting_one() {
        let (writer, reader) = channel(1, usize::MAX);
        writer.push(1, 1, false).unwrap();
        let writer = Arc::new(writer);
        let blocked = {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || writer.push(2, 1, false))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(reader);
        assert_eq!(blocked.join().unwrap(), Err(2));
        assert_eq!(writer.push(3, 1, false), Err(3));
    }
}
