//! Link scenarios: what a shell tells a link (lines asked, connections opened and lost, replies,
//! the time passing) in, what the link says to do out, compared with an inline snapshot. Only
//! `run` calls the link's API.
//!
//! Script lines (times are milliseconds on the shell's monotonic clock; in flight at most 3,
//! failover timeout 5000 ms, patience after a give-up 200 ms):
//! - `at T ask LINE`: a caller asks `LINE` (the shell takes it only while the link may take one)
//! - `at T connected`: a connection to a holder opened
//! - `at T lost`: the connection ended (end of stream, the lease moved)
//! - `at T reply ok|refused`: a reply line came; `refused` is error 11
//! - `at T tick`: the shell's timer: gives the waiting lines up once `give_up_at` has passed

use std::time::{Duration, Instant};

use expect_test::{Expect, expect};
use window_cluster::link::{Link, LinkConfig, Reply};

fn check(script: &str, expect: Expect) {
    expect.assert_eq(&run(script));
}

fn run(script: &str) -> String {
    let config = LinkConfig {
        in_flight: 3,
        failover_timeout: Duration::from_millis(5000),
        unreachable_patience: Duration::from_millis(200),
    };
    let start = Instant::now();
    let mut link: Link<String> = Link::new(config, start);
    let mut out = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(&format!("> {line}\n"));
        let rest = line.strip_prefix("at ").expect("at T ...");
        let (at, step) = rest.split_once(' ').expect("at T STEP");
        let now = start + Duration::from_millis(at.parse().expect("a time in ms"));
        let said = match step.split_once(' ').unwrap_or((step, "")) {
            ("ask", asked) if !link.may_take() => format!("full: {asked} is not taken"),
            ("ask", asked) => match link.push(now, asked.to_owned(), asked.to_owned()) {
                Some(sent) => format!("send {sent}"),
                None => format!("queued {asked}"),
            },
            ("connected", _) => {
                let lines: Vec<&str> = link.connected().collect();
                format!("send [{}]", lines.join(", "))
            }
            ("lost", _) => {
                link.lost(now);
                waits_until(&link, start)
            }
            ("reply", kind) => match link.reply(now, kind == "refused") {
                Reply::Answer(asked) => format!("answer {asked} with {kind}"),
                Reply::Retry => format!("retry: reconnect, {}", waits_until(&link, start)),
                Reply::Unsolicited => "drop the unsolicited line".to_owned(),
            },
            ("tick", _) => match link.give_up_at() {
                Some(at) if at <= now => {
                    let lines: Vec<String> = link.give_up(now).map(|(line, _)| line).collect();
                    format!("error 11 to [{}]", lines.join(", "))
                }
                _ => waits_until(&link, start),
            },
            (other, _) => panic!("unknown step {other}"),
        };
        out.push_str(&format!("  {said}\n"));
    }
    out
}

fn waits_until(link: &Link<String>, start: Instant) -> String {
    match link.give_up_at() {
        Some(at) => format!(
            "{} waiting, given up at {}",
            link.waiting(),
            (at - start).as_millis()
        ),
        None => format!("{} waiting, connected", link.waiting()),
    }
}

