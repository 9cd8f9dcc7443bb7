//! How `top` draws its [`Model`]: the full screen (ratatui) and the plain-text snapshot of
//! `--once`, with the same sections in the same order.

use std::fmt::Write as _;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use super::model::{Focus, InstanceRow, Model};
use crate::admin::api::{CursorView, SinkView};

/// The smallest terminal the view is drawn in; below it, it says so.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// The keys, for `?` and the footer.
const KEYS: &[(&str, &str)] = &[
    ("↑/↓ j/k", "select a merchant or a sink"),
    ("tab", "switch between merchants and sinks"),
    (
        "p",
        "pause or resume the selected merchant, or webhook endpoint",
    ),
    ("e", "enable the selected (disabled) webhook endpoint"),
    ("r", "replay the selected sink's dead letters"),
    (
        "/",
        "filter merchants by XMID (enter keeps it, esc clears it)",
    ),
    ("?", "this help"),
    ("q esc", "quit"),
];

/// Draws the whole view; `color` is false for `NO_COLOR` or a test.
pub fn render(frame: &mut Frame, model: &Model, color: bool) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small: {}×{}; mxc-relay top needs at least {MIN_WIDTH}×{MIN_HEIGHT} (or use --once)",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let paint = Paint(color);
    let [header, stats, spark, merchants, sinks, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if model.cluster.is_some() { 7 } else { 6 }),
        Constraint::Length(3),
        Constraint::Min(5),
        Constraint::Length(sinks_height(model)),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title(model, &paint)), header);
    frame.render_widget(
        Paragraph::new(stat_lines(model)).block(Block::bordered().title(" records and polling ")),
        stats,
    );
    let history: Vec<u64> = model.history.iter().copied().collect();
    let shown = &history[history
        .len()
        .saturating_sub(spark.width.saturating_sub(2) as usize)..];
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(" new records/s, one bar per refresh "))
            .data(shown)
            .style(paint.fg(Color::Green)),
        spark,
    );
    render_merchants(frame, model, merchants, &paint);
    render_sinks(frame, model, sinks, &paint);
    frame.render_widget(Paragraph::new(footer_line(model, &paint)), footer);
    if model.help {
        render_help(frame, area);
    }
}

fn sinks_height(model: &Model) -> u16 {
    (model.sinks().len() as u16 + 3).clamp(4, 10)
}

/// Styles only when colours are wanted.
struct Paint(bool);

