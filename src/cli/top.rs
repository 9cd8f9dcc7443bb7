//! `mxc-relay top`: the terminal around `mxc_relay::top` — refreshes from the running service's
//! admin API and `/metrics`, draws, reads keys, sends the confirmed actions.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use mxc::Clock;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};

use mxc::Secret;
use mxc_relay::admin::api::{
    DeadLetterFilter, EndpointOutcome, MerchantOutcome, ReplayOutcome, ReplayRequest, StateView,
};
use mxc_relay::admin::client::AdminClient;
use mxc_relay::cluster::{self, StateMessage};
use mxc_relay::config::{ClusterConfig, Config, ADMIN_TOKEN_ENV};
use mxc_relay::top::{self, Action, Command, Counters, InstanceRow, Key, Model, Sample};

#[derive(Args)]
pub struct TopArgs {
    /// The service's configuration file: its admin API is found beside the store, its
    /// `/metrics` at `telemetry.listen`.
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
    /// The admin API's URL instead of the configuration's (`http://HOST:PORT`; the token in
    /// MXC_ADMIN_TOKEN).
    #[arg(long)]
    url: Option<String>,
    /// The service's `/metrics` URL (default: `telemetry.listen` of the configuration).
    #[arg(long)]
    metrics: Option<String>,
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = interval)]
    interval: Duration,
    /// Print one snapshot as plain text and exit (two refreshes `--interval` apart, for the
    /// rates).
    #[arg(long)]
    once: bool,
    /// How many of the most lagging merchants to list.
    #[arg(long, default_value_t = 50)]
    merchants: usize,
}

/// `--interval`: a duration of at least 100 ms.
fn interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_millis(100) {
        return Err(format!("{text:?}: at least 100ms"));
    }
    Ok(d)
}

pub async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let mut source = Source::new(&args)?;
    let mut model = Model::new(source.api.base().to_string());
    let mut cluster = source.config.as_ref().and_then(watch_cluster);
    if args.once {
        model.update(source.sample().await?);
        tokio::time::sleep(args.interval).await;
        model.update(source.sample().await?);
        if let Some(cluster) = &mut cluster {
            // Its first read (the state topic's answer, or its error).
            let _ = tokio::time::timeout(Duration::from_secs(30), cluster.changed()).await;
            model.cluster = cluster.borrow().clone();
        }
        print!("{}", top::plain(&model));
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("mxc-relay top draws on a terminal; use --once for a snapshot as text");
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut screen = Screen::enter()?;
    let (inputs, mut input) = tokio::sync::mpsc::unbounded_channel();
    // crossterm's read blocks: a thread of its own, ending when the receiver is gone.
    std::thread::spawn(move || loop {
        let sent = match event::read() {
            Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match input_of(k) {
                Some(input) => inputs.send(input),
                None => Ok(()),
            },
            Ok(Event::Resize(..)) => inputs.send(Input::Redraw),
            Ok(_) => Ok(()),
            Err(_) => break,
        };
        if sent.is_err() {
            break;
        }
    });
    // A refresh or an action that hangs must not freeze the keys for the client's minute.
    let refresh_within = (args.interval * 2).max(Duration::from_secs(2));
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(cluster) = &cluster {
            model.cluster = cluster.borrow().clone();
        }
        screen
            .terminal
            .draw(|frame| top::render(frame, &model, color))?;
        tokio::select! {
            _ = tick.tick() => match tokio::time::timeout(refresh_within, source.sample()).await {
                Ok(Ok(sample)) => model.update(sample),
                Ok(Err(e)) => model.failed(e.to_string()),
                Err(_) => model.failed(format!("no answer within {}", humantime::format_duration(refresh_within))),
            },
            got = input.recv() => match got {
                None | Some(Input::Quit) => break,
                Some(Input::Redraw) => {}
                Some(Input::Key(key)) => match model.key(key) {
                    Command::Quit => break,
                    Command::Nothing => {}
                    Command::Send(action) => {
                        model.status = Some(format!("{} sending…", action.question()));
                        screen.terminal.draw(|frame| top::render(frame, &model, color))?;
                        model.status = Some(
                            match tokio::time::timeout(ACTION_WITHIN, source.send(&action)).await {
                                Ok(said) => said,
                                Err(_) => format!("no answer within {}s: look again before repeating it", ACTION_WITHIN.as_secs()),
                            },
                        );
                        // The action's effect, at once.
                        if let Ok(Ok(sample)) = tokio::time::timeout(refresh_within, source.sample()).await {
                            model.update(sample);
                        }
                    }
                },
            },
        }
    }
    screen.leave();
    Ok(ExitCode::SUCCESS)
}

/// The longest an action is waited for (a replay of many letters takes a while).
const ACTION_WITHIN: Duration = Duration::from_secs(30);

/// How often a cluster's state topic is read (the whole topic: not every refresh).
const CLUSTER_EVERY: Duration = Duration::from_secs(10);

type ClusterView = Option<Result<Vec<InstanceRow>, String>>;

/// In a cluster, its instances as `cluster status` reads them, every [`CLUSTER_EVERY`].
fn watch_cluster(config: &Config) -> Option<tokio::sync::watch::Receiver<ClusterView>> {
    if !config.cluster.enabled() {
        return None;
    }
    let settings = config.cluster.clone();
    let (sender, receiver) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        loop {
            let reading = settings.clone();
            let read = tokio::task::spawn_blocking(move || cluster::read_status(&reading)).await;
            let rows = match read {
                Ok(Ok(messages)) => Ok(instance_rows(&messages, &settings)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if sender.send(Some(rows)).is_err() {
                return;
            }
            tokio::time::sleep(CLUSTER_EVERY).await;
        }
    });
    Some(receiver)
}

