//! What `top` shows and what its keys do, apart from any terminal: samples in, rates and rows
//! out, keys in, admin API actions out.

use std::collections::VecDeque;
use std::time::Instant;

use super::metrics_text::Counters;
use crate::admin::api::{CursorView, SinkView, StateView};

/// How many refreshes the sparkline remembers.
const HISTORY: usize = 240;

/// One refresh: the admin API's state and the scrape of `/metrics` (when reachable).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub state: StateView,
    pub counters: Option<Counters>,
}

/// One instance of a cluster, as the state topic says it (read every few seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub instance: String,
    pub shards: usize,
    pub merchants: usize,
    /// `live`, `stopped` (left the group) or `gone` (silent too long).
    pub state: &'static str,
}

/// A key, as `top` reads it (the terminal's events mapped to these).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Tab,
    Enter,
    Esc,
    Backspace,
}

/// Which list the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Focus {
    Merchants,
    Sinks,
}

/// Something an operator asked for, sent to the admin API once confirmed.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Merchant { xmid: String, pause: bool },
    Endpoint { sink: String, action: &'static str },
    Replay { sink: String, letters: u64 },
}

impl Action {
    /// The question asked before it is sent.
    pub fn question(&self) -> String {
        match self {
            Action::Merchant { xmid, pause: true } => format!("pause merchant {xmid}?"),
            Action::Merchant { xmid, pause: false } => format!("resume merchant {xmid}?"),
            Action::Endpoint { sink, action } => format!("{action} endpoint {sink}?"),
            Action::Replay { sink, letters } => {
                format!("replay the dead letters of {sink} ({letters} when last refreshed)?")
            }
        }
    }

    /// The admin API's path for it (POST).
    pub fn path(&self) -> String {
        match self {
            Action::Merchant { xmid, pause } => {
                let action = if *pause { "pause" } else { "resume" };
                format!("/v1/merchants/{}/{action}", encode(xmid))
            }
            Action::Endpoint { sink, action } => format!("/v1/endpoints/{}/{action}", encode(sink)),
            Action::Replay { .. } => "/v1/dead-letters/replay".to_string(),
        }
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What a key asks of the program.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Nothing,
    Quit,
    Send(Action),
}

/// Rates between the last two samples, per second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub new: f64,
    pub duplicate: f64,
    pub reconciled: f64,
    pub declines: f64,
    pub budget_waits: f64,
    pub throttled: f64,
}

/// The whole picture, and where the operator is in it.
#[derive(Debug)]
pub struct Model {
    /// What is watched (the admin API's address), for the title.
    pub source: String,
    /// Why the last refresh failed, while it does ("disconnected, retrying").
    pub disconnected: Option<String>,
    latest: Option<Sample>,
    previous: Option<Sample>,
    /// New records per second, one per refresh, oldest first.
    pub history: VecDeque<u64>,
    pub focus: Focus,
    pub merchant: usize,
    pub sink: usize,
    pub filter: String,
    pub editing_filter: bool,
    pub help: bool,
    /// An action waiting for `y`.
    pub confirm: Option<Action>,
    /// The last action's outcome, as the service said it.
    pub status: Option<String>,
    /// In a cluster: its instances (or why the state topic could not be read).
    pub cluster: Option<Result<Vec<InstanceRow>, String>>,
}

impl Model {
    pub fn new(source: impl Into<String>) -> Model {
        Model {
            source: source.into(),
            disconnected: None,
            latest: None,
            previous: None,
            history: VecDeque::with_capacity(HISTORY),
            focus: Focus::Merchants,
            merchant: 0,
            sink: 0,
            filter: String::new(),
            editing_filter: false,
            help: false,
            confirm: None,
            status: None,
            cluster: None,
        }
    }

    /// A refresh arrived.
    pub fn update(&mut self, sample: Sample) {
        self.disconnected = None;
        self.previous = self.latest.replace(sample);
        let new = self.rates().map_or(0.0, |r| r.new);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(new.round() as u64);
        self.merchant = self.merchant.min(self.merchants().len().saturating_sub(1));
        self.sink = self.sink.min(self.sinks().len().saturating_sub(1));
    }

    /// A refresh failed: the last picture stays, marked.
    pub fn failed(&mut self, reason: String) {
        self.disconnected = Some(reason);
    }

    pub fn state(&self) -> Option<&StateView> {
        self.latest.as_ref().map(|s| &s.state)
    }

    pub fn counters(&self) -> Option<&Counters> {
        self.latest.as_ref()?.counters.as_ref()
    }