#[test]
fn replies_answer_the_oldest_waiting_line_and_in_flight_is_bounded() {
    check(
        "
        at 0 ask a
        at 10 connected
        at 20 ask b
        at 20 ask c
        at 20 ask d
        at 30 reply ok
        at 30 ask d
        at 40 reply ok
        at 40 reply ok
        at 40 reply ok
        at 50 reply ok
        ",
        expect![[r#"
            > at 0 ask a
              queued a
            > at 10 connected
              send [a]
            > at 20 ask b
              send b
            > at 20 ask c
              send c
            > at 20 ask d
              full: d is not taken
            > at 30 reply ok
              answer a with ok
            > at 30 ask d
              send d
            > at 40 reply ok
              answer b with ok
            > at 40 reply ok
              answer c with ok
            > at 40 reply ok
              answer d with ok
            > at 50 reply ok
              drop the unsolicited line
        "#]],
    );
}

#[test]
fn a_holder_that_dies_has_its_unanswered_lines_sent_again_to_the_next() {
    check(
        "
        at 0 ask a
        at 0 ask b
        at 0 connected
        at 5 reply ok
        at 100 lost
        at 100 ask c
        at 4000 tick
        at 4000 connected
        at 4010 reply ok
        at 4010 reply ok
        ",
        expect![[r#"
            > at 0 ask a
              queued a
            > at 0 ask b
              queued b
            > at 0 connected
              send [a, b]
            > at 5 reply ok
              answer a with ok
            > at 100 lost
              1 waiting, given up at 5100
            > at 100 ask c
              queued c
            > at 4000 tick
              2 waiting, given up at 5100
            > at 4000 connected
              send [b, c]
            > at 4010 reply ok
              answer b with ok
            > at 4010 reply ok
              answer c with ok
        "#]],
    );
}

#[test]
fn a_holder_that_answers_11_has_the_line_sent_to_the_next_until_the_run_is_a_timeout_old() {
    check(
        "
        at 0 ask a
        at 0 connected
        at 10 reply refused
        at 110 connected
        at 2000 reply refused
        at 2100 connected
        at 5009 reply refused
        at 5109 connected
        at 5110 reply refused
        at 5120 ask b
        at 5130 reply refused
        at 5140 ask c
        at 5150 reply ok
        at 5160 reply refused
        at 5170 ask e
        at 5180 reply refused
        ",
        expect![[r#"
            > at 0 ask a
              queued a
            > at 0 connected
              send [a]
            > at 10 reply refused
              retry: reconnect, 1 waiting, given up at 5010
            > at 110 connected
              send [a]
            > at 2000 reply refused
              retry: reconnect, 1 waiting, given up at 7000
            > at 2100 connected
              send [a]
            > at 5009 reply refused
              retry: reconnect, 1 waiting, given up at 10009
            > at 5109 connected
              send [a]
            > at 5110 reply refused
              answer a with refused
            > at 5120 ask b
              send b
            > at 5130 reply refused
              answer b with refused
            > at 5140 ask c
              send c
            > at 5150 reply ok
              answer c with ok
            > at 5160 reply refused
              drop the unsolicited line
            > at 5170 ask e
              send e
            > at 5180 reply refused
              retry: reconnect, 1 waiting, given up at 10180
        "#]],
    );
}

#[test]
fn a_run_of_refusals_ends_after_a_quiet_failover_timeout() {
    check(
        "
        at 0 ask a
        at 0 connected
        at 0 reply refused
        at 100 connected
        at 4900 reply refused
        at 5000 connected
        at 5000 reply refused
        at 5000 ask b
        at 10001 reply refused
        at 10101 connected
        at 10101 reply ok
        ",
        expect![[r#"
            > at 0 ask a
              queued a
            > at 0 connected
              send [a]
            > at 0 reply refused
              retry: reconnect, 1 waiting, given up at 5000
            > at 100 connected
              send [a]
            > at 4900 reply refused
              retry: reconnect, 1 waiting, given up at 9900
            > at 5000 connected
              send [a]
            > at 5000 reply refused
              answer a with refused
            > at 5000 ask b
              send b
            > at 10001 reply refused
              retry: reconnect, 1 waiting, given up at 15001
            > at 10101 connected
              send [b]
            > at 10101 reply ok
              answer b with ok
        "#]],
    );
}

#[test]
fn nobody_answering_within_the_timeout_gives_every_waiting_line_up_then_later_ones_sooner() {
    check(
        "
        at 0 ask a
        at 0 connected
        at 50 ask b
        at 100 lost
        at 5099 tick
        at 5100 tick
        at 9000 ask c
        at 9100 tick
        at 9200 tick
        at 9300 ask d
        at 9400 connected
        at 9410 lost
        at 14000 tick
        at 14410 tick
        ",
        expect![[r#"
            > at 0 ask a
              queued a
            > at 0 connected
              send [a]
            > at 50 ask b
              send b
            > at 100 lost
              2 waiting, given up at 5100
            > at 5099 tick
              2 waiting, given up at 5100
            > at 5100 tick
              error 11 to [a, b]
            > at 9000 ask c
              queued c
            > at 9100 tick
              1 waiting, given up at 9200
            > at 9200 tick
              error 11 to [c]
            > at 9300 ask d
              queued d
            > at 9400 connected
              send [d]
            > at 9410 lost
              1 waiting, given up at 14410
            > at 14000 tick
              1 waiting, given up at 14410
            > at 14410 tick
              error 11 to [d]
        "#]],
    );
}