/// The instances of the state topic's messages: live, stopped, or gone (silent for three
/// state intervals and a session).
fn instance_rows(messages: &[StateMessage], settings: &ClusterConfig) -> Vec<InstanceRow> {
    let now = mxc::SystemClock.now();
    let silent = chrono::Duration::from_std(settings.state_interval * 3 + settings.session_timeout)
        .unwrap_or_default();
    let mut rows: Vec<InstanceRow> = messages
        .iter()
        .filter_map(|m| match m {
            StateMessage::Instance(i) => Some(InstanceRow {
                instance: i.instance.clone(),
                shards: i.shards.len(),
                merchants: i.merchants,
                state: if i.stopped {
                    "stopped"
                } else if now - i.at >= silent {
                    "gone"
                } else {
                    "live"
                },
            }),
            StateMessage::Merchant(_) => None,
        })
        .collect();
    rows.sort_by(|a, b| a.instance.cmp(&b.instance));
    rows
}

enum Input {
    Key(Key),
    Redraw,
    Quit,
}

fn input_of(k: event::KeyEvent) -> Option<Input> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        // Not a key of the view: quit, whatever is being typed.
        return Some(Input::Quit);
    }
    Some(Input::Key(match k.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Tab | KeyCode::BackTab => Key::Tab,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    }))
}

/// Where the picture comes from, found again when the service restarts (a new port, a new
/// token).
struct Source {
    config: Option<Config>,
    api: AdminClient,
    metrics: Option<String>,
    http: reqwest::Client,
    limit: usize,
}

impl Source {
    fn new(args: &TopArgs) -> anyhow::Result<Source> {
        let (config, api) = match &args.url {
            Some(url) => {
                let token = std::env::var(ADMIN_TOKEN_ENV).with_context(|| {
                    format!("--url needs the admin API's token in {ADMIN_TOKEN_ENV}")
                })?;
                (None, AdminClient::at(url, Secret::new(token))?)
            }
            None => {
                // Only the store's path and the listeners are read: no secret needed.
                let config = Config::load_without_secrets(&args.config)?;
                let api = AdminClient::find(&config)?.with_context(|| {
                    format!(
                        "no service runs on the store {} (of {}); start it with `mxc-relay run`, or give --url",
                        config.store.path.display(),
                        args.config.display()
                    )
                })?;
                (Some(config), api)
            }
        };
        let metrics = args.metrics.clone().or_else(|| {
            let listen = config.as_ref()?.telemetry.listen_addr()?;
            if listen.port() == 0 {
                return None;
            }
            let host = match listen.ip() {
                ip if !ip.is_unspecified() => ip,
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            // A SocketAddr writes an IPv6 address in brackets.
            Some(format!(
                "http://{}/metrics",
                std::net::SocketAddr::new(host, listen.port())
            ))
        });
        Ok(Source {
            config,
            api,
            metrics,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            limit: args.merchants,
        })
    }

    /// One refresh; on failure the service is looked for again (it may have restarted).
    async fn sample(&mut self) -> anyhow::Result<Sample> {
        let path = format!("/v1/state?limit={}&sort=lag", self.limit);
        let state = match self.api.get::<StateView>(&path).await {
            Ok(state) => state,
            Err(error) => {
                if let Some(Ok(Some(api))) = self.config.as_ref().map(AdminClient::find) {
                    self.api = api;
                }
                return Err(error.into());
            }
        };
        let counters = match &self.metrics {
            Some(url) => match self.http.get(url).send().await {
                Ok(response) if response.status().is_success() => {
                    response.text().await.ok().map(|t| Counters::parse(&t))
                }
                _ => None,
            },
            None => None,
        };
        Ok(Sample {
            at: Instant::now(),
            state,
            counters,
        })
    }

    /// Sends a confirmed action; what the service said, or why it failed.
    async fn send(&self, action: &Action) -> String {
        let path = action.path();
        let said = match action {
            Action::Replay { sink, .. } => {
                let request = ReplayRequest {
                    filter: DeadLetterFilter {
                        sink: Some(sink.clone()),
                        ..DeadLetterFilter::default()
                    },
                    ids: Vec::new(),
                };
                self.api
                    .post::<_, ReplayOutcome>(&path, &request)
                    .await
                    .map(|o| format!("replayed {} dead letter(s) of {sink}", o.replayed))
            }
            Action::Merchant { xmid, .. } => self
                .api
                .post::<_, MerchantOutcome>(&path, &())
                .await
                .map(|o| format!("merchant {xmid}: {}", o.message)),
            Action::Endpoint { sink, .. } => self
                .api
                .post::<_, EndpointOutcome>(&path, &())
                .await
                .map(|o| format!("endpoint {sink}: {}", o.message)),
        };
        said.unwrap_or_else(|e| format!("failed: {e}"))
    }
}

/// The terminal in raw mode on the alternate screen, given back as it was on every way out
/// (a panic included).
struct Screen {
    terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>,
    left: bool,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        enable_raw_mode()?;
        // From here on every way out restores the terminal: an error below, a panic (its
        // message then lands on the normal screen, not the alternate one), or the end.
        let restore = Restore;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            hook(info);
        }));
        let mut stdout = std::io::stdout();
        execute!(stdout, EnterAlternateScreen, cursor::Hide)?;
        let terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(stdout))?;
        std::mem::forget(restore);
        Ok(Screen {
            terminal,
            left: false,
        })
    }

    fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            restore_terminal();
        }
    }
}

/// Restores the terminal if [`Screen::enter`] fails half-way.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.leave();
    }
}