    /// Per second, between the last two samples that both had counters.
    pub fn rates(&self) -> Option<Rates> {
        let (now, then) = (self.latest.as_ref()?, self.previous.as_ref()?);
        let (a, b) = (now.counters.as_ref()?, then.counters.as_ref()?);
        let seconds = now.at.duration_since(then.at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let per = |x: f64, y: f64| ((x - y) / seconds).max(0.0);
        Some(Rates {
            new: per(a.records_new, b.records_new),
            duplicate: per(a.records_duplicate, b.records_duplicate),
            reconciled: per(a.records_reconciled, b.records_reconciled),
            declines: per(a.declines, b.declines),
            budget_waits: per(a.budget_waits, b.budget_waits),
            throttled: per(a.throttled, b.throttled),
        })
    }

    /// Events queued per second by event type (of the types that saw any), busiest first.
    pub fn type_rates(&self) -> Vec<(String, f64)> {
        let (Some(now), Some(then)) = (self.latest.as_ref(), self.previous.as_ref()) else {
            return Vec::new();
        };
        let (Some(a), Some(b)) = (now.counters.as_ref(), then.counters.as_ref()) else {
            return Vec::new();
        };
        let seconds = now.at.duration_since(then.at).as_secs_f64();
        if seconds <= 0.0 {
            return Vec::new();
        }
        let mut rates: Vec<(String, f64)> = a
            .enqueued
            .iter()
            .map(|(t, n)| {
                let before = b.enqueued.get(t).copied().unwrap_or(0.0);
                (t.clone(), ((n - before) / seconds).max(0.0))
            })
            .filter(|(_, r)| *r > 0.0)
            .collect();
        rates.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        rates
    }

    /// A sink's deliveries and failed attempts per second.
    pub fn sink_rates(&self, sink: &str) -> Option<(f64, f64)> {
        let (now, then) = (self.latest.as_ref()?, self.previous.as_ref()?);
        let (a, b) = (now.counters.as_ref()?, then.counters.as_ref()?);
        let seconds = now.at.duration_since(then.at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let per = |m: &std::collections::BTreeMap<String, f64>,
                   n: &std::collections::BTreeMap<String, f64>| {
            ((m.get(sink).copied().unwrap_or(0.0) - n.get(sink).copied().unwrap_or(0.0)) / seconds)
                .max(0.0)
        };
        Some((per(&a.delivered, &b.delivered), per(&a.failed, &b.failed)))
    }

    /// The most lagging merchants the service listed, those matching the filter.
    pub fn merchants(&self) -> Vec<&CursorView> {
        let filter = self.filter.to_lowercase();
        self.state()
            .map(|s| {
                s.cursors
                    .iter()
                    .filter(|c| filter.is_empty() || c.xmid.to_lowercase().contains(&filter))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn sinks(&self) -> &[SinkView] {
        self.state().map_or(&[], |s| &s.sinks)
    }

    pub fn is_paused(&self, xmid: &str) -> bool {
        self.state()
            .is_some_and(|s| s.paused_merchants.iter().any(|x| x == xmid))
    }

    /// What `key` does now.
    pub fn key(&mut self, key: Key) -> Command {
        if self.editing_filter {
            match key {
                Key::Enter | Key::Esc => {
                    if key == Key::Esc {
                        self.filter.clear();
                    }
                    self.editing_filter = false;
                }
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.merchant = 0;
            return Command::Nothing;
        }
        if let Some(action) = self.confirm.take() {
            return match key {
                Key::Char('y') | Key::Char('Y') => Command::Send(action),
                _ => {
                    self.status = Some("cancelled".into());
                    Command::Nothing
                }
            };
        }
        if self.help {
            self.help = false;
            return Command::Nothing;
        }
        match key {
            Key::Char('q') | Key::Esc => return Command::Quit,
            Key::Char('?') => self.help = true,
            Key::Char('/') => {
                self.editing_filter = true;
                self.focus = Focus::Merchants;
            }
            Key::Tab => {
                self.focus = match self.focus {
                    Focus::Merchants => Focus::Sinks,
                    Focus::Sinks => Focus::Merchants,
                }
            }
            Key::Up | Key::Char('k') => match self.focus {
                Focus::Merchants => self.merchant = self.merchant.saturating_sub(1),
                Focus::Sinks => self.sink = self.sink.saturating_sub(1),
            },
            Key::Down | Key::Char('j') => match self.focus {
                Focus::Merchants => {
                    self.merchant =
                        (self.merchant + 1).min(self.merchants().len().saturating_sub(1))
                }
                Focus::Sinks => {
                    self.sink = (self.sink + 1).min(self.sinks().len().saturating_sub(1))
                }
            },
            Key::Char('p') => self.confirm = self.pause_or_resume(),
            Key::Char('e') => {
                self.confirm = self.disabled_endpoint().map(|sink| Action::Endpoint {
                    sink,
                    action: "enable",
                });
                if self.confirm.is_none() {
                    self.status = Some(
                        "the selected sink is not a disabled webhook endpoint (tab: sinks)".into(),
                    );
                }
            }
            Key::Char('r') => {
                self.confirm = self.sinks().get(self.sink).and_then(|s| {
                    (s.dead_letters > 0).then(|| Action::Replay {
                        sink: s.name.clone(),
                        letters: s.dead_letters,
                    })
                });
                if self.confirm.is_none() {
                    self.status = Some("no dead letters in the selected sink (tab: sinks)".into());
                }
            }
            _ => {}
        }
        Command::Nothing
    }

    /// The selected sink's name, if it is a disabled webhook endpoint.
    fn disabled_endpoint(&self) -> Option<String> {
        let sink = self.sinks().get(self.sink)?;
        sink.endpoint
            .as_ref()
            .filter(|e| e.disabled.is_some())
            .map(|_| sink.name.clone())
    }

    /// `p`: the selected merchant or endpoint, paused if it runs, resumed if paused.
    fn pause_or_resume(&self) -> Option<Action> {
        match self.focus {
            Focus::Merchants => {
                let xmid = self.merchants().get(self.merchant)?.xmid.clone();
                let pause = !self.is_paused(&xmid);
                Some(Action::Merchant { xmid, pause })
            }
            Focus::Sinks => {
                let sink = self.sinks().get(self.sink)?;
                let endpoint = sink.endpoint.as_ref()?;
                Some(Action::Endpoint {
                    sink: sink.name.clone(),
                    action: if endpoint.paused_by_hand {
                        "resume"
                    } else {
                        "pause"
                    },
                })
            }
        }
    }
}