impl Paint {
    fn fg(&self, color: Color) -> Style {
        if self.0 {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn bold(&self) -> Style {
        if self.0 {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        }
    }

    fn selected(&self) -> Style {
        if self.0 {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        }
    }
}

fn title(model: &Model, paint: &Paint) -> Line<'static> {
    let mut spans = vec![
        Span::styled("mxc-relay top", paint.bold()),
        Span::raw(format!("  {}  ", model.source)),
    ];
    match &model.disconnected {
        Some(why) => spans.push(Span::styled(
            format!("disconnected, retrying: {why}"),
            paint.fg(Color::Red),
        )),
        None if model.state().is_none() => spans.push(Span::raw("connecting…")),
        None => spans.push(Span::styled("connected", paint.fg(Color::Green))),
    }
    if let Some(c) = model.counters() {
        spans.push(Span::raw(format!("  token {}", token(c.token_expiry))));
    }
    Line::from(spans)
}

fn token(expiry: f64) -> String {
    if expiry <= 0.0 {
        "none held".into()
    } else {
        format!("expires in {}", seconds(expiry))
    }
}

/// The statistics, as lines (the screen's box and `--once` share them).
fn stat_lines(model: &Model) -> Vec<Line<'static>> {
    let rates = model.rates().unwrap_or_default();
    let c = model.counters().cloned().unwrap_or_default();
    let state = model.state();
    let summary = state.map(|s| &s.cursor_summary);
    let mut first = format!(
        "records/s  new {:.1}  duplicate {:.1}  reconciled {:.1}   declines/s {:.1}",
        rates.new, rates.duplicate, rates.reconciled, rates.declines
    );
    if model.counters().is_none() {
        first = "records/s  (no /metrics: give --metrics or telemetry.listen)".into();
    }
    // The lag from the admin API: every cursor, with or without /metrics.
    let mut second = match summary {
        Some(s) => format!(
            "poll lag  p50 {}  p99 {}  max {}   cursors {}",
            seconds(s.lag_p50_seconds as f64),
            seconds(s.lag_p99_seconds as f64),
            seconds(s.lag_max_seconds as f64),
            s.count
        ),
        None => "poll lag  (waiting for the service)".to_string(),
    };
    if let Some(paused) = state.map(|s| s.paused_merchants.len()).filter(|n| *n > 0) {
        let _ = write!(second, " ({paused} paused)");
    }
    let mut third = format!(
        "budget waits/s {:.1}  MXC 429s/s {:.1}",
        rates.budget_waits, rates.throttled
    );
    if c.shards > 0.0 {
        let _ = write!(third, "   cluster: {} shard(s) here", c.shards);
    }
    if let Some(b) = state.and_then(|s| s.backfill.as_ref()) {
        let _ = write!(
            third,
            "   backfill {} ({}): {} read, {} new",
            b.state, b.resource, b.read, b.new
        );
    }
    let types = model.type_rates();
    let by_type = if types.is_empty() {
        "events/s by type  none".to_string()
    } else {
        let each: Vec<String> = types.iter().map(|(t, r)| format!("{t} {r:.1}")).collect();
        format!("events/s by type  {}", each.join(" · "))
    };
    let mut lines = vec![
        Line::from(first),
        Line::from(by_type),
        Line::from(second),
        Line::from(third),
    ];
    if let Some(cluster) = &model.cluster {
        lines.push(Line::from(cluster_line(cluster)));
    }
    lines
}

/// The cluster's instances in one line: each with its shards and merchants, or its state.
fn cluster_line(cluster: &Result<Vec<InstanceRow>, String>) -> String {
    match cluster {
        Err(why) => format!("cluster  cannot read the state topic: {why}"),
        Ok(rows) if rows.is_empty() => "cluster  no instance has reported yet".into(),
        Ok(rows) => {
            let live = rows.iter().filter(|r| r.state == "live").count();
            let each: Vec<String> = rows
                .iter()
                .map(|r| match r.state {
                    "live" => format!(
                        "{} {} shards {} merchants",
                        r.instance, r.shards, r.merchants
                    ),
                    other => format!("{} ({other})", r.instance),
                })
                .collect();
            format!("cluster  {live} live: {}", each.join(" · "))
        }
    }
}

fn render_merchants(frame: &mut Frame, model: &Model, area: Rect, paint: &Paint) {
    let merchants = model.merchants();
    let focused = model.focus == Focus::Merchants;
    let title = if model.filter.is_empty() {
        " merchants lagging most ".to_string()
    } else {
        format!(
            " merchants lagging most, XMID containing {:?} ",
            model.filter
        )
    };
    let visible = area.height.saturating_sub(3) as usize;
    let start = model.merchant.saturating_sub(visible.saturating_sub(1));
    let rows = merchants
        .iter()
        .enumerate()
        .skip(start)
        .take(visible)
        .map(|(i, c)| {
            let style = if focused && i == model.merchant {
                paint.selected()
            } else if c.lag_seconds >= 180 {
                paint.fg(Color::Yellow)
            } else {
                Style::new()
            };
            Row::new(vec![
                c.xmid.clone(),
                c.resource.clone(),
                seconds(c.lag_seconds as f64),
                merchant_state(model, c),
            ])
            .style(style)
        });
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(16),
            Constraint::Length(10),
            Constraint::Min(6),
        ],
    )
    .header(Row::new(vec!["XMID", "resource", "lag", "state, last error"]).style(paint.bold()))
    .block(focus_block(title, focused, paint));
    frame.render_widget(table, area);
}

fn render_sinks(frame: &mut Frame, model: &Model, area: Rect, paint: &Paint) {
    let focused = model.focus == Focus::Sinks;
    let rows = model.sinks().iter().enumerate().map(|(i, s)| {
        let (delivered, failed) = model.sink_rates(&s.name).unwrap_or_default();
        let style = if focused && i == model.sink {
            paint.selected()
        } else if s.dead_letters > 0 || s.endpoint.as_ref().is_some_and(|e| e.disabled.is_some()) {
            paint.fg(Color::Red)
        } else {
            Style::new()
        };
        Row::new(vec![
            s.name.clone(),
            s.outbox.to_string(),
            format!("{delivered:.1}"),
            format!("{failed:.1}"),
            s.retrying.to_string(),
            s.dead_letters.to_string(),
            endpoint_state(s),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec![
            "sink",
            "outbox",
            "delivered/s",
            "failed/s",
            "retrying",
            "dead",
            "endpoint",
        ])
        .style(paint.bold()),
    )
    .block(focus_block(" sinks ".into(), focused, paint));
    frame.render_widget(table, area);
}

fn focus_block(title: String, focused: bool, paint: &Paint) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused {
        block.border_style(paint.fg(Color::Cyan))
    } else {
        block
    }
}

/// Paused, and the last error while its polls fail.
fn merchant_state(model: &Model, cursor: &CursorView) -> String {
    let paused = model.is_paused(&cursor.xmid).then_some("paused");
    let failing = cursor
        .last_error
        .as_ref()
        .map(|e| format!("failing since {}: {}", e.at.format("%H:%M:%S"), e.error));
    [paused.map(str::to_string), failing]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

/// A webhook endpoint's state in a few words; other sinks have none.
fn endpoint_state(sink: &SinkView) -> String {
    let Some(e) = &sink.endpoint else {
        return "-".into();
    };
    if let Some(d) = &e.disabled {
        return format!(
            "disabled since {}: {}",
            d.since.format("%H:%M:%S"),
            d.reason
        );
    }
    if e.paused_by_hand {
        return "paused".into();
    }
    match e.failing_since {
        Some(since) => format!("failing since {}", since.format("%H:%M:%S")),
        None => "ok".into(),
    }
}

fn footer_line(model: &Model, paint: &Paint) -> Line<'static> {
    if model.editing_filter {
        return Line::from(format!(
            "filter XMIDs: {}▏ (enter keeps it, esc clears it)",
            model.filter
        ));
    }
    if let Some(action) = &model.confirm {
        return Line::from(Span::styled(
            format!("{} y to confirm, any other key cancels", action.question()),
            paint.fg(Color::Yellow),
        ));
    }
    if let Some(status) = &model.status {
        return Line::from(status.clone());
    }
    Line::from("↑↓ select  tab switch  p pause  e enable  r replay  / filter  ? help  q quit")
}

fn render_help(frame: &mut Frame, area: Rect) {
    let width = 72.min(area.width);
    let height = (KEYS.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| Line::from(format!("{k:>9}  {what}")))
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")),
        popup,
    );
}

/// Seconds as a short duration: `45s`, `3m05s`, `2h10m`.
fn seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The snapshot as plain text (`--once`): the same sections, no colours, every merchant and
/// sink the service listed.
pub fn plain(model: &Model) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", line_text(&title(model, &Paint(false))));
    for line in stat_lines(model) {
        let _ = writeln!(out, "{}", line_text(&line));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<16} {:>10}  state, last error",
        "XMID", "resource", "lag"
    );
    for c in model.merchants() {
        let _ = writeln!(
            out,
            "{:<20} {:<16} {:>10}  {}",
            c.xmid,
            c.resource,
            seconds(c.lag_seconds as f64),
            merchant_state(model, c)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:>8} {:>12} {:>9} {:>9} {:>6}  endpoint",
        "sink", "outbox", "delivered/s", "failed/s", "retrying", "dead"
    );
    for s in model.sinks() {
        let (delivered, failed) = model.sink_rates(&s.name).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<14} {:>8} {:>12.1} {:>9.1} {:>9} {:>6}  {}",
            s.name,
            s.outbox,
            delivered,
            failed,
            s.retrying,
            s.dead_letters,
            endpoint_state(s)
        );
    }
    out
}

fn line_text(line: &Line) -> String {
    line.spans.iter().map(|s| s.content.as_ref()).collect()
}
